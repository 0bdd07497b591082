//! The key of a response cache entry: a SHA-256 over who may read it (the
//! client key's id, or everyone), the logical model, the client format and
//! the request body as that format means it: the JSON value, not its text
//! (object members in any order, any whitespace, string escapes, `1.0` for
//! `1`), with its top-level `stream` and `stream_options` left out, so a
//! request differing only in those finds the same entry. Pure.
//!
//! The body is written in one pass as it is parsed, without a tree, into a
//! canonical encoding that is hashed once: each value tagged by its kind,
//! each text prefixed by its length as a varint (no encoding is the prefix
//! of another), each object's members sorted by name. A member whose
//! encoding is longer than [`DIGEST_OVER`] bytes is written as its own
//! digest instead, so sorting an object moves at most that much per member:
//! any nesting costs one parse of the body and a bounded copy per level.
//! The encoding is never much longer than the body's text: at most half
//! as long again, for an array of one-digit numbers (`0,` is written in
//! three bytes), and numbers are written in their shortest form (`1e300`
//! as `1e300`), so a body cannot make the gateway hold many times its
//! size to hash it.

use std::fmt;
use std::io::Write as _;

use apiproxy_translate::Format;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

/// Top-level members that do not change the answer, only how it is sent.
const DELIVERY_MEMBERS: [&str; 2] = ["stream", "stream_options"];

/// A member value encoded longer than this is written as its digest.
const DIGEST_OVER: usize = 256;

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
    let digest = Sha256::digest(canonical(reader, model, fmt, body)?);
    // Into an array: `hex::encode` pushes a char at a time.
    let mut hex = [0u8; 64];
    hex::encode_to_slice(digest, &mut hex).ok()?;
    String::from_utf8(hex.to_vec()).ok()
}

/// What [`entry_key`] hashes.
fn canonical(reader: Reader<'_>, model: &str, fmt: Format, body: &[u8]) -> Option<Vec<u8>> {
    let mut c = Canon {
        out: Vec::with_capacity(body.len().min(4 * DIGEST_OVER) + 128),
        members: Vec::with_capacity(16),
        sorting: Vec::new(),
    };
    c.part(b"apiproxy-cache-v2");
    match reader {
        Reader::Key(Some(id)) => {
            c.part(b"key");
            c.part(id.as_bytes());
        }
        Reader::Key(None) => {
            c.part(b"anonymous");
        }
        Reader::Global => {
            c.part(b"global");
        }
    }
    c.part(model.as_bytes());
    c.part(fmt.as_str().as_bytes());
    let mut de = serde_json::Deserializer::from_slice(body);
    Body(&mut c).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(c.out)
}

/// The canonical encoding being written.
struct Canon {
    out: Vec<u8>,
    /// The members of the objects being read, innermost last.
    members: Vec<Member>,
    /// An object's members as written, while they are put in order.
    sorting: Vec<u8>,
}

/// Where a member was written in `out`: from its `:` at `start`, its
/// name's bytes at `name..value`, its value's up to `end`.
#[derive(Clone, Copy)]
struct Member {
    start: usize,
    name: usize,
    value: usize,
    end: usize,
}

impl Member {
    fn name<'o>(&self, out: &'o [u8]) -> &'o [u8] {
        &out[self.name..self.value]
    }
}

impl Canon {
    /// Length-prefixed, as a varint: no part can run into the next.
    /// Where its bytes start.
    fn part(&mut self, bytes: &[u8]) -> usize {
        let mut len = bytes.len();
        while len >= 0x80 {
            self.out.push((len as u8) | 0x80);
            len >>= 7;
        }
        self.out.push(len as u8);
        self.out.extend_from_slice(bytes);
        self.out.len() - bytes.len()
    }

    /// An integer number (`itoa`: `format_args!` took a tenth of a small
    /// body's key).
    fn integer(&mut self, v: impl itoa::Integer) {
        self.out.push(b'n');
        self.part(itoa::Buffer::new().format(v).as_bytes());
    }

    /// A number by its text (at most 24 bytes: an `f64` in its shortest
    /// exponent form).
    fn number(&mut self, text: fmt::Arguments<'_>) {
        let mut buf = [0u8; 32];
        let mut w = &mut buf[..];
        let _ = w.write_fmt(text);
        let len = 32 - w.len();
        self.out.push(b'n');
        self.part(&buf[..len]);
    }

