//! Same-format answers: the client speaks the provider's format, so the
//! answer goes through as the provider wrote it. This is a translator like
//! the others, only cheaper: it still shows the client the model name it
//! asked for, reads usage through the format's own `usage` file (so tokens
//! are counted exactly as on a translated path), and checks that what it
//! forwards is the format's SSE and JSON.
//!
//! A stream is relayed as bytes: events are framed again (`event:` and
//! `data:` lines, the comments and `id:`/`retry:` fields dropped) but their
//! data is copied verbatim, except for the model's string value. Only an
//! event that may report usage is parsed into a `Value`; every other one is
//! only validated. Buffers live as long as the stream.

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::finish::{may_report_finish, read_finish, FinishReasons};
use crate::sse::{SseRules, SseTooLarge, DEFAULT_MAX_EVENT_BYTES};
use crate::{
    error::stream_error_event, may_report_usage, stream_decoder, Format, SseEvent, StreamDecode,
    StreamEvent, Usage, UsageTally,
};

/// Why a same-format stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    /// An event grew past the SSE parser's bound.
    TooLarge(SseTooLarge),
    /// An event's data is not JSON: forwarding it would hand the client
    /// garbage its SDK cannot parse.
    InvalidJson(String),
}

impl std::fmt::Display for StreamFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamFault::TooLarge(e) => e.fmt(f),
            StreamFault::InvalidJson(e) => {
                write!(f, "upstream sent an event that is not JSON: {e}")
            }
        }
    }
}

/// What a same-format stream needs to know about the request.
#[derive(Debug, Clone, Default)]
pub struct PassthroughOptions {
    /// The model name to show the client instead of the upstream's.
    pub model_override: Option<String>,
    /// The gateway asked an OpenAI Chat upstream for usage on the client's
    /// behalf (`stream_options.include_usage`): the usage-only chunk is
    /// read and then dropped.
    pub drop_usage_chunk: bool,
    /// Keep the answer's text ([`PassthroughStream::take_text`]), for the
    /// session context store.
    pub capture_text: bool,
    /// Count the bytes of output the answer carries (text, reasoning,
    /// tool calls: [`PassthroughStream::output_bytes`]), to estimate the
    /// usage of an answer whose provider never reports it (a client that
    /// leaves before the last event).
    pub count_output: bool,
    /// Read the finish reasons the answer reports
    /// ([`PassthroughStream::take_finish_reasons`]), for a traced request:
    /// only events that may carry one are parsed for it.
    pub finish_reasons: bool,
}

/// The SSE rules of `fmt`, kept with the format's module.
fn rules(fmt: Format) -> &'static SseRules {
    match fmt {
        Format::OpenAiChat => &crate::openai_chat::SSE_RULES,
        Format::OpenAiResponses => &crate::openai_responses::SSE_RULES,
        Format::Anthropic => &crate::anthropic::SSE_RULES,
        Format::Gemini => &crate::gemini::SSE_RULES,
        Format::Bedrock => &crate::bedrock::SSE_RULES,
    }
}

/// Relays one same-format SSE stream, chunk by chunk.
pub struct PassthroughStream {
    format: Format,
    rules: &'static SseRules,
    /// The override as a JSON string literal, quotes included.
    model_json: Option<Vec<u8>>,
    drop_usage_chunk: bool,
    tally: UsageTally,
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
    pending_cr: bool,
    /// The event being assembled: its name and its data lines joined by `\n`.
    name: Vec<u8>,
    has_name: bool,
    data: Vec<u8>,
    has_data: bool,
    /// Events forwarded so far.
    events: u64,
    max_event_bytes: usize,
    capture: Option<Capture>,
    /// A Responses stream's response id (from its first event that names one).
    response_id: Option<String>,
    count_output: bool,
    /// Bytes of output relayed so far (with `count_output`).
    output_bytes: u64,
    /// The finish reasons seen so far (with `finish_reasons`).
    finish: Option<FinishReasons>,
}

/// Decodes the answer's text on the side, only when a session keeps it.
struct Capture {
    decoder: Box<dyn StreamDecode>,
    events: Vec<StreamEvent>,
    text: String,
}

