//! Token usage, counted the same way whatever path an answer takes.
//!
//! Each format module has a `usage` file: where that format reports usage
//! ([`usage_object`](crate::openai_chat) per format), how one report reads
//! and how reports over a stream add up. The translating decoders, the
//! same-format relay ([`crate::passthrough`]) and the non-streaming paths
//! all go through it, so the same upstream answer is counted identically
//! for rate limits and cost whatever the client's format.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::finish::FinishReasons;
use crate::{anthropic, bedrock, gemini, openai_chat, openai_responses, Format, Usage};

/// The running counts of one format.
#[derive(Debug, Clone, Copy)]
enum Counts {
    Chat(openai_chat::usage::Counts),
    Responses(openai_responses::usage::Counts),
    Anthropic(anthropic::usage::Counts),
    Gemini(gemini::usage::Counts),
    Bedrock(bedrock::usage::Counts),
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
            Format::Bedrock => Counts::Bedrock(Default::default()),
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
        let found =
            match &mut self.counts {
                Counts::Chat(c) => openai_chat::usage::usage_object(v)
                    .map(|u| c.update(&openai_chat::usage::Counts::read(u))),
                Counts::Responses(c) => openai_responses::usage::usage_object(v)
                    .map(|u| c.update(&openai_responses::usage::Counts::read(u))),
                Counts::Anthropic(c) => anthropic::usage::usage_object(v)
                    .map(|u| c.update(&anthropic::usage::Counts::read(u))),
                Counts::Gemini(c) => gemini::usage::usage_object(v)
                    .map(|u| c.update(&gemini::usage::Counts::read(u))),
                Counts::Bedrock(c) => bedrock::usage::usage_object(v)
                    .map(|u| c.update(&bedrock::usage::Counts::read(u))),
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
            Counts::Bedrock(c) => c.to_ir(),
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
        Format::Bedrock => bedrock::usage::USAGE_KEYS,
    }
}

/// True when a stream event's data may report usage: an event without any
/// format's usage key cannot, and need not be parsed for it.
pub fn may_report_usage(data: &[u8]) -> bool {
    // Every format's usage key starts with `"usage` (`usageMetadata` too;
    // Responses' `response` and Anthropic's `message` hold a `usage` key).
    memchr::memmem::find(data, b"\"usage").is_some()
}

/// A body's top-level members under `fmt`'s usage keys (and, for a traced
/// request, the keys that say why it ended); every other member is checked
/// to be JSON and skipped without being built (as the format's decoder
/// skips what it does not read). `None` when the body is not an object. Of
/// a key given twice the last counts, as in a `Value`.
struct UsageMembers([&'static [&'static str]; 2]);

/// A top-level key: the wanted key it is, if any.
struct KeyIndex([&'static [&'static str]; 2]);

impl<'de> DeserializeSeed<'de> for KeyIndex {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<&'static str>, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeyIndex {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<&'static str>, E> {
        Ok(self
            .0
            .iter()
            .flat_map(|k| k.iter())
            .copied()
            .find(|k| *k == key))
    }
}

/// A body's list of choices (OpenAI Chat's `choices`, Gemini's
/// `candidates`, read only when its finish reasons are wanted), kept as what
/// `crate::finish` reads of it: each choice's `index` and reason. Building
/// the whole list, message text included, as a `Value` cost a traced
/// request more than the rest of its tracing. `Choices(false)` reads the
/// list, `Choices(true)` one choice; anything else reads as `null` (no
/// reasons).
struct Choices(bool);

/// A choice's members that are kept.
const CHOICE_KEYS: &[&str] = &["index", "finish_reason", "finishReason"];

