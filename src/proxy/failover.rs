//! What happens after an attempt fails: the same provider's next key, the
//! next candidate, or the upstream's own answer relayed to the client; and,
//! when every candidate failed, the one error the client gets.
//!
//! Pure decisions on typed values; `attempt/` (`Attempts`) does the I/O
//! and calls them.

use std::fmt;

use super::relay::RelayFault;
use crate::error::GatewayError;
use crate::upstream::cooldown::Cause;
use crate::upstream::http::{SendError, SendKind};

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptError {
    /// Every key of the provider is cooling down: nothing was sent.
    NoUsableKey,
    /// Every key is resting after the provider rate limited it (429):
    /// nothing was sent; the first is free again in `retry_after` seconds.
    KeysRateLimited { retry_after: u64 },
    /// The upstream's circuit breaker is open: nothing was sent.
    CircuitOpen,
    /// The provider is at its `max_concurrency` or `max_qps`: nothing was sent.
    AtCapacity,
    /// The exchange failed before an answer's head: DNS, TCP or TLS
    /// connect failed or timed out, no byte within the provider's read
    /// timeout, or the connection broke (its kind and cause kept).
    Send(SendError),
    /// The upstream answered with an error status.
    Status {
        status: u16,
        /// The upstream's message, safe to show (keys scrubbed).
        message: String,
        /// The upstream's `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    /// The answer started well but broke (or stalled) before anything
    /// reached the client.
    BrokenAnswer(RelayFault),
}

impl AttemptError {
    /// The attempt ran into a timeout (504 when every attempt did).
    fn timed_out(&self) -> bool {
        match self {
            AttemptError::Send(e) => e.is_timeout(),
            AttemptError::BrokenAnswer(f) => f.timed_out(),
            _ => false,
        }
    }

    /// The label of `apiproxy_upstream_attempts_total{outcome}`.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            AttemptError::NoUsableKey => "no_key",
            AttemptError::KeysRateLimited { .. } => "keys_rate_limited",
            AttemptError::CircuitOpen => "circuit_open",
            AttemptError::AtCapacity => "at_capacity",
            AttemptError::Send(e) => match e.kind {
                SendKind::Connect => "connect_error",
                SendKind::Timeout => "timeout",
                SendKind::Io => "io_error",
            },
            AttemptError::Status { status: 429, .. } => "429",
            AttemptError::Status { status, .. } if *status < 500 => "4xx",
            AttemptError::Status { .. } => "5xx",
            AttemptError::BrokenAnswer { .. } => "stream_error",
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::NoUsableKey => f.write_str("every key is cooling down"),
            AttemptError::KeysRateLimited { retry_after } => write!(
                f,
                "every key is rate limited by the provider (the first is free in {retry_after} s)"
            ),
            AttemptError::CircuitOpen => f.write_str("circuit breaker open"),
            AttemptError::AtCapacity => f.write_str("at its max_concurrency or max_qps"),
            AttemptError::Send(e) if e.is_timeout() => {
                f.write_str("timed out waiting for the provider")
            }
            AttemptError::Send(e) => e.fmt(f),
            AttemptError::Status {
                status, message, ..
            } if message.is_empty() => write!(f, "status {status}"),
            AttemptError::Status {
                status, message, ..
            } => write!(f, "status {status}: {message}"),
            AttemptError::BrokenAnswer(fault) => fault.fmt(f),
        }
    }
}

impl std::error::Error for AttemptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AttemptError::Send(e) => Some(e),
            AttemptError::BrokenAnswer(fault) => Some(fault),
            _ => None,
        }
    }
}

/// One failed attempt, as the final error names it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    pub provider: String,
    pub model: String,
    pub error: AttemptError,
}

impl fmt::Display for FailedAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}", self.provider, self.model, self.error)
    }
}

/// Where the request goes after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// The same upstream with the provider's next key.
    NextKey,
    /// The next candidate upstream.
    NextCandidate,
    /// The upstream's refusal is the answer: relay it to the client.
    Relay,
}

/// Everything the attempt loop does about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub next: NextStep,
    /// Take the key out of rotation, for this cause.
    pub cool_key: Option<Cause>,
    /// The failure says something about the upstream: count it in its
    /// health. A key's refusal or the client's own bad request does not.
    pub upstream_fault: bool,
}

