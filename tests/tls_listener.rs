//! The TLS client listener and HTTP/2, through the real binary: HTTP/2
//! over TLS and the certificate re-read on SIGHUP, the same client limits
//! as the plain listener (header, body and keep-alive timeouts, header
//! size, one connection cap for both), handshakes and h2 prefaces held to
//! the header timeout, h2 connections' share of the descriptor budget, and
//! a reachable TLS listener needing client keys.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The common name of the certificate the listener shows, and the protocol
/// ALPN chose when offered h2 and http/1.1.
fn handshake(port: u16) -> (String, String) {
    let s = tls_connect(port, b"\x02h2\x08http/1.1");
    let cert = s.ssl().peer_certificate().expect("a certificate");
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        .unwrap_or_default();
    let alpn = s
        .ssl()
        .selected_alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    (cn, alpn)
}

// Blocking calls (curl, the handshake) run while the mock serves: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_http2_and_rereads_its_certificate_on_sighup() {
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir.0, "first", "first.test");
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "over h2"))).await;
    let tls_port = free_port();
    let gw = Gateway::start_with_server(
        &format!("tls: {{ listen: \"127.0.0.1:{tls_port}\", cert: \"{cert}\", key: \"{key}\" }}"),
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
            up.base_url()
        ),
    )
    .await;
    wait_listening(tls_port).await;
    assert_eq!(handshake(tls_port), ("first.test".into(), "h2".into()));

    // An HTTP/2 client (curl with nghttp2) gets its answer over h2.
    let out = Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(["-H", "content-type: application/json", "-d"])
        .arg(json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .arg(format!("https://127.0.0.1:{tls_port}/v1/chat/completions"))
        .output()
        .expect("curl (scripts/bootstrap.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2 200"), "{text}\n{}", gw.log());
    assert!(text.contains("over h2"), "{text}");

    // New files, SIGHUP: new handshakes get the new certificate.
    let (cert2, key2) = self_signed(&dir.0, "second", "second.test");
    std::fs::rename(&cert2, &cert).unwrap();
    std::fs::rename(&key2, &key).unwrap();
    let pid = gw.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handshake(tls_port).0 != "second.test" {
        assert!(
            std::time::Instant::now() < deadline,
            "certificate not reloaded:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken key file is refused; the running certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("tls certificate reload rejected") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handshake(tls_port).0, "second.test");
}

/// A TLS connection to the listener offering only `alpn` (wire format).
fn tls_connect(port: u16, alpn: &[u8]) -> openssl::ssl::SslStream<std::net::TcpStream> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(alpn).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    b.build().connect("localhost", tcp).expect("TLS handshake")
}

