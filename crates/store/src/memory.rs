//! The embedded store: everything in this process, in sharded maps (`DashMap`) so concurrent requests rarely
//! contend and each lock is held for one map operation. Expired entries are treated as absent at once and removed
//! by a sweeper thread every [`SWEEP_INTERVAL`], which keeps memory bounded by what is live.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::window::{allowed, Window};
use crate::{
    claim_binding, merge_binding, unix_now, Admission, BucketDecision, Deferred, LimitBucket,
    LimitKind, RateDecision, Reservation, SessionBinding, SpendDecision, SpendLimit, SpendState,
    Store, StoreOptions,
};

/// How often expired entries are swept away.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The most provider object ids the memory store remembers at once.
pub const MAX_REFERENCES: usize = 200_000;

/// The most bytes of Responses API records the memory store keeps at once (new ones are refused past it: use Redis
/// for more).
pub const MAX_RESPONSES_BYTES: usize = 256 * 1024 * 1024;

fn reference_key(owner: &str, id: &str) -> String {
    let mut k = String::with_capacity(owner.len() + id.len() + 1);
    k.push_str(owner);
    k.push('\n');
    k.push_str(id);
    k
}

/// The in-process [`Store`]; also the fallback of the Redis store.
pub struct MemoryStore {
    state: Arc<State>,
    spend: crate::spend::SpendCounters,
    usage: Arc<crate::usage::UsageCounters>,
}

/// Rate windows by bucket name. The names come from the config and the
/// stored keys (`key:<owner id>`, `global`), never from a request, so a fast
/// seeded hasher does where a map keyed by what clients send keeps SipHash.
type Windows = DashMap<String, Window, foldhash::fast::RandomState>;

struct State {
    session_ttl: Duration,
    context_max_entries: usize,
    context_max_entry_bytes: usize,
    context_max_session_bytes: usize,
    context_ttl: Duration,
    catalog_ttl: Duration,
    /// Rate-limit windows count whole seconds since this instant (monotonic: wall-clock jumps do not matter).
    epoch: Instant,
    sessions: DashMap<String, Expiring<SessionBinding>>,
    contexts: DashMap<String, Expiring<Context>>,
    catalogs: DashMap<String, Expiring<Vec<String>>>,
    reference_ttl: Duration,
    /// `owner\nid` of provider objects a client key received → the provider keeping it.
    references: DashMap<String, Expiring<String>>,
    responses_max_bytes: usize,
    /// `owner\nid` → a Responses API record ([`Store::put_response`]).
    responses: DashMap<String, Expiring<Vec<u8>>>,
    /// The bytes of `responses`.
    responses_bytes: std::sync::atomic::AtomicUsize,
    requests: Windows,
    tokens: Windows,
    /// Held while one admission checks and counts several windows, so that it is atomic like the Redis script.
    admission: Mutex<()>,
    /// Cached answers, bounded in bytes (`cache_max_bytes`).
    cached: Mutex<crate::response_cache::ResponseCache>,
}

struct Expiring<T> {
    value: T,
    expires: Instant,
}

