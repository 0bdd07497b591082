//! Format translation for apiproxy: pure code, no I/O.
//!
//! Every wire format has one module with the same shape:
//! - `decode_request(Value) -> ChatRequest` and `encode_request(&ChatRequest)`
//! - `decode_response(&[u8]) -> ChatResponse` and `encode_response(&ChatResponse)`
//! - `StreamDecoder` (one upstream SSE event → neutral [`StreamEvent`]s) and
//!   `StreamEncoder` (neutral events → the client's SSE bytes).
//!
//! The functions here dispatch on [`Format`], so the proxy can translate any
//! client format to any provider format through the neutral [`ir`].

pub mod anthropic;
pub mod bedrock;
mod body;
mod common;
pub mod count;
pub mod error;
pub mod finish;
pub mod gemini;
pub mod ir;
pub mod openai_chat;
pub mod openai_responses;
pub mod output;
pub mod passthrough;
pub mod signature;
pub mod sse;
mod usage;
pub mod whole;

use bytes::BytesMut;
use serde_json::Value;

pub use error::{error_body, stream_error_event, TranslateError};
pub use ir::*;
pub use sse::{SseEvent, SseParser};
pub use usage::{may_report_usage, usage_and_finish_of_body, usage_of_body, UsageTally};

/// A wire format, on the client side or the provider side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI `/v1/chat/completions`.
    OpenAiChat,
    /// OpenAI `/v1/responses`.
    OpenAiResponses,
    /// Anthropic `/v1/messages`.
    Anthropic,
    /// Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
    /// AWS Bedrock's Converse / ConverseStream (a provider format only: its
    /// stream is binary event-stream frames, read by
    /// [`bedrock::EventStreamParser`] instead of the SSE parser).
    Bedrock,
}

impl Format {
    /// A short stable name, used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenAiChat => "openai",
            Format::OpenAiResponses => "responses",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
            Format::Bedrock => "bedrock",
        }
    }

    /// The content type of a streamed answer in this format: SSE, or
    /// Bedrock's binary event stream.
    pub fn stream_content_type(self) -> &'static str {
        match self {
            Format::Bedrock => "application/vnd.amazon.eventstream",
            _ => "text/event-stream",
        }
    }
}

/// What a stream encoder needs to know about the client's request.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// The model name to show the client (the logical name it asked for);
    /// `None` shows the upstream's.
    pub model_override: Option<String>,
    /// The client asked for usage in the stream (OpenAI
    /// `stream_options.include_usage`); other formats always get it.
    pub include_usage: bool,
}

/// Turns one upstream SSE event into neutral events.
pub trait StreamDecode: Send {
    /// Decodes `ev`, pushing what it says onto `out`. Events that carry
    /// nothing (pings, `[DONE]`) push nothing.
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError>;
}

/// Turns neutral events into the client's SSE bytes.
pub trait StreamEncode: Send {
    /// Appends the bytes for `ev`.
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut);
    /// The upstream stream ended: appends the format's closing events
    /// (OpenAI `[DONE]`, Anthropic `message_stop`, ...), including any the
    /// upstream did not send (a missing finish reason or block stop).
    fn finish(&mut self, out: &mut BytesMut);
    /// The stream failed after it started: appends one error event in the
    /// format's own shape and whatever terminates the stream.
    fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut);
}

/// Bounds on the work one request's translation may do (the gateway sets
/// them from its config; [`Limits::default`] is what the plain functions use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes the schema rewrites of one request (Gemini's OpenAPI subset ↔
    /// JSON Schema, `$ref` inlining) may build in all; past it the request
    /// is refused.
    pub schema_rewrite_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            schema_rewrite_bytes: gemini::MAX_SCHEMA_REWRITE_BYTES,
        }
    }
}

/// Decodes a client request body (already parsed JSON) of format `fmt`.
pub fn decode_request(fmt: Format, body: Value) -> Result<ChatRequest, TranslateError> {
    decode_request_limited(fmt, body, &Limits::default())
}

