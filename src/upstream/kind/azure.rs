//! `kind: azure`: Azure OpenAI. OpenAI's wire format (Chat Completions,
//! or Responses with `wire_api: responses`) on Azure's paths: per
//! deployment with an `api-version` query, or the v1 GA API
//! (`api_version: v1`: `/openai/v1/...`, the deployment as `model` in the
//! body). Authenticated with the `api-key` header, or an Entra ID bearer
//! token (`azure_ad_token`) when the provider has no keys.

use apiproxy_translate::Format;
use serde_json::Value;

use super::{encode_segment, listed_ids, Kind};
use crate::config::ProviderConfig;
use crate::upstream::ratelimit::{RateLimitHeaders, ResetForm};

/// Azure OpenAI.
#[derive(Debug)]
pub struct Azure;

/// Azure sends OpenAI's remaining counts (no reset times) and, on a 429,
/// `retry-after-ms` besides `retry-after`.
const AZURE_HEADERS: RateLimitHeaders = RateLimitHeaders {
    remaining_requests: &["x-ratelimit-remaining-requests"],
    remaining_tokens: &["x-ratelimit-remaining-tokens"],
    requests_reset: &["x-ratelimit-reset-requests"],
    tokens_reset: &["x-ratelimit-reset-tokens"],
    reset_form: ResetForm::GoDuration,
    retry_after_ms: Some("retry-after-ms"),
};

/// `api_version: v1`: the v1 GA API, which takes no version parameter.
fn is_v1(config: &ProviderConfig) -> bool {
    config.api_version.as_deref() == Some("v1")
}

impl Kind for Azure {
    /// `model` is the deployment (`models[].deployment`, else the name).
    fn request_path(
        &self,
        config: &ProviderConfig,
        wire: Format,
        model: &str,
        _stream: bool,
    ) -> String {
        let base = &config.base.path;
        // Checked by the config: letters, digits, '-' and '.' only.
        let version = config.api_version.as_deref().unwrap_or_default();
        let responses = wire == Format::OpenAiResponses;
        match (is_v1(config), responses) {
            (true, true) => format!("{base}/openai/v1/responses"),
            (true, false) => format!("{base}/openai/v1/chat/completions"),
            // The Responses API names the deployment in the body.
            (false, true) => format!("{base}/openai/responses?api-version={version}"),
            (false, false) => format!(
                "{base}/openai/deployments/{}/chat/completions?api-version={version}",
                encode_segment(model)
            ),
        }
    }

    /// The resource's model list (used by health checks only: an azure
    /// provider's models are configured).
    fn list_path(&self, config: &ProviderConfig) -> String {
        if let Some(p) = &config.models_path {
            return p.clone();
        }
        let base = &config.base.path;
        if is_v1(config) {
            format!("{base}/openai/v1/models")
        } else {
            let version = config.api_version.as_deref().unwrap_or_default();
            format!("{base}/openai/models?api-version={version}")
        }
    }

    fn parse_model_list(&self, body: &Value) -> Result<Vec<String>, String> {
        listed_ids(body, "data", "id")
    }

    fn auth_headers(
        &self,
        config: &ProviderConfig,
        key: Option<&str>,
        out: &mut Vec<(&'static str, String)>,
    ) {
        match (key, &config.azure_ad_token) {
            (Some(k), _) => out.push(("api-key", k.to_owned())),
            (None, Some(t)) => out.push(("authorization", format!("Bearer {t}"))),
            (None, None) => {}
        }
    }

    fn ratelimit_headers(&self) -> &'static RateLimitHeaders {
        &AZURE_HEADERS
    }

    /// A prompt blocked by the content filter: 400 with
    /// `error.code: "content_filter"` and the categories in `innererror`.
    fn refusal_message(&self, status: u16, body: &[u8]) -> Option<String> {
        if status != 400 {
            return None;
        }
        let v: Value = serde_json::from_slice(body).ok()?;
        let e = v.get("error")?;
        (e.get("code")?.as_str()? == "content_filter").then(|| {
            let results = e
                .get("innererror")
                .and_then(|i| i.get("content_filter_result"));
            filtered("the prompt", results)
        })
    }

