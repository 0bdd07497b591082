//! The connection to Redis and its health: connecting (and retrying in the background when Redis is not there at
//! start), following a Sentinel failover, noticing an outage, probing until Redis answers again, the
//! `apiproxy_store_*` metrics and the warning that says so (at most one a minute).
//!
//! The home connection is created on a small dedicated thread with its own tokio runtime, so its connection task,
//! its reconnects, the probes and Sentinel following do not depend on the runtime that called [`crate::open`] (the
//! gateway may open the store on a short-lived runtime and serve from Pingora's). Calls do not go through it once
//! their runtime has a connection of its own: a multiplexed connection's task runs on the runtime that made it, and
//! a call from another runtime would be handed to that task's thread and woken again from it (most of what a Redis
//! call cost the gateway). So each runtime that calls gets its own connection ([`Runtimes`]), made in the
//! background on that runtime at its first call (which, like every call until it is ready, uses the home one),
//! and made again after an outage or a Sentinel failover. A runtime that goes away takes its connection with it;
//! no other runtime uses that connection.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use tokio::runtime::Handle;

use crate::metrics::{ERRORS, REDIS_UP};
use crate::redis_url::{address, RedisTarget};

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
/// Runtimes that get a connection of their own at most (the gateway has a few: Pingora's services, the writer);
/// calls from further ones use the home connection.
const MAX_RUNTIMES: usize = 8;
/// How long after a failed attempt a runtime's connection is tried again (its calls use the home one meanwhile).
const RUNTIME_RETRY: Duration = Duration::from_millis(500);

/// A connection of whichever shape the target has; clones share one multiplexed connection (per node).
// Cloned for every call: boxing the larger variant would allocate each time instead of copying a few words.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, or the master Sentinels named (reconnects to the same address by itself).
    Single(ConnectionManager),
    /// A Redis Cluster (follows slot moves and node changes by itself).
    Cluster(ClusterConnection),
    /// One server (or the master Sentinels named), a runtime's own: made again after an outage instead of
    /// reconnecting by itself (see [`Runtimes`]).
    Multiplexed(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
        }
    }
}

/// A shared handle on Redis and what is known of its health.
pub(crate) struct Link {
    conn: RwLock<Option<Conn>>,
    up: AtomicBool,
    /// Addresses only: the URL may hold a password.
    endpoint: String,
    last_warning: Mutex<Option<Instant>>,
    /// Wakes the probe loop when an operation finds Redis gone, so that it reconnects at once.
    outage: tokio::sync::Notify,
    /// The calling runtimes' own connections.
    runtimes: Arc<Runtimes>,
}

/// How a runtime makes its own connection: the target as the home connection last reached it (with Sentinels, the
/// master they named).
#[derive(Clone)]
enum Recipe {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Recipe {
    /// A new connection, its task on the current runtime.
    async fn connect(&self) -> Result<Conn, String> {
        match self {
            Recipe::Single(client) => {
                // No response timeout of the connection's own: every call on it is bounded by the caller's
                // deadline (`Inner::redis_within`), and a second timer per call would be armed on Tokio's
                // clock, which wakes the runtime's driver (a system call) when it is the runtime's only one.
                let config = AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
                match tokio::time::timeout(
                    CONNECT_TIMEOUT * 3,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                {
                    Ok(Ok(conn)) => Ok(Conn::Multiplexed(conn)),
                    Ok(Err(e)) => Err(describe_error(&e)),
                    Err(_) => Err("connect timed out".to_string()),
                }
            }
            Recipe::Cluster(client) => connect_cluster(client).await.map(Conn::Cluster),
        }
    }
}

/// The connections of the runtimes that call, one each; every one belongs to a generation of the home connection.
/// A new generation (the home connection made again, or Redis found gone) empties the table: each runtime then
/// makes its connection again at its next call.
struct Runtimes {
    generation: AtomicU64,
    recipe: RwLock<Option<Recipe>>,
    table: RwLock<Vec<RuntimeConn>>,
}

struct RuntimeConn {
    runtime: tokio::runtime::Id,
    state: RuntimeState,
}

enum RuntimeState {
    /// Being made by a task on that runtime.
    Connecting,
    Ready(Box<Conn>),
    /// The attempt failed then; tried again after [`RUNTIME_RETRY`].
    Failed(Instant),
}

impl Runtimes {
    fn new() -> Self {
        Runtimes {
            generation: AtomicU64::new(0),
            recipe: RwLock::new(None),
            table: RwLock::new(Vec::new()),
        }
    }

