//! Token usage as Gemini reports it (`usageMetadata`, or `usage_metadata`
//! from snake_case clients, on a body and on every stream chunk), read the
//! same way by every path: the decoders here and the same-format relay
//! ([`crate::UsageTally`]).
//!
//! The IR's `input_tokens` includes `toolUsePromptTokenCount` (the prompt
//! of tool-use turns, billed as input) and its `output_tokens` includes
//! `thoughtsTokenCount` (Gemini's `candidatesTokenCount` excludes it).

use serde_json::Value;

use super::get_any;
use crate::common::count_at;
use crate::Usage;

/// Top-level keys of a body or chunk where [`usage_object`] looks.
pub(crate) const USAGE_KEYS: &[&str] = &["usageMetadata", "usage_metadata"];

/// The usage object of a response body or stream chunk, if it has one.
pub(crate) fn usage_object(v: &Value) -> Option<&Value> {
    get_any(v.as_object()?, "usageMetadata", "usage_metadata").filter(|u| u.is_object())
}

/// The counts of one usage report; a field the report leaves out (or that
/// is not a non-negative integer) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    prompt: Option<u64>,
    tool_use_prompt: Option<u64>,
    candidates: Option<u64>,
    thoughts: Option<u64>,
    cached: Option<u64>,
}

/// A count under its camelCase or snake_case name.
fn either(u: &Value, camel: &str, snake: &str) -> Option<u64> {
    count_at(u, &[camel]).or_else(|| count_at(u, &[snake]))
}

impl Counts {
    /// Reads a usage object.
    pub(crate) fn read(u: &Value) -> Self {
        Counts {
            prompt: either(u, "promptTokenCount", "prompt_token_count"),
            tool_use_prompt: either(u, "toolUsePromptTokenCount", "tool_use_prompt_token_count"),
            candidates: either(u, "candidatesTokenCount", "candidates_token_count"),
            thoughts: either(u, "thoughtsTokenCount", "thoughts_token_count"),
            cached: either(u, "cachedContentTokenCount", "cached_content_token_count"),
        }
    }

    /// A later report: what it says replaces what earlier ones said.
    pub(crate) fn update(&mut self, later: &Counts) {
        self.prompt = later.prompt.or(self.prompt);
        self.tool_use_prompt = later.tool_use_prompt.or(self.tool_use_prompt);
        self.candidates = later.candidates.or(self.candidates);
        self.thoughts = later.thoughts.or(self.thoughts);
        self.cached = later.cached.or(self.cached);
    }

    /// The neutral usage.
    pub(crate) fn to_ir(self) -> Usage {
        Usage {
            input_tokens: self
                .prompt
                .unwrap_or(0)
                .saturating_add(self.tool_use_prompt.unwrap_or(0)),
            output_tokens: self
                .candidates
                .unwrap_or(0)
                .saturating_add(self.thoughts.unwrap_or(0)),
            cached_input_tokens: self.cached,
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: self.thoughts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_use_prompt_and_thoughts_count() {
        let v = json!({"usageMetadata":{"promptTokenCount":8,"toolUsePromptTokenCount":5,
            "candidatesTokenCount":2,"thoughtsTokenCount":3,"cachedContentTokenCount":1}});
        let u = Counts::read(usage_object(&v).unwrap()).to_ir();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.reasoning_tokens
            ),
            (13, 5, Some(1), Some(3))
        );
        let snake = json!({"usage_metadata":{"prompt_token_count":4}});
        assert_eq!(
            Counts::read(usage_object(&snake).unwrap())
                .to_ir()
                .input_tokens,
            4
        );
        let huge =
            json!({"usageMetadata":{"candidatesTokenCount":u64::MAX,"thoughtsTokenCount":9}});
        assert_eq!(
            Counts::read(usage_object(&huge).unwrap())
                .to_ir()
                .output_tokens,
            u64::MAX
        );
    }
}
