//! The key of a response cache entry: a SHA-256 over who may read it (the
//! client key's id, or everyone), the logical model, the client format and
//! the request body as that format means it: the JSON value, not its text
//! (object members in any order, any whitespace, string escapes, `1.0` for
//! `1`), with its top-level `stream` and `stream_options` left out, so a
//! request differing only in those finds the same entry. Pure.
//!
//! The body is hashed in one pass as it is parsed, without a tree: arrays
//! and scalars go straight into the hash, each object member's value into a
//! digest of its own, so the members can be sorted by name (32 bytes each,
//! never a copy of the value). Any nesting thus costs one parse of the body.

use std::fmt;

use apiproxy_translate::Format;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

/// Top-level members that do not change the answer, only how it is sent.
const DELIVERY_MEMBERS: [&str; 2] = ["stream", "stream_options"];

/// Who may read an entry (`cache.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader<'a> {
    /// One client key, by its id (`None`: the anonymous caller of an open
    /// gateway).
    Key(Option<&'a str>),
    /// Every caller.
    Global,
}

/// The entry's key (64 hex digits), or `None` when the body is not one
/// JSON object (nothing is cached then).
pub fn entry_key(reader: Reader<'_>, model: &str, fmt: Format, body: &[u8]) -> Option<String> {
    let mut h = Sha256::new();
    part(&mut h, b"apiproxy-cache-v1");
    match reader {
        Reader::Key(Some(id)) => {
            part(&mut h, b"key");
            part(&mut h, id.as_bytes());
        }
        Reader::Key(None) => part(&mut h, b"anonymous"),
        Reader::Global => part(&mut h, b"global"),
    }
    part(&mut h, model.as_bytes());
    part(&mut h, fmt.as_str().as_bytes());
    let mut de = serde_json::Deserializer::from_slice(body);
    Body(&mut h).deserialize(&mut de).ok()?;
    de.end().ok()?;
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Some(hex)
}

/// Length-prefixed: no part can run into the next.
fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The top-level object, delivery members left out.
struct Body<'h>(&'h mut Sha256);

/// Any value, hashed into the given hash.
struct Value<'h>(&'h mut Sha256);

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        object(self.0, map, true)
    }
}

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.update(if v { b"t" } else { b"f" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        number(self.0, &v.to_string());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        number(self.0, &v.to_string());
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // `1.0` means `1`; a whole number within f64's exact range hashes as
        // the integer.
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            number(self.0, &(v as i64).to_string());
        } else {
            number(self.0, &v.to_string());
        }
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.update(b"s");
        part(self.0, v.as_bytes());
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.update(b"z");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.update(b"[");
        while seq.next_element_seed(Value(&mut *self.0))?.is_some() {}
        self.0.update(b"]");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        object(self.0, map, false)
    }
}

fn number(h: &mut Sha256, text: &str) {
    h.update(b"n");
    part(h, text.as_bytes());
}

/// An object: each member's value hashed on its own, the members sorted by
/// name, then written as name and digest (`top`: delivery members skipped).
fn object<'de, A: MapAccess<'de>>(h: &mut Sha256, mut map: A, top: bool) -> Result<(), A::Error> {
    let mut members: Vec<(String, [u8; 32])> = Vec::new();
    while let Some(name) = map.next_key::<String>()? {
        if top && DELIVERY_MEMBERS.contains(&name.as_str()) {
            map.next_value::<IgnoredAny>()?;
            continue;
        }
        let mut member = Sha256::new();
        map.next_value_seed(Value(&mut member))?;
        members.push((name, member.finalize().into()));
    }
    // Stable: a name given twice keeps its members' order.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    h.update(b"{");
    for (name, digest) in &members {
        part(h, name.as_bytes());
        h.update(digest);
    }
    h.update(b"}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> Option<String> {
        entry_key(
            Reader::Key(Some("alice")),
            "fast",
            Format::OpenAiChat,
            body.as_bytes(),
        )
    }

    #[test]
    fn order_spacing_escapes_and_delivery_do_not_matter() {
        let a = key(
            r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
        );
        let b = key(
            "{ \"temperature\" : 0.5,\n \"messages\": [ {\"content\":\"h\\u0069\", \"role\":\"user\"} ],\n\"model\":\"fast\", \"stream\": true, \"stream_options\": {\"include_usage\": true} }",
        );
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_eq!(a.as_deref().map(str::len), Some(64));
    }

    #[test]
    fn what_the_answer_depends_on_does_matter() {
        let base = r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#;
        let k = key(base);
        assert_ne!(
            k,
            key(r#"{"model":"fast","messages":[{"role":"user","content":"ho"}]}"#)
        );
        assert_ne!(
            k,
            key(r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":1}"#)
        );
        // Array order is meaning.
        assert_ne!(
            key(r#"{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#),
            key(r#"{"messages":[{"role":"user","content":"b"},{"role":"user","content":"a"}]}"#)
        );
        // Numbers by value.
        assert_eq!(
            key(r#"{"temperature":1.0,"n":2.50}"#),
            key(r#"{"temperature":1,"n":2.5}"#)
        );
        assert_ne!(
            key(r#"{"t":1}"#),
            key(r#"{"t":"1"}"#),
            "a number is no string"
        );
        assert_ne!(key(r#"{"t":[]}"#), key(r#"{"t":{}}"#));
        assert_ne!(key(r#"{"t":[[1],2]}"#), key(r#"{"t":[[1,2]]}"#));
        // A nested `stream` is content, not delivery.
        assert_ne!(
            key(r#"{"metadata":{"stream":true}}"#),
            key(r#"{"metadata":{}}"#)
        );
        let body = base.as_bytes();
        let of = |r, m, f| entry_key(r, m, f, body);
        let k = of(Reader::Key(Some("alice")), "fast", Format::OpenAiChat);
        assert_ne!(
            k,
            of(Reader::Key(Some("bob")), "fast", Format::OpenAiChat),
            "another key"
        );
        assert_ne!(
            k,
            of(Reader::Key(None), "fast", Format::OpenAiChat),
            "no key"
        );
        assert_ne!(k, of(Reader::Global, "fast", Format::OpenAiChat), "global");
        assert_ne!(
            k,
            of(Reader::Key(Some("alice")), "slow", Format::OpenAiChat),
            "another model"
        );
        assert_ne!(
            k,
            of(Reader::Key(Some("alice")), "fast", Format::Anthropic),
            "another format"
        );
        // Parts cannot run into each other.
        assert_ne!(
            of(Reader::Key(Some("ab")), "c", Format::OpenAiChat),
            of(Reader::Key(Some("a")), "bc", Format::OpenAiChat)
        );
    }

    #[test]
    fn a_body_that_is_no_object_has_no_key() {
        assert_eq!(key("[1,2]"), None);
        assert_eq!(key("{"), None);
        assert_eq!(key("{} {}"), None);
    }

    #[test]
    fn deeply_nested_bodies_have_a_key() {
        // 100 levels of objects over a 1 MiB string: hashed in one pass
        // (a parse per level would read ~100 MiB).
        let mut body = String::from(r#"{"x":"#);
        for _ in 0..100 {
            body.push_str(r#"{"b":1,"a":"#);
        }
        body.push('"');
        body.push_str(&"y".repeat(1 << 20));
        body.push('"');
        body.push_str(&"}".repeat(101));
        let k = key(&body);
        assert!(k.is_some());
        assert_ne!(k, key(&body.replacen("\"b\":1", "\"b\":2", 1)));
    }
}