/// [`decode_request`] under `limits`.
///
/// On `/v1/chat/completions`, a Gemini-style body (`contents`) or a
/// Claude-style body (`system` string/blocks, or messages with content blocks
/// of Anthropic types) is detected and decoded with its own decoder.
pub fn decode_request_limited(
    fmt: Format,
    body: Value,
    limits: &Limits,
) -> Result<ChatRequest, TranslateError> {
    if !body.is_object() {
        return Err(TranslateError::new("request body must be a JSON object"));
    }
    let shape = match fmt {
        Format::OpenAiChat => detect_chat_adapter(&body).unwrap_or(fmt),
        _ => fmt,
    };
    decode_body(fmt, shape, body::Body::decoded(body)?, limits)
}

/// [`decode_request_limited`] straight from the body's bytes: the array of
/// turns is decoded one element at a time, so no tree of the whole body is
/// ever held (a `Value` of short turns takes ~19× their bytes). `shape` is
/// the body's own shape: `client`, or on `/v1/chat/completions` the one
/// [`detect_chat_adapter`] finds (the caller has it without a tree).
pub fn decode_request_bytes(
    client: Format,
    shape: Format,
    bytes: &[u8],
    limits: &Limits,
) -> Result<ChatRequest, TranslateError> {
    decode_body(client, shape, body::Body::from_slice(bytes)?, limits)
}

/// A `client`-format request whose body has the `shape` format's fields,
/// by that format's decoder. A Gemini-style body on the chat endpoint keeps
/// the chat body's `model` and `stream`, which Gemini carries in the URL.
fn decode_body(
    client: Format,
    shape: Format,
    body: body::Body<'_>,
    limits: &Limits,
) -> Result<ChatRequest, TranslateError> {
    let mut req = decode_shape(client, shape, body, limits)?;
    signature::tag_request(&mut req, shape);
    Ok(req)
}

fn decode_shape(
    client: Format,
    shape: Format,
    body: body::Body<'_>,
    limits: &Limits,
) -> Result<ChatRequest, TranslateError> {
    match shape {
        Format::Gemini if client == Format::OpenAiChat => {
            let model = body
                .obj
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let stream = body
                .obj
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut req = gemini::request_decode::decode_body(body, limits)?;
            if let Some(m) = model {
                req.model = m;
            }
            req.stream = stream;
            Ok(req)
        }
        Format::Gemini => gemini::request_decode::decode_body(body, limits),
        Format::OpenAiChat => openai_chat::request_decode::decode_body(body),
        Format::OpenAiResponses => openai_responses::request_decode::decode_body(body),
        Format::Anthropic => anthropic::request_decode::decode_body(body),
        Format::Bedrock => Err(TranslateError::new(
            "Bedrock's Converse API is not a client format",
        )),
    }
}

/// Which foreign request shape a `/v1/chat/completions` body has, if any.
pub fn detect_chat_adapter(body: &Value) -> Option<Format> {
    if body.get("messages").is_none()
        && (body.get("contents").is_some() || body.get("input").is_some())
    {
        // `input` on the chat endpoint: a Gemini-style list of contents.
        return Some(Format::Gemini);
    }
    if body.get("system").is_some() {
        return Some(Format::Anthropic);
    }
    let anthropic_block = |b: &Value| {
        matches!(
            b.get("type").and_then(Value::as_str),
            Some("tool_use" | "tool_result" | "thinking" | "redacted_thinking")
        ) || (b.get("type").and_then(Value::as_str) == Some("image") && b.get("source").is_some())
    };
    let messages = body.get("messages")?.as_array()?;
    let claude_style = messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| blocks.iter().any(anthropic_block))
    });
    claude_style.then_some(Format::Anthropic)
}

/// Encodes a request for a provider speaking `fmt`. `req.model` must already
/// be the upstream's model name (Gemini carries it in the path instead).
pub fn encode_request(fmt: Format, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    encode_request_limited(fmt, req, &Limits::default())
}

/// [`encode_request`] under `limits`.
pub fn encode_request_limited(
    fmt: Format,
    req: &ChatRequest,
    limits: &Limits,
) -> Result<Vec<u8>, TranslateError> {
    // Thinking signed by another provider kind is dropped here.
    let req = &*signature::request_for(req, fmt);
    match fmt {
        Format::OpenAiChat => openai_chat::encode_request(req),
        Format::OpenAiResponses => openai_responses::encode_request(req),
        Format::Anthropic => anthropic::encode_request(req),
        Format::Gemini => gemini::encode_request_limited(req, limits),
        Format::Bedrock => bedrock::encode_request(req),
    }
}

