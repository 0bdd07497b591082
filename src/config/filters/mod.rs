//! Request filters: operator rules from the YAML files of `filters_dir`
//! (default `filters/` beside the config), loaded and validated with the
//! config (at start, by `-t` and on SIGHUP).
//!
//! - **Payload rules** (as ai-proxy has them): `default` sets a field when
//!   it is absent, `override` always sets it, `filter` removes it; each
//!   rule matches models by glob and optionally the client's or the
//!   provider's format, and names fields by dotted path. They run in that
//!   order on the body the provider receives (after translation).
//! - **Header rules**: `remove`, `set`, `add` upstream request headers per
//!   provider and model.
//! - **Browser masking** (as APIProxy's `MASK_AS_BROWSER`): per provider, a
//!   browser's `User-Agent`, `Origin`, `Referer` and `Accept-Language`.

mod path;
mod raw;
mod splice;

use std::path::{Path, PathBuf};

use apiproxy_translate::Format;
use bytes::Bytes;
use globset::{Glob, GlobSet, GlobSetBuilder};
use http::{HeaderName, HeaderValue};
use serde_json::Value;

pub use path::DottedPath;

use crate::config::choices::Choice;
use crate::config::providers::ProviderConfig;

/// The JSON Schema of one filter file (`apiproxy schema filters`), derived
/// from the types the files are parsed into.
pub fn json_schema() -> Value {
    crate::config::raw::titled(
        schemars::schema_for!(raw::RawFilterFile).to_value(),
        "apiproxy filter rules",
        "One file of filters_dir: payload rules, header rules and browser masking.",
    )
}

/// The browser a masked request claims to come from.
pub const BROWSER_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const BROWSER_ACCEPT_LANGUAGE: &str = "en-US,en;q=0.9";

/// Headers no rule may touch: they frame the request itself.
const FRAMING_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

/// Every rule of every filter file, resolved.
#[derive(Debug, Default)]
pub struct FilterSet {
    defaults: Vec<PayloadRule<Value>>,
    overrides: Vec<PayloadRule<Value>>,
    removals: Vec<PayloadRule<()>>,
    headers: Vec<HeaderRule>,
    masks: Vec<MaskRule>,
    /// The files the rules came from (for the start-up log line).
    pub files: Vec<PathBuf>,
}

/// Which requests a rule applies to.
#[derive(Debug)]
struct Match {
    /// `None`: every model.
    models: Option<GlobSet>,
    clients: Vec<Format>,
    providers_fmt: Vec<Format>,
    /// Provider ids; empty: every provider.
    provider_ids: Vec<String>,
}

impl Match {
    fn applies(&self, t: &Target<'_>) -> bool {
        self.models
            .as_ref()
            .is_none_or(|g| g.is_match(t.model) || g.is_match(t.requested))
            && (self.clients.is_empty() || self.clients.contains(&t.client))
            && (self.providers_fmt.is_empty() || self.providers_fmt.contains(&t.provider.format))
            && (self.provider_ids.is_empty() || self.provider_ids.contains(&t.provider.id))
    }
}

#[derive(Debug)]
struct PayloadRule<T> {
    when: Match,
    params: Vec<(DottedPath, T)>,
}

#[derive(Debug, Clone)]
enum HeaderOp {
    Remove(HeaderName),
    Set(HeaderName, HeaderValue),
    Add(HeaderName, HeaderValue),
}

#[derive(Debug)]
struct HeaderRule {
    when: Match,
    ops: Vec<HeaderOp>,
}

#[derive(Debug)]
struct MaskRule {
    provider_ids: Vec<String>,
    user_agent: Option<HeaderValue>,
    origin: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    /// `Origin` and `Referer` of the provider's own site when not given (a
    /// filter file's `mask`); APIProxy's masking sends them only when set.
    site_headers: bool,
}

/// The attempt a rule is matched against.
pub struct Target<'a> {
    pub client: Format,
    pub provider: &'a ProviderConfig,
    /// The model name sent to the provider.
    pub model: &'a str,
    /// The name the client asked for (a logical model, `provider/model`...).
    pub requested: &'a str,
    /// Top-level fields the translator filled with its own default (an
    /// OpenAI client's request to Claude gets `max_tokens`): `default`
    /// rules set them as if absent.
    pub defaulted: &'a [&'static str],
}

