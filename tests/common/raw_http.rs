//! A raw HTTP/1.1 client for tests that must see exactly what the gateway
//! does with a connection: no pool, no retries, framing read by hand.

use std::time::Duration;

use serde_json::Value;

/// The value of header `name` (lower-case) in a lower-cased head.
pub fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

impl RawAnswer {
    /// The value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }
}

impl KeptAlive {
    /// Whether the connection is still open for the next request (the
    /// last answer did not say `Connection: close`).
    pub fn is_open(&self) -> bool {
        self.sock.is_some()
    }
}

/// A kept-alive HTTP/1.1 client connection that never retries: reqwest
/// (through hyper-util's pool, `retry_canceled_requests` on by default)
/// sends a request again on a fresh connection when the pooled one it
/// picked turns out closed before the request was written, so a process
/// that closes idle kept-alive connections would go unseen under it. Here a
/// request on a connection the gateway closed without answering fails. A new
/// connection is opened only at the start or after an answer that said
/// `Connection: close`.
pub struct KeptAlive {
    port: u16,
    sock: Option<tokio::net::TcpStream>,
}

/// One answer read by [`KeptAlive`]: status, lower-cased head, body.
pub struct RawAnswer {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

impl KeptAlive {
    pub fn new(port: u16) -> KeptAlive {
        KeptAlive { port, sock: None }
    }

    /// POSTs `body` to `/v1/chat/completions` and reads the whole answer
    /// (content-length or chunked); an error says how the exchange broke.
    pub async fn post(&mut self, body: &Value) -> Result<RawAnswer, String> {
        use tokio::io::AsyncWriteExt;
        let reused = self.sock.is_some();
        if self.sock.is_none() {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            self.sock = Some(s);
        }
        let sock = self.sock.as_mut().expect("connected");
        let body = body.to_string();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-debug: true\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let exchange = async {
            sock.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            read_answer(sock).await
        };
        let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| "no answer within 30 s".to_owned())
            .and_then(|r| r)
            .map_err(|e| {
                self.sock = None;
                format!(
                    "{e} (on a {} connection)",
                    if reused { "kept-alive" } else { "new" }
                )
            })?;
        if header_of(&answer.head, "connection") == Some("close") {
            self.sock = None;
        }
        Ok(answer)
    }
}

/// Reads one HTTP/1.1 response from `sock`.
/// Reads more of the answer into `buf`; an error when the connection ends.
async fn more(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut tmp = [0u8; 16384];
    let n = sock
        .read(&mut tmp)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("closed before the answer was complete".to_owned());
    }
    buf.extend_from_slice(&tmp[..n]);
    Ok(())
}

pub async fn read_answer(sock: &mut tokio::net::TcpStream) -> Result<RawAnswer, String> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        more(sock, &mut buf)
            .await
            .map_err(|e| format!("before the answer's head: {e}"))?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let mut rest = buf.split_off(end + 4);
    let mut body = Vec::new();
    if header_of(&head, "transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                more(sock, &mut rest).await?;
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            while rest.len() < line_end + 2 + size + 2 {
                more(sock, &mut rest).await?;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = header_of(&head, "content-length") {
        let len: usize = len.parse().map_err(|_| format!("content-length {len:?}"))?;
        while rest.len() < len {
            more(sock, &mut rest).await?;
        }
        body = rest[..len].to_vec();
    } else {
        return Err(format!(
            "an answer framed by neither length nor chunks: {head}"
        ));
    }
    Ok(RawAnswer { status, head, body })
}
