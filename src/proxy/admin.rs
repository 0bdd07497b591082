//! The model list and the admin endpoints (providers, logical models,
//! routing decisions, sessions, context).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;
use serde_json::{json, Value};

use super::ctx::RequestCtx;
use super::respond;
use super::routes::{AdminRoute, Route};
use super::Gateway;
use crate::auth;
use crate::config::ClientKey;
use crate::config::ScoringMode;
use crate::error::GatewayError;
use crate::routing::{Candidate, RankOptions, Runtime};
use crate::upstream::breaker::BreakerState;
use crate::upstream::health::{self, ProviderHealth};
use crate::upstream::{now_ms, Provider};

/// A model a client may ask for, and who serves it.
pub struct ClientModel<'a> {
    /// The name clients send.
    pub id: String,
    /// `apiproxy` for a logical model, else the provider's id.
    pub owned_by: &'a str,
    /// Whether `id` is a logical model of the config.
    pub logical: bool,
    /// Each upstream behind it: provider id and the provider's own name
    /// for the model (an alias resolved).
    pub served_by: Vec<(&'a str, String)>,
}

/// Every model a client may ask for: logical models, then every provider's
/// models as `provider-id/model` (or its `model_prefix`), and by the plain
/// name where only one provider has it. A key with an allow-list gets only
/// what it may use.
pub fn client_models<'a>(rt: &'a Runtime, key: Option<&ClientKey>) -> Vec<ClientModel<'a>> {
    let allowed = |id: &str| key.is_none_or(|k| k.allows(id));
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in &rt.config.models {
        if allowed(&m.name) && seen.insert(m.name.clone()) {
            let served_by = m
                .upstreams
                .iter()
                .map(|u| {
                    let p = &rt.providers[u.provider];
                    (p.id(), p.upstream_model(&u.model))
                })
                .collect();
            out.push(ClientModel {
                id: m.name.clone(),
                owned_by: "apiproxy",
                logical: true,
                served_by,
            });
        }
    }
    let catalogs: Vec<(&Provider, Arc<Vec<String>>)> = rt
        .providers
        .iter()
        .filter(|p| p.config.enabled)
        .filter_map(|p| Some((p.as_ref(), p.models()?)))
        .collect();
    // Each plain name: how many providers have it, and the first of them.
    let mut plain: HashMap<&str, (usize, &Provider)> = HashMap::new();
    for (p, models) in &catalogs {
        for model in models.iter() {
            let e = plain.entry(model.as_str()).or_insert((0, p));
            e.0 += 1;
            let id = match &p.config.model_prefix {
                Some(prefix) => format!("{prefix}{model}"),
                None => format!("{}/{model}", p.id()),
            };
            if allowed(&id) && seen.insert(id.clone()) {
                out.push(ClientModel {
                    id,
                    owned_by: p.id(),
                    logical: false,
                    served_by: vec![(p.id(), p.upstream_model(model))],
                });
            }
        }
    }
    let mut unique: Vec<(&str, &Provider)> = plain
        .iter()
        .filter(|(_, (n, _))| *n == 1)
        .map(|(m, (_, owner))| (*m, *owner))
        .collect();
    unique.sort_unstable_by_key(|(m, _)| *m);
    for (model, p) in unique {
        if allowed(model) && seen.insert(model.to_owned()) {
            out.push(ClientModel {
                id: model.to_owned(),
                owned_by: p.id(),
                logical: false,
                served_by: vec![(p.id(), p.upstream_model(model))],
            });
        }
    }
    out
}

/// `GET /v1/models`: [`client_models`] in OpenAI's list shape.
pub fn model_list(rt: &Runtime, key: Option<&ClientKey>) -> Vec<u8> {
    let data: Vec<Value> = client_models(rt, key)
        .into_iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by}))
        .collect();
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}

