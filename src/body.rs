//! A client's JSON object body kept as the bytes it came in: one validating
//! scan notes where each top-level member lies, and only the small fields
//! the gateway reads (`model`, `models`, `stream`, `stream_options`) are
//! ever decoded. A same-format upstream gets the bytes spliced, not a
//! re-serialised tree, so a request body is held about twice (the client's
//! bytes and the upstream's), not as a `serde_json::Value` of ~16× its size.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// The top-level fields the gateway itself knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Model,
    Models,
    Stream,
    StreamOptions,
    Messages,
    Contents,
    Input,
    System,
    PreviousResponseId,
    /// OpenAI's number of choices (the response cache stores one only).
    N,
    Other,
}

impl Field {
    fn of(key: &str) -> Field {
        match key {
            "model" => Field::Model,
            "models" => Field::Models,
            "stream" => Field::Stream,
            "stream_options" => Field::StreamOptions,
            "messages" => Field::Messages,
            "contents" => Field::Contents,
            "input" => Field::Input,
            "system" => Field::System,
            "previous_response_id" => Field::PreviousResponseId,
            "n" => Field::N,
            _ => Field::Other,
        }
    }
}

/// One top-level member: byte ranges into the body.
#[derive(Debug, Clone)]
struct Member {
    /// The key's JSON string, quotes and escapes included.
    key: Range<usize>,
    /// The value's JSON text.
    value: Range<usize>,
    field: Field,
}

/// Why a body is not a usable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (the parser's message).
    Syntax(String),
    /// JSON, but not an object.
    NotObject,
}

/// Up to this many top-level members, duplicate keys are found by comparing
/// each pair (`RawBody::drop_shadowed`).
const PAIRWISE_MEMBERS: usize = 16;

/// A JSON object body as bytes plus the spans of its top-level members.
/// Of a key given twice only the last counts, as in `serde_json::Value`.
#[derive(Debug, Clone)]
pub struct RawBody {
    bytes: Bytes,
    members: Vec<Member>,
}

impl RawBody {
    /// Validates `bytes` as one JSON object and notes its members.
    pub fn parse(bytes: Bytes) -> Result<RawBody, BodyError> {
        let mut members = Vec::new();
        let base = bytes.as_ptr() as usize;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let is_object = TopLevel {
            base,
            members: &mut members,
        }
        .deserialize(&mut de)
        .and_then(|o| de.end().map(|()| o))
        .map_err(|e| BodyError::Syntax(e.to_string()))?;
        if !is_object {
            return Err(BodyError::NotObject);
        }
        let mut body = RawBody { bytes, members };
        body.drop_shadowed();
        Ok(body)
    }

