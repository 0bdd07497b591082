//! Configuration: the YAML file users write, turned once into validated,
//! resolved runtime types. The proxy never touches raw YAML.
//!
//! Loading runs in two phases (as TensorZero does): parse (YAML syntax, `${VAR}`
//! expansion, types, unknown keys), then resolve (references, URLs, ranges,
//! duplicates). Every problem is reported as one line naming its key path.

mod budget;
mod cert;
mod env;
pub mod filters;
mod from_env;
mod log;
pub mod raw;
pub mod routing;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiproxy_translate::Format;
use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

pub use budget::{Budget, BudgetPeriod};
pub use cert::CertPair;
pub use log::AccessFormat;
use raw::RawConfig;

/// The smallest `context.max_entry_bytes`: an entry's skeleton (model,
/// provider, usage, timestamp) takes about 200 bytes.
const MIN_CONTEXT_ENTRY_BYTES: usize = 512;

/// The JSON Schema of the config file (`apiproxy schema`). It is derived
/// from the types the file is parsed into, so it cannot drift from what
/// `-t` accepts: unknown keys are refused by both. `${VAR}` references are
/// expanded before parsing, so a value written as one is a string to an
/// editor even where the key takes a number.
pub fn json_schema() -> serde_json::Value {
    titled(
        schemars::schema_for!(RawConfig).to_value(),
        "apiproxy configuration",
        "The apiproxy config file (conf/apiproxy.yaml); README.md documents every key.",
    )
}

/// Names a generated schema for people and editors.
pub(crate) fn titled(mut schema: serde_json::Value, title: &str, about: &str) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), title.into());
        o.insert("description".into(), about.into());
    }
    schema
}

/// The whole runtime configuration.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub log_level: String,
    pub store: StoreSettings,
    pub context: ContextSettings,
    pub auth: AuthConfig,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<LogicalModel>,
    /// How long a key the provider refused stays out of rotation.
    pub cooldown: Duration,
    /// Failover bounds, scoring, breaker and cooldowns (`routing:`).
    pub routing: routing::RoutingSettings,
    /// Gateway-wide requests per minute (all keys together).
    pub global_rpm: Option<u64>,
    /// Gateway-wide tokens per minute.
    pub global_tpm: Option<u64>,
    /// Output tokens reserved per choice for a request without an output cap (`limits.default_output_tokens`).
    pub default_output_tokens: u64,
    /// How access-log lines are written.
    pub access_format: AccessFormat,
    /// Payload, header and browser-masking rules from `filters_dir`.
    pub filters: crate::config::filters::FilterSet,
    /// The web console's data collection.
    pub console: ConsoleSettings,
}

/// Longest `console.capture_ttl_seconds` (a week).
const MAX_CAPTURE_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// What the console collects in process (see `crate::console`).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Off: no aggregates, no request records (the console shows config and state only).
    pub collect: bool,
    /// Recent request records kept.
    pub recent_requests: usize,
    /// `log.capture_bodies`: keep request bodies, redacted and cut to `max_body_chars`.
    pub capture_bodies: bool,
    pub max_body_chars: usize,
    /// `console.capture_ttl_seconds`: how long a captured body is kept.
    pub capture_ttl: Duration,
}

/// Listener and process settings (mostly handed to Pingora).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<String>,
    pub metrics_listen: Option<String>,
    pub threads: usize,
    pub max_body_bytes: usize,
    /// Where `-d` writes the pid; its directory is created private (0700).
    pub pid_file: String,
    /// Where `-u` waits for the old process's sockets (same directory rule).
    pub upgrade_sock: String,
    pub daemon: bool,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// A request head must be complete this long after its first byte (the
    /// connection's accept, for its first request): 408 past it.
    pub header_timeout: Duration,
    /// An idle kept-alive connection is closed after this long.
    pub keepalive_timeout: Duration,
    /// A request body that sends nothing for this long ends the request.
    pub body_timeout: Duration,
    /// Bytes a second a request body must average after its grace
    /// (`proxy::request::BODY_RATE_GRACE`); slower ends the request.
    pub min_body_rate: u64,
    /// A client that takes nothing of its answer for this long is dropped
    /// (and with it the upstream request).
    pub write_timeout: Duration,
    /// Larger request heads get 431.
    pub max_header_bytes: usize,
    /// Client connections open at once (plain and TLS together); past it
    /// new ones get 503.
    pub max_connections: usize,
    /// Streams one HTTP/2 client connection may have open at once (the TLS
    /// listener); more are refused with `REFUSED_STREAM`.
    pub h2_max_streams: u32,
    /// A streaming client that got no byte for this long gets an SSE
    /// keep-alive (load balancers cut idle connections at 60 s); `None`: off.
    pub sse_keepalive: Option<Duration>,
    /// Longer model names get 400.
    pub max_model_name_bytes: usize,
    /// Bytes the tool-schema rewrites of one request may build; past it 400.
    pub max_schema_rewrite_bytes: usize,
    /// The TLS client listener, when configured.
    pub tls: Option<TlsListener>,
    /// Host names a gateway without client keys answers to besides
    /// loopback names (lowercase, without port).
    pub allowed_hosts: Vec<String>,
    /// `server.admin_listen`: where the admin surface is served instead of
    /// the client listeners (empty: on the client listeners).
    pub admin_listen: Vec<String>,
}

impl ServerSettings {
    /// The bounds on one request's translation.
    pub fn translate_limits(&self) -> apiproxy_translate::Limits {
        apiproxy_translate::Limits {
            schema_rewrite_bytes: self.max_schema_rewrite_bytes,
        }
    }
}

/// `server.tls`: a TLS client listener (HTTP/2 by ALPN).
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: Vec<String>,
    pub cert: String,
    pub key: String,
}

