//! The config file as users write it. Parsed strictly (unknown keys are
//! errors) and then resolved into the runtime types of [`super`].

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

use super::choices::{
    AccessFormat, BudgetPeriod, Choice, Inspection, KeyStrategy, ProviderKind, ScoringMode, WireApi,
};

/// A string or a list of strings (`listen: a` or `listen: [a, b]`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    pub store: Option<RawStore>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub models: Vec<RawModel>,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub context: RawContext,
    #[serde(default)]
    pub limits: RawLimits,
    /// The directory of filter rule files (default `filters/` beside the
    /// config file).
    pub filters_dir: Option<String>,
    #[serde(default)]
    pub console: RawConsole,
    /// Model prices (USD per million tokens) for every provider, below each
    /// provider's own `pricing` and above the built-in table.
    #[serde(default)]
    pub pricing: BTreeMap<String, RawPrice>,
    /// The response cache's bounds and scope (each logical model turns it
    /// on with `cache_ttl_seconds`).
    #[serde(default)]
    pub cache: RawCache,
    /// OpenTelemetry traces (`telemetry.otlp`; absent: no tracing).
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

/// Traces of requests (`telemetry:`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP collector spans are sent to; absent: no tracing.
    pub otlp: Option<RawOtlp>,
    /// Whether spans carry the prompt and the answer's text, redacted like
    /// captured bodies (default false: never).
    pub capture_content: Option<bool>,
}

/// The OTLP exporter (`telemetry.otlp:`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// The collector's URL (`http://collector:4318`); `/v1/traces` is
    /// added when it has no path.
    pub endpoint: String,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: Option<Choice<super::choices::OtlpProtocol>>,
    /// Headers sent with every export (a collector's API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The share of new traces sampled, 0 to 1 (default 1); a request
    /// whose client sent a `traceparent` follows its sampled flag.
    pub sample_ratio: Option<f64>,
    /// How long one export may take (default 10000).
    pub timeout_ms: Option<u64>,
    /// The most spans waiting for export; past it spans are dropped and
    /// counted (default 2048).
    pub max_queue_size: Option<usize>,
}

/// The response cache (`cache:`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// An answer larger than this, as stored, is not cached (default 1 MiB).
    pub max_entry_bytes: Option<usize>,
    /// The most bytes of cached answers a store keeps, the oldest written
    /// going first (default 64 MiB; on Redis shared by every replica).
    pub max_bytes: Option<usize>,
    /// `key` (default): an entry answers only the client key that stored it;
    /// `global`: every caller of the model.
    pub scope: Option<Choice<super::choices::CacheScope>>,
}

/// The web console's in-process data (`/ui/`, `/admin/...`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// Collect per-interval aggregates and recent request records (default true).
    pub collect: Option<bool>,
    /// Recent request records kept for the tail and the request list (default 1000).
    pub recent_requests: Option<usize>,
    /// Characters kept of each captured body when `log.capture_bodies` is on (default 4096).
    pub max_body_chars: Option<usize>,
    /// Seconds a captured body is kept; the request's record stays, without it (default 3600).
    pub capture_ttl_seconds: Option<u64>,
}

/// Gateway-wide limits, shared by every key (and every replica on one Redis).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Output tokens a request without an output cap (`max_tokens` or its format's equivalent) is expected to
    /// use, per choice: what it reserves of a `tpm` and of a budget (default 1024, 1 – 1000000).
    pub default_output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<OneOrMany>,
    pub metrics_listen: Option<String>,
    pub threads: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub daemon: Option<bool>,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub grace_period_seconds: Option<u64>,
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    // Client connection limits (docs/security.md).
    pub header_timeout_ms: Option<u64>,
    pub keepalive_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    /// Bytes a second a request body must average after its first 10 s
    /// (default 4096: a 16 MiB upload may take 68 minutes); slower gets 408.
    pub min_body_rate_bytes_per_s: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    /// Streams one HTTP/2 connection may have open at once (default 100).
    pub h2_max_concurrent_streams: Option<u32>,
    /// Seconds a streaming client may wait without a byte before it gets a
    /// keep-alive; 0 sends none.
    pub sse_keepalive_s: Option<u64>,
    /// Longer model names get 400 (default 256 bytes).
    pub max_model_name_bytes: Option<usize>,
    /// Bytes the tool-schema rewrites of one request may build (Gemini
    /// `$ref` inlining; default 1048576); past it 400.
    pub max_schema_rewrite_bytes: Option<usize>,
    /// A TLS client listener (HTTP/2 by ALPN).
    pub tls: Option<RawTls>,
    /// Addresses serving the admin surface (`/admin`, `/ui`, the inspection
    /// endpoints) instead of the client listeners.
    pub admin_listen: Option<OneOrMany>,
    /// Host names (besides loopback names and addresses) a gateway without
    /// client keys answers to; other `Host`s get 421 (DNS rebinding).
    pub allowed_hosts: Option<Vec<String>>,
    /// Reload when the config file or a filter file changes (as on SIGHUP;
    /// checked every second, taken once the files stop changing).
    pub watch_config: Option<bool>,
}