    /// An object: `{`, each member as `:`, its name and its value, sorted
    /// by name, then `}` (`top`: delivery members skipped).
    fn object<'de, A: MapAccess<'de>>(&mut self, mut map: A, top: bool) -> Result<(), A::Error> {
        self.out.push(b'{');
        let body = self.out.len();
        let first = self.members.len();
        loop {
            let start = self.out.len();
            self.out.push(b':');
            let Some(name) = map.next_key_seed(Name(self))? else {
                self.out.truncate(start);
                break;
            };
            if top
                && DELIVERY_MEMBERS
                    .iter()
                    .any(|d| d.as_bytes() == &self.out[name..])
            {
                self.out.truncate(start);
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = self.out.len();
            map.next_value_seed(Value(self))?;
            if self.out.len() - value > DIGEST_OVER {
                let digest = Sha256::digest(&self.out[value..]);
                self.out.truncate(value);
                self.out.push(b'h');
                self.out.extend_from_slice(&digest);
            }
            self.members.push(Member {
                start,
                name,
                value,
                end: self.out.len(),
            });
        }
        let members = &mut self.members[first..];
        let out = &self.out;
        if !members.windows(2).all(|w| w[0].name(out) <= w[1].name(out)) {
            // Stable: a name given twice keeps its members' order.
            members.sort_by(|a, b| a.name(out).cmp(b.name(out)));
            // Taken whole: an outer object's members are being sorted too.
            let mut written = std::mem::take(&mut self.sorting);
            written.clear();
            written.extend_from_slice(&self.out[body..]);
            self.out.truncate(body);
            for m in &self.members[first..] {
                self.out
                    .extend_from_slice(&written[m.start - body..m.end - body]);
            }
            self.sorting = written;
        }
        self.members.truncate(first);
        self.out.push(b'}');
        Ok(())
    }
}

/// A member's name, written as a part; where its bytes start.
struct Name<'c>(&'c mut Canon);

impl<'de> DeserializeSeed<'de> for Name<'_> {
    type Value = usize;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        // As bytes: a name is hashed, never read as text, so its UTF-8 is
        // not checked again here (escapes are still decoded).
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for Name<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, v: &str) -> Result<usize, E> {
        Ok(self.0.part(v.as_bytes()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<usize, E> {
        Ok(self.0.part(v))
    }
}

/// The top-level object, delivery members left out.
struct Body<'c>(&'c mut Canon);

/// Any value.
struct Value<'c>(&'c mut Canon);

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
        self.0.object(map, true)
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
        self.0.out.push(if v { b't' } else { b'f' });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.integer(v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.integer(v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // `1.0` means `1`; a whole number within f64's exact range is
        // written as the integer, any other in its shortest exponent form
        // (`1e300`, not 301 digits).
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            self.0.integer(v as i64);
        } else {
            self.0.number(format_args!("{v:e}"));
        }
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.out.push(b's');
        self.0.part(v.as_bytes());
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.out.push(b'z');
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.out.push(b'[');
        while seq.next_element_seed(Value(&mut *self.0))?.is_some() {}
        self.0.out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.object(map, false)
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

    /// Members written as their digest (over `DIGEST_OVER` bytes) and
    /// members written whole sort alike, and a digested member's content
    /// still decides the key.
    #[test]
    fn long_and_short_members_sort_alike() {
        for len in [
            DIGEST_OVER - 20,
            DIGEST_OVER - 9,
            DIGEST_OVER,
            DIGEST_OVER + 300,
        ] {
            let long = "x".repeat(len);
            let a = key(&format!(
                r#"{{"m":{{"b":"{long}","a":[1,{{"d":2,"c":3}}]}},"z":1}}"#
            ));
            let b = key(&format!(
                r#"{{"z":1,"m":{{"a":[1,{{"c":3,"d":2}}],"b":"{long}"}}}}"#
            ));
            assert!(a.is_some());
            assert_eq!(a, b, "{len}");
            let other = format!("{}y", &long[1..]);
            let c = key(&format!(
                r#"{{"z":1,"m":{{"a":[1,{{"c":3,"d":2}}],"b":"{other}"}}}}"#
            ));
            assert_ne!(a, c, "{len}");
        }
        // A name given twice keeps its order.
        assert_ne!(key(r#"{"a":1,"a":2}"#), key(r#"{"a":2,"a":1}"#));
        assert_ne!(key(r#"{"a":1,"b":2}"#), key(r#"{"a":2,"b":1}"#));
        assert_ne!(key(r#"{"ab":1}"#), key(r#"{"a":1,"b":1}"#));
    }

    /// What is hashed is never much longer than the body: no number, name
    /// or nesting makes the gateway hold many times a body to key it.
    #[test]
    fn the_encoding_is_no_longer_than_the_body() {
        let members = |value: &str| {
            let list: Vec<String> = (0..5_000).map(|i| format!(r#""m{i}":{value}"#)).collect();
            format!("{{{}}}", list.join(","))
        };
        let mut nested = String::new();
        for _ in 0..120 {
            nested.push_str(r#"{"b":0,"a":"#);
        }
        nested.push('1');
        nested.push_str(&"}".repeat(120));
        let bodies = [
            members("1e300"),
            members("-2.5e-300"),
            members("123456789012345678901"),
            members("0"),
            members("true"),
            members(r#""""#),
            members(r#""\u0041""#),
            members("[]"),
            members("{}"),
            nested,
        ];
        for body in bodies {
            let c = canonical(Reader::Global, "m", Format::OpenAiChat, body.as_bytes()).unwrap();
            assert!(
                c.len() <= body.len() + 64,
                "{} bytes for a body of {}: {}",
                c.len(),
                body.len(),
                &body[..40]
            );
        }
        // Numbers still by value: a shortest form is one per value.
        assert_eq!(key(r#"{"t":1e300}"#), key(r#"{"t":1.0e300}"#));
        assert_eq!(key(r#"{"t":0.25}"#), key(r#"{"t":2.5e-1}"#));
        assert_ne!(key(r#"{"t":1e300}"#), key(r#"{"t":1e301}"#));
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
