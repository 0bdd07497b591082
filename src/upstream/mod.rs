//! Providers at run time: their keys (rotated, with cooldowns by cause:
//! `cooldown.rs`; their rate-limit headers read: `ratelimit.rs`; their
//! concurrency: `capacity.rs`), per (provider, model) latency, errors and
//! breaker (`stats.rs`, `breaker.rs`: what routing scores on), their model
//! catalog, and how a request to them is addressed.
//!
//! A "key" here is always one of a provider's API keys (`api_keys` in its
//! config), named by its index; a client's key is `config::ClientKey`, and
//! the store's Redis key names are the store's (`store.key_prefix`).

pub mod breaker;
pub mod capacity;
pub mod catalog;
pub mod cooldown;
pub mod dns;
pub mod health;
pub mod http;
mod outbound_proxy;
pub mod ratelimit;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiproxy_translate::Format;
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

use crate::config::routing::Cooldowns;
use crate::config::{KeyStrategy, ProviderConfig, ProviderKind};
use capacity::{Capacity, Slot};
use cooldown::Cause;
use ratelimit::RateLimitReading;
use stats::UpstreamStats;

/// Milliseconds since the Unix epoch (cooldown deadlines are kept as this).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One provider and its live state.
#[derive(Debug)]
pub struct Provider {
    pub config: ProviderConfig,
    keys: Vec<Mutex<KeyState>>,
    /// Requests in flight and the `max_qps` bucket of each key.
    key_capacity: Vec<Capacity>,
    /// Smooth weighted round-robin: each key's current weight (nginx's
    /// algorithm; equal weights make it a plain rotation).
    rotation: Mutex<Vec<f64>>,
    /// Its answers and failures since start (`health::totals`).
    pub tally: Tally,
    /// Routing's record per upstream model (bounded: see `stats_for`).
    stats: Mutex<HashMap<String, Arc<UpstreamStats>>>,
    /// The model list fetched from the provider (when not configured).
    pub catalog: ArcSwapOption<Vec<String>>,
    /// When and how the catalog was last listed (`/providers/{id}/models`).
    pub listing: Mutex<Listing>,
    /// Wakes requests waiting for the first listing after start.
    first_listing: tokio::sync::Notify,
    /// The last active health check.
    pub last_probe: Mutex<Option<catalog::Probe>>,
    /// Keeps this provider's pooled connections apart from other providers'.
    pub pool_key: u64,
    /// The last peer built for the provider's address (see `http::peer_for`):
    /// an attempt shares it instead of building its own (~700 bytes, held for
    /// the whole answer).
    pub peer: ArcSwapOption<pingora::upstreams::peer::HttpPeer>,
    /// Requests in flight and the `max_qps` bucket.
    pub capacity: Capacity,
}

/// Models tracked one by one per provider; the rest share one record (a
/// client naming `provider/<anything>` cannot grow memory without bound).
const MAX_TRACKED_MODELS: usize = 256;

/// The live state of one provider key.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    /// Out of rotation until (ms since the epoch).
    pub cooldown_until_ms: u64,
    /// Failures in a row (the cooldown doubles with each).
    pub strikes: u32,
    /// Why it last cooled down.
    pub cause: Option<Cause>,
    /// What the provider last said about this key's rate limits.
    pub ratelimit: Option<RateLimitReading>,
}

/// What the last listing of a provider's catalog did.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The first listing since start has finished (well or not).
    pub tried: bool,
    /// When the list in use was listed (ms since the epoch; 0: never).
    pub listed_at_ms: u64,
    /// Where it came from: `provider` or `store` (another replica's).
    pub source: Option<&'static str>,
    /// Why the last listing failed, when it did.
    pub last_error: Option<String>,
}

/// Which of a provider's keys an attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChoice {
    /// The key at this index of `api_keys`.
    Key(usize),
    /// The provider is configured without keys.
    Keyless,
    /// Every key is cooling down (or was already tried).
    AllCooling,
    /// No key is cooling down for good, but every one left is at its
    /// `max_concurrency` or `max_qps`.
    AllBusy,
}

