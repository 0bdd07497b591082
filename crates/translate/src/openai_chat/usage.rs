//! Token usage as Chat Completions reports it (`usage` on a response body
//! and on the last stream chunk), read the same way by every path: the
//! decoders here and the same-format relay ([`crate::UsageTally`]).

use serde_json::Value;

use crate::common::count_at;
use crate::Usage;

/// Top-level keys of a body or chunk where [`usage_object`] looks.
pub(crate) const USAGE_KEYS: &[&str] = &["usage"];

/// The usage object of a response body or stream chunk, if it has one.
pub(crate) fn usage_object(v: &Value) -> Option<&Value> {
    v.get("usage").filter(|u| u.is_object())
}

/// The counts of one usage report; a field the report leaves out (or that
/// is not a non-negative integer) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    prompt: Option<u64>,
    completion: Option<u64>,
    cached: Option<u64>,
    /// DeepSeek's cache hit count (`prompt_cache_hit_tokens`).
    cache_hit: Option<u64>,
    reasoning: Option<u64>,
}

impl Counts {
    /// Reads a usage object.
    pub(crate) fn read(u: &Value) -> Self {
        Counts {
            prompt: count_at(u, &["prompt_tokens"]),
            completion: count_at(u, &["completion_tokens"]),
            cached: count_at(u, &["prompt_tokens_details", "cached_tokens"]),
            cache_hit: count_at(u, &["prompt_cache_hit_tokens"]),
            reasoning: count_at(u, &["completion_tokens_details", "reasoning_tokens"]),
        }
    }

    /// A later report: what it says replaces what earlier ones said.
    pub(crate) fn update(&mut self, later: &Counts) {
        self.prompt = later.prompt.or(self.prompt);
        self.completion = later.completion.or(self.completion);
        self.cached = later.cached.or(self.cached);
        self.cache_hit = later.cache_hit.or(self.cache_hit);
        self.reasoning = later.reasoning.or(self.reasoning);
    }

    /// The neutral usage.
    pub(crate) fn to_ir(self) -> Usage {
        Usage {
            input_tokens: self.prompt.unwrap_or(0),
            output_tokens: self.completion.unwrap_or(0),
            cached_input_tokens: self.cached.or(self.cache_hit),
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: self.reasoning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_and_deepseek_cache_counts() {
        let openai = json!({"prompt_tokens":10,"completion_tokens":5,
            "prompt_tokens_details":{"cached_tokens":4},
            "completion_tokens_details":{"reasoning_tokens":2}});
        let u = Counts::read(&openai).to_ir();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.reasoning_tokens
            ),
            (10, 5, Some(4), Some(2))
        );
        let deepseek = json!({"prompt_tokens":10,"completion_tokens":5,
            "prompt_cache_hit_tokens":7,"prompt_cache_miss_tokens":3});
        assert_eq!(Counts::read(&deepseek).to_ir().cached_input_tokens, Some(7));
        // Counts of the wrong type are absent, not an error.
        let odd = json!({"prompt_tokens":-1,"completion_tokens":"5"});
        assert_eq!(Counts::read(&odd).to_ir(), Usage::default());
        assert!(usage_object(&json!({"usage":null})).is_none());
    }
}
