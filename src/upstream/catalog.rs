//! Provider model lists: fetched from each provider's own list endpoint and
//! kept until the next successful refresh.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use serde_json::Value;

use super::http::{send, Outgoing};
use super::{KeyChoice, Provider};

/// Largest model-list body accepted.
const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;

/// Model ids in a provider's list response, read as its kind lists them.
pub fn parse_model_list(provider: &Provider, body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("model list is not JSON: {e}"))?;
    provider.kind().parse_model_list(&v)
}

/// Fetches `provider`'s model list.
pub async fn fetch(connector: &Connector, provider: &Provider) -> Result<Vec<String>, String> {
    let key_index = match provider.pick_key(None, &[], 0) {
        KeyChoice::Key(i) => Some(i),
        KeyChoice::Keyless => None,
        KeyChoice::AllCooling => return Err("every key is cooling down".into()),
        KeyChoice::AllBusy => return Err("every key is at its max_concurrency or max_qps".into()),
    };
    let token = provider
        .access_token(connector)
        .await
        .map_err(|e| e.to_string())?;
    let key = token.as_deref().or(provider.api_key(key_index));
    let path = provider.models_path();
    let req = Outgoing {
        method: "GET",
        path: &path,
        body: Bytes::new(),
        stream: false,
        headers: provider.auth_headers(key),
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
    parse_model_list(provider, &body)
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
    use crate::config::Config;

    fn provider(kind: &str) -> Provider {
        let yaml = format!("providers: [{{id: p, kind: {kind}, base_url: 'http://h'}}]");
        let c = Config::from_yaml(&yaml, &|_| None).unwrap();
        Provider::new(c.providers.into_iter().next().unwrap())
    }

    #[test]
    fn parses_each_kind() {
        let openai =
            br#"{"object":"list","data":[{"id":"gpt-4o","object":"model"},{"id":"gpt-4o-mini"}]}"#;
        assert_eq!(
            parse_model_list(&provider("openai"), openai).unwrap(),
            ["gpt-4o", "gpt-4o-mini"]
        );
        let anthropic = br#"{"data":[{"type":"model","id":"claude-haiku-4-5","display_name":"Claude Haiku 4.5"}],"has_more":false}"#;
        assert_eq!(
            parse_model_list(&provider("anthropic"), anthropic).unwrap(),
            ["claude-haiku-4-5"]
        );
        let gemini = br#"{"models":[{"name":"models/gemini-2.5-flash","supportedGenerationMethods":["generateContent"]}]}"#;
        assert_eq!(
            parse_model_list(&provider("gemini"), gemini).unwrap(),
            ["gemini-2.5-flash"]
        );
        assert!(parse_model_list(&provider("openai"), b"{}").is_err());
        assert!(parse_model_list(&provider("openai"), b"<html>").is_err());
    }

    #[test]
    fn list_paths_follow_each_kind() {
        assert_eq!(provider("openai").models_path(), "/v1/models");
        assert_eq!(provider("anthropic").models_path(), "/v1/models?limit=1000");
        assert_eq!(
            provider("gemini").models_path(),
            "/v1beta/models?pageSize=1000"
        );
    }
}
