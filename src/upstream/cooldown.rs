//! How long a key rests after a failure: by cause, doubled for each failure
//! of that key in a row, up to a cap. Pure.

use std::time::Duration;

use crate::config::routing::Cooldowns;

/// Why a key is taken out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// 429: the key's rate limit.
    RateLimited,
    /// 5xx from the provider.
    ServerError,
    /// Connect, timeout or a broken connection.
    Network,
    /// 401/403: the provider refused the key.
    Refused,
}

impl Cause {
    /// The name shown in `/providers/{id}/health`.
    pub fn name(self) -> &'static str {
        match self {
            Cause::RateLimited => "rate_limited",
            Cause::ServerError => "server_error",
            Cause::Network => "network",
            Cause::Refused => "refused",
        }
    }
}

/// The rest for a key's `strikes`-th failure in a row (1 for the first).
/// A provider's `Retry-After` is taken as given (bounded to an hour).
pub fn key_cooldown(
    cause: Cause,
    strikes: u32,
    retry_after_secs: Option<u64>,
    c: &Cooldowns,
) -> Duration {
    if let (Cause::RateLimited, Some(s)) = (cause, retry_after_secs) {
        return Duration::from_secs(s.clamp(1, 3600));
    }
    let base = match cause {
        Cause::RateLimited => c.rate_limited,
        Cause::ServerError => c.server_error,
        Cause::Network => c.network,
        Cause::Refused => c.refused,
    };
    let factor = 1u32 << strikes.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(c.max.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing::RoutingSettings;

    #[test]
    fn by_cause_with_backoff_and_cap() {
        let c = RoutingSettings::default().cooldowns;
        let s = |cause, n, ra| key_cooldown(cause, n, ra, &c).as_secs();
        assert_eq!(s(Cause::RateLimited, 1, None), 60);
        assert_eq!(s(Cause::RateLimited, 3, Some(7)), 7);
        assert_eq!(s(Cause::ServerError, 1, None), 15);
        assert_eq!(s(Cause::ServerError, 2, None), 30);
        assert_eq!(s(Cause::Network, 1, None), 10);
        assert_eq!(s(Cause::Network, 4, None), 80);
        assert_eq!(s(Cause::Network, 10, None), 300, "capped");
        assert_eq!(s(Cause::Refused, 1, None), 30);
    }
}