/// Where shared state lives.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `None`: the embedded in-memory store.
    pub redis_url: Option<String>,
    pub key_prefix: String,
    pub session_ttl: Duration,
    pub context_ttl: Duration,
    pub catalog_ttl: Duration,
    /// The embedded store's file (client keys made at run time); `None`: memory only.
    pub path: Option<std::path::PathBuf>,
}

/// What the context store keeps per session.
#[derive(Debug, Clone)]
pub struct ContextSettings {
    pub max_entries: usize,
    pub max_chars: usize,
    /// Bytes of JSON one snippet may take (keys and numbers count too).
    pub max_entry_bytes: usize,
    /// Bytes of snippets kept per session.
    pub max_session_bytes: usize,
}

impl Config {
    /// What the shared-state store is opened with.
    pub fn store_options(&self) -> apiproxy_store::StoreOptions {
        apiproxy_store::StoreOptions {
            redis_url: self.store.redis_url.clone(),
            key_prefix: self.store.key_prefix.clone(),
            session_ttl: self.store.session_ttl,
            context_max_entries: self.context.max_entries,
            context_max_entry_bytes: self.context.max_entry_bytes,
            context_max_session_bytes: self.context.max_session_bytes,
            context_ttl: self.store.context_ttl,
            catalog_ttl: self.store.catalog_ttl,
            // As long as OpenAI keeps a stored response.
            ..Default::default()
        }
    }
}

/// Client and admin keys.
#[derive(Debug, Default)]
pub struct AuthConfig {
    pub keys: Vec<ClientKey>,
    /// SHA-256 of each admin key.
    pub admin_keys: Vec<[u8; 32]>,
    /// `auth.open`: serving without client keys on a non-loopback address
    /// was asked for explicitly.
    pub open: bool,
    /// Admin keys shorter than 32 characters (a warning: an admin key is a
    /// password to the whole fleet).
    pub short_admin_keys: usize,
    /// Failed admin authentications one client address may make per
    /// minute; past it 429 (`auth.admin_failures_per_minute`).
    pub admin_failures_per_minute: u32,
}

/// Failed admin authentications per client address and minute.
pub const DEFAULT_ADMIN_FAILURES_PER_MINUTE: u32 = 10;

impl AuthConfig {
    /// Whether a client request must present a key. Decided from the
    /// configuration alone, never from whether a store answered: keys are
    /// configured, or an admin key exists that can make keys at run time
    /// (and `auth.open` does not say anonymous clients are meant).
    pub fn requires_key(&self) -> bool {
        !self.keys.is_empty() || (!self.admin_keys.is_empty() && !self.open)
    }
}

/// One client key. The secret itself is not kept, only its SHA-256.
#[derive(Debug)]
pub struct ClientKey {
    /// The key's immutable identity: what its state (rate-limit windows,
    /// spend, session bindings, context) is kept under. A configured key's
    /// is its name; a key made at run time has `~` and 16 hex digits, a
    /// form configured names may not take, so a key made later never
    /// inherits another's state.
    pub id: String,
    /// A label: what logs, metrics and the console show.
    pub name: String,
    pub sha256: [u8; 32],
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// The allow-list; `None` allows every model.
    pub models: Option<GlobSet>,
    /// Spending limit per period, shared by every replica.
    pub budget: Option<Budget>,
    /// `provider_refs: any`: the key may reference any object stored at the
    /// provider, not only the responses it received (proxy/refs.rs).
    pub provider_refs_any: bool,
}

impl ClientKey {
    /// What this key's state (rate windows, budget counters) is stored
    /// under: today its id. The one place to change when that changes.
    pub fn owner_id(&self) -> &str {
        &self.id
    }

    /// Whether this key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|g| g.is_match(model))
    }
}

/// The kind of API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Gemini,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

/// A set of HTTP statuses given as `"429,500,502-504"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    /// The default: 429 and every 5xx.
    pub fn default_retryable() -> Self {
        StatusSet(vec![(429, 429), (500, 599)])
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    /// Parses `"429,500,502-504"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let parse = |x: &str| -> Result<u16, String> {
                x.parse::<u16>()
                    .ok()
                    .filter(|v| (100..=599).contains(v))
                    .ok_or_else(|| format!("{x:?} is not an HTTP status (100-599)"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("range {part:?} runs backwards"));
            }
            ranges.push((lo, hi));
        }
        if ranges.is_empty() {
            return Err("no statuses given".into());
        }
        Ok(StatusSet(ranges))
    }
}

/// Where a provider lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash; empty for none.
    pub path: String,
}

/// Price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Input tokens read from the prompt cache; `None`: charged as input.
    pub cached_input: Option<f64>,
}

/// `providers[].health_check`: list the models every `interval`, each
/// listing bounded by `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
}

/// One provider, resolved.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub id: String,
    pub kind: ProviderKind,
    /// The wire format requests to it are encoded in.
    pub format: Format,
    pub base: BaseUrl,
    /// Non-empty keys; empty for a provider that needs none.
    pub api_keys: Vec<String>,
    /// Each key's options, in the order of `api_keys`.
    pub key_options: Vec<KeyOptions>,
    /// How a request picks among the usable keys.
    pub key_strategy: KeyStrategy,
    pub weight: f64,
    /// The configured model list; `None`: listed from the provider.
    pub static_models: Option<Vec<String>>,
    pub retryable: StatusSet,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub pricing: HashMap<String, Price>,
    /// Extra trusted CAs for this provider's TLS certificate.
    pub ca: Option<std::sync::Arc<pingora::protocols::tls::CaType>>,
    /// False when keys were configured but all of them are empty.
    pub enabled: bool,
    /// A display name (APIProxy's `LLM_PROVIDER_{id}_NAME`).
    pub name: Option<String>,
    /// The model-list path, when not the API's usual one.
    pub models_path: Option<String>,
    /// Where the provider runs (`region`), for `preferred_region`.
    pub region: Option<String>,
    /// Most requests in flight to it at once (`max_concurrency`).
    pub max_concurrency: Option<u32>,
    /// Most requests per second sent to it (`max_qps`).
    pub max_qps: Option<u32>,
    /// Active health checks (`health_check`).
    pub health_check: Option<HealthCheck>,
}