impl<T> Expiring<T> {
    fn new(value: T, ttl: Duration) -> Self {
        Expiring {
            value,
            expires: Instant::now() + ttl,
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

struct Context {
    owner: String,
    /// Snippets, newest first, each with its size in bytes (as JSON).
    entries: VecDeque<(serde_json::Value, usize)>,
    /// The sum of the sizes.
    bytes: usize,
}

impl MemoryStore {
    /// An empty store with the TTLs and limits of `opts` (`redis_url` is ignored).
    pub fn new(opts: &StoreOptions) -> Self {
        let state = Arc::new(State {
            session_ttl: opts.session_ttl,
            context_max_entries: opts.context_max_entries,
            context_max_entry_bytes: opts.context_max_entry_bytes,
            context_max_session_bytes: opts.context_max_session_bytes,
            context_ttl: opts.context_ttl,
            catalog_ttl: opts.catalog_ttl,
            epoch: Instant::now(),
            sessions: DashMap::new(),
            contexts: DashMap::new(),
            catalogs: DashMap::new(),
            reference_ttl: opts.reference_ttl,
            references: DashMap::new(),
            responses_max_bytes: opts.responses_max_bytes,
            responses: DashMap::new(),
            responses_bytes: Default::default(),
            requests: Windows::default(),
            tokens: Windows::default(),
            admission: Mutex::new(()),
            cached: Mutex::new(crate::response_cache::ResponseCache::new(
                opts.cache_max_bytes,
            )),
        });
        spawn_sweeper(Arc::downgrade(&state));
        MemoryStore {
            state,
            spend: Default::default(),
            usage: crate::usage::UsageCounters::new(
                opts.usage_path.clone(),
                opts.usage_retention_days,
            ),
        }
    }

    /// Remembers that `owner` received `id`. Bounded: past [`MAX_REFERENCES`] live entries a new one is not
    /// kept (that key then cannot reference the object; fail closed, logged).
    pub(crate) fn remember_reference(&self, owner: &str, id: &str, provider: &str) {
        let refs = &self.state.references;
        if refs.len() >= MAX_REFERENCES {
            let now = Instant::now();
            refs.retain(|_, e| e.live(now));
            if refs.len() >= MAX_REFERENCES {
                log::warn!(
                    "{MAX_REFERENCES} provider object ids are remembered already: a new one is not (use Redis, or provider_refs: any)"
                );
                return;
            }
        }
        refs.insert(
            reference_key(owner, id),
            Expiring::new(provider.to_owned(), self.state.reference_ttl),
        );
    }

    /// Stores `binding` exactly as given (the Redis store mirrors what Redis holds, for use during an outage).
    pub(crate) fn put_session(&self, binding: SessionBinding) {
        let ttl = self.state.session_ttl;
        self.state
            .sessions
            .insert(binding.conversation_id.clone(), Expiring::new(binding, ttl));
    }

    /// Counts one request without checking (mirror of a request Redis let through).
    pub(crate) fn count_request(&self, name: &str) {
        let now = self.state.now_secs();
        window_of(&self.state.requests, name).add(now, 1);
    }

    /// Counts an admission Redis made (the request in every `rpm` window, the reservation in every `tpm` one), so
    /// that an outage starts from what this replica let through. Returns the local window second.
    pub(crate) fn mirror_admission(&self, buckets: &[LimitBucket], reserve: u64) -> u64 {
        let now = self.state.now_secs();
        for b in buckets {
            if b.rpm.is_some() {
                window_of(&self.state.requests, &b.name).add(now, 1);
            }
            if b.tpm.is_some() {
                window_of(&self.state.tokens, &b.name).add(now, reserve);
            }
        }
        now
    }

    /// Replaces a reservation made at local second `second` by the real usage.
    pub(crate) fn settle_local(
        &self,
        buckets: &[String],
        second: Option<u64>,
        reserved: u64,
        used: u64,
    ) {
        let now = self.state.now_secs();
        for name in buckets {
            let mut w = window_of(&self.state.tokens, name);
            if let Some(second) = second {
                w.subtract(second, reserved);
            }
            w.add(now, used);
        }
    }

    /// [`Store::bind_session`], synchronously.
    pub(crate) fn bind_now(&self, binding: SessionBinding) {
        let now = Instant::now();
        let ttl = self.state.session_ttl;
        let wall = unix_now();
        match self.state.sessions.entry(binding.conversation_id.clone()) {
            dashmap::mapref::entry::Entry::Occupied(mut slot) => {
                let previous = slot.get().live(now).then(|| &slot.get().value);
                match merge_binding(previous, binding, wall) {
                    Some(merged) => {
                        slot.insert(Expiring::new(merged, ttl));
                    }
                    None => log::debug!("store: session of another key left unchanged"),
                }
            }
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                if let Some(new) = merge_binding(None, binding, wall) {
                    slot.insert(Expiring::new(new, ttl));
                }
            }
        }
    }

    /// [`Store::claim_session`], synchronously (atomic: the map's entry is held).
    pub(crate) fn claim_now(
        &self,
        binding: SessionBinding,
        expected: Option<&SessionBinding>,
    ) -> Option<SessionBinding> {
        let now = Instant::now();
        let ttl = self.state.session_ttl;
        let wall = unix_now();
        match self.state.sessions.entry(binding.conversation_id.clone()) {
            dashmap::mapref::entry::Entry::Occupied(mut slot) => {
                let current = slot.get().live(now).then(|| slot.get().value.clone());
                match claim_binding(current.as_ref(), binding, expected, wall) {
                    Some(stored) => {
                        slot.insert(Expiring::new(stored.clone(), ttl));
                        Some(stored)
                    }
                    None => current,
                }
            }
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                let stored = claim_binding(None, binding, expected, wall)?;
                slot.insert(Expiring::new(stored.clone(), ttl));
                Some(stored)
            }
        }
    }

    /// [`Store::push_context`], synchronously.
    pub(crate) fn push_now(&self, session: &str, owner: &str, entry: serde_json::Value) {
        let s = &self.state;
        if s.context_max_entries == 0 {
            return;
        }
        let size = json_size(&entry);
        if size > s.context_max_entry_bytes || size > s.context_max_session_bytes {
            log::debug!("store: a context snippet of {size} bytes is over the limit, not kept");
            return;
        }
        let now = Instant::now();
        let ttl = s.context_ttl;
        let mut slot = s
            .contexts
            .entry(session.to_string())
            .or_insert_with(|| Expiring::new(Context::new(owner), ttl));
        if !slot.live(now) {
            *slot = Expiring::new(Context::new(owner), ttl);
        }
        if slot.value.owner != owner {
            log::debug!("store: context of a session owned by another key left unchanged");
            return;
        }
        slot.expires = now + ttl;
        let context = &mut slot.value;
        context.entries.push_front((entry, size));
        context.bytes += size;
        while context.entries.len() > s.context_max_entries
            || context.bytes > s.context_max_session_bytes
        {
            match context.entries.pop_back() {
                Some((_, n)) => context.bytes -= n,
                None => break,
            }
        }
    }

    /// Removes whatever has expired (what the sweeper thread does).
    #[cfg(test)]
    fn sweep(&self) {
        self.state.sweep();
    }

    #[cfg(test)]
    fn entry_count(&self) -> usize {
        let s = &self.state;
        s.sessions.len() + s.contexts.len() + s.catalogs.len() + s.requests.len() + s.tokens.len()
    }
}

impl State {
    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn sweep(&self) {
        let now = Instant::now();
        let now_secs = self.now_secs();
        self.sessions.retain(|_, e| e.live(now));
        self.contexts.retain(|_, e| e.live(now));
        self.catalogs.retain(|_, e| e.live(now));
        self.references.retain(|_, e| e.live(now));
        self.responses.retain(|_, e| {
            let live = e.live(now);
            if !live {
                self.responses_bytes.fetch_sub(e.value.len(), Relaxed);
            }
            live
        });
        self.cached.lock().sweep(now);
        for windows in [&self.requests, &self.tokens] {
            windows.retain(|_, w| {
                w.expire(now_secs);
                !w.is_empty()
            });
        }
    }
}

/// Sweeps every [`SWEEP_INTERVAL`] on a plain thread (independent of any async runtime) until the store is gone.
fn spawn_sweeper(state: Weak<State>) {
    let spawned = std::thread::Builder::new()
        .name("apiproxy-store-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(SWEEP_INTERVAL);
            match state.upgrade() {
                Some(state) => state.sweep(),
                None => break,
            }
        });
    if let Err(e) = spawned {
        // Expired entries still read as absent; they are only not reclaimed.
        log::warn!("store: cannot start the sweeper thread: {e}");
    }
}

