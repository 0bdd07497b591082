//! Anthropic Messages wire format (`POST /v1/messages`), both as the client's
//! format and as the provider's.
//!
//! - [`request_decode`]: client body → IR; [`request_encode`]: IR → upstream body.
//! - [`response`]: upstream body → IR, IR → client body.
//! - [`stream_decode`]: upstream SSE → neutral events.
//! - [`stream_encode`]: neutral events → client SSE.
//! - [`usage`]: where usage is reported and how it adds up.
//! - [`wire`]: JSON shapes the body and the stream share.
//!
//! Usage convention: Anthropic's `input_tokens` excludes cache reads and
//! cache writes, the IR's includes both (OpenAI style). Decoders fold the
//! cache counts in, encoders take them out again.

pub(crate) mod request_decode;
mod request_encode;
mod response;
mod stream_decode;
mod stream_encode;
pub(crate) mod usage;
mod wire;

pub use request_decode::decode_request;
pub use request_encode::{
    auto_cache_marks, defaulted_fields, encode_request, native_structured_output,
    MAX_CACHE_BREAKPOINTS,
};
/// Claude's thinking settings, shared with Claude on Bedrock.
pub(crate) use request_encode::{max_tokens_of, thinking_budget};
pub use response::{decode_response, encode_response};
pub use stream_decode::StreamDecoder;
pub use stream_encode::StreamEncoder;

/// The tool that carries a JSON-schema answer for Anthropic models without
/// native structured outputs: the encoder forces it, the decoders turn its
/// call back into answer text (so the name is reserved).
pub const STRUCTURED_TOOL: &str = "apiproxy_structured_output";

/// How this format frames its stream, for same-format relaying.
pub(crate) const SSE_RULES: crate::sse::SseRules = crate::sse::SseRules {
    event_names: true,
    done_marker: false,
    model_path: &["message", "model"],
    body_model_path: &["model"],
    keepalive: crate::sse::COMMENT_KEEPALIVE,
};

use std::borrow::Cow;

use crate::common::now_secs;
use crate::{FinishReason, Usage};

/// Anthropic `stop_reason` → IR.
fn finish_from_stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// IR → Anthropic `stop_reason`. Reasons Anthropic itself defines pass
/// through `Other`; anything foreign becomes `end_turn`.
pub(crate) fn stop_reason_from_finish(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Other(s) => match s.as_str() {
            "end_turn"
            | "max_tokens"
            | "stop_sequence"
            | "tool_use"
            | "pause_turn"
            | "refusal"
            | "model_context_window_exceeded" => s,
            _ => "end_turn",
        },
    }
}

/// Anthropic counts → IR usage (input folded to include the cache counts).
fn usage_to_ir(
    input: u64,
    output: u64,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
) -> Usage {
    Usage {
        input_tokens: input
            .saturating_add(cache_read.unwrap_or(0))
            .saturating_add(cache_creation.unwrap_or(0)),
        output_tokens: output,
        cached_input_tokens: cache_read,
        cache_creation_input_tokens: cache_creation,
        cache_creation_1h_input_tokens: None,
        reasoning_tokens: None,
    }
}

/// IR usage → Anthropic counts (cache counts taken back out of the input).
fn usage_from_ir(u: &Usage) -> wire::WireUsage {
    let cache_read = u.cached_input_tokens.unwrap_or(0);
    let cache_creation = u.cache_creation_input_tokens.unwrap_or(0);
    wire::WireUsage {
        input_tokens: u
            .input_tokens
            .saturating_sub(cache_read)
            .saturating_sub(cache_creation),
        output_tokens: u.output_tokens,
        cache_creation_input_tokens: cache_creation,
        cache_read_input_tokens: cache_read,
    }
}

/// A fresh id in Anthropic's style (`msg_...`, `toolu_...`): there is no
/// random source here, so time and a process-wide counter make it unique.
fn synth_id(prefix: &str) -> String {
    format!("{prefix}{}", crate::common::unique_token())
}

/// Anthropic tool ids must match `^[a-zA-Z0-9_-]+$`; ids minted by other
/// providers may not. The same replacement is applied to `tool_use.id` and
/// `tool_result.tool_use_id`, so pairs still match. An empty id stays empty
/// (the API reports it).
fn tool_id(id: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.chars().all(ok) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(id.chars().map(|c| if ok(c) { c } else { '_' }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_both_ways() {
        assert_eq!(finish_from_stop_reason("end_turn"), FinishReason::Stop);
        assert_eq!(finish_from_stop_reason("stop_sequence"), FinishReason::Stop);
        assert_eq!(finish_from_stop_reason("max_tokens"), FinishReason::Length);
        assert_eq!(finish_from_stop_reason("tool_use"), FinishReason::ToolCalls);
        assert_eq!(
            finish_from_stop_reason("refusal"),
            FinishReason::ContentFilter
        );
        assert_eq!(
            finish_from_stop_reason("pause_turn"),
            FinishReason::Other("pause_turn".into())
        );
        assert_eq!(stop_reason_from_finish(&FinishReason::Stop), "end_turn");
        assert_eq!(stop_reason_from_finish(&FinishReason::Length), "max_tokens");
        assert_eq!(
            stop_reason_from_finish(&FinishReason::ToolCalls),
            "tool_use"
        );
        assert_eq!(
            stop_reason_from_finish(&FinishReason::ContentFilter),
            "refusal"
        );
        assert_eq!(
            stop_reason_from_finish(&FinishReason::Other("pause_turn".into())),
            "pause_turn"
        );
        assert_eq!(
            stop_reason_from_finish(&FinishReason::Other("RECITATION".into())),
            "end_turn"
        );
    }

    #[test]
    fn usage_convention_both_ways() {
        let u = usage_to_ir(100, 20, Some(1000), Some(50));
        assert_eq!(u.input_tokens, 1150);
        assert_eq!(u.cached_input_tokens, Some(1000));
        assert_eq!(u.cache_creation_input_tokens, Some(50));
        let w = usage_from_ir(&u);
        assert_eq!(
            (
                w.input_tokens,
                w.output_tokens,
                w.cache_read_input_tokens,
                w.cache_creation_input_tokens
            ),
            (100, 20, 1000, 50)
        );
        // Inconsistent counts from a foreign provider never underflow.
        let w = usage_from_ir(&Usage {
            input_tokens: 10,
            cached_input_tokens: Some(30),
            ..Usage::default()
        });
        assert_eq!(w.input_tokens, 0);
        assert_eq!(
            usage_to_ir(u64::MAX, 0, Some(5), None).input_tokens,
            u64::MAX
        );
    }

    #[test]
    fn ids() {
        let a = synth_id("msg_");
        let b = synth_id("msg_");
        assert!(a.starts_with("msg_") && a != b);
        assert_eq!(tool_id("toolu_01-A"), "toolu_01-A");
        assert_eq!(tool_id("call:1/x"), "call_1_x");
    }
}