/// `server.tls`: where the TLS listener listens and its PEM files.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: OneOrMany,
    /// Certificate chain, leaf first.
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    /// `text` (default) or `json`: one JSON object per access line.
    pub access_format: Option<Choice<AccessFormat>>,
    /// Keep request bodies (redacted, bounded) in the console's request records.
    pub capture_bodies: Option<bool>,
    /// The time zone of the log's timestamps (an IANA name such as
    /// `Europe/Berlin`; default UTC).
    pub timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub redis_url: Option<String>,
    pub key_prefix: Option<String>,
    pub session_ttl_seconds: Option<u64>,
    pub context_ttl_seconds: Option<u64>,
    pub models_cache_ttl_seconds: Option<u64>,
    /// How long a Responses API response served from a non-Responses upstream is kept (default 2592000: 30 days).
    pub responses_ttl_seconds: Option<u64>,
    /// Bytes of JSON one kept response may take, input and output items counted (default 4194304); larger ones are
    /// not kept.
    pub responses_max_bytes: Option<usize>,
    /// The most responses one `previous_response_id` chain expands (default 100); a longer chain is refused.
    pub responses_max_chain: Option<usize>,
    /// File of the embedded store's durable part (client keys made at run time, usage counters).
    pub path: Option<String>,
    /// Days the usage counters (`/admin/usage`) are kept (default 400).
    pub usage_retention_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawContext {
    /// Snippets kept per session (default 50).
    pub max_entries: Option<usize>,
    /// Characters kept of each request / response snippet (default 4000).
    pub max_chars: Option<usize>,
    /// Bytes of JSON one snippet may take, everything counted (default 32768).
    pub max_entry_bytes: Option<usize>,
    /// Bytes of snippets kept per session, oldest dropped first (default 262144).
    pub max_session_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// The key strategy of providers that set none (`round-robin` when absent).
    pub key_strategy: Option<Choice<KeyStrategy>>,
    /// How long a key the provider refused (401/403) stays out of rotation.
    pub cooldown_seconds: Option<u64>,
    /// Overall deadline of one request until its answer starts.
    pub request_timeout_ms: Option<u64>,
    /// Most model names one request may give (`model` plus `models`).
    pub max_models: Option<usize>,
    /// Most upstream attempts one request may make.
    pub max_attempts: Option<u32>,
    /// Passes over every candidate when all failed with retryable errors.
    pub retry_rounds: Option<u32>,
    /// Pause before the second pass, doubled for each further one.
    pub retry_backoff_ms: Option<u64>,
    #[serde(default)]
    pub scoring: RawScoring,
    #[serde(default)]
    pub breaker: RawBreaker,
    #[serde(default)]
    pub cooldowns: RawCooldowns,
    /// Requests (or tokens, scaled) left on a key below which routing steers
    /// away from it before the provider answers 429.
    pub ratelimit_reserve: Option<u64>,
    /// Most hedges, as a percentage of requests (token bucket per client key).
    pub hedge_budget_percent: Option<u32>,
    /// Hedges that may run at once whatever the budget holds (default 2).
    pub hedge_min_concurrency: Option<u32>,
}

/// `routing.scoring`: how candidates are scored (docs/routing.md).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScoring {
    /// `adaptive` (default) or `weighted` (configured weights only).
    pub mode: Option<Choice<ScoringMode>>,
    pub ewma_alpha: Option<f64>,
    pub latency_exponent: Option<f64>,
    /// Milliseconds added to every latency before comparing (noise
    /// tolerance).
    pub latency_slack_ms: Option<f64>,
    pub error_exponent: Option<f64>,
    pub inflight_weight: Option<f64>,
    pub min_factor: Option<f64>,
    pub window_seconds: Option<u64>,
    pub stale_after_seconds: Option<u64>,
}

/// `routing.breaker`: the circuit breaker per (provider, model).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub error_rate: Option<f64>,
    pub min_requests: Option<u32>,
    pub open_ms: Option<u64>,
    pub max_open_ms: Option<u64>,
}

