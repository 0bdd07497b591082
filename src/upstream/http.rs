//! One HTTP exchange with a provider, driven through Pingora's connector
//! (pooled connections, TLS with SNI, per-peer timeouts).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::upstreams::peer::HttpPeer;

use super::{dns, Provider};

/// How long an idle pooled connection to a provider is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// What kind of failure an exchange with a provider met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// DNS or TCP/TLS connect failed or timed out.
    Connect,
    /// The provider took longer than `read_timeout_ms` to answer.
    Timeout,
    /// The connection broke while sending or waiting.
    Io,
}

/// Why an exchange with a provider failed. Keeps its cause (Pingora's
/// `Box<Error>` with its `ErrorType`, `ErrorSource` and retry flag, or the
/// resolver's error), shared so an attempt's record can be cloned.
#[derive(Debug, Clone)]
pub struct SendError {
    pub kind: SendKind,
    /// What happened, in words (Pingora's own text when it came from it).
    detail: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl SendError {
    /// A failure of `kind` without a typed cause.
    pub fn new(kind: SendKind, detail: impl Into<String>) -> Self {
        SendError {
            kind,
            detail: detail.into(),
            cause: None,
        }
    }

    /// A failure of `kind` caused by `cause`.
    pub fn caused(
        kind: SendKind,
        detail: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SendError {
            kind,
            detail: detail.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A failure of `kind` from Pingora's typed error.
    fn pingora(kind: SendKind, detail: impl Into<String>, e: Box<pingora::Error>) -> Self {
        let cause: Arc<pingora::Error> = Arc::from(e);
        SendError {
            kind,
            detail: detail.into(),
            cause: Some(cause),
        }
    }

    /// Pingora's error behind this one, when it came from Pingora.
    pub fn pingora_error(&self) -> Option<&pingora::Error> {
        self.cause.as_deref()?.downcast_ref()
    }

    pub fn is_timeout(&self) -> bool {
        self.kind == SendKind::Timeout
    }
}

impl PartialEq for SendError {
    /// Same kind and words; the cause is not compared (it is not `Eq`).
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.detail == other.detail
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            SendKind::Connect => write!(f, "connect failed: {}", self.detail),
            SendKind::Timeout => f.write_str("timed out waiting for the response"),
            SendKind::Io => write!(f, "connection error: {}", self.detail),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A request ready to go to one provider.
pub struct Outgoing<'a> {
    pub method: &'static str,
    /// Path and query.
    pub path: &'a str,
    pub body: Bytes,
    pub stream: bool,
    /// Extra headers (auth, protocol versions, forwarded client headers).
    pub headers: Vec<(&'static str, String)>,
    /// Header rules of `filters_dir` for this attempt, applied last.
    pub edits: Option<&'a crate::config::filters::HeaderEdits>,
}

/// An upstream response whose header has arrived; the body is read from it.
pub struct Incoming {
    session: HttpSession,
    peer: Arc<HttpPeer>,
    /// The response's status; its header is read from the session, which
    /// keeps it (not copied: an open stream holds it as long as it lasts).
    status: u16,
    /// The first body read, read ahead by [`Incoming::peek`] and handed
    /// out by the next [`Incoming::chunk`] (`Some(None)`: the body's end).
    peeked: Option<Option<Bytes>>,
}

impl Incoming {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A response header value as text.
    /// `name` in lowercase, as every caller names it.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        let header = self.session.response_header()?;
        // A scan of the answer's few headers: a lookup by `&str` parses
        // the name first, and each answer is asked for half a dozen that
        // most do not carry (the rate-limit readings).
        header
            .headers
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SendError> {
        if let Some(c) = self.peeked.take() {
            return Ok(c);
        }
        self.session.read_response_body().await.map_err(classify)
    }

    /// Waits for the body's first piece (a stream's first byte) and keeps
    /// it for the relay, which reads it first.
    pub async fn peek(&mut self) -> Result<(), SendError> {
        if self.peeked.is_none() {
            let c = self.session.read_response_body().await.map_err(classify)?;
            self.peeked = Some(c);
        }
        Ok(())
    }

    /// Reads the rest of the body, up to `limit` bytes (more is an error).
    pub async fn body(&mut self, limit: usize) -> Result<Bytes, SendError> {
        let mut buf = BytesMut::new();
        while let Some(c) = self.chunk().await? {
            if buf.len() + c.len() > limit {
                return Err(SendError::new(
                    SendKind::Io,
                    format!("response body larger than {limit} bytes"),
                ));
            }
            if buf.is_empty() && self.session.response_done() {
                return Ok(c); // the common single-chunk body, without a copy
            }
            buf.extend_from_slice(&c);
        }
        Ok(buf.freeze())
    }

    /// Hands the connection back to the pool when its body was read to the
    /// end; otherwise it is closed.
    pub async fn release(mut self, connector: &Connector) {
        if self.session.response_done() {
            connector
                .release_http_session(self.session, &*self.peer, Some(POOL_IDLE))
                .await;
        }
    }
}

fn classify(e: Box<pingora::Error>) -> SendError {
    use pingora::ErrorType::*;
    match e.etype() {
        ReadTimedout | WriteTimedout => SendError::pingora(SendKind::Timeout, e.to_string(), e),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
        | TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError => {
            SendError::pingora(SendKind::Connect, e.to_string(), e)
        }
        _ => SendError::pingora(SendKind::Io, e.to_string(), e),
    }
}

/// The peer for a provider: address resolved asynchronously, SNI and
/// timeouts from its config. Built again only when the address moved.
async fn peer_for(provider: &Provider) -> Result<Arc<HttpPeer>, SendError> {
    let base = &provider.config.base;
    // Through an outbound proxy the connection is to the proxy; the
    // provider's name goes in the tunnel request (and in TLS's SNI).
    let (host, port) = match &provider.config.proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (base.host.as_str(), base.port),
    };
    let addr = dns::resolve(host, port)
        .await
        .map_err(|e| SendError::caused(SendKind::Connect, e.to_string(), e))?;
    if let Some(peer) = provider.peer.load_full() {
        if peer._address == SocketAddr::Inet(addr) {
            return Ok(peer);
        }
    }
    let peer = Arc::new(new_peer(provider, addr));
    provider.peer.store(Some(Arc::clone(&peer)));
    Ok(peer)
}

fn new_peer(provider: &Provider, addr: std::net::SocketAddr) -> HttpPeer {
    let base = &provider.config.base;
    let mut peer = HttpPeer::new(addr, base.tls, base.host.clone());
    // Pool connections per provider: two providers on one address may trust
    // different CAs, and the pool key does not include the CA.
    peer.group_key = provider.pool_key;
    let o = &mut peer.options;
    o.connection_timeout = Some(provider.config.connect_timeout);
    o.total_connection_timeout =
        Some(provider.config.connect_timeout + provider.config.connect_timeout);
    o.read_timeout = Some(provider.config.read_timeout);
    o.write_timeout = Some(provider.config.read_timeout);
    o.idle_timeout = Some(POOL_IDLE);
    o.ca.clone_from(&provider.config.ca);
    if let Some(proxy) = &provider.config.proxy {
        o.custom_l4 = Some(Arc::new(super::outbound_proxy::ThroughProxy {
            proxy: proxy.clone(),
            host: base.host.clone(),
            port: base.port,
        }));
    }
    peer
}

/// Sends `req` to `provider` and waits for the response header.
///
/// A request is never sent twice: on a pooled connection that the provider
/// closed meanwhile it is sent again on a fresh one only when writing it
/// failed (so the whole request never left the gateway and the provider
/// cannot have acted on it). A failure after the whole request was written,
/// even a connection closed before any answer, is the attempt's failure:
/// the provider may have run a paid generation (RFC 9110 §9.2.2).
pub async fn send(
    connector: &Connector,
    provider: &Provider,
    req: Outgoing<'_>,
) -> Result<Incoming, SendError> {
    let peer = peer_for(provider).await?;
    let (mut session, reused) = connector.get_http_session(&*peer).await.map_err(classify)?;
    prepare(&mut session, provider);
    match write_request(&mut session, provider, &req).await {
        Ok(()) => {}
        Err(e) if reused && e.kind == SendKind::Io => {
            let (fresh, _) = connector.get_http_session(&*peer).await.map_err(classify)?;
            session = fresh;
            prepare(&mut session, provider);
            write_request(&mut session, provider, &req).await?;
        }
        Err(e) => return Err(e),
    }
    let status = read_header(&mut session).await?;
    Ok(Incoming {
        session,
        peer,
        status,
        peeked: None,
    })
}

/// The connector does not apply the peer's read/write timeouts to the
/// session (pingora-proxy does that itself); per read, this is also the
/// first-token and idle-gap timeout.
fn prepare(session: &mut HttpSession, provider: &Provider) {
    session.set_read_timeout(Some(provider.config.read_timeout));
    session.set_write_timeout(Some(provider.config.read_timeout));
}

/// Reads the response header (kept by the session); its status.
async fn read_header(session: &mut HttpSession) -> Result<u16, SendError> {
    session.read_response_header().await.map_err(classify)?;
    session
        .response_header()
        .map(|h| h.status.as_u16())
        .ok_or_else(|| SendError::new(SendKind::Io, "no response header"))
}

/// Writes the request header and body (flushed).
async fn write_request(
    session: &mut HttpSession,
    provider: &Provider,
    req: &Outgoing<'_>,
) -> Result<(), SendError> {
    let h = request_header(provider, req)?;
    // Pingora's client flushes the head on its own, then the body: two
    // segments, two wake-ups of the provider. Corked, the kernel sends
    // them as one when the guard drops (an error path included).
    let _cork = (!req.body.is_empty()).then(|| Cork::on(session)).flatten();
    session
        .write_request_header(Box::new(h))
        .await
        .map_err(classify)?;
    if !req.body.is_empty() {
        session
            .write_request_body(req.body.clone(), true)
            .await
            .map_err(classify)?;
    }
    session.finish_request_body().await.map_err(classify)?;
    Ok(())
}

/// The request header `req` goes out with to `provider`.
fn request_header(provider: &Provider, req: &Outgoing<'_>) -> Result<RequestHeader, SendError> {
    use http::header::{self, HeaderValue};
    // Sized for the headers written below: the session keeps this header
    // for as long as the answer streams, and a map one header too large is
    // twice the memory (its table doubles).
    let fixed = if req.method == "POST" { 5 } else { 3 };
    let capacity = fixed
        + req.headers.len()
        + provider.config.headers.len()
        + req
            .edits
            .map_or(0, crate::config::filters::HeaderEdits::len);
    let h = RequestHeader::build_no_case(req.method, req.path.as_bytes(), Some(capacity))
        .map_err(|e| SendError::pingora(SendKind::Io, e.to_string(), e))?;
    // The gateway's own headers go into the map as typed names and values:
    // Pingora's `insert_header` parses every name again and copies every
    // value, a third of this function's work.
    let mut parts = http::request::Parts::from(h);
    let map = &mut parts.headers;
    let invalid = |k: &str, e: &dyn std::fmt::Display| {
        SendError::new(SendKind::Io, format!("header {k}: {e}"))
    };
    let host = provider.host_header.clone();
    map.insert(
        header::HOST,
        host.ok_or_else(|| invalid("host", &"not a header value"))?,
    );
    if req.method == "POST" {
        map.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(req.body.len()));
    }
    let accept = if req.stream {
        provider.config.format.stream_content_type()
    } else {
        "application/json"
    };
    map.insert(header::ACCEPT, HeaderValue::from_static(accept));
    map.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    for (k, v) in &req.headers {
        let mut value = HeaderValue::from_str(v).map_err(|e| invalid(k, &e))?;
        let name = crate::header_name::of(k).map_err(|e| invalid(k, &e))?;
        // A credential never shows in a debug print of the header.
        value.set_sensitive(crate::header_name::carries_a_key(&name));
        map.insert(name, value);
    }
    let mut h = RequestHeader::from(parts);
    if !req.path.starts_with('/') {
        // Not origin-form: the raw target the URI does not keep.
        h.set_raw_path(req.path.as_bytes())
            .map_err(|e| SendError::pingora(SendKind::Io, e.to_string(), e))?;
    }
    for (k, v) in &provider.config.headers {
        h.insert_header(k.clone(), v.as_str())
            .map_err(|e| SendError::pingora(SendKind::Io, format!("header {k}: {e}"), e))?;
    }
    if let Some(edits) = req.edits {
        edits
            .apply(&mut h)
            .map_err(|e| SendError::pingora(SendKind::Io, format!("header rules: {e}"), e))?;
    }
    sign(provider, req, &mut h)?;
    Ok(h)
}

const USER_AGENT: &str = concat!("apiproxy/", env!("CARGO_PKG_VERSION"));

/// Adds the kind's request signature (AWS SigV4 for `kind: bedrock`),
/// computed over the request exactly as it goes out: after every header
/// rule, with the `Host` header sent.
fn sign(provider: &Provider, req: &Outgoing<'_>, h: &mut RequestHeader) -> Result<(), SendError> {
    let host = h
        .headers
        .get(::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let signable = Signable {
        method: req.method,
        tls: provider.config.base.tls,
        host,
        path: req.path,
        body: &req.body,
    };
    let mut signed = Vec::new();
    provider
        .kind()
        .sign(&provider.config, &signable, &mut signed)
        .map_err(|e| SendError::new(SendKind::Io, format!("request signing: {e}")))?;
    for (k, v) in signed {
        h.insert_header(k, v.as_str())
            .map_err(|e| SendError::pingora(SendKind::Io, format!("header {k}: {e}"), e))?;
    }
    Ok(())
}

/// `TCP_CORK` on an HTTP/1 connection's socket while a request is written
/// (TLS included: the records go to the same socket); off again on drop,
/// which sends what is held. Without a socket (HTTP/2, a custom stream) or
/// when the option is refused, nothing is held and the write goes as before.
struct Cork(i32);

impl Cork {
    fn on(session: &HttpSession) -> Option<Cork> {
        let fd = session.stream()?.id();
        set_cork(fd, true).then_some(Cork(fd))
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        set_cork(self.0, false);
    }
}

fn set_cork(fd: i32, on: bool) -> bool {
    let v: libc::c_int = on.into();
    // SAFETY: `fd` is the socket of a session the caller holds for the
    // guard's whole life; the option value is a live c_int of the size
    // passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// What a request signature covers: the request as it is sent
/// ([`super::kind::Kind::sign`]).
#[derive(Debug)]
pub struct Signable<'a> {
    pub method: &'a str,
    /// Sent over TLS (`https`).
    pub tls: bool,
    /// The `Host` header sent.
    pub host: &'a str,
    /// Path and query, as sent (percent-encoded).
    pub path: &'a str,
    pub body: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::protocols::http::v1::client::HttpSession as H1;
    use pingora::protocols::l4::stream::Stream;

    fn corked(fd: i32) -> bool {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live socket of the test; `v` and `len` outlive the call.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v != 0
    }

    #[tokio::test]
    async fn attempts_share_the_providers_peer() {
        let c = crate::config::Config::from_yaml(
            "providers: [{id: o, kind: openai, base_url: 'http://127.0.0.1:9', connect_timeout_ms: 1234}]",
            &|_| None,
        )
        .unwrap();
        let provider = Provider::new(c.providers.into_iter().next().unwrap());
        let first = peer_for(&provider).await.unwrap();
        let second = peer_for(&provider).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.sni, "127.0.0.1");
        assert_eq!(first.group_key, provider.pool_key);
        let timeout = first.options.connection_timeout;
        assert_eq!(timeout, Some(Duration::from_millis(1234)));
        // A peer for another address (DNS moved) replaces it.
        let moved: std::net::SocketAddr = "127.0.0.2:9".parse().unwrap();
        provider
            .peer
            .store(Some(Arc::new(new_peer(&provider, moved))));
        let third = peer_for(&provider).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(
            third._address,
            SocketAddr::Inet("127.0.0.1:9".parse().unwrap())
        );
        assert!(Arc::ptr_eq(&third, &peer_for(&provider).await.unwrap()));
    }

    #[tokio::test]
    async fn the_cork_holds_while_the_guard_lives() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, _server) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let session = HttpSession::H1(H1::new(Box::new(Stream::from(client.unwrap()))));
        let fd = session.stream().unwrap().id();
        assert!(!corked(fd));
        let cork = Cork::on(&session).expect("a TCP socket takes TCP_CORK");
        assert!(corked(fd));
        drop(cork);
        assert!(!corked(fd));
    }