    /// An answer the content filter stopped: a choice whose
    /// `finish_reason` is `content_filter`.
    fn refused_answer(&self, body: &[u8]) -> Option<String> {
        // Every Azure answer carries `content_filter_results`; only a
        // stopped one has the value `"content_filter"`: the rest are not
        // parsed twice.
        memchr::memmem::find(body, b"\"content_filter\"")?;
        let v: Value = serde_json::from_slice(body).ok()?;
        let choice =
            v.get("choices")?.as_array()?.iter().find(|c| {
                c.get("finish_reason").and_then(Value::as_str) == Some("content_filter")
            })?;
        Some(filtered("the answer", choice.get("content_filter_results")))
    }
}

/// The message naming the content filter and the categories it flagged
/// (`hate`, `violence`, ... as Azure names them: a fixed set, not text the
/// client wrote).
fn filtered(what: &str, results: Option<&Value>) -> String {
    let flagged: Vec<&str> = results
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, r)| {
                    r.get("filtered").and_then(Value::as_bool) == Some(true)
                        || r.get("detected").and_then(Value::as_bool) == Some(true)
                })
                .map(|(k, _)| k.as_str())
                .filter(|k| {
                    k.len() <= 40 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
                .collect()
        })
        .unwrap_or_default();
    let why = if flagged.is_empty() {
        String::new()
    } else {
        format!(" (flagged: {})", flagged.join(", "))
    };
    format!("Azure OpenAI's content filter blocked {what}{why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> ProviderConfig {
        let yaml = format!(
            "providers: [{{id: az, kind: azure, base_url: 'https://r.openai.azure.com', api_keys: [k], models: [{{name: gpt-4o, deployment: 'my dep'}}], {extra}}}]"
        );
        Config::from_yaml(&yaml, &|_| None)
            .unwrap()
            .providers
            .remove(0)
    }

    #[test]
    fn paths_by_api_version_and_wire_api() {
        let c = config("api_version: 2024-10-21");
        assert_eq!(
            Azure.request_path(&c, c.format, "my dep", true),
            "/openai/deployments/my%20dep/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(c.aliases.get("gpt-4o").map(String::as_str), Some("my dep"));
        let c = config("api_version: 2025-04-01-preview, wire_api: responses");
        assert_eq!(
            Azure.request_path(&c, c.format, "d", false),
            "/openai/responses?api-version=2025-04-01-preview"
        );
        let c = config("api_version: v1");
        assert_eq!(
            Azure.request_path(&c, c.format, "d", false),
            "/openai/v1/chat/completions"
        );
        assert_eq!(Azure.list_path(&c), "/openai/v1/models");
        let c = config("api_version: v1, wire_api: responses");
        assert_eq!(
            Azure.request_path(&c, c.format, "d", false),
            "/openai/v1/responses"
        );
    }

    #[test]
    fn content_filter_messages() {
        let refusal = br#"{"error":{"message":"The response was filtered","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"},"jailbreak":{"filtered":false,"detected":false},"violence":{"filtered":false,"severity":"safe"}}}}}"#;
        assert_eq!(
            Azure.refusal_message(400, refusal).as_deref(),
            Some("Azure OpenAI's content filter blocked the prompt (flagged: hate)")
        );
        assert_eq!(Azure.refusal_message(429, refusal), None);
        assert_eq!(
            Azure.refusal_message(400, br#"{"error":{"code":"invalid_value"}}"#),
            None
        );
        let answer = br#"{"choices":[{"index":0,"finish_reason":"content_filter","message":{"role":"assistant","content":null},"content_filter_results":{"sexual":{"filtered":true,"severity":"medium"}}}]}"#;
        assert_eq!(
            Azure.refused_answer(answer).as_deref(),
            Some("Azure OpenAI's content filter blocked the answer (flagged: sexual)")
        );
        let fine = br#"{"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}]}"#;
        assert_eq!(Azure.refused_answer(fine), None);
    }
}