    /// Starts a new generation: every runtime's connection is made again (from `recipe`, when given).
    fn renew(&self, recipe: Option<Recipe>) {
        let mut table = self.table.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(recipe) = recipe {
            *self.recipe.write() = Some(recipe);
        }
        table.clear();
    }

    /// The connection of the runtime of `handle`, when it has one ready; otherwise starts making it (once, on that
    /// runtime, in the background) and answers `None`.
    fn connection(self: &Arc<Self>, handle: &Handle) -> Option<Conn> {
        let runtime = handle.id();
        {
            let table = self.table.read();
            match table.iter().find(|r| r.runtime == runtime) {
                Some(r) if !r.retry_due() => return r.ready(),
                None if table.len() >= MAX_RUNTIMES => return None,
                _ => {}
            }
        }
        let mut table = self.table.write();
        let generation = self.generation.load(Ordering::Acquire);
        let slot = table.iter().position(|r| r.runtime == runtime);
        if let Some(at) = slot {
            if !table[at].retry_due() {
                return table[at].ready();
            }
        } else if table.len() >= MAX_RUNTIMES {
            return None;
        }
        let recipe = self.recipe.read().clone()?;
        let entry = RuntimeConn {
            runtime,
            state: RuntimeState::Connecting,
        };
        match slot {
            Some(at) => table[at] = entry,
            None => table.push(entry),
        }
        drop(table);
        let runtimes = Arc::clone(self);
        handle.spawn(async move {
            let made = recipe.connect().await;
            runtimes.made(runtime, generation, made);
        });
        None
    }

    /// Records a runtime's new connection, unless its generation has passed meanwhile.
    fn made(&self, runtime: tokio::runtime::Id, generation: u64, made: Result<Conn, String>) {
        let mut table = self.table.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if let Some(slot) = table.iter_mut().find(|r| r.runtime == runtime) {
            slot.state = match made {
                Ok(conn) => RuntimeState::Ready(Box::new(conn)),
                Err(e) => {
                    log::debug!("store: a runtime's own Redis connection failed ({e}); retrying");
                    RuntimeState::Failed(Instant::now())
                }
            };
        }
    }
}

impl RuntimeConn {
    fn ready(&self) -> Option<Conn> {
        match &self.state {
            RuntimeState::Ready(conn) => Some(Conn::clone(conn)),
            _ => None,
        }
    }

