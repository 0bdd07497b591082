//! The client's request: its body read within bounds, scanned once (kept
//! as bytes, see `crate::body`), and the few fields the gateway itself relies
//! on checked (`model`, `models`, `stream`).

use std::time::{Duration, Instant};

use apiproxy_translate::Format;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::Value;

use crate::error::GatewayError;

use crate::body::{BodyError, Field, RawBody};

/// What the route says about a generation request.
pub struct LlmRoute {
    pub format: Format,
    pub path_model: Option<String>,
    pub path_stream: bool,
}

/// A parsed, checked request. The body stays the client's bytes (see
/// [`RawBody`]): nothing here copies it.
pub struct Parsed {
    pub body: RawBody,
    /// `model` then each of `models`.
    pub names: Vec<String>,
    pub stream: bool,
    /// The stream was asked for by `Accept: text/event-stream` alone, so an
    /// upstream body needs `"stream": true` added.
    pub stream_added: bool,
    /// The client asked for usage in an OpenAI chat stream.
    pub include_usage: bool,
    /// Bytes of the body as received (the token estimate's input side).
    pub body_bytes: usize,
}

/// How fast a request body must arrive: no gap longer than `idle` between
/// two reads (`server.body_timeout_ms`), and on average at least
/// `min_rate` bytes a second after the first [`BODY_RATE_GRACE`]
/// (`server.min_body_rate_bytes_per_s`). The second bound is what stops a
/// client that sends a byte just often enough to beat the first one.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    pub idle: Duration,
    pub min_rate: u64,
}

/// Time a body has before its average rate counts: the first bytes of an
/// upload (TCP slow start, a `100 Continue` round trip) are not held
/// against it.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(10);

/// Which bound ended a body read that waited too long.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyStall {
    /// Nothing came for `idle`.
    Idle,
    /// It came, but slower than `min_rate` on average.
    TooSlow,
}

impl BodyPace {
    /// The pace `server` sets.
    pub fn of(server: &crate::config::ServerSettings) -> BodyPace {
        BodyPace {
            idle: server.body_timeout,
            min_rate: server.min_body_rate,
        }
    }

    /// When the body that started at `start` must have brought more than
    /// the `received` bytes it has: the grace plus the time those bytes
    /// earn at the minimum rate.
    pub fn rate_deadline(&self, start: Instant, received: usize) -> Instant {
        let bytes = u64::try_from(received).unwrap_or(u64::MAX);
        let earned = Duration::from_millis(bytes.saturating_mul(1000) / self.min_rate.max(1));
        let allowed = BODY_RATE_GRACE.saturating_add(earned);
        // Past any real deadline (a year) when the sum does not fit.
        start
            .checked_add(allowed)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 86400))
    }

    /// The deadline of the next read (issued at `now`) and the bound that
    /// sets it.
    pub fn next_read(&self, start: Instant, received: usize, now: Instant) -> (Instant, BodyStall) {
        let idle = now + self.idle;
        let rate = self.rate_deadline(start, received);
        if rate < idle {
            (rate, BodyStall::TooSlow)
        } else {
            (idle, BodyStall::Idle)
        }
    }
}

