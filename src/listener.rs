//! The client connection layer: what happens on a client's TCP connection
//! between its requests, in front of Pingora's HTTP/1 session.
//!
//! Pingora applies no client-side limits of its own that an edge needs (its
//! read timeout is per read, so a byte every few seconds keeps a request head
//! open forever; its header cap is 1 MiB; it accepts every connection). This
//! layer owns the connection loop Pingora's `ServerApp` blanket impl would
//! run, and before each request:
//!
//! - waits for the first byte under the keep-alive timeout (or the drain
//!   bound, see [`crate::drain`]);
//! - reads the request head itself, whole, within `server.header_timeout_ms`
//!   (408, counted from the connection's accept for its first request) and
//!   `server.max_header_bytes` (431), and hands those bytes to Pingora's
//!   session as already-read input;
//! - sets the body read and response write timeouts on the session (a stream
//!   client that stops reading is dropped, which drops the upstream request);
//! - holds one of `server.max_connections` slots per connection: past them a
//!   connection is answered 503 and closed at once.
//!
//! HTTP/1.x is served this way on the plain listener and on the TLS one.
//! On the TLS listener the slot is taken first and the TLS handshake runs
//! here, within the header deadline counted from the accept (Pingora's own
//! runs before any slot, for a fixed 60 s). An HTTP/2 connection (ALPN
//! `h2`) takes the descriptors its streams may open upstream
//! ([`DescriptorBudget`]) and must send its preface by the same deadline,
//! then goes to Pingora's own h2 loop: h2 frames its requests itself, so
//! its limits are the h2 settings the TLS service is built with
//! (`server.h2_max_concurrent_streams`, `max_header_bytes` as the header
//! list size, `keepalive_timeout_ms` as the idle timeout) and the
//! per-request bounds the proxy sets (body read, response write).
//!
//! Invariant: every open client connection holds a slot and has a deadline
//! from its first byte.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::{HttpModule, HttpModuleBuilder, HttpModules, Module};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ServerSettings;
use crate::drain::{self, Drain};
use crate::error::GatewayError;
use crate::proxy::routes::error_format;
use crate::tls::TlsAcceptor;

mod capacity;
mod replay;

use capacity::Full;
pub use capacity::{Capacity, DescriptorBudget, POOL_FDS, RESERVED_FDS, UPSTREAMS_PER_REQUEST};

/// Pingora's HTTP app (the proxy) behind apiproxy's connection layer.
pub struct ClientListener<A> {
    app: Arc<A>,
    /// The connection limits read from here: header, keep-alive, body and
    /// write timeouts and `max_header_bytes` (the connection cap is the
    /// capacity's).
    limits: ServerSettings,
    capacity: Arc<Capacity>,
    tls: Option<TlsAcceptor>,
    refusal_warned: AtomicBool,
    drain: Drain,
}

impl<A> ClientListener<A> {
    /// A listener whose connections count against `capacity` (shared by
    /// the plain and the TLS listener).
    pub fn new(app: A, limits: ServerSettings, grace: Duration, capacity: Arc<Capacity>) -> Self {
        ClientListener {
            app: Arc::new(app),
            limits,
            capacity,
            tls: None,
            refusal_warned: AtomicBool::new(false),
            drain: Drain::new(grace),
        }
    }

    /// The TLS listener: each connection's handshake runs in its slot.
    pub fn with_tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Logs a refusal: once per listener at warn, then at debug (a flood
    /// must not flood the log).
    fn log_refusal(&self, full: Full) {
        let what = match full {
            Full::Connections => format!(
                "server.max_connections ({}) reached: connections are refused",
                self.capacity.budget.max_connections
            ),
            Full::Descriptors => format!(
                "the descriptor budget ({} for client connections and their upstreams; an HTTP/2 connection takes {}) is used up: connections are refused",
                self.capacity.budget.total, self.capacity.budget.h2
            ),
        };
        if self.refusal_warned.swap(true, Ordering::Relaxed) {
            log::debug!("{what}");
        } else {
            log::warn!("{what} (further refusals are logged at debug)");
        }
    }
}

/// How waiting for a request head ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// The whole head (and whatever followed it in the same reads).
    Complete(BytesMut),
    /// The client closed, or the connection was idle past its deadline
    /// without sending a byte: closed without an answer.
    Idle,
    /// Part of a head came, then not the rest in time: 408.
    TimedOut(BytesMut),
    /// The head grew past `max_header_bytes`: 431.
    TooLarge(BytesMut),
}

