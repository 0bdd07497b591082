//! The key of a response cache entry: a SHA-256 over who may read it (the
//! client key's id, or everyone), the logical model, the client format and
//! the request body as that format means it. The body is written in one
//! canonical form (object members sorted, insignificant whitespace and
//! string escapes normalised, numbers as serde_json writes them) with its
//! top-level `stream` and `stream_options` left out, so a request differing
//! only in those, in key order or in spacing finds the same entry. Pure.

use std::collections::BTreeMap;

use apiproxy_translate::Format;
use serde_json::value::RawValue;
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

/// The entry's key (64 hex digits), or `None` when the body is not a JSON
/// object (the request was checked before; nothing is cached then).
pub fn entry_key(reader: Reader<'_>, model: &str, fmt: Format, body: &[u8]) -> Option<String> {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        // Length-prefixed: no part can run into the next.
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(b"apiproxy-cache-v1");
    match reader {
        Reader::Key(Some(id)) => {
            part(b"key");
            part(id.as_bytes());
        }
        Reader::Key(None) => part(b"anonymous"),
        Reader::Global => part(b"global"),
    }
    part(model.as_bytes());
    part(fmt.as_str().as_bytes());
    let mut canonical = Vec::with_capacity(body.len());
    canonical_top(body, &mut canonical).ok()?;
    part(&canonical);
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Some(hex)
}

/// The canonical form of the top-level object, delivery members left out.
fn canonical_top(body: &[u8], out: &mut Vec<u8>) -> serde_json::Result<()> {
    let members: BTreeMap<String, &RawValue> = serde_json::from_slice(body)?;
    write_object(
        members
            .iter()
            .filter(|(k, _)| !DELIVERY_MEMBERS.contains(&k.as_str())),
        out,
    )
}

fn write_object<'a>(
    members: impl Iterator<Item = (&'a String, &'a &'a RawValue)>,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    out.push(b'{');
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k)?;
        out.push(b':');
        canonical(v, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// The canonical form of one value. Nesting is bounded by serde_json's
/// recursion limit, which the body's own parse already enforced.
fn canonical(raw: &RawValue, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(text)?;
            write_object(members.iter(), out)
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
            Ok(())
        }
        Some(b'"') => serde_json::to_writer(out, &serde_json::from_str::<String>(text)?),
        _ => serde_json::to_writer(out, &serde_json::from_str::<serde_json::Value>(text)?),
    }
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
    }
}
