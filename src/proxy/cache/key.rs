//! The key of a response cache entry: a SHA-256 over who may read it (the
//! client key's id, or everyone), the logical model, the client format and
//! the request body as that format means it: the JSON value, not its text
//! (object members in any order, any whitespace, string escapes, `1.0` for
//! `1`), with its top-level `stream` and `stream_options` left out, so a
//! request differing only in those finds the same entry. Pure.
//!
//! The body is written in one pass as it is read, without a tree, into a
//! canonical encoding that is hashed once. It is read by a scanner of
//! JSON's grammar of its own (strings without an escape copied whole,
//! escapes decoded, containers nested at most as deep as `serde_json`
//! reads them): through `serde_json`'s visitors the key cost a third more.
//! The encoding: each value tagged by its kind, each text prefixed by its
//! length as a varint (no encoding is the prefix of another), each
//! object's members in [`name_order`] (by length, then bytes). A member whose
//! encoding is longer than [`DIGEST_OVER`] bytes is written as its own
//! digest instead, so sorting an object moves at most that much per member:
//! any nesting costs one parse of the body and a bounded copy per level.
//! The encoding is never much longer than the body's text: at most half
//! as long again, for an array of one-digit numbers (`0,` is written in
//! three bytes), and numbers are written in their shortest form (`1e300`
//! as `1e300`), so a body cannot make the gateway hold many times its
//! size to hash it.

use std::cell::RefCell;
use std::io::Write as _;

use apiproxy_translate::Format;
use sha2::{Digest, Sha256};

/// Top-level members that do not change the answer, only how it is sent.
const DELIVERY_MEMBERS: [&[u8]; 2] = [b"stream", b"stream_options"];

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
    // The thread's buffers, grown by earlier keys: a key allocates only
    // its own text. Nothing here can reach them again while borrowed.
    let digest = BUFFERS.with_borrow_mut(|c| {
        let digest = c
            .write(reader, model, fmt, body)
            .then(|| Sha256::digest(&c.out));
        // A large body's buffers are not kept for the thread's life.
        if c.out.capacity() > KEEP_BYTES
            || c.sorting.capacity() > KEEP_BYTES
            || c.text.capacity() > KEEP_BYTES
            || c.members.capacity() * std::mem::size_of::<Member>() > KEEP_BYTES
        {
            *c = Canon::new();
        }
        digest
    })?;
    let mut hex = [0; 64];
    for (pair, b) in hex.chunks_exact_mut(2).zip(digest) {
        pair.copy_from_slice(&HEX[usize::from(b)]);
    }
    std::str::from_utf8(&hex).ok().map(str::to_owned)
}

/// Each byte's two hex digits.
const HEX: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut table = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [digits[b >> 4], digits[b & 15]];
        b += 1;
    }
    table
};

thread_local! {
    /// A thread's encoding buffers, between two keys.
    static BUFFERS: RefCell<Canon> = const { RefCell::new(Canon::new()) };
}

/// The largest buffer a thread keeps for its next key.
const KEEP_BYTES: usize = 16 * 1024;

/// What [`entry_key`] hashes.
#[cfg(test)]
fn canonical(reader: Reader<'_>, model: &str, fmt: Format, body: &[u8]) -> Option<Vec<u8>> {
    let mut c = Canon::new();
    c.write(reader, model, fmt, body).then_some(c.out)
}

/// The canonical encoding being written.
struct Canon {
    out: Vec<u8>,
    /// The members of the objects being read, innermost last.
    members: Vec<Member>,
    /// An object's members as written, while they are put in order.
    sorting: Vec<u8>,
    /// A string with escapes, decoded.
    text: Vec<u8>,
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
    const fn new() -> Canon {
        Canon {
            out: Vec::new(),
            members: Vec::new(),
            sorting: Vec::new(),
            text: Vec::new(),
        }
    }

    /// Writes what [`entry_key`] hashes into `out` (emptied first); false
    /// when the body is not one JSON object.
    fn write(&mut self, reader: Reader<'_>, model: &str, fmt: Format, body: &[u8]) -> bool {
        self.out.clear();
        self.members.clear();
        self.out.reserve(body.len().min(4 * DIGEST_OVER) + 128);
        self.part(b"apiproxy-cache-v3");
        match reader {
            Reader::Key(Some(id)) => {
                self.part(b"key");
                self.part(id.as_bytes());
            }
            Reader::Key(None) => {
                self.part(b"anonymous");
            }
            Reader::Global => {
                self.part(b"global");
            }
        }
        self.part(model.as_bytes());
        self.part(fmt.as_str().as_bytes());
        let mut s = Scan { b: body, at: 0 };
        s.space();
        let read = s.eat(b'{') && self.object(&mut s, 1, true).is_some();
        s.space();
        read && s.at == body.len()
    }

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