/// Where one key stands for the next pick, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// Already tried by this request, or rate limited / refused and resting.
    Out,
    /// At its own `max_concurrency` or `max_qps`.
    Full,
    /// Resting after a 5xx or a network error: the last resort.
    Soft,
    /// Nearly out of its rate limit.
    Low,
    Ready,
}

impl KeyChoice {
    /// The key index, for keyed providers.
    pub fn index(self) -> Option<usize> {
        match self {
            KeyChoice::Key(i) => Some(i),
            _ => None,
        }
    }
}

/// Provider-wide counts since start (`/providers/{id}/metrics`). Its
/// latency is its models' (`stats.rs`), not kept twice.
#[derive(Debug, Default)]
pub struct Tally {
    pub successes: AtomicU64,
    pub failures: AtomicU64,
}

impl Tally {
    pub fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Provider {
    pub fn new(config: ProviderConfig) -> Self {
        let keys = config
            .api_keys
            .iter()
            .map(|_| Mutex::new(KeyState::default()))
            .collect();
        Provider {
            keys,
            key_capacity: config
                .api_keys
                .iter()
                .map(|_| Capacity::default())
                .collect(),
            rotation: Mutex::new(vec![0.0; config.api_keys.len()]),
            tally: Tally::default(),
            stats: Mutex::new(HashMap::new()),
            catalog: ArcSwapOption::empty(),
            listing: Mutex::new(Listing::default()),
            first_listing: tokio::sync::Notify::new(),
            last_probe: Mutex::new(None),
            capacity: Capacity::default(),
            peer: ArcSwapOption::empty(),
            pool_key: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                config.id.hash(&mut h);
                config.ca.is_some().hash(&mut h);
                h.finish()
            },
            config,
        }
    }

    /// Routing's record of `model` on this provider.
    pub fn stats_for(&self, model: &str) -> Arc<UpstreamStats> {
        let mut m = self.stats.lock();
        if let Some(s) = m.get(model) {
            return Arc::clone(s);
        }
        let name = if m.len() < MAX_TRACKED_MODELS {
            model
        } else {
            "(other)"
        };
        Arc::clone(m.entry(name.to_owned()).or_default())
    }

