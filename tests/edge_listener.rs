//! The client connection layer through the real binary (issue 8, items 1-3,
//! 12, 14): slow, idle, oversized and too many clients, the open-gateway
//! guard, the private runtime directory.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn chat_body() -> String {
    json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn providers(up: &MockProvider) -> String {
    format!(
        "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
        up.base_url()
    )
}

/// Generation requests the mock got (the catalog refresh lists models too).
fn posts(up: &MockProvider) -> usize {
    up.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .count()
}

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect")
}

/// Reads until the peer closes (or `limit` passes: `None`). Returns what
/// came, reset or not.
async fn read_until_closed(sock: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().map(|()| out)
}

/// One complete HTTP/1.1 response head and body from a kept-alive socket
/// (content-length framing).
async fn read_response(sock: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut tmp))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {text}");
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn slow_request_heads_are_cut_at_the_header_timeout_and_do_not_delay_others() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_server("header_timeout_ms: 1500", &providers(&up)).await;

    // 200 clients that send half a request line and then nothing.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = connect(&gw).await;
        s.write_all(b"POST /v1/chat/completions HTT").await.unwrap();
        slow.push(s);
    }
    let opened = Instant::now();
    // One that sends its head a byte at a time, 100 ms apart, for longer than
    // the header timeout: the deadline is for the whole head, not per read.
    let trickle = tokio::spawn({
        let port = gw.port;
        async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let t = Instant::now();
            for b in head {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let got = read_until_closed(&mut s, Duration::from_secs(20)).await;
            (t.elapsed(), got)
        }
    });

    // A normal request is answered while they all hang.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("content-type", "application/json")
        .body(chat_body())
        .send()
        .await
        .expect("a normal request while 200 slow clients hang");
    assert_eq!(r.status(), 200);

    // Every slow client is answered 408 after the timeout, then closed.
    for (i, s) in slow.iter_mut().enumerate() {
        let got = read_until_closed(s, Duration::from_secs(20))
            .await
            .expect("a slow client was never closed");
        assert_eq!(
            status_of(&got),
            408,
            "slow client {i}: {:?}",
            String::from_utf8_lossy(&got)
        );
        // In the client's error shape (OpenAI for this path).
        assert!(String::from_utf8_lossy(&got).contains("\"error\""));
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(1300),
        "closed before the header timeout"
    );
    let (took, got) = trickle.await.unwrap();
    let got = got.expect("the trickling client was never closed");
    assert_eq!(status_of(&got), 408, "{}", String::from_utf8_lossy(&got));
    // Its head needed 8 s at that pace: it was cut well before.
    assert!(took < Duration::from_secs(7), "took {took:?}");
    // And the gateway still serves.
    let r = client().get(format!("{}/health", gw.url())).send().await;
    assert_eq!(r.unwrap().status(), 200);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_server("keepalive_timeout_ms: 1000", &providers(&up)).await;
    let mut s = connect(&gw).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let idle = Instant::now();
    let rest = read_until_closed(&mut s, Duration::from_secs(15))
        .await
        .expect("the idle connection was never closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(idle.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_body_that_stops_arriving_ends_the_request_at_the_body_timeout() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_server("body_timeout_ms: 1000", &providers(&up)).await;
    let mut s = connect(&gw).await;
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(15))
        .await
        .expect("a stalled body was waited on forever");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Ended by the body timeout, not by a later one (the header timeout is
    // 10 s, the keep-alive timeout 60 s).
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(status_of(&got), 408, "{:?}", String::from_utf8_lossy(&got));
    assert!(String::from_utf8_lossy(&got).contains("\"error\""));
    assert_eq!(posts(&up), 0, "a half body went upstream");
}

