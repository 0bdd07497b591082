//! Token usage as Anthropic reports it (`usage` on a message body and on
//! `message_delta`, `message.usage` on `message_start`), read the same way
//! by every path: the decoders here and the same-format relay
//! ([`crate::UsageTally`]).
//!
//! Anthropic's `input_tokens` excludes cache reads and cache writes; the
//! IR's includes both (OpenAI style), so they are folded in here.

use serde_json::Value;

use crate::common::count_at;
use crate::Usage;

/// Top-level keys of a body or event where [`usage_object`] looks.
pub(crate) const USAGE_KEYS: &[&str] = &["usage", "message"];

/// The usage object of a message body, a `message_delta` (`usage`) or a
/// `message_start` (`message.usage`).
pub(crate) fn usage_object(v: &Value) -> Option<&Value> {
    v.get("usage")
        .filter(|u| u.is_object())
        .or_else(|| v.get("message")?.get("usage").filter(|u| u.is_object()))
}

/// The counts of one usage report, in Anthropic's convention. A stream
/// splits them: `message_start` has the input, `message_delta` the output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
    cache_creation_1h: Option<u64>,
}

impl Counts {
    /// Reads a usage object.
    pub(crate) fn read(u: &Value) -> Self {
        Counts {
            input: count_at(u, &["input_tokens"]),
            output: count_at(u, &["output_tokens"]),
            cache_read: count_at(u, &["cache_read_input_tokens"]),
            cache_creation: count_at(u, &["cache_creation_input_tokens"]),
            cache_creation_1h: count_at(u, &["cache_creation", "ephemeral_1h_input_tokens"]),
        }
    }

    /// A later report: what it says replaces what earlier ones said.
    pub(crate) fn update(&mut self, later: &Counts) {
        self.input = later.input.or(self.input);
        self.output = later.output.or(self.output);
        self.cache_read = later.cache_read.or(self.cache_read);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
        self.cache_creation_1h = later.cache_creation_1h.or(self.cache_creation_1h);
    }

    /// The neutral usage (cache counts folded into the input).
    pub(crate) fn to_ir(self) -> Usage {
        let mut u = super::usage_to_ir(
            self.input.unwrap_or(0),
            self.output.unwrap_or(0),
            self.cache_read,
            self.cache_creation,
        );
        u.cache_creation_1h_input_tokens = self.cache_creation_1h.filter(|n| *n > 0);
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_reports_add_up() {
        let start = json!({"type":"message_start","message":{"usage":
            {"input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1}}});
        let delta = json!({"type":"message_delta","usage":{"output_tokens":9}});
        let mut c = Counts::read(usage_object(&start).unwrap());
        c.update(&Counts::read(usage_object(&delta).unwrap()));
        let u = c.to_ir();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (10, 9, Some(7))
        );
        let huge = json!({"input_tokens":u64::MAX,"cache_read_input_tokens":u64::MAX});
        assert_eq!(Counts::read(&huge).to_ir().input_tokens, u64::MAX);
    }
}