/// `providers[].key_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStrategy {
    /// Spread over the usable keys in proportion to their `weight`.
    RoundRobin,
    /// The first usable key until it rests or runs low, then the next.
    FillFirst,
}

impl KeyStrategy {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStrategy::RoundRobin => "round-robin",
            KeyStrategy::FillFirst => "fill-first",
        }
    }
}

/// One provider key's options (`api_keys: [{key, weight, ...}]`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyOptions {
    /// Its share under round-robin (1 for a key given as a plain string).
    pub weight: f64,
    /// Most requests in flight with it at once.
    pub max_concurrency: Option<u32>,
    /// Most requests per second sent with it.
    pub max_qps: Option<u32>,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            weight: 1.0,
            max_concurrency: None,
            max_qps: None,
        }
    }
}

/// A logical model: a name routed over weighted upstreams.
#[derive(Debug, Clone)]
pub struct LogicalModel {
    pub name: String,
    pub description: Option<String>,
    /// `hedge_after_ms`: an attempt with no answer after this long gets a
    /// second one on the next upstream (docs/routing.md, "Hedged requests").
    pub hedge_after: Option<Duration>,
    /// `hedge_non_stream`: non-streaming requests are hedged too.
    pub hedge_non_stream: bool,
    pub upstreams: Vec<UpstreamRef>,
}

/// One upstream of a logical model.
#[derive(Debug, Clone)]
pub struct UpstreamRef {
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub model: String,
    pub weight: f64,
}

/// Default body limit: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Where the pid file and the upgrade socket live unless configured: a
/// directory only the gateway's user can enter (systemd's `RuntimeDirectory`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/apiproxy";
/// Default `server.pid_file` (the systemd unit's `PIDFile`).
pub const DEFAULT_PID_FILE: &str = "/run/apiproxy/apiproxy.pid";
/// Default `server.upgrade_sock`.
pub const DEFAULT_UPGRADE_SOCK: &str = "/run/apiproxy/upgrade.sock";
/// Output tokens a request without an output cap reserves per choice (`limits.default_output_tokens`).
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1024;
/// The largest `limits.default_output_tokens` accepted.
const MAX_DEFAULT_OUTPUT_TOKENS: u64 = 1_000_000;

/// Default client limits, as nginx and Envoy would have them for an edge.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 60_000;
/// 32 kbit/s, below any real link (GPRS included): a 16 MiB body may take
/// 68 minutes, a byte a minute is cut after the grace.
pub const DEFAULT_MIN_BODY_RATE: u64 = 4096;
/// The highest minimum rate accepted (1 GiB/s).
pub const MAX_MIN_BODY_RATE: u64 = 1 << 30;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Pingora's own hard cap on a request head.
pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024 - 1;
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// A schema rewrite past this is work no tool set needs (64 MiB).
pub const MAX_MAX_SCHEMA_REWRITE_BYTES: usize = 64 << 20;
/// nginx's `http2_max_concurrent_streams` default; RFC 9113 asks for at
/// least 100 so clients are not starved.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;
pub const MAX_H2_MAX_STREAMS: u32 = 10_000;
/// Seconds without a byte before a streaming client gets a keep-alive:
/// well under the 60 s idle cut of common load balancers.
pub const DEFAULT_SSE_KEEPALIVE_S: u64 = 15;
/// The longest keep-alive interval accepted.
pub const MAX_SSE_KEEPALIVE_S: u64 = 3600;

impl Config {
    /// Reads, parses and resolves `path`, with the filter files of
    /// `filters_dir` (default `filters/` beside it). `Err` holds one line
    /// per problem.
    /// An empty `path` stands for APIProxy's environment configuration
    /// (the process runs without a file; SIGHUP reads the environment again).
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        if path.as_os_str().is_empty() {
            return Self::from_apiproxy_env(&|name| std::env::var(name).ok())
                .unwrap_or_else(|| Err(vec!["LLM_PROVIDERS: is not set".to_owned()]));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml_in(&text, &|name| std::env::var(name).ok(), Some(dir))
    }