    /// Any value, `depth` containers deep.
    fn value(&mut self, s: &mut Scan<'_>, depth: usize) -> Option<()> {
        s.space();
        let c = *s.b.get(s.at)?;
        s.at += 1;
        match c {
            b'{' | b'[' if depth + 1 >= MAX_DEPTH => None,
            b'{' => self.object(s, depth + 1, false),
            b'[' => {
                self.out.push(b'[');
                s.space();
                if !s.eat(b']') {
                    loop {
                        self.value(s, depth + 1)?;
                        s.space();
                        match s.next()? {
                            b',' => {}
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
                self.out.push(b']');
                Some(())
            }
            b'"' => {
                self.out.push(b's');
                self.string(s).map(drop)
            }
            b't' => s.rest(b"rue").then(|| self.out.push(b't')),
            b'f' => s.rest(b"alse").then(|| self.out.push(b'f')),
            b'n' => s.rest(b"ull").then(|| self.out.push(b'z')),
            b'-' | b'0'..=b'9' => {
                s.at -= 1;
                self.number(s)
            }
            _ => None,
        }
    }

    /// A number by its value: an integer as itself; `1.0` as `1`; any
    /// other in its shortest exponent form (`1e300`, not 301 digits, at
    /// most 24 bytes). JSON's grammar is checked first: what `f64` parses
    /// beyond it (`inf`, `1.`, `+1`) never reaches it.
    fn number(&mut self, s: &mut Scan<'_>) -> Option<()> {
        let start = s.at;
        let negative = s.eat(b'-');
        match s.next()? {
            b'0' => {}
            b'1'..=b'9' => s.digits(),
            _ => return None,
        }
        let mut whole = true;
        if s.eat(b'.') {
            whole = false;
            s.some_digits()?;
        }
        if matches!(s.b.get(s.at), Some(b'e' | b'E')) {
            whole = false;
            s.at += 1;
            if !s.eat(b'+') {
                s.eat(b'-');
            }
            s.some_digits()?;
        }
        let digits = &s.b[start + usize::from(negative)..s.at];
        if whole && digits.len() <= 18 {
            // Within `i64` whatever the digits: the text is the value's
            // own (the grammar allows no leading zero), but for `-0`.
            self.out.push(b'n');
            self.part(if digits == b"0" {
                digits
            } else {
                &s.b[start..s.at]
            });
            return Some(());
        }
        // ASCII by the grammar just checked.
        let text = std::str::from_utf8(&s.b[start..s.at]).ok()?;
        if whole {
            // Out of range of both: read as a float, as JSON readers do.
            let int = if negative {
                text.parse::<i64>().ok().map(|v| self.integer(v))
            } else {
                text.parse::<u64>().ok().map(|v| self.integer(v))
            };
            if int.is_some() {
                return Some(());
            }
        }
        let v: f64 = text.parse().ok().filter(|v: &f64| v.is_finite())?;
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            self.integer(v as i64);
        } else {
            let mut buf = [0u8; 32];
            let mut w = &mut buf[..];
            let _ = write!(w, "{v:e}");
            let len = 32 - w.len();
            self.out.push(b'n');
            self.part(&buf[..len]);
        }
        Some(())
    }

    /// A string's text (its opening quote read), escapes decoded, written
    /// as a part; where its bytes start. Its bytes are hashed, never read
    /// as text, so their UTF-8 is not checked.
    fn string(&mut self, s: &mut Scan<'_>) -> Option<usize> {
        let rest = &s.b[s.at..];
        let end = plain_run(rest);
        let plain = &rest[..end];
        match *rest.get(end)? {
            // No escape: the text as it is (most strings).
            b'"' => {
                s.at += end + 1;
                return Some(self.part(plain));
            }
            b'\\' => {}
            _ => return None,
        }
        // The text up to the first escape is checked already: decoding
        // starts at the escape.
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        text.extend_from_slice(plain);
        s.at += end;
        let read = unescape(s, &mut text);
        let at = read.map(|()| self.part(&text));
        self.text = text;
        at
    }

    /// An object (its `{` read) `depth` containers deep: `{`, each member
    /// as `:`, its name and its value, in [`name_order`], then `}` (`top`:
    /// delivery members left out).
    fn object(&mut self, s: &mut Scan<'_>, depth: usize, top: bool) -> Option<()> {
        self.out.push(b'{');
        let body = self.out.len();
        let first = self.members.len();
        s.space();
        if !s.eat(b'}') {
            loop {
                s.space();
                if !s.eat(b'"') {
                    return None;
                }
                let start = self.out.len();
                self.out.push(b':');
                let name = self.string(s)?;
                s.space();
                if !s.eat(b':') {
                    return None;
                }
                let value = self.out.len();
                self.value(s, depth)?;
                if top && DELIVERY_MEMBERS.contains(&&self.out[name..value]) {
                    self.out.truncate(start);
                } else {
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
                s.space();
                match s.next()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        let members = &mut self.members[first..];
        let out = &self.out;
        if !members
            .windows(2)
            .all(|w| name_order(w[0].name(out), w[1].name(out)).is_le())
        {
            // Stable: a name given twice keeps its members' order.
            members.sort_by(|a, b| name_order(a.name(out), b.name(out)));
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
        Some(())
    }
}

/// The order of an object's members: by their names' length, then their
/// bytes (canonical CBOR's order, RFC 7049 section 3.9). Any one order
/// would do; this one is how clients mostly write them already (`role`
/// before `content`, `name` before `arguments`), so most objects need no
/// sorting, and most names are told apart by length alone.
fn name_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// How deep containers may nest (as `serde_json` reads them: the body is
/// read by it elsewhere).
const MAX_DEPTH: usize = 128;

/// A body being read.
struct Scan<'b> {
    b: &'b [u8],
    at: usize,
}

impl Scan<'_> {
    /// Past JSON's whitespace.
    fn space(&mut self) {
        // Most calls find none: anything above a space is no whitespace.
        while let Some(&c) = self.b.get(self.at) {
            if c > b' ' || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return;
            }
            self.at += 1;
        }
    }

    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.at)?;
        self.at += 1;
        Some(c)
    }

    /// Past `c` when it is next.
    fn eat(&mut self, c: u8) -> bool {
        let next = self.b.get(self.at) == Some(&c);
        self.at += usize::from(next);
        next
    }

    /// Past the rest of a word (`true`, `false`, `null`) when it is next.
    fn rest(&mut self, word: &[u8]) -> bool {
        let next = self.b[self.at..].starts_with(word);
        self.at += if next { word.len() } else { 0 };
        next
    }

    fn digits(&mut self) {
        while matches!(self.b.get(self.at), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    /// At least one digit.
    fn some_digits(&mut self) -> Option<()> {
        let from = self.at;
        self.digits();
        (self.at > from).then_some(())
    }
}

/// A string with escapes (at an escape, or past one), decoded into
/// `text` up to and past its closing quote.
fn unescape(s: &mut Scan<'_>, text: &mut Vec<u8>) -> Option<()> {
    loop {
        let rest = &s.b[s.at..];
        let end = plain_run(rest);
        text.extend_from_slice(&rest[..end]);
        s.at += end + 1;
        match *rest.get(end)? {
            b'"' => return Some(()),
            b'\\' => {}
            _ => return None,
        }
        let c = match s.next()? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = hex4(s)?;
                let ch = match unit {
                    0xd800..=0xdbff => {
                        // A pair's first half: its second must follow.
                        if !(s.eat(b'\\') && s.eat(b'u')) {
                            return None;
                        }
                        let low = hex4(s)?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return None;
                        }
                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                    }
                    0xdc00..=0xdfff => return None,
                    _ => unit,
                };
                let ch = char::from_u32(ch)?;
                text.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return None,
        };
        text.push(c);
    }
}

/// How many of `b`'s bytes are a string's plain text: up to its first `"`,
/// `\` or control character (which JSON has escaped only), or all of them.
/// Eight bytes a step, each tested for the three at once: the lowest byte
/// a test flags is always one it looks for (a false flag can only follow a
/// true one, as a borrow runs upwards).
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero = |w: u64| w.wrapping_sub(ONES) & !w;
    let mut at = 0;
    while let Some(word) = b.get(at..at + 8) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        let found = (zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len() - at)
}

