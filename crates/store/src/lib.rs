//! Shared state for apiproxy: session stickiness, context snippets, the model-catalog cache, rate-limit windows
//! and spend counters, behind one [`Store`] trait.
//!
//! Two implementations behave the same way:
//! - [`memory::MemoryStore`], embedded, the default (no `store` section): state lives in this process;
//! - [`redis_store::RedisStore`]: state lives in Redis (one server, a Redis Cluster, or the master a set of
//!   Sentinels names) and is shared by every replica pointed at it. When Redis cannot be reached, every call is
//!   answered by an embedded memory store instead, so requests never fail or wait because of Redis; sharing
//!   resumes by itself once Redis is back.
//!
//! On the request path a gateway needs one Redis round trip: [`Store::admit_spending`] checks and counts every
//! rate limit of a request, and reserves from its spending limit, in one script call (and [`Store::get_session`],
//! issued at the same time, shares the round trip); a request that makes or moves a session's binding adds one
//! [`Store::claim_session`] before its answer's first byte. Everything learnt after the answer goes through
//! [`Store::defer`]: queued, written in batches in the background, flushed by [`Store::flush`] when the process
//! exits.
//!
//! [`open`] builds the right one from [`StoreOptions`]; [`LazyStore`] opens it on first use.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

pub mod keys;
mod lua;
pub mod memory;
mod metrics;
mod redis_link;
pub mod redis_store;
pub mod redis_url;
mod response_cache;
pub mod spend;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;
pub mod window;

pub use memory::json_size;
pub use redis_url::RedisTarget;

/// How the store is built: where Redis is (if anywhere) and how long things live.
#[derive(Clone)]
pub struct StoreOptions {
    /// Where Redis is (see [`RedisTarget::parse`]): `redis://[:password@]host:port/db` (or `rediss://`,
    /// `redis+unix://`), `redis+cluster://host:port,host:port,...`, `redis+sentinel://host:port,.../master-name`;
    /// `None` → embedded memory store.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several gateways (or other tools) can share one Redis database.
    pub key_prefix: String,
    /// How long an unused session binding lives; every [`Store::bind_session`] starts it again.
    pub session_ttl: Duration,
    /// How many context snippets are kept per session (newest win).
    pub context_max_entries: usize,
    /// The largest context snippet kept, in bytes of its JSON (keys, numbers and punctuation count); larger ones
    /// are dropped (the gateway shrinks its snippets to fit before pushing them).
    pub context_max_entry_bytes: usize,
    /// The most bytes of snippets kept per session: the oldest go first when a push would exceed it.
    pub context_max_session_bytes: usize,
    /// How long a session's context lives after its last snippet.
    pub context_ttl: Duration,
    /// How long a provider's model list is cached.
    pub catalog_ttl: Duration,
    /// How long the gateway remembers which client key received a provider object id (a Responses API
    /// response id), so that only that key may reference it ([`Store::has_reference`]).
    pub reference_ttl: Duration,
    /// The largest Responses API record kept ([`Store::put_response`]), in bytes of its JSON.
    pub responses_max_bytes: usize,
    /// The embedded store's file for usage counters (`store.path`); `None`: memory only. Ignored with Redis.
    pub usage_path: Option<std::path::PathBuf>,
    /// How many days usage counters are kept ([`usage`]).
    pub usage_retention_days: u32,
    /// The most bytes of cached answers ([`Store::get_cached`]) this store keeps (keys and values): the oldest
    /// written go first when a new one would not fit. On Redis the bound is shared by every replica.
    pub cache_max_bytes: usize,
}

/// [`StoreOptions::cache_max_bytes`] by default: 64 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 64 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            redis_url: None,
            key_prefix: "apiproxy:".to_string(),
            session_ttl: Duration::from_secs(3600),
            context_max_entries: 50,
            context_max_entry_bytes: 32 * 1024,
            context_max_session_bytes: 256 * 1024,
            context_ttl: Duration::from_secs(24 * 3600),
            catalog_ttl: Duration::from_secs(300),
            reference_ttl: Duration::from_secs(30 * 24 * 3600),
            responses_max_bytes: 4 * 1024 * 1024,
            usage_path: None,
            usage_retention_days: 400,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

