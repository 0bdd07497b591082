//! The access log: one line per request, buffered.
//!
//! Writing each line straight to stderr (as the `log` crate's logger does)
//! costs a system call per request, about a tenth of the gateway's
//! throughput at saturation (benches/README.md). Lines are collected in a
//! buffer instead and written by a background thread every 200 ms, or at once
//! when 64 KiB have gathered; like nginx's `access_log ... buffer= flush=`,
//! at most the last 200 ms of lines are lost if the process dies.
//! The line goes out when the `access` log target is enabled at info
//! (`log.level` / `RUST_LOG`).

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use once_cell::sync::Lazy;
use parking_lot::Mutex;

const FLUSH_BYTES: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

static BUFFER: Lazy<Mutex<Vec<u8>>> = Lazy::new(|| {
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| loop {
            std::thread::sleep(FLUSH_EVERY);
            flush();
        })
        .ok();
    Mutex::new(Vec::with_capacity(FLUSH_BYTES))
});

/// Whether access lines are wanted at all.
pub fn enabled() -> bool {
    log::log_enabled!(target: "access", log::Level::Info)
}

/// Appends one line: `line` writes it (without its newline) into the
/// buffer, written out at once when that fills it.
fn append(line: impl FnOnce(&mut Vec<u8>)) {
    let full = {
        let mut b = BUFFER.lock();
        line(&mut b);
        b.push(b'\n');
        b.len() >= FLUSH_BYTES
    };
    if full {
        flush();
    }
}

/// A text line's prefix: `[unix seconds.millis access] `.
fn put_timestamp(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    out.push(b'[');
    out.extend_from_slice(itoa::Buffer::new().format(now.as_secs()).as_bytes());
    let ms = now.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
    out.extend_from_slice(b" access] ");
}

/// Writes out what is buffered.
pub fn flush() {
    let pending = {
        let mut b = BUFFER.lock();
        if b.is_empty() {
            return;
        }
        std::mem::replace(&mut *b, Vec::with_capacity(FLUSH_BYTES))
    };
    let _ = std::io::stderr().lock().write_all(&pending);
}

/// The most characters of one field written to the access log; longer
/// values end in `...`. Keeps a line bounded whatever a client sends.
pub const MAX_FIELD_CHARS: usize = 200;

use crate::config::AccessFormat;

/// One request as the access log tells it. Strings are written escaped and
/// capped (see [`field`]); none of them may hold a secret.
#[derive(Debug, Default)]
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub key: Option<&'a str>,
    /// Client format (`openai_chat`, `anthropic`, ...).
    pub format: Option<&'a str>,
    /// The model the client asked for.
    pub model: &'a str,
    pub provider: &'a str,
    pub upstream_model: &'a str,
    pub attempts: u32,
    pub stream: bool,
    pub total_ms: f64,
    pub ttft_ms: Option<f64>,
    pub overhead_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    /// Input tokens written to the prompt cache (both classes).
    pub cache_write_tokens: u64,
    pub cost_usd: Option<f64>,
    /// The tokens (and the cost) were estimated from what was relayed: the
    /// provider reported no usage (a client that left before its end).
    pub usage_estimated: bool,
    pub client_gone: bool,
    /// How the response cache served it (`hit`, `miss`, `bypass`; models
    /// with `cache_ttl_seconds` only).
    pub cache: Option<&'static str>,
    pub error: Option<String>,
}

/// `s` made safe for one log field: control characters, spaces, quotes and
/// backslashes as `\xNN` (so a client cannot start a new line or forge a
/// `key=value` pair), at most [`MAX_FIELD_CHARS`] characters kept.
pub fn field(s: &str) -> String {
    Escaped(s, false).to_string()
}

