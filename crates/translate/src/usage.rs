//! Token usage, counted the same way whatever path an answer takes.
//!
//! Each format module has a `usage` file: where that format reports usage
//! ([`usage_object`](crate::openai_chat) per format), how one report reads
//! and how reports over a stream add up. The translating decoders, the
//! same-format relay ([`crate::passthrough`]) and the non-streaming paths
//! all go through it, so the same upstream answer is counted identically
//! for rate limits and cost whatever the client's format.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{anthropic, gemini, openai_chat, openai_responses, Format, Usage};

/// The running counts of one format.
#[derive(Debug, Clone, Copy)]
enum Counts {
    Chat(openai_chat::usage::Counts),
    Responses(openai_responses::usage::Counts),
    Anthropic(anthropic::usage::Counts),
    Gemini(gemini::usage::Counts),
}

/// The usage of one answer of a given format, read from its body or added
/// up over its stream events.
#[derive(Debug, Clone, Copy)]
pub struct UsageTally {
    counts: Counts,
    seen: bool,
}

impl UsageTally {
    /// An empty tally for answers in `fmt`.
    pub fn new(fmt: Format) -> Self {
        let counts = match fmt {
            Format::OpenAiChat => Counts::Chat(Default::default()),
            Format::OpenAiResponses => Counts::Responses(Default::default()),
            Format::Anthropic => Counts::Anthropic(Default::default()),
            Format::Gemini => Counts::Gemini(Default::default()),
        };
        UsageTally {
            counts,
            seen: false,
        }
    }

    /// Reads the usage that `v` (a parsed response body or stream event)
    /// reports, if any; true when it reported some.
    pub fn add(&mut self, v: &Value) -> bool {
        if let Value::Array(items) = v {
            // Gemini without `alt=sse`: a JSON array of chunks.
            return items
                .iter()
                .fold(false, |found, item| self.add(item) | found);
        }
        let found = match &mut self.counts {
            Counts::Chat(c) => openai_chat::usage::usage_object(v)
                .map(|u| c.update(&openai_chat::usage::Counts::read(u))),
            Counts::Responses(c) => openai_responses::usage::usage_object(v)
                .map(|u| c.update(&openai_responses::usage::Counts::read(u))),
            Counts::Anthropic(c) => anthropic::usage::usage_object(v)
                .map(|u| c.update(&anthropic::usage::Counts::read(u))),
            Counts::Gemini(c) => {
                gemini::usage::usage_object(v).map(|u| c.update(&gemini::usage::Counts::read(u)))
            }
        };
        self.seen |= found.is_some();
        found.is_some()
    }

    /// What the reports so far add up to; `None` when there was none.
    pub fn usage(&self) -> Option<Usage> {
        if !self.seen {
            return None;
        }
        Some(match self.counts {
            Counts::Chat(c) => c.to_ir(),
            Counts::Responses(c) => c.to_ir(),
            Counts::Anthropic(c) => c.to_ir(),
            Counts::Gemini(c) => c.to_ir(),
        })
    }
}

/// The top-level keys under which `fmt` reports usage.
fn usage_keys(fmt: Format) -> &'static [&'static str] {
    match fmt {
        Format::OpenAiChat => openai_chat::usage::USAGE_KEYS,
        Format::OpenAiResponses => openai_responses::usage::USAGE_KEYS,
        Format::Anthropic => anthropic::usage::USAGE_KEYS,
        Format::Gemini => gemini::usage::USAGE_KEYS,
    }
}

/// True when a stream event's data may report usage: an event without any
/// format's usage key cannot, and need not be parsed for it.
pub fn may_report_usage(data: &[u8]) -> bool {
    // Every format's usage key starts with `"usage` (`usageMetadata` too;
    // Responses' `response` and Anthropic's `message` hold a `usage` key).
    memchr::memmem::find(data, b"\"usage").is_some()
}

/// Only the keys any format reports usage under: the rest of a body is
/// checked to be JSON and skipped without being built.
#[derive(Deserialize)]
struct UsageKeys {
    usage: Option<Value>,
    #[serde(rename = "usageMetadata")]
    usage_metadata_camel: Option<Value>,
    usage_metadata: Option<Value>,
    message: Option<Value>,
    response: Option<Value>,
}

/// The usage of a whole response body in `fmt`, the same as its decoder
/// reads (`decode_response(..).usage`), without building a `Value` of the
/// whole answer. `Err` when `body` is not JSON.
pub fn usage_of_body(fmt: Format, body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    let mut tally = UsageTally::new(fmt);
    match serde_json::from_slice::<UsageKeys>(body) {
        Ok(k) => {
            let mut m = Map::new();
            let found = [
                ("usage", k.usage),
                ("usageMetadata", k.usage_metadata_camel),
                ("usage_metadata", k.usage_metadata),
                ("message", k.message),
                ("response", k.response),
            ];
            for (key, v) in found {
                if let Some(v) = v.filter(|_| usage_keys(fmt).contains(&key)) {
                    m.insert(key.to_owned(), v);
                }
            }
            tally.add(&Value::Object(m));
        }
        // Not an object, a key of another type than expected, a duplicate
        // key...: the whole document decides.
        Err(_) => {
            let v: Value = serde_json::from_slice(body)?;
            tally.add(&v);
        }
    }
    Ok(tally.usage())
}
