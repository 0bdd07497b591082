//! The console's JSON admin API (`/admin/...`, admin key required) and the
//! page routes (`/ui/...`, no key: the pages hold no data and ask for one).
//! Every answer is built from the gateway's own state; provider keys and
//! client-key secrets never appear (keys are masked to their last four).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::proxy::Session;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::records::Filter;
use super::system::{self, System};
use super::{assets, config_file, series, unix_now, CONSOLE};
use crate::auth;
use crate::auth::stored::{client_key, StoredKeys, REFRESH_EVERY};
use crate::config::{ClientKey, Named};
use crate::error::GatewayError;
use crate::proxy::admin::{health_json, metrics_json, provider_health, provider_json};
use crate::proxy::ctx::RequestCtx;
use crate::proxy::{respond, Gateway};
use crate::routing::Runtime;
use crate::upstream::health::ProviderStatus;
use crate::upstream::Provider;
use apiproxy_store::keys::StoredKey;

/// Largest body of a key create or change.
const MAX_KEY_BODY: usize = 64 * 1024;
/// Records one list answer holds at most.
const MAX_LIST: usize = 1000;
/// How far back the live traffic shares of logical models look.
const SHARE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// A tail with nothing to send writes a comment this often (and so notices
/// a client that left).
const TAIL_HEARTBEAT: Duration = Duration::from_secs(5);

/// The console's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleRoute {
    /// `GET /ui`: redirect to `/ui/`.
    UiRoot,
    /// `GET /ui/{file}` (empty: the page).
    Asset(String),
    Overview,
    Providers,
    Models,
    Requests,
    Request(u64),
    Tail,
    Session(String),
    Keys,
    CreateKey,
    UpdateKey(String),
    RevokeKey(String),
    Config,
    Metrics,
    /// `GET /admin/system`.
    System,
    /// `POST /admin/reload`.
    Reload,
    /// `GET /admin/logs`.
    Logs,
    /// `GET /admin/routing`.
    Routing,
    /// `GET /admin/config/file`.
    ConfigFile,
    /// `PUT /admin/config/file`.
    WriteConfigFile,
    MethodNotAllowed,
    NotFound,
}

/// Routes `/ui...` and `/admin/...` paths (without the query).
pub fn route(method: &str, path: &str) -> ConsoleRoute {
    use ConsoleRoute as R;
    let get = method == "GET" || method == "HEAD";
    let only = |ok: bool, r: R| if ok { r } else { R::MethodNotAllowed };
    if path == "/ui" {
        return only(get, R::UiRoot);
    }
    if let Some(file) = path.strip_prefix("/ui/") {
        if file.contains('/') {
            return R::NotFound;
        }
        return only(get, R::Asset(file.to_owned()));
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["admin", "overview"] => only(get, R::Overview),
        ["admin", "providers"] => only(get, R::Providers),
        ["admin", "models"] => only(get, R::Models),
        ["admin", "requests"] => only(get, R::Requests),
        ["admin", "requests", "tail"] => only(get, R::Tail),
        ["admin", "requests", id] => match id.parse() {
            Ok(id) => only(get, R::Request(id)),
            Err(_) => R::NotFound,
        },
        ["admin", "sessions", id] if !id.is_empty() => only(get, R::Session((*id).to_owned())),
        ["admin", "keys"] => match method {
            "GET" => R::Keys,
            "POST" => R::CreateKey,
            _ => R::MethodNotAllowed,
        },
        ["admin", "keys", name] => match method {
            "PATCH" => R::UpdateKey((*name).to_owned()),
            "DELETE" => R::RevokeKey((*name).to_owned()),
            _ => R::MethodNotAllowed,
        },
        ["admin", "config"] => only(get, R::Config),
        ["admin", "metrics"] => only(get, R::Metrics),
        ["admin", "system"] => only(get, R::System),
        ["admin", "reload"] => only(method == "POST", R::Reload),
        ["admin", "logs"] => only(get, R::Logs),
        ["admin", "routing"] => only(get, R::Routing),
        ["admin", "config", "file"] => match method {
            "GET" | "HEAD" => R::ConfigFile,
            "PUT" => R::WriteConfigFile,
            _ => R::MethodNotAllowed,
        },
        _ => R::NotFound,
    }
}