// Hand-written so a password in the Redis URL never reaches a log line through `{:?}`.
impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("key_prefix", &self.key_prefix)
            .field("session_ttl", &self.session_ttl)
            .field("context_max_entries", &self.context_max_entries)
            .field("context_max_entry_bytes", &self.context_max_entry_bytes)
            .field("context_max_session_bytes", &self.context_max_session_bytes)
            .field("context_ttl", &self.context_ttl)
            .field("catalog_ttl", &self.catalog_ttl)
            .field("reference_ttl", &self.reference_ttl)
            .field("responses_max_bytes", &self.responses_max_bytes)
            .field("usage_path", &self.usage_path)
            .field("usage_retention_days", &self.usage_retention_days)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .finish()
    }
}

/// Which upstream a conversation is stuck to (stickiness via `X-Session-Id`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionBinding {
    /// The session id the client sent.
    pub conversation_id: String,
    /// The model name the client asked for.
    pub logical_model: String,
    /// The provider that served it.
    pub provider_id: String,
    /// The provider's model id.
    pub model_id: String,
    /// Which of the provider's `api_keys` was used.
    pub key_index: usize,
    /// Unix seconds when the binding was first made.
    pub created_at: f64,
    /// Unix seconds of the last request bound through it.
    pub last_accessed: f64,
    /// Requests bound through it so far.
    pub message_count: u64,
    /// The client key name that made the binding; only that key's requests follow or move it. `None` on an open
    /// gateway (no client keys), and on bindings stored before owners were recorded (which then serve no key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl SessionBinding {
    /// A binding of `conversation_id`, made by the client key `owner` (`None` on an open gateway), to `upstream`;
    /// times and the message count are filled in by [`Store::bind_session`].
    pub fn new(conversation_id: &str, owner: Option<&str>, upstream: BoundUpstream<'_>) -> Self {
        SessionBinding {
            conversation_id: conversation_id.to_string(),
            logical_model: upstream.logical_model.to_string(),
            provider_id: upstream.provider_id.to_string(),
            model_id: upstream.model_id.to_string(),
            key_index: upstream.key_index,
            created_at: 0.0,
            last_accessed: 0.0,
            message_count: 0,
            owner: owner.map(str::to_string),
        }
    }

    /// Whether a request made with client key `key` (`None`: open gateway) may follow this binding.
    pub fn belongs_to(&self, key: Option<&str>) -> bool {
        self.owner.as_deref() == key
    }

    /// Whether both bind the same logical model to the same upstream and key (times and counts aside).
    pub fn same_upstream(&self, other: &SessionBinding) -> bool {
        self.logical_model == other.logical_model
            && self.provider_id == other.provider_id
            && self.model_id == other.model_id
            && self.key_index == other.key_index
    }
}

/// The upstream a session is bound to (an argument of [`SessionBinding::new`]).
#[derive(Clone, Copy, Debug)]
pub struct BoundUpstream<'a> {
    /// The model name the client asked for.
    pub logical_model: &'a str,
    /// The provider that served it.
    pub provider_id: &'a str,
    /// The provider's model id.
    pub model_id: &'a str,
    /// Which of the provider's `api_keys` was used.
    pub key_index: usize,
}

/// The answer of a rate-limit check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The per-minute limit checked against.
    pub limit: u64,
    /// What is left of the limit in the current window (after counting this request when it was allowed).
    pub remaining: u64,
    /// When refused: seconds until enough of the window frees up (at least 1); 0 when allowed.
    pub retry_after_secs: u64,
}

/// The limits of one rate-limit bucket (a client key's, or the gateway-wide one) checked at admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitBucket {
    /// The bucket's name (`key:alice`, `global`): the windows are `rpm:{name}` and `tpm:{name}`.
    pub name: String,
    /// Requests per sliding minute, if limited.
    pub rpm: Option<u64>,
    /// Tokens per sliding minute, if limited.
    pub tpm: Option<u64>,
}

