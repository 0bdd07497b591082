//! A provider's connections through its `proxy_url`: Pingora connects to
//! the proxy (the peer's address is the proxy's), this asks it for a tunnel
//! to the provider (`CONNECT` or SOCKS5), and Pingora then speaks TLS and
//! HTTP through the tunnel as on a direct connection.

use async_trait::async_trait;
use base64::Engine as _;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

use super::dns;
use crate::config::{ProxyScheme, ProxyUrl};

/// A `CONNECT` answer's header larger than this is not a proxy's.
const MAX_CONNECT_ANSWER: usize = 16 * 1024;

/// Opens a provider's connections through its outbound proxy.
#[derive(Debug)]
pub struct ThroughProxy {
    pub proxy: ProxyUrl,
    /// The provider's host and port, as its `base_url` names them.
    pub host: String,
    pub port: u16,
}

fn fail(context: &'static str, why: impl Into<String>) -> Box<Error> {
    Error::explain(
        ErrorType::ConnectProxyFailure,
        format!("{context}: {}", why.into()),
    )
}

#[async_trait]
impl L4Connect for ThroughProxy {
    async fn connect(&self, proxy_addr: &SocketAddr) -> Result<Stream> {
        let SocketAddr::Inet(addr) = proxy_addr else {
            return Err(fail("outbound proxy", "not an internet address"));
        };
        let tcp = TcpStream::connect(addr)
            .await
            .or_err(ErrorType::ConnectError, "connecting to the outbound proxy")?;
        let _ = tcp.set_nodelay(true);
        let tcp = match self.proxy.scheme {
            ProxyScheme::HttpConnect => self.http_connect(tcp).await?,
            ProxyScheme::Socks5 { remote_dns } => self.socks5(tcp, remote_dns).await?,
        };
        Ok(tcp.into())
    }
}

impl ThroughProxy {
    /// `CONNECT host:port`: a 2xx opens the tunnel; anything else (407:
    /// wrong or missing credentials) is the attempt's connect failure.
    async fn http_connect(&self, mut tcp: TcpStream) -> Result<TcpStream> {
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, pass)) = &self.proxy.credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes())
            .await
            .or_err(ErrorType::ConnectProxyFailure, "writing CONNECT")?;
        // Until the blank line; the proxy sends nothing after it before the
        // gateway speaks (TLS or HTTP begins with the client).
        let mut got = Vec::with_capacity(256);
        let mut buf = [0u8; 1024];
        let end = loop {
            let n = tcp
                .read(&mut buf)
                .await
                .or_err(ErrorType::ConnectProxyFailure, "reading the CONNECT answer")?;
            if n == 0 {
                return Err(fail("CONNECT", "the proxy closed the connection"));
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = memchr::memmem::find(&got, b"\r\n\r\n") {
                break i + 4;
            }
            if got.len() > MAX_CONNECT_ANSWER {
                return Err(fail("CONNECT", "the answer's header is too large"));
            }
        };
        let status = std::str::from_utf8(&got[..end])
            .ok()
            .and_then(|head| head.split_whitespace().nth(1))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| fail("CONNECT", "the answer is not HTTP"))?;
        if !(200..300).contains(&status) {
            return Err(fail("CONNECT", format!("the proxy answered {status}")));
        }
        if got.len() > end {
            return Err(fail("CONNECT", "the proxy sent bytes after its answer"));
        }
        Ok(tcp)
    }

    /// SOCKS5 `CONNECT` (RFC 1928), with username/password (RFC 1929) when
    /// the URL has them; `socks5h` hands the provider's name to the proxy.
    async fn socks5(&self, tcp: TcpStream, remote_dns: bool) -> Result<TcpStream> {
        let ip;
        let target: (&str, u16) = if remote_dns {
            (self.host.as_str(), self.port)
        } else {
            let addr = dns::resolve(&self.host, self.port)
                .await
                .or_err(ErrorType::ConnectProxyFailure, "resolving the provider")?;
            ip = addr.ip().to_string();
            (ip.as_str(), self.port)
        };
        let stream = match &self.proxy.credentials {
            None => Socks5Stream::connect_with_socket(tcp, target).await,
            Some((user, pass)) => {
                Socks5Stream::connect_with_password_and_socket(tcp, target, user, pass).await
            }
        }
        .map_err(|e| fail("SOCKS5", e.to_string()))?;
        Ok(stream.into_inner())
    }
}
