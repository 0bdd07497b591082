//! Token usage as Converse reports it (`usage` on a body and on the
//! stream's `metadata` event), read the same way by the decoders here and
//! by [`crate::UsageTally`].
//!
//! `inputTokens` excludes `cacheReadInputTokens` and
//! `cacheWriteInputTokens`; the IR's input includes both.

use serde_json::Value;

use crate::common::count_at;
use crate::Usage;

/// Top-level keys of a body or event where [`usage_object`] looks.
pub(crate) const USAGE_KEYS: &[&str] = &["usage"];

/// The usage object of a body or `metadata` event.
pub(crate) fn usage_object(v: &Value) -> Option<&Value> {
    v.get("usage").filter(|u| u.is_object())
}

/// The counts of one usage report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
}

impl Counts {
    /// Reads a usage object.
    pub(crate) fn read(u: &Value) -> Self {
        Counts {
            input: count_at(u, &["inputTokens"]),
            output: count_at(u, &["outputTokens"]),
            cache_read: count_at(u, &["cacheReadInputTokens"]),
            cache_write: count_at(u, &["cacheWriteInputTokens"]),
        }
    }

    /// A later report: what it says replaces what earlier ones said.
    pub(crate) fn update(&mut self, later: &Counts) {
        self.input = later.input.or(self.input);
        self.output = later.output.or(self.output);
        self.cache_read = later.cache_read.or(self.cache_read);
        self.cache_write = later.cache_write.or(self.cache_write);
    }

    /// The neutral usage (cache counts folded into the input).
    pub(crate) fn to_ir(self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .unwrap_or(0)
                .saturating_add(self.cache_read.unwrap_or(0))
                .saturating_add(self.cache_write.unwrap_or(0)),
            output_tokens: self.output.unwrap_or(0),
            cached_input_tokens: self.cache_read,
            cache_creation_input_tokens: self.cache_write,
            ..Usage::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_counts_fold_into_the_input() {
        let u = json!({"inputTokens": 3, "outputTokens": 5, "totalTokens": 20,
            "cacheReadInputTokens": 7, "cacheWriteInputTokens": 5});
        let ir = Counts::read(&u).to_ir();
        assert_eq!(
            (ir.input_tokens, ir.output_tokens, ir.cached_input_tokens),
            (15, 5, Some(7))
        );
        assert_eq!(ir.cache_creation_input_tokens, Some(5));
    }
}