    /// Every tracked model's record, sorted by model.
    pub fn all_stats(&self) -> Vec<(String, Arc<UpstreamStats>)> {
        let mut v: Vec<_> = self
            .stats
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A copy of every key's state.
    pub fn key_states(&self) -> Vec<KeyState> {
        self.keys.iter().map(|k| k.lock().clone()).collect()
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The key for the next attempt: `prefer` (a session's key) when it is
    /// ready, else one chosen by `key_strategy` among the ready keys,
    /// skipping `skip` (keys this request already tried). A key the
    /// provider says is nearly out of its rate limit (at most `reserve`
    /// left) is used only when no other is ready; a key resting after a 5xx
    /// or a network error only as the last resort (the provider has already
    /// been ranked behind every healthy one). A key rate limited or refused
    /// is never used while it rests, nor one at its own `max_concurrency`
    /// or `max_qps`.
    pub fn pick_key(&self, prefer: Option<usize>, skip: &[usize], reserve: u64) -> KeyChoice {
        if self.keys.is_empty() {
            return KeyChoice::Keyless;
        }
        let now = now_ms();
        let standing: Vec<Standing> = (0..self.keys.len())
            .map(|i| self.standing(i, now, skip, reserve))
            .collect();
        let preferred = |s: Standing| prefer.filter(|&p| standing.get(p) == Some(&s));
        let pick = preferred(Standing::Ready)
            .or_else(|| self.choose(&standing, Standing::Ready))
            .or_else(|| preferred(Standing::Low))
            .or_else(|| self.choose(&standing, Standing::Low))
            .or_else(|| self.choose(&standing, Standing::Soft));
        match pick {
            Some(i) => KeyChoice::Key(i),
            None if standing.contains(&Standing::Full) => KeyChoice::AllBusy,
            None => KeyChoice::AllCooling,
        }
    }

    /// When every key is resting after the provider rate limited it (429):
    /// the seconds until the first one is free. `None` when any key rests
    /// for another cause, or none rests.
    pub fn rate_limited_for(&self) -> Option<u64> {
        let now = now_ms();
        let mut first_free: Option<u64> = None;
        for k in &self.keys {
            let k = k.lock();
            if k.cooldown_until_ms <= now || k.cause != Some(Cause::RateLimited) {
                return None;
            }
            first_free =
                Some(first_free.map_or(k.cooldown_until_ms, |f| f.min(k.cooldown_until_ms)));
        }
        first_free.map(|until| (until - now).div_ceil(1000).max(1))
    }

    /// Whether [`Provider::pick_key`] would find a key, without taking a
    /// turn of the rotation.
    pub fn has_key_left(&self, skip: &[usize], reserve: u64) -> bool {
        let now = now_ms();
        (0..self.keys.len()).any(|i| {
            !matches!(
                self.standing(i, now, skip, reserve),
                Standing::Out | Standing::Full
            )
        })
    }

    fn standing(&self, i: usize, now: u64, skip: &[usize], reserve: u64) -> Standing {
        if skip.contains(&i) {
            return Standing::Out;
        }
        let k = self.keys[i].lock();
        if k.cooldown_until_ms > now {
            return match k.cause {
                Some(Cause::ServerError | Cause::Network) => Standing::Soft,
                _ => Standing::Out,
            };
        }
        let low = k.ratelimit.as_ref().is_some_and(|r| r.low(now, reserve));
        drop(k);
        let o = &self.config.key_options[i];
        if !self.key_capacity[i].has_room(now, o.max_concurrency, o.max_qps) {
            Standing::Full
        } else if low {
            Standing::Low
        } else {
            Standing::Ready
        }
    }

    /// One of the keys standing at `want`, by the provider's strategy.
    fn choose(&self, standing: &[Standing], want: Standing) -> Option<usize> {
        let eligible = || (0..standing.len()).filter(|&i| standing[i] == want);
        match self.config.key_strategy {
            KeyStrategy::FillFirst => eligible().next(),
            KeyStrategy::RoundRobin => {
                // Smooth weighted round-robin over the eligible keys: each
                // gains its weight, the highest is picked and pays the total.
                let mut current = self.rotation.lock();
                let mut total = 0.0;
                let mut best: Option<usize> = None;
                for i in eligible() {
                    let w = self.config.key_options[i].weight;
                    current[i] += w;
                    total += w;
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    current[b] -= total;
                }
                best
            }
        }
    }

    /// Takes a unit of key `i`'s own capacity (`max_concurrency`,
    /// `max_qps`), held until the slot drops; `None` when it has no room.
    pub fn acquire_key(&self, i: usize) -> Option<Option<Slot<'_>>> {
        let o = self.config.key_options.get(i)?;
        if o.max_concurrency.is_none() && o.max_qps.is_none() {
            return Some(None);
        }
        self.key_capacity[i]
            .acquire(now_ms(), o.max_concurrency, o.max_qps)
            .map(Some)
    }

    /// Whether some key could take a request now as far as its own
    /// capacity goes (a keyless provider: yes).
    pub fn keys_have_room(&self, now: u64) -> bool {
        self.keys.is_empty()
            || self
                .config
                .key_options
                .iter()
                .zip(&self.key_capacity)
                .any(|(o, c)| c.has_room(now, o.max_concurrency, o.max_qps))
    }

    /// Requests in flight with key `i`.
    pub fn key_in_flight(&self, i: usize) -> u32 {
        self.key_capacity.get(i).map_or(0, Capacity::in_flight)
    }

    /// Whether some key is usable now, and whether every usable key is
    /// nearly out of its rate limit, with the most requests any has left.
    pub fn key_outlook(&self, reserve: u64) -> (bool, bool, Option<u64>) {
        if self.keys.is_empty() {
            return (true, false, None);
        }
        let now = now_ms();
        let (mut any, mut all_low, mut best) = (false, true, None::<u64>);
        for k in &self.keys {
            let k = k.lock();
            if k.cooldown_until_ms > now {
                continue;
            }
            any = true;
            let r = k.ratelimit.as_ref();
            all_low &= r.is_some_and(|r| r.low(now, reserve));
            if let Some(left) = r.and_then(|r| r.requests_left(now)) {
                best = Some(best.map_or(left, |b| b.max(left)));
            }
        }
        (any, any && all_low, best)
    }

    /// Takes key `i` out of rotation for `cause`; returns how long. The
    /// rest doubles with each failure of the key in a row.
    pub fn cool_key(
        &self,
        i: usize,
        cause: Cause,
        retry_after_secs: Option<u64>,
        c: &Cooldowns,
    ) -> Duration {
        let Some(k) = self.keys.get(i) else {
            return Duration::ZERO;
        };
        let mut k = k.lock();
        k.strikes = k.strikes.saturating_add(1);
        let d = cooldown::key_cooldown(cause, k.strikes, retry_after_secs, c);
        k.cooldown_until_ms = now_ms() + d.as_millis() as u64;
        k.cause = Some(cause);
        d
    }

    /// Key `i` answered: its failures in a row start over.
    pub fn key_succeeded(&self, i: usize) {
        if let Some(k) = self.keys.get(i) {
            k.lock().strikes = 0;
        }
    }

    /// Keeps the rate-limit reading of an answer given with key `i`.
    pub fn note_ratelimit(&self, i: usize, r: RateLimitReading) {
        if let Some(k) = self.keys.get(i) {
            k.lock().ratelimit = Some(r);
        }
    }

    /// The text of API key `i`, for the request's credentials.
    pub fn api_key(&self, i: Option<usize>) -> Option<&str> {
        i.and_then(|i| self.config.api_keys.get(i))
            .map(String::as_str)
    }

    /// Installs a listed catalog (`source`: `provider` or `store`).
    pub fn set_catalog(&self, models: Vec<String>, source: &'static str) {
        self.catalog.store(Some(Arc::new(models)));
        let mut l = self.listing.lock();
        l.listed_at_ms = now_ms();
        l.source = Some(source);
        l.last_error = None;
        self.finish_listing(&mut l);
    }

    /// Notes a failed listing (the last good list stays).
    pub fn listing_failed(&self, error: String) {
        let mut l = self.listing.lock();
        l.last_error = Some(error);
        self.finish_listing(&mut l);
    }

    fn finish_listing(&self, l: &mut Listing) {
        if !l.tried {
            l.tried = true;
            self.first_listing.notify_waiters();
        }
    }

    /// Whether a request missing a model should wait for this provider's
    /// first listing: it lists its catalog and has not finished doing so.
    pub fn catalog_pending(&self) -> bool {
        self.config.enabled
            && self.config.static_models.is_none()
            && self.catalog.load().is_none()
            && !self.listing.lock().tried
    }

    /// Waits for the first listing since start, at most the provider's
    /// connect timeout.
    pub async fn await_first_listing(&self) {
        let woken = self.first_listing.notified();
        if !self.catalog_pending() {
            return;
        }
        let _ = tokio::time::timeout(self.config.connect_timeout, woken).await;
    }

    /// Models this provider serves: the configured list, else the fetched one.
    pub fn models(&self) -> Option<Arc<Vec<String>>> {
        let all = match &self.config.static_models {
            Some(m) => Some(Arc::new(m.clone())),
            None => self.catalog.load_full(),
        }?;
        Some(match &self.config.excluded {
            None => all,
            Some(_) => Arc::new(all.iter().filter(|m| !self.excludes(m)).cloned().collect()),
        })
    }

    /// Whether the provider's catalog lists `model` (by the name clients
    /// use) and `excluded_models` does not take it out.
    pub fn serves(&self, model: &str) -> bool {
        let listed = match &self.config.static_models {
            Some(m) => m.iter().any(|x| x == model),
            None => self
                .catalog
                .load()
                .as_ref()
                .is_some_and(|c| c.iter().any(|x| x == model)),
        };
        listed && !self.excludes(model)
    }

    /// Whether `excluded_models` takes `model` out of this provider's catalog.
    pub fn excludes(&self, model: &str) -> bool {
        self.config
            .excluded
            .as_ref()
            .is_some_and(|g| g.is_match(model))
    }

    /// The provider's own name for the model clients call `model` (an alias
    /// of `models: [{name, alias}]`, else the same name).
    pub fn upstream_model(&self, model: &str) -> String {
        self.config
            .aliases
            .get(model)
            .cloned()
            .unwrap_or_else(|| model.to_owned())
    }

    /// The path (and query) of a generation request to this provider.
    pub fn request_path(&self, model: &str, stream: bool) -> String {
        let base = &self.config.base.path;
        match self.config.format {
            Format::OpenAiChat => format!("{}/chat/completions", versioned(base, "/v1")),
            Format::OpenAiResponses => format!("{}/responses", versioned(base, "/v1")),
            Format::Anthropic => format!("{}/messages", versioned(base, "/v1")),
            Format::Gemini => {
                let v = versioned(base, "/v1beta");
                // The client's model name is one path segment, whatever it
                // holds: `#`, `?`, `/../` or `:method` reach no other endpoint.
                let model = encode_segment(model);
                if stream {
                    format!("{v}/models/{model}:streamGenerateContent?alt=sse")
                } else {
                    format!("{v}/models/{model}:generateContent")
                }
            }
        }
    }

    /// The path of this provider's model-list endpoint.
    pub fn models_path(&self) -> String {
        if let Some(p) = &self.config.models_path {
            return p.clone();
        }
        let base = &self.config.base.path;
        match self.config.kind {
            ProviderKind::OpenAi | ProviderKind::Anthropic => {
                format!("{}/models", versioned(base, "/v1"))
            }
            ProviderKind::Gemini => format!("{}/models?pageSize=1000", versioned(base, "/v1beta")),
        }
    }

    /// Authentication and protocol headers for this provider.
    pub fn auth_headers(&self, key: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(2);
        match self.config.kind {
            ProviderKind::OpenAi => {
                if let Some(k) = key {
                    h.push(("authorization", format!("Bearer {k}")));
                }
            }
            ProviderKind::Anthropic => {
                if let Some(k) = key {
                    h.push(("x-api-key", k.to_owned()));
                }
                h.push(("anthropic-version", "2023-06-01".to_owned()));
            }
            ProviderKind::Gemini => {
                if let Some(k) = key {
                    h.push(("x-goog-api-key", k.to_owned()));
                }
            }
        }
        h
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A base URL without a path gets the API's default version prefix; one with
/// a path is used as given (as the SDKs treat `base_url`).
fn versioned<'a>(base: &'a str, default: &'a str) -> &'a str {
    if base.is_empty() {
        default
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(yaml: &str) -> Provider {
        let c = Config::from_yaml(yaml, &|_| None).unwrap();
        Provider::new(c.providers.into_iter().next().unwrap())
    }

    #[test]
    fn paths_follow_the_sdk_base_url_convention() {
        let p = provider("providers: [{id: o, kind: openai, base_url: 'https://api.openai.com'}]");
        assert_eq!(p.request_path("m", false), "/v1/chat/completions");
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'https://openrouter.ai/api/v1/'}]",
        );
        assert_eq!(p.request_path("m", true), "/api/v1/chat/completions");
        assert_eq!(p.models_path(), "/api/v1/models");
        let p = provider(
            "providers: [{id: o, kind: openai, wire_api: responses, base_url: 'http://h'}]",
        );
        assert_eq!(p.request_path("m", false), "/v1/responses");
        let p = provider(
            "providers: [{id: a, kind: anthropic, base_url: 'https://api.anthropic.com'}]",
        );
        assert_eq!(p.request_path("m", true), "/v1/messages");
        let p = provider("providers: [{id: g, kind: gemini, base_url: 'https://generativelanguage.googleapis.com'}]");
        assert_eq!(
            p.request_path("gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            p.request_path("gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn keys_rotate_and_cool_down() {
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a, b, c]}]",
        );
        let c = crate::config::routing::RoutingSettings::default().cooldowns;
        let picks: Vec<_> = (0..3)
            .map(|_| p.pick_key(None, &[], 1).index().unwrap())
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "each key used once per round: {picks:?}");
        assert_eq!(
            p.cool_key(1, Cause::ServerError, None, &c),
            Duration::from_secs(15)
        );
        for _ in 0..6 {
            assert_ne!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        }
        assert_eq!(p.pick_key(Some(2), &[], 1), KeyChoice::Key(2));
        // Resting after a 5xx: still the last resort.
        assert_eq!(p.pick_key(Some(1), &[0, 2], 1), KeyChoice::Key(1));
        p.cool_key(0, Cause::RateLimited, Some(30), &c);
        assert_eq!(p.pick_key(None, &[1, 2], 1), KeyChoice::AllCooling);
        // A second failure in a row doubles the rest; a success resets it.
        assert_eq!(
            p.cool_key(1, Cause::ServerError, None, &c),
            Duration::from_secs(30)
        );
        p.key_succeeded(1);
        assert_eq!(
            p.cool_key(1, Cause::ServerError, None, &c),
            Duration::from_secs(15)
        );
        let keyless = provider("providers: [{id: o, kind: openai, base_url: 'http://h'}]");
        assert_eq!(keyless.pick_key(None, &[], 1), KeyChoice::Keyless);
    }