/// `routing.cooldowns`: how long a key rests after a failure, by cause.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCooldowns {
    pub rate_limited_seconds: Option<u64>,
    pub server_error_seconds: Option<u64>,
    pub network_seconds: Option<u64>,
    pub max_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// Serve clients without keys on a non-loopback address.
    pub open: Option<bool>,
    /// Failed admin authentications one client address may make per
    /// minute before it gets 429 (default 10).
    pub admin_failures_per_minute: Option<u32>,
    /// Who may read the inspection endpoints (`/providers...`,
    /// `/logical-models...`, `/routing/decide`): `admin` (default) or
    /// `clients` (any client key too, as APIProxy's token does; session
    /// bindings, refreshes and probes stay admin-only).
    pub inspection: Option<Choice<Inspection>>,
    /// Requests per minute of a client key that sets no `rpm` (config and
    /// console keys alike; absent or 0: unlimited).
    pub default_key_rpm: Option<u64>,
    /// Tokens per minute of a client key that sets no `tpm` (absent or 0: unlimited).
    pub default_key_tpm: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: String,
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub models: Option<Vec<String>>,
    /// Spending limit in USD per `budget_period`, across replicas.
    pub budget_usd: Option<f64>,
    /// `day` (default) or `month`, in UTC.
    pub budget_period: Option<Choice<BudgetPeriod>>,
    /// Which provider-side objects the key may reference (default `own`).
    pub provider_refs: Option<ProviderRefs>,
    /// When the key stops working (RFC 3339, e.g. `2027-01-31T00:00:00Z`);
    /// afterwards it gets 401 saying it expired.
    pub expires_at: Option<String>,
}

/// `auth.keys[].provider_refs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderRefs {
    /// Only response ids the gateway relayed to this key; no other stored
    /// object (conversations, files, vector stores, containers, cached
    /// contents).
    Own,
    /// Any id: the key is trusted with every object stored under the
    /// provider keys.
    Any,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub id: String,
    /// A display name.
    pub name: Option<String>,
    /// The model-list path (e.g. `/v1/models`), when not the API's usual one.
    pub models_path: Option<String>,
    pub kind: Choice<ProviderKind>,
    /// Where it lives; may be left out with a `preset`, which then gives it.
    pub base_url: Option<String>,
    /// `kind: openai`: a known OpenAI-compatible service (`deepseek`,
    /// `groq`, `mistral`, `openrouter`, `together`, `fireworks`, `xai`,
    /// `ollama`, `vllm`): its base URL and quirks.
    pub preset: Option<Choice<super::choices::Preset>>,
    /// `preset: openrouter`: the app's URL, sent as `HTTP-Referer`.
    pub app_url: Option<String>,
    /// `preset: openrouter`: the app's name, sent as `X-Title`.
    pub app_name: Option<String>,
    /// Keys: plain strings, or `{key, weight, max_concurrency, max_qps}`.
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    /// How a request picks among the keys: `round-robin` (default) or
    /// `fill-first`.
    pub key_strategy: Option<Choice<KeyStrategy>>,
    pub weight: Option<f64>,
    pub wire_api: Option<Choice<WireApi>>,
    /// `kind: azure`: the API version (`2024-10-21`, ...; `v1`: the v1 GA
    /// API, without a version parameter).
    pub api_version: Option<String>,
    /// `kind: azure`: a Microsoft Entra ID token sent as a bearer token,
    /// for a provider without `api_keys`.
    pub azure_ad_token: Option<String>,
    /// `kind: bedrock`: the AWS access key id (default: the environment's
    /// `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// `kind: bedrock`: the AWS secret access key (default:
    /// `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// `kind: bedrock`: the session token of temporary credentials
    /// (default: `AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// `kind: vertex`: the Google Cloud project.
    pub project: Option<String>,
    /// `kind: vertex`: the region (`us-central1`, ...) or `global`.
    pub location: Option<String>,
    /// `kind: vertex`: `google` or `anthropic` for every model (default: by
    /// the model's name, `claude-*` Anthropic, the rest Google).
    pub publisher: Option<Choice<super::choices::Publisher>>,
    /// `kind: vertex`: the path of a service account's JSON key.
    pub credentials_file: Option<String>,
    /// `kind: vertex`: a service account's JSON key itself (`${VAR}`).
    pub credentials_json: Option<String>,
    /// `kind: vertex`: an OAuth access token used as given.
    pub access_token: Option<String>,
    /// `kind: vertex`: where the service account's JWT is exchanged for
    /// access tokens (default: its `token_uri`).
    pub token_url: Option<String>,
    /// The models it serves (absent: listed from the provider): names, or
    /// `{name, alias}` (clients ask for the alias, the provider gets the name).
    pub models: Option<Vec<RawModelEntry>>,
    /// Globs of model names taken out of its catalog (listed or configured).
    #[serde(default)]
    pub excluded_models: Vec<String>,
    /// Out of rotation without removing it from the file.
    pub disabled: Option<bool>,
    /// The prefix clients put before its model names (default `<id>/`), e.g. `oa-`.
    pub model_prefix: Option<String>,
    pub retryable_status: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    /// PEM file of the CA(s) that sign this provider's certificate (a private
    /// endpoint); absent: the system's trust store.
    pub ca_file: Option<String>,
    /// The outbound proxy its connections go through:
    /// `http://[user:pass@]host:port` (CONNECT), `socks5://…` or
    /// `socks5h://…` (the proxy resolves the provider's name).
    pub proxy_url: Option<String>,
    /// Extra headers sent upstream (e.g. OpenRouter's `HTTP-Referer`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Prices per million tokens, for the cost metric.
    #[serde(default)]
    pub pricing: BTreeMap<String, RawPrice>,
    /// Where the provider runs (for `preferred_region` in `/routing/decide`).
    pub region: Option<String>,
    /// Most requests in flight to this provider at once.
    pub max_concurrency: Option<u32>,
    /// Most requests per second sent to this provider.
    pub max_qps: Option<u32>,
    /// Active health checks: the model list on an interval.
    pub health_check: Option<RawHealthCheck>,
    /// `auto`: prompt-cache breakpoints added (Anthropic providers) on the
    /// tool list, the system prompt and the last user turn of translated
    /// requests whose client set none; `off` (default): none added.
    pub prompt_cache: Option<String>,
}