/// What the provider's configuration and key state say about a failure.
#[derive(Debug, Clone, Copy)]
pub struct FailureContext {
    /// The status is in the provider's `retryable_status`.
    pub retryable: bool,
    /// Another key of the provider is usable once this one cools down.
    pub other_key: bool,
    /// The refusal concerns this request alone (a 429 for a request too
    /// large for the key's limit while the key has room left): it says
    /// nothing about the key or the upstream.
    pub request_only: bool,
}

/// Decides what follows a failed attempt.
pub fn decide(error: &AttemptError, cx: FailureContext) -> Decision {
    let go_on = |cool_key, upstream_fault| Decision {
        next: NextStep::NextCandidate,
        cool_key,
        upstream_fault,
    };
    match error {
        AttemptError::NoUsableKey
        | AttemptError::KeysRateLimited { .. }
        | AttemptError::CircuitOpen
        | AttemptError::AtCapacity => go_on(None, false),
        AttemptError::Send(_) | AttemptError::BrokenAnswer(_) => go_on(Some(Cause::Network), true),
        AttemptError::Status { status: 429, .. } if cx.request_only => go_on(None, false),
        AttemptError::Status { status, .. } => {
            let status = *status;
            if matches!(status, 401 | 403 | 429) {
                // A key problem: the provider's next key, else the next
                // candidate. Says nothing about the upstream itself.
                Decision {
                    next: if cx.other_key {
                        NextStep::NextKey
                    } else {
                        NextStep::NextCandidate
                    },
                    cool_key: Some(if status == 429 {
                        Cause::RateLimited
                    } else {
                        Cause::Refused
                    }),
                    upstream_fault: false,
                }
            } else if cx.retryable && status >= 500 {
                go_on(Some(Cause::ServerError), true)
            } else if cx.retryable {
                go_on(None, false)
            } else {
                Decision {
                    next: NextStep::Relay,
                    cool_key: None,
                    upstream_fault: false,
                }
            }
        }
    }
}

/// Whether another pass over the candidates may help: every failure of the
/// pass was the upstream's (network, timeout, 5xx) — not a refusal, a rate
/// limit or a candidate that could not be tried at all.
pub fn worth_another_round(pass: &[FailedAttempt]) -> bool {
    !pass.is_empty()
        && pass.iter().all(|a| match &a.error {
            AttemptError::Send(_) | AttemptError::BrokenAnswer(_) => true,
            AttemptError::Status { status, .. } => *status >= 500,
            _ => false,
        })
}

