//! The `providers` section: each provider's address, keys, format and
//! limits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use apiproxy_translate::Format;

use super::base_url::{parse_base_url, BaseUrl};
use super::choices::Preset;
use super::choices::{Choice, KeyStrategy, ProviderKind, WireApi};
use super::presets;
use super::raw::{self, RawPrice, RawProvider};

/// A set of HTTP statuses given as `"429,500,502-504"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    /// The default, as APIProxy documents it: 429, 500, 502, 503, 504;
    /// for Anthropic also 529, its "overloaded" answer. A 501 (not
    /// implemented) or 505 says the request itself cannot be served: trying
    /// it elsewhere would fail alike.
    pub fn default_retryable(kind: ProviderKind) -> Self {
        let mut codes = vec![(429, 429), (500, 500), (502, 504)];
        codes.extend(kind.extra_retryable().iter().map(|&c| (c, c)));
        StatusSet(codes)
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    /// As the admin API shows it: a code for a single status, `"lo-hi"` for
    /// a range (`[429, "500-599"]`).
    pub fn to_json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    serde_json::Value::from(lo)
                } else {
                    serde_json::Value::from(format!("{lo}-{hi}"))
                }
            })
            .collect()
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

/// Price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Input tokens read from the prompt cache; `None`: charged as input.
    pub cached_input: Option<f64>,
    /// Input tokens written to the prompt cache for 5 minutes; `None`:
    /// 1.25 × input.
    pub cache_write: Option<f64>,
    /// Input tokens written to the prompt cache for one hour; `None`:
    /// 2 × input.
    pub cache_write_1h: Option<f64>,
}

/// `providers[].health_check`: list the models every `interval`, each
/// listing bounded by `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
}

/// One provider, resolved. Debug-printed without its credentials (the
/// keys, tokens and header values are counted or named, never shown).
#[derive(Clone)]
pub struct ProviderConfig {
    pub id: String,
    pub kind: ProviderKind,
    /// The wire format requests to it are encoded in (for Responses
    /// clients see `responses_auto`).
    pub format: Format,
    /// `wire_api: auto`: Responses clients are sent to its Responses API
    /// (until it answers 404/405 there), the others in `format`.
    pub responses_auto: bool,
    pub base: BaseUrl,
    /// Non-empty keys; empty for a provider that needs none. A bedrock
    /// provider's one key is its access key id (its credentials' slot:
    /// cooldowns and capacity are per key; the request is signed, the
    /// value never sent as a key).
    pub api_keys: Vec<String>,
    /// Each key's options, in the order of `api_keys`.
    pub key_options: Vec<KeyOptions>,
    /// How a request picks among the usable keys.
    pub key_strategy: KeyStrategy,
    pub weight: f64,
    /// The configured model list, as clients name them (an alias where one
    /// is given); `None`: listed from the provider.
    pub static_models: Option<Vec<String>>,
    /// Client-facing alias → the provider's name (`models: [{name, alias}]`).
    pub aliases: HashMap<String, String>,
    /// `kind: azure`: deployment → the model's name (`models: [{name,
    /// deployment}]`), for its price.
    pub deployed: HashMap<String, String>,
    /// `excluded_models`: names taken out of its catalog.
    pub excluded: Option<globset::GlobSet>,
    /// `model_prefix`: what clients put before its model names besides `<id>/`.
    pub model_prefix: Option<String>,
    /// `disabled: true`: out of rotation by the operator's choice.
    pub disabled: bool,
    pub retryable: StatusSet,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub pricing: HashMap<String, Price>,
    /// `preset`: the OpenAI-compatible service it is.
    pub preset: Option<Preset>,
    /// `kind: azure`: the API version (`v1`: the v1 GA API).
    pub api_version: Option<String>,
    /// `kind: azure`: an Entra ID bearer token, sent when it has no keys.
    pub azure_ad_token: Option<String>,
    /// `kind: bedrock`: the AWS credentials its requests are signed with.
    pub aws: Option<AwsCredentials>,
    /// `kind: vertex`: project, location, publisher and credentials.
    pub vertex: Option<std::sync::Arc<super::vertex::VertexSettings>>,
    /// Every credential in its config (the keys, the Entra ID token):
    /// scrubbed from whatever it answers.
    pub secrets: Vec<String>,
    /// Extra trusted CAs for this provider's TLS certificate.
    pub ca: Option<std::sync::Arc<pingora::protocols::tls::CaType>>,
    /// `proxy_url`: the outbound proxy its connections go through.
    pub proxy: Option<super::ProxyUrl>,
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
    /// `prompt_cache: auto`: breakpoints added for clients that set none.
    pub prompt_cache_auto: bool,
}