/// One of `providers[].api_keys`: the key alone, or the key with its
/// options.
///
/// The schema is derived as `untagged` (a string or the object); parsing
/// is by hand below, for clearer errors.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawApiKey {
    Plain(String),
    Detailed(RawKeyOptions),
}

/// One of `providers[].models`: a name, or a name with the alias clients
/// use and (Azure) the deployment serving it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawModelEntry {
    Name(String),
    Detailed {
        /// What the provider calls it (with `alias`), or what clients ask
        /// for (without).
        name: String,
        /// What clients ask for.
        alias: Option<String>,
        /// `kind: azure`: the deployment requests for it go to (default:
        /// the model's name).
        deployment: Option<String>,
    },
}

/// `providers[].api_keys[]` given as an object.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKeyOptions {
    pub key: String,
    /// Its share under `key_strategy: round-robin` (default 1).
    pub weight: Option<f64>,
    /// Most requests in flight with this key at once.
    pub max_concurrency: Option<u32>,
    /// Most requests per second sent with this key.
    pub max_qps: Option<u32>,
}

impl<'de> Deserialize<'de> for RawApiKey {
    // By hand rather than `untagged`: a mistyped option is reported by
    // name (`unknown field ...`), not as "matched no variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawApiKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key, or {key, weight, max_concurrency, max_qps}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawApiKey, E> {
                Ok(RawApiKey::Plain(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawApiKey, A::Error> {
                RawKeyOptions::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(RawApiKey::Detailed)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `providers[].health_check`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub interval_s: Option<u64>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub output: f64,
    /// Price of input tokens read from the provider's prompt cache; absent:
    /// they are charged as input.
    pub cached_input: Option<f64>,
    /// Price of input tokens written to the prompt cache for 5 minutes;
    /// absent: 1.25 × input (Anthropic's rate).
    pub cache_write: Option<f64>,
    /// Price of input tokens written to the prompt cache for one hour;
    /// absent: 2 × input (Anthropic's rate).
    pub cache_write_1h: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub description: Option<String>,
    /// Start a second attempt on the next upstream when the first has not
    /// answered after this long.
    pub hedge_after_ms: Option<u64>,
    /// Hedge non-streaming requests too (default false: a non-streaming
    /// answer's first byte is the whole answer, so a hedge runs two
    /// generations to the end).
    pub hedge_non_stream: Option<bool>,
    /// Answer identical requests from the response cache for this many
    /// seconds after a first answer (absent: no caching).
    pub cache_ttl_seconds: Option<u64>,
    pub upstreams: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub provider: String,
    pub model: String,
    pub weight: Option<f64>,
}

/// Names a generated schema for people and editors.
pub fn titled(mut schema: serde_json::Value, title: &str, about: &str) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), title.into());
        o.insert("description".into(), about.into());
    }
    schema
}
