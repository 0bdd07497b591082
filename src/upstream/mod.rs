//! Providers at run time: what differs per kind of API (`kind/`), their
//! keys (chosen: `keys.rs`; with cooldowns by cause: `cooldown.rs`; their rate-limit headers read: `ratelimit.rs`; their
//! concurrency: `capacity.rs`), per (provider, model) latency, errors and
//! breaker (`stats.rs`, `breaker.rs`: what routing scores on), their model
//! catalog.
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
pub mod keys;
pub mod kind;
mod outbound_proxy;
pub mod ratelimit;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

use crate::config::ProviderConfig;
use apiproxy_translate::Format;
use capacity::Capacity;
pub use keys::{KeyChoice, KeyState};
use kind::Kind;
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
    /// Its kind of API (`config.kind`'s implementation).
    kind: &'static dyn Kind,
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
    /// `wire_api: auto` learnt that it has no Responses API.
    responses_missing: std::sync::atomic::AtomicBool,
    /// Its cached credential, when its kind fetches one (Vertex AI's
    /// access tokens).
    credential: Option<Box<dyn kind::Credential>>,
    /// The `Host` header of its requests, made once (`None`: the host is
    /// no header value; a request says so).
    pub(crate) host_header: Option<::http::HeaderValue>,
}

/// Models tracked one by one per provider; the rest share one record (a
/// client naming `provider/<anything>` cannot grow memory without bound).
const MAX_TRACKED_MODELS: usize = 256;

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
        let kind = kind::of(config.kind);
        Provider {
            kind,
            credential: kind.credential(&config),
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
            responses_missing: std::sync::atomic::AtomicBool::new(false),
            peer: ArcSwapOption::empty(),
            host_header: {
                let base = &config.base;
                let host = if (base.tls && base.port == 443) || (!base.tls && base.port == 80) {
                    base.host.clone()
                } else {
                    format!("{}:{}", base.host, base.port)
                };
                ::http::HeaderValue::try_from(host).ok()
            },
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

    /// The path (and query) of a generation request to this provider
    /// for its model `model`, in wire format `wire` ([`Self::wire_format`]).
    pub fn request_path(&self, wire: Format, model: &str, stream: bool) -> String {
        self.kind.request_path(&self.config, wire, model, stream)
    }

    /// The wire format of requests for its model `model`: the provider's
    /// format, unless its kind serves some models in another (Vertex AI's
    /// Claude).
    pub fn model_format(&self, model: &str) -> Format {
        self.kind.model_format(&self.config, model)
    }

    /// The wire format of a request from a `client`-format client for its
    /// model `model`: [`Self::model_format`], but the Responses API for a
    /// Responses client under `wire_api: auto` until the provider said it
    /// has none.
    pub fn wire_format(&self, client: Format, model: &str) -> Format {
        if client == Format::OpenAiResponses
            && self.config.responses_auto
            && !self.responses_missing.load(Ordering::Relaxed)
        {
            Format::OpenAiResponses
        } else {
            self.model_format(model)
        }
    }

    /// An encoded body in wire format `wire` (`count`: a token count's) as
    /// its kind's endpoint takes it.
    pub fn finish_body(&self, wire: Format, count: bool, body: bytes::Bytes) -> bytes::Bytes {
        self.kind.finish_body(&self.config, wire, count, body)
    }

    /// The bearer token its kind fetched (cached; fetched when stale), to
    /// authenticate with instead of a key; `None` for a provider without
    /// such a credential. `Err`: none could be had (the attempt fails as
    /// if the provider were unreachable).
    pub async fn access_token(
        &self,
        connector: &pingora::connectors::http::Connector,
    ) -> Result<Option<Arc<str>>, http::SendError> {
        match &self.credential {
            Some(c) => c.token(connector).await.map(Some),
            None => Ok(None),
        }
    }

    /// Its Responses API answered 404 or 405 (`wire_api: auto`): Responses
    /// clients are translated to chat from now on (until a reload). Logged
    /// once.
    pub fn note_responses_missing(&self) {
        if !self.responses_missing.swap(true, Ordering::Relaxed) {
            log::warn!(
                "provider {}: no Responses API here (404/405): its Responses clients are translated to chat from now on",
                self.config.id
            );
        }
    }

    /// The path of this provider's token-count endpoint for its model
    /// `model`; `None` for a kind without one (the gateway counts locally).
    pub fn count_tokens_path(&self, model: &str) -> Option<String> {
        self.kind.count_tokens_path(&self.config, model)
    }

    /// The path (and query) of this provider's model-list request.
    pub fn models_path(&self) -> String {
        self.kind.list_path(&self.config)
    }

    /// Authentication and protocol headers for this provider.
    pub fn auth_headers(&self, key: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(2);
        self.kind.auth_headers(&self.config, key, &mut h);
        h
    }

    /// What differs about its kind of API.
    pub fn kind(&self) -> &'static dyn Kind {
        self.kind
    }
}

/// The first provider of a config's YAML, for unit tests.
#[cfg(test)]
pub(crate) fn test_provider(yaml: &str) -> Provider {
    let c = crate::config::Config::from_yaml(yaml, &|_| None).unwrap();
    Provider::new(c.providers.into_iter().next().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(yaml: &str) -> Provider {
        test_provider(yaml)
    }

    #[test]
    fn paths_follow_the_sdk_base_url_convention() {
        let p = provider("providers: [{id: o, kind: openai, base_url: 'https://api.openai.com'}]");
        assert_eq!(
            p.request_path(p.config.format, "m", false),
            "/v1/chat/completions"
        );
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'https://openrouter.ai/api/v1/'}]",
        );
        assert_eq!(
            p.request_path(p.config.format, "m", true),
            "/api/v1/chat/completions"
        );
        assert_eq!(p.models_path(), "/api/v1/models");
        let p = provider(
            "providers: [{id: o, kind: openai, wire_api: responses, base_url: 'http://h'}]",
        );
        assert_eq!(p.request_path(p.config.format, "m", false), "/v1/responses");
        let p = provider(
            "providers: [{id: a, kind: anthropic, base_url: 'https://api.anthropic.com'}]",
        );
        assert_eq!(p.request_path(p.config.format, "m", true), "/v1/messages");
        let p = provider("providers: [{id: g, kind: gemini, base_url: 'https://generativelanguage.googleapis.com'}]");
        assert_eq!(
            p.request_path(p.config.format, "gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            p.request_path(p.config.format, "gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            p.count_tokens_path("gemini-2.5-flash").as_deref(),
            Some("/v1beta/models/gemini-2.5-flash:countTokens")
        );
        let p = provider("providers: [{id: a, kind: anthropic, base_url: 'https://h/api/v1'}]");
        assert_eq!(
            p.count_tokens_path("m").as_deref(),
            Some("/api/v1/messages/count_tokens")
        );
        let p = provider("providers: [{id: o, kind: openai, base_url: 'http://h'}]");
        assert_eq!(p.count_tokens_path("m"), None);
    }

    #[test]
    fn gemini_model_names_stay_one_path_segment() {
        let p = provider("providers: [{id: g, kind: gemini, base_url: 'http://h'}]");
        assert_eq!(
            p.request_path(p.config.format, "x/../../v1beta/files?key=1#", false),
            "/v1beta/models/x%2F..%2F..%2Fv1beta%2Ffiles%3Fkey%3D1%23:generateContent"
        );
        assert_eq!(
            p.request_path(p.config.format, "m:countTokens", true),
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