/// AWS credentials (`kind: bedrock`), from the config or the standard
/// environment variables. Debug-printed without the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Temporary credentials' session token.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials").finish_non_exhaustive()
    }
}

/// The standard AWS variables a `kind: bedrock` provider falls back to,
/// with the config key each stands in for.
const AWS_ENV: [(&str, &str); 3] = [
    ("access_key_id", "AWS_ACCESS_KEY_ID"),
    ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("session_token", "AWS_SESSION_TOKEN"),
];

/// Fills the AWS credentials a `kind: bedrock` provider leaves out from
/// the standard environment variables (`lookup`), as the AWS SDKs do. The
/// session token is taken from the environment only with the key id from
/// there too (a token belongs to its key).
pub fn aws_from_env(ps: &mut [RawProvider], lookup: &dyn Fn(&str) -> Option<String>) {
    for p in ps {
        if p.kind.value() != Ok(ProviderKind::Bedrock) {
            continue;
        }
        let from_env = p.access_key_id.is_none();
        let fields = [
            &mut p.access_key_id,
            &mut p.secret_access_key,
            &mut p.session_token,
        ];
        for ((_, var), field) in AWS_ENV.iter().zip(fields) {
            if field.is_none() && (from_env || *var != "AWS_SESSION_TOKEN") {
                *field = lookup(var).filter(|v| !v.is_empty());
            }
        }
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("format", &self.format)
            .field("responses_auto", &self.responses_auto)
            .field("base", &self.base)
            .field("api_keys", &format_args!("<{} keys>", self.api_keys.len()))
            .field("key_options", &self.key_options)
            .field("key_strategy", &self.key_strategy)
            .field("weight", &self.weight)
            .field("static_models", &self.static_models)
            .field("aliases", &self.aliases)
            .field("deployed", &self.deployed)
            .field("model_prefix", &self.model_prefix)
            .field("disabled", &self.disabled)
            .field("retryable", &self.retryable)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("headers", &header_names)
            .field("pricing", &self.pricing)
            .field("preset", &self.preset)
            .field("api_version", &self.api_version)
            .field(
                "azure_ad_token",
                &self.azure_ad_token.as_ref().map(|_| "<set>"),
            )
            .field("aws", &self.aws)
            .field("vertex", &self.vertex)
            .field("secrets", &format_args!("<{} secrets>", self.secrets.len()))
            .field("proxy", &self.proxy)
            .field("enabled", &self.enabled)
            .field("name", &self.name)
            .field("models_path", &self.models_path)
            .field("region", &self.region)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_qps", &self.max_qps)
            .field("health_check", &self.health_check)
            .field("prompt_cache_auto", &self.prompt_cache_auto)
            .finish_non_exhaustive()
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

/// What a provider that sets none takes from the rest of the config.
#[derive(Debug, Default)]
pub struct ProviderDefaults {
    /// `routing.key_strategy`.
    pub key_strategy: KeyStrategy,
    /// The top-level `pricing`, below each provider's own.
    pub pricing: HashMap<String, Price>,
}

/// What `models` gives: the names clients use, and each alias's (or
/// deployment's) provider name.
#[derive(Default)]
struct ModelEntries {
    names: Option<Vec<String>>,
    aliases: HashMap<String, String>,
    /// Deployment → the model's name (`models: [{name, deployment}]`).
    deployed: HashMap<String, String>,
}

/// `models`: see [`ModelEntries`].
fn model_entries(
    at: &str,
    entries: Option<Vec<raw::RawModelEntry>>,
    problems: &mut Vec<String>,
) -> ModelEntries {
    let Some(entries) = entries else {
        return ModelEntries::default();
    };
    let mut names = Vec::with_capacity(entries.len());
    let mut aliases = HashMap::new();
    let mut deployed = HashMap::new();
    for (j, e) in entries.into_iter().enumerate() {
        let (name, alias, deployment) = match e {
            raw::RawModelEntry::Name(n) => (n, None, None),
            raw::RawModelEntry::Detailed {
                name,
                alias,
                deployment,
            } => (name, alias, deployment),
        };
        if name.is_empty() || alias.as_deref() == Some("") || deployment.as_deref() == Some("") {
            problems.push(format!("{at}.models[{j}]: must not be empty"));
            continue;
        }
        let shown = alias.clone().unwrap_or_else(|| name.clone());
        if names.contains(&shown) {
            problems.push(format!("{at}.models[{j}]: {shown:?} is listed twice"));
            continue;
        }
        // The provider's name for it: the deployment, else the name under
        // an alias.
        match (deployment, alias) {
            (Some(d), _) => {
                deployed.insert(d.clone(), name);
                aliases.insert(shown.clone(), d);
            }
            (None, Some(a)) => {
                aliases.insert(a, name);
            }
            (None, None) => {}
        }
        names.push(shown);
    }
    ModelEntries {
        names: Some(names),
        aliases,
        deployed,
    }
}

/// A compiled set of globs, `None` for none.
fn globs(at: &str, pats: &[String], problems: &mut Vec<String>) -> Option<globset::GlobSet> {
    if pats.is_empty() {
        return None;
    }
    compile_globs(at, pats, problems)
}

/// `pats` compiled as one set (an empty list: a set matching nothing);
/// `None` after a problem, each bad glob named by its index under `at`.
pub fn compile_globs(
    at: &str,
    pats: &[String],
    problems: &mut Vec<String>,
) -> Option<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    let mut ok = true;
    for (j, p) in pats.iter().enumerate() {
        match globset::Glob::new(p) {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => {
                ok = false;
                problems.push(format!("{at}[{j}]: {e}"));
            }
        }
    }
    if !ok {
        return None;
    }
    match b.build() {
        Ok(g) => Some(g),
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            None
        }
    }
}

