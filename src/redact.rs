//! Secrets taken out of a captured request body (`console.capture_bodies`):
//! the values of secret-looking fields replaced, the text cut to a bound,
//! never a tree of the body built. Pure; used by the proxy when it captures
//! a body and shown by the console.

/// Replaces the values of secret-looking JSON fields and cuts the text to
/// `max` characters, for `log.capture_bodies`. The body is validated
/// without building a tree, then written as it came (whitespace between
/// tokens left out) until `max` characters are kept: the work after the
/// check is bounded by what is kept, however large the body.
pub fn redact_body(body: &[u8], max: usize) -> String {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return "(not JSON: not kept)".to_owned();
    }
    let mut w = Redactor {
        b: body,
        i: 0,
        out: Capped {
            text: String::with_capacity(max.min(body.len()).min(64 * 1024)),
            left: max,
            cut: false,
        },
    };
    let _ = w.value();
    if w.out.cut {
        w.out.text.push('…');
    }
    w.out.text
}

/// Field names whose values are secrets wherever they appear.
const SECRET_FIELDS: &[&str] = &[
    "api_key",
    "apikey",
    "key",
    "authorization",
    "password",
    "secret",
    "token",
    "access_token",
    "refresh_token",
];

/// The kept text, at most `left` more characters.
struct Capped {
    text: String,
    left: usize,
    cut: bool,
}

/// The kept text is full: stop walking.
struct Full;

impl Capped {
    fn push(&mut self, s: &str) -> Result<(), Full> {
        let n = s.chars().count();
        if n <= self.left {
            self.text.push_str(s);
            self.left -= n;
            return Ok(());
        }
        let end = s.char_indices().nth(self.left).map_or(s.len(), |(i, _)| i);
        self.text.push_str(&s[..end]);
        self.left = 0;
        self.cut = true;
        Err(Full)
    }
}

/// Walks a body already validated as JSON (so its nesting is within the
/// parser's depth limit), writing it to `out` with secret values replaced.
struct Redactor<'a> {
    b: &'a [u8],
    i: usize,
    out: Capped,
}

impl Redactor<'_> {
    fn peek(&self) -> u8 {
        self.b.get(self.i).copied().unwrap_or(b'}')
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\r' | b'\n') && self.i < self.b.len() {
            self.i += 1;
        }
    }

    fn emit(&mut self, from: usize) -> Result<(), Full> {
        let s = std::str::from_utf8(&self.b[from..self.i]).unwrap_or("");
        self.out.push(s)
    }

    /// Past the string starting at `self.i`.
    fn skip_string(&mut self) {
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return;
                }
                _ => self.i += 1,
            }
        }
    }

    /// Past the value starting at `self.i`, writing nothing.
    fn skip_value(&mut self) {
        let mut depth = 0usize;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    self.skip_string();
                    if depth == 0 {
                        return;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return;
                    }
                }
                b',' if depth == 0 => return,
                _ => {}
            }
            self.i += 1;
        }
    }

    fn value(&mut self) -> Result<(), Full> {
        self.skip_ws();
        let from = self.i;
        match self.peek() {
            b'{' => self.container(b'}', true),
            b'[' => self.container(b']', false),
            b'"' => {
                self.skip_string();
                self.emit(from)
            }
            _ => {
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n'
                    )
                {
                    self.i += 1;
                }
                self.emit(from)
            }
        }
    }

    /// An object (`keyed`) or an array, from its opening bracket.
    fn container(&mut self, close: u8, keyed: bool) -> Result<(), Full> {
        self.i += 1;
        self.out.push(if keyed { "{" } else { "[" })?;
        self.skip_ws();
        if self.peek() == close {
            self.i += 1;
            return self.out.push(if keyed { "}" } else { "]" });
        }
        loop {
            let secret = keyed && {
                self.skip_ws();
                let from = self.i;
                self.skip_string();
                self.emit(from)?;
                let secret = is_secret(&self.b[from..self.i]);
                self.skip_ws();
                self.i += 1; // the colon
                self.out.push(":")?;
                secret
            };
            if secret {
                self.skip_ws();
                self.skip_value();
                self.out.push("\"[redacted]\"")?;
            } else {
                self.value()?;
            }
            self.skip_ws();
            let sep = self.peek();
            self.i += 1;
            if sep == b',' {
                self.out.push(",")?;
            } else {
                return self.out.push(if keyed { "}" } else { "]" });
            }
        }
    }
}

/// Whether a key (its JSON string) names a secret.
fn is_secret(raw: &[u8]) -> bool {
    let key = if raw.contains(&b'\\') {
        serde_json::from_slice::<String>(raw).unwrap_or_default()
    } else {
        String::from_utf8_lossy(raw.get(1..raw.len().saturating_sub(1)).unwrap_or(b"")).into_owned()
    };
    SECRET_FIELDS.contains(&key.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_redacted_and_bounded() {
        let b = br#"{"model":"m","api_key":"sk-live-123","messages":[{"content":"hello world"}]}"#;
        let s = redact_body(b, 1000);
        assert!(!s.contains("sk-live-123"), "{s}");
        assert!(s.contains("hello world"));
        let short = redact_body(b, 10);
        assert_eq!(short.chars().count(), 11);
        assert_eq!(redact_body(b"not json", 100), "(not JSON: not kept)");
    }

    #[test]
    fn redaction_writes_the_body_compactly_and_stops_at_the_cut() {
        let b =
            br#" { "a" : [1, 2.5e3, true, null, {"Token": {"x": [1, "}"]}}], "k\u0065y": "s\"k",
            "s": "x,y]}", "e": {}, "l": [] } "#;
        assert_eq!(
            redact_body(b, 1000),
            r#"{"a":[1,2.5e3,true,null,{"Token":"[redacted]"}],"k\u0065y":"[redacted]","s":"x,y]}","e":{},"l":[]}"#
        );
        // What is kept is what the whole text would start with.
        let whole = redact_body(b, 1000);
        for max in [0, 1, 7, 30, 60] {
            let cut = redact_body(b, max);
            let prefix: String = whole.chars().take(max).collect();
            assert_eq!(cut, format!("{prefix}…"), "{max}");
        }
        assert_eq!(redact_body(b, whole.chars().count()), whole);
        assert_eq!(redact_body(b"[1,2]", 10), "[1,2]");
        assert_eq!(redact_body(b"\"\xc3\xa9t\xc3\xa9\"", 2), "\"\u{e9}…");
    }

    #[test]
    fn a_huge_body_is_kept_in_the_time_of_its_check() {
        // 16 MiB of small values: kept to 100 characters, never a tree.
        let mut b = Vec::with_capacity(16 << 20);
        b.extend_from_slice(b"{\"v\":[");
        while b.len() < (16 << 20) - 8 {
            b.extend_from_slice(b"0,");
        }
        b.extend_from_slice(b"0]}");
        let t = std::time::Instant::now();
        let kept = redact_body(&b, 100);
        assert_eq!(kept.chars().count(), 101);
        assert!(kept.starts_with("{\"v\":[0,0,"));
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
    }
}