    /// The body's bytes, as the client sent them.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    fn text(&self, r: &Range<usize>) -> &str {
        // Validated as UTF-8 JSON by `parse`; spans lie on token bounds.
        std::str::from_utf8(&self.bytes[r.clone()]).unwrap_or("")
    }

    /// The raw JSON text of a known field, when present.
    pub fn raw(&self, field: Field) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.field == field)
            .map(|m| self.text(&m.value))
    }

    /// Whether a known field is present (`null` included, as `Value::get`).
    pub fn has(&self, field: Field) -> bool {
        self.members.iter().any(|m| m.field == field)
    }

    /// Any top-level member by its key, decoded (for small fields only). A
    /// key written with escapes matches as the translators read it, so the
    /// token estimate cannot be dodged by spelling `max_tokens` oddly.
    pub fn member(&self, key: &str) -> Option<Value> {
        // Compared as bytes: the body was validated as UTF-8 once, by `parse`.
        let m = self.members.iter().rev().find(|m| {
            let k = &self.bytes[m.key.clone()];
            if k.contains(&b'\\') {
                serde_json::from_slice::<String>(k).is_ok_and(|d| d == key)
            } else {
                k.len() == key.len() + 2 && k[1..k.len() - 1] == *key.as_bytes()
            }
        })?;
        serde_json::from_slice(&self.bytes[m.value.clone()]).ok()
    }

    /// A known field decoded into a `Value` (for the small fields only).
    pub fn value(&self, field: Field) -> Option<Value> {
        // The span was validated as JSON, so this cannot fail short of the
        // nesting limit; a value too deep to decode reads as absent.
        self.raw(field).and_then(|r| serde_json::from_str(r).ok())
    }

    /// The decoded key of a member (keys with escapes are decoded).
    fn key<'a>(bytes: &'a [u8], m: &Member) -> Cow<'a, str> {
        let raw = &bytes[m.key.clone()];
        if raw.contains(&b'\\') {
            serde_json::from_slice::<String>(raw)
                .map(Cow::Owned)
                .unwrap_or(Cow::Borrowed(""))
        } else {
            let inner = &raw[1..raw.len().saturating_sub(1).max(1)];
            Cow::Borrowed(std::str::from_utf8(inner).unwrap_or(""))
        }
    }

    /// Keeps only the last member of each key, in first-seen order of the
    /// survivors (the order is what the client wrote).
    fn drop_shadowed(&mut self) {
        let n = self.members.len();
        if n < 2 {
            return;
        }
        let bytes = &self.bytes[..];
        let keys: Vec<Cow<'_, str>> = self.members.iter().map(|m| Self::key(bytes, m)).collect();
        // A request has a handful of members: comparing each pair costs
        // less than hashing them. Past that a map keeps the work linear
        // whatever a client sends.
        let keep: Vec<bool> = if n <= PAIRWISE_MEMBERS {
            if !(0..n).any(|i| keys[i + 1..].contains(&keys[i])) {
                return;
            }
            (0..n).map(|i| !keys[i + 1..].contains(&keys[i])).collect()
        } else {
            let mut last: HashMap<&Cow<'_, str>, usize> = HashMap::with_capacity(n);
            for (i, k) in keys.iter().enumerate() {
                last.insert(k, i);
            }
            if last.len() == n {
                return;
            }
            (0..n).map(|i| last.get(&keys[i]) == Some(&i)).collect()
        };
        drop(keys);
        let mut i = 0;
        self.members.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    /// Writes the body with some top-level members replaced or left out:
    /// `edit` gets each known field's member and answers what to write
    /// (`Keep`, `Drop`, or `Set(json)`); `append` members (key, JSON text)
    /// follow the others. Every other byte is copied as it came.
    pub fn splice(
        &self,
        mut edit: impl FnMut(Field, &str) -> Edit,
        append: &[(&str, &str)],
    ) -> Vec<u8> {
        let extra: usize = append.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(self.bytes.len() + extra + 64);
        out.push(b'{');
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        for m in &self.members {
            let value = self.text(&m.value);
            let edited = match m.field {
                Field::Other => Edit::Keep,
                f => edit(f, value),
            };
            let value = match &edited {
                Edit::Keep => value,
                Edit::Drop => continue,
                Edit::Set(v) => v.as_str(),
            };
            sep(&mut out);
            out.extend_from_slice(&self.bytes[m.key.clone()]);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        for (k, v) in append {
            sep(&mut out);
            // Keys given here are the gateway's own plain names.
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'}');
        out
    }

    /// Decodes the whole body into a `Value` (for the rare legacy `input`
    /// rewrite; a translation decodes the bytes one turn at a time instead).
    pub fn to_value(&self) -> Result<Value, BodyError> {
        serde_json::from_slice(&self.bytes).map_err(|e| BodyError::Syntax(e.to_string()))
    }

    /// The last element of an array field, decoded.
    pub fn last_element(&self, field: Field) -> Last {
        let Some(raw) = self.raw(field) else {
            return Last::Nothing;
        };
        let mut de = serde_json::Deserializer::from_str(raw);
        match de::Deserializer::deserialize_any(&mut de, LastOfArray) {
            Ok(Some(Some(last))) => {
                serde_json::from_str(last.get()).map_or(Last::Nothing, Last::Element)
            }
            Ok(Some(None)) => Last::Nothing,
            Ok(None) | Err(_) => Last::NotAnArray,
        }
    }

    /// Whether a `/v1/chat/completions` body has another format's shape,
    /// the same answer as `apiproxy_translate::detect_chat_adapter` gives
    /// for the decoded body, without decoding the messages.
    pub fn chat_adapter(&self) -> Option<apiproxy_translate::Format> {
        use apiproxy_translate::Format;
        if !self.has(Field::Messages) && (self.has(Field::Contents) || self.has(Field::Input)) {
            return Some(Format::Gemini);
        }
        if self.has(Field::System) {
            return Some(Format::Anthropic);
        }
        let raw = self.raw(Field::Messages)?;
        // A block type the probe answers `true` for is written as one of
        // these words, or spelled with a `\u` escape (none of their
        // letters has another): without any of them, nothing to probe.
        // A substring search reads a long conversation many times faster
        // than the probe's parse.
        if !ADAPTER_WORDS
            .iter()
            .any(|w| w.find(raw.as_bytes()).is_some())
        {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(raw);
        let claude_style = de::Deserializer::deserialize_any(&mut de, MessagesProbe).ok()?;
        claude_style.then_some(Format::Anthropic)
    }
}

/// What a `messages` value must hold for [`RawBody::chat_adapter`] to find
/// Anthropic's blocks in it (`thinking` stands for `redacted_thinking`
/// too; `image` for an image block with a `source`).
static ADAPTER_WORDS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 5]> =
    std::sync::LazyLock::new(|| {
        ["tool_use", "tool_result", "thinking", "image", "\\u"]
            .map(|w| memchr::memmem::Finder::new(w.as_bytes()))
    });

/// The last element of an array field ([`RawBody::last_element`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Last {
    Element(Value),
    /// The field is absent or an empty array.
    Nothing,
    /// The field holds something other than an array.
    NotAnArray,
}

