//! Providers at run time: their keys (rotated, with cooldowns), their health
//! (what routing scores on), their model catalog, and how a request to them
//! is addressed.

pub mod catalog;
pub mod dns;
pub mod http;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiproxy_translate::Format;
use arc_swap::ArcSwapOption;

use crate::config::{ProviderConfig, ProviderKind};

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
    /// Per key: cooling down until this time (ms since epoch).
    key_cooldown: Vec<AtomicU64>,
    next_key: AtomicUsize,
    pub health: Health,
    /// The model list fetched from the provider (when not configured).
    pub catalog: ArcSwapOption<Vec<String>>,
    /// Keeps this provider's pooled connections apart from other providers'.
    pub pool_key: u64,
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

/// What routing knows of a provider's recent behaviour.
#[derive(Debug, Default)]
pub struct Health {
    /// Failures since the last success.
    pub consecutive_failures: AtomicU32,
    /// Out of rotation until (ms since epoch) after repeated failures.
    pub cooldown_until: AtomicU64,
    /// Exponentially weighted time to the first byte, in µs (0: unknown).
    pub ewma_latency_us: AtomicU64,
    pub successes: AtomicU64,
    pub failures: AtomicU64,
}

/// Failures in a row after which an upstream cools down.
const FAILURES_BEFORE_COOLDOWN: u32 = 3;

impl Health {
    pub fn record_success(&self, first_byte: Duration) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.successes.fetch_add(1, Ordering::Relaxed);
        let sample = first_byte.as_micros().min(u64::MAX as u128) as u64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 4 + sample) / 5
        };
        self.ewma_latency_us.store(new, Ordering::Relaxed);
    }

    pub fn record_failure(&self, cooldown: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= FAILURES_BEFORE_COOLDOWN {
            self.cooldown_until
                .store(now_ms() + cooldown.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Out of rotation right now.
    pub fn cooling(&self) -> bool {
        self.cooldown_until.load(Ordering::Relaxed) > now_ms()
    }
}

impl Provider {
    pub fn new(config: ProviderConfig) -> Self {
        let key_cooldown = config.api_keys.iter().map(|_| AtomicU64::new(0)).collect();
        Provider {
            key_cooldown,
            next_key: AtomicUsize::new(0),
            health: Health::default(),
            catalog: ArcSwapOption::empty(),
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

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The next key in rotation that is not cooling down, starting from
    /// `prefer` when given (a session's key) and skipping `skip` (keys this
    /// request already tried).
    pub fn pick_key(&self, prefer: Option<usize>, skip: &[usize]) -> KeyChoice {
        let n = self.config.api_keys.len();
        if n == 0 {
            return KeyChoice::Keyless;
        }
        let now = now_ms();
        let usable =
            |i: usize| !skip.contains(&i) && self.key_cooldown[i].load(Ordering::Relaxed) <= now;
        if let Some(p) = prefer.filter(|&p| p < n && usable(p)) {
            return KeyChoice::Key(p);
        }
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| usable(i))
            .map_or(KeyChoice::AllCooling, KeyChoice::Key)
    }

    /// Takes key `i` out of rotation for `for_`.
    pub fn cool_key(&self, i: usize, for_: Duration) {
        if let Some(k) = self.key_cooldown.get(i) {
            k.store(now_ms() + for_.as_millis() as u64, Ordering::Relaxed);
        }
    }

    pub fn key(&self, i: Option<usize>) -> Option<&str> {
        i.and_then(|i| self.config.api_keys.get(i))
            .map(String::as_str)
    }

    /// Models this provider serves: the configured list, else the fetched one.
    pub fn models(&self) -> Option<Arc<Vec<String>>> {
        match &self.config.static_models {
            Some(m) => Some(Arc::new(m.clone())),
            None => self.catalog.load_full(),
        }
    }

    /// Whether the provider's catalog lists `model`.
    pub fn serves(&self, model: &str) -> bool {
        match &self.config.static_models {
            Some(m) => m.iter().any(|x| x == model),
            None => self
                .catalog
                .load()
                .as_ref()
                .is_some_and(|c| c.iter().any(|x| x == model)),
        }
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
        let picks: Vec<_> = (0..3)
            .map(|_| p.pick_key(None, &[]).index().unwrap())
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "each key used once per round: {picks:?}");
        p.cool_key(1, Duration::from_secs(60));
        for _ in 0..6 {
            assert_ne!(p.pick_key(None, &[]), KeyChoice::Key(1));
        }
        assert_eq!(p.pick_key(Some(2), &[]), KeyChoice::Key(2));
        assert_eq!(p.pick_key(Some(1), &[0, 2]), KeyChoice::AllCooling);
        let keyless = provider("providers: [{id: o, kind: openai, base_url: 'http://h'}]");
        assert_eq!(keyless.pick_key(None, &[]), KeyChoice::Keyless);
    }

    #[test]
    fn repeated_failures_cool_an_upstream() {
        let h = Health::default();
        h.record_failure(Duration::from_secs(30));
        h.record_failure(Duration::from_secs(30));
        assert!(!h.cooling());
        h.record_failure(Duration::from_secs(30));
        assert!(h.cooling());
        h.record_success(Duration::from_millis(5));
        assert_eq!(h.consecutive_failures.load(Ordering::Relaxed), 0);
    }
}