/// `s` escaped and capped as [`field`] does (`quoted`: spaces kept, for the
/// last, quoted field), written straight into a line: no copy is made.
struct Escaped<'a>(&'a str, bool);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Escaped(s, quoted) = *self;
        let escape = |c: char| c.is_control() || c == '"' || c == '\\' || (c == ' ' && !quoted);
        // Runs of plain characters go out whole.
        let mut plain = 0;
        for (n, (i, c)) in s.char_indices().enumerate() {
            if n == MAX_FIELD_CHARS {
                f.write_str(&s[plain..i])?;
                return f.write_str("...");
            }
            if escape(c) {
                f.write_str(&s[plain..i])?;
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(f, "\\x{b:02x}")?;
                }
                plain = i + c.len_utf8();
            }
        }
        f.write_str(&s[plain..])
    }
}

/// `s` capped for a JSON field (JSON itself escapes the rest); borrowed
/// unless it was cut.
fn capped(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((i, _)) => Cow::Owned(format!("{}...", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

impl AccessRecord<'_> {
    /// Writes the record in `format` to the access log.
    pub fn write(&self, format: AccessFormat) {
        match format {
            AccessFormat::Text => append(|b| {
                put_timestamp(b);
                self.write_text(b);
            }),
            AccessFormat::Json => append(|b| self.write_json(b)),
        }
    }

    /// The line in `format`, without its newline (text lines get their
    /// timestamp prefix when they are written).
    pub fn render(&self, format: AccessFormat) -> String {
        match format {
            AccessFormat::Text => self.text(),
            AccessFormat::Json => self.json(),
        }
    }

    fn text(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_text(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The text line written straight into `out`: numbers by `itoa`, plain
    /// fields copied whole (what [`Escaped`] writes for them), no
    /// formatting machinery but for a cost and a field that needs escapes.
    fn write_text(&self, out: &mut Vec<u8>) {
        let mut num = itoa::Buffer::new();
        put_field(out, self.method, false);
        out.push(b' ');
        put_field(out, self.path, false);
        out.push(b' ');
        out.extend_from_slice(num.format(self.status).as_bytes());
        out.push(b' ');
        put_ms(out, self.total_ms.round());
        out.extend_from_slice(b"ms key=");
        put_field(out, self.key.unwrap_or("-"), false);
        out.extend_from_slice(b" model=");
        put_field(out, or_dash(self.model), false);
        out.extend_from_slice(b" upstream=");
        put_field(out, or_dash(self.provider), false);
        out.push(b'/');
        put_field(out, or_dash(self.upstream_model), false);
        out.extend_from_slice(b" attempts=");
        out.extend_from_slice(num.format(self.attempts).as_bytes());
        out.extend_from_slice(if self.stream {
            b" stream=true tokens="
        } else {
            b" stream=false tokens="
        });
        out.extend_from_slice(num.format(self.input_tokens).as_bytes());
        out.push(b'/');
        out.extend_from_slice(num.format(self.output_tokens).as_bytes());
        if let Some(c) = self.cost_usd {
            let _ = write!(out, " cost={}", crate::pricing::Usd(c));
        }
        if self.usage_estimated {
            out.extend_from_slice(b" usage=estimated");
        }
        if self.client_gone {
            out.extend_from_slice(b" client_gone");
        }
        if let Some(c) = self.cache {
            out.extend_from_slice(b" cache=");
            out.extend_from_slice(c.as_bytes());
        }
        if let Some(err) = &self.error {
            out.extend_from_slice(b" error=\"");
            put_field(out, err, true);
            out.push(b'"');
        }
    }

    fn json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The JSON line written straight into `out`: the fields borrowed, no
    /// tree built (the keys in the order `serde_json`'s maps keep, sorted).
    fn write_json(&self, out: &mut Vec<u8>) {
        let round3 = |ms: f64| (ms * 1000.0).round() / 1000.0;
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64 / 1000.0)
            .unwrap_or(0.0);
        let line = JsonLine {
            attempts: self.attempts,
            cache: self.cache,
            cache_write_input_tokens: self.cache_write_tokens,
            cached_input_tokens: self.cached_tokens,
            client_gone: self.client_gone,
            cost_usd: self.cost_usd,
            error: self.error.as_deref().map(capped),
            format: self.format,
            input_tokens: self.input_tokens,
            key: self.key.map(capped),
            method: capped(self.method),
            model: capped(self.model),
            output_tokens: self.output_tokens,
            overhead_ms: round3(self.overhead_ms),
            path: capped(self.path),
            provider: capped(self.provider),
            status: self.status,
            stream: self.stream,
            total_ms: round3(self.total_ms),
            ts,
            ttft_ms: self.ttft_ms.map(round3),
            upstream_model: capped(self.upstream_model),
            usage_estimated: self.usage_estimated,
        };
        // Writing into a Vec cannot fail, and every field serializes.
        let _ = serde_json::to_writer(out, &line);
    }
}

/// A record's JSON line, its fields borrowed.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    attempts: u32,
    cache: Option<&'static str>,
    cache_write_input_tokens: u64,
    cached_input_tokens: u64,
    client_gone: bool,
    cost_usd: Option<f64>,
    error: Option<Cow<'a, str>>,
    format: Option<&'a str>,
    input_tokens: u64,
    key: Option<Cow<'a, str>>,
    method: Cow<'a, str>,
    model: Cow<'a, str>,
    output_tokens: u64,
    overhead_ms: f64,
    path: Cow<'a, str>,
    provider: Cow<'a, str>,
    status: u16,
    stream: bool,
    total_ms: f64,
    ts: f64,
    ttft_ms: Option<f64>,
    upstream_model: Cow<'a, str>,
    usage_estimated: bool,
}

/// `s` as [`Escaped`] writes it: copied whole when it is short and every
/// byte is printable ASCII that needs no escape (most fields), else written
/// by [`Escaped`].
fn put_field(out: &mut Vec<u8>, s: &str, quoted: bool) {
    let plain = s.len() <= MAX_FIELD_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || (b == b' ' && quoted));
    if plain {
        out.extend_from_slice(s.as_bytes());
    } else {
        let _ = write!(out, "{}", Escaped(s, quoted));
    }
}

/// A whole number of milliseconds as `{}` writes the `f64` holding it.
fn put_ms(out: &mut Vec<u8>, ms: f64) {
    if (0.0..9_007_199_254_740_992.0).contains(&ms) {
        out.extend_from_slice(itoa::Buffer::new().format(ms as u64).as_bytes());
    } else {
        let _ = write!(out, "{ms}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_and_capped() {
        assert_eq!(field("gpt-4o"), "gpt-4o");
        assert_eq!(field("a\nb c\"\\"), "a\\x0ab\\x20c\\x22\\x5c");
        assert_eq!(field("\u{7f}\u{85}"), "\\x7f\\xc2\\x85");
        let long = "m".repeat(10_000);
        assert_eq!(field(&long).len(), MAX_FIELD_CHARS + 3);
        assert_eq!(capped(&long).len(), MAX_FIELD_CHARS + 3);
        // The cap counts characters, not bytes, and an escape counts as one.
        let wide = format!("{}{}", "é".repeat(MAX_FIELD_CHARS - 1), "\n tail");
        assert_eq!(
            field(&wide),
            format!("{}\\x0a...", "é".repeat(MAX_FIELD_CHARS - 1))
        );
        assert_eq!(field(""), "");
    }

    /// The copied-whole path writes what `Escaped` writes, at and around
    /// every edge of it.
    #[test]
    fn plain_fields_are_written_as_escaped_would() {
        let at_cap = "a".repeat(MAX_FIELD_CHARS);
        let over_cap = "a".repeat(MAX_FIELD_CHARS + 1);
        let cases = [
            "",
            "gpt-4o",
            "a b",
            "a\"b",
            "a\\b",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}",
            "é",
            "~!#$%&'()*+,-./:;<=>?@[]^_`{|}",
            &at_cap,
            &over_cap,
        ];
        for s in cases {
            for quoted in [false, true] {
                let mut out = Vec::new();
                put_field(&mut out, s, quoted);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    Escaped(s, quoted).to_string(),
                    "{s:?} {quoted}"
                );
            }
        }
        for ms in [0.0, 1.0, 12.0, 999_999.0, 9e15, 1e300, -1.0, f64::NAN] {
            let mut out = Vec::new();
            put_ms(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{ms}"));
        }
    }

    #[test]
    fn a_whole_text_line() {
        let r = AccessRecord {
            method: "POST",
            path: "/v1/messages",
            status: 502,
            total_ms: 12.4,
            key: Some("team a"),
            model: "fast",
            provider: "p",
            upstream_model: "m",
            attempts: 2,
            stream: true,
            input_tokens: 7,
            output_tokens: 3,
            cost_usd: Some(0.5),
            usage_estimated: true,
            client_gone: true,
            error: Some("x".repeat(MAX_FIELD_CHARS + 5)),
            ..AccessRecord::default()
        };
        assert_eq!(
            r.render(AccessFormat::Text),
            format!(
                "POST /v1/messages 502 12ms key=team\\x20a model=fast upstream=p/m attempts=2 \
                 stream=true tokens=7/3 cost={} usage=estimated client_gone error=\"{}...\"",
                crate::pricing::format_usd(0.5),
                "x".repeat(MAX_FIELD_CHARS)
            )
        );
        let bare = AccessRecord {
            method: "GET",
            path: "/v1/models",
            status: 200,
            ..AccessRecord::default()
        };
        assert_eq!(
            bare.render(AccessFormat::Text),
            "GET /v1/models 200 0ms key=- model=- upstream=-/- attempts=0 stream=false tokens=0/0"
        );
    }

    #[test]
    fn a_forged_line_stays_one_line() {
        let r = AccessRecord {
            method: "POST",
            path: "/v1/chat/completions",
            model: "x\n[0.000 access] GET /admin 200 key=root",
            ..AccessRecord::default()
        };
        for f in [AccessFormat::Text, AccessFormat::Json] {
            let line = r.render(f);
            assert!(!line.contains('\n'), "{line}");
        }
        assert!(!r.render(AccessFormat::Text).contains(" key=root"));
        let e = AccessRecord {
            error: Some("broken \"pipe\"\nx".into()),
            ..AccessRecord::default()
        };
        assert!(e
            .render(AccessFormat::Text)
            .ends_with(r#" error="broken \x22pipe\x22\x0ax""#));
        let v: serde_json::Value = serde_json::from_str(&r.render(AccessFormat::Json)).unwrap();
        assert_eq!(v["model"], "x\n[0.000 access] GET /admin 200 key=root");
    }

    #[test]
    fn the_json_line_has_every_field_in_sorted_order() {
        let r = AccessRecord {
            method: "POST",
            path: "/v1/messages",
            status: 200,
            key: Some("team-a"),
            format: Some("anthropic"),
            model: "fast",
            provider: "openai",
            upstream_model: "gpt-4o",
            attempts: 2,
            stream: true,
            total_ms: 12.34567,
            ttft_ms: Some(3.21),
            cost_usd: Some(0.0012),
            cache: Some("miss"),
            error: Some("e".repeat(MAX_FIELD_CHARS + 5)),
            ..AccessRecord::default()
        };
        let line = r.render(AccessFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // A `Value` writes its keys sorted: the line is exactly that form.
        assert_eq!(line, v.to_string());
        assert_eq!(v.as_object().unwrap().len(), 23);
        assert_eq!(v["total_ms"], 12.346);
        assert_eq!(v["key"], "team-a");
        assert_eq!(v["ttft_ms"], 3.21);
        assert_eq!(v["error"].as_str().unwrap().len(), MAX_FIELD_CHARS + 3);
        assert!(v["ts"].as_f64().unwrap() > 1.7e9);
    }
}
