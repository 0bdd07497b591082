//! What differs between provider kinds, one file per kind: how a request
//! is addressed and authenticated, how the model list is asked for and
//! read, which rate-limit headers the answers carry. Everything else
//! (keys, routing, translation by wire format) is shared.
//!
//! Adding a kind: a `ProviderKind` value with its config facts (wire
//! format, default retryable statuses: `config/choices.rs`), a file here
//! implementing [`Kind`], its arm in [`of`], and the docs.
//!
//! Dispatch is a `&'static dyn Kind` fetched once per provider: no
//! allocation per request beyond the path and header strings the request
//! needs anyway.

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod openai;
mod service_account;
mod vertex;

use apiproxy_translate::Format;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use serde_json::Value;

use super::http::SendError;
pub use super::http::Signable;
use super::ratelimit::RateLimitHeaders;
use crate::config::{ProviderConfig, ProviderKind};

/// One provider kind's API, as the shared upstream code needs it.
pub trait Kind: std::fmt::Debug + Send + Sync {
    /// The path (and query) of a generation request for upstream `model`
    /// (the provider's own name for it), in wire format `wire` (its
    /// `config.format`, or the Responses API under `wire_api: auto`).
    fn request_path(
        &self,
        config: &ProviderConfig,
        wire: Format,
        model: &str,
        stream: bool,
    ) -> String;

    /// The wire format of requests for upstream `model`: the provider's
    /// (`config.format`), unless the kind serves models in more than one
    /// (Vertex AI: Claude in Anthropic's, Gemini in Gemini's).
    fn model_format(&self, config: &ProviderConfig, _model: &str) -> Format {
        config.format
    }

    /// The encoded body (`count`: of a token count) in wire format `wire`,
    /// as this kind's endpoint takes it (Vertex AI's Claude: the model in
    /// the path, the API version in the body). Default: as encoded.
    fn finish_body(
        &self,
        _config: &ProviderConfig,
        _wire: Format,
        _count: bool,
        body: Bytes,
    ) -> Bytes {
        body
    }

    /// A credential this provider fetches at run time and caches (Vertex
    /// AI's access tokens from a service account); `None`: its keys, or
    /// nothing, authenticate it.
    fn credential(&self, _config: &ProviderConfig) -> Option<Box<dyn Credential>> {
        None
    }

    /// The path of the token-count endpoint for upstream `model`; `None`
    /// for a kind without one (OpenAI: Chat Completions has none, so the
    /// gateway counts locally).
    fn count_tokens_path(&self, _config: &ProviderConfig, _model: &str) -> Option<String> {
        None
    }

    /// The path (and query) of the model-list request.
    fn list_path(&self, config: &ProviderConfig) -> String;

    /// The model ids in a model-list answer.
    fn parse_model_list(&self, body: &Value) -> Result<Vec<String>, String>;

    /// Authentication and protocol headers, with API key `key` when the
    /// provider has keys.
    fn auth_headers(
        &self,
        config: &ProviderConfig,
        key: Option<&str>,
        out: &mut Vec<(&'static str, String)>,
    );

    /// Signs the request as it is sent (AWS SigV4), pushing the headers
    /// that carry the signature onto `out`. Called last, with the final
    /// body and the `Host` actually sent; kinds authenticated by
    /// [`Kind::auth_headers`] sign nothing. `Err` says why it cannot be
    /// signed, never with a secret.
    fn sign(
        &self,
        _config: &ProviderConfig,
        _req: &Signable<'_>,
        _out: &mut Vec<(&'static str, String)>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Whether the client's protocol header `name` (`anthropic-beta`,
    /// `anthropic-version`), forwarded to a same-format upstream, goes to
    /// this kind. Default: yes.
    fn forwards(&self, _name: &str) -> bool {
        true
    }

    /// The rate-limit headers its answers carry.
    fn ratelimit_headers(&self) -> &'static RateLimitHeaders;

    /// A refusal (`status`, `body`) the client must be told of in its own
    /// words rather than the provider's: the message to send it in the
    /// client's error shape. `None`: relayed as usual.
    fn refusal_message(&self, _status: u16, _body: &[u8]) -> Option<String> {
        None
    }

    /// A good (2xx) whole answer that is in fact a refusal (Azure's
    /// content filter emptying the answer): the message of the 400 the
    /// client gets instead. `None`: relayed as usual.
    fn refused_answer(&self, _body: &[u8]) -> Option<String> {
        None
    }
}

/// A bearer token fetched at run time, cached and shared by a provider's
/// requests. The provider holds one; every attempt awaits it before
/// building its headers, and it is handed to [`Kind::auth_headers`] as
/// the key.
#[async_trait::async_trait]
pub trait Credential: std::fmt::Debug + Send + Sync {
    /// A token valid for a while yet: the cached one, or a fresh one
    /// (one fetch at a time, whoever asks meanwhile waits for it). A
    /// failure is the attempt's, like a refused connection.
    async fn token(&self, connector: &Connector) -> Result<std::sync::Arc<str>, SendError>;
}

/// The implementation of `kind`.
pub fn of(kind: ProviderKind) -> &'static dyn Kind {
    match kind {
        ProviderKind::OpenAi => &openai::OpenAi,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
        ProviderKind::Azure => &azure::Azure,
        ProviderKind::Bedrock => &bedrock::Bedrock,
        ProviderKind::Vertex => &vertex::Vertex,
    }
}

/// The `field` of each element of the array `items` in a model list, with
/// Google's `models/` prefix taken off.
fn listed_ids(body: &Value, items: &str, field: &str) -> Result<Vec<String>, String> {
    let items = body
        .get(items)
        .and_then(Value::as_array)
        .ok_or("model list has no data array")?;
    Ok(items
        .iter()
        .filter_map(|m| m.get(field).and_then(Value::as_str))
        .map(|id| id.strip_prefix("models/").unwrap_or(id).to_owned())
        .collect())
}

/// A base URL without a path gets the API's default version prefix; one
/// with a path is used as given (as the SDKs treat `base_url`).
fn versioned<'a>(base: &'a str, default: &'a str) -> &'a str {
    if base.is_empty() {
        default
    } else {
        base
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