/// The top-level fields [`encode_request`] for `fmt` fills with its own
/// default because `req` had none (Anthropic's required `max_tokens`): to
/// payload rules that set defaults, they count as absent.
pub fn defaulted_fields(fmt: Format, req: &ChatRequest) -> &'static [&'static str] {
    match fmt {
        Format::Anthropic => anthropic::defaulted_fields(req),
        Format::OpenAiChat | Format::OpenAiResponses | Format::Gemini | Format::Bedrock => &[],
    }
}

/// Decodes a provider's non-streaming response body.
/// Its thinking signatures come out wrapped with `fmt` (see [`signature`]).
pub fn decode_response(fmt: Format, body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let mut resp = match fmt {
        Format::OpenAiChat => openai_chat::decode_response(body),
        Format::OpenAiResponses => openai_responses::decode_response(body),
        Format::Anthropic => anthropic::decode_response(body),
        Format::Gemini => gemini::decode_response(body),
        Format::Bedrock => bedrock::decode_response(body),
    }?;
    signature::tag_response(&mut resp, fmt);
    Ok(resp)
}

/// Encodes a non-streaming response for a client speaking `fmt`.
pub fn encode_response(fmt: Format, resp: &ChatResponse) -> Vec<u8> {
    let resp = &*signature::response_for(resp, fmt);
    match fmt {
        Format::OpenAiChat => openai_chat::encode_response(resp),
        Format::OpenAiResponses => openai_responses::encode_response(resp),
        Format::Anthropic => anthropic::encode_response(resp),
        Format::Gemini => gemini::encode_response(resp),
        Format::Bedrock => bedrock::encode_response(resp),
    }
}

/// A decoder for a provider's stream in `fmt`.
pub fn stream_decoder(fmt: Format) -> Box<dyn StreamDecode> {
    let inner: Box<dyn StreamDecode> = match fmt {
        Format::OpenAiChat => Box::new(openai_chat::StreamDecoder::default()),
        Format::OpenAiResponses => Box::new(openai_responses::StreamDecoder::default()),
        Format::Anthropic => Box::new(anthropic::StreamDecoder::default()),
        Format::Gemini => Box::new(gemini::StreamDecoder::default()),
        Format::Bedrock => Box::new(bedrock::StreamDecoder::default()),
    };
    Box::new(signature::TaggingDecoder { inner, kind: fmt })
}

/// An encoder for a client's stream in `fmt`.
pub fn stream_encoder(fmt: Format, opts: StreamOptions) -> Box<dyn StreamEncode> {
    let inner: Box<dyn StreamEncode> = match fmt {
        Format::OpenAiChat => Box::new(openai_chat::StreamEncoder::new(opts)),
        Format::OpenAiResponses => Box::new(openai_responses::StreamEncoder::new(opts)),
        Format::Anthropic => Box::new(anthropic::StreamEncoder::new(opts)),
        Format::Gemini => Box::new(gemini::StreamEncoder::new(opts)),
        Format::Bedrock => Box::new(bedrock::StreamEncoder::default()),
    };
    Box::new(signature::UntaggingEncoder { inner, kind: fmt })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_endpoint_detects_foreign_shapes() {
        assert_eq!(
            detect_chat_adapter(&json!({"model":"m","messages":[{"role":"user","content":"hi"}]})),
            None
        );
        assert_eq!(
            detect_chat_adapter(
                &json!({"model":"m","contents":[{"role":"user","parts":[{"text":"hi"}]}]})
            ),
            Some(Format::Gemini)
        );
        assert_eq!(
            detect_chat_adapter(&json!({"model":"m","system":"be brief","messages":[]})),
            Some(Format::Anthropic)
        );
        assert_eq!(
            detect_chat_adapter(&json!({"model":"m","messages":[{"role":"user","content":[
                {"type":"tool_result","tool_use_id":"t1","content":"42"}]}]})),
            Some(Format::Anthropic)
        );
        // OpenAI's own content parts are not mistaken for Anthropic blocks.
        assert_eq!(
            detect_chat_adapter(&json!({"model":"m","messages":[{"role":"user","content":[
                {"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"http://x"}}]}]})),
            None
        );
    }
}
