//! The model list and the admin endpoints (providers, logical models,
//! routing decisions, sessions, context).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use pingora::proxy::Session;
use serde_json::{json, Value};

use super::ctx::RequestCtx;
use super::respond;
use super::routes::{AdminRoute, Route};
use super::Gateway;
use crate::auth;
use crate::config::ClientKey;
use crate::error::GatewayError;
use crate::routing::{select, Runtime};
use crate::upstream::Provider;

/// `GET /v1/models`: logical models, then every provider's models as
/// `provider-id/model`, and by the plain name where only one provider has it.
/// A key with an allow-list sees only what it may use.
pub fn model_list(rt: &Runtime, key: Option<&ClientKey>) -> Vec<u8> {
    let allowed = |id: &str| key.is_none_or(|k| k.allows(id));
    let mut data = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in &rt.config.models {
        if allowed(&m.name) && seen.insert(m.name.clone()) {
            data.push(
                json!({"id": m.name, "object": "model", "created": 0, "owned_by": "apiproxy"}),
            );
        }
    }
    let mut plain: HashMap<String, (usize, &str)> = HashMap::new();
    for p in rt.providers.iter().filter(|p| p.config.enabled) {
        for model in p.models().iter().flat_map(|m| m.iter()) {
            let e = plain.entry(model.clone()).or_insert((0, p.id()));
            e.0 += 1;
            let id = format!("{}/{model}", p.id());
            if allowed(&id) && seen.insert(id.clone()) {
                data.push(json!({"id": id, "object": "model", "created": 0, "owned_by": p.id()}));
            }
        }
    }
    let mut unique: Vec<(&String, &str)> = plain
        .iter()
        .filter(|(_, (n, _))| *n == 1)
        .map(|(m, (_, owner))| (m, *owner))
        .collect();
    unique.sort();
    for (model, owner) in unique {
        if allowed(model) && seen.insert(model.clone()) {
            data.push(json!({"id": model, "object": "model", "created": 0, "owned_by": owner}));
        }
    }
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}

/// Who is calling an admin or context endpoint.
enum Caller {
    Admin,
    Client(String),
}

/// Admin key → Admin; a client key → Client; none or unknown → 401.
fn caller(rt: &Runtime, session: &Session) -> Result<Caller, GatewayError> {
    let req = session.req_header();
    let Some(k) = auth::presented_key(&req.headers, None) else {
        return Err(GatewayError::unauthorized("missing admin key"));
    };
    if auth::is_admin_key(&rt.config.auth, k) {
        return Ok(Caller::Admin);
    }
    if let Some(i) = auth::find_client_key(&rt.config.auth, k) {
        return Ok(Caller::Client(rt.config.auth.keys[i].name.clone()));
    }
    match crate::console::CONSOLE.keys.find(&auth::digest(k)) {
        Some(key) => Ok(Caller::Client(key.name.clone())),
        None => Err(GatewayError::unauthorized("invalid admin key")),
    }
}

fn require_admin(rt: &Runtime, session: &Session) -> Result<(), GatewayError> {
    match caller(rt, session)? {
        Caller::Admin => Ok(()),
        Caller::Client(_) => Err(GatewayError::forbidden("this endpoint needs an admin key")),
    }
}

/// Read by the console too (`console::api::provider_state`).
pub(crate) fn provider_json(p: &Provider) -> Value {
    let c = &p.config;
    json!({
        "id": c.id,
        "kind": c.kind.as_str(),
        "wire_api": c.format.as_str(),
        "base_url": format!("{}://{}:{}{}", if c.base.tls { "https" } else { "http" }, c.base.host, c.base.port, c.base.path),
        "weight": c.weight,
        "enabled": c.enabled,
        "api_keys": c.api_keys.len(),
        "models": p.models().map(|m| m.len()),
        "retryable_status": format!("{:?}", c.retryable),
        "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
        "read_timeout_ms": c.read_timeout.as_millis() as u64,
    })
}

