//! Deadlines on the request path, on Pingora's shared timer.
//!
//! Each worker thread runs a Tokio runtime of its own. Arming a Tokio timer
//! while that runtime has no other timer pending (the usual case between two
//! requests: Pingora's own reads and writes time out on its shared timer)
//! wakes the runtime's driver, a `write(2)` to its eventfd and one more
//! `epoll_wait` return, for every request. Pingora's timer keeps one tree per
//! thread, rounds deadlines up to 10 ms ticks and is fired by one clock thread:
//! arming it is a map insert. A deadline here may fire up to 10 ms late, never
//! early.

use std::future::Future;
use std::time::{Duration, Instant};

/// Sleeps until `deadline`.
pub fn sleep_until(deadline: Instant) -> impl Future<Output = ()> {
    pingora::time::sleep(deadline.saturating_duration_since(Instant::now()))
}

/// `fut`, or `Err` once `limit` has passed (the timer armed only if `fut` is
/// not ready at its first poll).
pub fn timeout<F: Future>(
    limit: Duration,
    fut: F,
) -> impl Future<Output = Result<F::Output, pingora::time::Elapsed>> {
    pingora::time::timeout(limit, fut)
}
