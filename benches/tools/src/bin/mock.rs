//! `bench-mock`: a fast mock OpenAI-kind provider for the load harness.
//!
//! A deliberately small HTTP/1.1 server (keep-alive, Content-Length request
//! bodies) that answers every `POST` with a static chat completion, or with a
//! static SSE stream of `--events` events when the request asks for one
//! (`Accept: text/event-stream` or `"stream":true` in the body), and
//! `GET /v1/models` with a one-model list. Responses are built once at start
//! so the mock costs a read and a write per request and is never what a
//! benchmark measures. With `--interval-ms N` the stream's events are spaced
//! N ms apart (to hold streams open); by default the whole stream is written
//! at once.
//!
//! For the routing scenario, `--delay-ms N` holds every JSON answer N ms and
//! `--fail-percent P` answers 500 to P of every 100 POSTs (spread evenly).
//!
//! `bench-mock --listen 127.0.0.1:18001 [--threads 1] [--events 200] [--interval-ms 0]
//! [--delay-ms 0] [--fail-percent 0]`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a static answer from the benchmark mock provider."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":14,"total_tokens":26}}"#;
const MODELS: &str =
    r#"{"object":"list","data":[{"id":"bench-model","object":"model","owned_by":"bench"}]}"#;

struct Opts {
    listen: SocketAddr,
    threads: usize,
    events: usize,
    interval: Duration,
    delay: Duration,
    fail_percent: u64,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        listen: "127.0.0.1:18001".parse().map_err(|e| format!("{e}"))?,
        threads: 1,
        events: 200,
        interval: Duration::ZERO,
        delay: Duration::ZERO,
        fail_percent: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => o.listen = val()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--threads" => o.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--events" => o.events = val()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--interval-ms" => {
                o.interval = Duration::from_millis(
                    val()?.parse().map_err(|e| format!("--interval-ms: {e}"))?,
                )
            }
            "--delay-ms" => {
                o.delay =
                    Duration::from_millis(val()?.parse().map_err(|e| format!("--delay-ms: {e}"))?)
            }
            "--fail-percent" => {
                o.fail_percent = val()?.parse().map_err(|e| format!("--fail-percent: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.events < 4 {
        return Err("--events must be at least 4".into());
    }
    Ok(o)
}

/// Every answer, as bytes ready for the socket.
struct Answers {
    json: Vec<u8>,
    failure: Vec<u8>,
    models: Vec<u8>,
    not_found: Vec<u8>,
    sse_head: Vec<u8>,
    /// One chunk-framed SSE event each; the last one is `[DONE]` plus the
    /// chunked terminator.
    sse_events: Vec<Vec<u8>>,
    /// Head and every event in one buffer.
    sse_all: Vec<u8>,
}

fn whole(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chunk(data: &str) -> Vec<u8> {
    let ev = format!("data: {data}\n\n");
    format!("{:x}\r\n{ev}\r\n", ev.len()).into_bytes()
}

impl Answers {
    fn new(events: usize) -> Answers {
        let head = |delta: &str, finish: &str| {
            format!(
                r#"{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#
            )
        };
        // role, content..., finish, usage, [DONE]: `events` in all.
        let mut sse_events = vec![chunk(&head(r#"{"role":"assistant","content":""}"#, "null"))];
        for i in 0..events - 4 {
            sse_events.push(chunk(&head(&format!(r#"{{"content":"tok{i} "}}"#), "null")));
        }
        sse_events.push(chunk(&head("{}", r#""stop""#)));
        sse_events.push(chunk(&format!(
            r#"{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":{},"total_tokens":{}}}}}"#,
            events - 4,
            events + 8
        )));
        let mut done = chunk("[DONE]");
        done.extend_from_slice(b"0\r\n\r\n");
        sse_events.push(done);
        let sse_head =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        let mut sse_all = sse_head.clone();
        for e in &sse_events {
            sse_all.extend_from_slice(e);
        }
        Answers {
            json: whole("200 OK", "application/json", COMPLETION),
            failure: whole(
                "500 Internal Server Error",
                "application/json",
                r#"{"error":{"message":"injected failure","type":"server_error"}}"#,
            ),
            models: whole("200 OK", "application/json", MODELS),
            not_found: whole(
                "404 Not Found",
                "application/json",
                r#"{"error":{"message":"not found"}}"#,
            ),
            sse_head,
            sse_events,
            sse_all,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The request head's facts the mock needs.
struct Head {
    get: bool,
    models: bool,
    content_length: usize,
    accepts_sse: bool,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?;
    let path = first.next()?;
    let mut h = Head {
        get: method == "GET",
        models: path.starts_with("/v1/models"),
        content_length: 0,
        accepts_sse: false,
        chunked: false,
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            h.content_length = v.parse().ok()?;
        } else if k.eq_ignore_ascii_case("accept") {
            h.accepts_sse = v.starts_with("text/event-stream");
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = v.eq_ignore_ascii_case("chunked");
        }
    }
    Some(h)
}

/// Injected slowness and failures (routing scenario).
struct Faults {
    delay: Duration,
    fail_percent: u64,
    posts: AtomicU64,
}

impl Faults {
    /// Whether this POST fails: P of every 100, spread by a stride coprime
    /// with 100 so failures do not come in runs.
    fn fail_next(&self) -> bool {
        let n = self.posts.fetch_add(1, Ordering::Relaxed);
        (n * 37) % 100 < self.fail_percent
    }
}

async fn serve(
    mut s: TcpStream,
    a: Arc<Answers>,
    interval: Duration,
    f: Arc<Faults>,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 1 << 20 || s.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let Some(head) = parse_head(&buf[..head_end]) else {
            return s.write_all(&a.not_found).await;
        };
        if head.chunked {
            // Not needed by any client of the harness.
            return s.write_all(&a.not_found).await;
        }
        let total = head_end + head.content_length;
        while buf.len() < total {
            if s.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let stream = !head.get
            && (head.accepts_sse || find(&buf[head_end..total], b"\"stream\":true").is_some());
        buf.drain(..total);
        if head.get {
            s.write_all(if head.models { &a.models } else { &a.not_found })
                .await?;
        } else if f.fail_percent > 0 && f.fail_next() {
            s.write_all(&a.failure).await?;
        } else if !stream {
            if !f.delay.is_zero() {
                tokio::time::sleep(f.delay).await;
            }
            s.write_all(&a.json).await?;
        } else if interval.is_zero() {
            s.write_all(&a.sse_all).await?;
        } else {
            s.write_all(&a.sse_head).await?;
            for (i, ev) in a.sse_events.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                s.write_all(ev).await?;
            }
        }
    }
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-mock: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(o.listen).await.expect("bind");
        let answers = Arc::new(Answers::new(o.events));
        let faults = Arc::new(Faults {
            delay: o.delay,
            fail_percent: o.fail_percent.min(100),
            posts: AtomicU64::new(0),
        });
        eprintln!("bench-mock listening on {}", o.listen);
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let a = answers.clone();
            let interval = o.interval;
            let f = faults.clone();
            tokio::spawn(async move {
                let _ = serve(s, a, interval, f).await;
            });
        }
    });
}
