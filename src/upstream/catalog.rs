//! Provider model lists: fetched from each provider's own list endpoint and
//! kept until the next successful refresh.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use serde_json::Value;

use super::http::{send, Outgoing};
use super::{KeyChoice, Provider};
use crate::config::ProviderKind;

/// Largest model-list body accepted.
const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;

/// Model ids in a provider's list response.
pub fn parse_model_list(kind: ProviderKind, body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("model list is not JSON: {e}"))?;
    let (items, field) = match kind {
        ProviderKind::OpenAi | ProviderKind::Anthropic => (v.get("data"), "id"),
        ProviderKind::Gemini => (v.get("models"), "name"),
    };
    let items = items
        .and_then(Value::as_array)
        .ok_or("model list has no data array")?;
    Ok(items
        .iter()
        .filter_map(|m| m.get(field).and_then(Value::as_str))
        .map(|id| id.strip_prefix("models/").unwrap_or(id).to_owned())
        .collect())
}

/// Fetches `provider`'s model list.
pub async fn fetch(connector: &Connector, provider: &Provider) -> Result<Vec<String>, String> {
    let key_index = match provider.pick_key(None, &[], 0) {
        KeyChoice::Key(i) => Some(i),
        KeyChoice::Keyless => None,
        KeyChoice::AllCooling => return Err("every key is cooling down".into()),
        KeyChoice::AllBusy => return Err("every key is at its max_concurrency or max_qps".into()),
    };
    let path = match provider.config.kind {
        ProviderKind::Anthropic => format!("{}?limit=1000", provider.models_path()),
        _ => provider.models_path(),
    };
    let req = Outgoing {
        method: "GET",
        path: &path,
        body: Bytes::new(),
        stream: false,
        headers: provider.auth_headers(provider.api_key(key_index)),
        edits: None,
    };
    let mut resp = send(connector, provider, req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.body(MAX_LIST_BYTES).await.map_err(|e| e.to_string())?;
    resp.release(connector).await;
    if status != 200 {
        return Err(format!("model list answered {status}"));
    }
    parse_model_list(provider.config.kind, &body)
}

/// The outcome of one active health check (`/providers/{id}/health`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    pub ok: bool,
    /// When it ran (ms since the epoch).
    pub at_ms: u64,
    pub latency_ms: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Lists the provider's models as a health check, within `timeout`; a
/// failure counts against every model routing tracks for the provider.
pub async fn probe(
    connector: &Connector,
    provider: &Provider,
    timeout: std::time::Duration,
    on_failure: impl Fn(&Provider),
) -> Probe {
    let started = std::time::Instant::now();
    let at_ms = super::now_ms();
    let result = match tokio::time::timeout(timeout, fetch(connector, provider)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    let p = Probe {
        ok: result.is_ok(),
        at_ms,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error: result.err(),
    };
    if !p.ok {
        on_failure(provider);
    }
    *provider.last_probe.lock() = Some(p.clone());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let openai =
            br#"{"object":"list","data":[{"id":"gpt-4o","object":"model"},{"id":"gpt-4o-mini"}]}"#;
        assert_eq!(
            parse_model_list(ProviderKind::OpenAi, openai).unwrap(),
            ["gpt-4o", "gpt-4o-mini"]
        );
        let anthropic = br#"{"data":[{"type":"model","id":"claude-haiku-4-5","display_name":"Claude Haiku 4.5"}],"has_more":false}"#;
        assert_eq!(
            parse_model_list(ProviderKind::Anthropic, anthropic).unwrap(),
            ["claude-haiku-4-5"]
        );
        let gemini = br#"{"models":[{"name":"models/gemini-2.5-flash","supportedGenerationMethods":["generateContent"]}]}"#;
        assert_eq!(
            parse_model_list(ProviderKind::Gemini, gemini).unwrap(),
            ["gemini-2.5-flash"]
        );
        assert!(parse_model_list(ProviderKind::OpenAi, b"{}").is_err());
        assert!(parse_model_list(ProviderKind::OpenAi, b"<html>").is_err());
    }
}
