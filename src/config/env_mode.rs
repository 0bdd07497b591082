//! APIProxy's environment configuration, for running without a file:
//! `LLM_PROVIDERS=a,b` and per provider `LLM_PROVIDER_{id}_NAME`,
//! `_BASE_URL`, `_API_KEY` (comma-separated for several), `_MODELS_PATH`
//! (relative to `_BASE_URL`, as APIProxy reads it), `_WEIGHT`,
//! `_RETRYABLE_STATUS_CODES`, `_REGION`, `_MAX_QPS`; plus `REDIS_URL`,
//! `LOG_LEVEL` (APIProxy's `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`,
//! any case), `MODELS_CACHE_TTL` (seconds), `APIPROXY_AUTH_TOKEN` (clients
//! send `Bearer base64(token)`, which also reads the inspection endpoints)
//! and `APIPROXY_ADMIN_KEY`. `_KIND` (openai, anthropic, gemini) is ours;
//! without it the kind is guessed from the base URL's host, else openai
//! (APIProxy's providers are OpenAI-compatible). The gateway listens on
//! `APIPROXY_LISTEN` (default 127.0.0.1:8080; without a token, loopback only).
//!
//! The variables become the same document a file would hold and go through
//! the same validation; problems name the variable, never its value.

use base64::Engine as _;
use serde_yaml::{Mapping, Value};

use super::var_expansion::EnvValue;

/// The document the environment describes, the variables it read (to
/// redact from problem lines), and how provider key paths map to variable
/// names. `None` when `LLM_PROVIDERS` is unset.
pub struct EnvDocument {
    pub doc: Value,
    /// `MASK_AS_BROWSER` (default on in this mode, as in APIProxy):
    /// `User-Agent`, `Origin`, `Referer` as given by `MASK_USER_AGENT`,
    /// `MASK_ORIGIN`, `MASK_REFERER`; `None` when masking is off.
    pub mask: Option<[Option<http::HeaderValue>; 3]>,
    pub used: Vec<EnvValue>,
    /// `(providers[i].key, VARIABLE)` pairs for problem lines.
    pub names: Vec<(String, String)>,
    pub problems: Vec<String>,
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// The variables read so far (their values are redacted from problem
/// lines), the key path each became, and the problems found.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    used: Vec<EnvValue>,
    names: Vec<(String, String)>,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// `var`'s name and value, noted as used.
    fn get(&mut self, var: &str) -> Option<(String, String)> {
        let v = (self.lookup)(var)?;
        self.used.push(EnvValue {
            name: var.to_owned(),
            value: v.clone(),
        });
        Some((var.to_owned(), v))
    }

    /// A provider's `LLM_PROVIDER_{id}_{field}`, as listed or upper case.
    fn provider_var(&mut self, id: &str, field: &str) -> Option<(String, String)> {
        self.get(&format!("LLM_PROVIDER_{id}_{field}"))
            .or_else(|| self.get(&format!("LLM_PROVIDER_{}_{field}", id.to_ascii_uppercase())))
    }

    /// `value` at `key` of `map`, its problems named `name` (the variable).
    fn put(&mut self, map: &mut Mapping, at: &str, key: &str, name: String, value: Value) {
        map.insert(s(key), value);
        let path = if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        };
        self.names.push((path, name));
    }

    /// A whole number from `var`, or a problem saying what it must be.
    fn number(&mut self, got: Option<(String, String)>, what: &str) -> Option<(String, u64)> {
        let (name, v) = got?;
        match v.trim().parse::<u64>() {
            Ok(n) => Some((name, n)),
            Err(_) => {
                self.problems
                    .push(format!("{name}: not a whole number{what}"));
                None
            }
        }
    }
}

/// Reads the APIProxy variables through `lookup`.
pub fn document(lookup: &dyn Fn(&str) -> Option<String>) -> Option<EnvDocument> {
    let list = lookup("LLM_PROVIDERS")?;
    let mut r = Reader {
        lookup,
        used: Vec::new(),
        names: Vec::new(),
        problems: Vec::new(),
    };
    let providers: Vec<Value> = list
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .enumerate()
        .map(|(i, id)| provider(&mut r, i, id))
        .collect();
    if providers.is_empty() {
        r.problems
            .push("LLM_PROVIDERS: names no provider".to_owned());
    }
    let mut doc = Mapping::new();
    let mut server = Mapping::new();
    let listen = r
        .get("APIPROXY_LISTEN")
        .map(|(_, v)| v)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    r.put(
        &mut server,
        "server",
        "listen",
        "APIPROXY_LISTEN".into(),
        s(&listen),
    );
    doc.insert(s("server"), Value::Mapping(server));
    for (section, map) in [
        ("log", log_section(&mut r)),
        ("store", store_section(&mut r)),
        ("auth", auth_section(&mut r)),
    ] {
        if !map.is_empty() {
            doc.insert(s(section), Value::Mapping(map));
        }
    }
    let mask = browser_mask(&mut r);
    doc.insert(s("providers"), Value::Sequence(providers));
    Some(EnvDocument {
        mask,
        doc: Value::Mapping(doc),
        used: r.used,
        names: r.names,
        problems: r.problems,
    })
}