/// What [`Store::admit`] decided for one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketDecision {
    /// The request limit's state (when the bucket has one).
    pub requests: Option<RateDecision>,
    /// The token limit's state (when the bucket has one).
    pub tokens: Option<RateDecision>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The bucket's `rpm`.
    Requests,
    /// The bucket's `tpm`.
    Tokens,
}

/// Tokens set aside at admission, to be settled with the real usage after the answer ([`Deferred::Settle`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// How many tokens were reserved in each bucket with a `tpm`.
    pub tokens: u64,
    /// The window second (Redis's clock) the reservation was counted in, when Redis counted it.
    pub shared_second: Option<u64>,
    /// The window second of the local store's copy (the Redis store mirrors what it counts, for outages).
    pub local_second: Option<u64>,
}

/// A spending limit checked, and reserved from, in the same call as the rate limits ([`Store::admit_spending`]): a
/// client key's budget for the current period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendLimit {
    /// The spend counter (as in [`Store::add_spend`]). It holds what was spent plus what requests in flight
    /// reserved.
    pub name: String,
    /// The request is admitted while the counter is under this.
    pub limit: u64,
    /// What the request may cost; the amount reserved is this, capped at what is left under `limit`.
    pub reserve: u64,
    /// How long the counter lives after a write.
    pub ttl: Duration,
}

/// What became of a [`SpendLimit`] at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpendState {
    /// Under the limit: `reserved` was added to the counter (when the rate limits admitted the request too).
    Reserved,
    /// The counter is at or over the limit: refused, nothing counted anywhere.
    Exhausted,
    /// The counter could not be read (Redis down or failing): refused, nothing counted. A spending limit fails
    /// closed, because every replica counting on its own could spend the whole budget again.
    Unknown,
}

/// The decision on a [`SpendLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpendDecision {
    pub state: SpendState,
    /// The counter before this request.
    pub spent: u64,
    /// What this request added to the counter (0 unless admitted).
    pub reserved: u64,
}

/// The answer of [`Store::admit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// One decision per bucket, in the order given. When refused, nothing was counted anywhere: the decisions
    /// show the usage as it stands.
    pub buckets: Vec<BucketDecision>,
    /// `None` when the rate limits admit; else the first bucket (index) and limit that refused.
    pub refused: Option<(usize, LimitKind)>,
    /// What was reserved (nothing when refused).
    pub reservation: Reservation,
    /// The spending limit's decision, when one was asked for ([`Store::admit_spending`]).
    pub spend: Option<SpendDecision>,
}

impl Admission {
    /// Whether the request may go ahead: every rate limit and the spending limit (if any) admit it.
    pub fn admitted(&self) -> bool {
        self.refused.is_none() && self.spend.is_none_or(|s| s.state == SpendState::Reserved)
    }
}