impl PassthroughStream {
    /// A relay for a stream in `fmt` (the client's and the provider's).
    pub fn new(fmt: Format, opts: PassthroughOptions) -> Self {
        let model_json = opts
            .model_override
            .as_deref()
            .and_then(|m| serde_json::to_vec(m).ok());
        PassthroughStream {
            format: fmt,
            rules: rules(fmt),
            model_json,
            drop_usage_chunk: opts.drop_usage_chunk && fmt == Format::OpenAiChat,
            tally: UsageTally::new(fmt),
            partial: Vec::new(),
            pending_cr: false,
            name: Vec::new(),
            has_name: false,
            data: Vec::new(),
            has_data: false,
            events: 0,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            capture: opts.capture_text.then(|| Capture {
                decoder: stream_decoder(fmt),
                events: Vec::new(),
                text: String::new(),
            }),
            response_id: None,
            count_output: opts.count_output,
            output_bytes: 0,
            finish: opts.finish_reasons.then(FinishReasons::default),
        }
    }

    /// The response id of a Responses stream (`response.id` of its first
    /// event that has one), once seen; `None` for other formats.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// Bounds one event's size (default [`DEFAULT_MAX_EVENT_BYTES`]).
    pub fn with_max_event_bytes(mut self, limit: usize) -> Self {
        self.max_event_bytes = limit;
        self
    }

    /// The usage the stream reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.tally.usage()
    }

    /// Events seen so far (forwarded or read and dropped).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes of output (text, reasoning, tool-call names and arguments)
    /// relayed so far (with `count_output`).
    pub fn output_bytes(&self) -> u64 {
        self.output_bytes
    }

    /// The finish reasons the stream reported (with `finish_reasons`), one
    /// per choice; `None` when none came or none were asked for.
    pub fn take_finish_reasons(&mut self) -> Option<FinishReasons> {
        self.finish.take().filter(|f| !f.is_empty())
    }

    /// The answer's text since the last call (with `capture_text`).
    pub fn take_text(&mut self) -> String {
        self.capture
            .as_mut()
            .map(|c| std::mem::take(&mut c.text))
            .unwrap_or_default()
    }

    /// Feeds upstream bytes; appends what the client gets to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), StreamFault> {
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let mut start = 0;
        while let Some(p) = memchr::memchr2(b'\n', b'\r', &chunk[start..]) {
            let end = start + p;
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            if self.partial.is_empty() {
                self.line(&chunk[start..end], out)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[start..end]);
                let r = self.line(&line, out);
                line.clear();
                self.partial = line;
                r?;
            }
            start = next;
        }
        self.partial.extend_from_slice(&chunk[start..]);
        if self.partial.len() + self.data.len() > self.max_event_bytes {
            let limit = self.max_event_bytes;
            self.partial.clear();
            self.reset_event();
            return Err(StreamFault::TooLarge(SseTooLarge { limit }));
        }
        Ok(())
    }

    /// The upstream closed the stream: an event not closed by a blank line
    /// is still relayed.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out)?;
        }
        self.dispatch(out)
    }

    /// The stream breaks after it started: one error event in the format's
    /// shape, and its end marker.
    pub fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        end_with_error(self.format, status, message, out);
    }

    fn reset_event(&mut self) {
        self.name.clear();
        self.has_name = false;
        self.data.clear();
        self.has_data = false;
    }

    fn line(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), StreamFault> {
        if line.is_empty() {
            return self.dispatch(out);
        }
        if line[0] == b':' {
            return Ok(()); // a comment or keep-alive
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
                self.has_name = true;
            }
            _ => {} // id, retry and unknown fields
        }
        Ok(())
    }

    /// A blank line: the event is complete.
    fn dispatch(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        if !self.has_data {
            self.reset_event();
            return Ok(());
        }
        let r = self.relay_event(out);
        self.reset_event();
        r
    }

    fn relay_event(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        let data = trim_ascii(&self.data);
        if data.is_empty() {
            return Ok(());
        }
        self.events += 1;
        if data == b"[DONE]" {
            // OpenAI Chat's end marker; in any other format it is foreign
            // and the client's SDK would choke on it.
            if self.rules.done_marker {
                crate::sse::write_data(out, b"[DONE]");
            }
            return Ok(());
        }
        if self.format == Format::OpenAiChat && is_filter_verdict(data) {
            // Azure's prompt-filter verdict: no choices, no usage, an empty
            // `id` and `object` (strict clients refuse it). Nothing for a
            // client; checked for JSON like any event.
            return Ok(());
        }
        let finish = match &mut self.finish {
            Some(f) if may_report_finish(self.format, data) => Some(f),
            _ => None,
        };
        if may_report_usage(data) {
            let v: Value = serde_json::from_slice(data)
                .map_err(|e| StreamFault::InvalidJson(e.to_string()))?;
            if let Some(f) = finish {
                // The event parsed for its usage: read again, not parsed again.
                read_finish(self.format, &v, f);
            }
            if self.count_output {
                self.output_bytes += crate::output::in_value(self.format, &v);
            }
            if self.tally.add(&v) && self.drop_usage_chunk && is_usage_only_chunk(&v) {
                return Ok(());
            }
        } else {
            if let Some(n) = self
                .count_output
                .then(|| crate::output::in_slice(self.format, data).ok())
                .flatten()
            {
                // Read as the format's event shape, which checks it is JSON too.
                self.output_bytes += n;
            } else {
                serde_json::from_slice::<IgnoredAny>(data)
                    .map_err(|e| StreamFault::InvalidJson(e.to_string()))?;
            }
            if let Some(f) = finish {
                // Once per choice: the event that ends it.
                if let Ok(v) = serde_json::from_slice::<Value>(data) {
                    read_finish(self.format, &v, f);
                }
            }
        }
        if let Some(c) = &mut self.capture {
            c.capture(self.has_name.then_some(&self.name[..]), data);
        }
        if self.format == Format::OpenAiResponses && self.response_id.is_none() {
            self.response_id = string_at(data, &["response", "id"])
                .and_then(|r| serde_json::from_slice::<String>(&data[r]).ok());
        }
        if self.has_name && self.rules.event_names {
            out.reserve(self.name.len() + 8);
            out.put_slice(b"event: ");
            out.put_slice(&self.name);
            out.put_u8(b'\n');
        }
        let renamed = match &self.model_json {
            Some(m) => string_at(data, self.rules.model_path).map(|r| (r, m)),
            None => None,
        };
        out.reserve(data.len() + 16 + renamed.as_ref().map_or(0, |(_, m)| m.len()));
        match renamed {
            Some((r, m)) => {
                write_data_lines(out, &data[..r.start]);
                out.put_slice(m);
                write_data_tail(out, &data[r.end..]);
            }
            None => write_data_lines(out, data),
        }
        out.put_slice(b"\n\n");
        Ok(())
    }
}