/// One provider of `LLM_PROVIDERS` from its `LLM_PROVIDER_{id}_*` variables.
fn provider(r: &mut Reader<'_>, i: usize, id: &str) -> Value {
    let at = format!("providers[{i}]");
    let mut p = Mapping::new();
    r.put(&mut p, &at, "id", "LLM_PROVIDERS".into(), s(id));
    let base = r.provider_var(id, "BASE_URL");
    match &base {
        Some((name, url)) => r.put(&mut p, &at, "base_url", name.clone(), s(url)),
        None => r
            .problems
            .push(format!("LLM_PROVIDER_{id}_BASE_URL: is not set")),
    }
    let base = base.map(|b| b.1).unwrap_or_default();
    match r.provider_var(id, "KIND") {
        Some((name, k)) => r.put(&mut p, &at, "kind", name, s(&k)),
        None => {
            p.insert(s("kind"), s(guess_kind(&base)));
        }
    }
    if let Some((name, keys)) = r.provider_var(id, "API_KEY") {
        let keys: Vec<Value> = keys.split(',').map(|k| s(k.trim())).collect();
        r.put(&mut p, &at, "api_keys", name, Value::Sequence(keys));
    }
    for (field, key) in [
        ("NAME", "name"),
        ("REGION", "region"),
        ("RETRYABLE_STATUS_CODES", "retryable_status"),
    ] {
        if let Some((name, v)) = r.provider_var(id, field) {
            r.put(&mut p, &at, key, name, s(&v));
        }
    }
    if let Some((name, path)) = r.provider_var(id, "MODELS_PATH") {
        r.put(
            &mut p,
            &at,
            "models_path",
            name,
            s(&models_path_under(&base, &path)),
        );
    }
    let qps = r.provider_var(id, "MAX_QPS");
    if let Some((name, q)) = r.number(qps, "") {
        r.put(&mut p, &at, "max_qps", name, Value::from(q));
    }
    if let Some((name, w)) = r.provider_var(id, "WEIGHT") {
        match w.trim().parse::<f64>() {
            Ok(w) => r.put(&mut p, &at, "weight", name, Value::from(w)),
            Err(_) => r.problems.push(format!("{name}: not a number")),
        }
    }
    Value::Mapping(p)
}

/// `LOG_LEVEL` (APIProxy's names too) and `LOG_TIMEZONE`.
fn log_section(r: &mut Reader<'_>) -> Mapping {
    let mut log = Mapping::new();
    if let Some((name, level)) = r.get("LOG_LEVEL") {
        r.put(&mut log, "log", "level", name, s(&log_level(&level)));
    }
    if let Some((name, tz)) = r.get("LOG_TIMEZONE") {
        r.put(&mut log, "log", "timezone", name, s(tz.trim()));
    }
    log
}

/// `REDIS_URL` and `MODELS_CACHE_TTL`.
fn store_section(r: &mut Reader<'_>) -> Mapping {
    let mut store = Mapping::new();
    if let Some((name, url)) = r.get("REDIS_URL") {
        r.put(&mut store, "store", "redis_url", name, s(&url));
    }
    let ttl = r.get("MODELS_CACHE_TTL");
    if let Some((name, t)) = r.number(ttl, " of seconds") {
        r.put(
            &mut store,
            "store",
            "models_cache_ttl_seconds",
            name,
            Value::from(t),
        );
    }
    store
}

