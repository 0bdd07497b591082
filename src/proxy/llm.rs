//! A generation request from start to end: read and check the request,
//! resolve its model into candidates, then try them one by one until one
//! answers (retrying before the first byte reaches the client).

use std::time::Instant;

use apiproxy_translate::{self as translate, ChatRequest, Format};
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::Value;

use super::ctx::RequestCtx;
use super::relay::{self, Outcome, RelayPlan};
use super::respond::{self, Headers};
use super::Gateway;
use crate::error::GatewayError;
use crate::metrics;
use crate::routing::{Candidate, Runtime};
use crate::state;
use crate::upstream::http::{self, Outgoing, SendError};

/// Largest upstream error body read (to relay or to log).
const MAX_ERROR_BODY: usize = 256 * 1024;

/// What the route says about a generation request.
pub struct LlmRoute {
    pub format: Format,
    pub path_model: Option<String>,
    pub path_stream: bool,
}

/// A parsed, checked request.
struct Parsed {
    body: Value,
    /// `model` then each of `models`.
    names: Vec<String>,
    stream: bool,
    /// The client asked for usage in an OpenAI chat stream.
    include_usage: bool,
}

/// Handles the request. `Err` is returned only while nothing has been
/// written to the client; the caller writes it in the client's shape.
pub async fn handle(
    gw: &Gateway,
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: LlmRoute,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    let fmt = route.format;
    let key = super::client_key(rt, session, ctx)?;
    let body = read_body(session, rt.config.server.max_body_bytes).await?;
    let mut parsed = parse(fmt, &body, &route, session)?;
    drop(body);
    ctx.stream = parsed.stream;
    ctx.requested_model = parsed.names.first().cloned().unwrap_or_default();

    if let Some(k) = key {
        if let Some(denied) = parsed.names.iter().find(|n| !k.allows(n)) {
            return Err(GatewayError::forbidden(format!(
                "model `{denied}` is not allowed for this key"
            )));
        }
    }

    let store = gw.state.store().await;
    let key_name = key.map(|k| k.name.as_str());
    match state::check_limits(
        store.as_ref(),
        key_name,
        key.and_then(|k| k.rpm),
        key.and_then(|k| k.tpm),
        rt.config.global_rpm,
        rt.config.global_tpm,
    )
    .await
    {
        Ok(rate) => headers.extend(rate.headers()),
        Err((e, rate)) => {
            headers.extend(rate.headers());
            return Err(e);
        }
    }
    if let (Some(name), Some(_)) = (key_name, key.and_then(|k| k.tpm)) {
        ctx.token_buckets.push(format!("key:{name}"));
    }
    if rt.config.global_tpm.is_some() {
        ctx.token_buckets.push("global".to_owned());
    }

    let (mut candidates, unknown) = rt.candidates(&parsed.names);
    if candidates.is_empty() {
        return Err(match unknown.first() {
            Some(name) => GatewayError::not_found(format!("model `{name}` not found")),
            None => GatewayError::new(
                503,
                format!(
                    "no upstream is available for model `{}`",
                    ctx.requested_model
                ),
            ),
        });
    }

    // Stickiness: a session goes back to the upstream (and key) that served
    // it first, while that upstream is healthy.
    let mut sticky_key: Option<(usize, usize)> = None;
    ctx.session_id = session
        .req_header()
        .headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(str::to_owned);
    if let Some(sid) = ctx.session_id.clone() {
        if let Some(b) = store.get_session(&sid).await {
            if let Some(pos) = rt.bound_candidate(&candidates, &b) {
                let c = candidates.remove(pos);
                sticky_key = Some((c.provider, b.key_index));
                candidates.insert(0, c);
            }
        }
        let max = rt.config.context.max_chars;
        ctx.capture_limit = max;
        ctx.answer = Some(String::new());
        ctx.context_request = Some(state::request_snippet(
            fmt,
            &parsed.body,
            &ctx.requested_model,
            max,
        ));
    }

    let debug = session
        .req_header()
        .headers
        .get("x-debug")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v.as_bytes() == b"1");
    let forwarded = forwarded_headers(fmt, session);
    let mut encoder = BodyEncoder::new(fmt);
    let mut failures: Vec<String> = Vec::new();
    let mut statuses: Vec<Option<u16>> = Vec::new();

    for (n, c) in candidates.iter().enumerate() {
        let provider = &rt.providers[c.provider];
        let mut tried_keys: Vec<usize> = Vec::new();
        // A key-related refusal (429/401/403) moves to the provider's next key.
        loop {
            let prefer = sticky_key.filter(|(p, _)| *p == c.provider).map(|(_, k)| k);
            let Some(key_index) = provider.pick_key(prefer, &tried_keys) else {
                failures.push(format!(
                    "{}/{}: every key is cooling down",
                    provider.id(),
                    c.model
                ));
                statuses.push(None);
                break;
            };
            let upstream_body = encoder.encode(provider.config.format, c, &mut parsed)?;
            let mut out_headers = provider.auth_headers(provider.key(key_index));
            if provider.config.format == fmt {
                out_headers.extend(forwarded.iter().cloned());
            }
            let path = provider.request_path(&c.model, parsed.stream);
            ctx.attempts += 1;
            ctx.provider.clone_from(&provider.config.id);
            ctx.upstream_model.clone_from(&c.model);
            let sent_at = Instant::now();
            let result = tokio::select! {
                r = http::send(&gw.connector, provider, Outgoing {
                    method: "POST",
                    path: &path,
                    body: upstream_body,
                    stream: parsed.stream,
                    headers: out_headers,
                }) => r,
                _ = super::client_gone(session) => {
                    ctx.client_gone = true;
                    ctx.status = 499;
                    return Ok(());
                }
            };
            ctx.upstream_wait += sent_at.elapsed();
            let mut resp = match result {
                Ok(r) => r,
                Err(e) => {
                    let outcome = match e {
                        SendError::Connect(_) => "connect_error",
                        SendError::Timeout => "timeout",
                        SendError::Io(_) => "io_error",
                    };
                    metrics::ATTEMPTS
                        .with_label_values(&[provider.id(), outcome])
                        .inc();
                    provider.health.record_failure(rt.config.cooldown);
                    failures.push(format!("{}/{}: {e}", provider.id(), c.model));
                    statuses.push(if matches!(e, SendError::Timeout) {
                        Some(504)
                    } else {
                        None
                    });
                    break;
                }
            };
            let status = resp.status();
            metrics::ATTEMPTS
                .with_label_values(&[provider.id(), status_label(status)])
                .inc();

            if (200..300).contains(&status) {
                if debug {
                    headers.push(("x-debug-provider", provider.config.id.clone()));
                    headers.push(("x-debug-model", c.model.clone()));
                    headers.push(("x-debug-attempts", ctx.attempts.to_string()));
                }
                let plan = RelayPlan {
                    client: fmt,
                    upstream: provider.config.format,
                    stream: parsed.stream,
                    passthrough: encoder.last_was_passthrough,
                    model_override: c.logical.then(|| c.requested.clone()),
                    include_usage: parsed.include_usage,
                    provider_keys: &provider.config.api_keys,
                };
                match relay::relay(session, ctx, &mut resp, &plan, headers).await {
                    Outcome::Done => {
                        provider.health.record_success(sent_at.elapsed());
                        ctx.served_by =
                            Some((provider.config.id.clone(), c.model.clone(), key_index));
                        resp.release(&gw.connector).await;
                        return Ok(());
                    }
                    Outcome::ClientGone => return Ok(()),
                    Outcome::Failed { reason, status } => {
                        metrics::ATTEMPTS
                            .with_label_values(&[provider.id(), "stream_error"])
                            .inc();
                        provider.health.record_failure(rt.config.cooldown);
                        failures.push(format!("{}/{}: {reason}", provider.id(), c.model));
                        statuses.push(status);
                        if ctx.first_byte.is_some() {
                            // Already answered (and closed with an error event).
                            return Ok(());
                        }
                        headers.retain(|(k, _)| !k.starts_with("x-debug-"));
                        break;
                    }
                }
            }

            // An error status: read its body for the message, then decide.
            let err_body = resp.body(MAX_ERROR_BODY).await.unwrap_or_default();
            let retry_after = resp
                .header_str("retry-after")
                .and_then(|v| v.parse::<u64>().ok());
            let content_type = resp
                .header_str("content-type")
                .unwrap_or("application/json")
                .to_owned();
            resp.release(&gw.connector).await;
            let detail = upstream_message(&err_body, status, &provider.config.api_keys);
            failures.push(format!(
                "{}/{}: status {status}{detail}",
                provider.id(),
                c.model
            ));
            statuses.push(Some(status));

            let key_problem = matches!(status, 401 | 403 | 429);
            if key_problem {
                if let Some(k) = key_index {
                    let secs = retry_after
                        .unwrap_or(rt.config.cooldown.as_secs())
                        .clamp(1, 3600);
                    provider.cool_key(k, std::time::Duration::from_secs(secs));
                    tried_keys.push(k);
                    if provider.pick_key(None, &tried_keys).is_some() {
                        continue; // same upstream, next key
                    }
                }
            }
            if key_problem || provider.config.retryable.contains(status) {
                if status >= 500 {
                    provider.health.record_failure(rt.config.cooldown);
                }
                break;
            }
            // A client error the upstream found in the request: relay it.
            ctx.status = status;
            let body = if provider.config.format == fmt
                && !contains_key(&err_body, &provider.config.api_keys)
            {
                let mut h = headers.clone();
                h.retain(|(k, _)| !k.starts_with("x-debug-"));
                return respond::write(session, status, &content_type, err_body, &h)
                    .await
                    .map_err(|e| GatewayError::new(502, format!("writing the response: {e}")));
            } else {
                translate::error_body(fmt, status, detail.trim_start_matches(": "))
            };
            return respond::json(session, status, body, headers)
                .await
                .map_err(|e| GatewayError::new(502, format!("writing the response: {e}")));
        }
        if n + 1 < candidates.len() {
            metrics::FAILOVERS.with_label_values(&[provider.id()]).inc();
        }
    }
    Err(all_failed(&failures, &statuses))
}

