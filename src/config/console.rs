//! The `console` section: what the web console collects in process.

use std::time::Duration;

use super::raw::RawConsole;

/// Longest `console.capture_ttl_seconds` (a week).
const MAX_CAPTURE_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// What the console collects in process (see `crate::console`).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Off: no aggregates, no request records (the console shows config and state only).
    pub collect: bool,
    /// Recent request records kept.
    pub recent_requests: usize,
    /// `log.capture_bodies`: keep request bodies, redacted and cut to `max_body_chars`.
    pub capture_bodies: bool,
    pub max_body_chars: usize,
    /// `console.capture_ttl_seconds`: how long a captured body is kept.
    pub capture_ttl: Duration,
}

/// Resolves `console`; `capture_bodies` is `log.capture_bodies`.
pub fn resolve(
    c: RawConsole,
    capture_bodies: Option<bool>,
    problems: &mut Vec<String>,
) -> ConsoleSettings {
    if c.recent_requests == Some(0) || c.recent_requests.is_some_and(|n| n > 1_000_000) {
        problems.push("console.recent_requests: must be between 1 and 1000000".to_owned());
    }
    if c.max_body_chars == Some(0) {
        problems.push("console.max_body_chars: must be positive".to_owned());
    }
    if c.capture_ttl_seconds == Some(0)
        || c.capture_ttl_seconds
            .is_some_and(|s| s > MAX_CAPTURE_TTL_SECONDS)
    {
        problems.push(format!(
            "console.capture_ttl_seconds: must be between 1 and {MAX_CAPTURE_TTL_SECONDS}"
        ));
    }
    ConsoleSettings {
        collect: c.collect.unwrap_or(true),
        recent_requests: c.recent_requests.unwrap_or(1000),
        capture_bodies: capture_bodies.unwrap_or(false),
        max_body_chars: c.max_body_chars.unwrap_or(4096),
        capture_ttl: Duration::from_secs(
            c.capture_ttl_seconds
                .unwrap_or(3600)
                .clamp(1, MAX_CAPTURE_TTL_SECONDS),
        ),
    }
}
