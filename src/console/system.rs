//! The console's System, App Log and Routing pages: what this process is
//! (`GET /admin/system`), its reload (`POST /admin/reload`), its own warn
//! and error lines (`GET /admin/logs`), and routing's state at a glance
//! (`GET /admin/routing`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{Named, ServerSettings};
use crate::error::GatewayError;
use crate::proxy::admin::health_json;
use crate::routing::Runtime;
use crate::service::{ReloadControl, ReloadOutcome, ReloadUnavailable};
use crate::upstream::now_ms;

/// How long the reload button waits for the reload it asked for.
pub const RELOAD_WAIT: Duration = Duration::from_secs(30);
/// Log lines one answer holds at most (the ring holds no more).
const MAX_LOG_LINES: usize = crate::applog::MAX_LINES;

/// What the System page shows that the live config does not: fixed at start.
pub struct System {
    started_ms: u64,
    /// The addresses bound at start and what each serves (a reload does
    /// not move listeners: the config's `server.listen` may differ until
    /// the next start or upgrade).
    listening: Vec<Value>,
    /// The config file's path and the reloads.
    pub reload: Arc<ReloadControl>,
}

impl System {
    /// The process as it starts with `server`.
    pub fn new(server: &ServerSettings, reload: Arc<ReloadControl>) -> System {
        let mut listening: Vec<Value> = server
            .listen
            .iter()
            .map(|a| json!({"address": a, "serves": "clients (HTTP)"}))
            .collect();
        if let Some(t) = &server.tls {
            listening.extend(
                t.listen
                    .iter()
                    .map(|a| json!({"address": a, "serves": "clients (TLS)"})),
            );
        }
        listening.extend(
            server
                .admin_listen
                .iter()
                .map(|a| json!({"address": a, "serves": "admin and console"})),
        );
        if let Some(m) = &server.metrics_listen {
            listening.push(json!({"address": m, "serves": "metrics"}));
        }
        if server.admin_listen.is_empty() {
            for l in listening.iter_mut().take(server.listen.len()) {
                l["serves"] = json!("clients, admin and console (HTTP)");
            }
        }
        System {
            started_ms: now_ms(),
            listening,
            reload,
        }
    }

    /// The config file, or `None` for the environment configuration.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        let p = self.reload.path();
        (!p.as_os_str().is_empty()).then_some(p)
    }
}

fn outcome_json(o: &ReloadOutcome) -> Value {
    json!({
        "number": o.number,
        "at_ms": o.at_ms,
        "trigger": o.trigger,
        "result": if o.ok { "ok" } else { "refused" },
        "problems": o.problems,
    })
}

/// `GET /admin/system`.
pub fn system_json(sys: &System, rt: &Runtime) -> Value {
    let now = now_ms();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started_at_ms": sys.started_ms,
        "uptime_seconds": now.saturating_sub(sys.started_ms) / 1000,
        "listening": sys.listening,
        "config_file": sys.config_file().map(|p| p.display().to_string()),
        "config_source": if sys.config_file().is_some() { "file" } else { "environment (LLM_PROVIDERS)" },
        "watch_config": rt.config.server.watch_config,
        "last_reload": sys.reload.last().as_ref().map(outcome_json),
        "log": {
            "level": rt.config.log_level,
            "kept_lines": crate::applog::usage().0,
            "max_lines": crate::applog::MAX_LINES,
            "max_bytes": crate::applog::MAX_BYTES,
        },
    })
}

/// `POST /admin/reload`: what `apiproxy reload` does (SIGHUP to this
/// process), answered with what happened: 200 when the config was taken,
/// 409 with the problems when it was refused, 500 when no reload ran.
pub async fn reload(sys: &System) -> Result<(u16, Value), GatewayError> {
    match sys.reload.reload(RELOAD_WAIT).await {
        Ok(o) if o.ok => Ok((200, json!({"reloaded": true, "reload": outcome_json(&o)}))),
        Ok(o) => Ok((
            409,
            json!({
                "error": {
                    "message": format!("the config was refused, the running config stays: {}", o.problems.join("; ")),
                    "type": "invalid_request_error",
                },
                "reloaded": false,
                "reload": outcome_json(&o),
            }),
        )),
        Err(e) => Err(unavailable(e)),
    }
}

/// A reload that did not run: the server's fault, not the caller's.
pub fn unavailable(e: ReloadUnavailable) -> GatewayError {
    GatewayError::internal(format!("reload: {e}"))
}