impl Capture {
    fn capture(&mut self, name: Option<&[u8]>, data: &[u8]) {
        let ev = SseEvent {
            event: name.map(|n| String::from_utf8_lossy(n).into_owned()),
            data: String::from_utf8_lossy(data).into_owned(),
        };
        self.events.clear();
        if self.decoder.decode(&ev, &mut self.events).is_ok() {
            for e in &self.events {
                if let StreamEvent::TextDelta { text } = e {
                    self.text.push_str(text);
                }
            }
        }
    }
}

/// Bytes of generated output a stream event carries: what an estimate of
/// output tokens counts when the provider reports no usage.
pub fn output_bytes(e: &StreamEvent) -> u64 {
    let n = match e {
        StreamEvent::TextDelta { text } | StreamEvent::ThinkingDelta { text } => text.len(),
        StreamEvent::ToolCallStart { name, .. } => name.len(),
        StreamEvent::ToolCallDelta { arguments, .. } => arguments.len(),
        StreamEvent::RedactedThinking { data } => data.len(),
        _ => 0,
    };
    n as u64
}

/// Ends a stream in `fmt` that carried nothing yet but keep-alives: one
/// error event in the format's shape, and its end marker.
pub fn end_with_error(fmt: Format, status: Option<u16>, message: &str, out: &mut BytesMut) {
    stream_error_event(fmt, status, message, out);
    if rules(fmt).done_marker {
        crate::sse::write_data(out, b"[DONE]");
    }
}