/// Writes that need not finish before the answer: queued by [`Store::defer`], done in the background.
#[derive(Clone, Debug, PartialEq)]
pub enum Deferred {
    /// Replaces the tokens reserved at admission by the usage the provider reported.
    Settle {
        /// The buckets with a `tpm` the request was admitted in (names as in [`LimitBucket::name`]).
        buckets: Vec<String>,
        /// What [`Store::admit`] reserved.
        reservation: Reservation,
        /// The tokens the answer really used.
        used: u64,
    },
    /// Replaces what [`Store::admit_spending`] reserved on a spend counter by what the answer really cost.
    Spend {
        /// The counter ([`SpendLimit::name`]).
        name: String,
        /// What the admission reserved ([`SpendDecision::reserved`]).
        reserved: u64,
        /// What the answer cost.
        spent: u64,
        /// How long the counter lives after a write.
        ttl: Duration,
    },
    /// [`Store::bind_session`].
    Bind(SessionBinding),
    /// [`Store::claim_session`] (its answer unused).
    Claim {
        /// The binding to store.
        binding: SessionBinding,
        /// The binding the writer saw, which this one may replace (boxed: a write on the queue stays small).
        expected: Option<Box<SessionBinding>>,
    },
    /// [`Store::push_context`].
    Context {
        /// The session id.
        session: String,
        /// The client key name writing it.
        owner: String,
        /// The snippet.
        entry: serde_json::Value,
    },
    /// Client key `owner` received the provider object `id` through the gateway (for `reference_ttl`).
    Reference {
        /// The client key's id (`-` for no key).
        owner: String,
        /// The provider's id of the object (a Responses API response id).
        id: String,
        /// The id of the provider that keeps the object (a conversation continuing it goes there).
        provider: String,
    },
    /// One answered request's usage, added to its day's counters ([`usage`]); boxed to keep the queue small.
    Usage(Box<usage::UsageRecord>),
    /// Caches an answer under `key` for `ttl` (read back by [`Store::get_cached`]), within
    /// [`StoreOptions::cache_max_bytes`].
    Cache {
        /// The entry's key (the gateway's hash of what identifies the request).
        key: String,
        /// The answer, as the gateway encoded it.
        value: Vec<u8>,
        /// How long it lives.
        ttl: Duration,
    },
}