/// `APIPROXY_AUTH_TOKEN` (a client key of what APIProxy's clients send,
/// which also reads the inspection endpoints) and `APIPROXY_ADMIN_KEY`.
fn auth_section(r: &mut Reader<'_>) -> Mapping {
    let mut auth = Mapping::new();
    if let Some((name, token)) = r.get("APIPROXY_AUTH_TOKEN") {
        if token.is_empty() {
            r.problems.push(format!("{name}: is empty"));
        } else {
            // APIProxy's clients send the token base64-encoded; the key is
            // what they send. The encoded form is a secret like the token.
            let sent = base64::engine::general_purpose::STANDARD.encode(token.as_bytes());
            r.used.push(EnvValue {
                name: name.clone(),
                value: sent.clone(),
            });
            let mut key = Mapping::new();
            key.insert(s("name"), s("apiproxy"));
            key.insert(s("key"), s(&sent));
            let keys = Value::Sequence(vec![Value::Mapping(key)]);
            r.put(&mut auth, "auth", "keys", name, keys);
            auth.insert(s("inspection"), s("clients"));
        }
    }
    if let Some((name, key)) = r.get("APIPROXY_ADMIN_KEY") {
        r.put(
            &mut auth,
            "auth",
            "admin_keys",
            name,
            Value::Sequence(vec![s(&key)]),
        );
    }
    auth
}

/// `MASK_AS_BROWSER` (on unless `false`, `0` or `no`) and the headers it
/// sends; a value that cannot be a header is a problem naming its variable.
fn browser_mask(r: &mut Reader<'_>) -> Option<[Option<http::HeaderValue>; 3]> {
    if let Some((_, on)) = r.get("MASK_AS_BROWSER") {
        if matches!(
            on.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        ) {
            return None;
        }
    }
    let mut header = |var: &str| {
        let (name, v) = r.get(var)?;
        let value = http::HeaderValue::from_str(v.trim()).ok();
        if value.is_none() {
            r.problems.push(format!("{name}: not a valid header value"));
        }
        value
    };
    Some([
        header("MASK_USER_AGENT"),
        header("MASK_ORIGIN"),
        header("MASK_REFERER"),
    ])
}

/// APIProxy's log levels (Python's names, any case) as ours; anything else
/// is passed on for validation to name.
fn log_level(level: &str) -> String {
    match level.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        // No level above error here: CRITICAL logs what ERROR logs.
        "critical" | "fatal" => "error".to_owned(),
        other => other.to_owned(),
    }
}

/// APIProxy's `_MODELS_PATH` is relative to the base URL; ours is the path
/// from the host's root. The seed's default `/v1/models` under a base URL
/// that already ends in `/v1` names `/v1/models`, not `/v1/v1/models`.
fn models_path_under(base_url: &str, path: &str) -> String {
    let base = url::Url::parse(base_url)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let last = base.rsplit('/').next().unwrap_or_default();
    let first = path[1..].split('/').next().unwrap_or_default();
    if !last.is_empty() && last == first {
        format!("{base}{}", &path[1 + first.len()..])
    } else {
        format!("{base}{path}")
    }
}

/// The provider kind a base URL's host suggests.
fn guess_kind(base_url: &str) -> &'static str {
    let host = url::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if host.ends_with("anthropic.com") {
        "anthropic"
    } else if host.ends_with("generativelanguage.googleapis.com") {
        "gemini"
    } else {
        "openai"
    }
}

