//! The Redis store: state shared by every replica on one Redis (or a Redis Cluster, or the master Sentinels
//! name), with an embedded [`MemoryStore`] answering whenever Redis cannot (down, slower than 250 ms, or refusing
//! a command).
//!
//! Keys (all under `key_prefix`, all with a TTL; values are JSON so `redis-cli` shows them plainly):
//! - `session:{id}`: a [`SessionBinding`], TTL `session_ttl`, restarted by every bind;
//! - `context:{session}`: list of snippets, newest first; `context-owner:{session}`: the key name owning it;
//!   both TTL `context_ttl`, restarted by every push;
//! - `catalog:{provider}`: JSON array of model ids, TTL `catalog_ttl`;
//! - `rpm:{name}`, `tpm:{name}`: rate windows, hashes second → amount, TTL 61 s (see `lua::ADMIT`);
//! - `response:{owner}:{id}`: a Responses API record the gateway keeps for a client key ([`Store::put_response`]),
//!   TTL given by the caller (`store.responses_ttl_seconds`);
//! - `spend:{name}`: spend counters (an integer: spent plus reserved by requests in flight), TTL set by the caller;
//! - `cache:{hash}`: a cached answer, TTL the logical model's `cache_ttl_seconds`; `cache-order` and `cache-sizes`
//!   keep the byte bound every replica shares (see `lua::CACHE_PUT`).
//!
//! On a Redis Cluster the keys are hash-tagged so that every script touches one slot: the id of a session,
//! context or catalog key is wrapped in `{}` (`session:{s1}`, `context:{s1}` and `context-owner:{s1}` share a
//! slot), the response cache's keys carry `{cache}` (its bound is kept by one script), and every rate window
//! carries the tag `{rate}` (`{rate}:rpm:key:alice`), so that one script checks a
//! key's and the gateway-wide limits together. The rate windows of a cluster therefore live on one node; sessions
//! and contexts spread over all of them. Spend counters carry `{rate}` too (`{rate}:spend:budget:...`): the
//! admission script checks and reserves a budget with the rate limits.
//!
//! Writes that can wait ([`Store::defer`]) go through a queue to a writer thread that sends them in batches; a
//! batch that cannot be written lands in the local store instead.
//!
//! While Redis answers, session bindings, catalogs and counted usage are also written to the local store, so an
//! outage starts from recent state (stickiness holds, limits count what this replica saw).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, RedisResult};
use tokio::sync::{mpsc, oneshot};

use crate::lua::{
    ADMIT, BIND_SESSION, CACHE_PUT, CLAIM_SESSION, PUSH_CONTEXT, RATE_WINDOW, SETTLE,
};
use crate::memory::MemoryStore;
use crate::metrics::ERRORS;
use crate::redis_link::{describe_error, is_outage, Conn, Link, OP_TIMEOUT};
use crate::redis_url::RedisTarget;
use crate::usage::{day_string, parse_day, UsageAmounts, UsageDims, UsageRecord};
use crate::window::{allowed, refused};
use crate::SpendDecision;
use crate::{
    unix_now, Admission, BucketDecision, Deferred, LimitBucket, LimitKind, RateDecision,
    Reservation, SessionBinding, SpendLimit, SpendState, Store, StoreOptions,
};