    #[test]
    fn a_key_nearly_out_of_its_rate_limit_is_used_last() {
        let p =
            provider("providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a, b]}]");
        let now = now_ms();
        p.note_ratelimit(
            0,
            RateLimitReading {
                remaining_requests: Some(1),
                read_at_ms: now,
                ..Default::default()
            },
        );
        for _ in 0..4 {
            assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        }
        // Even a session's preferred key gives way while another has room.
        assert_eq!(p.pick_key(Some(0), &[], 1), KeyChoice::Key(1));
        assert_eq!(p.pick_key(None, &[1], 1), KeyChoice::Key(0));
        assert_eq!(p.key_outlook(1), (true, false, Some(1)));
    }

    #[test]
    fn round_robin_is_weighted_and_fill_first_stays_on_the_first_key() {
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a, {key: b, weight: 2}]}]",
        );
        let picks: Vec<_> = (0..6)
            .map(|_| p.pick_key(None, &[], 1).index().unwrap())
            .collect();
        assert_eq!(picks, [1, 0, 1, 1, 0, 1]);
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', key_strategy: fill-first, api_keys: [a, b, c]}]",
        );
        let c = crate::config::routing::RoutingSettings::default().cooldowns;
        for _ in 0..3 {
            assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(0));
        }
        assert_eq!(
            p.pick_key(Some(2), &[], 1),
            KeyChoice::Key(2),
            "a session keeps its key"
        );
        p.cool_key(0, Cause::RateLimited, None, &c);
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        assert_eq!(p.pick_key(None, &[1], 1), KeyChoice::Key(2));
        assert!(p.has_key_left(&[1], 1));
        assert!(!p.has_key_left(&[1, 2], 1), "key 0 rests after its 429");
    }

    #[test]
    fn a_key_at_its_own_capacity_is_skipped() {
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', key_strategy: fill-first, api_keys: [{key: a, max_concurrency: 1}, {key: b, max_concurrency: 1}]}]",
        );
        let first = p.acquire_key(0).unwrap();
        assert_eq!(p.key_in_flight(0), 1);
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        let second = p.acquire_key(1).unwrap();
        assert!(!p.keys_have_room(now_ms()));
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::AllBusy);
        assert!(p.acquire_key(0).is_none());
        drop((first, second));
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(0));
        // A key without limits takes no slot at all.
        let q = provider("providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a]}]");
        assert!(matches!(q.acquire_key(0), Some(None)));
    }

    #[test]
    fn gemini_model_names_stay_one_path_segment() {
        let p = provider("providers: [{id: g, kind: gemini, base_url: 'http://h'}]");
        assert_eq!(
            p.request_path("x/../../v1beta/files?key=1#", false),
            "/v1beta/models/x%2F..%2F..%2Fv1beta%2Ffiles%3Fkey%3D1%23:generateContent"
        );
        assert_eq!(
            p.request_path("m:countTokens", true),
            "/v1beta/models/m%3AcountTokens:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn model_records_are_bounded() {
        let p = provider("providers: [{id: o, kind: openai, base_url: 'http://h'}]");
        for i in 0..(MAX_TRACKED_MODELS + 50) {
            p.stats_for(&format!("m{i}"));
        }
        assert_eq!(p.all_stats().len(), MAX_TRACKED_MODELS + 1);
    }
}