    /// Whether an attempt failed long enough ago to try again.
    fn retry_due(&self) -> bool {
        matches!(self.state, RuntimeState::Failed(since) if since.elapsed() >= RUNTIME_RETRY)
    }
}

impl Link {
    /// Connects to `target` (waiting up to about a second and a half) and keeps the connection healthy in the
    /// background for as long as the returned link lives. `None` target (a bad URL) gives a link that never
    /// connects.
    pub(crate) async fn start(url: &str) -> Arc<Link> {
        // Registers both metrics now, so they are exported (at 0) before anything fails.
        std::sync::LazyLock::force(&ERRORS);
        let connector = match RedisTarget::parse(url).and_then(Connector::new) {
            Ok(connector) => connector,
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
        let link = Arc::new(Link::new(connector.describe.clone()));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let weak = Arc::downgrade(&link);
        let spawned = std::thread::Builder::new()
            .name("apiproxy-store-redis".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(keep_connected(weak, connector, first_tx)),
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
            conn: RwLock::new(None),
            up: AtomicBool::new(false),
            endpoint,
            last_warning: Mutex::new(None),
            outage: tokio::sync::Notify::new(),
            runtimes: Arc::new(Runtimes::new()),
        }
    }

    /// Whether Redis answered last time it was asked.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A connection to use now, or `None` while Redis is down (the call is then answered locally at once): the
    /// calling runtime's own when it has one ready, else the home connection.
    pub(crate) fn connection(&self) -> Option<Conn> {
        if !self.is_up() {
            return None;
        }
        if let Ok(handle) = Handle::try_current() {
            if let Some(conn) = self.runtimes.connection(&handle) {
                return Some(conn);
            }
        }
        self.conn.read().clone()
    }

    /// Records a failed operation: counted, warned about (throttled); an outage also switches to the local store
    /// until the probe sees Redis again.
    pub(crate) fn failed(&self, op: &str, why: &dyn Display, outage: bool) {
        ERRORS.inc();
        if outage {
            self.up.store(false, Ordering::Relaxed);
            REDIS_UP.set(0);
            // The runtimes' connections may be as broken as the one that failed: made again once Redis answers.
            self.runtimes.renew(None);
            self.outage.notify_one();
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
            self.runtimes.renew(None);
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

/// How connections are made, per target shape.
pub(crate) struct Connector {
    describe: String,
    shape: Shape,
}

enum Shape {
    Single(redis::Client),
    Cluster(ClusterClient),
    Sentinel {
        sentinel: Sentinel,
        master: String,
        node: SentinelNodeConnectionInfo,
        /// The master the current connection goes to.
        connected: Option<redis::Client>,
    },
}

impl Connector {
    pub(crate) fn new(target: RedisTarget) -> Result<Connector, String> {
        let describe = target.describe();
        let shape = match target {
            RedisTarget::Single(info) => {
                Shape::Single(redis::Client::open(info).map_err(|e| describe_error(&e))?)
            }
            RedisTarget::Cluster(nodes) => Shape::Cluster(
                ClusterClient::builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(OP_TIMEOUT)
                    .retries(2)
                    .build()
                    .map_err(|e| describe_error(&e))?,
            ),
            RedisTarget::Sentinel {
                sentinels,
                master,
                node,
            } => Shape::Sentinel {
                sentinel: Sentinel::build(sentinels).map_err(|e| describe_error(&e))?,
                master,
                node,
                connected: None,
            },
        };
        Ok(Connector { describe, shape })
    }

    /// A new connection.
    pub(crate) async fn connect(&mut self) -> Result<Conn, String> {
        match &mut self.shape {
            Shape::Single(client) => connect_manager(client).await.map(Conn::Single),
            Shape::Cluster(client) => connect_cluster(client).await.map(Conn::Cluster),
            Shape::Sentinel {
                sentinel,
                master,
                node,
                connected,
            } => {
                let client = ask_sentinels(sentinel, master, node).await?;
                let conn = connect_manager(&client).await.map(Conn::Single)?;
                let now = address(&client.get_connection_info().addr);
                if connected
                    .as_ref()
                    .is_some_and(|before| address(&before.get_connection_info().addr) != now)
                {
                    log::info!("store: the Sentinels name a new master for `{master}`: {now}");
                }
                *connected = Some(client);
                Ok(conn)
            }
        }
    }

    /// Whether the connection should be made again: with Sentinels, when they name another master than the one
    /// connected to (a failover happened). Sentinels that cannot be asked change nothing.
    async fn master_moved(&mut self) -> bool {
        let Shape::Sentinel {
            sentinel,
            master,
            node,
            connected,
        } = &mut self.shape
        else {
            return false;
        };
        match ask_sentinels(sentinel, master, node).await {
            Ok(client) => connected.as_ref().is_none_or(|before| {
                address(&before.get_connection_info().addr)
                    != address(&client.get_connection_info().addr)
            }),
            Err(_) => false,
        }
    }

    /// How a runtime makes a connection of its own to where the last [`Connector::connect`] went.
    fn recipe(&self) -> Option<Recipe> {
        match &self.shape {
            Shape::Single(client) => Some(Recipe::Single(client.clone())),
            Shape::Cluster(client) => Some(Recipe::Cluster(client.clone())),
            Shape::Sentinel { connected, .. } => connected.clone().map(Recipe::Single),
        }
    }

    /// Whether an outage means the connection must be made anew (a Sentinel target re-asks for the master; the
    /// other shapes reconnect by themselves).
    fn reconnects_on_outage(&self) -> bool {
        matches!(self.shape, Shape::Sentinel { .. })
    }
}

async fn ask_sentinels(
    sentinel: &mut Sentinel,
    master: &str,
    node: &SentinelNodeConnectionInfo,
) -> Result<redis::Client, String> {
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        sentinel.async_master_for(master, Some(node)),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!(
            "asking the Sentinels for `{master}`: {}",
            describe_error(&e)
        )),
        Err(_) => Err(format!("the Sentinels did not name `{master}` in time")),
    }
}

/// The dedicated thread's loop: connect (again and again until it works), then probe; ends with the link.
async fn keep_connected(
    link: Weak<Link>,
    mut connector: Connector,
    first_attempt: tokio::sync::oneshot::Sender<()>,
) {
    let mut first_attempt = Some(first_attempt);
    loop {
        let Some(link) = link.upgrade() else {
            return;
        };
        let current = link.conn.read().clone();
        let current = match current {
            Some(_) if connector.master_moved().await => None,
            other => other,
        };
        let probed = match current {
            Some(conn) => probe(conn).await,
            None => Err("not connected".to_string()),
        };
        match probed {
            Ok(()) => link.reachable(),
            // One server or a cluster reconnects by itself: only the first connection is made here. With
            // Sentinels, a lost master means asking them again, at once.
            Err(e) if link.conn.read().is_some() && !connector.reconnects_on_outage() => {
                link.unreachable(&e)
            }
            Err(_) => match connector.connect().await {
                Ok(conn) => {
                    *link.conn.write() = Some(conn);
                    // The runtimes' connections go where this one does (with Sentinels, maybe a new master).
                    link.runtimes.renew(connector.recipe());
                    link.reachable();
                }
                Err(e) => {
                    *link.conn.write() = None;
                    link.unreachable(&e)
                }
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
        let outage = async { link.outage.notified().await };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = outage => {}
        }
        drop(link);
    }
}

async fn connect_cluster(client: &ClusterClient) -> Result<ClusterConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT * 3, client.get_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(describe_error(&e)),
        Err(_) => Err("connect timed out".to_string()),
    }
}

async fn connect_manager(client: &redis::Client) -> Result<ConnectionManager, String> {
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
        Ok(Err(e)) => Err(describe_error(&e)),
        Err(_) => Err("connect timed out".to_string()),
    }
}

/// Pings, and once more shortly after a failure: a connection that was just dropped (a Sentinel or an operator
/// killing clients) is made again by the first failure.
async fn probe(conn: Conn) -> Result<(), String> {
    match ping(conn.clone()).await {
        Ok(()) => Ok(()),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ping(conn).await
        }
    }
}

async fn ping(mut conn: Conn) -> Result<(), String> {
    // A master demoted to a replica still answers PING: Sentinel targets notice it by `master_moved`.
    let ping = redis::cmd("PING");
    match tokio::time::timeout(OP_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(describe_error(&e)),
        Err(_) => Err(format!("no answer within {} ms", OP_TIMEOUT.as_millis())),
    }
}

/// An error for logs (the redis crate's messages carry no URL or password).
pub(crate) fn describe_error(e: &RedisError) -> String {
    e.to_string()
}

/// Whether an error means Redis is unreachable (as opposed to refusing one command). A master that turned
/// replica (`READONLY`) counts: with Sentinels, the store must go and find the new one.
pub(crate) fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == ErrorKind::ReadOnly
        || e.kind() == ErrorKind::ClusterDown
        || e.kind() == ErrorKind::MasterDown
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