#[tokio::test]
async fn a_stream_client_that_stops_reading_is_dropped_and_its_upstream_cancelled() {
    // A long, fast stream: far more than the socket buffers hold.
    let pad = "x".repeat(2000);
    let words: Vec<String> = (0..20_000).map(|i| format!("{pad}{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let up = MockProvider::always(Reply::sse(&openai_stream("m", &refs))).await;
    let gw = Gateway::start_with_server("write_timeout_ms: 1000", &providers(&up)).await;
    let mut s = connect(&gw).await;
    let body = json!({"model": "p/m", "stream": true, "messages": []}).to_string();
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Read the start of the answer, then stop reading (but stay connected).
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while *up.cancelled.lock().unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was never cancelled; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431_never_200() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    // The default (64 KiB).
    let gw = Gateway::start(&providers(&up)).await;
    // A whole head of 70 KiB, sent at once: the client reads its 431.
    let mut s = connect(&gw).await;
    let body = chat_body();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        "a".repeat(70 * 1024),
        body.len()
    );
    // The gateway may answer (and stop reading) before all of it is written.
    let _ = s.write_all(head.as_bytes()).await;
    let got = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("the connection was held open");
    let text = String::from_utf8_lossy(&got).to_string();
    assert_eq!(status_of(&got), 431, "{text:?}");
    assert!(text.contains("larger than 65536"), "{text}");
    assert_eq!(posts(&up), 0);
    // A head under the limit is served.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-pad", "a".repeat(60 * 1024))
        .header("content-type", "application/json")
        .body(chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A configured, smaller limit; the error in the Anthropic shape for its path.
    let gw = Gateway::start_with_server("max_header_bytes: 2048", &providers(&up)).await;
    let mut s = connect(&gw).await;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "b".repeat(3000)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status_of(&got), 431, "{}", String::from_utf8_lossy(&got));
    assert!(String::from_utf8_lossy(&got).contains("\"type\":\"error\""));
}

#[tokio::test]
async fn connections_past_max_connections_are_refused_and_slots_come_back() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_server(
        "max_connections: 8\nheader_timeout_ms: 30000",
        &providers(&up),
    )
    .await;
    // Eight kept-alive connections, each shown to hold a slot by an
    // answer. A slot of wait_ready's closed connections may not be back
    // yet: a connection refused then is let go and tried again.
    let mut held = Vec::new();
    let deadline = Instant::now() + WAIT;
    while held.len() < 8 {
        let mut s = connect(&gw).await;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let head = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).to_string()
        })
        .await
        .expect("an answer");
        if head.starts_with("HTTP/1.1 200") {
            held.push(s);
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "{} connections held, then: {head:?}",
            held.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut extra = connect(&gw).await;
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let got = read_until_closed(&mut extra, Duration::from_secs(10))
        .await
        .expect("the connection past the cap was held open");
    assert_eq!(status_of(&got), 503, "{:?}", String::from_utf8_lossy(&got));
    gw.expect_log("server.max_connections (8) reached").await;
    // Free one slot: a new connection is served again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = client()
            .get(format!("{}/health", gw.url()))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_low_open_file_limit_lowers_the_connection_cap_instead_of_running_out() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_opts(&providers(&up), "", &[], Some(320)).await;
    // (320 - 256) / 3 = 21 connections at most: each with the upstream
    // connections of a request and its hedge.
    assert!(
        gw.log()
            .contains("server.max_connections lowered from 8192 to 21"),
        "{}",
        gw.log()
    );
    let mut held = Vec::new();
    for _ in 0..100 {
        match TcpStream::connect(("127.0.0.1", gw.port)).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    // The flood reached the cap (the refusals past it are logged) before
    // some of it goes.
    gw.expect_log("server.max_connections (21) reached").await;
    // A request still fits next to them once some are gone: never EMFILE.
    held.truncate(8);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("content-type", "application/json")
            .body(chat_body())
            .send()
            .await;
        if r.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after the flood: {r:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = gw.log();
    assert!(!log.contains("Too many open files"), "{log}");
}

fn check(config: &str) -> (bool, String, String) {
    let dir = TempDir::new();
    let path = dir.0.join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run apiproxy -t");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_gateway_without_client_keys_stays_on_loopback_unless_opened() {
    // The shipped config: no keys, loopback, valid.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/apiproxy.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c", shipped])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));

    let (ok, _, err) = check("server:\n  listen: 0.0.0.0:18080\n");
    assert!(!ok);
    assert!(
        err.contains("server.listen[0]: 0.0.0.0:18080") && err.contains("auth.open: true"),
        "{err}"
    );
    let (ok, out, err) = check("server:\n  listen: 0.0.0.0:18080\nauth:\n  open: true\n");
    assert!(ok, "{err}");
    assert!(out.contains("config ok"));
    assert!(
        err.contains("warning: auth.open: no client keys and listening on 0.0.0.0:18080"),
        "{err}"
    );
    let (ok, _, err) =
        check("server:\n  listen: 0.0.0.0:18080\nauth:\n  keys: [{ name: a, key: secret-a }]\n");
    assert!(ok, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[tokio::test]
async fn the_daemon_writes_its_pid_into_a_private_directory_it_creates() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let dir = TempDir::new();
    let run = dir.0.join("run").join("apiproxy");
    let port = free_port();
    let config = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  pid_file: {r}/apiproxy.pid\n  upgrade_sock: {r}/upgrade.sock\n  grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n  error_log: {d}/error.log\n{}",
        providers(&up),
        r = run.display(),
        d = dir.0.display()
    );
    let path = dir.0.join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let pid_file = run.join("apiproxy.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid file at {pid_file:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
    // Stop the daemon before asserting, so a failure leaves nothing behind.
    let answered = async {
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/health")).await {
                return r
                    .headers()
                    .get("x-apiproxy-pid")
                    .map(|v| v.to_str().unwrap().to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
    .await;
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert_eq!(mode, 0o700, "runtime directory mode {mode:o}");
    assert_eq!(
        answered,
        Some(pid.to_string()),
        "the pid file names the process that answers"
    );
}

/// Sends `head` (announcing a body far longer than what follows), then
/// trickles a body byte every 100 ms while reading the answer; returns the
/// answer, what closed the connection, and how long after the head it
/// closed. Panics when the connection stays open past `limit`.
async fn early_answer_while_trickling(
    gw: &Gateway,
    head: &str,
    limit: Duration,
) -> (String, Duration) {
    let (mut rd, mut wr) = connect(gw).await.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(limit, read).await.is_ok();
    let waited = t.elapsed();
    trickle.abort();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        closed,
        "the connection was still open {limit:?} after an early answer while the body trickled: {text:?}"
    );
    (text, waited)
}

/// Every answer that goes out before the request body was read whole (401,
/// 403, 404, 405, 413) closes the connection within a short, fixed bound
/// while the client keeps trickling its body: a client never keeps a slot
/// by sending a body nobody will read. (The gateway answers 429 only after
/// it has read the body: there is nothing left to trickle then.)
#[tokio::test]
async fn early_answers_close_the_connection_while_the_body_still_trickles() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_server(
        "max_body_bytes: 100000\nbody_timeout_ms: 60000",
        &format!(
            "auth:\n  keys: [{{ name: c, key: client-key }}]\n  admin_keys: [admin-key-0123456789abcdef0123456789]\n{}",
            providers(&up)
        ),
    )
    .await;
    let cases = [
        (
            401,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 90000\r\n\r\n{",
        ),
        (
            403,
            "POST /routing/decide HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer client-key\r\nContent-Type: application/json\r\nContent-Length: 90000\r\n\r\n{",
        ),
        (
            404,
            "POST /v1/nowhere HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer client-key\r\nContent-Length: 90000\r\n\r\n{",
        ),
        (
            405,
            "PUT /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer client-key\r\nContent-Length: 90000\r\n\r\n{",
        ),
        (
            413,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer client-key\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{",
        ),
    ];
    let runs = cases.iter().map(|(status, head)| {
        let gw = &gw;
        async move {
            let (text, waited) =
                early_answer_while_trickling(gw, head, Duration::from_secs(20)).await;
            (*status, text, waited)
        }
    });
    for (status, text, waited) in futures_util::future::join_all(runs).await {
        assert_eq!(status_of(text.as_bytes()), status, "{text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{status}: {text}"
        );
        // The answer is readable (not lost to a reset), and the close
        // follows within the 2 s linger, with room for a loaded machine.
        assert!(text.contains("\"error\""), "{status}: {text}");
        assert!(
            waited < Duration::from_secs(6),
            "{status}: closed {waited:?} after the head"
        );
    }
    assert_eq!(posts(&up), 0, "a request with an unread body went upstream");
}

/// Writes `body` after `head` in `chunk`-byte pieces every `every`, then
/// reads the answer until the connection closes (at most `limit`).
/// Returns the answer and when it was complete, from the head.
async fn trickle_upload(
    gw: &Gateway,
    head: &str,
    body: &[u8],
    chunk: usize,
    every: Duration,
    limit: Duration,
) -> (String, Duration) {
    let (mut rd, mut wr) = connect(gw).await.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let pieces: Vec<Vec<u8>> = body.chunks(chunk).map(<[u8]>::to_vec).collect();
    let writer = tokio::spawn(async move {
        for p in pieces {
            tokio::time::sleep(every).await;
            if wr.write_all(&p).await.is_err() {
                return;
            }
        }
        // Keep the write side open: the answer decides the close.
        std::future::pending::<()>().await;
    });
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            return;
                        }
                    }
                }
            }
        }
    };
    let done = tokio::time::timeout(limit, read).await.is_ok();
    let waited = t.elapsed();
    writer.abort();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(done, "no answer within {limit:?}: {text:?}");
    (text, waited)
}

