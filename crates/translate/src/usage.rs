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
struct UsageMembers<'f> {
    keys: [&'static [&'static str]; 2],
    /// A traced request's finish reasons, which a list of choices notes
    /// as it is read, and the keys of a choice's reason.
    finish: Option<(&'f mut FinishReasons, &'static [&'static str])>,
}

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

/// A visitor's methods for JSON's scalars (`true`, a number, a string,
/// `null`), each read as `$value`: what a seed that wants a list or an
/// object makes of anything else.
macro_rules! scalars_read_as {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// A body's list of choices (OpenAI Chat's `choices`, Gemini's
/// `candidates`, read only when its finish reasons are wanted): each
/// choice's reason noted straight into the request's [`FinishReasons`], as
/// `crate::finish` reads a choice (its `index`, else its place; the first
/// of the format's reason keys that holds a string). Nothing else of the
/// list is built: as a `Value` it cost a traced request more than the rest
/// of its tracing. Anything but a list notes nothing.
struct Choices<'f> {
    out: &'f mut FinishReasons,
    /// The keys a choice's reason is under, the first found first.
    reason_keys: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for Choices<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Choices<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of choices")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut place = 0u32;
        while let Some(choice) = seq.next_element_seed(Choice(self.reason_keys))? {
            if let Some((index, reason)) = choice {
                self.out.note(index.unwrap_or(place), &reason);
            }
            place = place.saturating_add(1);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    scalars_read_as!(());
}

/// One choice: its `index` (when it is one) and its reason (when it has
/// one). Of a key given twice the last counts, as in a `Value`.
struct Choice(&'static [&'static str]);

/// The most reason keys a format has (Gemini: two spellings).
const REASON_KEYS: usize = 2;

impl<'de> DeserializeSeed<'de> for Choice {
    type Value = Option<(Option<u32>, String)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Choice {
    type Value = Option<(Option<u32>, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a choice")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut index = None;
        let mut reasons: [Option<String>; REASON_KEYS] = Default::default();
        while let Some(key) = map.next_key_seed(KeyIndex([&["index"], self.0]))? {
            match key {
                Some("index") => index = map.next_value_seed(ScalarSeed)?.index(),
                Some(k) => {
                    let at = self.0.iter().position(|r| *r == k).unwrap_or(0);
                    let v = map.next_value_seed(ScalarSeed)?.text();
                    if let Some(slot) = reasons.get_mut(at) {
                        *slot = v;
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(reasons.into_iter().flatten().next().map(|r| (index, r)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    scalars_read_as!(None);
}

/// A choice's `index` or reason, read without building a `Value`: an
/// unsigned integer, a string, or anything else (skipped).
enum Scalar {
    Unsigned(u64),
    Text(String),
    Other,
}

impl Scalar {
    /// As an index: a number that fits a `u32` (as `Value::as_u64` reads it).
    fn index(self) -> Option<u32> {
        match self {
            Scalar::Unsigned(v) => u32::try_from(v).ok(),
            _ => None,
        }
    }

    /// As a reason: a string.
    fn text(self) -> Option<String> {
        match self {
            Scalar::Text(t) => Some(t),
            _ => None,
        }
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Unsigned(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::Unsigned))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_owned()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

impl<'de> DeserializeSeed<'de> for UsageMembers<'_> {
    type Value = Option<Map<String, Value>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UsageMembers<'_> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Map::new();
        let mut finish = self.finish;
        while let Some(key) = map.next_key_seed(KeyIndex(self.keys))? {
            match (key, finish.as_mut()) {
                // A list of choices is read for its reasons only: its
                // content is skipped as unread members are. A later list
                // replaces an earlier one.
                (Some("choices" | "candidates"), Some((out, reason_keys))) => {
                    out.clear();
                    map.next_value_seed(Choices { out, reason_keys })?;
                }
                (Some(k), _) => match map.next_value::<Value>()? {
                    // `null` is no report (and hides an earlier one).
                    Value::Null => {
                        found.remove(k);
                    }
                    v => {
                        found.insert(k.to_owned(), v);
                    }
                },
                (None, _) => {
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

    scalars_read_as!(None);
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
    mut finish: Option<&mut FinishReasons>,
) -> Result<Option<Usage>, serde_json::Error> {
    let mut tally = UsageTally::new(fmt);
    let finish_keys = if finish.is_some() {
        crate::finish::body_keys(fmt)
    } else {
        &[]
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let members = UsageMembers {
        keys: [usage_keys(fmt), finish_keys],
        finish: finish
            .as_deref_mut()
            .map(|f| (f, crate::finish::choice_reason_keys(fmt))),
    }
    .deserialize(&mut de)?;
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

    /// Read as the body is parsed, the reasons are those `crate::finish`
    /// reads from the whole document: the last of a repeated list or key,
    /// a choice's place without a usable index, the first reason key.
    #[test]
    fn a_traced_read_notes_the_reasons_the_whole_document_gives() {
        let cases: &[(Format, &[u8], &[&str])] = &[
            (
                Format::OpenAiChat,
                br#"{"choices":[{"finish_reason":"stop"},{"index":"x","finish_reason":"length"}]}"#,
                &["stop", "length"],
            ),
            (
                Format::OpenAiChat,
                br#"{"choices":[{"index":3,"finish_reason":"a","finish_reason":7}]}"#,
                &[],
            ),
            (
                Format::OpenAiChat,
                br#"{"choices":[{"index":0,"finish_reason":"a"}],"choices":[{"index":1,"finish_reason":"b"}]}"#,
                &["b"],
            ),
            (
                Format::OpenAiChat,
                br#"{"choices":[{"index":0,"finish_reason":"a"}],"choices":null}"#,
                &[],
            ),
            (
                Format::OpenAiChat,
                br#"{"choices":[{"index":0,"finish_reason":"a"},{"index":0,"finish_reason":"b"}]}"#,
                &["b"],
            ),
            (
                Format::OpenAiChat,
                br#"{"choices":[{"index":-1,"finish_reason":"a"},{"index":{"k":[1]},"finish_reason":["z"]}]}"#,
                &["a"],
            ),
            (
                Format::OpenAiChat,
                br#"{"choices":[{"index":4294967296,"finish_reason":"a"},{"index":1.0,"finish_reason":{"r":"b"}},{"index":true,"finish_reason":"c\u0021"}]}"#,
                &["a", "c!"],
            ),
            (
                Format::Gemini,
                br#"{"candidates":[{"finish_reason":"x","finishReason":"STOP"},{"finish_reason":"y"}]}"#,
                &["STOP", "y"],
            ),
            (
                Format::Gemini,
                br#"[{"candidates":[{"finishReason":"STOP"}]}]"#,
                &["STOP"],
            ),
            (
                Format::Anthropic,
                br#"{"stop_reason":"end_turn","choices":[{"finish_reason":"no"}]}"#,
                &["end_turn"],
            ),
        ];
        for (fmt, body, expected) in cases {
            let (_, traced) = usage_and_finish_of_body(*fmt, body).expect("reads");
            let mut whole = FinishReasons::default();
            let v: Value = serde_json::from_slice(body).unwrap();
            crate::finish::read_finish(*fmt, &v, &mut whole);
            let text = String::from_utf8_lossy(body);
            assert_eq!(traced, whole, "{text}");
            assert_eq!(traced.into_vec(), *expected, "{text}");
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