    /// The session keeps the request header while the answer streams: its
    /// map is as large as its headers need, not the next table size up.
    #[test]
    fn the_request_header_is_sized_for_its_headers() {
        let c = crate::config::Config::from_yaml(
            "providers: [{id: o, kind: openai, base_url: 'http://127.0.0.1:9', api_keys: [k]}]",
            &|_| None,
        )
        .unwrap();
        let provider = Provider::new(c.providers.into_iter().next().unwrap());
        let req = |headers: Vec<(&'static str, String)>| Outgoing {
            method: "POST",
            path: "/v1/chat/completions",
            body: Bytes::from_static(b"{}"),
            stream: true,
            headers,
            edits: None,
        };
        // host, content-type, content-length, accept, user-agent, authorization.
        let h = request_header(&provider, &req(provider.auth_headers(Some("k")))).unwrap();
        assert_eq!(h.headers.len(), 6);
        assert_eq!(h.headers.capacity(), 6, "no room past its six headers");
        let mut extra = provider.auth_headers(Some("k"));
        extra.push((
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ));
        let h = request_header(&provider, &req(extra)).unwrap();
        assert_eq!(h.headers.len(), 7);
        assert!(h.headers.capacity() >= 7);
    }

    /// What goes on the wire: the target, `Host` with the port only
    /// when it is not the scheme's, the gateway's headers, a key marked
    /// sensitive, a configured header and a query kept.
    #[test]
    fn the_request_header_is_written_as_it_was() {
        for (base, host) in [
            ("http://127.0.0.1:9", "127.0.0.1:9"),
            ("https://api.openai.com", "api.openai.com"),
            ("http://gw.internal:80", "gw.internal"),
        ] {
            let yaml = format!(
                "providers: [{{id: o, kind: openai, base_url: '{base}', api_keys: [k], headers: {{x-team: blue}}}}]"
            );
            let c = crate::config::Config::from_yaml(&yaml, &|_| None).unwrap();
            let provider = Provider::new(c.providers.into_iter().next().unwrap());
            let mut headers = provider.auth_headers(Some("sk-1"));
            headers.push(("tracestate", "a=1".into()));
            let req = Outgoing {
                method: "POST",
                path: "/v1/chat/completions?x=1",
                body: Bytes::from_static(b"{\"a\":1}"),
                stream: false,
                headers,
                edits: None,
            };
            let h = request_header(&provider, &req).unwrap();
            let mut wire = Vec::new();
            h.header_to_h1_wire(&mut wire);
            // Pingora writes some standard names titled (`Host`).
            let wire = String::from_utf8(wire).unwrap().to_ascii_lowercase();
            assert_eq!(h.method, "POST");
            assert_eq!(h.raw_path(), b"/v1/chat/completions?x=1");
            for line in [
                format!("host: {host}\r\n"),
                "content-type: application/json\r\n".into(),
                "content-length: 7\r\n".into(),
                "accept: application/json\r\n".into(),
                format!("user-agent: apiproxy/{}\r\n", env!("CARGO_PKG_VERSION")),
                "authorization: bearer sk-1\r\n".into(),
                "tracestate: a=1\r\n".into(),
                "x-team: blue\r\n".into(),
            ] {
                assert!(wire.contains(&line), "{line} in {wire}");
            }
            assert!(h.headers["authorization"].is_sensitive());
            assert!(!h.headers["tracestate"].is_sensitive());
        }
    }

    #[test]
    fn a_send_error_keeps_pingoras_typed_error() {
        let mut e = pingora::Error::explain(pingora::ErrorType::ConnectRefused, "to 127.0.0.1:9");
        e.set_retry(true);
        let sent = classify(e);
        assert_eq!(sent.kind, SendKind::Connect);
        let cause = sent.pingora_error().expect("Pingora's error kept");
        assert_eq!(cause.etype(), &pingora::ErrorType::ConnectRefused);
        assert!(cause.retry());
        // The chain reaches it through `source()`.
        let source = std::error::Error::source(&sent).expect("a source");
        assert!(source.downcast_ref::<pingora::Error>().is_some());

        let timeout = classify(pingora::Error::new(pingora::ErrorType::ReadTimedout));
        assert!(timeout.is_timeout());
        assert_eq!(timeout.to_string(), "timed out waiting for the response");
    }
}