impl<'de> DeserializeSeed<'de> for Choices {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Choices {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 {
            "a choice"
        } else {
            "a list of choices"
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.0 {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Null);
        }
        let mut out = Vec::new();
        while let Some(choice) = seq.next_element_seed(Choices(true))? {
            out.push(choice);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key_seed(KeyIndex([CHOICE_KEYS, &[]]))? {
            match key.filter(|_| self.0) {
                Some(k) => {
                    kept.insert(k.to_owned(), map.next_value::<Value>()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if self.0 {
            Value::Object(kept)
        } else {
            Value::Null
        })
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

impl<'de> DeserializeSeed<'de> for UsageMembers {
    type Value = Option<Map<String, Value>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UsageMembers {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Map::new();
        while let Some(key) = map.next_key_seed(KeyIndex(self.0))? {
            match key {
                // A list of choices is read for its reasons only: its
                // content is skipped as unread members are.
                Some(k @ ("choices" | "candidates")) => {
                    match map.next_value_seed(Choices(false))? {
                        Value::Null => {
                            found.remove(k);
                        }
                        v => {
                            found.insert(k.to_owned(), v);
                        }
                    }
                }
                Some(k) => match map.next_value::<Value>()? {
                    // `null` is no report (and hides an earlier one).
                    Value::Null => {
                        found.remove(k);
                    }
                    v => {
                        found.insert(k.to_owned(), v);
                    }
                },
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(found))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The usage of a whole response body in `fmt`, the same as its decoder
/// reads (`decode_response(..).usage`), without building a `Value` of the
/// whole answer. `Err` when `body` is not JSON.
pub fn usage_of_body(fmt: Format, body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    read_body(fmt, body, None)
}

/// [`usage_of_body`], and in the same pass over the body the finish reasons
/// it reports (`crate::finish`): for a traced request.
pub fn usage_and_finish_of_body(
    fmt: Format,
    body: &[u8],
) -> Result<(Option<Usage>, FinishReasons), serde_json::Error> {
    let mut finish = FinishReasons::default();
    let usage = read_body(fmt, body, Some(&mut finish))?;
    Ok((usage, finish))
}

fn read_body(
    fmt: Format,
    body: &[u8],
    finish: Option<&mut FinishReasons>,
) -> Result<Option<Usage>, serde_json::Error> {
    let mut tally = UsageTally::new(fmt);
    let finish_keys = if finish.is_some() {
        crate::finish::body_keys(fmt)
    } else {
        &[]
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let members = UsageMembers([usage_keys(fmt), finish_keys]).deserialize(&mut de)?;
    de.end()?;
    let v = match members {
        Some(m) => Value::Object(m),
        // Not an object (Gemini without `alt=sse` sends an array of
        // chunks): the whole document decides.
        None => serde_json::from_slice(body)?,
    };
    tally.add(&v);
    if let Some(f) = finish {
        crate::finish::read_finish(fmt, &v, f);
    }
    Ok(tally.usage())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `make fuzz` (response_decode): a member the format does not
    /// report usage under, holding a string that is not UTF-8. The decoder
    /// skips it unchecked; the relay's usage reader must skip it too, not
    /// refuse an answer the decoder reads.
    #[test]
    fn members_without_usage_are_skipped_like_the_decoder_skips_them() {
        let mut body = br#"{"id":"c","choices":[],"message":[{"fun"#.to_vec();
        body.push(0xb9);
        body.extend_from_slice(br#"tion":1}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        let decoded = crate::decode_response(Format::OpenAiChat, &body).expect("decodes");
        let relayed = usage_of_body(Format::OpenAiChat, &body).expect("reads");
        assert_eq!(relayed, decoded.usage);
        assert_eq!(relayed.map(|u| u.total()), Some(7));
        // Anthropic reads `message`: there the same bytes are refused.
        assert!(usage_of_body(Format::Anthropic, &body).is_err());
    }

    /// A traced body's choices are read for their reasons only: their
    /// content is skipped as an untraced read skips it (bytes the decoder
    /// skips are no reason to refuse a traced answer), and each choice's
    /// reason is found under its index.
    #[test]
    fn a_traced_read_skips_the_choices_content_and_keeps_their_reasons() {
        let mut body = br#"{"choices":[{"index":1,"message":{"content":"a"#.to_vec();
        body.push(0xb9);
        body.extend_from_slice(
            br#""},"finish_reason":"length"},{"index":0,"finish_reason":"stop","logprobs":[1,{"x":[]}]}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        );
        let (usage, reasons) = usage_and_finish_of_body(Format::OpenAiChat, &body).expect("reads");
        assert_eq!(
            usage,
            usage_of_body(Format::OpenAiChat, &body).expect("reads")
        );
        assert_eq!(reasons.into_vec(), ["stop", "length"]);
        let gemini = br#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":2}}"#;
        let (_, reasons) = usage_and_finish_of_body(Format::Gemini, gemini).expect("reads");
        assert_eq!(reasons.into_vec(), ["MAX_TOKENS"]);
        for odd in [
            &br#"{"choices":{"a":1}}"#[..],
            br#"{"choices":"x"}"#,
            br#"{"choices":[1,"a",null,[]]}"#,
        ] {
            let (_, reasons) = usage_and_finish_of_body(Format::OpenAiChat, odd).expect("reads");
            assert!(reasons.into_vec().is_empty());
        }
    }

    #[test]
    fn the_last_of_a_repeated_usage_key_counts() {
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4},"usage":null}"#;
        assert_eq!(
            usage_of_body(Format::OpenAiChat, body).expect("reads"),
            None
        );
        let body = br#"{"usage":null,"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        assert_eq!(
            usage_of_body(Format::OpenAiChat, body)
                .expect("reads")
                .map(|u| u.total()),
            Some(7)
        );
        assert!(usage_of_body(Format::OpenAiChat, b"{\"usage\":{}} x").is_err());
        assert_eq!(
            usage_of_body(Format::OpenAiChat, b"[1,2]").expect("reads"),
            None
        );
    }
}