/// The window of `name`, created on first use. The returned guard holds one shard lock: keep it short.
fn window_of<'a>(
    windows: &'a Windows,
    name: &str,
) -> dashmap::mapref::one::RefMut<'a, String, Window, foldhash::fast::RandomState> {
    // `get_mut` first so the common case does not allocate the key.
    match windows.get_mut(name) {
        Some(w) => w,
        None => windows.entry(name.to_string()).or_default(),
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get_session(&self, id: &str) -> Option<SessionBinding> {
        let entry = self.state.sessions.get(id)?;
        entry.live(Instant::now()).then(|| entry.value.clone())
    }

    async fn bind_session(&self, binding: SessionBinding) {
        self.bind_now(binding);
    }

    async fn claim_session(
        &self,
        binding: SessionBinding,
        expected: Option<&SessionBinding>,
    ) -> Option<SessionBinding> {
        self.claim_now(binding, expected)
    }

    async fn delete_session(&self, id: &str) -> bool {
        self.state
            .sessions
            .remove(id)
            .is_some_and(|(_, e)| e.live(Instant::now()))
    }

    async fn push_context(&self, session: &str, owner: &str, entry: serde_json::Value) {
        self.push_now(session, owner, entry);
    }

    async fn get_context(&self, session: &str) -> (Option<String>, Vec<serde_json::Value>) {
        match self.state.contexts.get(session) {
            Some(c) if c.live(Instant::now()) => (
                Some(c.value.owner.clone()),
                c.value.entries.iter().map(|(e, _)| e.clone()).collect(),
            ),
            _ => (None, Vec::new()),
        }
    }

    async fn get_cached(&self, key: &str) -> Option<Vec<u8>> {
        self.state.cached.lock().get(key, Instant::now())
    }

    async fn put_catalog(&self, provider: &str, models: &[String]) {
        let ttl = self.state.catalog_ttl;
        self.state
            .catalogs
            .insert(provider.to_string(), Expiring::new(models.to_vec(), ttl));
    }

    async fn get_catalog(&self, provider: &str) -> Option<Vec<String>> {
        let entry = self.state.catalogs.get(provider)?;
        entry.live(Instant::now()).then(|| entry.value.clone())
    }

    async fn reference(&self, owner: &str, id: &str) -> Option<String> {
        let e = self.state.references.get(&reference_key(owner, id))?;
        e.live(Instant::now()).then(|| e.value.clone())
    }

    async fn put_response(&self, owner: &str, id: &str, entry: &[u8], ttl: Duration) -> bool {
        let s = &self.state;
        if entry.len() > s.responses_max_bytes {
            log::debug!(
                "store: a response of {} bytes is over responses_max_bytes, not kept",
                entry.len()
            );
            return false;
        }
        if s.responses_bytes.load(Relaxed) + entry.len() > MAX_RESPONSES_BYTES {
            s.sweep();
            if s.responses_bytes.load(Relaxed) + entry.len() > MAX_RESPONSES_BYTES {
                log::warn!(
                    "{MAX_RESPONSES_BYTES} bytes of responses are kept already: a new one is not (use Redis for more)"
                );
                return false;
            }
        }
        s.responses_bytes.fetch_add(entry.len(), Relaxed);
        let old = s
            .responses
            .insert(reference_key(owner, id), Expiring::new(entry.to_vec(), ttl));
        if let Some(old) = old {
            s.responses_bytes.fetch_sub(old.value.len(), Relaxed);
        }
        true
    }

    async fn get_response(&self, owner: &str, id: &str) -> Option<Vec<u8>> {
        let e = self.state.responses.get(&reference_key(owner, id))?;
        e.live(Instant::now()).then(|| e.value.clone())
    }

    async fn delete_response(&self, owner: &str, id: &str) -> bool {
        match self.state.responses.remove(&reference_key(owner, id)) {
            Some((_, e)) => {
                self.state.responses_bytes.fetch_sub(e.value.len(), Relaxed);
                e.live(Instant::now())
            }
            None => false,
        }
    }

    async fn hit_requests(&self, name: &str, limit: u64) -> RateDecision {
        let now = self.state.now_secs();
        window_of(&self.state.requests, name).hit(now, limit)
    }

    async fn check_tokens(&self, name: &str, limit: u64) -> RateDecision {
        let now = self.state.now_secs();
        match self.state.tokens.get_mut(name) {
            Some(mut w) => w.check(now, limit),
            None => Window::default().check(now, limit),
        }
    }

    async fn add_tokens(&self, name: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let now = self.state.now_secs();
        window_of(&self.state.tokens, name).add(now, tokens);
    }

    async fn add_spend(&self, name: &str, amount: u64, ttl: Duration) -> u64 {
        self.spend.add(name, amount, ttl)
    }

    async fn admit_spending(
        &self,
        buckets: &[LimitBucket],
        reserve_tokens: u64,
        spend: Option<&SpendLimit>,
    ) -> Admission {
        let s = &self.state;
        let now = s.now_secs();
        let _atomic = s.admission.lock();
        let mut out = Admission::default();
        let mut reserve_tokens = reserve_tokens;
        let check = |windows: &Windows, name: &str, limit: u64| match windows.get_mut(name) {
            Some(mut w) => w.check(now, limit),
            None => Window::default().check(now, limit),
        };
        for (i, b) in buckets.iter().enumerate() {
            let mut d = BucketDecision::default();
            if let Some(limit) = b.rpm {
                let r = check(&s.requests, &b.name, limit);
                if !r.allowed && out.refused.is_none() {
                    out.refused = Some((i, LimitKind::Requests));
                }
                d.requests = Some(r);
            }
            if let Some(limit) = b.tpm {
                let r = check(&s.tokens, &b.name, limit);
                if !r.allowed && out.refused.is_none() {
                    out.refused = Some((i, LimitKind::Tokens));
                }
                // A reservation takes at most what the tightest window has left.
                reserve_tokens = reserve_tokens.min(r.remaining);
                d.tokens = Some(r);
            }
            out.buckets.push(d);
        }
        out.spend = spend.map(|limit| {
            let spent = self.spend.add(&limit.name, 0, limit.ttl);
            if spent >= limit.limit {
                SpendDecision {
                    state: SpendState::Exhausted,
                    spent,
                    reserved: 0,
                }
            } else {
                SpendDecision {
                    state: SpendState::Reserved,
                    spent,
                    reserved: limit.reserve.min(limit.limit - spent),
                }
            }
        });
        if out.admitted() {
            if let (Some(limit), Some(d)) = (spend, &out.spend) {
                if d.reserved > 0 {
                    self.spend.add(&limit.name, d.reserved, limit.ttl);
                }
            }
            for (b, d) in buckets.iter().zip(out.buckets.iter_mut()) {
                if let Some(r) = &mut d.requests {
                    window_of(&s.requests, &b.name).add(now, 1);
                    *r = allowed(r.limit, r.limit - r.remaining + 1);
                }
                if let Some(r) = &mut d.tokens {
                    window_of(&s.tokens, &b.name).add(now, reserve_tokens);
                    let used = (r.limit - r.remaining).saturating_add(reserve_tokens);
                    *r = allowed(r.limit, used);
                }
            }
            out.reservation = Reservation {
                tokens: reserve_tokens,
                shared_second: None,
                local_second: Some(now),
            };
        } else if let Some(d) = &mut out.spend {
            // Refused by a rate limit: nothing reserved.
            d.reserved = 0;
        }
        out
    }

    fn defer(&self, write: Deferred) {
        match write {
            Deferred::Settle {
                buckets,
                reservation,
                used,
            } => self.settle_local(&buckets, reservation.local_second, reservation.tokens, used),
            Deferred::Spend {
                name,
                reserved,
                spent,
                ttl,
            } => self.spend.settle(&name, reserved, spent, ttl),
            Deferred::Bind(binding) => self.bind_now(binding),
            Deferred::Claim { binding, expected } => {
                self.claim_now(binding, expected.as_deref());
            }
            Deferred::Context {
                session,
                owner,
                entry,
            } => self.push_now(&session, &owner, entry),
            Deferred::Reference {
                owner,
                id,
                provider,
            } => self.remember_reference(&owner, &id, &provider),
            Deferred::Usage(record) => self.usage.add(*record),
            Deferred::Cache { key, value, ttl } => {
                self.state
                    .cached
                    .lock()
                    .put(key, value, ttl, Instant::now())
            }
        }
    }

    async fn usage(&self, from: &str, to: &str) -> Vec<crate::usage::UsageRecord> {
        let (usage, from, to) = (self.usage.clone(), from.to_owned(), to.to_owned());
        // The file is read off the async threads.
        tokio::task::spawn_blocking(move || usage.read(&from, &to))
            .await
            .unwrap_or_default()
    }

    async fn flush(&self) {
        let usage = self.usage.clone();
        let _ = tokio::task::spawn_blocking(move || usage.write_file()).await;
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn healthy(&self) -> bool {
        true
    }
}

impl Context {
    fn new(owner: &str) -> Self {
        Context {
            owner: owner.to_string(),
            entries: VecDeque::new(),
            bytes: 0,
        }
    }
}

/// The size of `value` as compact JSON, without building the text (how context snippets are measured).
pub fn json_size(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that no entry expires between two steps of a test on a
    /// busy machine; expiry is then waited for, never assumed.
    const SHORT: Duration = Duration::from_secs(1);

    fn short() -> StoreOptions {
        StoreOptions {
            session_ttl: SHORT,
            context_ttl: SHORT,
            catalog_ttl: SHORT,
            ..StoreOptions::default()
        }
    }

    /// Sleeps past [`SHORT`] (a sleep never ends early, so everything made
    /// before it has expired).
    async fn past_ttl() {
        tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    }

    fn binding(id: &str) -> SessionBinding {
        SessionBinding::new(
            id,
            None,
            crate::BoundUpstream {
                logical_model: "fast",
                provider_id: "p",
                model_id: "m",
                key_index: 0,
            },
        )
    }

    #[tokio::test]
    async fn sweep_reclaims_expired_entries() {
        let store = MemoryStore::new(&short());
        for i in 0..100 {
            store.bind_session(binding(&format!("s{i}"))).await;
            store
                .push_context(&format!("s{i}"), "alice", serde_json::json!({"i": i}))
                .await;
        }
        store.put_catalog("p", &["m".to_string()]).await;
        assert_eq!(store.entry_count(), 201);
        past_ttl().await;
        store.sweep();
        assert_eq!(store.entry_count(), 0);
    }

    #[tokio::test]
    async fn expired_session_is_rebound_as_new() {
        let store = MemoryStore::new(&short());
        store.bind_session(binding("s")).await;
        store.bind_session(binding("s")).await;
        assert_eq!(
            store.get_session("s").await.map(|b| b.message_count),
            Some(2)
        );
        past_ttl().await;
        assert!(
            !store.delete_session("s").await,
            "an expired binding is not there"
        );
        store.bind_session(binding("s")).await;
        assert_eq!(
            store.get_session("s").await.map(|b| b.message_count),
            Some(1)
        );
    }

    #[tokio::test]
    async fn responses_are_kept_per_owner_within_their_bounds() {
        let store = MemoryStore::new(&StoreOptions {
            responses_max_bytes: 16,
            ..StoreOptions::default()
        });
        let day = Duration::from_secs(86400);
        assert!(
            store
                .put_response("alice", "resp_1", b"{\"a\":1}", day)
                .await
        );
        assert_eq!(
            store.get_response("alice", "resp_1").await.as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        // Another owner neither reads nor deletes it.
        assert_eq!(store.get_response("bob", "resp_1").await, None);
        assert!(!store.delete_response("bob", "resp_1").await);
        // Over responses_max_bytes: not kept.
        assert!(
            !store
                .put_response("alice", "resp_2", &[b'x'; 17], day)
                .await
        );
        assert_eq!(store.get_response("alice", "resp_2").await, None);
        // Expired: absent.
        assert!(
            store
                .put_response("alice", "resp_3", b"{}", Duration::ZERO)
                .await
        );
        assert_eq!(store.get_response("alice", "resp_3").await, None);
        assert!(store.delete_response("alice", "resp_1").await);
        assert_eq!(store.get_response("alice", "resp_1").await, None);
        store.state.sweep();
        assert_eq!(store.state.responses_bytes.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_reference_remembers_its_provider() {
        let store = MemoryStore::new(&StoreOptions::default());
        store.defer(Deferred::Reference {
            owner: "alice".into(),
            id: "resp_1".into(),
            provider: "openai".into(),
        });
        assert_eq!(
            store.reference("alice", "resp_1").await.as_deref(),
            Some("openai")
        );
        assert!(store.has_reference("alice", "resp_1").await);
        assert!(!store.has_reference("bob", "resp_1").await);
    }

    #[tokio::test]
    async fn another_owner_cannot_write_into_a_context() {
        let store = MemoryStore::new(&StoreOptions::default());
        store.push_context("s", "alice", serde_json::json!(1)).await;
        store
            .push_context("s", "mallory", serde_json::json!(2))
            .await;
        let (owner, entries) = store.get_context("s").await;
        assert_eq!(owner.as_deref(), Some("alice"));
        assert_eq!(entries, vec![serde_json::json!(1)]);
    }

    #[test]
    fn json_size_counts_every_byte() {
        let v = serde_json::json!({"k": [1, 22, 333], "s": "é"});
        assert_eq!(json_size(&v), serde_json::to_vec(&v).unwrap().len());
    }

    #[tokio::test]
    async fn checking_tokens_of_an_unknown_name_stores_nothing() {
        let store = MemoryStore::new(&StoreOptions::default());
        assert!(store.check_tokens("key:nobody", 10).await.allowed);
        assert_eq!(store.entry_count(), 0);
    }
}