/// Read by the console too (`console::api::provider_state`).
pub(crate) fn health_json(p: &Provider) -> Value {
    let h = &p.health;
    let cooldown_until = h.cooldown_until.load(Ordering::Relaxed);
    json!({
        "provider_id": p.id(),
        "status": if !p.config.enabled { "disabled" } else if h.cooling() { "cooling_down" } else { "healthy" },
        "consecutive_failures": h.consecutive_failures.load(Ordering::Relaxed),
        "cooldown_until_ms": if cooldown_until > 0 { Some(cooldown_until) } else { None },
    })
}

/// Read by the console too (`console::api::provider_state`).
pub(crate) fn metrics_json(p: &Provider) -> Value {
    let h = &p.health;
    let ok = h.successes.load(Ordering::Relaxed);
    let bad = h.failures.load(Ordering::Relaxed);
    json!({
        "provider_id": p.id(),
        "successes": ok,
        "failures": bad,
        "error_rate": if ok + bad > 0 { bad as f64 / (ok + bad) as f64 } else { 0.0 },
        "latency_ewma_ms": h.ewma_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
    })
}

fn logical_json(rt: &Runtime, name: &str) -> Option<Value> {
    let m = rt.config.logical_model(name)?;
    Some(json!({
        "id": m.name,
        "name": m.name,
        "description": m.description,
        "upstreams": upstreams_json(rt, name),
    }))
}

fn upstreams_json(rt: &Runtime, name: &str) -> Value {
    let Some(m) = rt.config.logical_model(name) else {
        return json!([]);
    };
    m.upstreams
        .iter()
        .map(|u| {
            let p = &rt.providers[u.provider];
            json!({"provider_id": p.id(), "model_id": u.model, "weight": u.weight, "enabled": p.config.enabled})
        })
        .collect()
}

fn not_found(what: &str, id: &str) -> GatewayError {
    GatewayError::not_found(format!("{what} `{id}` not found"))
}

/// Handles the admin and context routes.
pub async fn handle(
    gw: &Gateway,
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: Route,
) -> Result<(), GatewayError> {
    let body: Value = match route {
        Route::Context(sid) => {
            // Open gateway (no client keys): anyone may read; else the key
            // that wrote the session's context, or an admin key.
            let reader = if rt.config.auth.keys.is_empty() {
                None
            } else {
                match caller(rt, session)? {
                    Caller::Admin => None,
                    Caller::Client(name) => Some(name),
                }
            };
            let (owner, history) = gw.state.store().await.get_context(&sid).await;
            if !crate::context::may_read(reader.as_deref(), owner.as_deref(), history.is_empty()) {
                return Err(GatewayError::forbidden(
                    "this session's context belongs to another key",
                ));
            }
            json!({"session_id": sid, "history": history})
        }
        Route::Admin(a) => {
            require_admin(rt, session)?;
            match a {
                AdminRoute::Providers => {
                    json!({"providers": rt.providers.iter().map(|p| provider_json(p)).collect::<Vec<_>>()})
                }
                AdminRoute::Provider(id) => {
                    provider_json(rt.provider(&id).ok_or_else(|| not_found("provider", &id))?)
                }
                AdminRoute::ProviderModels(id) => {
                    let p = rt.provider(&id).ok_or_else(|| not_found("provider", &id))?;
                    let models = p.models().map(|m| m.to_vec()).unwrap_or_default();
                    json!({"provider_id": id, "models": models})
                }
                AdminRoute::ProviderHealth(id) => {
                    health_json(rt.provider(&id).ok_or_else(|| not_found("provider", &id))?)
                }
                AdminRoute::ProviderMetrics(id) => {
                    metrics_json(rt.provider(&id).ok_or_else(|| not_found("provider", &id))?)
                }
                AdminRoute::LogicalModels => {
                    let all: Vec<Value> = rt
                        .config
                        .models
                        .iter()
                        .filter_map(|m| logical_json(rt, &m.name))
                        .collect();
                    json!({"logical_models": all})
                }
                AdminRoute::LogicalModel(id) => {
                    logical_json(rt, &id).ok_or_else(|| not_found("logical model", &id))?
                }
                AdminRoute::LogicalModelUpstreams(id) => {
                    if rt.config.logical_model(&id).is_none() {
                        return Err(not_found("logical model", &id));
                    }
                    json!({"logical_model": id, "upstreams": upstreams_json(rt, &id)})
                }
                AdminRoute::Decide => decide(gw, rt, session).await?,
                AdminRoute::GetSession(id) => {
                    let b = gw
                        .state
                        .store()
                        .await
                        .get_session(&id)
                        .await
                        .ok_or_else(|| not_found("session", &id))?;
                    json!({
                        "conversation_id": b.conversation_id,
                        "logical_model": b.logical_model,
                        "provider_id": b.provider_id,
                        "model_id": b.model_id,
                        "created_at": b.created_at,
                        "last_accessed": b.last_accessed,
                        "message_count": b.message_count,
                        "owner": b.owner,
                    })
                }
                AdminRoute::DeleteSession(id) => {
                    if !gw.state.store().await.delete_session(&id).await {
                        return Err(not_found("session", &id));
                    }
                    ctx.status = 204;
                    let h = pingora::http::ResponseHeader::build_no_case(204, Some(0))
                        .map_err(|e| GatewayError::internal(e.to_string()))?;
                    return session
                        .write_response_header(Box::new(h), true)
                        .await
                        .map_err(|e| GatewayError::internal(format!("writing the response: {e}")));
                }
            }
        }
        _ => return Err(GatewayError::not_found("no such endpoint")),
    };
    ctx.status = 200;
    respond::json(session, 200, body.to_string(), &Vec::new())
        .await
        .map_err(|e| GatewayError::internal(format!("writing the response: {e}")))
}