/// The gateway's shared state. Every method answers: storage trouble degrades to local behaviour, never to an
/// error, and a corrupt stored value reads as absent; the one exception is a spending limit, which fails closed
/// ([`SpendState::Unknown`]).
#[async_trait]
pub trait Store: Send + Sync {
    /// The binding of session `id`, if there is a live one.
    async fn get_session(&self, id: &str) -> Option<SessionBinding>;
    /// Creates or moves the binding of `binding.conversation_id`: keeps `created_at` of an existing one, counts one
    /// more message (`message_count` = previous + 1; for a new binding the given count, at least 1), sets
    /// `last_accessed` to now and starts the TTL again. A live binding with another owner is left as it is (one
    /// client key cannot move another's session).
    async fn bind_session(&self, binding: SessionBinding);
    /// Binds `binding.conversation_id` in one atomic step, only when the session has no live binding, or when its
    /// live binding is still `expected` (the one the caller read: its upstream failed and another served, so the
    /// binding moves). An existing binding is kept in the new one as [`Store::bind_session`] keeps it
    /// (`created_at`, one more message). Returns the binding in force afterwards: `binding` when it was stored,
    /// else the one that stays (another replica bound the session first, or another client key owns it); `None`
    /// only when neither can be read. Two replicas claiming an unbound session at once cannot both win. The gateway
    /// awaits it before the first byte of an answer, so a client that sends its next turn to another replica finds
    /// the binding there.
    async fn claim_session(
        &self,
        binding: SessionBinding,
        expected: Option<&SessionBinding>,
    ) -> Option<SessionBinding>;
    /// Removes the binding; true when there was one.
    async fn delete_session(&self, id: &str) -> bool;
    /// Stores a snippet, newest first, at most `context_max_entries` and `context_max_session_bytes` kept (the
    /// oldest go first); a snippet over `context_max_entry_bytes` is dropped. `owner` is the client key name that
    /// wrote it: the first writer owns the session's context until it expires, and snippets pushed under another
    /// owner are dropped (one client cannot write into another's history).
    async fn push_context(&self, session: &str, owner: &str, entry: serde_json::Value);
    /// The owner and the snippets of a session, newest first; `(None, [])` when there are none.
    async fn get_context(&self, session: &str) -> (Option<String>, Vec<serde_json::Value>);
    /// Caches a provider's model list for `catalog_ttl`.
    async fn put_catalog(&self, provider: &str, models: &[String]);
    /// The cached model list; `None` when absent or expired.
    async fn get_catalog(&self, provider: &str) -> Option<Vec<String>>;
    /// The provider keeping the object `id`, when client key `owner` received it ([`Deferred::Reference`]) within
    /// `reference_ttl`; `Some("")` when the provider is unknown (remembered by an older gateway).
    async fn reference(&self, owner: &str, id: &str) -> Option<String>;
    /// Whether client key `owner` received the provider object `id` within `reference_ttl`.
    async fn has_reference(&self, owner: &str, id: &str) -> bool {
        self.reference(owner, id).await.is_some()
    }
    /// Keeps a Responses API response the gateway served (`entry`: its JSON record) under client key `owner` for
    /// `ttl`, replacing one with the same id. Awaited before the answer ends, so the client's next turn finds it on
    /// any replica. An entry over `responses_max_bytes` is not kept (false); false too when it could not be written.
    async fn put_response(&self, owner: &str, id: &str, entry: &[u8], ttl: Duration) -> bool;
    /// The record [`Store::put_response`] kept for `owner` under `id`; `None` when absent, expired or kept by another
    /// owner (the caller cannot tell which).
    async fn get_response(&self, owner: &str, id: &str) -> Option<Vec<u8>>;
    /// Removes the record of `owner` under `id`; true when there was one.
    async fn delete_response(&self, owner: &str, id: &str) -> bool;
    /// The cached answer under `key` ([`Deferred::Cache`]), while it lives; `None` when absent, expired or
    /// unreadable (store trouble reads as a miss, never an error).
    async fn get_cached(&self, key: &str) -> Option<Vec<u8>>;
    /// Counts one request against `limit` per (sliding) minute if allowed: an atomic check-and-add.
    async fn hit_requests(&self, name: &str, limit: u64) -> RateDecision;
    /// Checks whether the tokens used in the last 60 s are under `limit` (adds nothing).
    async fn check_tokens(&self, name: &str, limit: u64) -> RateDecision;
    /// Adds tokens used (after the response, from the usage the provider reported).
    async fn add_tokens(&self, name: &str, tokens: u64);
    /// Adds `amount` to the spend counter `name` (shared by every replica on one Redis) and returns its new
    /// total; `amount` 0 only reads it. The counter expires `ttl` after it was first added to.
    async fn add_spend(&self, name: &str, amount: u64, ttl: Duration) -> u64;
    /// Checks every limit of `buckets` in order and, only when none refuses, counts the request in each `rpm`
    /// window and reserves `reserve_tokens` in each `tpm` window: atomically, in one Redis round trip. A request
    /// refused by any limit consumes nothing. A token limit admits while the window (reservations included) is
    /// under it, so concurrent requests overshoot it by at most one request's usage. The tokens reserved are
    /// capped at what the tightest `tpm` window has left ([`Reservation::tokens`]), so a request larger than a
    /// small limit is still admitted into an empty window.
    async fn admit(&self, buckets: &[LimitBucket], reserve_tokens: u64) -> Admission {
        self.admit_spending(buckets, reserve_tokens, None).await
    }
    /// [`Store::admit`] with a spending limit checked and reserved in the same atomic call: the request is
    /// admitted only when every rate limit admits it and the spend counter is under its limit
    /// ([`Admission::spend`]). When Redis cannot answer, a request with a spending limit is refused
    /// ([`SpendState::Unknown`]); one without keeps the local fallback.
    async fn admit_spending(
        &self,
        buckets: &[LimitBucket],
        reserve_tokens: u64,
        spend: Option<&SpendLimit>,
    ) -> Admission;
    /// The usage counters of days `from..=to` (`YYYY-MM-DD`, UTC), one record per day and row. With Redis
    /// down, what this process counted locally.
    async fn usage(&self, from: &str, to: &str) -> Vec<usage::UsageRecord>;
    /// Queues `write` and returns at once; the Redis store writes queued work in batches in the background.
    fn defer(&self, write: Deferred);
    /// Waits (a few seconds at most) until everything deferred before this call is written.
    async fn flush(&self);
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;
    /// Whether Redis is currently reachable (always true for the memory store).
    fn healthy(&self) -> bool;
}

