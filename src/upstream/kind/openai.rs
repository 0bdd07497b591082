//! `kind: openai`: OpenAI's API (Chat Completions or, with
//! `wire_api: responses`, the Responses API) and the services that copy it.

use apiproxy_translate::Format;
use serde_json::Value;

use super::{listed_ids, versioned, Kind};
use crate::config::ProviderConfig;
use crate::upstream::ratelimit::{RateLimitHeaders, OPENAI_HEADERS};

/// OpenAI and its imitators.
#[derive(Debug)]
pub struct OpenAi;

impl Kind for OpenAi {
    fn request_path(
        &self,
        config: &ProviderConfig,
        wire: Format,
        _model: &str,
        _stream: bool,
    ) -> String {
        let v = versioned(&config.base.path, "/v1");
        match wire {
            Format::OpenAiResponses => format!("{v}/responses"),
            _ => format!("{v}/chat/completions"),
        }
    }

    fn list_path(&self, config: &ProviderConfig) -> String {
        match &config.models_path {
            Some(p) => p.clone(),
            None => format!("{}/models", versioned(&config.base.path, "/v1")),
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
            out.push(("authorization", format!("Bearer {k}")));
        }
    }

    fn ratelimit_headers(&self) -> &'static RateLimitHeaders {
        &OPENAI_HEADERS
    }
}