/// `providers[].prompt_cache`: `auto` (true) or `off` (the default).
fn prompt_cache(at: &str, value: Option<&str>, problems: &mut Vec<String>) -> bool {
    match value {
        None | Some("off") => false,
        Some("auto") => true,
        Some(other) => {
            problems.push(format!(
                "{at}.prompt_cache: unknown value {other:?} (expected auto or off)"
            ));
            false
        }
    }
}

/// Checked prices of a `pricing` map at `at` (USD per million tokens).
pub fn prices(
    at: &str,
    map: BTreeMap<String, RawPrice>,
    problems: &mut Vec<String>,
) -> HashMap<String, Price> {
    let mut out = HashMap::with_capacity(map.len());
    for (m, pr) in map {
        let all = [
            Some(pr.input),
            Some(pr.output),
            pr.cached_input,
            pr.cache_write,
            pr.cache_write_1h,
        ];
        if all.iter().flatten().any(|x| !(x.is_finite() && *x >= 0.0)) {
            problems.push(format!(
                "{at}.{m}: prices must be non-negative numbers (USD per million tokens)"
            ));
            continue;
        }
        let price = Price {
            input: pr.input,
            output: pr.output,
            cached_input: pr.cached_input,
            cache_write: pr.cache_write,
            cache_write_1h: pr.cache_write_1h,
        };
        out.insert(m, price);
    }
    out
}