/// Builds the store: memory when `redis_url` is `None`, else Redis with a local fallback. Never fails because
/// Redis is down or the URL is wrong (that is logged; calls are then answered locally). Waits at most about a
/// second for the first connection.
pub async fn open(opts: StoreOptions) -> Arc<dyn Store> {
    match opts.redis_url.clone() {
        None => Arc::new(memory::MemoryStore::new(&opts)),
        Some(url) => Arc::new(redis_store::RedisStore::open(&url, &opts).await),
    }
}

/// Checks that `url` is a Redis URL the store can use (for config validation); the error never holds the password.
pub fn validate_redis_url(url: &str) -> Result<(), String> {
    RedisTarget::parse(url)
        .map(|_| ())
        .map_err(|e| format!("invalid Redis URL {}: {e}", redact_url(url)))
}

/// The store, opened on first use: the gateway creates it before Pingora daemonizes and opens it inside the
/// serving process, so the Redis connection's thread lives there.
pub struct LazyStore {
    opts: StoreOptions,
    cell: OnceCell<Arc<dyn Store>>,
}

impl LazyStore {
    /// A store that [`LazyStore::get`] opens with `opts`.
    pub fn new(opts: StoreOptions) -> Self {
        LazyStore {
            opts,
            cell: OnceCell::new(),
        }
    }

    /// The store; the first call opens it (never fails: Redis trouble falls back to local state).
    pub async fn store(&self) -> &Arc<dyn Store> {
        match self.cell.get() {
            Some(store) => store,
            // Opening is boxed: the future of every request that awaits
            // the store does not carry its size.
            None => {
                self.cell
                    .get_or_init(|| Box::pin(open(self.opts.clone())))
                    .await
            }
        }
    }

    /// Flushes deferred writes if the store was ever opened (at exit).
    pub async fn flush(&self) {
        if let Some(store) = self.cell.get() {
            store.flush().await;
        }
    }
}

/// `url` with any user name and password replaced by `***`, and the values of `password` and `pass` query
/// parameters too, fit for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let head = match rest[..authority_end].rfind('@') {
        Some(at) => format!(
            "{}***@{}",
            &url[..scheme_end + 3],
            &rest[at + 1..authority_end]
        ),
        None => url[..scheme_end + 3 + authority_end].to_string(),
    };
    head + &redact_query(&rest[authority_end..])
}

/// Query parameters whose values are secrets (redis-rs reads `password`; `pass` is a common spelling).
const SECRET_PARAMS: [&str; 2] = ["password", "pass"];

/// `tail` (path, query and fragment of a URL) with the values of [`SECRET_PARAMS`] replaced by `***`.
fn redact_query(tail: &str) -> String {
    let fragment_at = tail.find('#').unwrap_or(tail.len());
    let Some(q) = tail[..fragment_at].find('?') else {
        return tail.to_string();
    };
    let query = &tail[q + 1..fragment_at];
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s)) => {
                format!("{key}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{}{}{}", &tail[..=q], pairs.join("&"), &tail[fragment_at..])
}

/// Now, as unix seconds.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What [`Store::bind_session`] stores, given what was there before; `None` when the previous binding belongs to
/// another owner and stays. Shared by both stores (the Redis Lua script `BIND_SESSION` does the same).
pub(crate) fn merge_binding(
    previous: Option<&SessionBinding>,
    mut binding: SessionBinding,
    now: f64,
) -> Option<SessionBinding> {
    match previous {
        Some(prev) if prev.owner != binding.owner => return None,
        Some(prev) => {
            binding.created_at = prev.created_at;
            binding.message_count = prev.message_count.saturating_add(1);
        }
        None => {
            if binding.created_at <= 0.0 {
                binding.created_at = now;
            }
            binding.message_count = binding.message_count.max(1);
        }
    }
    binding.last_accessed = now;
    Some(binding)
}