/// Read by the console too (`console::api::provider_state`).
pub(crate) fn provider_json(p: &Provider) -> Value {
    let c = &p.config;
    json!({
        "id": c.id,
        "name": c.name.as_deref().unwrap_or(&c.id),
        "kind": c.kind.as_str(),
        "wire_api": c.format.as_str(),
        "preset": c.preset.map(crate::config::Named::name),
        "base_url": format!("{}://{}:{}{}", if c.base.tls { "https" } else { "http" }, c.base.host, c.base.port, c.base.path),
        "weight": c.weight,
        "enabled": c.enabled,
        "api_keys": c.api_keys.len(),
        "models": p.models().map(|m| m.len()),
        "region": c.region,
        "proxy_url": c.proxy.as_ref().map(ToString::to_string),
        "max_qps": c.max_qps,
        "models_path": p.models_path(),
        "retryable_status": c.retryable.to_json(),
        "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
        "read_timeout_ms": c.read_timeout.as_millis() as u64,
    })
}

/// A provider's health as a value (`upstream::health`): what the console
/// decides on.
pub(crate) fn provider_health(rt: &Runtime, p: &Provider) -> ProviderHealth {
    health::of(p, now_ms(), &rt.config.routing)
}

/// `GET /providers/{id}/health`: the provider's status, each key's
/// cooldown and last rate-limit reading, each model's breaker and record.
/// Field names are stable (README "Provider health").
/// Read by the console too (`console::api::provider_state`).
pub(crate) fn health_json(rt: &Runtime, p: &Provider) -> Value {
    let h = provider_health(rt, p);
    let keys: Vec<Value> = h
        .keys
        .iter()
        .map(|k| {
            json!({
                "index": k.index,
                "available": k.available,
                "weight": k.weight,
                "in_flight": k.in_flight,
                "max_concurrency": k.max_concurrency,
                "max_qps": k.max_qps,
                "cooldown_until_ms": k.cooldown_until_ms,
                "cause": k.cause.map(|c| c.name()),
                "strikes": k.strikes,
                "ratelimit": k.ratelimit,
                "ratelimit_low": k.ratelimit_low,
            })
        })
        .collect();
    let models: Vec<Value> = h
        .models
        .iter()
        .map(|m| {
            let until = match m.breaker {
                BreakerState::Open { until_ms } => Some(until_ms),
                _ => None,
            };
            json!({
                "model": m.model,
                "breaker": m.breaker.name(),
                "breaker_since_ms": m.breaker_since_ms,
                "open_until_ms": until,
                "consecutive_failures": m.consecutive_failures,
                "latency_ewma_ms": m.latency_ewma_ms,
                "error_rate": m.error_rate,
                "samples": m.samples,
                "in_flight": m.in_flight,
            })
        })
        .collect();
    json!({
        "provider_id": p.id(),
        "status": h.status.name(),
        "consecutive_failures": h.consecutive_failures,
        "cooldown_until_ms": h.cooldown_until_ms,
        "in_flight": h.in_flight,
        "key_strategy": p.config.key_strategy.as_str(),
        "last_probe": p.last_probe.lock().clone(),
        "keys": keys,
        "models": models,
    })
}

/// `GET /providers/{id}/models`: what was listed and when (`source`:
/// `configured`, `provider`, `store`, or `listing` while the first listing
/// since start is under way).
fn models_json(p: &Provider) -> Value {
    let models = p.models().map(|m| m.to_vec()).unwrap_or_default();
    let l = p.listing.lock().clone();
    let source = if p.config.static_models.is_some() {
        Some("configured")
    } else if p.catalog_pending() {
        // The first listing since start is still under way.
        Some("listing")
    } else {
        l.source
    };
    json!({
        "provider_id": p.id(),
        "models": models,
        "source": source,
        "listed_at_ms": Some(l.listed_at_ms).filter(|t| *t > 0),
        "last_error": l.last_error,
    })
}

/// `?name=true` (or `=1`) in the request's query.
fn query_flag(session: &Session, name: &str) -> bool {
    session
        .req_header()
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == name && (v == "true" || v == "1"))
}