/// `POST /routing/decide`: which upstream a request for the model would go
/// to now, and every candidate's score.
async fn decide(gw: &Gateway, rt: &Runtime, session: &mut Session) -> Result<Value, GatewayError> {
    let started = Instant::now();
    let body = super::request::read_body(session, 1 << 20).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("body is not valid JSON: {e}")))?;
    let model = v
        .get("logical_model")
        .or_else(|| v.get("model"))
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::bad_request("missing field `logical_model`"))?;
    let exclude: Vec<&str> = v
        .get("exclude_providers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(group) = rt.resolve(model) else {
        return Err(not_found("model", model));
    };
    let group: Vec<_> = group
        .into_iter()
        .filter(|c| !exclude.contains(&rt.providers[c.provider].id()))
        .collect();
    let scored: Vec<(f64, &crate::routing::Candidate)> = group
        .iter()
        .map(|c| (select::score(c.weight, &rt.providers[c.provider]), c))
        .collect();
    let total: f64 = scored.iter().map(|(s, _)| s).sum();
    let (candidates, _) = rt.candidates(&[model.to_owned()]);
    let eligible: Vec<_> = candidates
        .into_iter()
        .filter(|c| !exclude.contains(&rt.providers[c.provider].id()))
        .collect();
    let mut reasoning =
        "weighted random choice; weights halved per consecutive failure, cooling upstreams last";
    let mut chosen = eligible.first().cloned();
    if let Some(conv) = v.get("conversation_id").and_then(Value::as_str) {
        if let Some(b) = gw.state.store().await.get_session(conv).await {
            if let Some(i) = rt.bound_candidate(&eligible, &b) {
                chosen = Some(eligible[i].clone());
                reasoning =
                    "session binding: the conversation stays on the upstream that served it first";
            }
        }
    }
    let chosen = chosen.ok_or_else(|| {
        GatewayError::upstream(503, format!("no upstream is eligible for `{model}`"))
    })?;
    let upstream = |c: &crate::routing::Candidate| json!({"provider_id": rt.providers[c.provider].id(), "model_id": c.model, "weight": c.weight});
    let all: Vec<Value> = scored
        .iter()
        .map(|(s, c)| {
            json!({
                "upstream": upstream(c),
                "score": if total > 0.0 { s / total } else { 0.0 },
                "metrics": metrics_json(&rt.providers[c.provider]),
            })
        })
        .collect();
    Ok(json!({
        "logical_model": model,
        "selected_upstream": upstream(&chosen),
        "decision_time": started.elapsed().as_secs_f64() * 1000.0,
        "reasoning": reasoning,
        "all_candidates": all,
    }))
}