/// Resolves `providers`: the providers and every id given (a logical model
/// naming a provider that has its own problem is not reported twice).
pub fn resolve(
    ps: Vec<RawProvider>,
    defaults: &ProviderDefaults,
    problems: &mut Vec<String>,
) -> (Vec<ProviderConfig>, HashSet<String>) {
    let mut providers = Vec::new();
    let mut ids = HashSet::new();
    for (i, mut p) in ps.into_iter().enumerate() {
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
        let (kind, format, responses_auto) =
            kind_and_format(&at, &p.kind, p.wire_api.as_ref(), problems);
        kind_settings(&at, kind, &KindSettings::of(&p), problems);
        let mut secrets = Vec::new();
        let vertex = super::vertex::resolve(&at, kind, &mut p, &mut secrets, problems);
        let aws = aws_credentials(&mut p, &mut secrets);
        let preset = presets::resolve(&at, kind, &p, problems);
        let base = preset
            .base_url
            .as_deref()
            .map(parse_base_url)
            .and_then(|r| {
                r.map_err(|e| problems.push(format!("{at}.base_url: {e}")))
                    .ok()
            })
            .unwrap_or(BaseUrl {
                tls: false,
                host: String::new(),
                port: 0,
                path: String::new(),
            });
        let weight = p.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            problems.push(format!("{at}.weight: must be a positive number"));
        }
        let retryable = match p.retryable_status.as_deref() {
            None => StatusSet::default_retryable(kind),
            Some(s) => StatusSet::parse(s).unwrap_or_else(|e| {
                problems.push(format!("{at}.retryable_status: {e}"));
                StatusSet::default_retryable(kind)
            }),
        };
        check_limits(&at, &p, problems);
        let headers: Vec<(String, String)> = p.headers.into_iter().chain(preset.headers).collect();
        for (name, value) in &headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                problems.push(format!("{at}.headers.{name}: not a valid header"));
            }
        }
        let mut pricing = defaults.pricing.clone();
        pricing.extend(prices(&format!("{at}.pricing"), p.pricing, problems));
        let ModelEntries {
            names: static_models,
            aliases,
            deployed,
        } = model_entries(&at, p.models, problems);
        let excluded = globs(
            &format!("{at}.excluded_models"),
            &p.excluded_models,
            problems,
        );
        if let Some(prefix) = &p.model_prefix {
            if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
                problems.push(format!(
                    "{at}.model_prefix: must be non-empty, without spaces"
                ));
            }
        }
        let ca = p.ca_file.as_deref().and_then(|path| match load_ca(path) {
            Ok(ca) => Some(std::sync::Arc::new(ca)),
            Err(e) => {
                problems.push(format!("{at}.ca_file: {e}"));
                None
            }
        });
        let proxy = proxy_url(&at, p.proxy_url.as_deref(), problems);
        let health_check = p.health_check.map(|h| health_check(&at, h, problems));
        let prompt_cache_auto = prompt_cache(&at, p.prompt_cache.as_deref(), problems);
        let key_strategy = match p.key_strategy.as_ref().map(Choice::value) {
            None => defaults.key_strategy,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                problems.push(format!("{at}.key_strategy: {e}"));
                defaults.key_strategy
            }
        };
        let configured_keys = !p.api_keys.is_empty();
        let (api_keys, key_options) = provider_keys(&at, p.api_keys, aws.as_ref(), problems);
        let azure_ad_token = p.azure_ad_token.filter(|t| !t.is_empty());
        if problems.len() > before {
            continue;
        }
        if let Some(mp) = p.models_path.as_deref() {
            if !mp.starts_with('/') {
                problems.push(format!("{at}.models_path: must start with '/'"));
            }
        }
        secrets.extend(api_keys.iter().chain(&azure_ad_token).cloned());
        providers.push(ProviderConfig {
            vertex,
            api_version: p.api_version,
            azure_ad_token,
            aws,
            secrets,
            name: p.name,
            models_path: p.models_path,
            region: p.region,
            max_concurrency: p.max_concurrency,
            max_qps: p.max_qps,
            health_check,
            prompt_cache_auto,
            enabled: !p.disabled.unwrap_or(false) && (!configured_keys || !api_keys.is_empty()),
            disabled: p.disabled.unwrap_or(false),
            aliases,
            deployed,
            excluded,
            model_prefix: p.model_prefix,
            id: p.id,
            kind,
            format,
            responses_auto,
            base,
            api_keys,
            key_options,
            key_strategy,
            weight,
            static_models,
            retryable,
            connect_timeout: Duration::from_millis(p.connect_timeout_ms.unwrap_or(5_000)),
            read_timeout: Duration::from_millis(p.read_timeout_ms.unwrap_or(60_000)),
            headers,
            preset: preset.preset,
            ca,
            proxy,
            pricing,
        });
    }
    (providers, ids)
}