/// `GET /admin/logs?level=warn|error&limit=N`: the newest lines first.
/// Each line is the log's own text; a provider key of the running config
/// found in one (a bug elsewhere: none is ever logged) is masked here too.
pub fn logs(rt: &Runtime, query: Option<&str>) -> Result<Value, GatewayError> {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let level = match param("level").as_deref() {
        None | Some("warn") | Some("WARN") => log::Level::Warn,
        Some("error") | Some("ERROR") => log::Level::Error,
        Some(other) => {
            return Err(GatewayError::bad_request(format!(
                "`level` must be `warn` or `error`, not {other:?}"
            )))
        }
    };
    let limit = match param("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| GatewayError::bad_request("`limit` must be a non-negative integer"))?,
    }
    .min(MAX_LOG_LINES);
    let keys: Vec<&str> = rt
        .providers
        .iter()
        .flat_map(|p| p.config.api_keys.iter())
        .map(String::as_str)
        .filter(|k| k.len() >= 8)
        .collect();
    let lines: Vec<Value> = crate::applog::recent(level, limit)
        .into_iter()
        .map(|mut l| {
            for k in &keys {
                if l.message.contains(k) {
                    l.message = l.message.replace(k, "****");
                }
            }
            json!(l)
        })
        .collect();
    let (kept, bytes) = crate::applog::usage();
    Ok(json!({
        "level": if level == log::Level::Error { "error" } else { "warn" },
        "lines": lines,
        "kept": {"lines": kept, "bytes": bytes},
        "bounds": {"lines": crate::applog::MAX_LINES, "bytes": crate::applog::MAX_BYTES},
    }))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `GET /admin/routing`: the scoring mode and constants, the breaker and
/// cooldown settings, and per provider its key strategy, breakers (per
/// upstream model) and key cooldowns, as `/providers/{id}/health` has them.
pub fn routing(rt: &Runtime) -> Value {
    let r = &rt.config.routing;
    let s = &r.scoring;
    let providers: Vec<Value> = rt
        .providers
        .iter()
        .map(|p| {
            let h = health_json(rt, p);
            let open = h["models"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["breaker"] != "closed").count());
            let cooling = h["keys"].as_array().map_or(0, |k| {
                k.iter()
                    .filter(|k| !k["cooldown_until_ms"].is_null())
                    .count()
            });
            json!({
                "provider_id": p.id(),
                "enabled": p.config.enabled,
                "status": h["status"],
                "key_strategy": h["key_strategy"],
                "weight": p.config.weight,
                "breakers_not_closed": open,
                "keys_cooling_down": cooling,
                "cooldown_until_ms": h["cooldown_until_ms"],
                "keys": h["keys"],
                "models": h["models"],
            })
        })
        .collect();
    json!({
        "now_ms": now_ms(),
        "scoring": {
            "mode": s.mode.name(),
            "ewma_alpha": s.ewma_alpha,
            "latency_exponent": s.latency_exponent,
            "latency_slack_ms": s.latency_slack_ms,
            "error_exponent": s.error_exponent,
            "inflight_weight": s.inflight_weight,
            "min_factor": s.min_factor,
            "window_seconds": secs(s.window),
            "stale_after_seconds": secs(s.stale_after),
        },
        "breaker": {
            "consecutive_failures": r.breaker.consecutive_failures,
            "error_rate": r.breaker.error_rate,
            "min_requests": r.breaker.min_requests,
            "open_seconds": secs(r.breaker.open),
            "max_open_seconds": secs(r.breaker.max_open),
        },
        "cooldowns": {
            "rate_limited_seconds": secs(r.cooldowns.rate_limited),
            "server_error_seconds": secs(r.cooldowns.server_error),
            "network_seconds": secs(r.cooldowns.network),
            "refused_seconds": secs(r.cooldowns.refused),
            "max_seconds": secs(r.cooldowns.max),
        },
        "max_attempts": r.max_attempts,
        "retry_rounds": r.retry_rounds,
        "hedge_budget_percent": r.hedge_budget_percent,
        "providers": providers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_key_in_a_kept_line_is_masked() {
        let key = "sk-unit-secret-key-123456";
        let yaml = format!(
            "providers:\n  - id: a\n    kind: openai\n    base_url: http://127.0.0.1:9\n    api_keys: [{key}]\n"
        );
        let config = crate::config::Config::from_yaml(&yaml, &|_| None).expect("config");
        let rt = Runtime::new(config, None);
        crate::applog::keep(
            log::Level::Error,
            "unit",
            format!("a line that should never hold {key} but does"),
        );
        let v = logs(&rt, Some("level=error&limit=500"))
            .expect("logs")
            .to_string();
        assert!(!v.contains(key), "{v}");
        assert!(v.contains("should never hold **** but does"), "{v}");
        assert!(logs(&rt, Some("level=debug")).is_err());
        assert!(logs(&rt, Some("limit=-1")).is_err());
    }
}
