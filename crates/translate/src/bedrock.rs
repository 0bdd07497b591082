//! AWS Bedrock's Converse API (`POST /model/{modelId}/converse` and
//! `/converse-stream`): one request shape for every model on Bedrock.
//! A provider format only: no client endpoint speaks it, so a client
//! request is never decoded from it (the dispatch refuses that).
//!
//! - [`request_encode`]: IR → Converse body.
//! - [`response`]: Converse body → IR.
//! - [`encode`]: IR → Converse answers, whole and as stream frames (the
//!   format kept whole, and the decoders tested against it).
//! - [`event_stream`]: ConverseStream's binary event-stream frames →
//!   events the [`stream_decode`]r reads (one per frame, named by its
//!   `:event-type`).
//! - [`stream_decode`]: those events → neutral events.
//! - [`usage`]: where usage is reported and how it adds up.
//!
//! Usage convention: Bedrock's `inputTokens` excludes cache reads and
//! writes (`cacheReadInputTokens`, `cacheWriteInputTokens`), like
//! Anthropic's; the IR's includes both.

mod encode;
pub mod event_stream;
mod request_encode;
mod response;
mod stream_decode;
pub(crate) mod usage;

pub use encode::{encode_response, StreamEncoder};
pub use event_stream::{EventStreamParser, DEFAULT_MAX_FRAME_BYTES};
pub use request_encode::encode_request;
pub use response::decode_response;
pub use stream_decode::StreamDecoder;

use crate::FinishReason;

pub(crate) use encode::exception_frame;

/// SSE rules for the same-format relay, which never runs for Bedrock: no
/// client speaks Converse, so client and provider formats never match.
pub(crate) const SSE_RULES: crate::sse::SseRules = crate::sse::SseRules {
    event_names: true,
    done_marker: false,
    model_path: &[],
    body_model_path: &[],
    keepalive: crate::sse::COMMENT_KEEPALIVE,
};

/// Converse `stopReason` → IR.
fn finish_from_stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The message of a Bedrock error body (`{"message": "..."}`, also spelled
/// `Message` by some services), or of an exception frame's payload.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["message", "Message"]
        .iter()
        .find_map(|k| v.get(k)?.as_str())
        .map(str::to_owned)
}
