//! Writing whole responses to the client.

use apiproxy_translate::Format;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::error::GatewayError;

/// Extra response headers (debug, rate limits).
pub type Headers = Vec<(&'static str, String)>;

/// A response header with a content type and length. Its headers go
/// into the map as typed names and values (`crate::header_name`): written
/// for every answer, where Pingora's `insert_header` would parse each name
/// again and copy each value.
pub fn header(
    status: u16,
    content_type: &str,
    len: Option<usize>,
    extra: &Headers,
) -> Result<Box<ResponseHeader>> {
    use http::header::{self, HeaderValue};
    let h = ResponseHeader::build_no_case(status, Some(4 + extra.len()))?;
    let mut parts = http::response::Parts::from(h);
    let map = &mut parts.headers;
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            format!("header {what}: {e}"),
        )
    };
    let content_type = match content_type {
        "application/json" => HeaderValue::from_static("application/json"),
        "text/event-stream" => HeaderValue::from_static("text/event-stream"),
        other => HeaderValue::from_str(other).map_err(|e| invalid("content-type", &e))?,
    };
    map.insert(header::CONTENT_TYPE, content_type);
    match len {
        Some(n) => {
            map.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            map.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
    }
    for (k, v) in extra {
        let name = crate::header_name::of(k).map_err(|e| invalid(k, &e))?;
        map.insert(name, HeaderValue::from_str(v).map_err(|e| invalid(k, &e))?);
    }
    Ok(Box::new(ResponseHeader::from(parts)))
}

/// Takes out the `x-debug-*` headers: an error answer names no upstream.
pub fn strip_debug(headers: &mut Headers) {
    headers.retain(|(k, _)| !k.starts_with("x-debug-"));
}

/// The response headers plus `x-debug-cost` (USD) when the `x-debug-*`
/// headers were asked for and the cost is known. Only whole answers carry
/// it: a stream's cost is known after its last byte, past the headers (it
/// is in the access log and the metrics).
#[allow(clippy::ptr_arg)] // the Vec is what the response writers take
pub fn with_debug_cost(headers: &Headers, cost: Option<f64>) -> std::borrow::Cow<'_, Headers> {
    match cost {
        Some(c) if headers.iter().any(|(k, _)| *k == "x-debug-provider") => {
            let mut h = headers.clone();
            h.push(("x-debug-cost", crate::pricing::format_usd(c)));
            std::borrow::Cow::Owned(h)
        }
        _ => std::borrow::Cow::Borrowed(headers),
    }
}

/// Headers of every admin JSON answer: never kept by a cache (the key
/// created in the console is in one), never sniffed as another type.
pub fn admin_headers() -> Headers {
    vec![
        ("cache-control", "no-store".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
    ]
}

/// The response header of an event stream. On HTTP/1.1 its body is sent
/// chunked: Pingora frames a body without a length by closing the
/// connection at its end (while the header says `keep-alive`), so without
/// this no kept-alive connection outlived a stream. (HTTP/2 frames bodies
/// itself and Pingora drops the header there; HTTP/1.0 has no chunks.)
pub fn stream_header(session: &Session, extra: &Headers) -> Result<Box<ResponseHeader>> {
    let mut h = header(200, "text/event-stream", None, extra)?;
    if session.req_header().version == http::Version::HTTP_11 {
        h.insert_header("transfer-encoding", "chunked")?;
    }
    Ok(h)
}

/// Writes a complete response.
pub async fn write(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &Headers,
) -> Result<()> {
    let h = header(status, content_type, Some(body.len()), extra)?;
    session.write_response_header(h, false).await?;
    session.write_response_body(Some(body), true).await
}

/// Writes `204 No Content` (an admin `DELETE` done).
pub async fn no_content(session: &mut Session) -> std::result::Result<(), GatewayError> {
    let h = ResponseHeader::build_no_case(204, Some(0))
        .map_err(|e| GatewayError::internal(e.to_string()))?;
    session
        .write_response_header(Box::new(h), true)
        .await
        .map_err(|e| GatewayError::internal(format!("writing the response: {e}")))
}

/// Writes a JSON response.
pub async fn json(
    session: &mut Session,
    status: u16,
    body: impl Into<Bytes>,
    extra: &Headers,
) -> Result<()> {
    write(session, status, "application/json", body.into(), extra).await
}

/// Writes `err` in the client's error shape.
pub async fn error(
    session: &mut Session,
    fmt: Format,
    err: &GatewayError,
    extra: &Headers,
) -> Result<()> {
    let mut headers = extra.clone();
    if let Some(s) = err.retry_after {
        headers.push(("retry-after", s.to_string()));
    }
    json(session, err.status, err.body(fmt), &headers).await
}
