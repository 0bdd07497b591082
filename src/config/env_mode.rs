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

/// Reads the APIProxy variables through `lookup`.
pub fn document(lookup: &dyn Fn(&str) -> Option<String>) -> Option<EnvDocument> {
    let list = lookup("LLM_PROVIDERS")?;
    let mut used = Vec::new();
    let mut names = Vec::new();
    let mut problems = Vec::new();
    let get = |var: String, used: &mut Vec<EnvValue>| -> Option<(String, String)> {
        let v = lookup(&var)?;
        used.push(EnvValue {
            name: var.clone(),
            value: v.clone(),
        });
        Some((var, v))
    };
    let mut providers = Vec::new();
    for (i, id) in list
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .enumerate()
    {
        // APIProxy spells the id as listed; upper case is accepted too.
        let var = |field: &str, used: &mut Vec<EnvValue>| {
            get(format!("LLM_PROVIDER_{id}_{field}"), used).or_else(|| {
                get(
                    format!("LLM_PROVIDER_{}_{field}", id.to_ascii_uppercase()),
                    used,
                )
            })
        };
        let at = format!("providers[{i}]");
        let mut p = Mapping::new();
        p.insert(s("id"), s(id));
        names.push((format!("{at}.id"), "LLM_PROVIDERS".to_owned()));
        let base = var("BASE_URL", &mut used);
        match &base {
            Some((name, url)) => {
                p.insert(s("base_url"), s(url));
                names.push((format!("{at}.base_url"), name.clone()));
            }
            None => problems.push(format!("LLM_PROVIDER_{id}_BASE_URL: is not set")),
        }
        let kind = match var("KIND", &mut used) {
            Some((name, k)) => {
                names.push((format!("{at}.kind"), name));
                k
            }
            None => guess_kind(base.as_ref().map_or("", |b| b.1.as_str())).to_owned(),
        };
        p.insert(s("kind"), s(&kind));
        if let Some((name, keys)) = var("API_KEY", &mut used) {
            let keys: Vec<Value> = keys.split(',').map(|k| s(k.trim())).collect();
            p.insert(s("api_keys"), Value::Sequence(keys));
            names.push((format!("{at}.api_keys"), name));
        }
        if let Some((name, n)) = var("NAME", &mut used) {
            p.insert(s("name"), s(&n));
            names.push((format!("{at}.name"), name));
        }
        if let Some((name, path)) = var("MODELS_PATH", &mut used) {
            let base = base.as_ref().map_or("", |b| b.1.as_str());
            p.insert(s("models_path"), s(&models_path_under(base, &path)));
            names.push((format!("{at}.models_path"), name));
        }
        if let Some((name, region)) = var("REGION", &mut used) {
            p.insert(s("region"), s(&region));
            names.push((format!("{at}.region"), name));
        }
        if let Some((name, q)) = var("MAX_QPS", &mut used) {
            match q.trim().parse::<u32>() {
                Ok(q) => {
                    p.insert(s("max_qps"), Value::from(q));
                    names.push((format!("{at}.max_qps"), name));
                }
                Err(_) => problems.push(format!("{name}: not a whole number")),
            }
        }
        if let Some((name, w)) = var("WEIGHT", &mut used) {
            match w.trim().parse::<f64>() {
                Ok(w) => {
                    p.insert(s("weight"), Value::from(w));
                    names.push((format!("{at}.weight"), name));
                }
                Err(_) => problems.push(format!("{name}: not a number")),
            }
        }
        if let Some((name, codes)) = var("RETRYABLE_STATUS_CODES", &mut used) {
            p.insert(s("retryable_status"), s(&codes));
            names.push((format!("{at}.retryable_status"), name));
        }
        providers.push(Value::Mapping(p));
    }
    if providers.is_empty() {
        problems.push("LLM_PROVIDERS: names no provider".to_owned());
    }
    let mut doc = Mapping::new();
    let mut server = Mapping::new();
    let listen = get("APIPROXY_LISTEN".into(), &mut used)
        .map(|(_, v)| v)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    server.insert(s("listen"), s(&listen));
    names.push(("server.listen".into(), "APIPROXY_LISTEN".into()));
    doc.insert(s("server"), Value::Mapping(server));
    let mut log = Mapping::new();
    if let Some((_, level)) = get("LOG_LEVEL".into(), &mut used) {
        log.insert(s("level"), s(&log_level(&level)));
        names.push(("log.level".into(), "LOG_LEVEL".into()));
    }
    if let Some((name, tz)) = get("LOG_TIMEZONE".into(), &mut used) {
        log.insert(s("timezone"), s(tz.trim()));
        names.push(("log.timezone".into(), name));
    }
    if !log.is_empty() {
        doc.insert(s("log"), Value::Mapping(log));
    }
    let mut store = Mapping::new();
    if let Some((_, url)) = get("REDIS_URL".into(), &mut used) {
        store.insert(s("redis_url"), s(&url));
        names.push(("store.redis_url".into(), "REDIS_URL".into()));
    }
    if let Some((name, ttl)) = get("MODELS_CACHE_TTL".into(), &mut used) {
        match ttl.trim().parse::<u64>() {
            Ok(t) => {
                store.insert(s("models_cache_ttl_seconds"), Value::from(t));
                names.push(("store.models_cache_ttl_seconds".into(), name));
            }
            Err(_) => problems.push(format!("{name}: not a whole number of seconds")),
        }
    }
    if !store.is_empty() {
        doc.insert(s("store"), Value::Mapping(store));
    }
    let mut auth = Mapping::new();
    if let Some((name, token)) = get("APIPROXY_AUTH_TOKEN".into(), &mut used) {
        if token.is_empty() {
            problems.push(format!("{name}: is empty"));
        } else {
            // APIProxy's clients send the token base64-encoded; the key is
            // what they send. The encoded form is a secret like the token.
            let sent = base64::engine::general_purpose::STANDARD.encode(token.as_bytes());
            used.push(EnvValue {
                name: name.clone(),
                value: sent.clone(),
            });
            let mut key = Mapping::new();
            key.insert(s("name"), s("apiproxy"));
            key.insert(s("key"), s(&sent));
            auth.insert(s("keys"), Value::Sequence(vec![Value::Mapping(key)]));
            auth.insert(s("inspection"), s("clients"));
            names.push(("auth.keys".into(), name));
        }
    }
    if let Some((name, key)) = get("APIPROXY_ADMIN_KEY".into(), &mut used) {
        auth.insert(s("admin_keys"), Value::Sequence(vec![s(&key)]));
        names.push(("auth.admin_keys".into(), name));
    }
    if !auth.is_empty() {
        doc.insert(s("auth"), Value::Mapping(auth));
    }
    let mask = browser_mask(&mut |v| get(v.to_owned(), &mut used), &mut problems);
    doc.insert(s("providers"), Value::Sequence(providers));
    Some(EnvDocument {
        mask,
        doc: Value::Mapping(doc),
        used,
        names,
        problems,
    })
}

/// `MASK_AS_BROWSER` (on unless `false`, `0` or `no`) and the headers it
/// sends; a value that cannot be a header is a problem naming its variable.
fn browser_mask(
    get: &mut dyn FnMut(&str) -> Option<(String, String)>,
    problems: &mut Vec<String>,
) -> Option<[Option<http::HeaderValue>; 3]> {
    if let Some((_, on)) = get("MASK_AS_BROWSER") {
        if matches!(
            on.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        ) {
            return None;
        }
    }
    let mut header = |var: &str| {
        let (name, v) = get(var)?;
        let value = http::HeaderValue::from_str(v.trim()).ok();
        if value.is_none() {
            problems.push(format!("{name}: not a valid header value"));
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
