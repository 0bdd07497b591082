//! Configuration: the YAML file users write, turned once into validated,
//! resolved runtime types. The proxy never touches raw YAML.
//!
//! Loading runs in two phases (as TensorZero does): parse (YAML syntax, `${VAR}`
//! expansion, types, unknown keys), then resolve (references, URLs, ranges,
//! duplicates). Every problem is reported as one line naming its key path.

mod auth;
mod base_url;
mod budget;
mod cache;
mod cert;
mod choices;
mod console;
mod context;
mod env_mode;
mod files_seen;
pub mod filters;
mod log;
mod models;
mod presets;
mod providers;
mod proxy_url;
pub mod raw;
pub mod routing;
mod server;
mod store;
mod telemetry;
mod var_expansion;
pub mod vertex;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{
    expiry_text, parse_expiry, AuthConfig, ClientKey, DEFAULT_ADMIN_FAILURES_PER_MINUTE,
};
pub use base_url::BaseUrl;
pub use budget::Budget;
pub use cache::CacheSettings;
pub use cert::CertPair;
pub use choices::{
    AccessFormat, BudgetPeriod, CacheScope, Choice, Inspection, KeyStrategy, Named, OtlpProtocol,
    Preset, ProviderKind, ScoringMode, WireApi,
};
pub use console::ConsoleSettings;
pub use context::ContextSettings;
pub use files_seen::FilesSeen;
pub use models::{LogicalModel, UpstreamRef};
pub use providers::{AwsCredentials, HealthCheck, KeyOptions, Price, ProviderConfig, StatusSet};
pub use proxy_url::{ProxyScheme, ProxyUrl};
use raw::RawConfig;
pub use server::{
    ServerSettings, TlsListener, DEFAULT_BODY_TIMEOUT_MS, DEFAULT_H2_MAX_STREAMS,
    DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_MODEL_NAME_BYTES,
    DEFAULT_MIN_BODY_RATE, DEFAULT_PID_FILE, DEFAULT_RUNTIME_DIR, DEFAULT_SSE_KEEPALIVE_S,
    DEFAULT_UPGRADE_SOCK, DEFAULT_WRITE_TIMEOUT_MS, MAX_H2_MAX_STREAMS, MAX_MAX_HEADER_BYTES,
    MAX_MAX_SCHEMA_REWRITE_BYTES, MAX_MIN_BODY_RATE, MAX_SSE_KEEPALIVE_S,
};
pub use store::StoreSettings;
pub use telemetry::{OtlpSettings, TelemetrySettings};

/// The JSON Schema of the config file (`apiproxy schema`). It is derived
/// from the types the file is parsed into, so it cannot drift from what
/// `-t` accepts: unknown keys are refused by both. `${VAR}` references are
/// expanded before parsing, so a value written as one is a string to an
/// editor even where the key takes a number.
pub fn json_schema() -> serde_json::Value {
    raw::titled(
        schemars::schema_for!(RawConfig).to_value(),
        "apiproxy configuration",
        "The apiproxy config file (conf/apiproxy.yaml); README.md documents every key.",
    )
}

/// The whole runtime configuration.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub log_level: String,
    /// `log.timezone`: the zone of the log's timestamps (`None`: UTC).
    pub log_timezone: Option<jiff::tz::TimeZone>,
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
    /// The directory the filter files were looked for in (what
    /// `server.watch_config` watches beside the config file).
    pub filters_path: Option<PathBuf>,
    /// The config's files as they were when this config was read from them
    /// (`None` for text or the environment).
    pub files_seen: Option<FilesSeen>,
    /// The web console's data collection.
    pub console: ConsoleSettings,
    /// The response cache (`cache:`; on per model with `cache_ttl_seconds`).
    pub cache: CacheSettings,
    /// Request traces (`telemetry:`): read at start, kept across reloads.
    pub telemetry: TelemetrySettings,
}