/// Writes waiting for the writer at most; past it a write is done locally (and counted as a store error).
const QUEUE_CAPACITY: usize = 65_536;
/// Writes sent in one batch at most.
const BATCH: usize = 256;
/// How long the writer gathers deferred writes after the first one arrives:
/// under load, one script call then settles the tokens of many requests and
/// the request threads do not wake the writer for each (senders wake it
/// only while it waits on the empty queue). A settlement reaches Redis this
/// much later (a `flush`, at exit, waits at most this much longer).
const GATHER: Duration = Duration::from_millis(2);
/// How long a deferred write may take (they are off the request path: more patience than a request's read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a usage report (up to a year of day hashes, an admin request) may take on Redis.
const USAGE_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Store::flush`] waits at most.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The Redis-backed [`Store`] with its local fallback.
pub struct RedisStore {
    inner: Arc<Inner>,
    queue: mpsc::Sender<Job>,
}

struct Inner {
    link: Arc<Link>,
    local: MemoryStore,
    keys: Keys,
    session_ttl_ms: u64,
    context_max_entries: usize,
    context_max_entry_bytes: usize,
    context_max_session_bytes: usize,
    context_ttl_ms: u64,
    catalog_ttl_ms: u64,
    reference_ttl: Duration,
    responses_max_bytes: usize,
    /// How long a usage day hash lives after its last write.
    usage_ttl_secs: u64,
    cache_max_bytes: usize,
}

/// Reservations to take back and usage to count in one set of token windows.
#[derive(Default)]
struct Settlement {
    used: u64,
    /// Redis window second → tokens reserved then.
    reserved: BTreeMap<u64, u64>,
}

impl Settlement {
    fn add(&mut self, reservation: Reservation, used: u64) {
        self.used = self.used.saturating_add(used);
        // A reservation Redis did not make (admitted locally during an outage) has nothing to take back there.
        if let Some(second) = reservation.shared_second {
            let slot = self.reserved.entry(second).or_default();
            *slot = slot.saturating_add(reservation.tokens);
        }
    }
}

/// Usage rows of one batch, summed per day and row.
type UsageBatch = BTreeMap<(String, UsageDims), UsageAmounts>;

/// What the writer thread is sent.
enum Job {
    Write(Deferred),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Key names, hash-tagged on a cluster.
struct Keys {
    prefix: String,
    clustered: bool,
}

impl Keys {
    /// `prefix kind:id`, or `prefix kind:{id}` on a cluster.
    fn of(&self, kind: &str, id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + id.len() + 3);
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push(':');
        if self.clustered {
            key.push('{');
            key.push_str(id);
            key.push('}');
        } else {
            key.push_str(id);
        }
        key
    }

    /// A response cache key: `prefix kind:id`, or `prefix {cache}:kind:id` on a cluster (one slot, so one script
    /// keeps the bound).
    fn cache(&self, kind: &str, id: &str) -> String {
        let tag = if self.clustered { "{cache}:" } else { "" };
        format!("{}{tag}{kind}:{id}", self.prefix)
    }

    /// A rate window: `prefix rpm:name`, or `prefix {rate}:rpm:name` on a cluster (one slot for all windows).
    fn window(&self, kind: &str, name: &str) -> String {
        let tag = if self.clustered { "{rate}:" } else { "" };
        format!("{}{tag}{kind}:{name}", self.prefix)
    }
}

impl RedisStore {
    /// Connects to `url` (see [`crate::open`]: never fails, at worst answers locally until Redis is reachable).
    pub async fn open(url: &str, opts: &StoreOptions) -> Self {
        let clustered = RedisTarget::parse(url).is_ok_and(|t| t.clustered());
        let inner = Arc::new(Inner {
            link: Link::start(url).await,
            // Usage counters live in Redis: the local fallback keeps its own in memory, never in a file.
            local: MemoryStore::new(&StoreOptions {
                usage_path: None,
                ..opts.clone()
            }),
            keys: Keys {
                prefix: opts.key_prefix.clone(),
                clustered,
            },
            session_ttl_ms: ttl_ms(opts.session_ttl),
            context_max_entries: opts.context_max_entries,
            context_max_entry_bytes: opts.context_max_entry_bytes,
            context_max_session_bytes: opts.context_max_session_bytes,
            context_ttl_ms: ttl_ms(opts.context_ttl),
            catalog_ttl_ms: ttl_ms(opts.catalog_ttl),
            reference_ttl: opts.reference_ttl,
            responses_max_bytes: opts.responses_max_bytes,
            usage_ttl_secs: u64::from(opts.usage_retention_days.max(1)) * 86_400,
            cache_max_bytes: opts.cache_max_bytes,
        });
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        spawn_writer(inner.clone(), jobs);
        RedisStore { inner, queue }
    }
}

impl Inner {
    /// Runs `op` on Redis within `timeout`; `None` (and the failure recorded) when Redis is down or the call
    /// fails, so the caller answers locally.
    async fn redis_within<T, F, Fut>(&self, op: &'static str, timeout: Duration, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.link.connection()?;
        // Pingora's shared timer, not Tokio's (see Cargo.toml): this runs on every request with a limit.
        match pingora_timeout::fast_timeout::fast_timeout(timeout, f(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.link.failed(op, &describe_error(&e), is_outage(&e));
                None
            }
            Err(_) => {
                let why = format!("no answer within {} ms", timeout.as_millis());
                self.link.failed(op, &why, true);
                None
            }
        }
    }

    /// [`Inner::redis_within`] with the request path's timeout.
    async fn redis<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.redis_within(op, OP_TIMEOUT, f).await
    }

    async fn rate_window(
        &self,
        key: String,
        limit: u64,
        mode: &'static str,
        amount: u64,
    ) -> Option<RateDecision> {
        let answer: Vec<i64> = self
            .redis("rate limit", |mut conn| async move {
                RATE_WINDOW
                    .key(key)
                    .arg(limit)
                    .arg(mode)
                    .arg(amount)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let (ok, used, retry) = match answer[..] {
            [ok, used, retry] => (
                ok == 1,
                u64::try_from(used).unwrap_or(0),
                u64::try_from(retry).unwrap_or(1),
            ),
            _ => {
                self.link
                    .failed("rate limit", &"unexpected script answer", false);
                return None;
            }
        };
        Some(if ok {
            allowed(limit, used)
        } else {
            refused(limit, used, retry)
        })
    }

    /// The admission on Redis; `None` when Redis cannot answer.
    async fn admit_shared(
        &self,
        buckets: &[LimitBucket],
        reserve: u64,
        spend: Option<&SpendLimit>,
    ) -> Option<Admission> {
        // The windows to check, in order, with what each is: (bucket index, kind, limit).
        let mut windows: Vec<(usize, LimitKind, u64)> = Vec::with_capacity(buckets.len() * 2);
        for (i, b) in buckets.iter().enumerate() {
            if let Some(limit) = b.rpm {
                windows.push((i, LimitKind::Requests, limit));
            }
            if let Some(limit) = b.tpm {
                windows.push((i, LimitKind::Tokens, limit));
            }
        }
        let mut out = Admission {
            buckets: vec![BucketDecision::default(); buckets.len()],
            ..Admission::default()
        };
        if windows.is_empty() && spend.is_none() {
            return Some(out);
        }
        let mut keys: Vec<String> = windows
            .iter()
            .map(|&(i, kind, _)| match kind {
                LimitKind::Requests => self.keys.window("rpm", &buckets[i].name),
                LimitKind::Tokens => self.keys.window("tpm", &buckets[i].name),
            })
            .collect();
        if let Some(limit) = spend {
            keys.push(self.keys.window("spend", &limit.name));
        }
        let spend_args = spend.map(|l| (l.limit, l.reserve, ttl_ms(l.ttl)));
        let window_count = windows.len();
        let args: Vec<(u64, &'static str)> = windows
            .iter()
            .map(|&(_, kind, limit)| match kind {
                LimitKind::Requests => (limit, "r"),
                LimitKind::Tokens => (limit, "t"),
            })
            .collect();
        let answer: Vec<i64> = self
            .redis("admit", |mut conn| async move {
                let mut call = ADMIT.prepare_invoke();
                call.key(&keys[..]).arg(reserve).arg(window_count);
                for (limit, kind) in args {
                    call.arg(limit).arg(kind);
                }
                if let Some((limit, cost, ttl)) = spend_args {
                    call.arg(limit).arg(cost).arg(ttl);
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        if answer.len() != 6 + 2 * windows.len() {
            self.link
                .failed("admit", &"unexpected script answer", false);
            return None;
        }
        let number = |i: usize| u64::try_from(answer[i]).unwrap_or(0);
        let second = number(0);
        let refused_at = usize::try_from(answer[1]).unwrap_or(0);
        let reserved = number(2);
        for (k, &(i, kind, limit)) in windows.iter().enumerate() {
            let used = number(3 + 2 * k);
            let retry = number(4 + 2 * k);
            let decision = if retry > 0 {
                refused(limit, used, retry)
            } else {
                allowed(limit, used)
            };
            let slot = &mut out.buckets[i];
            match kind {
                LimitKind::Requests => slot.requests = Some(decision),
                LimitKind::Tokens => slot.tokens = Some(decision),
            }
        }
        let at = 3 + 2 * windows.len();
        out.spend = spend.map(|_| SpendDecision {
            state: if answer[at] == 2 {
                SpendState::Exhausted
            } else {
                SpendState::Reserved
            },
            spent: number(at + 1),
            reserved: number(at + 2),
        });
        if refused_at > 0 {
            let (i, kind, _) = windows[refused_at - 1];
            out.refused = Some((i, kind));
        } else if out.admitted() {
            out.reservation = Reservation {
                tokens: reserved,
                shared_second: Some(second),
                local_second: Some(self.local.mirror_admission(buckets, reserved)),
            };
        }
        Some(out)
    }

    async fn bind_shared(
        &self,
        binding: &SessionBinding,
        timeout: Duration,
    ) -> Option<SessionBinding> {
        let json = serde_json::to_string(binding).ok()?;
        let key = self.keys.of("session", &binding.conversation_id);
        let ttl = self.session_ttl_ms;
        let stored = self
            .redis_within("bind session", timeout, |mut conn| async move {
                BIND_SESSION
                    .key(key)
                    .arg(json)
                    .arg(ttl)
                    .arg(unix_now())
                    .invoke_async::<String>(&mut conn)
                    .await
            })
            .await?;
        parse::<SessionBinding>("session binding", &stored)
    }

    /// Binds on Redis (mirroring what Redis stored) or, when Redis cannot, locally.
    async fn bind(&self, binding: SessionBinding, timeout: Duration) {
        match self.bind_shared(&binding, timeout).await {
            Some(stored) => self.local.put_session(stored),
            None => self.local.bind_now(binding),
        }
    }

    /// Claims on Redis (mirroring what Redis holds afterwards) or, when Redis cannot, locally.
    async fn claim(
        &self,
        binding: SessionBinding,
        expected: Option<&SessionBinding>,
        timeout: Duration,
    ) -> Option<SessionBinding> {
        let shared = async {
            let json = serde_json::to_string(&binding).ok()?;
            let seen = match expected {
                Some(e) => serde_json::to_string(e).ok()?,
                None => String::new(),
            };
            let key = self.keys.of("session", &binding.conversation_id);
            let ttl = self.session_ttl_ms;
            let stored = self
                .redis_within("claim session", timeout, |mut conn| async move {
                    CLAIM_SESSION
                        .key(key)
                        .arg(json)
                        .arg(ttl)
                        .arg(unix_now())
                        .arg(seen)
                        .invoke_async::<String>(&mut conn)
                        .await
                })
                .await?;
            parse::<SessionBinding>("session binding", &stored)
        };
        match shared.await {
            Some(stored) => {
                self.local.put_session(stored.clone());
                Some(stored)
            }
            None => self.local.claim_now(binding, expected),
        }
    }

    /// Pushes on Redis or, when Redis cannot, locally.
    async fn push(&self, session: &str, owner: &str, entry: serde_json::Value, timeout: Duration) {
        if self.context_max_entries == 0 {
            return;
        }
        let Ok(json) = serde_json::to_string(&entry) else {
            return;
        };
        if json.len() > self.context_max_entry_bytes || json.len() > self.context_max_session_bytes
        {
            log::debug!(
                "store: a context snippet of {} bytes is over the limit, not kept",
                json.len()
            );
            return;
        }
        let keys = [
            self.keys.of("context", session),
            self.keys.of("context-owner", session),
        ];
        let (max, ttl, bytes) = (
            self.context_max_entries,
            self.context_ttl_ms,
            self.context_max_session_bytes,
        );
        let owner_arg = owner.to_string();
        let pushed = self
            .redis_within("push context", timeout, |mut conn| async move {
                PUSH_CONTEXT
                    .key(&keys[..])
                    .arg(owner_arg)
                    .arg(json)
                    .arg(max)
                    .arg(ttl)
                    .arg(bytes)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
        if pushed.is_none() {
            self.local.push_now(session, owner, entry);
        }
    }

    /// Settles reservations on Redis (the local mirror was settled when each write was deferred); when Redis
    /// cannot, the local store alone has them.
    async fn settle(self: Arc<Self>, buckets: Vec<String>, settlement: Settlement) {
        let keys: Vec<String> = buckets
            .iter()
            .map(|name| self.keys.window("tpm", name))
            .collect();
        self.redis_within("settle tokens", WRITE_TIMEOUT, |mut conn| async move {
            let mut call = SETTLE.prepare_invoke();
            call.key(&keys[..]).arg(settlement.used);
            for (second, reserved) in settlement.reserved {
                call.arg(second).arg(reserved);
            }
            call.invoke_async::<i64>(&mut conn).await
        })
        .await;
    }

    /// Replaces cost reservations by the real cost on a spend counter (`delta` = cost − reserved, summed over a
    /// batch); when Redis cannot, the local counter alone has it.
    async fn settle_spend(self: Arc<Self>, name: String, delta: i64, ttl: Duration) {
        if delta == 0 {
            return;
        }
        let key = self.keys.window("spend", &name);
        let ttl = ttl_ms(ttl);
        self.redis_within("settle spend", WRITE_TIMEOUT, |conn| {
            crate::spend::redis_settle(conn, key, delta, ttl)
        })
        .await;
    }

    /// Adds a batch's usage to the day hashes; when Redis cannot, the local counters have it (and
    /// [`Store::usage`] answers from them while Redis is down).
    async fn add_usage(self: Arc<Self>, batch: UsageBatch) {
        let rows: Vec<(String, String, UsageAmounts)> = batch
            .iter()
            .map(|((day, dims), a)| (self.keys.of("usage", day), dims.field(), *a))
            .collect();
        let ttl = self.usage_ttl_secs;
        let written = self
            .redis_within("add usage", WRITE_TIMEOUT, |conn| {
                crate::usage::redis_add(conn, rows, ttl)
            })
            .await;
        if written.is_none() {
            for ((day, dims), amounts) in batch {
                self.local.defer(Deferred::Usage(Box::new(UsageRecord {
                    day,
                    dims,
                    amounts,
                })));
            }
        }
    }

    /// Writes one deferred write (from the writer thread).
    async fn write(self: Arc<Self>, write: Deferred) {
        match write {
            Deferred::Settle {
                buckets,
                reservation,
                used,
            } => {
                let mut settlement = Settlement::default();
                settlement.add(reservation, used);
                self.settle(buckets, settlement).await
            }
            Deferred::Spend {
                name,
                reserved,
                spent,
                ttl,
            } => {
                let delta = i64::try_from(spent).unwrap_or(i64::MAX)
                    - i64::try_from(reserved).unwrap_or(i64::MAX);
                self.settle_spend(name, delta, ttl).await
            }
            Deferred::Bind(binding) => self.bind(binding, WRITE_TIMEOUT).await,
            Deferred::Claim { binding, expected } => {
                self.claim(binding, expected.as_deref(), WRITE_TIMEOUT)
                    .await;
            }
            Deferred::Context {
                session,
                owner,
                entry,
            } => self.push(&session, &owner, entry, WRITE_TIMEOUT).await,
            Deferred::Cache { key, value, ttl } => self.put_cached(key, value, ttl).await,
            Deferred::Usage(record) => {
                let r = *record;
                let mut batch = UsageBatch::new();
                batch.insert((r.day, r.dims), r.amounts);
                self.add_usage(batch).await
            }
            Deferred::Reference {
                owner,
                id,
                provider,
            } => {
                self.local.remember_reference(&owner, &id, &provider);
                let key = self.keys.of("ref", &format!("{owner}:{id}"));
                let ttl = ttl_ms(self.reference_ttl);
                self.redis_within(
                    "remember a reference",
                    WRITE_TIMEOUT,
                    |mut conn| async move { conn.pset_ex::<_, _, ()>(key, provider, ttl).await },
                )
                .await;
            }
        }
    }

    /// Stores a cached answer within the shared bound; when Redis cannot, the local store keeps it (read while
    /// Redis is away).
    async fn put_cached(&self, key: String, value: Vec<u8>, ttl: Duration) {
        let keys = [
            self.keys.cache("cache", &key),
            self.keys.cache("cache-order", ""),
            self.keys.cache("cache-sizes", ""),
        ];
        let (ttl_arg, max) = (ttl_ms(ttl), self.cache_max_bytes);
        let size = crate::response_cache::entry_bytes(&key, &value);
        let stored = self
            .redis_within("cache an answer", WRITE_TIMEOUT, |mut conn| {
                let value = value.clone();
                async move {
                    CACHE_PUT
                        .key(&keys[..])
                        .arg(value)
                        .arg(ttl_arg)
                        .arg(max)
                        .arg(size)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            })
            .await;
        if stored.is_none() {
            self.local.defer(Deferred::Cache { key, value, ttl });
        }
    }

    /// The local half of a deferred write, done at once when Redis is down (or the queue full).
    fn write_locally(&self, write: Deferred) {
        match write {
            // The local mirror of a settlement is done when it is deferred, whatever happens to Redis.
            Deferred::Settle { .. } => {}
            other => self.local.defer(other),
        }
    }
}

/// The writer thread: takes the queue in batches and sends each batch's writes together (Redis connections are
/// multiplexed, so they share round trips), until the store is dropped.
fn spawn_writer(inner: Arc<Inner>, mut jobs: mpsc::Receiver<Job>) {
    let spawned = std::thread::Builder::new()
        .name("apiproxy-store-writer".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    log::error!("store: cannot start the writer's runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                let mut batch = Vec::with_capacity(BATCH);
                while jobs.recv_many(&mut batch, BATCH).await > 0 {
                    let flushing = |b: &[Job]| b.iter().any(|j| matches!(j, Job::Flush(_)));
                    if batch.len() < BATCH && !flushing(&batch) {
                        tokio::time::sleep(GATHER).await;
                        while batch.len() < BATCH {
                            match jobs.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                    }
                    let mut writes = tokio::task::JoinSet::new();
                    let mut flushes = Vec::new();
                    // Settlements of the same buckets are summed: one script call per bucket set and batch.
                    let mut settlements: BTreeMap<Vec<String>, Settlement> = BTreeMap::new();
                    // Spend settlements of one counter likewise: name → (cost − reserved, TTL).
                    let mut spends: BTreeMap<String, (i64, Duration)> = BTreeMap::new();
                    // Usage of one day and row likewise: one HINCRBY per amount and row per batch.
                    let mut usages = UsageBatch::new();
                    for job in batch.drain(..) {
                        match job {
                            Job::Write(Deferred::Settle {
                                buckets,
                                reservation,
                                used,
                            }) => settlements
                                .entry(buckets)
                                .or_default()
                                .add(reservation, used),
                            Job::Write(Deferred::Spend {
                                name,
                                reserved,
                                spent,
                                ttl,
                            }) => {
                                let slot = spends.entry(name).or_insert((0, ttl));
                                let delta = i64::try_from(spent).unwrap_or(i64::MAX)
                                    - i64::try_from(reserved).unwrap_or(i64::MAX);
                                slot.0 = slot.0.saturating_add(delta);
                                slot.1 = slot.1.max(ttl);
                            }
                            Job::Write(Deferred::Usage(record)) => {
                                let r = *record;
                                usages.entry((r.day, r.dims)).or_default().add(&r.amounts);
                            }
                            Job::Write(w) if inner.link.is_up() => {
                                writes.spawn(inner.clone().write(w));
                            }
                            Job::Write(w) => inner.write_locally(w),
                            Job::Flush(done) => flushes.push(done),
                        }
                    }
                    for (buckets, settlement) in settlements {
                        writes.spawn(inner.clone().settle(buckets, settlement));
                    }
                    for (name, (delta, ttl)) in spends {
                        writes.spawn(inner.clone().settle_spend(name, delta, ttl));
                    }
                    if !usages.is_empty() {
                        writes.spawn(inner.clone().add_usage(std::mem::take(&mut usages)));
                    }
                    while writes.join_next().await.is_some() {}
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
            });
        });
    if let Err(e) = spawned {
        // `defer` then finds the queue closed and writes locally.
        log::error!("store: cannot start the writer thread: {e}");
    }
}

fn ttl_dur(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

fn ttl_ms(ttl: std::time::Duration) -> u64 {
    // Redis refuses a PX of 0.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A JSON value read from Redis; anything unreadable is treated as absent.
fn parse<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> Option<T> {
    match serde_json::from_str(raw) {
        Ok(value) => Some(value),
        Err(e) => {
            log::debug!("store: ignoring an unreadable {what} in Redis: {e}");
            None
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get_session(&self, id: &str) -> Option<SessionBinding> {
        let inner = &self.inner;
        let key = inner.keys.of("session", id);
        match inner
            .redis("get session", |mut conn| async move {
                conn.get::<_, Option<String>>(key).await
            })
            .await
        {
            Some(raw) => parse("session binding", &raw?),
            None => inner.local.get_session(id).await,
        }
    }

    async fn bind_session(&self, binding: SessionBinding) {
        self.inner.bind(binding, OP_TIMEOUT).await;
    }

    async fn claim_session(
        &self,
        binding: SessionBinding,
        expected: Option<&SessionBinding>,
    ) -> Option<SessionBinding> {
        self.inner.claim(binding, expected, OP_TIMEOUT).await
    }

    async fn delete_session(&self, id: &str) -> bool {
        let inner = &self.inner;
        let key = inner.keys.of("session", id);
        let deleted = inner
            .redis("delete session", |mut conn| async move {
                conn.del::<_, u64>(key).await
            })
            .await;
        let local = inner.local.delete_session(id).await;
        match deleted {
            Some(n) => n > 0,
            None => local,
        }
    }

    async fn push_context(&self, session: &str, owner: &str, entry: serde_json::Value) {
        self.inner.push(session, owner, entry, OP_TIMEOUT).await;
    }

    async fn get_context(&self, session: &str) -> (Option<String>, Vec<serde_json::Value>) {
        let inner = &self.inner;
        let (list, owner) = (
            inner.keys.of("context", session),
            inner.keys.of("context-owner", session),
        );
        let last = isize::try_from(inner.context_max_entries).unwrap_or(isize::MAX) - 1;
        let read = inner
            .redis("get context", |mut conn| async move {
                redis::pipe()
                    .get(owner)
                    .lrange(list, 0, last)
                    .query_async::<(Option<String>, Vec<String>)>(&mut conn)
                    .await
            })
            .await;
        match read {
            Some((owner, raw)) => {
                let entries: Vec<serde_json::Value> = raw
                    .iter()
                    .filter_map(|r| parse("context snippet", r))
                    .collect();
                if entries.is_empty() {
                    (None, entries)
                } else {
                    (owner, entries)
                }
            }
            None => inner.local.get_context(session).await,
        }
    }

    async fn put_catalog(&self, provider: &str, models: &[String]) {
        let inner = &self.inner;
        inner.local.put_catalog(provider, models).await;
        let Ok(json) = serde_json::to_string(models) else {
            return;
        };
        let key = inner.keys.of("catalog", provider);
        let ttl = inner.catalog_ttl_ms;
        inner
            .redis("put catalog", |mut conn| async move {
                conn.pset_ex::<_, _, ()>(key, json, ttl).await
            })
            .await;
    }

    async fn reference(&self, owner: &str, id: &str) -> Option<String> {
        let inner = &self.inner;
        let key = inner.keys.of("ref", &format!("{owner}:{id}"));
        match inner
            .redis("read a reference", |mut conn| async move {
                conn.get::<_, Option<String>>(key).await
            })
            .await
        {
            // `1`: remembered by a gateway that did not keep the provider.
            Some(found) => found.map(|p| if p == "1" { String::new() } else { p }),
            None => inner.local.reference(owner, id).await,
        }
    }

    async fn put_response(&self, owner: &str, id: &str, entry: &[u8], ttl: Duration) -> bool {
        let inner = &self.inner;
        if entry.len() > inner.responses_max_bytes {
            log::debug!(
                "store: a response of {} bytes is over responses_max_bytes, not kept",
                entry.len()
            );
            return false;
        }
        let key = inner.keys.of("response", &format!("{owner}:{id}"));
        let value = entry.to_vec();
        let ttl = ttl_ms(ttl);
        match inner
            .redis_within("keep a response", WRITE_TIMEOUT, |mut conn| async move {
                conn.pset_ex::<_, _, ()>(key, value, ttl).await
            })
            .await
        {
            Some(()) => true,
            // Kept by this replica while Redis is down (the next turn may come here).
            None => {
                inner
                    .local
                    .put_response(owner, id, entry, Duration::from_millis(ttl))
                    .await
            }
        }
    }

    async fn get_response(&self, owner: &str, id: &str) -> Option<Vec<u8>> {
        let inner = &self.inner;
        let key = inner.keys.of("response", &format!("{owner}:{id}"));
        match inner
            .redis("read a response", |mut conn| async move {
                conn.get::<_, Option<Vec<u8>>>(key).await
            })
            .await
        {
            // Redis answers for every replica: a copy this one kept while
            // Redis was down is not served once it is back (it may have
            // been deleted elsewhere since).
            Some(v) => v,
            None => inner.local.get_response(owner, id).await,
        }
    }

    async fn delete_response(&self, owner: &str, id: &str) -> bool {
        let inner = &self.inner;
        let key = inner.keys.of("response", &format!("{owner}:{id}"));
        let local = inner.local.delete_response(owner, id).await;
        let remote = inner
            .redis("delete a response", |mut conn| async move {
                conn.del::<_, u64>(key).await
            })
            .await;
        local || remote.is_some_and(|n| n > 0)
    }

    async fn get_cached(&self, key: &str) -> Option<Vec<u8>> {
        let inner = &self.inner;
        let entry = inner.keys.cache("cache", key);
        match inner
            .redis("read the cache", |mut conn| async move {
                conn.get::<_, Option<Vec<u8>>>(entry).await
            })
            .await
        {
            Some(found) => found,
            None => inner.local.get_cached(key).await,
        }
    }

    async fn get_catalog(&self, provider: &str) -> Option<Vec<String>> {
        let inner = &self.inner;
        let key = inner.keys.of("catalog", provider);
        match inner
            .redis("get catalog", |mut conn| async move {
                conn.get::<_, Option<String>>(key).await
            })
            .await
        {
            Some(raw) => parse("model catalog", &raw?),
            None => inner.local.get_catalog(provider).await,
        }
    }

    async fn hit_requests(&self, name: &str, limit: u64) -> RateDecision {
        let inner = &self.inner;
        match inner
            .rate_window(inner.keys.window("rpm", name), limit, "hit", 0)
            .await
        {
            Some(decision) => {
                if decision.allowed {
                    inner.local.count_request(name);
                }
                decision
            }
            None => inner.local.hit_requests(name, limit).await,
        }
    }

    async fn check_tokens(&self, name: &str, limit: u64) -> RateDecision {
        let inner = &self.inner;
        match inner
            .rate_window(inner.keys.window("tpm", name), limit, "check", 0)
            .await
        {
            Some(decision) => decision,
            None => inner.local.check_tokens(name, limit).await,
        }
    }

    async fn add_tokens(&self, name: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let inner = &self.inner;
        // Counted locally either way: the local window is the fallback's memory of this replica's usage.
        inner.local.add_tokens(name, tokens).await;
        inner
            .rate_window(inner.keys.window("tpm", name), 0, "add", tokens)
            .await;
    }

    async fn add_spend(&self, name: &str, amount: u64, ttl: std::time::Duration) -> u64 {
        let inner = &self.inner;
        let key = inner.keys.window("spend", name);
        let ttl = ttl_ms(ttl);
        // Counted locally either way: the fallback's memory of this replica's spend.
        let local = inner.local.add_spend(name, amount, ttl_dur(ttl)).await;
        inner
            .redis("spend", |conn| {
                crate::spend::redis_add(conn, key, amount, ttl)
            })
            .await
            .unwrap_or(local)
    }

    async fn admit_spending(
        &self,
        buckets: &[LimitBucket],
        reserve_tokens: u64,
        spend: Option<&SpendLimit>,
    ) -> Admission {
        match self
            .inner
            .admit_shared(buckets, reserve_tokens, spend)
            .await
        {
            Some(admission) => admission,
            // A spending limit fails closed: counted locally, every replica could spend it all again.
            None if spend.is_some() => Admission {
                buckets: vec![BucketDecision::default(); buckets.len()],
                spend: Some(SpendDecision {
                    state: SpendState::Unknown,
                    spent: 0,
                    reserved: 0,
                }),
                ..Admission::default()
            },
            None => self.inner.local.admit(buckets, reserve_tokens).await,
        }
    }

    fn defer(&self, write: Deferred) {
        let inner = &self.inner;
        if let Deferred::Settle {
            buckets,
            reservation,
            used,
        } = &write
        {
            inner
                .local
                .settle_local(buckets, reservation.local_second, reservation.tokens, *used);
            if reservation.shared_second.is_none() && *used == 0 {
                return;
            }
        }
        if !inner.link.is_up() {
            return inner.write_locally(write);
        }
        if let Err(e) = self.queue.try_send(Job::Write(write)) {
            ERRORS.inc();
            log::debug!("store: the write queue is full or closed; written locally");
            if let mpsc::error::TrySendError::Full(Job::Write(w))
            | mpsc::error::TrySendError::Closed(Job::Write(w)) = e
            {
                inner.write_locally(w);
            }
        }
    }

    async fn usage(&self, from: &str, to: &str) -> Vec<UsageRecord> {
        let inner = &self.inner;
        let (Some(first), Some(last)) = (parse_day(from), parse_day(to)) else {
            return Vec::new();
        };
        let keys: Vec<(String, String)> = (first..=last)
            .map(|d| {
                let day = day_string(d);
                let key = inner.keys.of("usage", &day);
                (day, key)
            })
            .collect();
        match inner
            .redis_within("read usage", USAGE_READ_TIMEOUT, |conn| {
                crate::usage::redis_read(conn, keys)
            })
            .await
        {
            Some(rows) => rows,
            None => inner.local.usage(from, to).await,
        }
    }

    async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok()
            && tokio::time::timeout(FLUSH_WAIT, flushed).await.is_err()
        {
            log::warn!("store: deferred writes not all written within {FLUSH_WAIT:?}");
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn healthy(&self) -> bool {
        self.inner.link.is_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_are_tagged_so_each_script_touches_one_slot() {
        let flat = Keys {
            prefix: "gw:".into(),
            clustered: false,
        };
        assert_eq!(flat.of("session", "s1"), "gw:session:s1");
        assert_eq!(flat.window("rpm", "key:alice"), "gw:rpm:key:alice");
        let tagged = Keys {
            prefix: "gw:".into(),
            clustered: true,
        };
        assert_eq!(tagged.of("context", "s1"), "gw:context:{s1}");
        assert_eq!(tagged.of("context-owner", "s1"), "gw:context-owner:{s1}");
        assert_eq!(tagged.window("rpm", "key:alice"), "gw:{rate}:rpm:key:alice");
        assert_eq!(tagged.window("tpm", "global"), "gw:{rate}:tpm:global");
        assert_eq!(
            tagged.window("spend", "budget:alice:2026-12"),
            "gw:{rate}:spend:budget:alice:2026-12"
        );
        assert_eq!(flat.window("spend", "b"), flat.of("spend", "b"));
        assert_eq!(flat.cache("cache", "ab"), "gw:cache:ab");
        assert_eq!(tagged.cache("cache", "ab"), "gw:{cache}:cache:ab");
        assert_eq!(tagged.cache("cache-order", ""), "gw:{cache}:cache-order:");
    }
}