/// The error when every candidate failed: 504 when every attempt timed out,
/// 429 when every one was rate limited or had no room (`max_concurrency`,
/// `max_qps`), 503 when none could even be sent
/// (every key cooling down), else 502. Names every attempt.
pub fn all_failed(attempts: &[FailedAttempt]) -> GatewayError {
    let all =
        |f: fn(&AttemptError) -> bool| !attempts.is_empty() && attempts.iter().all(|a| f(&a.error));
    let status = if all(AttemptError::timed_out) {
        504
    } else if all(|e| {
        matches!(
            e,
            AttemptError::Status { status: 429, .. }
                | AttemptError::AtCapacity
                | AttemptError::KeysRateLimited { .. }
        )
    }) {
        429
    } else if all(|e| matches!(e, AttemptError::NoUsableKey | AttemptError::CircuitOpen)) {
        503
    } else {
        502
    };
    let names: Vec<String> = attempts.iter().map(ToString::to_string).collect();
    let e = GatewayError::upstream(
        status,
        format!(
            "all upstreams failed after {} attempt(s): {}",
            attempts.len(),
            names.join("; ")
        ),
    );
    if status == 429 || status == 503 {
        let wait = attempts
            .iter()
            .filter_map(|a| match a.error {
                AttemptError::Status { retry_after, .. } => retry_after,
                AttemptError::KeysRateLimited { retry_after } => Some(retry_after),
                _ => None,
            })
            .min()
            .unwrap_or(1);
        e.retry_after(wait.clamp(1, 3600))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> AttemptError {
        AttemptError::Status {
            status: s,
            message: String::new(),
            retry_after: None,
        }
    }

    fn send(kind: SendKind, detail: &str) -> AttemptError {
        AttemptError::Send(SendError::new(kind, detail))
    }

    fn timeout() -> AttemptError {
        send(SendKind::Timeout, "read timed out")
    }

    fn cx(retryable: bool, other_key: bool) -> FailureContext {
        FailureContext {
            retryable,
            other_key,
            request_only: false,
        }
    }

    #[test]
    fn decisions() {
        use Cause::*;
        use NextStep::*;
        // (error, retryable, other key) → (next, cool key, upstream fault)
        let table: Vec<(AttemptError, bool, bool, NextStep, Option<Cause>, bool)> = vec![
            (
                AttemptError::NoUsableKey,
                false,
                false,
                NextCandidate,
                None,
                false,
            ),
            (
                send(SendKind::Connect, "refused"),
                false,
                true,
                NextCandidate,
                Some(Network),
                true,
            ),
            (timeout(), false, true, NextCandidate, Some(Network), true),
            (
                send(SendKind::Io, "reset"),
                false,
                false,
                NextCandidate,
                Some(Network),
                true,
            ),
            (
                AttemptError::BrokenAnswer(RelayFault::NoEvent),
                true,
                true,
                NextCandidate,
                Some(Network),
                true,
            ),
            (status(429), true, true, NextKey, Some(RateLimited), false),
            (
                status(429),
                true,
                false,
                NextCandidate,
                Some(RateLimited),
                false,
            ),
            (status(401), false, true, NextKey, Some(Refused), false),
            (
                status(403),
                false,
                false,
                NextCandidate,
                Some(Refused),
                false,
            ),
            (
                status(503),
                true,
                true,
                NextCandidate,
                Some(ServerError),
                true,
            ),
            (
                status(500),
                true,
                false,
                NextCandidate,
                Some(ServerError),
                true,
            ),
            (status(500), false, false, Relay, None, false),
            (status(409), true, false, NextCandidate, None, false),
            (status(400), false, true, Relay, None, false),
            (status(404), false, true, Relay, None, false),
        ];
        for (err, retryable, other, next, cool, fault) in table {
            let d = decide(&err, cx(retryable, other));
            assert_eq!(
                (d.next, d.cool_key, d.upstream_fault),
                (next, cool, fault),
                "{err:?} retryable={retryable} other_key={other}"
            );
        }
        // A 429 for this request alone: the next candidate, nothing cooled.
        let own = FailureContext {
            retryable: true,
            other_key: true,
            request_only: true,
        };
        let d = decide(&status(429), own);
        assert_eq!(
            (d.next, d.cool_key, d.upstream_fault),
            (NextCandidate, None, false)
        );
    }

    fn attempt(error: AttemptError) -> FailedAttempt {
        FailedAttempt {
            provider: "p".into(),
            model: "m".into(),
            error,
        }
    }

    #[test]
    fn another_round_only_after_upstream_failures() {
        assert!(worth_another_round(&[
            attempt(status(503)),
            attempt(timeout())
        ]));
        assert!(!worth_another_round(&[
            attempt(status(503)),
            attempt(status(429))
        ]));
        assert!(!worth_another_round(&[attempt(AttemptError::CircuitOpen)]));
        assert!(!worth_another_round(&[]));
    }

    #[test]
    fn final_status_follows_the_kinds_of_failure() {
        let timeouts = [attempt(timeout()), attempt(timeout())];
        assert_eq!(all_failed(&timeouts).status, 504);
        let broken_by_stall = [
            attempt(timeout()),
            attempt(AttemptError::BrokenAnswer(RelayFault::Upstream(
                SendError::new(SendKind::Timeout, "stalled"),
            ))),
        ];
        assert_eq!(all_failed(&broken_by_stall).status, 504);
        let limited = [
            attempt(AttemptError::Status {
                status: 429,
                message: String::new(),
                retry_after: Some(7),
            }),
            attempt(status(429)),
        ];
        let e = all_failed(&limited);
        assert_eq!((e.status, e.retry_after), (429, Some(7)));
        let full = [attempt(AttemptError::AtCapacity)];
        let e = all_failed(&full);
        assert_eq!((e.status, e.retry_after), (429, Some(1)));
        let cooling = [attempt(AttemptError::NoUsableKey)];
        let e = all_failed(&cooling);
        assert_eq!((e.status, e.retry_after), (503, Some(1)));
        // Keys resting after a 429: the client is rate limited too, told
        // when the first key is free.
        let resting = [
            attempt(AttemptError::KeysRateLimited { retry_after: 42 }),
            attempt(AttemptError::KeysRateLimited { retry_after: 9 }),
        ];
        let e = all_failed(&resting);
        assert_eq!((e.status, e.retry_after), (429, Some(9)));
        let mixed = [attempt(status(503)), attempt(timeout())];
        let e = all_failed(&mixed);
        assert_eq!(e.status, 502);
        assert!(
            e.message
                .contains("p/m: status 503; p/m: timed out waiting for the provider"),
            "{}",
            e.message
        );
        assert_eq!(all_failed(&[]).status, 502);
    }
}
