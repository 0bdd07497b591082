//! The client's request: its body read within bounds, scanned once (kept
//! as bytes, see `raw.rs`), and the few fields the gateway itself relies
//! on checked (`model`, `models`, `stream`).

use apiproxy_translate::Format;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::Value;

use crate::error::GatewayError;

mod raw;
pub use raw::{BodyError, Edit, Field, Last, RawBody};

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

/// Reads the request body, bounded by `max` (413 beyond it) and by `idle`
/// between two reads (408: `server.body_timeout_ms`; an HTTP/1 session has
/// the same bound as its read timeout, an HTTP/2 stream only this one).
/// Answers `Expect: 100-continue` first so large uploads do not stall.
pub async fn read_body(
    session: &mut Session,
    max: usize,
    idle: std::time::Duration,
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
        discard_body(session).await;
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
    loop {
        let read = tokio::time::timeout(idle, session.read_request_body()).await;
        let Ok(read) = read else {
            session.set_keepalive(None);
            return Err(GatewayError::client(
                408,
                format!(
                    "the request body sent nothing for {} ms (server.body_timeout_ms)",
                    idle.as_millis()
                ),
            ));
        };
        let read =
            read.map_err(|e| GatewayError::bad_request(format!("reading the request body: {e}")))?;
        let Some(chunk) = read else { break };
        if buf.len() + single.as_ref().map_or(0, Bytes::len) + chunk.len() > max {
            discard_body(session).await;
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

/// Reads and drops the rest of a refused body (bounded in size and time) so
/// the client, still sending, gets to read the 413 instead of a broken pipe;
/// past the bounds the connection is closed.
async fn discard_body(session: &mut Session) {
    const MAX_DISCARD: usize = 256 * 1024 * 1024;
    let drain = async {
        let mut seen = 0usize;
        while let Ok(Some(c)) = session.read_request_body().await {
            seen += c.len();
            if seen > MAX_DISCARD {
                return false;
            }
        }
        true
    };
    let drained = tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .unwrap_or(false);
    if !drained {
        session.set_keepalive(None);
    }
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