/// A problem line with its key path replaced by the variable it came from.
pub fn rename(line: &str, names: &[(String, String)]) -> String {
    // Longest key first, so `providers[1].base_url` is not taken for `providers[1]`.
    let mut best: Option<&(String, String)> = None;
    for pair in names {
        if line.starts_with(pair.0.as_str()) && best.is_none_or(|b| pair.0.len() > b.0.len()) {
            best = Some(pair);
        }
    }
    match best {
        Some((key, var)) => format!("{var}{}", &line[key.len()..]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn providers_from_the_environment() {
        let d = document(&env(&[
            ("LLM_PROVIDERS", "openai, claude"),
            ("LLM_PROVIDER_openai_BASE_URL", "https://api.openai.com"),
            ("LLM_PROVIDER_openai_API_KEY", "sk-1,sk-2"),
            ("LLM_PROVIDER_openai_WEIGHT", "3"),
            ("LLM_PROVIDER_CLAUDE_BASE_URL", "https://api.anthropic.com"),
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
        ]))
        .unwrap();
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let p = &d.doc["providers"];
        assert_eq!(p[0]["api_keys"][1], "sk-2");
        assert_eq!(p[0]["weight"].as_f64(), Some(3.0));
        assert_eq!(p[1]["kind"], "anthropic");
        assert_eq!(d.doc["store"]["redis_url"], "redis://127.0.0.1:6379/0");
        assert!(document(&env(&[])).is_none());
    }

    #[test]
    fn apiproxy_variables_become_their_keys() {
        let d = document(&env(&[
            ("LLM_PROVIDERS", "a"),
            ("LLM_PROVIDER_a_BASE_URL", "https://h/v1"),
            ("LLM_PROVIDER_a_MODELS_PATH", "/v1/models"),
            ("LLM_PROVIDER_a_REGION", "eu-west"),
            ("LLM_PROVIDER_a_MAX_QPS", "50"),
            ("MODELS_CACHE_TTL", "120"),
            ("LOG_LEVEL", "Warning"),
            ("APIPROXY_AUTH_TOKEN", "timeline2"),
            ("APIPROXY_ADMIN_KEY", "admin-key-0123456789abcdef0123456789"),
        ]))
        .unwrap();
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let p = &d.doc["providers"][0];
        assert_eq!(
            p["models_path"], "/v1/models",
            "not doubled under a /v1 base"
        );
        assert_eq!(p["region"], "eu-west");
        assert_eq!(p["max_qps"].as_u64(), Some(50));
        assert_eq!(
            d.doc["store"]["models_cache_ttl_seconds"].as_u64(),
            Some(120)
        );
        assert_eq!(d.doc["log"]["level"], "warn");
        // Clients send base64("timeline2").
        assert_eq!(d.doc["auth"]["keys"][0]["key"], "dGltZWxpbmUy");
        assert_eq!(d.doc["auth"]["inspection"], "clients");
        assert_eq!(
            d.doc["auth"]["admin_keys"][0],
            "admin-key-0123456789abcdef0123456789"
        );
        // Both the token and what clients send are redacted from problems.
        assert!(d.used.iter().any(|u| u.value == "dGltZWxpbmUy"));
    }

    #[test]
    fn models_paths_are_relative_to_the_base_url() {
        assert_eq!(models_path_under("https://h/v1", "/models"), "/v1/models");
        assert_eq!(
            models_path_under("https://h/v1/", "/v1/models"),
            "/v1/models"
        );
        assert_eq!(models_path_under("https://h", "/v1/models"), "/v1/models");
        assert_eq!(
            models_path_under("https://h/api/v1", "/v1/models"),
            "/api/v1/models"
        );
        assert_eq!(
            models_path_under("https://h/openai", "models"),
            "/openai/models"
        );
        assert_eq!(
            models_path_under("https://h/v1", "/v1beta/models"),
            "/v1/v1beta/models"
        );
    }

    #[test]
    fn browser_masking_is_on_unless_turned_off() {
        fn with(extra: &[(&'static str, &'static str)]) -> EnvDocument {
            let mut all = vec![
                ("LLM_PROVIDERS", "a"),
                ("LLM_PROVIDER_a_BASE_URL", "https://h/v1"),
            ];
            all.extend_from_slice(extra);
            let lookup = move |n: &str| {
                all.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            };
            document(&lookup).unwrap()
        }
        assert!(matches!(with(&[]).mask, Some([None, None, None])));
        assert!(with(&[("MASK_AS_BROWSER", "False")]).mask.is_none());
        let given = with(&[("MASK_USER_AGENT", "bot/1"), ("MASK_REFERER", "https://r/")]);
        let [ua, origin, referer] = given.mask.unwrap();
        assert_eq!(ua.unwrap(), "bot/1");
        assert!(origin.is_none());
        assert_eq!(referer.unwrap(), "https://r/");
        let bad = with(&[("MASK_ORIGIN", "a\nb")]);
        assert!(bad
            .problems
            .iter()
            .any(|p| p == "MASK_ORIGIN: not a valid header value"));
    }

    #[test]
    fn seed_log_levels_are_ours() {
        for (seed, ours) in [
            ("DEBUG", "debug"),
            ("info", "info"),
            ("WARNING", "warn"),
            ("Error", "error"),
            ("CRITICAL", "error"),
            ("verbose", "verbose"),
        ] {
            assert_eq!(log_level(seed), ours, "{seed}");
        }
    }

    #[test]
    fn problems_name_the_variable() {
        let names = vec![(
            "providers[0].base_url".to_owned(),
            "LLM_PROVIDER_x_BASE_URL".to_owned(),
        )];
        assert_eq!(
            rename("providers[0].base_url: not a URL", &names),
            "LLM_PROVIDER_x_BASE_URL: not a URL"
        );
        let d = document(&env(&[
            ("LLM_PROVIDERS", "x"),
            ("LLM_PROVIDER_x_WEIGHT", "heavy"),
        ]))
        .unwrap();
        assert!(d
            .problems
            .iter()
            .any(|p| p == "LLM_PROVIDER_x_BASE_URL: is not set"));
        assert!(d
            .problems
            .iter()
            .any(|p| p == "LLM_PROVIDER_x_WEIGHT: not a number"));
    }
}
