//! Serialize-only shapes of the Responses `response` object and its output
//! items, written by the non-streaming encoder and by the stream encoder.

use serde::Serialize;
use serde_json::Value;

use crate::{FinishReason, Usage};

#[derive(Serialize)]
pub(super) struct Part<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'static [Value]>,
}

impl<'a> Part<'a> {
    pub(super) fn output_text(text: &'a str) -> Self {
        Part {
            ty: "output_text",
            text,
            annotations: Some(&[]),
        }
    }
    pub(super) fn summary(text: &'a str) -> Self {
        Part {
            ty: "summary_text",
            text,
            annotations: None,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutItem<'a> {
    Reasoning {
        id: &'a str,
        summary: Vec<Part<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<Part<'a>>,
    },
    FunctionCall {
        id: &'a str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'static str,
    },
}

#[derive(Serialize)]
pub(super) struct IncompleteDetails {
    reason: &'static str,
}

#[derive(Serialize)]
struct CachedDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningDetails {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
pub(super) struct UsageOut {
    input_tokens: u64,
    input_tokens_details: CachedDetails,
    output_tokens: u64,
    output_tokens_details: ReasoningDetails,
    total_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        UsageOut {
            input_tokens: u.input_tokens,
            input_tokens_details: CachedDetails {
                cached_tokens: u.cached_input_tokens.unwrap_or(0),
            },
            output_tokens: u.output_tokens,
            output_tokens_details: ReasoningDetails {
                reasoning_tokens: u.reasoning_tokens.unwrap_or(0),
            },
            total_tokens: u.total(),
        }
    }
}

/// The response object, as the SDKs read it.
#[derive(Serialize)]
pub(super) struct RespObj<'a> {
    pub(super) id: &'a str,
    pub(super) object: &'static str,
    pub(super) created_at: u64,
    pub(super) status: &'static str,
    pub(super) error: Option<()>,
    pub(super) incomplete_details: Option<IncompleteDetails>,
    pub(super) model: &'a str,
    pub(super) output: Vec<OutItem<'a>>,
    pub(super) parallel_tool_calls: bool,
    pub(super) tool_choice: &'static str,
    pub(super) tools: &'static [Value],
    pub(super) usage: Option<UsageOut>,
}

/// The status and incomplete details for a finish reason.
pub(super) fn status_of(
    reason: Option<&FinishReason>,
) -> (&'static str, Option<IncompleteDetails>) {
    match reason {
        Some(FinishReason::Length) => (
            "incomplete",
            Some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
        ),
        Some(FinishReason::ContentFilter) => (
            "incomplete",
            Some(IncompleteDetails {
                reason: "content_filter",
            }),
        ),
        _ => ("completed", None),
    }
}

/// What a Responses client is told of why the answer ended, for a finish
/// reason: its `incomplete_details.reason` when there is one, else its
/// `status` (as [`status_of`] writes both).
pub(crate) fn finish_name(reason: Option<&FinishReason>) -> &'static str {
    match status_of(reason) {
        (_, Some(details)) => details.reason,
        (status, None) => status,
    }
}
