//! Incremental Server-Sent Events parsing and writing.
//!
//! The parser takes bytes as they come off the socket (an event may be split
//! across reads, a read may hold many events) and yields whole events. Memory
//! is bounded: a single event larger than the limit is an error, not an
//! unbounded buffer.

use bytes::{BufMut, BytesMut};

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, when present.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// True for the OpenAI end-of-stream marker `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// An event grew past the parser's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseTooLarge {
    pub limit: usize,
}

impl std::fmt::Display for SseTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SSE event larger than {} bytes", self.limit)
    }
}

/// Default bound on one event (an LLM chunk is a few hundred bytes; a Gemini
/// image part can be a few MiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// Incremental SSE parser.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes not yet split into lines.
    buf: Vec<u8>,
    /// Where to resume looking for a line end in `buf`.
    scan_from: usize,
    /// The event being assembled.
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs
    /// to the same line break.
    pending_cr: bool,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser that refuses events larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            scan_from: 0,
            event: None,
            data: String::new(),
            has_data: false,
            pending_cr: false,
            max_event_bytes,
        }
    }

    /// Feeds bytes; pushes every event completed by them onto `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseTooLarge> {
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = self.scan_from;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                let line_end = i;
                i += 1;
                if b == b'\r' {
                    if i < self.buf.len() {
                        if self.buf[i] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.pending_cr = true;
                    }
                }
                let line = std::mem::take(&mut self.buf);
                self.process_line(&line[start..line_end], out);
                self.buf = line;
                start = i;
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
        self.scan_from = self.buf.len();
        if self.buf.len() + self.data.len() > self.max_event_bytes {
            self.buf.clear();
            self.scan_from = 0;
            self.reset_event();
            return Err(SseTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Ends the input: an event not closed by a blank line is dispatched, as
    /// upstreams that close the connection right after the last `data:` line
    /// expect.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.process_line(&line, out);
        }
        self.scan_from = 0;
        self.dispatch(out);
    }

    fn reset_event(&mut self) {
        self.event = None;
        self.data.clear();
        self.has_data = false;
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.reset_event();
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {} // id, retry and unknown fields carry nothing we use
        }
    }
}

/// How a format frames its SSE stream: what a same-format relay keeps and
/// where it finds the model name. Each format module defines its own.
#[derive(Debug)]
pub(crate) struct SseRules {
    /// Events carry `event:` names the client's SDK dispatches on (Gemini
    /// clients get `data:` lines only: their SDK parses nothing else).
    pub event_names: bool,
    /// The stream ends with `data: [DONE]` (OpenAI Chat), an error event too.
    pub done_marker: bool,
    /// Object keys from the top of an event to the model name.
    pub model_path: &'static [&'static str],
    /// Object keys from the top of a response body to the model name.
    pub body_model_path: &'static [&'static str],
    /// What keeps a quiet stream alive (load balancers cut idle
    /// connections): an SSE comment, which every SSE parser skips, except
    /// where the client's SDK cannot take one.
    pub keepalive: &'static [u8],
}

/// The SSE comment that keeps a quiet stream alive.
pub(crate) const COMMENT_KEEPALIVE: &[u8] = b": keepalive\n\n";

/// Appends `data: <json>\n\n`.
pub fn write_data(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// Appends `event: <name>\ndata: <json>\n\n`.
pub fn write_event(out: &mut BytesMut, event: &str, data: &[u8]) {
    out.reserve(event.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\n");
    write_data(out, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    #[test]
    fn events_split_across_reads_and_many_in_one_read() {
        let whole = b"event: a\ndata: {\"x\":1}\n\n: keep-alive\n\ndata: two\ndata: lines\n\ndata: [DONE]\n\n";
        let expected = parse_all(&[whole]);
        assert_eq!(
            expected,
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "{\"x\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "two\nlines".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
        assert!(expected[2].is_done());
        for split in 0..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(parse_all(&[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(parse_all(&bytes), expected);
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let crlf = parse_all(&[b"data: a\r\n\r\ndata: b\r", b"\n\r\n"]);
        assert_eq!(crlf.len(), 2);
        assert_eq!(crlf[1].data, "b");
        let cr = parse_all(&[b"data: a\r\rdata: b\r\r"]);
        assert_eq!(
            cr.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn unterminated_last_event_is_dispatched_on_finish() {
        let out = parse_all(&[b"data: {\"a\":1}"]);
        assert_eq!(
            out,
            vec![SseEvent {
                event: None,
                data: "{\"a\":1}".into()
            }]
        );
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert!(p.feed(b"data: 0123456789abcdefghij", &mut out).is_err());
        // The parser recovers for the next event.
        p.feed(b"\n\ndata: ok\n\n", &mut out).unwrap();
        assert_eq!(out.last().map(|e| e.data.as_str()), Some("ok"));
    }

    #[test]
    fn writers() {
        let mut b = BytesMut::new();
        write_event(&mut b, "ping", b"{}");
        write_data(&mut b, b"[DONE]");
        assert_eq!(&b[..], b"event: ping\ndata: {}\n\ndata: [DONE]\n\n");
    }
}