    /// The configuration APIProxy's environment variables describe
    /// (`LLM_PROVIDERS`...; see `from_env.rs`), read through `lookup`;
    /// `None` when `LLM_PROVIDERS` is unset. Problems name the variables.
    pub fn from_apiproxy_env(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Result<Config, Vec<String>>> {
        let from_env::EnvDocument {
            doc,
            mut used,
            names,
            mut problems,
        } = from_env::document(lookup)?;
        let no_vars = |_: &str| None;
        match Self::from_value(doc, &no_vars, None, &mut used) {
            Ok(c) if problems.is_empty() => return Some(Ok(c)),
            Ok(_) => {}
            Err(more) => problems.extend(more),
        }
        Some(Err(problems
            .iter()
            .map(|p| env::redact(&from_env::rename(p, &names), &used))
            .collect()))
    }

    /// Parses and resolves config text, reading `${VAR}`s from `lookup`.
    /// Filter files are read only when `filters_dir` is an absolute path.
    pub fn from_yaml(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<String>> {
        Self::from_yaml_in(text, lookup, None)
    }

    /// Parses and resolves config text; `base` is the config file's
    /// directory (where a relative `filters_dir` and the default `filters/`
    /// are looked up). Every problem is reported, unset variables included,
    /// and none echoes a value taken from the environment.
    pub fn from_yaml_in(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        base: Option<&Path>,
    ) -> Result<Config, Vec<String>> {
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| vec![yaml_error(&e)])?;
        if value.is_null() {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        let mut problems = Vec::new();
        let mut used = Vec::new();
        expand_tree(&mut value, String::new(), lookup, &mut problems, &mut used);
        let result = Self::from_value(value, lookup, base, &mut used);
        if let Err(more) = result.as_ref() {
            problems.extend(more.iter().cloned());
        }
        if problems.is_empty() {
            return result;
        }
        Err(problems.iter().map(|p| env::redact(p, &used)).collect())
    }

    fn from_value(
        value: serde_yaml::Value,
        lookup: &dyn Fn(&str) -> Option<String>,
        base: Option<&Path>,
        used: &mut Vec<env::EnvValue>,
    ) -> Result<Config, Vec<String>> {
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            vec![if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            }]
        })?;
        let provider_ids: Vec<String> = raw.providers.iter().map(|p| p.id.clone()).collect();
        let filters_dir = raw.filters_dir.clone();
        let resolved = resolve(raw);
        let dir = match (&filters_dir, base) {
            (Some(d), Some(b)) => Some((b.join(d), true)),
            // Text without a file: a relative directory has nothing to be relative to.
            (Some(d), None) if Path::new(d).is_absolute() => Some((PathBuf::from(d), true)),
            (Some(_), None) => None,
            (None, Some(b)) => Some((b.join("filters"), false)),
            (None, None) => None,
        };
        let filters = match dir {
            None => Ok(crate::config::filters::FilterSet::default()),
            Some((dir, explicit)) => {
                let mut expand = |v: &mut serde_yaml::Value, at: String, p: &mut Vec<String>| {
                    expand_tree(v, at, lookup, p, used)
                };
                crate::config::filters::load_dir(&dir, explicit, &provider_ids, &mut expand)
            }
        };
        match (resolved, filters) {
            (Ok(mut c), Ok(f)) => {
                c.filters = f;
                Ok(c)
            }
            (Ok(_), Err(p)) => Err(p),
            (Err(p), Ok(_)) => Err(p),
            (Err(mut p), Err(q)) => {
                p.extend(q);
                Err(p)
            }
        }
    }

    /// The index of provider `id`.
    pub fn provider_index(&self, id: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.id == id)
    }

    /// Warnings about a config that is valid but risky, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.auth.short_admin_keys > 0 {
            out.push(format!(
                "auth.admin_keys: {} key(s) shorter than 32 characters: an admin key is a password to the whole fleet",
                self.auth.short_admin_keys
            ));
        }
        if !self.auth.requires_key() {
            for a in &self.server.listen {
                if a.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback()) {
                    out.push(format!(
                        "auth.open: no client keys and listening on {a}: anyone who reaches it spends the provider keys"
                    ));
                }
            }
        }
        out
    }

    /// The logical model `name`.
    pub fn logical_model(&self, name: &str) -> Option<&LogicalModel> {
        self.models.iter().find(|m| m.name == name)
    }
}

fn yaml_error(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => format!("yaml: line {} column {}: {e}", l.line(), l.column()),
        None => format!("yaml: {e}"),
    }
}

/// Expands `${VAR}` in every string of the tree, noting problems by path
/// (every unset variable, each as its own line) and the values taken from
/// the environment.
fn expand_tree(
    v: &mut serde_yaml::Value,
    path: String,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
    used: &mut Vec<env::EnvValue>,
) {
    match v {
        serde_yaml::Value::String(s) => {
            let mut unset = Vec::new();
            match env::expand_noting(s, lookup, &mut unset, used) {
                Ok(x) => *s = x,
                Err(e) => problems.push(format!("{path}: {e}")),
            }
            for name in unset {
                problems.push(format!("{path}: environment variable {name} is not set"));
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, format!("{path}[{i}]"), lookup, problems, used);
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                expand_tree(item, p, lookup, problems, used);
            }
        }
        serde_yaml::Value::Tagged(t) => expand_tree(&mut t.value, path, lookup, problems, used),
        _ => {}
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn parse_base_url(s: &str) -> Result<BaseUrl, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    let tls = match u.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("{s:?} has no host")),
    };
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{s:?} must not carry a query or fragment"));
    }
    let port = u
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    Ok(BaseUrl {
        tls,
        host,
        port,
        path: u.path().trim_end_matches('/').to_owned(),
    })
}

/// Reads a PEM file of one or more CA certificates.
fn load_ca(path: &str) -> Result<pingora::protocols::tls::CaType, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = pingora::tls::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{path}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no certificate in it"));
    }
    Ok(certs.into_boxed_slice())
}