/// Everything read until the peer closes (or the read timeout).
fn read_to_close(s: &mut impl std::io::Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// The settings of the first SETTINGS frame an h2 server sends.
fn h2_server_settings(s: &mut impl std::io::Read) -> Vec<(u16, u32)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

/// A gateway with a TLS listener beside its plain one, tight client
/// limits on both (`max_connections: 2` shared), and a provider that
/// counts what reaches it. The directory holds the certificate.
async fn tls_edge() -> (TempDir, Gateway, MockProvider, u16) {
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir.0, "edge", "edge.test");
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let tls_port = free_port();
    let gw = Gateway::start_with_server(
        &format!(
            "tls: {{ listen: \"127.0.0.1:{tls_port}\", cert: \"{cert}\", key: \"{key}\" }}\nheader_timeout_ms: 3000\nkeepalive_timeout_ms: 1000\nmax_header_bytes: 2048\nbody_timeout_ms: 1000\nh2_max_concurrent_streams: 7\nmax_connections: 2"
        ),
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
            up.base_url()
        ),
    )
    .await;
    wait_listening(tls_port).await;
    (dir, gw, up, tls_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_has_the_client_limits_of_the_plain_one() {
    use std::io::Write;
    let (_dir, gw, up, tls_port) = tls_edge().await;
    // A stream whose body stops arriving is answered 408 at the body
    // timeout, in the client's error shape, and nothing goes upstream.
    let send = common::h2_client::h2_connect(tls_port).await;
    let mut send = send.ready().await.expect("h2 ready");
    let req = http::Request::post("https://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let t = std::time::Instant::now();
    let (resp, mut body) = send.send_request(req, false).expect("send request");
    body.send_data(bytes::Bytes::from_static(b"{\"model\":"), false)
        .expect("part of a body");
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("an answer to the stalled stream")
        .expect("h2 response");
    let waited = t.elapsed();
    assert_eq!(resp.status(), 408, "answered after {waited:?}");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(8),
        "answered after {waited:?}"
    );
    let mut data = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, data.data())
        .await
        .expect("the 408's body")
    {
        text.extend_from_slice(&chunk.expect("DATA"));
    }
    let v: Value = serde_json::from_slice(&text).expect("a JSON error");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(up.count(), 0, "a half body went upstream");
    drop((send, body, data));

    let log = gw.log();
    let checks = tokio::task::spawn_blocking(move || {
        // HTTP/1 over TLS: a head that never ends gets 408 at the header
        // timeout, one past max_header_bytes 431.
        let mut s = tls_connect(tls_port, b"\x08http/1.1");
        let t = std::time::Instant::now();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
        let got = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
        assert!(
            got.starts_with("HTTP/1.1 408"),
            "slow head over TLS: {got:?}"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(2500),
            "{:?}",
            t.elapsed()
        );
        drop(s);
        let mut s = tls_connect(tls_port, b"\x08http/1.1");
        let big = format!(
            "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(4096)
        );
        s.write_all(big.as_bytes()).unwrap();
        let got = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
        assert!(
            got.starts_with("HTTP/1.1 431"),
            "big head over TLS: {got:?}"
        );
        drop(s);

        // HTTP/2: the stream and header caps are announced; an idle
        // connection is closed at the keep-alive timeout.
        let mut s = tls_connect(tls_port, b"\x02h2");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .unwrap();
        let settings = h2_server_settings(&mut s);
        assert!(
            settings.contains(&(0x3, 7)),
            "MAX_CONCURRENT_STREAMS: {settings:?}"
        );
        assert!(
            settings.contains(&(0x6, 2048)),
            "MAX_HEADER_LIST_SIZE: {settings:?}"
        );
        s.write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
            .unwrap();
        let t = std::time::Instant::now();
        read_to_close(&mut s);
        let idle = t.elapsed();
        assert!(
            idle >= Duration::from_millis(800) && idle < Duration::from_secs(15),
            "idle h2 connection closed after {idle:?}"
        );
        drop(s);
    })
    .await;
    if let Err(e) = checks {
        panic!("{e}\n{log}\n{}", gw.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cap_counts_both_listeners() {
    let (_dir, gw, up, tls_port) = tls_edge().await;
    // One cap for both listeners: a TLS connection and two plain ones are
    // one too many for max_connections 2 (with a cap per listener the
    // plain listener would hold both of its own). Which of the three is
    // refused depends on task order; that one is, not. They stay open
    // until the refusal is logged.
    let plain = gw.url().trim_start_matches("http://").to_owned();
    // Silent connections: each holds its slot for the header timeout (3 s).
    let held = tokio::task::spawn_blocking(move || {
        let tls = tls_connect(tls_port, b"\x08http/1.1");
        let conns: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(&plain).unwrap())
            .collect();
        (tls, conns)
    })
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            gw.log().contains("server.max_connections (2) reached")
        })
        .await,
        "the TLS connection did not count against max_connections:\n{}",
        gw.log()
    );
    drop(held);
    assert_eq!(up.count(), 0, "a half body went upstream");
}

#[test]
fn a_reachable_tls_listener_needs_client_keys() {
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir.0, "edge", "edge.test");
    let tls_port = free_port();
    // A TLS listener reachable from other machines needs client keys, as
    // the plain one does.
    let file = dir.0.join("open.yaml");
    std::fs::write(
        &file,
        format!(
            "server:\n  listen: 127.0.0.1:{}\n  tls: {{ listen: \"0.0.0.0:{tls_port}\", cert: \"{cert}\", key: \"{key}\" }}\nproviders: []\n",
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("server.tls.listen[0]"),
        "{err}"
    );
}