/// The bytes that keep a quiet stream to a `fmt` client alive: an SSE
/// comment, or for Gemini clients (whose SDKs take `data:` lines only) a
/// chunk with one empty text part.
pub fn keepalive(fmt: Format) -> &'static [u8] {
    rules(fmt).keepalive
}

/// Azure OpenAI's first chat chunk, the prompt filter's verdict:
/// `prompt_filter_results` with `choices` empty and no `usage`. Parsed only
/// when the key is there (Azure's first chunk alone).
fn is_filter_verdict(data: &[u8]) -> bool {
    if memchr::memmem::find(data, b"\"prompt_filter_results\"").is_none() {
        return false;
    }
    serde_json::from_slice::<Value>(data).is_ok_and(|v| {
        v.get("prompt_filter_results").is_some()
            && v.get("usage").is_none()
            && is_usage_only_chunk(&v)
    })
}

/// OpenAI's usage-only chunk: `choices` empty, `usage` set.
fn is_usage_only_chunk(v: &Value) -> bool {
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Writes `data` as the start of a `data:` line, a line per `\n` in it (an
/// event of several `data:` lines stays one event), leaving the last line
/// open.
fn write_data_lines(out: &mut BytesMut, data: &[u8]) {
    out.put_slice(b"data: ");
    write_data_tail(out, data);
}

/// Continues an open `data:` line with `data`.
fn write_data_tail(out: &mut BytesMut, data: &[u8]) {
    let mut rest = data;
    while let Some(p) = memchr::memchr(b'\n', rest) {
        out.put_slice(&rest[..=p]);
        out.put_slice(b"data: ");
        rest = &rest[p + 1..];
    }
    out.put_slice(rest);
}

/// The byte range (quotes included) of the string value at `path` (object
/// keys from the top) in the JSON text `s`, when there is one.
pub(crate) fn string_at(s: &[u8], path: &[&str]) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    // Cheap refusal: most events do not name the key at all.
    memchr::memmem::find(s, first.as_bytes())?;
    string_in_object(s, skip_ws(s, 0), first.as_bytes(), rest)
}

fn string_in_object(s: &[u8], mut i: usize, key: &[u8], rest: &[&str]) -> Option<Range<usize>> {
    if s.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(s, i + 1);
    loop {
        if s.get(i) != Some(&b'"') {
            return None; // `}` (no more keys) or not JSON
        }
        let key_end = skip_string(s, i)?;
        let this = &s[i + 1..key_end - 1];
        i = skip_ws(s, key_end);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(s, i + 1);
        if this == key {
            return match rest.split_first() {
                None if s.get(i) == Some(&b'"') => Some(i..skip_string(s, i)?),
                None => None,
                Some((next, more)) => string_in_object(s, i, next.as_bytes(), more),
            };
        }
        i = skip_ws(s, skip_value(s, i)?);
        match s.get(i) {
            Some(b',') => i = skip_ws(s, i + 1),
            _ => return None,
        }
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// `s[i]` is `"`: the index just past the closing quote.
fn skip_string(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let p = j + memchr::memchr2(b'"', b'\\', s.get(j..)?)?;
        if s[p] == b'\\' {
            j = p + 2;
        } else {
            return Some(p + 1);
        }
    }
}

/// The index just past the value starting at `s[i]`.
fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i)? {
        b'"' => skip_string(s, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *s.get(j)? {
                    b'"' => {
                        j = skip_string(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while s
                .get(j)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// A same-format response body, checked and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyPassthrough {
    /// The usage, exactly as the format's decoder reads it.
    pub usage: Option<Usage>,
    /// The body with the model renamed; `None` when it goes out unchanged.
    pub renamed: Option<Vec<u8>>,
    /// The finish reasons it reports, one per choice (read only by
    /// [`passthrough_body_with_finish`]; `None` when none).
    pub finish_reasons: Option<FinishReasons>,
}

/// Reads a same-format response body in `fmt`: its usage, and (with an
/// override) the body with the model's string value replaced, the rest of
/// the bytes untouched. `Err` when the body is not JSON.
pub fn passthrough_body(
    fmt: Format,
    body: &[u8],
    model_override: Option<&str>,
) -> Result<BodyPassthrough, serde_json::Error> {
    read_body(fmt, body, model_override, false)
}

/// [`passthrough_body`], and in the same pass the finish reasons the body
/// reports (a traced request).
pub fn passthrough_body_with_finish(
    fmt: Format,
    body: &[u8],
    model_override: Option<&str>,
) -> Result<BodyPassthrough, serde_json::Error> {
    read_body(fmt, body, model_override, true)
}

fn read_body(
    fmt: Format,
    body: &[u8],
    model_override: Option<&str>,
    finish: bool,
) -> Result<BodyPassthrough, serde_json::Error> {
    let (usage, finish_reasons) = if finish {
        let (usage, f) = crate::usage_and_finish_of_body(fmt, body)?;
        (usage, Some(f).filter(|f| !f.is_empty()))
    } else {
        (crate::usage_of_body(fmt, body)?, None)
    };
    let renamed = match model_override {
        Some(m) => match string_at(body, rules(fmt).body_model_path) {
            Some(r) => {
                let m = serde_json::to_vec(m)?;
                let mut out = Vec::with_capacity(body.len() + m.len());
                out.extend_from_slice(&body[..r.start]);
                out.extend_from_slice(&m);
                out.extend_from_slice(&body[r.end..]);
                Some(out)
            }
            None => None,
        },
        None => None,
    };
    Ok(BodyPassthrough {
        usage,
        renamed,
        finish_reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SseParser;

    fn relay(
        fmt: Format,
        opts: PassthroughOptions,
        chunks: &[&[u8]],
    ) -> Result<String, StreamFault> {
        let mut r = PassthroughStream::new(fmt, opts);
        let mut out = BytesMut::new();
        for c in chunks {
            r.feed(c, &mut out)?;
        }
        r.finish(&mut out)?;
        Ok(String::from_utf8(out.to_vec()).unwrap())
    }

    fn renamed(m: &str) -> PassthroughOptions {
        PassthroughOptions {
            model_override: Some(m.into()),
            ..Default::default()
        }
    }

    #[test]
    fn chat_chunks_keep_their_bytes_with_the_model_renamed() {
        let input = b": keep-alive\n\ndata: {\"id\":\"c1\", \"model\" : \"gpt-4o-2024\",\"choices\":[{\"delta\":{\"content\":\"\\\"model\\\":\\\"no\\\"\"}}]}\r\n\r\ndata: [DONE]\n\n";
        let want = "data: {\"id\":\"c1\", \"model\" : \"fast\",\"choices\":[{\"delta\":{\"content\":\"\\\"model\\\":\\\"no\\\"\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(
            relay(Format::OpenAiChat, renamed("fast"), &[input]).unwrap(),
            want
        );
        // However the reads are cut, the same bytes come out.
        for cut in 0..input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                relay(Format::OpenAiChat, renamed("fast"), &[a, b]).unwrap(),
                want,
                "cut {cut}"
            );
        }
        // Without an override nothing is rewritten; a quote in the new name is escaped.
        let plain = relay(Format::OpenAiChat, PassthroughOptions::default(), &[input]).unwrap();
        assert!(plain.contains("\"model\" : \"gpt-4o-2024\""), "{plain}");
        let quoted = relay(Format::OpenAiChat, renamed("a\"b"), &[input]).unwrap();
        assert!(quoted.contains(r#""model" : "a\"b""#), "{quoted}");
    }

    #[test]
    fn a_responses_stream_names_its_response_id() {
        let mut out = BytesMut::new();
        let mut p = PassthroughStream::new(Format::OpenAiResponses, PassthroughOptions::default());
        p.feed(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_7\",\"model\":\"m\"}}\n\n", &mut out)
            .unwrap();
        p.feed(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"other\"}}\n\n", &mut out)
            .unwrap();
        assert_eq!(p.response_id(), Some("resp_7"), "the first one");
        let mut c = PassthroughStream::new(Format::OpenAiChat, PassthroughOptions::default());
        c.feed(
            b"data: {\"id\":\"x\",\"response\":{\"id\":\"no\"}}\n\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(c.response_id(), None);
    }

    #[test]
    fn the_model_is_renamed_only_where_the_format_keeps_it() {
        let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[{\"model\":\"inner\"}],\"model\":\"claude-x\"}}\n\n";
        let out = relay(Format::Anthropic, renamed("fast"), &[start]).unwrap();
        assert!(out.starts_with("event: message_start\ndata: "), "{out}");
        assert!(
            out.contains(r#""model":"inner""#) && out.contains(r#""model":"fast""#),
            "{out}"
        );
        let created = b"event: response.created\ndata: {\"type\":\"response.created\",\"model\":\"top\",\"response\":{\"id\":\"r\",\"model\":\"gpt-x\"}}\n\n";
        let out = relay(Format::OpenAiResponses, renamed("fast"), &[created]).unwrap();
        assert!(
            out.contains(r#""model":"top""#) && out.contains(r#""id":"r","model":"fast""#),
            "{out}"
        );
        let gemini = b"event: x\ndata: {\"candidates\":[],\"modelVersion\":\"gemini-2.5\"}\n\n";
        let out = relay(Format::Gemini, renamed("fast"), &[gemini]).unwrap();
        // Gemini clients get `data:` lines only.
        assert_eq!(
            out,
            "data: {\"candidates\":[],\"modelVersion\":\"fast\"}\n\n"
        );
    }

    #[test]
    fn an_event_of_several_data_lines_stays_one_event() {
        let input = b"event: message_start\ndata: {\"type\":\"message_start\",\ndata: \"message\":{\"model\":\"claude-x\",\ndata: \"usage\":{\"input_tokens\":3}}}\n\n";
        let out = relay(Format::Anthropic, renamed("fast"), &[input]).unwrap();
        let mut p = SseParser::default();
        let mut events = Vec::new();
        p.feed(out.as_bytes(), &mut events).unwrap();
        p.finish(&mut events);
        assert_eq!(events.len(), 1, "{out}");
        assert_eq!(
            events[0].data,
            "{\"type\":\"message_start\",\n\"message\":{\"model\":\"fast\",\n\"usage\":{\"input_tokens\":3}}}"
        );
        let mut r = PassthroughStream::new(Format::Anthropic, PassthroughOptions::default());
        r.feed(input, &mut BytesMut::new()).unwrap();
        assert_eq!(r.usage().map(|u| u.input_tokens), Some(3));
    }

    #[test]
    fn invalid_json_ends_the_stream_instead_of_reaching_the_client() {
        let input = b"data: {\"choices\":[]}\n\ndata: {\"choices\":[\n\n";
        let mut r = PassthroughStream::new(Format::OpenAiChat, PassthroughOptions::default());
        let mut out = BytesMut::new();
        let err = r.feed(input, &mut out).unwrap_err();
        assert!(matches!(err, StreamFault::InvalidJson(_)), "{err}");
        assert_eq!(&out[..], b"data: {\"choices\":[]}\n\n");
        r.fail(Some(502), "upstream stream failed", &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(text.contains("upstream stream failed"), "{text}");
        // Anthropic: an `error` event, no `[DONE]`.
        let mut r = PassthroughStream::new(Format::Anthropic, PassthroughOptions::default());
        let mut out = BytesMut::new();
        assert!(r.feed(b"event: ping\ndata: nope\n\n", &mut out).is_err());
        r.fail(None, "bad", &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("event: error\n"), "{text}");
        assert!(!text.contains("[DONE]"), "{text}");
    }

    #[test]
    fn output_is_counted_without_keeping_the_text() {
        let chat = b"data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" you\"}}]}\n\n";
        let opts = PassthroughOptions {
            count_output: true,
            ..Default::default()
        };
        let mut r = PassthroughStream::new(Format::OpenAiChat, opts);
        let mut out = BytesMut::new();
        r.feed(chat, &mut out).unwrap();
        assert_eq!(r.output_bytes(), 9);
        assert_eq!(r.take_text(), "");
        let mut plain = PassthroughStream::new(Format::OpenAiChat, PassthroughOptions::default());
        plain.feed(chat, &mut out).unwrap();
        assert_eq!(plain.output_bytes(), 0, "counted only when asked");
    }

    fn traced() -> PassthroughOptions {
        PassthroughOptions {
            finish_reasons: true,
            ..Default::default()
        }
    }

    #[test]
    fn finish_reasons_are_read_only_when_asked_one_per_choice() {
        // n = 2: each choice ends in its own chunk; the usage chunk after.
        let chat = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null},{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let mut r = PassthroughStream::new(Format::OpenAiChat, traced());
        let mut out = BytesMut::new();
        r.feed(chat, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(
            r.take_finish_reasons().unwrap().into_vec(),
            ["stop", "length"]
        );
        assert_eq!(&out[..], &chat[..], "the bytes go through untouched");
        let mut plain = PassthroughStream::new(Format::OpenAiChat, PassthroughOptions::default());
        plain.feed(chat, &mut out).unwrap();
        assert_eq!(plain.take_finish_reasons(), None, "read only when asked");
        // Anthropic's reason comes in `message_delta`, parsed for its usage.
        let anthropic = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"stop_reason\":null,\"usage\":{\"input_tokens\":3}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\n";
        let mut r = PassthroughStream::new(Format::Anthropic, traced());
        r.feed(anthropic, &mut out).unwrap();
        assert_eq!(r.take_finish_reasons().unwrap().into_vec(), ["tool_use"]);
        // A stream that never says: none.
        let mut r = PassthroughStream::new(Format::OpenAiChat, traced());
        r.feed(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(r.take_finish_reasons(), None);
    }

    #[test]
    fn a_bodys_finish_reasons_are_read_in_the_same_pass_as_its_usage() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"},{"index":1,"message":{"content":"ho"},"finish_reason":"length"}],"model":"m","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let r = passthrough_body_with_finish(Format::OpenAiChat, body, Some("fast")).unwrap();
        assert_eq!(r.finish_reasons.unwrap().into_vec(), ["stop", "length"]);
        assert_eq!(r.usage.map(|u| u.total()), Some(3));
        assert!(String::from_utf8(r.renamed.unwrap())
            .unwrap()
            .contains("\"model\":\"fast\""));
        assert_eq!(
            passthrough_body(Format::OpenAiChat, body, None)
                .unwrap()
                .finish_reasons,
            None
        );
        let responses = br#"{"id":"resp_1","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[],"usage":{"input_tokens":1,"output_tokens":2}}"#;
        let r = passthrough_body_with_finish(Format::OpenAiResponses, responses, None).unwrap();
        assert_eq!(r.finish_reasons.unwrap().into_vec(), ["max_output_tokens"]);
        let anthropic = br#"{"id":"msg_1","type":"message","content":[],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let r = passthrough_body_with_finish(Format::Anthropic, anthropic, None).unwrap();
        assert_eq!(r.finish_reasons.unwrap().into_vec(), ["end_turn"]);
        // Gemini without `alt=sse`: an array of chunks.
        let gemini = br#"[{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]},{"candidates":[{"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2}}]"#;
        let r = passthrough_body_with_finish(Format::Gemini, gemini, None).unwrap();
        assert_eq!(r.finish_reasons.unwrap().into_vec(), ["MAX_TOKENS"]);
    }

    #[test]
    fn azures_filter_verdict_chunk_is_dropped() {
        let input = b"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"prompt_filter_results\":[]}\n\ndata: [DONE]\n\n";
        let out = relay(Format::OpenAiChat, PassthroughOptions::default(), &[input]).unwrap();
        assert_eq!(
            out,
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"prompt_filter_results\":[]}\n\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn done_marker_and_usage_chunk_follow_the_format_rules() {
        let chat = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        let opts = PassthroughOptions {
            drop_usage_chunk: true,
            ..Default::default()
        };
        let mut r = PassthroughStream::new(Format::OpenAiChat, opts);
        let mut out = BytesMut::new();
        r.feed(chat, &mut out).unwrap();
        assert_eq!(
            &out[..],
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(r.usage().map(|u| u.total()), Some(3));
        // Kept when the client asked for it.
        let kept = relay(Format::OpenAiChat, PassthroughOptions::default(), &[chat]).unwrap();
        assert!(kept.contains("\"usage\""), "{kept}");
        // `[DONE]` is OpenAI Chat's: other formats' clients never see it.
        let out = relay(
            Format::Anthropic,
            PassthroughOptions::default(),
            &[b"data: [DONE]\n\n"],
        )
        .unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn an_unterminated_last_event_is_relayed_and_oversized_ones_refused() {
        let out = relay(
            Format::OpenAiChat,
            PassthroughOptions::default(),
            &[b"data: {\"a\":1}"],
        )
        .unwrap();
        assert_eq!(out, "data: {\"a\":1}\n\n");
        let mut r = PassthroughStream::new(Format::OpenAiChat, PassthroughOptions::default())
            .with_max_event_bytes(16);
        let err = r
            .feed(b"data: {\"a\":\"0123456789abcdef\"}", &mut BytesMut::new())
            .unwrap_err();
        assert!(matches!(err, StreamFault::TooLarge(_)));
    }

    #[test]
    fn bodies_keep_their_bytes_with_the_model_renamed() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"{\"model\":1}"}}],"model":"gpt-4o","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let r = passthrough_body(Format::OpenAiChat, body, Some("fast")).unwrap();
        assert_eq!(r.usage.map(|u| u.total()), Some(3));
        assert_eq!(
            String::from_utf8(r.renamed.unwrap()).unwrap(),
            r#"{"id":"x","choices":[{"message":{"content":"{\"model\":1}"}}],"model":"fast","usage":{"prompt_tokens":1,"completion_tokens":2}}"#
        );
        assert!(passthrough_body(Format::OpenAiChat, body, None)
            .unwrap()
            .renamed
            .is_none());
        assert!(passthrough_body(Format::OpenAiChat, b"{\"model\":", Some("x")).is_err());
    }

    #[test]
    fn keepalives_are_skipped_by_each_formats_parsers() {
        for fmt in [
            Format::OpenAiChat,
            Format::OpenAiResponses,
            Format::Anthropic,
        ] {
            assert_eq!(keepalive(fmt), b": keepalive\n\n");
            let mut events = Vec::new();
            SseParser::default()
                .feed(keepalive(fmt), &mut events)
                .unwrap();
            assert!(events.is_empty());
        }
        // Gemini: a `data:` chunk that decodes to nothing but an empty text.
        let ka = keepalive(Format::Gemini);
        assert!(ka.starts_with(b"data: {") && ka.ends_with(b"}\n\n"));
        let mut events = Vec::new();
        SseParser::default().feed(ka, &mut events).unwrap();
        let mut neutral = Vec::new();
        stream_decoder(Format::Gemini)
            .decode(&events[0], &mut neutral)
            .unwrap();
        assert!(neutral
            .iter()
            .all(|e| matches!(e, StreamEvent::Start { .. } | StreamEvent::TextDelta { .. })));
        assert!(neutral
            .iter()
            .all(|e| !matches!(e, StreamEvent::TextDelta { text } if !text.is_empty())));
    }

    /// Fuzz finding (response_decode): bytes the relay does not read are
    /// left as they came, invalid UTF-8 included; only the model changes.
    #[test]
    fn renaming_touches_only_the_model_value() {
        let body = b"{\"model\": \"gpt-5-nano\",\n \"service_tier\": \"defau\xf3t\"}";
        let r = passthrough_body(Format::OpenAiChat, body, Some("fast")).unwrap();
        assert_eq!(
            r.renamed.unwrap(),
            b"{\"model\": \"fast\",\n \"service_tier\": \"defau\xf3t\"}".to_vec()
        );
    }

    #[test]
    fn string_at_follows_paths_and_never_reads_past_the_end() {
        let s = br#" { "a" : [1, {"model":"no"}], "b":{"model" : "yes"} } "#;
        let r = string_at(s, &["b", "model"]).unwrap();
        assert_eq!(&s[r], b"\"yes\"");
        assert!(string_at(s, &["model"]).is_none());
        assert!(string_at(br#"{"model":5}"#, &["model"]).is_none());
        for cut in 0..s.len() {
            let _ = string_at(&s[..cut], &["b", "model"]);
        }
        assert!(string_at(br#"{"model":"unterminated"#, &["model"]).is_none());
    }
}