/// Handles a console route.
pub async fn handle(
    gw: &Gateway,
    rt: &Arc<Runtime>,
    sys: &System,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: ConsoleRoute,
) -> Result<(), GatewayError> {
    use ConsoleRoute as R;
    match &route {
        R::UiRoot => {
            ctx.status = 301;
            let mut h = respond::header(301, "text/plain", Some(0), &Vec::new())
                .map_err(|e| GatewayError::internal(e.to_string()))?;
            h.insert_header("location", "/ui/")
                .map_err(|e| GatewayError::internal(e.to_string()))?;
            return session
                .write_response_header(h, true)
                .await
                .map_err(write_error);
        }
        R::Asset(file) => {
            let (ctype, body) = assets::get(file)
                .ok_or_else(|| GatewayError::not_found(format!("no console file `{file}`")))?;
            ctx.status = 200;
            let headers = vec![
                ("content-security-policy", assets::CSP.to_owned()),
                ("x-content-type-options", "nosniff".to_owned()),
                ("cache-control", "no-cache".to_owned()),
            ];
            return respond::write(session, 200, ctype, Bytes::from_static(body), &headers)
                .await
                .map_err(write_error);
        }
        R::MethodNotAllowed => {
            return Err(GatewayError::client(
                405,
                format!("method {} is not allowed here", session.req_header().method),
            ))
        }
        R::NotFound => return Err(GatewayError::not_found("no such console endpoint")),
        _ => {}
    }
    gw.admin_gate(rt, session)
        .require_admin(&session.req_header().headers)
        .await?;
    let (status, body) = match route {
        R::Overview => (200, overview(rt)),
        R::Providers => (
            200,
            json!({"providers": rt.providers.iter().map(|p| provider_state(rt, p)).collect::<Vec<_>>()}),
        ),
        R::Models => (200, models(rt)),
        R::Requests => {
            let q = session.req_header().uri.query();
            let f = Filter::from_query(q).map_err(GatewayError::bad_request)?;
            let limit = query_param(q, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(100)
                .min(MAX_LIST);
            let list = CONSOLE.recent(&f, limit);
            let list: Vec<&super::records::RequestRecord> = list.iter().map(|r| &**r).collect();
            (200, json!({ "requests": list }))
        }
        R::Request(id) => {
            let r = CONSOLE.request(id).ok_or_else(|| {
                GatewayError::not_found(format!("request {id} is not (or no longer) kept"))
            })?;
            (200, json!(&*r))
        }
        R::Tail => {
            let f = Filter::from_query(session.req_header().uri.query())
                .map_err(GatewayError::bad_request)?;
            return tail(session, ctx, f).await;
        }
        R::Session(id) => {
            let store = gw.state.store().await;
            let binding = store.get_session(&id).await;
            let (owner, history) = crate::context::read(store.as_ref(), &id).await;
            (
                200,
                json!({"session_id": id, "binding": binding, "context": {"owner": owner, "history": history}}),
            )
        }
        R::Keys => (200, list_keys(gw, rt).await),
        R::CreateKey => {
            let v = read_json(session, rt).await?;
            (201, create_key(&gw.keys, rt, &v).await?)
        }
        R::UpdateKey(name) => {
            let v = read_json(session, rt).await?;
            (200, update_key(&gw.keys, rt, &name, &v).await?)
        }
        R::RevokeKey(name) => {
            revoke_key(&gw.keys, rt, &name).await?;
            ctx.status = 204;
            return respond::no_content(session).await;
        }
        R::Config => (200, effective_config(rt)),
        R::Metrics => (200, super::snapshot::snapshot()),
        R::System => (200, system::system_json(sys, rt)),
        R::Reload => system::reload(sys).await?,
        R::Logs => (200, system::logs(rt, session.req_header().uri.query())?),
        R::Routing => (200, system::routing(rt)),
        R::ConfigFile => (200, config_file::get(sys)?),
        R::WriteConfigFile => {
            let v = read_json_up_to(session, rt, config_file::MAX_CONFIG_BYTES + 4096).await?;
            config_file::put(sys, &v).await?
        }
        R::UiRoot | R::Asset(_) | R::MethodNotAllowed | R::NotFound => {
            return Err(GatewayError::not_found("no such console endpoint"))
        }
    };
    ctx.status = status;
    respond::json(session, status, body.to_string(), &respond::admin_headers())
        .await
        .map_err(write_error)
}

fn write_error(e: Box<pingora::Error>) -> GatewayError {
    GatewayError::internal(format!("writing the response: {e}"))
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn read_json(session: &mut Session, rt: &Runtime) -> Result<Value, GatewayError> {
    read_json_up_to(session, rt, MAX_KEY_BODY).await
}

/// A JSON object body of at most `max` bytes.
async fn read_json_up_to(
    session: &mut Session,
    rt: &Runtime,
    max: usize,
) -> Result<Value, GatewayError> {
    let pace = crate::proxy::request::BodyPace::of(&rt.config.server);
    let body = crate::proxy::request::read_body(session, max, pace).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(GatewayError::bad_request("body must be a JSON object"));
    }
    Ok(v)
}

/// `GET /admin/overview`: the last hour as points, its totals, and now.
fn overview(rt: &Runtime) -> Value {
    let (points, total) = CONSOLE.series();
    let healthy = rt
        .providers
        .iter()
        .filter(|p| provider_health(rt, p).status == ProviderStatus::Healthy)
        .count();
    json!({
        "collecting": rt.config.console.collect,
        "interval_seconds": series::INTERVAL_SECS,
        "points": points,
        "hour": total,
        "unauthenticated": CONSOLE.unauthenticated(),
        "inflight_requests": crate::metrics::INFLIGHT_REQUESTS.get(),
        "inflight_streams": crate::metrics::INFLIGHT_STREAMS.get(),
        "providers": {"total": rt.providers.len(), "healthy": healthy},
        "logical_models": rt.config.models.len(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /admin/models`: each logical model's upstreams, their configured
/// weights and share, and the share of recent traffic each one served.
fn models(rt: &Runtime) -> Value {
    let counts = CONSOLE.upstream_counts(SHARE_WINDOW);
    let all: Vec<Value> = rt
        .config
        .models
        .iter()
        .map(|m| {
            let weights: f64 = m.upstreams.iter().map(|u| u.weight).sum();
            let served: Vec<u64> = m
                .upstreams
                .iter()
                .map(|u| {
                    let key = (
                        m.name.clone(),
                        rt.providers[u.provider].id().to_owned(),
                        u.model.clone(),
                    );
                    counts.get(&key).copied().unwrap_or(0)
                })
                .collect();
            let total: u64 = served.iter().sum();
            let upstreams: Vec<Value> = m
                .upstreams
                .iter()
                .zip(&served)
                .map(|(u, &n)| {
                    let p = &rt.providers[u.provider];
                    json!({
                        "provider_id": p.id(),
                        "model_id": u.model,
                        "weight": u.weight,
                        "configured_share": if weights > 0.0 { u.weight / weights } else { 0.0 },
                        "requests": n,
                        "live_share": if total > 0 { Some(n as f64 / total as f64) } else { None },
                        "provider_status": provider_state(rt, p)["status"].clone(),
                    })
                })
                .collect();
            json!({
                "name": m.name,
                "description": m.description,
                "requests": total,
                "upstreams": upstreams,
            })
        })
        .collect();
    // Every name a client may send, and who serves it (ai-proxy's model list).
    let models: Vec<Value> = crate::proxy::admin::client_models(rt, None)
        .into_iter()
        .map(|m| {
            let served_by: Vec<Value> = m
                .served_by
                .iter()
                .map(|(p, model)| json!({"provider_id": p, "model_id": model}))
                .collect();
            json!({"id": m.id, "logical": m.logical, "owned_by": m.owned_by, "served_by": served_by})
        })
        .collect();
    json!({"window_seconds": SHARE_WINDOW.as_secs(), "logical_models": all, "models": models})
}

/// Streams new request records as SSE (`event: request`) until the client
/// leaves; `event: lagged` says how many were skipped when it fell behind.
async fn tail(session: &mut Session, ctx: &mut RequestCtx, f: Filter) -> Result<(), GatewayError> {
    let mut rx = CONSOLE.subscribe();
    let h = respond::stream_header(session, &Vec::new())
        .map_err(|e| GatewayError::internal(e.to_string()))?;
    session
        .write_response_header(h, false)
        .await
        .map_err(write_error)?;
    ctx.status = 200;
    let mut out = Bytes::from_static(b": tail open\n\n");
    loop {
        if session.write_response_body(Some(out), false).await.is_err() {
            // The client left: nothing more to do.
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + TAIL_HEARTBEAT;
        out = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(r)) if f.matches(&r) => {
                    let data = serde_json::to_string(&*r).unwrap_or_default();
                    break Bytes::from(format!("event: request\ndata: {data}\n\n"));
                }
                Ok(Ok(_)) => continue,
                Ok(Err(RecvError::Lagged(n))) => {
                    break Bytes::from(format!("event: lagged\ndata: {{\"skipped\":{n}}}\n\n"))
                }
                Ok(Err(RecvError::Closed)) => return Ok(()),
                Err(_) => break Bytes::from_static(b": keep-alive\n\n"),
            }
        };
    }
}

fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n < 12 {
        return "****".to_owned();
    }
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("…{tail}")
}

/// Everything the console shows of a provider: its settings, health
/// (`/providers/{id}/health`: breaker, cooldowns, upstream limits as routing
/// reports them) and metrics, and its keys masked. The one place provider
/// state is read, so fields routing adds to the health answer show up here.
pub fn provider_state(rt: &Runtime, p: &Provider) -> Value {
    let mut v = provider_json(p);
    v["api_keys"] = json!(masked_provider_keys(&p.config.api_keys));
    v["health"] = health_json(rt, p);
    v["metrics"] = metrics_json(p);
    v["status"] = v["health"]["status"].clone();
    v
}

/// A provider key as the console shows it: its last four characters.
pub fn masked_provider_keys(keys: &[String]) -> Vec<String> {
    keys.iter().map(|k| mask(k)).collect()
}

/// `GET /admin/keys`: configured and stored keys, with usage and what is
/// left of their limits.
async fn list_keys(gw: &Gateway, rt: &Arc<Runtime>) -> Value {
    gw.keys.freshen().await;
    let store = gw.state.store().await;
    let now = unix_now() as u64;
    let mut out = Vec::new();
    let remaining = |name: &str, rpm: Option<u64>| {
        let u = CONSOLE.usage(name);
        let rpm_left = rpm.map(|l| l.saturating_sub(u.last_minute(now)));
        (u, rpm_left)
    };
    for k in &rt.config.auth.keys {
        let (u, rpm_left) = remaining(&k.name, k.rpm);
        let tpm_left = match k.tpm {
            Some(l) => Some(
                store
                    .check_tokens(&crate::limits::client_key_bucket(k.owner_id()), l)
                    .await
                    .remaining,
            ),
            None => None,
        };
        out.push(json!({
            "name": k.name,
            "source": "config",
            "rpm": k.rpm,
            "tpm": k.tpm,
            // The config keeps only the compiled globs: say whether there is a list.
            "models": Value::Null,
            "models_restricted": k.models.is_some(),
            "usage": u,
            "remaining": {"rpm": rpm_left, "tpm": tpm_left},
            "budget": budget_json(store.as_ref(), Some(k)).await,
            "expires_at": k.expires_at_ms.map(crate::config::expiry_text),
        }));
    }
    let cache = gw.keys.cached();
    for k in &cache.stored {
        let (u, rpm_left) = remaining(&k.name, k.rpm);
        let tpm_left = match k.tpm {
            Some(l) => Some(
                store
                    .check_tokens(&crate::limits::client_key_bucket(&k.id()), l)
                    .await
                    .remaining,
            ),
            None => None,
        };
        out.push(json!({
            "name": k.name,
            "source": "console",
            "last4": k.last4,
            "rpm": k.rpm,
            "tpm": k.tpm,
            "models": k.models,
            "created_at": k.created_at,
            "usage": u,
            "remaining": {"rpm": rpm_left, "tpm": tpm_left},
            "budget_usd": k.budget_usd,
            "budget_period": k.budget_period,
            "budget": budget_json(store.as_ref(), client_key(k).as_ref()).await,
            "expires_at": k.expires_at_ms.map(crate::config::expiry_text),
        }));
    }
    let store_kind = match gw.keys.store().await {
        Ok(s) => s.kind().to_owned(),
        Err(e) => format!("unavailable: {e}"),
    };
    json!({
        "keys": out,
        "store": store_kind,
        "replica_refresh_seconds": REFRESH_EVERY.as_secs_f64(),
        "usage_scope": "this replica since it started",
    })
}

/// A key's budget this period (limit, spent, left, when it renews), shared
/// by every replica on one store; `None` for a key without a budget.
async fn budget_json(store: &dyn apiproxy_store::Store, key: Option<&ClientKey>) -> Option<Value> {
    let key = key?;
    let period = key.budget?.period;
    let s = crate::pricing::budget::state(store, key).await?;
    Some(json!({
        "limit_usd": s.limit_usd,
        "spent_usd": s.spent_usd,
        "remaining_usd": s.remaining_usd(),
        "period": period.name(),
        "renews_in_secs": s.renews_in_secs,
    }))
}

/// Limits given in a create or change body: absent → `None` (keep),
/// `null` → `Some(None)` (clear).
struct LimitChanges {
    rpm: Option<Option<u64>>,
    tpm: Option<Option<u64>>,
    models: Option<Option<Vec<String>>>,
    budget_usd: Option<Option<f64>>,
    budget_period: Option<Option<String>>,
    expires_at_ms: Option<Option<u64>>,
}

impl LimitChanges {
    /// Applies the changes given to `k`; the result must still make a key.
    fn apply(self, k: &mut StoredKey) -> Result<(), GatewayError> {
        if let Some(rpm) = self.rpm {
            k.rpm = rpm;
        }
        if let Some(tpm) = self.tpm {
            k.tpm = tpm;
        }
        if let Some(models) = self.models {
            k.models = models;
        }
        if let Some(usd) = self.budget_usd {
            k.budget_usd = usd;
        }
        if let Some(period) = self.budget_period {
            k.budget_period = period;
        }
        if let Some(at) = self.expires_at_ms {
            k.expires_at_ms = at;
        }
        match client_key(k) {
            Some(_) => Ok(()),
            None => Err(GatewayError::bad_request("the key's limits do not compile")),
        }
    }
}

fn limit_changes(v: &Value) -> Result<LimitChanges, GatewayError> {
    let num = |field: &str| -> Result<Option<Option<u64>>, GatewayError> {
        match v.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(x) => match x.as_u64() {
                Some(n) if n > 0 => Ok(Some(Some(n))),
                _ => Err(GatewayError::bad_request(format!(
                    "`{field}` must be a positive integer or null"
                ))),
            },
        }
    };
    let models = match v.get("models") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::Array(a)) => {
            let mut pats = Vec::new();
            for p in a {
                let p = p.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                    GatewayError::bad_request("`models` must be a list of non-empty strings")
                })?;
                globset::Glob::new(p).map_err(|e| {
                    GatewayError::bad_request(format!("`models`: {p:?} is not a glob: {e}"))
                })?;
                pats.push(p.to_owned());
            }
            Some(Some(pats))
        }
        Some(_) => {
            return Err(GatewayError::bad_request(
                "`models` must be a list of strings or null",
            ))
        }
    };
    let budget_usd = match v.get("budget_usd") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(x) => match x.as_f64() {
            Some(usd) if usd.is_finite() && usd >= 0.0 => Some(Some(usd)),
            _ => {
                return Err(GatewayError::bad_request(
                    "`budget_usd` must be a non-negative number or null",
                ))
            }
        },
    };
    let budget_period = match v.get("budget_period") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(p)) if p == "day" || p == "month" => Some(Some(p.clone())),
        Some(_) => {
            return Err(GatewayError::bad_request(
                "`budget_period` must be \"day\", \"month\" or null",
            ))
        }
    };
    let expires_at_ms = match v.get("expires_at") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(t)) => {
            Some(Some(crate::config::parse_expiry(t).map_err(|e| {
                GatewayError::bad_request(format!("`expires_at`: {e}"))
            })?))
        }
        Some(_) => {
            return Err(GatewayError::bad_request(
                "`expires_at` must be an RFC 3339 time or null",
            ))
        }
    };
    Ok(LimitChanges {
        rpm: num("rpm")?,
        tpm: num("tpm")?,
        models,
        budget_usd,
        budget_period,
        expires_at_ms,
    })
}

fn valid_name(name: &str) -> bool {
    // `-` stands for "no key" in logs and owners.
    name != "-"
        && !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn store_error(e: String) -> GatewayError {
    GatewayError::upstream(503, format!("the key store is unavailable: {e}"))
}

/// `POST /admin/keys`: makes a key; the answer is the only time it is shown.
async fn create_key(
    keys: &StoredKeys,
    rt: &Arc<Runtime>,
    v: &Value,
) -> Result<Value, GatewayError> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::bad_request("missing field `name`"))?;
    if !valid_name(name) {
        return Err(GatewayError::bad_request(
            "`name`: 1-64 characters of letters, digits, `-`, `_` or `.`",
        ));
    }
    let limits = limit_changes(v)?;
    let store = keys.store().await.map_err(store_error)?;
    // The newest list: the name must be free in the store, not only in this cache.
    keys.reload().await.map_err(store_error)?;
    if rt.config.auth.keys.iter().any(|k| k.name == name)
        || keys.cached().stored.iter().any(|k| k.name == name)
    {
        return Err(GatewayError::client(
            409,
            format!("a key named `{name}` exists"),
        ));
    }
    let secret = format!(
        "sk-apx-{}",
        hex::encode(rand::thread_rng().gen::<[u8; 24]>())
    );
    let mut record = StoredKey {
        // A new identity: nothing a revoked key of the same name left behind is inherited.
        id: Some(StoredKey::new_id(rand::thread_rng().gen())),
        name: name.to_owned(),
        sha256: hex::encode(auth::digest(&secret)),
        last4: secret[secret.len() - 4..].to_owned(),
        rpm: None,
        tpm: None,
        budget_usd: None,
        budget_period: None,
        models: None,
        provider_refs: match v.get("provider_refs") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "any" || s == "own" => Some(s.clone()),
            Some(_) => {
                return Err(GatewayError::bad_request(
                    "`provider_refs` must be \"own\" or \"any\"",
                ))
            }
        },
        created_at: unix_now(),
        expires_at_ms: None,
    };
    limits.apply(&mut record)?;
    store.put(&record).await.map_err(store_error)?;
    keys.reload().await.map_err(store_error)?;
    log::info!("client key `{name}` created through the admin API");
    if store.kind() == "memory" {
        log::warn!(
            "client keys made in the console are kept in memory only: set store.path (or store.redis_url) to keep them across restarts"
        );
    }
    Ok(json!({
        "name": record.name,
        "key": secret,
        "last4": record.last4,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "models": record.models,
        "budget_usd": record.budget_usd,
        "budget_period": record.budget_period,
        "created_at": record.created_at,
        "expires_at": record.expires_at_ms.map(crate::config::expiry_text),
        "note": "the key is shown only now; the gateway keeps only its SHA-256",
    }))
}

/// The stored key `name`, or 404 (409 for a configured key: it lives in the config file).
async fn stored(
    keys: &StoredKeys,
    rt: &Arc<Runtime>,
    name: &str,
) -> Result<StoredKey, GatewayError> {
    keys.reload().await.map_err(store_error)?;
    if let Some(k) = keys.cached().stored.iter().find(|k| k.name == name) {
        return Ok(k.clone());
    }
    if rt.config.auth.keys.iter().any(|k| k.name == name) {
        return Err(GatewayError::client(
            409,
            format!("key `{name}` is defined in the config file: change it there"),
        ));
    }
    Err(GatewayError::not_found(format!("key `{name}` not found")))
}

/// `PATCH /admin/keys/{name}`: changes `rpm`, `tpm`, `models` (null clears).
async fn update_key(
    keys: &StoredKeys,
    rt: &Arc<Runtime>,
    name: &str,
    v: &Value,
) -> Result<Value, GatewayError> {
    let limits = limit_changes(v)?;
    let mut k = stored(keys, rt, name).await?;
    limits.apply(&mut k)?;
    let store = keys.store().await.map_err(store_error)?;
    store.put(&k).await.map_err(store_error)?;
    keys.reload().await.map_err(store_error)?;
    log::info!("client key `{name}` changed through the admin API");
    Ok(
        json!({"name": k.name, "last4": k.last4, "rpm": k.rpm, "tpm": k.tpm, "models": k.models,
        "budget_usd": k.budget_usd, "budget_period": k.budget_period}),
    )
}

/// `DELETE /admin/keys/{name}`: the key stops working here at once and on
/// other replicas within the refresh bound.
async fn revoke_key(keys: &StoredKeys, rt: &Arc<Runtime>, name: &str) -> Result<(), GatewayError> {
    stored(keys, rt, name).await?;
    let store = keys.store().await.map_err(store_error)?;
    store.remove(name).await.map_err(store_error)?;
    keys.reload().await.map_err(store_error)?;
    log::info!("client key `{name}` revoked through the admin API");
    Ok(())
}

/// `GET /admin/config`: the effective configuration; secrets are left out
/// (client and admin keys) or masked (provider keys), the Redis password redacted.
fn effective_config(rt: &Runtime) -> Value {
    let c = &rt.config;
    let s = &c.server;
    json!({
        "server": {
            "listen": s.listen,
            "metrics_listen": s.metrics_listen,
            "threads": s.threads,
            "max_body_bytes": s.max_body_bytes,
            "pid_file": s.pid_file,
            "upgrade_sock": s.upgrade_sock,
            "daemon": s.daemon,
            "error_log": s.error_log,
            "grace_period_seconds": s.grace_period_seconds,
            "graceful_shutdown_timeout_seconds": s.graceful_shutdown_timeout_seconds,
        },
        "log": {"level": c.log_level, "capture_bodies": c.console.capture_bodies},
        "store": {
            "redis_url": c.store.redis_url.as_deref().map(apiproxy_store::redact_url),
            "key_prefix": c.store.key_prefix,
            "path": c.store.path.as_ref().map(|p| p.display().to_string()),
            "session_ttl_seconds": c.store.session_ttl.as_secs(),
            "context_ttl_seconds": c.store.context_ttl.as_secs(),
            "models_cache_ttl_seconds": c.store.catalog_ttl.as_secs(),
        },
        "context": {"max_entries": c.context.max_entries, "max_chars": c.context.max_chars},
        "auth": {
            "keys": c.auth.keys.iter().map(|k| json!({"name": k.name, "rpm": k.rpm, "tpm": k.tpm, "models_restricted": k.models.is_some()})).collect::<Vec<_>>(),
            "admin_keys": c.auth.admin_keys.len(),
        },
        "providers": rt.providers.iter().map(|p| {
            let mut v = provider_json(p);
            v["api_keys"] = json!(masked_provider_keys(&p.config.api_keys));
            v["static_models"] = json!(p.config.static_models);
            v["pricing"] = p.config.pricing.iter().map(|(m, pr)| (m.clone(), json!({"input": pr.input, "output": pr.output}))).collect::<serde_json::Map<_, _>>().into();
            v["headers"] = p.config.headers.iter().map(|(k, _)| json!(k)).collect::<Vec<_>>().into();
            v
        }).collect::<Vec<_>>(),
        "models": c.models.iter().map(|m| json!({
            "name": m.name,
            "description": m.description,
            "upstreams": m.upstreams.iter().map(|u| json!({"provider": rt.providers[u.provider].id(), "model": u.model, "weight": u.weight})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "routing": {"cooldown_seconds": c.cooldown.as_secs()},
        "limits": {"rpm": c.global_rpm, "tpm": c.global_tpm},
        "console": {
            "collect": c.console.collect,
            "recent_requests": c.console.recent_requests,
            "max_body_chars": c.console.max_body_chars,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        use ConsoleRoute as R;
        assert_eq!(route("GET", "/ui"), R::UiRoot);
        assert_eq!(route("GET", "/ui/"), R::Asset(String::new()));
        assert_eq!(route("GET", "/ui/app.js"), R::Asset("app.js".into()));
        assert_eq!(route("GET", "/ui/a/b"), R::NotFound);
        assert_eq!(route("GET", "/admin/requests/7"), R::Request(7));
        assert_eq!(route("GET", "/admin/requests/tail"), R::Tail);
        assert_eq!(route("GET", "/admin/requests/x"), R::NotFound);
        assert_eq!(route("POST", "/admin/keys"), R::CreateKey);
        assert_eq!(route("DELETE", "/admin/keys/ci"), R::RevokeKey("ci".into()));
        assert_eq!(route("PUT", "/admin/keys/ci"), R::MethodNotAllowed);
        assert_eq!(route("POST", "/admin/overview"), R::MethodNotAllowed);
        assert_eq!(route("POST", "/admin/reload"), R::Reload);
        assert_eq!(route("GET", "/admin/reload"), R::MethodNotAllowed);
        assert_eq!(route("GET", "/admin/config"), R::Config);
        assert_eq!(route("GET", "/admin/config/file"), R::ConfigFile);
        assert_eq!(route("PUT", "/admin/config/file"), R::WriteConfigFile);
        assert_eq!(route("POST", "/admin/config/file"), R::MethodNotAllowed);
        assert_eq!(route("GET", "/admin/logs"), R::Logs);
        assert_eq!(route("GET", "/admin/routing"), R::Routing);
        assert_eq!(route("GET", "/admin/system"), R::System);
    }

    #[test]
    fn masks_keep_four_characters_of_long_keys_only() {
        assert_eq!(mask("sk-abcdefghijkl1234"), "…1234");
        assert_eq!(mask("short-key"), "****");
    }

    #[test]
    fn limit_bodies() {
        let l = limit_changes(&json!({"rpm": 5, "tpm": null})).unwrap();
        assert_eq!(l.rpm, Some(Some(5)));
        assert_eq!(l.tpm, Some(None));
        assert!(l.models.is_none());
        assert!(limit_changes(&json!({"rpm": 0})).is_err());
        assert!(limit_changes(&json!({"rpm": "5"})).is_err());
        assert!(limit_changes(&json!({"models": ["[bad"]})).is_err());
        assert!(valid_name("ci-bot_1.x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(""));
    }
}
