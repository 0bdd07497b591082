//! Token usage as the Responses API reports it (`usage` on the response
//! object: the body, or `response.usage` in the stream's closing events),
//! read the same way by every path: the decoders here and the same-format
//! relay ([`crate::UsageTally`]).

use serde_json::Value;

use crate::common::count_at;
use crate::Usage;

/// Top-level keys of a body or event where [`usage_object`] looks.
pub(crate) const USAGE_KEYS: &[&str] = &["usage", "response"];

/// The usage object of a response body, or of a stream event carrying the
/// response object.
pub(crate) fn usage_object(v: &Value) -> Option<&Value> {
    let resp = v.get("response").filter(|r| r.is_object()).unwrap_or(v);
    resp.get("usage").filter(|u| u.is_object())
}

/// The counts of one usage report; a field the report leaves out (or that
/// is not a non-negative integer) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cached: Option<u64>,
    reasoning: Option<u64>,
}

impl Counts {
    /// Reads a usage object.
    pub(crate) fn read(u: &Value) -> Self {
        Counts {
            input: count_at(u, &["input_tokens"]),
            output: count_at(u, &["output_tokens"]),
            cached: count_at(u, &["input_tokens_details", "cached_tokens"]),
            reasoning: count_at(u, &["output_tokens_details", "reasoning_tokens"]),
        }
    }

    /// A later report: what it says replaces what earlier ones said.
    pub(crate) fn update(&mut self, later: &Counts) {
        self.input = later.input.or(self.input);
        self.output = later.output.or(self.output);
        self.cached = later.cached.or(self.cached);
        self.reasoning = later.reasoning.or(self.reasoning);
    }

    /// The neutral usage.
    pub(crate) fn to_ir(self) -> Usage {
        Usage {
            input_tokens: self.input.unwrap_or(0),
            output_tokens: self.output.unwrap_or(0),
            cached_input_tokens: self.cached,
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
    fn body_and_event_usage() {
        let body = json!({"usage":{"input_tokens":3,"output_tokens":4,
            "input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":2}}});
        let u = Counts::read(usage_object(&body).unwrap()).to_ir();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.reasoning_tokens
            ),
            (3, 4, Some(1), Some(2))
        );
        let ev = json!({"type":"response.completed","response":{"usage":{"output_tokens":9}}});
        assert_eq!(
            Counts::read(usage_object(&ev).unwrap())
                .to_ir()
                .output_tokens,
            9
        );
        assert!(
            usage_object(&json!({"type":"response.created","response":{"usage":null}})).is_none()
        );
    }
}