/// What [`RawBody::splice`] writes for one known field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Keep,
    Drop,
    /// This JSON text instead of the client's value.
    Set(String),
}

/// Reads the top-level value: `true` when it is an object (its members
/// noted), `false` for any other JSON value (skipped, still validated).
struct TopLevel<'a> {
    base: usize,
    members: &'a mut Vec<Member>,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let span = |r: &RawValue| {
            let s = r.get();
            let start = s.as_ptr() as usize - self.base;
            start..start + s.len()
        };
        while let Some(k) = map.next_key::<&'de RawValue>()? {
            let v = map.next_value::<&'de RawValue>()?;
            let key = span(k);
            // Keys with escapes are rare; they are decoded to be matched.
            let raw_key = k.get();
            let field = if raw_key.contains('\\') {
                serde_json::from_str::<String>(raw_key)
                    .map(|s| Field::of(&s))
                    .unwrap_or(Field::Other)
            } else {
                Field::of(&raw_key[1..raw_key.len() - 1])
            };
            self.members.push(Member {
                key,
                value: span(v),
                field,
            });
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// `Some(last element)` of an array (skipping the others), `None` for any
/// other value.
struct LastOfArray;

impl<'de> Visitor<'de> for LastOfArray {
    type Value = Option<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut last = None;
        while let Some(e) = seq.next_element::<&'de RawValue>()? {
            last = Some(e);
        }
        Ok(Some(last))
    }
}

/// A map key, borrowed when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Defines a probe: a visitor that answers `bool` for a map (through
/// `$map`), an array (through `$seq`) and `false` for anything else.
macro_rules! probe {
    ($name:ident, $what:literal, map: $map:expr, seq: $seq:expr) => {
        struct $name;
        impl<'de> DeserializeSeed<'de> for $name {
            type Value = bool;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
                d.deserialize_any(self)
            }
        }
        impl<'de> Visitor<'de> for $name {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($what)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
                #[allow(clippy::redundant_closure_call)]
                ($map)(map)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
                #[allow(clippy::redundant_closure_call)]
                ($seq)(seq)
            }
            fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_unit<E>(self) -> Result<bool, E> {
                Ok(false)
            }
        }
    };
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(false)
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(false)
}

// `messages`: an array in which some message's content has an
// Anthropic-only block (every element is read: no early exit, so the whole
// value stays validated by the same scan).
probe!(MessagesProbe, "messages", map: skip_map, seq: |mut seq: A| {
    let mut any = false;
    while let Some(hit) = seq.next_element_seed(MessageProbe)? {
        any |= hit;
    }
    Ok(any)
});