fn resolve(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();

    // server
    let s = raw.server;
    let listen = s
        .listen
        .map(raw::OneOrMany::into_vec)
        .unwrap_or_else(|| vec!["127.0.0.1:8080".to_owned()]);
    if listen.is_empty() {
        problems.push("server.listen: at least one address is needed".to_owned());
    }
    for (i, a) in listen.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen[{i}]: {a:?} is not an address like 0.0.0.0:8080"
            ));
        }
    }
    if let Some(m) = &s.metrics_listen {
        if m.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.metrics_listen: {m:?} is not an address like 127.0.0.1:9100"
            ));
        }
    }
    if s.threads == Some(0) {
        problems.push("server.threads: must be at least 1".to_owned());
    }
    if s.max_model_name_bytes == Some(0) {
        problems.push("server.max_model_name_bytes: must be positive".to_owned());
    }
    if s.max_schema_rewrite_bytes
        .is_some_and(|b| !(1024..=MAX_MAX_SCHEMA_REWRITE_BYTES).contains(&b))
    {
        problems.push(format!(
            "server.max_schema_rewrite_bytes: must be between 1024 and {MAX_MAX_SCHEMA_REWRITE_BYTES}"
        ));
    }
    if s.max_body_bytes == Some(0) {
        problems.push("server.max_body_bytes: must be positive".to_owned());
    }
    for (key, v) in [
        ("header_timeout_ms", s.header_timeout_ms),
        ("keepalive_timeout_ms", s.keepalive_timeout_ms),
        ("body_timeout_ms", s.body_timeout_ms),
        ("write_timeout_ms", s.write_timeout_ms),
        ("max_connections", s.max_connections),
    ] {
        if v == Some(0) {
            problems.push(format!("server.{key}: must be positive"));
        }
    }
    if s.min_body_rate_bytes_per_s
        .is_some_and(|r| !(1..=MAX_MIN_BODY_RATE).contains(&r))
    {
        problems.push(format!(
            "server.min_body_rate_bytes_per_s: must be between 1 and {MAX_MIN_BODY_RATE}"
        ));
    }
    if s.h2_max_concurrent_streams
        .is_some_and(|n| !(1..=MAX_H2_MAX_STREAMS).contains(&n))
    {
        problems.push(format!(
            "server.h2_max_concurrent_streams: must be between 1 and {MAX_H2_MAX_STREAMS}"
        ));
    }
    if s.sse_keepalive_s.is_some_and(|k| k > MAX_SSE_KEEPALIVE_S) {
        problems.push(format!(
            "server.sse_keepalive_s: at most {MAX_SSE_KEEPALIVE_S} (0 turns keep-alives off)"
        ));
    }
    if let Some(b) = s.max_header_bytes {
        if !(1024..=MAX_MAX_HEADER_BYTES as u64).contains(&b) {
            problems.push(format!(
                "server.max_header_bytes: must be between 1024 and {MAX_MAX_HEADER_BYTES}"
            ));
        }
    }
    for (key, path) in [("pid_file", &s.pid_file), ("upgrade_sock", &s.upgrade_sock)] {
        if let Some(p) = path {
            if !Path::new(p).is_absolute() {
                problems.push(format!("server.{key}: {p:?} must be an absolute path"));
            }
        }
    }
    let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
    let server = ServerSettings {
        listen,
        metrics_listen: s.metrics_listen,
        threads: s.threads.unwrap_or(2),
        max_body_bytes: s
            .max_body_bytes
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_MAX_BODY_BYTES),
        pid_file: s.pid_file.unwrap_or_else(|| DEFAULT_PID_FILE.to_owned()),
        upgrade_sock: s
            .upgrade_sock
            .unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.to_owned()),
        daemon: s.daemon.unwrap_or(false),
        error_log: s.error_log,
        user: s.user,
        group: s.group,
        // Long enough for a long stream to finish on upgrade, short enough
        // for a quick restart.
        grace_period_seconds: s.grace_period_seconds.unwrap_or(60),
        graceful_shutdown_timeout_seconds: s.graceful_shutdown_timeout_seconds.unwrap_or(10),
        header_timeout: ms(s.header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS),
        keepalive_timeout: ms(s.keepalive_timeout_ms, DEFAULT_KEEPALIVE_TIMEOUT_MS),
        body_timeout: ms(s.body_timeout_ms, DEFAULT_BODY_TIMEOUT_MS),
        min_body_rate: s.min_body_rate_bytes_per_s.unwrap_or(DEFAULT_MIN_BODY_RATE),
        write_timeout: ms(s.write_timeout_ms, DEFAULT_WRITE_TIMEOUT_MS),
        max_header_bytes: s
            .max_header_bytes
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_connections: s
            .max_connections
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        h2_max_streams: s
            .h2_max_concurrent_streams
            .unwrap_or(DEFAULT_H2_MAX_STREAMS),
        sse_keepalive: match s.sse_keepalive_s.unwrap_or(DEFAULT_SSE_KEEPALIVE_S) {
            0 => None,
            k => Some(Duration::from_secs(k)),
        },
        max_model_name_bytes: s
            .max_model_name_bytes
            .unwrap_or(crate::model_name::DEFAULT_MAX_MODEL_NAME_BYTES),
        max_schema_rewrite_bytes: s
            .max_schema_rewrite_bytes
            .unwrap_or(apiproxy_translate::gemini::MAX_SCHEMA_REWRITE_BYTES),
        tls: s.tls.map(|t| {
            let listen = t.listen.into_vec();
            if listen.is_empty() {
                problems.push("server.tls.listen: at least one address is needed".to_owned());
            }
            for (i, a) in listen.iter().enumerate() {
                if a.parse::<SocketAddr>().is_err() {
                    problems.push(format!(
                        "server.tls.listen[{i}]: {a:?} is not an address like 0.0.0.0:8443"
                    ));
                }
            }
            if let Err(e) = CertPair::load(&t.cert, &t.key) {
                problems.push(format!("server.tls: {e}"));
            }
            TlsListener {
                listen,
                cert: t.cert,
                key: t.key,
            }
        }),
        admin_listen: {
            let admin = s.admin_listen.map(|l| l.into_vec()).unwrap_or_default();
            for (i, a) in admin.iter().enumerate() {
                if a.parse::<SocketAddr>().is_err() {
                    problems.push(format!(
                        "server.admin_listen[{i}]: {a:?} is not an address like 127.0.0.1:8081"
                    ));
                }
            }
            admin
        },
        allowed_hosts: s
            .allowed_hosts
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let h = h.trim().to_ascii_lowercase();
                if h.is_empty() || h.contains([':', '/', ' ']) {
                    problems.push(format!(
                        "server.allowed_hosts[{i}]: {h:?} is not a host name (no port, no scheme)"
                    ));
                    return None;
                }
                Some(h)
            })
            .collect(),
    };

    // log
    let access_format = match raw.log.access_format.as_deref() {
        None | Some("text") => AccessFormat::Text,
        Some("json") => AccessFormat::Json,
        Some(other) => {
            problems.push(format!(
                "log.access_format: {other:?} is not one of text, json"
            ));
            AccessFormat::Text
        }
    };
    let log_level = raw.log.level.clone().unwrap_or_else(|| "info".to_owned());
    if !["error", "warn", "info", "debug", "trace", "off"]
        .contains(&log_level.to_ascii_lowercase().as_str())
    {
        problems.push(format!(
            "log.level: {log_level:?} is not one of error, warn, info, debug, trace, off"
        ));
    }

    // store
    let st = raw.store.unwrap_or_default();
    if let Some(u) = st.redis_url.as_deref().filter(|u| !u.is_empty()) {
        if let Err(e) = apiproxy_store::validate_redis_url(u) {
            problems.push(format!("store.redis_url: {e}"));
        }
    }
    let store = StoreSettings {
        redis_url: st.redis_url.filter(|u| !u.is_empty()),
        key_prefix: st.key_prefix.unwrap_or_else(|| "apiproxy:".to_owned()),
        session_ttl: Duration::from_secs(st.session_ttl_seconds.unwrap_or(3600)),
        context_ttl: Duration::from_secs(st.context_ttl_seconds.unwrap_or(86400)),
        catalog_ttl: Duration::from_secs(st.models_cache_ttl_seconds.unwrap_or(300)),
        path: st
            .path
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from),
    };
    if let Some(p) = Some(&store.key_prefix).filter(|p| p.contains(['{', '}'])) {
        // Braces are Redis Cluster hash tags: the store adds its own so each script stays on one slot.
        problems.push(format!(
            "store.key_prefix: {p:?} must not contain {{ or }} (Redis Cluster hash tags)"
        ));
    }
    let context = ContextSettings {
        max_entries: raw.context.max_entries.unwrap_or(50),
        max_chars: raw.context.max_chars.unwrap_or(4000),
        max_entry_bytes: raw.context.max_entry_bytes.unwrap_or(32 * 1024),
        max_session_bytes: raw.context.max_session_bytes.unwrap_or(256 * 1024),
    };
    if context.max_entry_bytes < MIN_CONTEXT_ENTRY_BYTES {
        problems.push(format!(
            "context.max_entry_bytes: {} is too small to hold an entry (at least {MIN_CONTEXT_ENTRY_BYTES})",
            context.max_entry_bytes
        ));
    }
    if context.max_session_bytes < context.max_entry_bytes {
        problems.push(format!(
            "context.max_session_bytes: {} is smaller than context.max_entry_bytes ({})",
            context.max_session_bytes, context.max_entry_bytes
        ));
    }

    // console
    let c = raw.console;
    if c.recent_requests == Some(0) || c.recent_requests.is_some_and(|n| n > 1_000_000) {
        problems.push("console.recent_requests: must be between 1 and 1000000".to_owned());
    }
    if c.max_body_chars == Some(0) {
        problems.push("console.max_body_chars: must be positive".to_owned());
    }
    if c.capture_ttl_seconds == Some(0)
        || c.capture_ttl_seconds
            .is_some_and(|s| s > MAX_CAPTURE_TTL_SECONDS)
    {
        problems.push(format!(
            "console.capture_ttl_seconds: must be between 1 and {MAX_CAPTURE_TTL_SECONDS}"
        ));
    }
    let console = ConsoleSettings {
        collect: c.collect.unwrap_or(true),
        recent_requests: c.recent_requests.unwrap_or(1000),
        capture_bodies: raw.log.capture_bodies.unwrap_or(false),
        max_body_chars: c.max_body_chars.unwrap_or(4096),
        capture_ttl: Duration::from_secs(
            c.capture_ttl_seconds
                .unwrap_or(3600)
                .clamp(1, MAX_CAPTURE_TTL_SECONDS),
        ),
    };

    // auth
    let mut auth = AuthConfig::default();
    let mut key_names = HashSet::new();
    for (i, k) in raw.auth.keys.into_iter().enumerate() {
        let at = format!("auth.keys[{i}]");
        if k.name.is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        }
        if !key_names.insert(k.name.clone()) {
            problems.push(format!("{at}.name: duplicate key name {:?}", k.name));
        }
        if k.name == "-" || k.name.starts_with('~') {
            // `-` stands for "no key" in logs and owners; `~…` are the ids of keys made at run time.
            problems.push(format!(
                "{at}.name: {:?} is reserved (`-` and names starting with `~`)",
                k.name
            ));
        }
        let digest = match (&k.key, &k.key_sha256) {
            (Some(_), Some(_)) => {
                problems.push(format!("{at}: give key or key_sha256, not both"));
                continue;
            }
            (None, None) => {
                problems.push(format!("{at}: key or key_sha256 is required"));
                continue;
            }
            (Some(key), None) if key.is_empty() => {
                problems.push(format!(
                    "{at}.key: is empty (is its environment variable set?)"
                ));
                continue;
            }
            (Some(key), None) => sha256(key),
            (None, Some(h)) => match hex::decode(h.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            {
                Some(d) => d,
                None => {
                    problems.push(format!("{at}.key_sha256: expected 64 hex characters"));
                    continue;
                }
            },
        };
        let budget = match Budget::resolve(k.budget_usd, k.budget_period.as_deref()) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("{at}.{e}"));
                None
            }
        };
        let models = match k.models {
            None => None,
            Some(pats) => {
                let mut b = GlobSetBuilder::new();
                let mut ok = true;
                for (j, p) in pats.iter().enumerate() {
                    match Glob::new(p) {
                        Ok(g) => {
                            b.add(g);
                        }
                        Err(e) => {
                            ok = false;
                            problems.push(format!("{at}.models[{j}]: {e}"));
                        }
                    }
                }
                if !ok {
                    continue;
                }
                match b.build() {
                    Ok(g) => Some(g),
                    Err(e) => {
                        problems.push(format!("{at}.models: {e}"));
                        continue;
                    }
                }
            }
        };
        auth.keys.push(ClientKey {
            id: k.name.clone(),
            name: k.name,
            sha256: digest,
            rpm: k.rpm,
            tpm: k.tpm,
            models,
            budget,
            provider_refs_any: k.provider_refs == Some(raw::ProviderRefs::Any),
        });
    }
    for (i, k) in raw.auth.admin_keys.iter().enumerate() {
        if k.is_empty() {
            // An unset ${APIPROXY_ADMIN_KEY:-} leaves admin endpoints closed.
            continue;
        }
        if k.chars().count() < 16 {
            problems.push(format!(
                "auth.admin_keys[{i}]: shorter than 16 characters (an admin key opens every endpoint of the gateway: use 32 or more random characters)"
            ));
        } else if k.chars().count() < 32 {
            auth.short_admin_keys += 1;
        }
        let digest = sha256(k);
        if auth.keys.iter().any(|c| c.sha256 == digest) {
            problems.push(format!(
                "auth.admin_keys[{i}]: is also a client key in auth.keys: give admins their own key"
            ));
        }
        auth.admin_keys.push(digest);
    }
    auth.open = raw.auth.open.unwrap_or(false);
    auth.admin_failures_per_minute = match raw.auth.admin_failures_per_minute {
        None => DEFAULT_ADMIN_FAILURES_PER_MINUTE,
        Some(0) => {
            problems.push("auth.admin_failures_per_minute: must be at least 1".to_owned());
            DEFAULT_ADMIN_FAILURES_PER_MINUTE
        }
        Some(n) => n,
    };
    if !auth.requires_key() && !auth.open {
        let tls = server.tls.iter().flat_map(|t| &t.listen);
        let listeners = (server.listen.iter().map(|a| ("server.listen", a)))
            .enumerate()
            .chain(tls.map(|a| ("server.tls.listen", a)).enumerate());
        for (i, (key, a)) in listeners {
            if a.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback()) {
                problems.push(format!(
                    "{key}[{i}]: {a} is reachable from other machines and no client key is needed: add auth.keys (or an admin key to make keys in the console) or set auth.open: true"
                ));
            }
        }
    }

    // providers
    let mut providers = Vec::new();
    let mut ids = HashSet::new();
    for (i, p) in raw.providers.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        let before = problems.len();
        if p.id.is_empty() || p.id.contains('/') || p.id.chars().any(char::is_whitespace) {
            problems.push(format!(
                "{at}.id: {:?} must be non-empty, without '/' or spaces",
                p.id
            ));
        }
        if !ids.insert(p.id.clone()) {
            problems.push(format!("{at}.id: duplicate provider id {:?}", p.id));
        }
        let kind = match p.kind.as_str() {
            "openai" => ProviderKind::OpenAi,
            "anthropic" => ProviderKind::Anthropic,
            "gemini" => ProviderKind::Gemini,
            other => {
                problems.push(format!(
                    "{at}.kind: {other:?} is not one of openai, anthropic, gemini"
                ));
                ProviderKind::OpenAi
            }
        };
        let format = match (kind, p.wire_api.as_deref()) {
            (ProviderKind::OpenAi, None | Some("chat")) => Format::OpenAiChat,
            (ProviderKind::OpenAi, Some("responses")) => Format::OpenAiResponses,
            (ProviderKind::OpenAi, Some(other)) => {
                problems.push(format!("{at}.wire_api: {other:?} is not chat or responses"));
                Format::OpenAiChat
            }
            (ProviderKind::Anthropic, None) => Format::Anthropic,
            (ProviderKind::Gemini, None) => Format::Gemini,
            (_, Some(_)) => {
                problems.push(format!("{at}.wire_api: only for kind openai"));
                Format::OpenAiChat
            }
        };
        let base = parse_base_url(&p.base_url).unwrap_or_else(|e| {
            problems.push(format!("{at}.base_url: {e}"));
            BaseUrl {
                tls: false,
                host: String::new(),
                port: 0,
                path: String::new(),
            }
        });
        let weight = p.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            problems.push(format!("{at}.weight: must be a positive number"));
        }
        let retryable = match p.retryable_status.as_deref() {
            None => StatusSet::default_retryable(),
            Some(s) => StatusSet::parse(s).unwrap_or_else(|e| {
                problems.push(format!("{at}.retryable_status: {e}"));
                StatusSet::default_retryable()
            }),
        };
        if p.connect_timeout_ms == Some(0) {
            problems.push(format!("{at}.connect_timeout_ms: must be positive"));
        }
        if p.read_timeout_ms == Some(0) {
            problems.push(format!("{at}.read_timeout_ms: must be positive"));
        }
        for (name, value) in &p.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                problems.push(format!("{at}.headers.{name}: not a valid header"));
            }
        }
        for (m, pr) in &p.pricing {
            let prices = [Some(pr.input), Some(pr.output), pr.cached_input];
            if prices
                .iter()
                .flatten()
                .any(|x| !(x.is_finite() && *x >= 0.0))
            {
                problems.push(format!(
                    "{at}.pricing.{m}: prices must be non-negative numbers (USD per million tokens)"
                ));
            }
        }
        if let Some(models) = &p.models {
            if let Some(j) = models.iter().position(String::is_empty) {
                problems.push(format!("{at}.models[{j}]: must not be empty"));
            }
        }
        let ca = p.ca_file.as_deref().and_then(|path| match load_ca(path) {
            Ok(ca) => Some(std::sync::Arc::new(ca)),
            Err(e) => {
                problems.push(format!("{at}.ca_file: {e}"));
                None
            }
        });
        if p.max_concurrency == Some(0) {
            problems.push(format!("{at}.max_concurrency: must be at least 1"));
        }
        if p.max_qps == Some(0) {
            problems.push(format!("{at}.max_qps: must be at least 1"));
        }
        let health_check = p.health_check.map(|h| {
            if h.interval_s == Some(0) {
                problems.push(format!("{at}.health_check.interval_s: must be at least 1"));
            }
            if h.timeout_ms == Some(0) {
                problems.push(format!("{at}.health_check.timeout_ms: must be positive"));
            }
            HealthCheck {
                interval: Duration::from_secs(h.interval_s.unwrap_or(30).max(1)),
                timeout: Duration::from_millis(h.timeout_ms.unwrap_or(5_000).max(1)),
            }
        });
        let key_strategy = match p.key_strategy.as_deref() {
            None | Some("round-robin") => KeyStrategy::RoundRobin,
            Some("fill-first") => KeyStrategy::FillFirst,
            Some(other) => {
                problems.push(format!(
                    "{at}.key_strategy: {other:?} is not round-robin or fill-first"
                ));
                KeyStrategy::RoundRobin
            }
        };
        let configured_keys = !p.api_keys.is_empty();
        let mut api_keys = Vec::new();
        let mut key_options = Vec::new();
        for (j, k) in p.api_keys.into_iter().enumerate() {
            let (key, options) = match k {
                raw::RawApiKey::Plain(key) => (key, KeyOptions::default()),
                raw::RawApiKey::Detailed(o) => {
                    let kat = format!("{at}.api_keys[{j}]");
                    let weight = o.weight.unwrap_or(1.0);
                    if !(weight.is_finite() && weight > 0.0) {
                        problems.push(format!("{kat}.weight: must be a positive number"));
                    }
                    if o.max_concurrency == Some(0) {
                        problems.push(format!("{kat}.max_concurrency: must be at least 1"));
                    }
                    if o.max_qps == Some(0) {
                        problems.push(format!("{kat}.max_qps: must be at least 1"));
                    }
                    let options = KeyOptions {
                        weight,
                        max_concurrency: o.max_concurrency,
                        max_qps: o.max_qps,
                    };
                    (o.key, options)
                }
            };
            // An empty key (an unset `${VAR:-}`) is left out.
            if !key.is_empty() {
                api_keys.push(key);
                key_options.push(options);
            }
        }
        if problems.len() > before {
            continue;
        }
        if let Some(mp) = p.models_path.as_deref() {
            if !mp.starts_with('/') {
                problems.push(format!("{at}.models_path: must start with '/'"));
            }
        }
        providers.push(ProviderConfig {
            name: p.name,
            models_path: p.models_path,
            region: p.region,
            max_concurrency: p.max_concurrency,
            max_qps: p.max_qps,
            health_check,
            enabled: !configured_keys || !api_keys.is_empty(),
            id: p.id,
            kind,
            format,
            base,
            api_keys,
            key_options,
            key_strategy,
            weight,
            static_models: p.models,
            retryable,
            connect_timeout: Duration::from_millis(p.connect_timeout_ms.unwrap_or(5_000)),
            read_timeout: Duration::from_millis(p.read_timeout_ms.unwrap_or(60_000)),
            headers: p.headers.into_iter().collect(),
            ca,
            pricing: p
                .pricing
                .into_iter()
                .map(|(m, pr)| {
                    (
                        m,
                        Price {
                            input: pr.input,
                            output: pr.output,
                            cached_input: pr.cached_input,
                        },
                    )
                })
                .collect(),
        });
    }

    // logical models
    let mut models = Vec::new();
    let mut names = HashSet::new();
    for (i, m) in raw.models.into_iter().enumerate() {
        let at = format!("models[{i}]");
        if m.name.is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        }
        if !names.insert(m.name.clone()) {
            problems.push(format!("{at}.name: duplicate logical model {:?}", m.name));
        }
        if m.upstreams.is_empty() {
            problems.push(format!("{at}.upstreams: at least one upstream is needed"));
        }
        let mut upstreams = Vec::new();
        for (j, u) in m.upstreams.into_iter().enumerate() {
            let uat = format!("{at}.upstreams[{j}]");
            let weight = u.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                problems.push(format!("{uat}.weight: must be a positive number"));
            }
            if u.model.is_empty() {
                problems.push(format!("{uat}.model: must not be empty"));
            }
            match providers.iter().position(|p| p.id == u.provider) {
                Some(provider) => upstreams.push(UpstreamRef {
                    provider,
                    model: u.model,
                    weight,
                }),
                None if ids.contains(&u.provider) => {} // that provider has its own problem
                None => problems.push(format!("{uat}.provider: unknown provider {:?}", u.provider)),
            }
        }
        if m.hedge_after_ms == Some(0) {
            problems.push(format!("{at}.hedge_after_ms: must be positive"));
        }
        if m.hedge_non_stream == Some(true) && m.hedge_after_ms.is_none() {
            problems.push(format!(
                "{at}.hedge_non_stream: hedges nothing without hedge_after_ms"
            ));
        }
        models.push(LogicalModel {
            hedge_non_stream: m.hedge_non_stream.unwrap_or(false),
            hedge_after: m
                .hedge_after_ms
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            name: m.name,
            description: m.description,
            upstreams,
        });
    }

    let routing = routing::resolve(raw.routing, &mut problems);
    let default_output_tokens = raw
        .limits
        .default_output_tokens
        .unwrap_or(DEFAULT_OUTPUT_TOKENS);
    if !(1..=MAX_DEFAULT_OUTPUT_TOKENS).contains(&default_output_tokens) {
        problems.push(format!(
            "limits.default_output_tokens: must be between 1 and {MAX_DEFAULT_OUTPUT_TOKENS}"
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        server,
        log_level,
        store,
        context,
        auth,
        providers,
        models,
        cooldown: routing.cooldowns.refused,
        routing,
        global_rpm: raw.limits.rpm,
        global_tpm: raw.limits.tpm,
        default_output_tokens,
        access_format,
        filters: crate::config::filters::FilterSet::default(),
        console,
    })
}

#[cfg(test)]
mod tests;