/// Where the blank line ending a request head is, if it came: the index just
/// past it. Leading empty lines (allowed before a request line) are skipped;
/// `scanned` is how far an earlier call already looked.
pub fn head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let from = scanned.saturating_sub(3).max(start);
    let rest = buf.get(from..)?;
    rest.iter().enumerate().find_map(|(i, &b)| {
        if b != b'\n' {
            return None;
        }
        let after = &rest[i + 1..];
        if after.first() == Some(&b'\n') {
            Some(from + i + 2)
        } else if after.starts_with(b"\r\n") {
            Some(from + i + 3)
        } else {
            None
        }
    })
}

impl<A> ClientListener<A> {
    /// Waits for the next request head on `stream`. `accepted` is when the
    /// connection was accepted (first request) or `None` on a kept-alive one.
    async fn read_head(
        &self,
        stream: &mut Stream,
        accepted: Option<Instant>,
        shutdown: &ShutdownWatch,
    ) -> Head {
        let limits = &self.limits;
        let mut buf = BytesMut::with_capacity(4096);
        // Phase 1: the first byte. A new connection's first request head must
        // be complete within the header timeout counted from its accept.
        let idle_since = Instant::now();
        let mut draining = self.drain.observe(shutdown);
        loop {
            let deadline = match accepted {
                Some(t) => t + limits.header_timeout,
                None => drain::idle_deadline(
                    idle_since,
                    limits.keepalive_timeout,
                    draining,
                    self.drain.grace(),
                ),
            };
            // The read first: a head already waiting arms no timer.
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return Head::Idle,
                    Ok(_) => break,
                },
                _ = crate::timer::sleep_until(deadline) => return Head::Idle,
                _ = drain::begun(shutdown), if draining.is_none() => {
                    draining = self.drain.observe(shutdown);
                }
            }
        }
        // Phase 2: the rest of the head, within the header timeout.
        let deadline = accepted.unwrap_or_else(Instant::now) + limits.header_timeout;
        let mut scanned = 0;
        loop {
            if let Some(end) = head_end(&buf, scanned) {
                if end > limits.max_header_bytes {
                    return Head::TooLarge(buf);
                }
                return Head::Complete(buf);
            }
            scanned = buf.len();
            if buf.len() > limits.max_header_bytes {
                return Head::TooLarge(buf);
            }
            buf.reserve(4096);
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    // Half a head and then a close: nothing to answer.
                    Ok(0) | Err(_) => return Head::Idle,
                    Ok(_) => {}
                },
                _ = crate::timer::sleep_until(deadline) => return Head::TimedOut(buf),
            }
        }
    }
}

/// The path of a (possibly partial) request head, for the error's shape.
fn request_path(head: &[u8]) -> &str {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).unwrap_or("");
    let target = line.trim_start().split(' ').nth(1).unwrap_or("/");
    target.split('?').next().unwrap_or("/")
}

