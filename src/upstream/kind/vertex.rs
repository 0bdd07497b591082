//! `kind: vertex`: Google Vertex AI. One provider serves two publishers,
//! each in its own wire format: Gemini (`publishers/google`,
//! `:generateContent`, Gemini's format) and Claude (`publishers/anthropic`,
//! `:rawPredict`, Anthropic's Messages with the model in the path and
//! `anthropic_version` in the body). Authenticated with an OAuth access
//! token: fetched with a service account (`service_account.rs`) or given.

use apiproxy_translate::Format;
use bytes::Bytes;
use serde_json::Value;

use super::{encode_segment, Credential, Kind};
use crate::config::vertex::{Publisher, VertexAuth, VertexSettings};
use crate::config::ProviderConfig;
use crate::upstream::ratelimit::{RateLimitHeaders, NO_HEADERS};

/// Google Vertex AI.
#[derive(Debug)]
pub struct Vertex;

/// The API version Claude on Vertex is sent, in the body.
const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The settings of a vertex provider (the config gives every `kind:
/// vertex` provider its settings; a request never reaches one without).
fn settings(config: &ProviderConfig) -> Option<&VertexSettings> {
    config.vertex.as_deref()
}

/// `{base}/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/`.
fn models_prefix(config: &ProviderConfig, publisher: Publisher) -> String {
    let (project, location) = settings(config)
        .map(|s| (s.project.as_str(), s.location.as_str()))
        .unwrap_or_default();
    let publisher = match publisher {
        Publisher::Google => "google",
        Publisher::Anthropic => "anthropic",
    };
    // Project and location are checked by the config: path-safe as written.
    format!(
        "{}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/",
        config.base.path
    )
}

/// The model as one path segment, whatever it holds (`/`, `?`, `:` reach
/// no other endpoint); `@` stays, as in Claude's `name@version` (a legal
/// path character, written so by Google's own clients).
fn model_segment(model: &str) -> String {
    encode_segment(model).replace("%40", "@")
}

fn publisher(config: &ProviderConfig, model: &str) -> Publisher {
    settings(config).map_or(Publisher::Google, |s| s.publisher_of(model))
}

impl Kind for Vertex {
    fn request_path(
        &self,
        config: &ProviderConfig,
        _wire: Format,
        model: &str,
        stream: bool,
    ) -> String {
        let p = publisher(config, model);
        let prefix = models_prefix(config, p);
        let model = model_segment(model);
        match (p, stream) {
            (Publisher::Google, false) => format!("{prefix}{model}:generateContent"),
            (Publisher::Google, true) => format!("{prefix}{model}:streamGenerateContent?alt=sse"),
            (Publisher::Anthropic, false) => format!("{prefix}{model}:rawPredict"),
            (Publisher::Anthropic, true) => format!("{prefix}{model}:streamRawPredict"),
        }
    }

    fn model_format(&self, config: &ProviderConfig, model: &str) -> Format {
        match publisher(config, model) {
            Publisher::Google => Format::Gemini,
            Publisher::Anthropic => Format::Anthropic,
        }
    }

    fn finish_body(
        &self,
        _config: &ProviderConfig,
        wire: Format,
        count: bool,
        body: Bytes,
    ) -> Bytes {
        let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        match (wire, count) {
            // Claude's count takes the model in the body, as Anthropic's.
            (Format::Anthropic, true) => return body,
            (Format::Anthropic, false) => {
                obj.remove("model");
                obj.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
            }
            // Vertex's countTokens takes the request's fields at the top
            // (Gemini's API wraps them in `generateContentRequest`), and
            // the model in the path only.
            (Format::Gemini, true) => match obj.remove("generateContentRequest") {
                Some(Value::Object(inner)) => {
                    obj = inner;
                    obj.remove("model");
                }
                _ => return body,
            },
            _ => return body,
        }
        serde_json::to_vec(&obj).map_or(body, Bytes::from)
    }

    fn credential(&self, config: &ProviderConfig) -> Option<Box<dyn Credential>> {
        match &settings(config)?.auth {
            VertexAuth::ServiceAccount(_) => {
                Some(Box::new(super::service_account::AccessTokens::new(config)?))
            }
            VertexAuth::Token(_) => None,
        }
    }

    fn count_tokens_path(&self, config: &ProviderConfig, model: &str) -> Option<String> {
        let p = publisher(config, model);
        let prefix = models_prefix(config, p);
        Some(match p {
            Publisher::Google => format!("{prefix}{}:countTokens", model_segment(model)),
            Publisher::Anthropic => format!("{prefix}count-tokens:rawPredict"),
        })
    }

    /// Google's publisher models (Model Garden): used by health checks
    /// only, a vertex provider's models are configured.
    fn list_path(&self, config: &ProviderConfig) -> String {
        match &config.models_path {
            Some(p) => p.clone(),
            None => format!(
                "{}/v1beta1/publishers/google/models?pageSize=1000",
                config.base.path
            ),
        }
    }

    fn parse_model_list(&self, body: &Value) -> Result<Vec<String>, String> {
        let items = body
            .get("publisherModels")
            .and_then(Value::as_array)
            .ok_or("model list has no publisherModels array")?;
        Ok(items
            .iter()
            .filter_map(|m| m.get("name").and_then(Value::as_str))
            .map(|n| n.rsplit('/').next().unwrap_or(n).to_owned())
            .collect())
    }

