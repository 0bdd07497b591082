//! An upstream's refusal of the request: read (its message, keys
//! scrubbed, and whether it concerns this request alone), and relayed to
//! the client when it is the answer (a non-retryable 4xx).

use apiproxy_translate::{self as translate, Format};
use pingora::connectors::http::Connector;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::failover::AttemptError;
use super::respond::{self, Headers};
use super::upstream_error::{contains_key, scrub, upstream_message};
use crate::error::GatewayError;
use crate::upstream::http::Incoming;
use crate::upstream::ratelimit::{self, RateLimitReading};
use crate::upstream::Provider;

/// Largest upstream error body read (to relay or to log).
const MAX_ERROR_BODY: usize = 256 * 1024;

/// An upstream's refusal kept to be relayed when it is not retryable.
pub struct Refusal {
    status: u16,
    content_type: String,
    body: bytes::Bytes,
    /// The upstream's message, keys scrubbed.
    message: String,
    /// A 429 about this request alone (see `refusal_is_request_only`).
    pub request_only: bool,
    /// The provider's kind put the message in its own words (a content
    /// filter): the client gets it in its error shape, never the body.
    reworded: bool,
    /// The wire format the refused request was sent in.
    wire: Format,
}

/// A 429 concerns the request alone, not the key, when the provider says
/// the request is too large for the limit, or when its own rate-limit
/// headers show the key still has requests and tokens left: cooling the
/// key (or counting it against the upstream) would let one client's
/// oversized requests take a provider away from everyone.
fn refusal_is_request_only(message: &str, reading: Option<&RateLimitReading>) -> bool {
    let m = message.to_ascii_lowercase();
    let says_too_large = ["too large", "too long", "exceeds the", "maximum context"]
        .iter()
        .any(|p| m.contains(p));
    let key_has_room = reading.is_some_and(|r| {
        r.remaining_requests.is_some_and(|n| n > 0) && r.remaining_tokens.is_some_and(|n| n > 0)
    });
    says_too_large || key_has_room
}

impl Refusal {
    /// Reads an error answer (for its message, and to relay it when it is
    /// not retryable) and gives the connection back to the pool.
    pub async fn read(
        connector: &Connector,
        mut resp: Incoming,
        provider: &Provider,
        reading: Option<RateLimitReading>,
        wire: Format,
    ) -> (AttemptError, Option<Refusal>) {
        let status = resp.status();
        let body = resp.body(MAX_ERROR_BODY).await.unwrap_or_default();
        let names = provider.kind().ratelimit_headers();
        let retry_after = ratelimit::retry_after(names, |h| resp.header_str(h));
        let content_type = resp
            .header_str("content-type")
            .unwrap_or("application/json")
            .to_owned();
        resp.release(connector).await;
        let secrets = &provider.config.secrets;
        let reworded = provider.kind().refusal_message(status, &body);
        let message = match &reworded {
            Some(m) => scrub(m, secrets),
            None => upstream_message(&body, status, secrets)
                .trim_start_matches(": ")
                .to_owned(),
        };
        let request_only = status == 429 && refusal_is_request_only(&message, reading.as_ref());
        (
            AttemptError::Status {
                status,
                message: message.clone(),
                retry_after,
            },
            Some(Refusal {
                status,
                content_type,
                body,
                message,
                request_only,
                reworded: reworded.is_some(),
                wire,
            }),
        )
    }

    /// Relays an upstream's refusal of the request itself (a client error
    /// it found): as it came when the formats match and it holds no key,
    /// else in the client's error shape.
    pub async fn relay(
        self,
        client: Format,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &Provider,
        headers: &Headers,
    ) -> Result<(), GatewayError> {
        let status = self.status;
        let message = &self.message;
        ctx.provider.clone_from(&provider.config.id);
        if ctx.inflight_stream {
            // Keep-alives opened the stream: the refusal becomes its error event.
            let sep = if message.is_empty() { "" } else { ": " };
            return Err(GatewayError::upstream(
                status,
                format!("{}{sep}{message}", provider.config.id),
            ));
        }
        ctx.status = status;
        let mut h = headers.clone();
        respond::strip_debug(&mut h);
        let written = if self.wire == client
            && !self.reworded
            && !contains_key(&self.body, &provider.config.secrets)
        {
            respond::write(session, status, &self.content_type, self.body, &h).await
        } else {
            let body = translate::error_body(client, status, message);
            respond::json(session, status, body, &h).await
        };
        written.map_err(|e| GatewayError::internal(format!("writing the response: {e}")))
    }
}
