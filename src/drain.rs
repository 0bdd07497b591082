//! Draining: how a process that is shutting down (SIGTERM) or handing its
//! sockets to a new binary (`-u` + SIGQUIT) finishes its connections without
//! losing a request.
//!
//! Pingora 0.9.1, left alone, drops every kept-alive connection that is idle
//! between requests the moment draining begins (`HttpProxy::http_cleanup`
//! wakes each `read_request` parked on such a connection and closes it). A
//! client that wrote its next request just then has it refused with a reset:
//! a POST is not retried by clients, so the request is lost. apiproxy never
//! calls that cleanup (see `listener::ClientListener::cleanup`); instead the
//! connection layer waits for idle connections itself, under the deadline
//! [`idle_deadline`] computes:
//!
//! - not draining: the keep-alive timeout;
//! - draining: the same, but never past the end of the grace period. A client
//!   that sends its next request in that time gets it answered (with
//!   `Connection: close`, which Pingora adds once draining began) and opens a
//!   new connection, which lands on the new process.
//!
//! Requests and streams in flight are not touched: they run to their end or
//! until the grace period is over, when Pingora shuts the runtime down.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pingora::server::ShutdownWatch;

/// When draining began in this process (shared by every connection).
#[derive(Debug)]
pub struct Drain {
    started: OnceLock<Instant>,
    /// `server.grace_period_seconds`: how long Pingora lets this process
    /// finish its work once draining began.
    grace: Duration,
}

impl Drain {
    pub fn new(grace: Duration) -> Self {
        Drain {
            started: OnceLock::new(),
            grace,
        }
    }

    /// Whether draining began; records its start the first time any
    /// connection sees the shutdown signal.
    pub fn observe(&self, shutdown: &ShutdownWatch) -> Option<Instant> {
        if *shutdown.borrow() {
            Some(*self.started.get_or_init(Instant::now))
        } else {
            self.started.get().copied()
        }
    }

    /// The grace period this process drains for.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// Resolves once draining begins (at once if it already has).
pub async fn begun(shutdown: &ShutdownWatch) {
    let mut rx = shutdown.clone();
    // An error means the sender is gone: the server is going away anyway.
    let _ = rx.wait_for(|draining| *draining).await;
}

/// Until when a connection that became idle at `idle_since` waits for its
/// next request: the keep-alive timeout, cut to the end of the grace period
/// once draining began at `drain_started`.
pub fn idle_deadline(
    idle_since: Instant,
    keepalive: Duration,
    drain_started: Option<Instant>,
    grace: Duration,
) -> Instant {
    let normal = idle_since + keepalive;
    match drain_started {
        None => normal,
        Some(start) => normal.min(start + grace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_waits_its_keepalive_while_not_draining() {
        let t = Instant::now();
        let d = idle_deadline(t, Duration::from_secs(60), None, Duration::from_secs(5));
        assert_eq!(d, t + Duration::from_secs(60));
    }

    #[test]
    fn draining_keeps_the_chance_of_one_more_request_until_the_grace_period_ends() {
        let t = Instant::now();
        let start = t + Duration::from_secs(1);
        // Keep-alive longer than the grace period: cut to the grace period's end.
        let d = idle_deadline(
            t,
            Duration::from_secs(60),
            Some(start),
            Duration::from_secs(5),
        );
        assert_eq!(d, start + Duration::from_secs(5));
        // A short keep-alive still applies while draining.
        let d = idle_deadline(
            t,
            Duration::from_secs(2),
            Some(start),
            Duration::from_secs(5),
        );
        assert_eq!(d, t + Duration::from_secs(2));
    }
}