// One message: its `content` (the last one given, as `Value` keeps) is an
// array holding an Anthropic-only block.
probe!(MessageProbe, "a message", map: |mut map: A| {
    let mut hit = false;
    while let Some(k) = map.next_key::<Key>()? {
        if k.0 == "content" {
            hit = map.next_value_seed(ContentProbe)?;
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(hit)
}, seq: skip_seq);

probe!(ContentProbe, "content", map: skip_map, seq: |mut seq: A| {
    let mut any = false;
    while let Some(hit) = seq.next_element_seed(BlockProbe)? {
        any |= hit;
    }
    Ok(any)
});

// A content block of a type only Anthropic has (an image with a `source`
// is Anthropic's; OpenAI's is `image_url`).
probe!(BlockProbe, "a content block", map: |mut map: A| {
    let mut kind: Option<Option<String>> = None;
    let mut source = false;
    while let Some(k) = map.next_key::<Key>()? {
        match &*k.0 {
            "type" => {
                kind = Some(match map.next_value::<Value>()? {
                    Value::String(s) => Some(s),
                    _ => None,
                })
            }
            "source" => {
                source = true;
                map.next_value::<IgnoredAny>()?;
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(match kind.flatten().as_deref() {
        Some("tool_use" | "tool_result" | "thinking" | "redacted_thinking") => true,
        Some("image") => source,
        _ => false,
    })
}, seq: skip_seq);

#[cfg(test)]
mod tests {
    use super::*;
    use apiproxy_translate::detect_chat_adapter;

    fn body(s: &str) -> RawBody {
        RawBody::parse(Bytes::copy_from_slice(s.as_bytes())).expect("object")
    }

    #[test]
    fn members_are_found_by_key_escaped_or_not() {
        let b = body(r#"{"max_tokens":1,"max\u005ftokens":7,"x":{"y":2}}"#);
        assert_eq!(b.member("max_tokens"), Some(Value::from(7)));
        assert_eq!(
            b.member("x").and_then(|x| x.get("y").cloned()),
            Some(Value::from(2))
        );
        assert_eq!(b.member("missing"), None);
    }

    #[test]
    fn not_json_and_not_objects_are_told_apart() {
        for bad in ["", "{", "{\"a\":1}x", "{\"a\":}", "[1,", "{\"a\":\"\\x\"}"] {
            let e = RawBody::parse(Bytes::copy_from_slice(bad.as_bytes())).unwrap_err();
            assert!(matches!(e, BodyError::Syntax(_)), "{bad}: {e:?}");
        }
        for other in ["[1,2]", "\"s\"", "1", "null", "true"] {
            let e = RawBody::parse(Bytes::copy_from_slice(other.as_bytes())).unwrap_err();
            assert_eq!(e, BodyError::NotObject, "{other}");
        }
        // Invalid UTF-8 inside a string is refused as serde_json refuses it.
        let e = RawBody::parse(Bytes::from_static(b"{\"a\":\"\xff\"}")).unwrap_err();
        assert!(matches!(e, BodyError::Syntax(_)));
    }

    #[test]
    fn the_last_of_a_repeated_key_counts() {
        let b = body(r#"{"model":"a","x":1,"model":"b","mod\u0065l":"c","y":[1]}"#);
        assert_eq!(b.raw(Field::Model), Some("\"c\""));
        let out = b.splice(|_, _| Edit::Keep, &[]);
        let v: Value = serde_json::from_slice(&out).expect("json");
        let want: Value = serde_json::from_str(r#"{"model":"c","x":1,"y":[1]}"#).expect("json");
        assert_eq!(v, want);
        assert_eq!(b.to_value().expect("value"), want);
    }

    /// Small bodies are compared pair by pair, large ones through a map:
    /// both keep what `serde_json::Value` keeps, in the order written.
    #[test]
    fn repeated_keys_count_once_at_any_size() {
        for n in [
            2,
            3,
            PAIRWISE_MEMBERS - 1,
            PAIRWISE_MEMBERS,
            PAIRWISE_MEMBERS + 1,
            40,
        ] {
            // Keys k0..k{n/2} then every other one again, with new values.
            let mut text = String::from("{");
            let half = n.div_ceil(2);
            let mut written = 0;
            for i in 0..half {
                text.push_str(&format!("\"k{i}\":{i},"));
                written += 1;
            }
            let mut i = 0;
            while written < n {
                text.push_str(&format!("\"k{i}\":\"again {i}\","));
                written += 1;
                i += 2;
            }
            text.pop();
            text.push('}');
            let b = body(&text);
            let want: Value = serde_json::from_str(&text).expect("json");
            let out = b.splice(|_, _| Edit::Keep, &[]);
            assert_eq!(
                serde_json::from_slice::<Value>(&out).expect("json"),
                want,
                "{n}"
            );
            // The survivors are each key's last member, where it stands.
            let written: Vec<String> = (0..half)
                .map(|i| format!("k{i}"))
                .chain((0..n - half).map(|j| format!("k{}", 2 * j)))
                .collect();
            let survivors: Vec<&String> = written
                .iter()
                .enumerate()
                .filter(|(i, k)| !written[i + 1..].contains(k))
                .map(|(_, k)| k)
                .collect();
            let kept: Vec<String> = b
                .members
                .iter()
                .map(|m| RawBody::key(&b.bytes, m).into_owned())
                .collect();
            assert_eq!(kept.iter().collect::<Vec<_>>(), survivors, "{n}: {text}");
        }
    }

    #[test]
    fn splice_keeps_every_other_byte() {
        let src = r#" { "model" : "gpt" , "models":["a", "b"], "messages" : [ {"role":"user","content":"hi \u00e9"} ], "n": 1.50e1 } "#;
        let b = body(src);
        let out = b.splice(
            |f, _| match f {
                Field::Model => Edit::Set("\"up\"".into()),
                Field::Models => Edit::Drop,
                _ => Edit::Keep,
            },
            &[("stream", "true")],
        );
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"model":"up","messages":[ {"role":"user","content":"hi \u00e9"} ],"n":1.50e1,"stream":true}"#
        );
        let empty = body("{ }").splice(|_, _| Edit::Keep, &[("model", "\"m\"")]);
        assert_eq!(empty, br#"{"model":"m"}"#);
    }

    #[test]
    fn last_elements() {
        let b = body(r#"{"messages":[{"a":1},{"b":[2]}],"input":"hi","contents":[]}"#);
        assert_eq!(
            b.last_element(Field::Messages),
            Last::Element(serde_json::json!({"b":[2]}))
        );
        assert_eq!(b.last_element(Field::Contents), Last::Nothing);
        assert_eq!(b.last_element(Field::Input), Last::NotAnArray);
        assert_eq!(b.last_element(Field::System), Last::Nothing);
    }

    #[test]
    fn chat_adapter_agrees_with_the_translator() {
        let cases = [
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
            r#"{"input":[{"parts":[{"text":"hi"}]}]}"#,
            r#"{"messages":[],"contents":[]}"#,
            r#"{"system":"s","messages":[]}"#,
            r#"{"system":null,"messages":[]}"#,
            r#"{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"1","name":"f","input":{}}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"1"}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"thinking"}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"redacted_thinking"}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64"}}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image","source":null}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image"}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"tool_use"}],"content":"plain"}]}"#,
            r#"{"messages":[{"role":"user","content":"plain","content":[{"type":"tool_use"}]}]}"#,
            r#"{"messages":[{"content":[{"type":"text","type":"tool_use"}]}]}"#,
            r#"{"messages":[{"content":[{"type":"tool_use","type":1}]}]}"#,
            r#"{"messages":[1,"x",null,[{"type":"tool_use"}],{"content":{"type":"tool_use"}}]}"#,
            r#"{"messages":[{"content":[1,[],{"typ\u0065":"thinking"}]}]}"#,
            r#"{"messages":{"content":[{"type":"tool_use"}]}}"#,
            r#"{"messages":"x"}"#,
            r#"{"model":"m"}"#,
            // The words in text, not in a block's type.
            r#"{"messages":[{"role":"user","content":"a tool_use, some thinking, an image"}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"tool_result"}]}]}"#,
            // A type spelled with an escape.
            r#"{"messages":[{"role":"user","content":[{"type":"tool\u005fuse","id":"1","name":"f","input":{}}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"imag\u0065","source":{}}]}]}"#,
        ];
        for c in cases {
            let v: Value = serde_json::from_str(c).expect("json");
            assert_eq!(body(c).chat_adapter(), detect_chat_adapter(&v), "{c}");
        }
    }
}
