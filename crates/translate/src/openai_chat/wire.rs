//! JSON shapes of Chat Completions that requests, responses and streams
//! share: usage (both ways) and tool calls (written).

use serde::{Deserialize, Serialize};

use crate::Usage;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UsageIn {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetailsIn>,
    completion_tokens_details: Option<CompletionDetailsIn>,
    /// DeepSeek's cache hit count.
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptDetailsIn {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionDetailsIn {
    reasoning_tokens: Option<u64>,
}

impl UsageIn {
    pub(super) fn into_ir(self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cached_input_tokens: self
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .or(self.prompt_cache_hit_tokens),
            cache_creation_input_tokens: None,
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

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
