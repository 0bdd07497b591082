//! The connection to Redis and its health: connecting (and retrying in the background when Redis is not there at
//! start), noticing an outage, probing until Redis answers again, the `apiproxy_store_*` metrics and the warning
//! that says so (at most one a minute).
//!
//! The `ConnectionManager` is created on a small dedicated thread with its own tokio runtime, so its connection
//! task and its reconnects do not depend on the runtime that called [`crate::open`] (the gateway may open the
//! store on a short-lived runtime and serve from Pingora's). Callers on any runtime talk to it through channels.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;

use crate::metrics::{ERRORS, REDIS_UP};

/// The longest any Redis operation may take before the call is answered locally.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long [`Link::start`] waits for the first connection before answering locally.
const FIRST_CONNECT_WAIT: Duration = Duration::from_millis(1500);
/// Health probe period while Redis answers / while it does not.
const PROBE_WHILE_UP: Duration = Duration::from_secs(2);
const PROBE_WHILE_DOWN: Duration = Duration::from_millis(500);
/// At most one warning about Redis per this period.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A shared handle on one Redis server and what is known of its health.
pub(crate) struct Link {
    manager: OnceLock<ConnectionManager>,
    up: AtomicBool,
    /// `host:port` (or socket path) only: the URL may hold a password.
    endpoint: String,
    last_warning: Mutex<Option<Instant>>,
}

impl Link {
    /// Connects to `url` (waiting up to about a second and a half) and keeps the connection healthy in the
    /// background for as long as the returned link lives. A bad URL gives a link that never connects.
    pub(crate) async fn start(url: &str) -> Arc<Link> {
        // Registers both metrics now, so they are exported (at 0) before anything fails.
        std::sync::LazyLock::force(&ERRORS);
        let client = match redis::Client::open(url) {
            Ok(client) => client,
            Err(e) => {
                let link = Arc::new(Link::new(crate::redact_url(url)));
                log::error!(
                    "store: invalid Redis URL {} ({e}); running on the local store only",
                    link.endpoint
                );
                REDIS_UP.set(0);
                return link;
            }
        };
        let link = Arc::new(Link::new(client.get_connection_info().addr.to_string()));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let weak = Arc::downgrade(&link);
        let spawned = std::thread::Builder::new()
            .name("apiproxy-store-redis".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(keep_connected(weak, client, first_tx)),
                    Err(e) => log::error!("store: cannot start the Redis runtime: {e}"),
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tokio::time::timeout(FIRST_CONNECT_WAIT, first_rx).await;
            }
            Err(e) => log::error!("store: cannot start the Redis thread: {e}"),
        }
        if !link.is_up() {
            REDIS_UP.set(0);
        }
        link
    }

    fn new(endpoint: String) -> Self {
        Link {
            manager: OnceLock::new(),
            up: AtomicBool::new(false),
            endpoint,
            last_warning: Mutex::new(None),
        }
    }

    /// Whether Redis answered last time it was asked.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A connection to use now, or `None` while Redis is down (the call is then answered locally at once).
    pub(crate) fn connection(&self) -> Option<ConnectionManager> {
        if !self.is_up() {
            return None;
        }
        self.manager.get().cloned()
    }

    /// Records a failed operation: counted, warned about (throttled); an outage also switches to the local store
    /// until the probe sees Redis again.
    pub(crate) fn failed(&self, op: &str, why: &dyn Display, outage: bool) {
        ERRORS.inc();
        if outage {
            self.up.store(false, Ordering::Relaxed);
            REDIS_UP.set(0);
        }
        self.warn(|| {
            if outage {
                format!(
                    "store: Redis at {} failed ({op}: {why}); answering from the local store until it is back",
                    self.endpoint
                )
            } else {
                format!("store: Redis at {} refused {op}: {why}; answered locally", self.endpoint)
            }
        });
    }

    /// A connection attempt or a probe failed.
    fn unreachable(&self, why: &dyn Display) {
        if self.up.swap(false, Ordering::Relaxed) {
            ERRORS.inc();
        }
        REDIS_UP.set(0);
        self.warn(|| {
            format!(
                "store: Redis at {} unreachable ({why}); answering from the local store until it is back",
                self.endpoint
            )
        });
    }

    fn reachable(&self) {
        REDIS_UP.set(1);
        if !self.up.swap(true, Ordering::Relaxed) {
            log::info!(
                "store: Redis at {} reachable; state is shared",
                self.endpoint
            );
        }
    }

    /// Logs `message` unless a warning was logged less than [`WARN_EVERY`] ago; true when logged.
    fn warn(&self, message: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        {
            let mut last = self.last_warning.lock();
            if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
                return false;
            }
            *last = Some(now);
        }
        log::warn!("{}", message());
        true
    }
}

/// The dedicated thread's loop: connect (again and again until it works), then probe; ends with the link.
async fn keep_connected(
    link: Weak<Link>,
    client: redis::Client,
    first_attempt: tokio::sync::oneshot::Sender<()>,
) {
    let mut first_attempt = Some(first_attempt);
    loop {
        let Some(link) = link.upgrade() else {
            return;
        };
        match link.manager.get() {
            None => match connect(&client).await {
                Ok(manager) => {
                    let _ = link.manager.set(manager);
                    link.reachable();
                }
                Err(e) => link.unreachable(&e),
            },
            Some(manager) => match ping(manager.clone()).await {
                Ok(()) => link.reachable(),
                Err(e) => link.unreachable(&e),
            },
        }
        if let Some(done) = first_attempt.take() {
            let _ = done.send(());
        }
        let pause = if link.is_up() {
            PROBE_WHILE_UP
        } else {
            PROBE_WHILE_DOWN
        };
        drop(link);
        tokio::time::sleep(pause).await;
    }
}

async fn connect(client: &redis::Client) -> Result<ConnectionManager, String> {
    // Few, quick retries: the probe loop retries forever anyway, and callers never wait on a connection.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(OP_TIMEOUT)
        .set_number_of_retries(1)
        .set_factor(100)
        .set_max_delay(1000);
    match tokio::time::timeout(
        CONNECT_TIMEOUT * 3,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("connect timed out".to_string()),
    }
}

async fn ping(mut manager: ConnectionManager) -> Result<(), String> {
    match tokio::time::timeout(
        OP_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut manager),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {} ms", OP_TIMEOUT.as_millis())),
    }
}

/// An error for logs (the redis crate's messages carry no URL or password).
pub(crate) fn describe(e: &RedisError) -> String {
    e.to_string()
}

/// Whether an error means Redis is unreachable (as opposed to refusing one command).
pub(crate) fn is_outage(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_a_minute_at_most() {
        let link = Link::new("127.0.0.1:1".into());
        assert!(link.warn(|| "first".into()));
        assert!(!link.warn(|| "second".into()));
        *link.last_warning.lock() = Instant::now().checked_sub(WARN_EVERY);
        assert!(link.warn(|| "a minute later".into()));
    }

    #[test]
    fn an_outage_switches_to_the_fallback() {
        let link = Link::new("127.0.0.1:1".into());
        link.up.store(true, Ordering::Relaxed);
        link.failed("get session", &"WRONGTYPE", false);
        assert!(link.is_up(), "a refused command is not an outage");
        link.failed("get session", &"connection refused", true);
        assert!(!link.is_up());
        assert!(link.connection().is_none());
    }
}