/// Reads the request body, bounded by `max` (413 beyond it) and by `pace`
/// (408: a gap between reads, or an average rate below the minimum; an
/// HTTP/1 session has the gap bound as its read timeout too, an HTTP/2
/// stream only these). Answers `Expect: 100-continue` first so large
/// uploads do not stall. A refused body is not read further: the answer
/// closes the connection and [`finish_unread_body`] bounds what follows.
pub async fn read_body(
    session: &mut Session,
    max: usize,
    pace: BodyPace,
) -> Result<Bytes, GatewayError> {
    let req = session.req_header();
    let declared = req
        .headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large =
        || GatewayError::client(413, format!("request body is larger than {max} bytes"));
    if declared.is_some_and(|n| n > max) {
        session.set_keepalive(None);
        return Err(too_large());
    }
    let expects_continue = req
        .headers
        .get(::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(|e| GatewayError::bad_request(format!("writing 100 Continue: {e}")))?;
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    let mut single: Option<Bytes> = None;
    let start = Instant::now();
    loop {
        let received = buf.len() + single.as_ref().map_or(0, Bytes::len);
        let (deadline, stall) = pace.next_read(start, received, Instant::now());
        let read = tokio::time::timeout_at(deadline.into(), session.read_request_body()).await;
        let stalled = |stall| {
            let msg = match stall {
                BodyStall::Idle => format!(
                    "the request body sent nothing for {} ms (server.body_timeout_ms)",
                    pace.idle.as_millis()
                ),
                BodyStall::TooSlow => format!(
                    "the request body arrived slower than {} bytes/s (server.min_body_rate_bytes_per_s)",
                    pace.min_rate
                ),
            };
            GatewayError::client(408, msg)
        };
        let read = match read {
            Ok(Ok(read)) => read,
            // An HTTP/1 session's own read timeout is the same gap bound:
            // whichever of the two fires first, the answer is the same.
            Ok(Err(e)) if *e.etype() == pingora::ErrorType::ReadTimedout => {
                session.set_keepalive(None);
                return Err(stalled(BodyStall::Idle));
            }
            Ok(Err(e)) => {
                return Err(GatewayError::bad_request(format!(
                    "reading the request body: {e}"
                )))
            }
            Err(_) => {
                session.set_keepalive(None);
                return Err(stalled(stall));
            }
        };
        let Some(chunk) = read else { break };
        if received + chunk.len() > max {
            session.set_keepalive(None);
            return Err(too_large());
        }
        // Keep a body that arrives in one piece without copying it.
        if single.is_none() && buf.is_empty() {
            single = Some(chunk);
        } else {
            if let Some(first) = single.take() {
                buf.extend_from_slice(&first);
            }
            buf.extend_from_slice(&chunk);
        }
    }
    Ok(single.unwrap_or_else(|| buf.freeze()))
}

/// How long, and how much of, a body the gateway answered before reading
/// it whole (401, 403, 404, 413, ...) is still read and dropped before the
/// connection closes: long enough for the client to read the answer
/// rather than lose it to a reset, short enough that a client trickling a
/// body nobody will read holds its connection slot for seconds, not for
/// as long as it keeps sending. The byte bound is twice the default
/// `max_body_bytes`: clients that upload without `Expect: 100-continue`
/// (most SDKs) read a 413 only if their upload is taken in whole; the time
/// bound is what keeps the slot short.
pub const UNREAD_BODY_LINGER: Duration = Duration::from_secs(2);
/// See [`UNREAD_BODY_LINGER`].
pub const UNREAD_BODY_DRAIN_BYTES: usize = 32 << 20;

/// Ends a request whose answer went out before its body was read whole:
/// the connection is not reused (the answer said `Connection: close`),
/// and what the client still sends is dropped for at most
/// [`UNREAD_BODY_LINGER`] and [`UNREAD_BODY_DRAIN_BYTES`]; then Pingora
/// closes it. An HTTP/2 stream needs nothing: h2 resets the stream's
/// unread rest and flow control stops the client.
pub async fn finish_unread_body(session: &mut Session) {
    if session.as_downstream().is_http2() || session.is_body_done() {
        return;
    }
    session.set_keepalive(None);
    let drain = async {
        let mut seen = 0usize;
        while let Ok(Some(c)) = session.read_request_body().await {
            seen += c.len();
            if seen > UNREAD_BODY_DRAIN_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(UNREAD_BODY_LINGER, drain).await;
}

/// Parses and checks the fields the gateway itself relies on.
pub fn parse(
    fmt: Format,
    body: &Bytes,
    route: &LlmRoute,
    session: &Session,
) -> Result<Parsed, GatewayError> {
    let accepts_sse = session
        .req_header()
        .headers
        .get(::http::header::ACCEPT)
        .is_some_and(|a| a.as_bytes().starts_with(b"text/event-stream"));
    // A cheap handle on the same bytes, not a copy.
    parse_body(fmt, body.clone(), route, accepts_sse)
}

/// [`parse`] without the session: `accepts_sse` is the client's
/// `Accept: text/event-stream`.
pub fn parse_body(
    fmt: Format,
    body: Bytes,
    route: &LlmRoute,
    accepts_sse: bool,
) -> Result<Parsed, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    let body_bytes = body.len();
    let raw = RawBody::parse(body).map_err(|e| match e {
        BodyError::Syntax(e) => {
            GatewayError::bad_request(format!("request body is not valid JSON: {e}"))
        }
        BodyError::NotObject => GatewayError::bad_request("request body must be a JSON object"),
    })?;
    let mut names = Vec::new();
    match (&route.path_model, raw.value(Field::Model)) {
        (Some(m), _) => names.push(m.clone()),
        (None, None | Some(Value::Null)) => {}
        (None, Some(Value::String(m))) if !m.is_empty() => names.push(m),
        (None, Some(_)) => {
            return Err(GatewayError::bad_request(
                "`model` must be a non-empty string",
            ))
        }
    }
    match raw.value(Field::Models) {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, m) in list.into_iter().enumerate() {
                match m {
                    Value::String(s) if !s.is_empty() => {
                        if !names.contains(&s) {
                            names.push(s)
                        }
                    }
                    _ => {
                        return Err(GatewayError::bad_request(format!(
                            "`models[{i}]` must be a non-empty string"
                        )))
                    }
                }
            }
        }
        Some(_) => {
            return Err(GatewayError::bad_request(
                "`models` must be an array of model names",
            ))
        }
    }
    if names.is_empty() {
        return Err(GatewayError::bad_request("missing field `model`"));
    }
    let mut stream_added = false;
    let stream = if fmt == Format::Gemini {
        route.path_stream
    } else {
        let asked = match raw.value(Field::Stream) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(GatewayError::bad_request("`stream` must be a boolean")),
        };
        stream_added = accepts_sse && !asked;
        asked || accepts_sse
    };
    let include_usage = raw
        .value(Field::StreamOptions)
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    Ok(Parsed {
        body: raw,
        names,
        stream,
        stream_added,
        include_usage,
        body_bytes,
    })
}