/// Header changes for one attempt, applied after the gateway's own headers.
#[derive(Debug, Default, Clone)]
pub struct HeaderEdits(Vec<HeaderOp>);

impl HeaderEdits {
    /// How many edits: at most this many headers are added.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Applies the edits in order to an upstream request header.
    pub fn apply(&self, h: &mut pingora::http::RequestHeader) -> pingora::Result<()> {
        for op in &self.0 {
            match op {
                HeaderOp::Remove(n) => {
                    h.remove_header(n);
                }
                HeaderOp::Set(n, v) => h.insert_header(n.clone(), v.clone())?,
                HeaderOp::Add(n, v) => {
                    h.append_header(n.clone(), v.clone())?;
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FilterSet {
    /// Whether no rule is loaded.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty()
            && self.overrides.is_empty()
            && self.removals.is_empty()
            && self.headers.is_empty()
            && self.masks.is_empty()
    }

    /// Applies the payload rules (default, override, filter, in that
    /// order) to the encoded body; a body no rule matches is returned as it
    /// is, without being read again. Each rule edits the bytes in place
    /// (`splice.rs`): the body is never decoded into a tree, and what no
    /// rule names is copied as it came.
    pub fn apply_payload(&self, body: Bytes, t: &Target<'_>) -> Result<Bytes, String> {
        use splice::Op;
        let matching =
            |rules: &[PayloadRule<Value>]| -> bool { rules.iter().any(|r| r.when.applies(t)) };
        if !matching(&self.defaults)
            && !matching(&self.overrides)
            && !self.removals.iter().any(|r| r.when.applies(t))
        {
            return Ok(body);
        }
        let mut edited: Option<String> = None;
        {
            let text = std::str::from_utf8(&body)
                .map_err(|e| format!("filters: body is not JSON: {e}"))?;
            let mut run = |p: &DottedPath, op: Op<'_>| -> Result<(), String> {
                let current = edited.as_deref().unwrap_or(text);
                if let Some(next) = splice::apply(current, p.segments(), op)? {
                    // The previous copy goes as the next is made.
                    edited = Some(next);
                }
                Ok(())
            };
            for r in self.defaults.iter().filter(|r| r.when.applies(t)) {
                for (p, value) in &r.params {
                    let filled =
                        matches!(p.segments(), [top] if t.defaulted.contains(&top.as_str()));
                    run(
                        p,
                        if filled {
                            Op::Override(value)
                        } else {
                            Op::Default(value)
                        },
                    )?;
                }
            }
            for r in self.overrides.iter().filter(|r| r.when.applies(t)) {
                for (p, value) in &r.params {
                    run(p, Op::Override(value))?;
                }
            }
            for r in self.removals.iter().filter(|r| r.when.applies(t)) {
                for (p, ()) in &r.params {
                    run(p, Op::Remove)?;
                }
            }
        }
        Ok(edited.map_or(body, Bytes::from))
    }

    /// APIProxy's `MASK_AS_BROWSER` for every provider: a browser's
    /// `User-Agent` (or `user_agent`) and `Accept-Language`, and `Origin`
    /// and `Referer` only when given.
    pub fn add_browser_mask(
        &mut self,
        user_agent: Option<HeaderValue>,
        origin: Option<HeaderValue>,
        referer: Option<HeaderValue>,
    ) {
        self.masks.push(MaskRule {
            provider_ids: Vec::new(),
            user_agent,
            origin,
            referer,
            site_headers: false,
        });
    }

    /// The header edits for one attempt: browser masking first, then the
    /// header rules in file order (so an explicit rule wins).
    pub fn header_edits(&self, t: &Target<'_>) -> Option<HeaderEdits> {
        let mut ops = Vec::new();
        for m in &self.masks {
            if !(m.provider_ids.is_empty() || m.provider_ids.contains(&t.provider.id)) {
                continue;
            }
            let site = provider_origin(t.provider);
            let ua = m
                .user_agent
                .clone()
                .unwrap_or(HeaderValue::from_static(BROWSER_USER_AGENT));
            let origin = m
                .origin
                .clone()
                .or_else(|| m.site_headers.then(|| HeaderValue::from_str(&site).ok())?);
            let referer = m.referer.clone().or_else(|| {
                m.site_headers
                    .then(|| HeaderValue::from_str(&format!("{site}/")).ok())?
            });
            ops.push(HeaderOp::Set(http::header::USER_AGENT, ua));
            ops.extend(origin.map(|o| HeaderOp::Set(http::header::ORIGIN, o)));
            ops.extend(referer.map(|r| HeaderOp::Set(http::header::REFERER, r)));
            ops.push(HeaderOp::Set(
                http::header::ACCEPT_LANGUAGE,
                HeaderValue::from_static(BROWSER_ACCEPT_LANGUAGE),
            ));
        }
        for r in self.headers.iter().filter(|r| r.when.applies(t)) {
            ops.extend(r.ops.iter().cloned());
        }
        (!ops.is_empty()).then_some(HeaderEdits(ops))
    }
}

/// `https://host[:port]` of a provider: the site a browser would be on.
fn provider_origin(p: &ProviderConfig) -> String {
    let b = &p.base;
    let scheme = if b.tls { "https" } else { "http" };
    let default_port = if b.tls { 443 } else { 80 };
    if b.port == default_port {
        format!("{scheme}://{}", b.host)
    } else {
        format!("{scheme}://{}:{}", b.host, b.port)
    }
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (in name order). A missing
/// directory is no rules unless it was configured explicitly. Problems
/// name the file and the key path.
pub fn load_dir(
    dir: &Path,
    explicit: bool,
    provider_ids: &[String],
    expand: &mut dyn FnMut(&mut serde_yaml::Value, String, &mut Vec<String>),
) -> Result<FilterSet, Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(_) if !explicit => return Ok(FilterSet::default()),
        Err(e) => {
            return Err(vec![format!(
                "filters_dir: cannot read {}: {e}",
                dir.display()
            )])
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut set = FilterSet::default();
    let mut problems = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let before = problems.len();
        match std::fs::read_to_string(&file) {
            Ok(text) => load_file(&text, &name, provider_ids, expand, &mut set, &mut problems),
            Err(e) => problems.push(format!("{name}: cannot read: {e}")),
        }
        if problems.len() == before {
            set.files.push(file);
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

/// Parses one rule file into `set`, noting problems as `FILE: key.path: ...`.
pub fn load_file(
    text: &str,
    name: &str,
    provider_ids: &[String],
    expand: &mut dyn FnMut(&mut serde_yaml::Value, String, &mut Vec<String>),
    set: &mut FilterSet,
    problems: &mut Vec<String>,
) {
    let mut value: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{name}: yaml: {e}"));
            return;
        }
    };
    if value.is_null() {
        return; // a file of comments only
    }
    let mut local = Vec::new();
    expand(&mut value, String::new(), &mut local);
    if !local.is_empty() {
        problems.extend(local.into_iter().map(|p| format!("{name}: {p}")));
        return;
    }
    let file: raw::RawFilterFile = match serde_path_to_error::deserialize(value) {
        Ok(f) => f,
        Err(e) => {
            let path = e.path().to_string();
            problems.push(format!("{name}: {path}: {}", e.into_inner()));
            return;
        }
    };
    let mut local = Vec::new();
    resolve_file(file, provider_ids, set, &mut local);
    problems.extend(local.into_iter().map(|p| format!("{name}: {p}")));
}

fn resolve_match(
    at: &str,
    w: raw::RawMatch,
    provider_ids: &[String],
    problems: &mut Vec<String>,
) -> Match {
    let models = w.models.map(|pats| {
        let mut b = GlobSetBuilder::new();
        for (i, p) in pats.iter().enumerate() {
            match Glob::new(p) {
                Ok(g) => {
                    b.add(g);
                }
                Err(e) => problems.push(format!("{at}.models[{i}]: {e}")),
            }
        }
        b.build().unwrap_or_else(|e| {
            problems.push(format!("{at}.models: {e}"));
            GlobSet::empty()
        })
    });
    let formats = |key: &str, list: Vec<Choice<Format>>, problems: &mut Vec<String>| {
        list.iter()
            .enumerate()
            .filter_map(|(i, f)| {
                f.value()
                    .map_err(|e| problems.push(format!("{at}.{key}[{i}]: {e}")))
                    .ok()
            })
            .collect::<Vec<Format>>()
    };
    let clients = formats("client", w.client, problems);
    let providers_fmt = formats("provider", w.provider, problems);
    check_ids(
        &format!("{at}.providers"),
        &w.providers,
        provider_ids,
        problems,
    );
    Match {
        models,
        clients,
        providers_fmt,
        provider_ids: w.providers,
    }
}

fn check_ids(at: &str, ids: &[String], known: &[String], problems: &mut Vec<String>) {
    for (i, id) in ids.iter().enumerate() {
        if !known.contains(id) {
            problems.push(format!("{at}[{i}]: unknown provider {id:?}"));
        }
    }
}

fn header_name(at: &str, name: &str, problems: &mut Vec<String>) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) if FRAMING_HEADERS.contains(&n.as_str()) => {
            problems.push(format!(
                "{at}: {name:?} frames the request and cannot be changed by a rule"
            ));
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            problems.push(format!("{at}: {name:?} is not a header name"));
            None
        }
    }
}

fn header_value(at: &str, v: &str, problems: &mut Vec<String>) -> Option<HeaderValue> {
    HeaderValue::from_str(v)
        .map_err(|_| problems.push(format!("{at}: not a valid header value")))
        .ok()
}

fn resolve_file(
    file: raw::RawFilterFile,
    provider_ids: &[String],
    set: &mut FilterSet,
    problems: &mut Vec<String>,
) {
    let p = file.payload;
    for (kind, rules, out) in [
        ("default", p.default, &mut set.defaults),
        ("override", p.r#override, &mut set.overrides),
    ] {
        for (i, mut r) in rules.into_iter().enumerate() {
            let at = format!("payload.{kind}[{i}]");
            let when = resolve_match(&at, r.when(), provider_ids, problems);
            if r.params.is_empty() {
                problems.push(format!("{at}.params: at least one field is needed"));
            }
            let params = r
                .params
                .into_iter()
                .filter_map(|(k, v)| match DottedPath::parse(&k) {
                    Ok(p) => Some((p, yaml_to_json(v))),
                    Err(e) => {
                        problems.push(format!("{at}.params.{k}: {e}"));
                        None
                    }
                })
                .collect();
            out.push(PayloadRule { when, params });
        }
    }
    for (i, mut r) in p.filter.into_iter().enumerate() {
        let at = format!("payload.filter[{i}]");
        let when = resolve_match(&at, r.when(), provider_ids, problems);
        if r.params.is_empty() {
            problems.push(format!("{at}.params: at least one field is needed"));
        }
        let params = r
            .params
            .iter()
            .enumerate()
            .filter_map(|(j, k)| match DottedPath::parse(k) {
                Ok(p) => Some((p, ())),
                Err(e) => {
                    problems.push(format!("{at}.params[{j}]: {e}"));
                    None
                }
            })
            .collect();
        set.removals.push(PayloadRule { when, params });
    }
    for (i, mut r) in file.headers.into_iter().enumerate() {
        let at = format!("headers[{i}]");
        let when = resolve_match(&at, r.when(), provider_ids, problems);
        let mut ops = Vec::new();
        for (j, n) in r.remove.iter().enumerate() {
            ops.extend(
                header_name(&format!("{at}.remove[{j}]"), n, problems).map(HeaderOp::Remove),
            );
        }
        for (verb, map) in [("set", r.set), ("add", r.add)] {
            for (n, v) in map {
                let k = format!("{at}.{verb}.{n}");
                if let (Some(n), Some(v)) = (
                    header_name(&k, &n, problems),
                    header_value(&k, &v, problems),
                ) {
                    ops.push(if verb == "set" {
                        HeaderOp::Set(n, v)
                    } else {
                        HeaderOp::Add(n, v)
                    });
                }
            }
        }
        if ops.is_empty() {
            problems.push(format!("{at}: give at least one of remove, set, add"));
        }
        set.headers.push(HeaderRule { when, ops });
    }
    for (i, m) in file.mask.into_iter().enumerate() {
        let at = format!("mask[{i}]");
        check_ids(
            &format!("{at}.providers"),
            &m.providers,
            provider_ids,
            problems,
        );
        let mut value = |key: &str, v: Option<String>| {
            v.and_then(|v| header_value(&format!("{at}.{key}"), &v, problems))
        };
        let user_agent = value("user_agent", m.user_agent);
        let origin = value("origin", m.origin);
        let referer = value("referer", m.referer);
        set.masks.push(MaskRule {
            provider_ids: m.providers,
            user_agent,
            origin,
            referer,
            site_headers: true,
        });
    }
}

fn yaml_to_json(v: serde_yaml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