/// `GET /providers/{id}/metrics`. Read by the console too
/// (`console::api::provider_state`).
pub(crate) fn metrics_json(p: &Provider) -> Value {
    let t = health::totals(p);
    json!({
        "provider_id": p.id(),
        "successes": t.successes,
        "failures": t.failures,
        "error_rate": t.error_rate(),
        // 0 before the first answer, as it always was.
        "latency_ewma_ms": t.latency_ewma_ms.unwrap_or(0.0),
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
            // Who may read is the one decision every endpoint asks: an
            // admin key reads every session; a client key what it wrote;
            // an anonymous caller (only where no key is needed) what
            // anonymous callers wrote.
            let presented = auth::presented_key(&session.req_header().headers, None);
            let reader = match auth::caller(&rt.config.auth, &gw.keys, presented).await {
                Ok(auth::Caller::Admin) => None,
                Ok(auth::Caller::Client(k)) => Some(k.id.clone()),
                Ok(auth::Caller::Anonymous) => Some("-".to_owned()),
                Err(refusal) => return Err(refusal.to_error()),
            };
            let (owner, history) =
                crate::context::read(gw.state.store().await.as_ref(), &sid).await;
            if !crate::context::may_read(reader.as_deref(), owner.as_deref(), history.is_empty()) {
                return Err(GatewayError::forbidden(
                    "this session's context belongs to another key",
                ));
            }
            json!({"session_id": sid, "history": history})
        }
        Route::Admin(a) => {
            let gate = gw.admin_gate(rt, session);
            let headers = &session.req_header().headers;
            // Session bindings are state of the keys that made them:
            // admin only. The rest is the gateway's shape, which
            // `auth.inspection: clients` lets client keys read too.
            let reader = match a {
                AdminRoute::GetSession(_) | AdminRoute::DeleteSession(_) => {
                    gate.require_admin(headers).await?;
                    auth::Reader::Admin
                }
                _ => gate.require_reader(headers).await?,
            };
            // Work on the gateway's upstreams (a fresh listing, a probe) is
            // an admin's to ask for.
            let admin_only = |what: &str| -> Result<(), GatewayError> {
                match reader {
                    auth::Reader::Admin => Ok(()),
                    auth::Reader::Client(_) => Err(GatewayError::forbidden(format!(
                        "{what} needs an admin key"
                    ))),
                }
            };
            match a {
                AdminRoute::Providers => {
                    json!({"providers": rt.providers.iter().map(|p| provider_json(p)).collect::<Vec<_>>()})
                }
                AdminRoute::Provider(id) => {
                    provider_json(rt.provider(&id).ok_or_else(|| not_found("provider", &id))?)
                }
                AdminRoute::ProviderModels(id) => {
                    let p = rt.provider(&id).ok_or_else(|| not_found("provider", &id))?;
                    let refresh = query_flag(session, "refresh");
                    if refresh {
                        admin_only("?refresh")?;
                    }
                    if refresh && p.config.static_models.is_none() {
                        let store = gw.state.store().await;
                        crate::service::refresh_one(gw.connector(), store.as_ref(), p, true).await;
                    }
                    // Right after start: the first listing, bounded as routing bounds it.
                    p.await_first_listing().await;
                    models_json(p)
                }
                AdminRoute::ProviderHealth(id) => {
                    let p = rt.provider(&id).ok_or_else(|| not_found("provider", &id))?;
                    if query_flag(session, "probe") {
                        admin_only("?probe")?;
                        let timeout = p
                            .config
                            .health_check
                            .map_or(p.config.connect_timeout + p.config.read_timeout, |h| {
                                h.timeout
                            });
                        crate::upstream::catalog::probe(gw.connector(), p, timeout, |p| {
                            rt.probe_failed(p)
                        })
                        .await;
                    }
                    health_json(rt, p)
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
                AdminRoute::Decide => decide(gw, rt, session, &reader).await?,
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
                    return respond::no_content(session).await;
                }
            }
        }
        _ => return Err(GatewayError::not_found("no such endpoint")),
    };
    ctx.status = 200;
    respond::json(session, 200, body.to_string(), &respond::admin_headers())
        .await
        .map_err(|e| GatewayError::internal(format!("writing the response: {e}")))
}