impl Parsed {
    /// The body as a `Value` the way the gateway reads it (`models` taken
    /// out, `stream: true` when only the `Accept` header asked for a
    /// stream): what a translation reads from the bytes (tests compare).
    #[cfg(test)]
    pub fn to_value(&self) -> Result<Value, GatewayError> {
        let mut v = self.body.to_value().map_err(|e| match e {
            BodyError::Syntax(e) => {
                GatewayError::bad_request(format!("request body is not valid JSON: {e}"))
            }
            BodyError::NotObject => GatewayError::bad_request("request body must be a JSON object"),
        })?;
        if let Some(obj) = v.as_object_mut() {
            obj.remove("models");
            if self.stream_added {
                obj.insert("stream".into(), Value::Bool(true));
            }
        }
        Ok(v)
    }
}

/// Client headers worth passing to a same-kind upstream.
pub fn forwarded_headers(fmt: Format, session: &Session) -> Vec<(&'static str, String)> {
    let h = &session.req_header().headers;
    let mut out = Vec::new();
    if fmt == Format::Anthropic {
        for name in ["anthropic-beta", "anthropic-version"] {
            if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()) {
                out.push((name, v.to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_earns_time_by_what_it_sent_after_its_grace() {
        let pace = BodyPace {
            idle: Duration::from_secs(60),
            min_rate: 1000,
        };
        let t0 = Instant::now();
        // Nothing sent yet: the grace alone, sooner than the idle bound.
        assert_eq!(
            pace.next_read(t0, 0, t0),
            (t0 + BODY_RATE_GRACE, BodyStall::TooSlow)
        );
        // 5000 bytes earned 5 s.
        assert_eq!(
            pace.rate_deadline(t0, 5000),
            t0 + BODY_RATE_GRACE + Duration::from_secs(5)
        );
        // A body well above the rate: the gap between reads is what binds.
        let now = t0 + Duration::from_secs(20);
        assert_eq!(
            pace.next_read(t0, 1_000_000, now),
            (now + Duration::from_secs(60), BodyStall::Idle)
        );
        // A byte a minute: cut at the grace plus a millisecond a byte.
        let later = t0 + Duration::from_secs(600);
        assert!(pace.next_read(t0, 10, later).0 < later);
        // No overflow whatever the count and rate.
        let huge = BodyPace {
            idle: Duration::from_secs(1),
            min_rate: 1,
        };
        let _ = huge.next_read(t0, usize::MAX, t0);
    }
}