/// Output tokens a request without an output cap reserves per choice (`limits.default_output_tokens`).
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1024;
/// The largest `limits.default_output_tokens` accepted.
const MAX_DEFAULT_OUTPUT_TOKENS: u64 = 1_000_000;

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
            responses_max_bytes: self.store.responses_max_bytes,
            // Usage counters go to the file only without Redis (with Redis they live there).
            usage_path: self
                .store
                .path
                .clone()
                .filter(|_| self.store.redis_url.is_none()),
            usage_retention_days: self.store.usage_retention_days,
            cache_max_bytes: self.cache.max_bytes,
            // As long as OpenAI keeps a stored response.
            ..Default::default()
        }
    }
}

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
        let seen = files_seen::stat(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut c = Self::from_yaml_in(&text, &|name| std::env::var(name).ok(), Some(dir))?;
        c.files_seen = Some(FilesSeen::read_after(path, seen, c.filters_path.as_deref()));
        Ok(c)
    }

    /// The configuration APIProxy's environment variables describe
    /// (`LLM_PROVIDERS`...; see `env_mode.rs`), read through `lookup`;
    /// `None` when `LLM_PROVIDERS` is unset. Problems name the variables.
    pub fn from_apiproxy_env(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Result<Config, Vec<String>>> {
        let env_mode::EnvDocument {
            doc,
            mask,
            mut used,
            names,
            mut problems,
        } = env_mode::document(lookup)?;
        let no_vars = |_: &str| None;
        match Self::from_value(doc, &no_vars, None, &mut used) {
            Ok(mut c) if problems.is_empty() => {
                if let Some([ua, origin, referer]) = mask {
                    c.filters.add_browser_mask(ua, origin, referer);
                }
                return Some(Ok(c));
            }
            Ok(_) => {}
            Err(more) => problems.extend(more),
        }
        Some(Err(problems
            .iter()
            .map(|p| var_expansion::redact(&env_mode::rename(p, &names), &used))
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
        Err(problems
            .iter()
            .map(|p| var_expansion::redact(p, &used))
            .collect())
    }

    fn from_value(
        value: serde_yaml::Value,
        lookup: &dyn Fn(&str) -> Option<String>,
        base: Option<&Path>,
        used: &mut Vec<var_expansion::EnvValue>,
    ) -> Result<Config, Vec<String>> {
        let mut raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            vec![if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            }]
        })?;
        providers::aws_from_env(&mut raw.providers, lookup);
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
        let filters_path = dir.as_ref().map(|(d, _)| d.clone());
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
                c.filters_path = filters_path;
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
    used: &mut Vec<var_expansion::EnvValue>,
) {
    match v {
        serde_yaml::Value::String(s) => {
            let mut unset = Vec::new();
            match var_expansion::expand_noting(s, lookup, &mut unset, used) {
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

fn resolve(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let server = server::resolve(raw.server, &mut problems);
    let (log_level, access_format) = log::resolve(&raw.log, &mut problems);
    let log_timezone = log::timezone(&raw.log, &mut problems);
    let store = store::resolve(raw.store.unwrap_or_default(), &mut problems);
    let context = context::resolve(raw.context, &mut problems);
    let console = console::resolve(raw.console, raw.log.capture_bodies, &mut problems);
    let cache = cache::resolve(raw.cache, &mut problems);
    let telemetry = telemetry::resolve(raw.telemetry, &mut problems);
    let auth = auth::resolve(raw.auth, &server, &mut problems);
    let defaults = providers::ProviderDefaults {
        key_strategy: match raw.routing.key_strategy.as_ref().map(Choice::value) {
            None => KeyStrategy::default(),
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                problems.push(format!("routing.key_strategy: {e}"));
                KeyStrategy::default()
            }
        },
        pricing: providers::prices("pricing", raw.pricing, &mut problems),
    };
    let (providers, ids) = providers::resolve(raw.providers, &defaults, &mut problems);
    let models = models::resolve(raw.models, &providers, &ids, &mut problems);
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
        log_timezone,
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
        filters_path: None,
        files_seen: None,
        console,
        cache,
        telemetry,
    })
}

#[cfg(test)]
mod tests;