    /// `key` is the access token the provider's credential fetched; a
    /// provider with a static `access_token` has none.
    fn auth_headers(
        &self,
        config: &ProviderConfig,
        key: Option<&str>,
        out: &mut Vec<(&'static str, String)>,
    ) {
        let fixed = match settings(config).map(|s| &s.auth) {
            Some(VertexAuth::Token(t)) => Some(t.as_str()),
            _ => None,
        };
        if let Some(token) = key.or(fixed) {
            out.push(("authorization", format!("Bearer {token}")));
        }
    }

    /// Claude on Vertex takes its API version in the body, not as a
    /// header.
    fn forwards(&self, name: &str) -> bool {
        name != "anthropic-version"
    }

    /// Vertex AI sends no rate-limit headers.
    fn ratelimit_headers(&self) -> &'static RateLimitHeaders {
        &NO_HEADERS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> ProviderConfig {
        let location = if extra.contains("location") {
            ""
        } else {
            "location: us-east5,"
        };
        let yaml = format!(
            "providers: [{{id: vx, kind: vertex, project: my-proj, {location} access_token: tok, models: [gemini-2.5-flash, claude-sonnet-4@20250514], {extra}}}]"
        );
        Config::from_yaml(&yaml, &|_| None)
            .unwrap()
            .providers
            .remove(0)
    }

    #[test]
    fn paths_and_formats_follow_the_publisher() {
        let c = config("");
        assert_eq!(c.base.host, "us-east5-aiplatform.googleapis.com");
        let pre = "/v1/projects/my-proj/locations/us-east5/publishers";
        let g = "gemini-2.5-flash";
        assert_eq!(Vertex.model_format(&c, g), Format::Gemini);
        assert_eq!(
            Vertex.request_path(&c, Format::Gemini, g, false),
            format!("{pre}/google/models/gemini-2.5-flash:generateContent")
        );
        assert_eq!(
            Vertex.request_path(&c, Format::Gemini, g, true),
            format!("{pre}/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
        );
        let a = "claude-sonnet-4@20250514";
        assert_eq!(Vertex.model_format(&c, a), Format::Anthropic);
        assert_eq!(
            Vertex.request_path(&c, Format::Anthropic, a, false),
            format!("{pre}/anthropic/models/claude-sonnet-4@20250514:rawPredict")
        );
        assert_eq!(
            Vertex.request_path(&c, Format::Anthropic, a, true),
            format!("{pre}/anthropic/models/claude-sonnet-4@20250514:streamRawPredict")
        );
        assert_eq!(
            Vertex.count_tokens_path(&c, a).as_deref(),
            Some(format!("{pre}/anthropic/models/count-tokens:rawPredict").as_str())
        );
        // `publisher` decides for every model.
        let c = config("publisher: anthropic, base_url: 'http://127.0.0.1:9/x'");
        assert_eq!(Vertex.model_format(&c, "my-tuned"), Format::Anthropic);
        assert_eq!(
            Vertex.request_path(&c, Format::Anthropic, "my-tuned", false),
            "/x/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/my-tuned:rawPredict"
        );
        let c = config("location: global");
        assert_eq!(c.base.host, "aiplatform.googleapis.com");
    }

    #[test]
    fn claudes_body_names_the_version_not_the_model() {
        let c = config("");
        let body = Bytes::from_static(br#"{"model":"claude-x","max_tokens":5,"messages":[]}"#);
        let out = Vertex.finish_body(&c, Format::Anthropic, false, body.clone());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
        assert!(v.get("model").is_none());
        assert_eq!(v["max_tokens"], 5);
        // A count keeps the model; Gemini's generation is left as encoded.
        assert_eq!(
            Vertex.finish_body(&c, Format::Anthropic, true, body.clone()),
            body
        );
        let gemini = Bytes::from_static(br#"{"contents":[]}"#);
        assert_eq!(
            Vertex.finish_body(&c, Format::Gemini, false, gemini.clone()),
            gemini
        );
        let count = Bytes::from_static(
            br#"{"generateContentRequest":{"model":"models/g","contents":[{"parts":[{"text":"hi"}]}]}}"#,
        );
        let v: Value =
            serde_json::from_slice(&Vertex.finish_body(&c, Format::Gemini, true, count)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"contents":[{"parts":[{"text":"hi"}]}]})
        );
    }

    #[test]
    fn a_static_token_is_the_bearer() {
        let c = config("");
        let mut h = Vec::new();
        Vertex.auth_headers(&c, None, &mut h);
        assert_eq!(h, [("authorization", "Bearer tok".to_owned())]);
        assert!(c.secrets.contains(&"tok".to_owned()));
        assert!(Vertex.credential(&c).is_none());
    }

    #[test]
    fn publisher_models_list() {
        let body = serde_json::json!({"publisherModels": [{"name": "publishers/google/models/gemini-2.5-pro"}]});
        assert_eq!(Vertex.parse_model_list(&body).unwrap(), ["gemini-2.5-pro"]);
    }
}