/// A body sent a little at a time, each piece well inside
/// `body_timeout_ms`, but slower on average than
/// `server.min_body_rate_bytes_per_s` is cut with 408 once its grace (10 s)
/// and what it sent are used up; an upload above the rate, slow as it is,
/// is served whole.
#[tokio::test]
async fn a_body_slower_than_the_minimum_rate_is_cut_and_a_slow_upload_above_it_passes() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_server(
        "body_timeout_ms: 60000\nmin_body_rate_bytes_per_s: 1000",
        &providers(&up),
    )
    .await;
    // 100 bytes/s: allowed 10 s + 1 ms a byte, cut near 11 s.
    let crawl = async {
        let body = vec![b' '; 100_000];
        trickle_upload(
            &gw,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
            &body,
            50,
            Duration::from_millis(500),
            Duration::from_secs(40),
        )
        .await
    };
    // 3000 bytes/s for ~14 s, past the grace: served.
    let slow = async {
        let body =
            json!({"model": "p/m", "messages": [{"role": "user", "content": "x".repeat(42_000)}]})
                .to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        trickle_upload(
            &gw,
            &head,
            body.as_bytes(),
            1500,
            Duration::from_millis(500),
            Duration::from_secs(60),
        )
        .await
    };
    let ((cut, cut_after), (served, served_after)) = tokio::join!(crawl, slow);
    assert_eq!(status_of(cut.as_bytes()), 408, "{cut}");
    assert!(cut.contains("min_body_rate_bytes_per_s"), "{cut}");
    assert!(
        cut_after >= Duration::from_secs(10) && cut_after < Duration::from_secs(30),
        "cut after {cut_after:?}"
    );
    assert_eq!(status_of(served.as_bytes()), 200, "{served}");
    assert!(
        served_after >= Duration::from_secs(12),
        "the slow upload took only {served_after:?}"
    );
    let got = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json())
        .collect::<Vec<_>>();
    assert_eq!(got.len(), 1, "only the slow upload goes upstream");
    assert_eq!(
        got[0]["messages"][0]["content"].as_str().map(str::len),
        Some(42_000)
    );
}