/// A provider's keys and their options: `api_keys`, or for a bedrock
/// provider its credentials as its one key, so a throttled request rests
/// them like a rate-limited key (cooldown, failover first to the next
/// candidate) and `/providers` shows their state.
fn provider_keys(
    at: &str,
    keys: Vec<raw::RawApiKey>,
    aws: Option<&AwsCredentials>,
    problems: &mut Vec<String>,
) -> (Vec<String>, Vec<KeyOptions>) {
    match aws {
        Some(a) => (vec![a.access_key_id.clone()], vec![KeyOptions::default()]),
        None => api_keys(at, keys, problems),
    }
}

/// `kind: bedrock`'s credentials (both parts given or found in the
/// environment: the kind's checks report them missing), their secret
/// parts added to `secrets`.
fn aws_credentials(p: &mut RawProvider, secrets: &mut Vec<String>) -> Option<AwsCredentials> {
    let (access_key_id, secret_access_key) = (p.access_key_id.take()?, p.secret_access_key.take()?);
    let session_token = p.session_token.take().filter(|t| !t.is_empty());
    secrets.push(secret_access_key.clone());
    secrets.extend(session_token.clone());
    Some(AwsCredentials {
        access_key_id,
        secret_access_key,
        session_token,
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

/// `kind` and `wire_api`: the provider's kind, the format it is sent, and
/// whether Responses clients try its Responses API first.
fn kind_and_format(
    at: &str,
    kind: &Choice<ProviderKind>,
    wire_api: Option<&Choice<WireApi>>,
    problems: &mut Vec<String>,
) -> (ProviderKind, Format, bool) {
    let kind = kind.value().unwrap_or_else(|e| {
        problems.push(format!("{at}.kind: {e}"));
        ProviderKind::OpenAi
    });
    let wire_api = match wire_api.map(Choice::value).transpose() {
        Ok(w) => w,
        Err(e) => {
            problems.push(format!("{at}.wire_api: {e}"));
            return (kind, Format::OpenAiChat, false);
        }
    };
    let format = kind.format(wire_api).unwrap_or_else(|e| {
        problems.push(format!("{at}.wire_api: {e}"));
        Format::OpenAiChat
    });
    (kind, format, kind.responses_auto(wire_api))
}

/// `proxy_url`, parsed (a problem never echoes it: it may hold a password).
fn proxy_url(at: &str, url: Option<&str>, problems: &mut Vec<String>) -> Option<super::ProxyUrl> {
    match super::ProxyUrl::parse(url?) {
        Ok(proxy) => Some(proxy),
        Err(e) => {
            problems.push(format!("{at}.proxy_url: {e}"));
            None
        }
    }
}

/// The timeouts and the provider-wide limits must be positive.
fn check_limits(at: &str, p: &RawProvider, problems: &mut Vec<String>) {
    if p.connect_timeout_ms == Some(0) {
        problems.push(format!("{at}.connect_timeout_ms: must be positive"));
    }
    if p.read_timeout_ms == Some(0) {
        problems.push(format!("{at}.read_timeout_ms: must be positive"));
    }
    if p.max_concurrency == Some(0) {
        problems.push(format!("{at}.max_concurrency: must be at least 1"));
    }
    if p.max_qps == Some(0) {
        problems.push(format!("{at}.max_qps: must be at least 1"));
    }
}

/// The keys of one kind alone, as given.
struct KindSettings<'a> {
    api_version: Option<&'a str>,
    azure_ad_token: bool,
    models: bool,
    /// Some model names a `deployment`.
    deployment: bool,
    /// `kind: bedrock`'s credentials, each given (or found in the
    /// environment).
    access_key_id: bool,
    secret_access_key: bool,
    session_token: bool,
    region: Option<&'a str>,
    api_keys: bool,
    health_check: bool,
}

impl<'a> KindSettings<'a> {
    fn of(p: &'a RawProvider) -> Self {
        KindSettings {
            api_version: p.api_version.as_deref(),
            azure_ad_token: p.azure_ad_token.is_some(),
            models: p.models.is_some(),
            deployment: p.models.iter().flatten().any(|e| {
                matches!(
                    e,
                    raw::RawModelEntry::Detailed {
                        deployment: Some(_),
                        ..
                    }
                )
            }),
            access_key_id: p.access_key_id.is_some(),
            secret_access_key: p.secret_access_key.is_some(),
            session_token: p.session_token.is_some(),
            region: p.region.as_deref(),
            api_keys: !p.api_keys.is_empty(),
            health_check: p.health_check.is_some(),
        }
    }
}

/// Checks the keys that belong to one kind (`kind: azure`'s
/// `api_version`, `azure_ad_token`, `models[].deployment`; `kind:
/// bedrock`'s credentials and `region`).
fn kind_settings(at: &str, kind: ProviderKind, given: &KindSettings, problems: &mut Vec<String>) {
    bedrock_settings(at, kind, given, problems);
    if kind != ProviderKind::Azure {
        let only = [
            ("api_version", given.api_version.is_some()),
            ("azure_ad_token", given.azure_ad_token),
            ("models[].deployment", given.deployment),
        ];
        for (key, _) in only.iter().filter(|(_, set)| *set) {
            problems.push(format!("{at}.{key}: only for kind azure"));
        }
        return;
    }
    match given.api_version {
        None => problems.push(format!(
            "{at}.api_version: kind azure needs it (e.g. 2024-10-21, or v1)"
        )),
        // It goes into the query as written.
        Some(v)
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')) =>
        {
            problems.push(format!(
                "{at}.api_version: {v:?} is not an API version (letters, digits, '-', '.')"
            ))
        }
        Some(_) => {}
    }
    if !given.models {
        problems.push(format!(
            "{at}.models: kind azure needs its models listed (its deployment listing is not relied on)"
        ));
    }
}

/// Checks `kind: bedrock`'s keys (and that no other kind has them).
fn bedrock_settings(
    at: &str,
    kind: ProviderKind,
    given: &KindSettings,
    problems: &mut Vec<String>,
) {
    if kind != ProviderKind::Bedrock {
        let only = [
            ("access_key_id", given.access_key_id),
            ("secret_access_key", given.secret_access_key),
            ("session_token", given.session_token),
        ];
        for (key, _) in only.iter().filter(|(_, set)| *set) {
            problems.push(format!("{at}.{key}: only for kind bedrock"));
        }
        return;
    }
    if !(given.access_key_id && given.secret_access_key) {
        problems.push(format!(
            "{at}: kind bedrock needs access_key_id and secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment)"
        ));
    }
    match given.region {
        None => problems.push(format!(
            "{at}.region: kind bedrock needs its AWS region (e.g. us-east-1)"
        )),
        // It goes into the host name and the signature's scope.
        Some(r)
            if r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            problems.push(format!(
                "{at}.region: {r:?} is not an AWS region (lowercase letters, digits, '-')"
            ))
        }
        Some(_) => {}
    }
    if given.api_keys {
        problems.push(format!(
            "{at}.api_keys: kind bedrock signs its requests with AWS credentials (access_key_id, secret_access_key), not keys"
        ));
    }
    if !given.models {
        problems.push(format!(
            "{at}.models: kind bedrock needs its models listed (model ids or inference profiles; Bedrock's model list is on another API)"
        ));
    }
    if given.health_check {
        problems.push(format!(
            "{at}.health_check: not available for kind bedrock (Bedrock's runtime API has no model list to probe)"
        ));
    }
}

/// `api_keys`: each key and its options; an empty key (an unset
/// `${VAR:-}`) is left out.
fn api_keys(
    at: &str,
    keys: Vec<raw::RawApiKey>,
    problems: &mut Vec<String>,
) -> (Vec<String>, Vec<KeyOptions>) {
    let mut api_keys = Vec::new();
    let mut key_options = Vec::new();
    for (j, k) in keys.into_iter().enumerate() {
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
    (api_keys, key_options)
}

/// `health_check`: the interval and timeout of a provider's active check.
fn health_check(at: &str, h: raw::RawHealthCheck, problems: &mut Vec<String>) -> HealthCheck {
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
}
