//! `kind: gemini`: Google's Gemini API (`generativelanguage.googleapis.com`).

use apiproxy_translate::Format;
use serde_json::Value;

use super::{encode_segment, listed_ids, versioned, Kind};
use crate::config::ProviderConfig;
use crate::upstream::ratelimit::{RateLimitHeaders, NO_HEADERS};

/// Google's Gemini API.
#[derive(Debug)]
pub struct Gemini;

impl Kind for Gemini {
    fn request_path(
        &self,
        config: &ProviderConfig,
        _wire: Format,
        model: &str,
        stream: bool,
    ) -> String {
        let v = versioned(&config.base.path, "/v1beta");
        // The model name is one path segment, whatever it holds: `#`, `?`,
        // `/../` or `:method` reach no other endpoint.
        let model = encode_segment(model);
        if stream {
            format!("{v}/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{v}/models/{model}:generateContent")
        }
    }

    fn count_tokens_path(&self, config: &ProviderConfig, model: &str) -> Option<String> {
        let v = versioned(&config.base.path, "/v1beta");
        Some(format!("{v}/models/{}:countTokens", encode_segment(model)))
    }

    fn list_path(&self, config: &ProviderConfig) -> String {
        match &config.models_path {
            Some(p) => p.clone(),
            None => format!(
                "{}/models?pageSize=1000",
                versioned(&config.base.path, "/v1beta")
            ),
        }
    }

    fn parse_model_list(&self, body: &Value) -> Result<Vec<String>, String> {
        listed_ids(body, "models", "name")
    }

    fn auth_headers(
        &self,
        _config: &ProviderConfig,
        key: Option<&str>,
        out: &mut Vec<(&'static str, String)>,
    ) {
        if let Some(k) = key {
            out.push(("x-goog-api-key", k.to_owned()));
        }
    }

    /// Gemini sends no rate-limit headers (its 429s carry a `RetryInfo`).
    fn ratelimit_headers(&self) -> &'static RateLimitHeaders {
        &NO_HEADERS
    }
}
