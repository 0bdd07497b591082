//! JSON shapes of Chat Completions that requests, responses and streams
//! share: usage (both ways) and tool calls (written).

use serde::Serialize;

use crate::Usage;

#[derive(Serialize)]
pub(super) struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetailsOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetailsOut>,
}

#[derive(Serialize)]
struct PromptDetailsOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetailsOut {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        UsageOut {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens.saturating_add(u.output_tokens),
            prompt_tokens_details: u
                .cached_input_tokens
                .map(|c| PromptDetailsOut { cached_tokens: c }),
            completion_tokens_details: u.reasoning_tokens.map(|r| CompletionDetailsOut {
                reasoning_tokens: r,
            }),
        }
    }
}

#[derive(Serialize)]
pub(super) struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FnCallOut<'a>,
}

#[derive(Serialize)]
struct FnCallOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

pub(super) fn tool_call_out<'a>(id: &'a str, name: &'a str, arguments: &'a str) -> ToolCallOut<'a> {
    ToolCallOut {
        id,
        kind: "function",
        function: FnCallOut {
            name,
            // Some servers choke on an empty arguments string.
            arguments: if arguments.trim().is_empty() {
                "{}"
            } else {
                arguments
            },
        },
    }
}