/// Four hex digits of a `\u` escape.
fn hex4(s: &mut Scan<'_>) -> Option<u32> {
    let digits = s.b.get(s.at..s.at + 4)?;
    s.at += 4;
    digits
        .iter()
        .try_fold(0, |v, &d| Some(v << 4 | char::from(d).to_digit(16)?))
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

    /// The plain run of every string of up to 19 bytes whose bytes are one
    /// filler and, at one place, one byte that ends a run or is beside one,
    /// against a byte-by-byte search.
    #[test]
    fn a_plain_run_ends_at_the_first_quote_backslash_or_control_character() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        let bytes = [
            0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa0, 0xc3,
            0xff,
        ];
        for len in 0..20 {
            for filler in [b'a', 0x20, 0x21, 0x5d, 0x80, 0xa1, 0xff] {
                for at in 0..len {
                    for &c in &bytes {
                        for second in [None, Some(b'"'), Some(0x01), Some(b'\\')] {
                            let mut b = vec![filler; len];
                            b[at] = c;
                            if let Some(d) = second {
                                if at + 1 < len {
                                    b[at + 1] = d;
                                }
                            }
                            assert_eq!(plain_run(&b), naive(&b), "{b:?}");
                        }
                    }
                }
            }
        }
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

    /// A thread's buffers, reused from key to key, carry nothing of one
    /// body into the next: each key is the digest of its own encoding,
    /// after a larger body, a failed one and a body too large to keep.
    #[test]
    fn a_thread_s_buffers_carry_nothing_into_the_next_key() {
        let fresh = |body: &str| {
            let c = canonical(Reader::Global, "m", Format::OpenAiChat, body.as_bytes()).unwrap();
            hex::encode(Sha256::digest(c))
        };
        let small = r#"{"b":{"y":1,"x":2},"a":"hi"}"#;
        let big = format!(
            r#"{{"z":{{"q":[{{"k":1,"j":2}}],"p":"{}"}},"y":2,"x":[3]}}"#,
            "w".repeat(3 * DIGEST_OVER)
        );
        let huge = format!(r#"{{"{}":1,"a":2}}"#, "n".repeat(2 * KEEP_BYTES));
        let key = |body: &str| entry_key(Reader::Global, "m", Format::OpenAiChat, body.as_bytes());
        for before in [big.as_str(), r#"{"b":{"y":1,"#, huge.as_str(), small] {
            let _ = key(before);
            assert_eq!(key(small).as_deref(), Some(fresh(small).as_str()));
            assert_eq!(key(&big).as_deref(), Some(fresh(&big).as_str()));
        }
    }

    /// What the encoding must be, from a parsed tree: tagged values,
    /// length-prefixed texts, members by length then name, a long member as its
    /// digest, the top level's delivery members left out.
    fn reference(v: &serde_json::Value, top: bool, out: &mut Vec<u8>) {
        use serde_json::Value as V;
        let part = |out: &mut Vec<u8>, b: &[u8]| {
            let mut c = Canon::new();
            c.part(b);
            out.extend_from_slice(&c.out);
        };
        match v {
            V::Null => out.push(b'z'),
            V::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            V::Number(n) => {
                let mut c = Canon::new();
                match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => c.integer(i),
                    (_, Some(u), _) => c.integer(u),
                    (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                        c.integer(f as i64)
                    }
                    (_, _, Some(f)) => {
                        c.out.push(b'n');
                        c.part(format!("{f:e}").as_bytes());
                    }
                    _ => unreachable!(),
                }
                out.extend_from_slice(&c.out);
            }
            V::String(t) => {
                out.push(b's');
                part(out, t.as_bytes());
            }
            V::Array(a) => {
                out.push(b'[');
                a.iter().for_each(|v| reference(v, false, out));
                out.push(b']');
            }
            V::Object(m) => {
                out.push(b'{');
                let mut members: Vec<_> = m
                    .iter()
                    .filter(|(k, _)| !top || !DELIVERY_MEMBERS.contains(&k.as_bytes()))
                    .collect();
                members
                    .sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
                for (k, v) in members {
                    out.push(b':');
                    part(out, k.as_bytes());
                    let mut value = Vec::new();
                    reference(v, false, &mut value);
                    if value.len() > DIGEST_OVER {
                        out.push(b'h');
                        out.extend_from_slice(&Sha256::digest(&value));
                    } else {
                        out.extend_from_slice(&value);
                    }
                }
                out.push(b'}');
            }
        }
    }

    /// A small random number generator (xorshift): the bodies below are
    /// the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A random value, nested at most `depth` deep, written as JSON text
    /// with random whitespace and random (needless) escapes.
    fn random_text(r: &mut Rng, depth: u32, top: bool, out: &mut String) {
        let space = |r: &mut Rng, out: &mut String| {
            for _ in 0..r.next(3) {
                out.push([' ', '\n', '\t', '\r'][r.next(4) as usize]);
            }
        };
        let text = |r: &mut Rng, out: &mut String| {
            const CHARS: [char; 12] = [
                'a', 'Z', ' ', '"', '\\', '/', '\n', '\u{1}', 'é', '€', '😀', '0',
            ];
            out.push('"');
            let most = if r.next(8) == 0 { 300 } else { 8 };
            for _ in 0..r.next(most) {
                let c = CHARS[r.next(CHARS.len() as u64) as usize];
                match (c, r.next(3)) {
                    ('"' | '\\', _) => {
                        out.push('\\');
                        out.push(c);
                    }
                    ('\n', 0) => out.push_str("\\n"),
                    ('/', 0) => out.push_str("\\/"),
                    (c, 0) | (c @ ('\n' | '\u{1}'), _) => {
                        for unit in c.encode_utf16(&mut [0; 2]) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    (c, _) => out.push(c),
                }
            }
            out.push('"');
        };
        space(r, out);
        match if top {
            6
        } else {
            r.next(if depth == 0 { 5 } else { 7 })
        } {
            0 => out.push_str(["true", "false", "null"][r.next(3) as usize]),
            1 => {
                const NUMBERS: [&str; 18] = [
                    "0",
                    "-0",
                    "999999999999999999",
                    "-100000000000000000",
                    "1000000000000000000",
                    "-9223372036854775808",
                    "7",
                    "-12",
                    "1.0",
                    "2.50",
                    "0.25",
                    "2.5e-1",
                    "1e300",
                    "-2.5E-300",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-9223372036854775809",
                    "1E+2",
                ];
                out.push_str(NUMBERS[r.next(NUMBERS.len() as u64) as usize]);
            }
            2..=4 => text(r, out),
            5 => {
                out.push('[');
                for i in 0..r.next(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_text(r, depth - 1, false, out);
                }
                space(r, out);
                out.push(']');
            }
            _ => {
                out.push('{');
                const NAMES: [&str; 8] = [
                    "a",
                    "b",
                    "ab",
                    "stream",
                    "stream_options",
                    "é",
                    "messages",
                    "z",
                ];
                let mut names: Vec<&str> = NAMES.to_vec();
                for i in 0..r.next(5) {
                    if i > 0 {
                        out.push(',');
                    }
                    space(r, out);
                    let name = names.remove(r.next(names.len() as u64) as usize);
                    if r.next(2) == 0 {
                        out.push_str(&format!("{name:?}"));
                    } else {
                        let units: String =
                            name.encode_utf16().map(|u| format!("\\u{u:04X}")).collect();
                        out.push_str(&format!("\"{units}\""));
                    }
                    space(r, out);
                    out.push(':');
                    random_text(r, depth.saturating_sub(1), false, out);
                }
                space(r, out);
                out.push('}');
            }
        }
        space(r, out);
    }

    /// The scanner's encoding of a thousand random bodies is the one the
    /// reference writes from `serde_json`'s tree of the same text.
    #[test]
    fn the_encoding_is_the_reference_s_for_random_bodies() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..1000 {
            let mut body = String::new();
            random_text(&mut r, 4, true, &mut body);
            let tree: serde_json::Value = serde_json::from_str(&body).expect(&body);
            let mut want = Canon::new();
            want.part(b"apiproxy-cache-v3");
            want.part(b"global");
            want.part(b"m");
            want.part(Format::OpenAiChat.as_str().as_bytes());
            reference(&tree, true, &mut want.out);
            let got = canonical(Reader::Global, "m", Format::OpenAiChat, body.as_bytes());
            assert_eq!(got.as_deref(), Some(want.out.as_slice()), "{body}");
        }
    }

    /// What is not JSON has no key, as `serde_json` reads it.
    #[test]
    fn what_is_not_json_has_no_key() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(key(&deep(127)).is_some(), "127 containers");
        let bad = [
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":1e400}"#,
            r#"{"a":"\q"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":1}x"#,
            r#"{"a":1"#,
            r#"{"a":"b"#,
            r#"{"a":[1"#,
            "",
            " ",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\n\"}",
        ];
        for body in bad.iter().map(|b| b.to_string()).chain([deep(128)]) {
            assert!(
                serde_json::from_str::<serde_json::Value>(&body).is_err(),
                "{body}"
            );
            assert_eq!(key(&body), None, "{body}");
        }
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