/// `POST /routing/decide`: which upstream a request for the model would go
/// to now, and every candidate's score.
async fn decide(
    gw: &Gateway,
    rt: &Runtime,
    session: &mut Session,
    reader: &auth::Reader,
) -> Result<Value, GatewayError> {
    let started = Instant::now();
    let pace = super::request::BodyPace::of(&rt.config.server);
    let body = super::request::read_body(session, 1 << 20, pace).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("body is not valid JSON: {e}")))?;
    let model = v
        .get("logical_model")
        .or_else(|| v.get("model"))
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::bad_request("missing field `logical_model`"))?;
    let str_list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let opts = RankOptions {
        exclude_providers: str_list("exclude_providers"),
        preferred_region: v
            .get("preferred_region")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    if rt.resolve(model).is_none() {
        return Err(not_found("model", model));
    }
    // The very ranking a request for this model gets now.
    let ranking = rt.rank(&[model.to_owned()], &opts);
    let eligible: Vec<_> = ranking
        .candidates
        .iter()
        .map(|r| r.candidate.clone())
        .collect();
    let mut reasoning = "scored random choice: weight × latency × error-rate × in-flight × rate-limit factors (docs/routing.md); unavailable upstreams (open breaker, every key cooling) last";
    if rt.config.routing.scoring.mode == ScoringMode::Weighted {
        reasoning = "weighted random choice on the configured weights (routing.scoring.mode: weighted); unavailable upstreams last";
    }
    let mut chosen = ranking
        .candidates
        .first()
        .filter(|r| r.inputs.available())
        .map(|r| r.candidate.clone());
    let conversation = v
        .get("conversation_id")
        .or_else(|| v.get("session_id"))
        .and_then(Value::as_str);
    if let Some(conv) = conversation {
        let binding = gw.state.store().await.get_session(conv).await;
        // A client reader sees only its own sessions' bindings.
        let visible = |b: &apiproxy_store::SessionBinding| match reader {
            auth::Reader::Admin => true,
            auth::Reader::Client(id) => b.owner.as_deref() == Some(id.as_str()),
        };
        if let Some(b) = binding.filter(visible) {
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
    let upstream = |c: &Candidate| {
        let p = &rt.providers[c.provider];
        json!({"provider_id": p.id(), "model_id": c.model, "weight": c.weight, "region": p.config.region, "key_strategy": p.config.key_strategy.as_str()})
    };
    // In the model's configured order; `rank` is the place in this draw.
    let mut listed: Vec<(usize, &crate::routing::Ranked)> =
        ranking.candidates.iter().enumerate().collect();
    let configured = rt.resolve(model).unwrap_or_default();
    let place = |c: &Candidate| {
        configured
            .iter()
            .position(|x| x.provider == c.provider && x.model == c.model)
            .unwrap_or(usize::MAX)
    };
    listed.sort_by_key(|(_, r)| place(&r.candidate));
    let all: Vec<Value> = listed
        .into_iter()
        .map(|(rank, r)| {
            json!({
                "upstream": upstream(&r.candidate),
                "rank": rank,
                "score": r.share,
                "raw_score": r.score,
                "available": r.inputs.available(),
                "inputs": r.inputs,
                "factors": r.factors,
                "metrics": metrics_json(&rt.providers[r.candidate.provider]),
            })
        })
        .collect();
    Ok(json!({
        "logical_model": model,
        "hedge_after_ms": rt.config.logical_model(model).and_then(|m| m.hedge_after).map(|d| d.as_millis() as u64),
        "selected_upstream": upstream(&chosen),
        "decision_time": started.elapsed().as_secs_f64() * 1000.0,
        "reasoning": reasoning,
        "all_candidates": all,
    }))
}