/// Invariant 3 on the TLS listener: a connection holds a slot and has the
/// header deadline from its accept, through the TLS handshake and the
/// HTTP/2 preface. A client that connects and never says hello is closed
/// at `header_timeout_ms` and counts in `max_connections` while it waits
/// (Pingora's own handshake ran before any slot, for a fixed 60 s); an h2
/// connection that never sends its preface is closed at the same deadline
/// (Pingora waited for it without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_and_h2_prefaces_hold_a_slot_and_end_at_the_header_timeout() {
    use std::io::{Read, Write};
    use std::time::Instant;
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir.0, "edge", "edge.test");
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let tls_port = free_port();
    let gw = Gateway::start_with_server(
        &format!(
            "tls: {{ listen: \"127.0.0.1:{tls_port}\", cert: \"{cert}\", key: \"{key}\" }}\nheader_timeout_ms: 3000\nkeepalive_timeout_ms: 30000\nmax_connections: 1"
        ),
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
            up.base_url()
        ),
    )
    .await;
    wait_listening(tls_port).await;
    let plain = gw.url().trim_start_matches("http://").to_owned();
    let checks = tokio::task::spawn_blocking(move || {
        // The slot is free (wait_ready's connections are gone) once a
        // request on a connection the gateway closes itself is served: the
        // slot comes back before the client sees the close.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut c = std::net::TcpStream::connect(&plain).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c
                .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            if String::from_utf8_lossy(&read_to_close(&mut c)).contains(" 200 ") {
                break;
            }
            assert!(Instant::now() < deadline, "the only slot never came free");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A TCP connection to the TLS port that never sends a ClientHello
        // takes the only slot. (Tried again while a connection just served
        // is still giving its slot back: then it is refused, closed at once.)
        let (mut silent, t) = loop {
            let mut silent = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
            silent
                .set_read_timeout(Some(Duration::from_millis(800)))
                .unwrap();
            let t = Instant::now();
            let mut buf = [0u8; 64];
            match silent.read(&mut buf) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break (silent, t)
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "every TLS connection was refused"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        silent
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // While it waits for a hello, a plain request is refused.
        let mut other = std::net::TcpStream::connect(&plain).unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = other.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let got = String::from_utf8_lossy(&read_to_close(&mut other)).into_owned();
        assert!(
            !got.contains(" 200 "),
            "a plain request was served while a TLS handshake held the only slot: {got:?}"
        );
        let mut buf = [0u8; 64];
        let end = silent.read(&mut buf);
        let waited = t.elapsed();
        assert!(
            matches!(end, Ok(0) | Err(_)) && waited < Duration::from_secs(10),
            "a silent TLS connection was held {waited:?}: {end:?}"
        );
        assert!(waited >= Duration::from_millis(2500), "{waited:?}");

        // A completed h2 handshake whose client never sends the preface.
        let t = Instant::now();
        let mut s = tls_connect(tls_port, b"\x02h2");
        let _ = read_to_close(&mut s);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(2500) && waited < Duration::from_secs(10),
            "an h2 connection without a preface was held {waited:?}"
        );

        // A prompt one is served as before.
        let mut s = tls_connect(tls_port, b"\x02h2");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .unwrap();
        let settings = h2_server_settings(&mut s);
        assert!(settings.iter().any(|(id, _)| *id == 0x3), "{settings:?}");
    })
    .await;
    if let Err(e) = checks {
        panic!("{e}\n{}", gw.log());
    }
    assert!(
        gw.log().contains("server.max_connections (1) reached"),
        "{}",
        gw.log()
    );
}

/// The descriptor budget counts what an HTTP/2 connection can open
/// upstream (`h2_max_concurrent_streams` requests, each with a hedge): under
/// a low open-file limit an h2 connection the budget cannot hold is closed
/// before its preface is read, HTTP/1 connections are still served next to
/// it, and the budget comes back when the first h2 connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_take_their_streams_share_of_the_descriptor_budget() {
    use std::io::Write;
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir.0, "edge", "edge.test");
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let tls_port = free_port();
    // 424 - 256 - 128 (the TLS listener's pool) = 40 descriptors: an h2
    // connection takes 1 + 10 x 2 = 21, an HTTP/1 one 3.
    let gw = Gateway::start_opts(
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
            up.base_url()
        ),
        &format!(
            "tls: {{ listen: \"127.0.0.1:{tls_port}\", cert: \"{cert}\", key: \"{key}\" }}\nh2_max_concurrent_streams: 10\nheader_timeout_ms: 5000"
        ),
        &[],
        Some(424),
    )
    .await;
    wait_listening(tls_port).await;
    let url = gw.url();
    let checks = tokio::task::spawn_blocking(move || {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let mut first = tls_connect(tls_port, b"\x02h2");
        first.write_all(preface).unwrap();
        let settings = h2_server_settings(&mut first);
        assert!(settings.contains(&(0x3, 10)), "{settings:?}");
        // A second one does not fit: closed without a SETTINGS frame.
        let mut second = tls_connect(tls_port, b"\x02h2");
        let _ = second.write_all(preface);
        let got = read_to_close(&mut second);
        assert!(got.is_empty(), "a second h2 connection was served: {got:?}");
        // HTTP/1 still fits next to the first.
        let mut h1 = tls_connect(tls_port, b"\x08http/1.1");
        h1.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let got = String::from_utf8_lossy(&read_to_close(&mut h1)).into_owned();
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{url}/health"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
        // The first one gone, its share comes back.
        drop(first);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let mut again = tls_connect(tls_port, b"\x02h2");
            let _ = again.write_all(preface);
            let mut head = [0u8; 9];
            if std::io::Read::read_exact(&mut again, &mut head).is_ok() && head[3] == 4 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the h2 share never came back"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await;
    if let Err(e) = checks {
        panic!("{e}\n{}", gw.log());
    }
    let log = gw.log();
    assert!(
        log.contains("the descriptor budget (40 for client connections"),
        "{log}"
    );
    assert!(!log.contains("Too many open files"), "{log}");
}