/// The error when every candidate failed: 504 when all timed out, 429 when
/// all were rate limited, 503 when none could even be tried, else 502.
fn all_failed(failures: &[String], statuses: &[Option<u16>]) -> GatewayError {
    let status = if !statuses.is_empty() && statuses.iter().all(|s| *s == Some(504)) {
        504
    } else if !statuses.is_empty() && statuses.iter().all(|s| *s == Some(429)) {
        429
    } else if statuses.iter().all(Option::is_none)
        && failures.iter().all(|f| f.contains("cooling down"))
    {
        503
    } else {
        502
    };
    let mut e = GatewayError::new(
        status,
        format!(
            "all upstreams failed after {} attempt(s): {}",
            failures.len(),
            failures.join("; ")
        ),
    );
    if status == 429 || status == 503 {
        e.retry_after = Some(1);
    }
    e
}

fn status_label(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `": <message>"` from an upstream error body in any of the formats, safe
/// to show a client: a refused provider key is not described (providers echo
/// parts of it), and no provider key appears in it.
fn upstream_message(body: &[u8], status: u16, keys: &[String]) -> String {
    if matches!(status, 401 | 403) {
        return ": the provider refused the gateway's credentials".to_owned();
    }
    let msg = scrub(&raw_upstream_message(body), keys);
    if msg.is_empty() {
        msg
    } else {
        format!(": {msg}")
    }
}

/// Replaces every provider key found in `s`.
fn scrub(s: &str, keys: &[String]) -> String {
    keys.iter()
        .filter(|k| k.len() >= 4)
        .fold(s.to_owned(), |acc, k| acc.replace(k.as_str(), "***"))
}

fn contains_key(body: &[u8], keys: &[String]) -> bool {
    keys.iter()
        .filter(|k| k.len() >= 4)
        .any(|k| body.windows(k.len()).any(|w| w == k.as_bytes()))
}

fn raw_upstream_message(body: &[u8]) -> String {
    let msg = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error").unwrap_or(&v);
        e.get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .map(str::to_owned)
    });
    match msg {
        Some(m) if !m.is_empty() => truncate(&m, 300).to_owned(),
        _ => truncate(&String::from_utf8_lossy(body), 300).to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Client headers worth passing to a same-kind upstream.
fn forwarded_headers(fmt: Format, session: &Session) -> Vec<(&'static str, String)> {
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

/// Reads the request body, bounded by `max` (413 beyond it). Answers
/// `Expect: 100-continue` first so large uploads do not stall.
pub(super) async fn read_body(session: &mut Session, max: usize) -> Result<Bytes, GatewayError> {
    let req = session.req_header();
    let declared = req
        .headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || GatewayError::new(413, format!("request body is larger than {max} bytes"));
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
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| GatewayError::bad_request(format!("reading the request body: {e}")))?
    {
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
fn parse(
    fmt: Format,
    body: &[u8],
    route: &LlmRoute,
    session: &Session,
) -> Result<Parsed, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(GatewayError::bad_request(
            "request body must be a JSON object",
        ));
    };
    let mut names = Vec::new();
    match (&route.path_model, obj.get("model")) {
        (Some(m), _) => names.push(m.clone()),
        (None, None | Some(Value::Null)) => {}
        (None, Some(Value::String(m))) if !m.is_empty() => names.push(m.clone()),
        (None, Some(_)) => {
            return Err(GatewayError::bad_request(
                "`model` must be a non-empty string",
            ))
        }
    }
    match obj.remove("models") {
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
    let stream = if fmt == Format::Gemini {
        route.path_stream
    } else {
        let asked = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(GatewayError::bad_request("`stream` must be a boolean")),
        };
        let accepts_sse = session
            .req_header()
            .headers
            .get(::http::header::ACCEPT)
            .is_some_and(|a| a.as_bytes().starts_with(b"text/event-stream"));
        if accepts_sse && !asked {
            obj.insert("stream".into(), Value::Bool(true));
        }
        asked || accepts_sse
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Parsed {
        body: v,
        names,
        stream,
        include_usage,
    })
}

/// Encodes the request for each attempt's provider: the client's own JSON
/// when the provider speaks the client's format, else a translation through
/// the neutral representation (decoded once, on first need).
struct BodyEncoder {
    client: Format,
    /// The client body is in another shape than its endpoint's (a Claude-
    /// or Gemini-style body on /v1/chat/completions).
    adapted: Option<bool>,
    ir: Option<ChatRequest>,
    last_was_passthrough: bool,
}

impl BodyEncoder {
    fn new(client: Format) -> Self {
        BodyEncoder {
            client,
            adapted: None,
            ir: None,
            last_was_passthrough: false,
        }
    }

    fn encode(
        &mut self,
        target: Format,
        c: &Candidate,
        parsed: &mut Parsed,
    ) -> Result<Bytes, GatewayError> {
        let adapted = *self.adapted.get_or_insert_with(|| {
            self.client == Format::OpenAiChat
                && translate::detect_chat_adapter(&parsed.body).is_some()
        });
        self.last_was_passthrough = target == self.client && !adapted;
        if self.last_was_passthrough {
            let obj = parsed
                .body
                .as_object_mut()
                .ok_or_else(|| GatewayError::bad_request("request body must be a JSON object"))?;
            if target != Format::Gemini {
                obj.insert("model".into(), Value::String(c.model.clone()));
            }
            if target == Format::OpenAiChat && parsed.stream {
                // The gateway needs usage to count tokens; the relay drops the
                // usage chunk again when the client did not ask for it.
                let opts = obj
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(o) = opts.as_object_mut() {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
            }
            return serde_json::to_vec(&parsed.body)
                .map(Bytes::from)
                .map_err(|e| GatewayError::new(500, format!("encoding the request: {e}")));
        }
        if self.ir.is_none() {
            let mut ir = translate::decode_request(self.client, parsed.body.clone())
                .map_err(|e| GatewayError::bad_request(e.message))?;
            ir.stream = parsed.stream;
            ir.stream_include_usage = parsed.include_usage;
            self.ir = Some(ir);
        }
        let ir = self
            .ir
            .as_mut()
            .ok_or_else(|| GatewayError::new(500, "request not decoded"))?;
        ir.model.clone_from(&c.model);
        translate::encode_request(target, ir)
            .map(Bytes::from)
            .map_err(|e| GatewayError::bad_request(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_failed_status() {
        let f = vec!["a: x".to_owned(), "b: y".to_owned()];
        assert_eq!(all_failed(&f, &[Some(504), Some(504)]).status, 504);
        assert_eq!(all_failed(&f, &[Some(429), Some(429)]).status, 429);
        assert_eq!(all_failed(&f, &[Some(503), None]).status, 502);
        let cool = vec!["a: every key is cooling down".to_owned()];
        assert_eq!(all_failed(&cool, &[None]).status, 503);
        let e = all_failed(&f, &[Some(503), Some(500)]);
        assert!(e.message.contains("a: x; b: y"), "{}", e.message);
    }

    #[test]
    fn upstream_messages() {
        let keys = vec!["sk-secret-123".to_owned()];
        assert_eq!(
            upstream_message(
                br#"{"error":{"message":"Incorrect API key provided: sk-se****123"}}"#,
                401,
                &keys
            ),
            ": the provider refused the gateway's credentials"
        );
        assert_eq!(
            upstream_message(br#"{"error":"key sk-secret-123 is bad"}"#, 400, &keys),
            ": key *** is bad"
        );
        assert!(contains_key(b"xx sk-secret-123 yy", &keys));
        assert!(!contains_key(b"xx sk-secret yy", &keys));
        assert_eq!(
            upstream_message(br#"{"error":{"message":"bad model"}}"#, 400, &[]),
            ": bad model"
        );
        assert_eq!(upstream_message(b"oops", 500, &[]), ": oops");
        assert_eq!(upstream_message(b"", 500, &[]), "");
    }
}