/// Answers a connection that will not get to Pingora, then closes it.
async fn refuse(mut stream: Stream, status: u16, reason: &str, message: &str, head: &[u8]) {
    // The client's connection or head is refused (431, 408) or the gateway
    // is at its connection cap (503): neither is an upstream's doing.
    let err = if status >= 500 {
        GatewayError::upstream(status, message)
    } else {
        GatewayError::client(status, message)
    };
    let body = err.body(error_format(request_path(head)));
    let retry = if status == 503 {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    // A client that does not read its answer does not hold the slot long.
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    let _ = stream.shutdown().await;
}

#[async_trait]
impl<A> ServerApp for ClientListener<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        // From here to the first request head: one deadline.
        let deadline = tokio::time::Instant::from_std(accepted + self.limits.header_timeout);
        let mut slot = match self.capacity.take() {
            Ok(slot) => slot,
            Err(full) => {
                self.log_refusal(full);
                // A TLS client gets no handshake spent on it: closed.
                if self.tls.is_none() {
                    refuse(
                        stream,
                        503,
                        "Service Unavailable",
                        "too many connections: try again shortly",
                        b"",
                    )
                    .await;
                }
                return None;
            }
        };
        if let Some(tls) = &self.tls {
            stream = match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    log::debug!("tls handshake failed: {e}");
                    return None;
                }
                Err(_) => {
                    log::debug!(
                        "tls handshake not complete within server.header_timeout_ms: closed"
                    );
                    return None;
                }
            };
        }
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            if !self.capacity.widen_for_h2(&mut slot) {
                self.log_refusal(Full::Descriptors);
                return None;
            }
            let stream =
                match tokio::time::timeout_at(deadline, replay::read_h2_preface(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        log::debug!("h2 preface not sent within server.header_timeout_ms: closed");
                        return None;
                    }
                };
            // Pingora's h2 loop, under the h2 settings of the app; the slot
            // is held until it ends.
            let kept = ServerApp::process_new(&self.app, Box::new(stream), shutdown).await;
            drop(slot);
            return kept;
        }
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let head = self
                .read_head(&mut stream, first.then_some(accepted), shutdown)
                .await;
            let head = match head {
                Head::Complete(head) => head,
                Head::Idle => return None,
                Head::TimedOut(head) => {
                    let msg = format!(
                        "request head not complete within {} ms",
                        self.limits.header_timeout.as_millis()
                    );
                    refuse(stream, 408, "Request Timeout", &msg, &head).await;
                    return None;
                }
                Head::TooLarge(head) => {
                    let msg = format!(
                        "request head larger than {} bytes",
                        self.limits.max_header_bytes
                    );
                    refuse(stream, 431, "Request Header Fields Too Large", &msg, &head).await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(p) = persistent.take() {
                p.apply_to_session(&mut session);
            }
            // Keep-alive on (the client's own header may turn it off); its
            // timeout is enforced above, between requests. Pingora's timer
            // only bounds its own reads of a head, which it already has whole.
            session.set_keepalive(Some(self.limits.header_timeout.as_secs().max(1)));
            session.set_pipelined_prefix(head);
            session.set_read_timeout(Some(self.limits.body_timeout));
            session.set_write_timeout(Some(self.limits.write_timeout));
            let reused = self.app.process_new_http(session, shutdown).await?;
            let (next, settings) = reused.consume();
            stream = next;
            persistent = settings;
            first = false;
        }
    }

    /// Deliberately does not call the proxy's `http_cleanup`: that would close
    /// every idle kept-alive connection at once (see [`crate::drain`]).
    async fn cleanup(&self) {
        log::info!("draining: listeners closed, connections finish their work");
    }
}

/// Adds `x-apiproxy-pid` (which process answered) to `/health` answers and
/// to every answer to a request with `x-debug: true`: during a binary upgrade
/// two processes serve one port.
pub struct PidHeader;

impl PidHeader {
    /// Registers the module on the proxy's downstream modules.
    pub fn register(modules: &mut HttpModules) {
        modules.add_module(Box::new(PidHeader));
    }
}

impl HttpModuleBuilder for PidHeader {
    fn init(&self) -> Module {
        Box::new(PidHeaderCtx { wanted: false })
    }
}

struct PidHeaderCtx {
    wanted: bool,
}

#[async_trait]
impl HttpModule for PidHeaderCtx {
    async fn request_header_filter(&mut self, req: &mut RequestHeader) -> pingora::Result<()> {
        self.wanted = req.uri.path() == "/health"
            || req
                .headers
                .get(crate::header_name::X_DEBUG)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(())
    }

    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> pingora::Result<()> {
        if self.wanted {
            resp.insert_header("x-apiproxy-pid", std::process::id().to_string())?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_head() {
        let h = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(head_end(h, 0), Some(h.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        // Leading empty lines before the request line are not its end.
        assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.1\r\n", 0), None);
        assert_eq!(head_end(b"\r\n", 0), None);
        // A resumed scan still finds a terminator split across reads.
        let h = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_end(h, h.len() - 2), Some(h.len()));
    }

    #[test]
    fn the_path_of_a_partial_head_shapes_the_error() {
        assert_eq!(
            request_path(b"POST /v1/messages?x=1 HTTP/1.1\r\nHo"),
            "/v1/messages"
        );
        assert_eq!(request_path(b"POS"), "/");
        assert_eq!(request_path(b"\xff\xfe"), "/");
    }
}