/// What [`Store::claim_session`] stores, given the live binding: `None` when `current` stays (it exists and is
/// not `expected`, or belongs to another owner). Shared by both stores (the Redis Lua script `CLAIM_SESSION` does
/// the same).
pub(crate) fn claim_binding(
    current: Option<&SessionBinding>,
    binding: SessionBinding,
    expected: Option<&SessionBinding>,
    now: f64,
) -> Option<SessionBinding> {
    match current {
        None => merge_binding(None, binding, now),
        Some(cur) if expected.is_some_and(|e| cur.same_upstream(e)) => {
            merge_binding(Some(cur), binding, now)
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(provider: &str) -> SessionBinding {
        SessionBinding::new(
            "s1",
            Some("alice"),
            BoundUpstream {
                logical_model: "fast",
                provider_id: provider,
                model_id: "m",
                key_index: 0,
            },
        )
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://user:p@ss@h:1/2"), "rediss://***@h:1/2");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("redis://h:6379/0?password=s3cret&db=1"),
            "redis://h:6379/0?password=***&db=1"
        );
        assert_eq!(
            redact_url("rediss://h?protocol=resp3&Pass=s3cret#frag"),
            "rediss://h?protocol=resp3&Pass=***#frag"
        );
        assert_eq!(
            redact_url("redis://:a@h/0?pass=b"),
            "redis://***@h/0?pass=***"
        );
        assert_eq!(
            redact_url("redis://h/0?passive=1#?password=x"),
            "redis://h/0?passive=1#?password=x",
            "only query parameters named so"
        );
    }

    #[test]
    fn debug_of_options_hides_the_password() {
        let opts = StoreOptions {
            redis_url: Some("redis://:hunter2@h:6379".into()),
            ..StoreOptions::default()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("h:6379"));
    }

    #[test]
    fn validate_rejects_bad_urls_without_echoing_them() {
        assert!(validate_redis_url("redis://127.0.0.1:6379/0").is_ok());
        let err = validate_redis_url("http://:hunter2@h").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn merge_keeps_creation_and_counts_messages() {
        let first = merge_binding(None, binding("a"), 100.0).expect("new binding");
        assert_eq!(first.created_at, 100.0);
        assert_eq!(first.last_accessed, 100.0);
        assert_eq!(first.message_count, 1);
        let moved = merge_binding(Some(&first), binding("b"), 150.0).expect("same owner");
        assert_eq!(moved.provider_id, "b");
        assert_eq!(moved.created_at, 100.0);
        assert_eq!(moved.last_accessed, 150.0);
        assert_eq!(moved.message_count, 2);
    }

    #[test]
    fn a_claim_binds_an_unbound_session_or_moves_the_binding_it_saw() {
        let first = claim_binding(None, binding("a"), None, 100.0).expect("unbound: claimed");
        assert_eq!((first.provider_id.as_str(), first.message_count), ("a", 1));
        // Another replica claimed first: the loser's claim leaves it.
        assert_eq!(claim_binding(Some(&first), binding("b"), None, 101.0), None);
        // A claim that saw another binding (since moved) leaves it too.
        assert_eq!(
            claim_binding(Some(&first), binding("c"), Some(&binding("b")), 102.0),
            None
        );
        // A claim that saw this binding moves it, keeping its history.
        let moved =
            claim_binding(Some(&first), binding("b"), Some(&binding("a")), 103.0).expect("moved");
        assert_eq!(moved.provider_id, "b");
        assert_eq!((moved.created_at, moved.message_count), (100.0, 2));
        // Never another key's session.
        let mut other = binding("b");
        other.owner = Some("mallory".into());
        assert_eq!(
            claim_binding(Some(&first), other, Some(&binding("a")), 104.0),
            None
        );
    }

    #[test]
    fn another_owner_neither_moves_nor_follows_a_binding() {
        let first = merge_binding(None, binding("a"), 100.0).expect("new binding");
        let mut other = binding("b");
        other.owner = Some("mallory".into());
        assert_eq!(merge_binding(Some(&first), other.clone(), 150.0), None);
        assert!(first.belongs_to(Some("alice")));
        assert!(!first.belongs_to(Some("mallory")));
        assert!(!first.belongs_to(None));
        other.owner = None;
        assert!(other.belongs_to(None));
        assert!(
            !other.belongs_to(Some("alice")),
            "no recorded owner serves no key"
        );
    }
}
