//! `kind: anthropic`: Anthropic's Messages API.

use apiproxy_translate::Format;
use serde_json::Value;

use super::{listed_ids, versioned, Kind};
use crate::config::ProviderConfig;
use crate::upstream::ratelimit::{RateLimitHeaders, ANTHROPIC_HEADERS};

/// Anthropic.
#[derive(Debug)]
pub struct Anthropic;

impl Kind for Anthropic {
    fn request_path(
        &self,
        config: &ProviderConfig,
        _wire: Format,
        _model: &str,
        _stream: bool,
    ) -> String {
        format!("{}/messages", versioned(&config.base.path, "/v1"))
    }

    fn count_tokens_path(&self, config: &ProviderConfig, _model: &str) -> Option<String> {
        Some(format!(
            "{}/messages/count_tokens",
            versioned(&config.base.path, "/v1")
        ))
    }

    fn list_path(&self, config: &ProviderConfig) -> String {
        // The list is paged, 20 by default: ask for all in one page.
        match &config.models_path {
            Some(p) => format!("{p}?limit=1000"),
            None => format!("{}/models?limit=1000", versioned(&config.base.path, "/v1")),
        }
    }

    fn parse_model_list(&self, body: &Value) -> Result<Vec<String>, String> {
        listed_ids(body, "data", "id")
    }

    fn auth_headers(
        &self,
        _config: &ProviderConfig,
        key: Option<&str>,
        out: &mut Vec<(&'static str, String)>,
    ) {
        if let Some(k) = key {
            out.push(("x-api-key", k.to_owned()));
        }
        out.push(("anthropic-version", "2023-06-01".to_owned()));
    }

    fn ratelimit_headers(&self) -> &'static RateLimitHeaders {
        &ANTHROPIC_HEADERS
    }
}
