//! Event streams over HTTP/2 (the TLS listener), through the real binary
//! with a plain h2 client: one SSE stream arrives event by event, in full,
//! framed by h2 alone; several streams at once share one connection, each
//! getting its own answer.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2_client::h2_connect;
use common::*;
use serde_json::{json, Value};

/// A gateway with a TLS listener in front of `up` (provider `p`), and the
/// TLS port.
async fn tls_gateway(up: &MockProvider, dir: &TempDir) -> (Gateway, u16) {
    let (cert, key) = self_signed(&dir.0, "h2", "localhost");
    let tls_port = free_port();
    let gw = Gateway::start_with_server(
        &format!("tls: {{ listen: \"127.0.0.1:{tls_port}\", cert: \"{cert}\", key: \"{key}\" }}"),
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\", models: [m] }}\n",
            up.base_url()
        ),
    )
    .await;
    wait_listening(tls_port).await;
    (gw, tls_port)
}

/// What an h2 stream answered: status, content type, and the DATA frames
/// as they came, each with when it came.
struct H2Answer {
    status: u16,
    content_type: String,
    has_transfer_encoding: bool,
    frames: Vec<(Instant, Bytes)>,
}

impl H2Answer {
    fn body(&self) -> String {
        self.frames
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).to_string())
            .collect()
    }
}

/// POSTs a streaming chat request for `text` on `send` and reads the whole
/// answer, frame by frame.
async fn h2_stream(send: &h2::client::SendRequest<Bytes>, text: &str) -> H2Answer {
    let mut send = send.clone().ready().await.expect("h2 ready");
    let body =
        json!({"model": "p/m", "stream": true, "messages": [{"role": "user", "content": text}]})
            .to_string();
    let req = http::Request::post("https://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let (resp, mut out) = send.send_request(req, false).expect("send request");
    out.send_data(Bytes::from(body), true).expect("send body");
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("an answer head within WAIT")
        .expect("h2 response");
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header("content-type");
    let has_transfer_encoding = resp.headers().contains_key("transfer-encoding");
    let mut data = resp.into_body();
    let mut frames = Vec::new();
    let deadline = Instant::now() + WAIT;
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), data.data())
        .await
        .expect("the stream ended within WAIT")
    {
        let chunk = chunk.expect("a DATA frame");
        let _ = data.flow_control().release_capacity(chunk.len());
        frames.push((Instant::now(), chunk));
    }
    H2Answer {
        status,
        content_type,
        has_transfer_encoding,
        frames,
    }
}

/// The deltas' text of an OpenAI chat stream, and whether `[DONE]` ends it.
fn deltas(body: &str) -> (String, bool) {
    let data = sse_data(body);
    let text = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    (text, data.last().map(String::as_str) == Some("[DONE]"))
}

#[tokio::test]
async fn an_sse_stream_over_h2_arrives_event_by_event() {
    // Five words, 400 ms apart: 2 s from the first to the last.
    let words = ["w0 ", "w1 ", "w2 ", "w3 ", "w4"];
    let up = MockProvider::always(
        Reply::sse(&openai_stream("m", &words)).pace(Duration::from_millis(400)),
    )
    .await;
    let dir = TempDir::new();
    let (_gw, tls_port) = tls_gateway(&up, &dir).await;
    let send = h2_connect(tls_port).await;
    let a = h2_stream(&send, "hi").await;
    assert_eq!(a.status, 200, "{}", a.body());
    assert_eq!(a.content_type, "text/event-stream");
    assert!(!a.has_transfer_encoding, "h2 frames the body itself");
    let body = a.body();
    let (text, done) = deltas(&body);
    assert_eq!(text, words.concat(), "every event, in order: {body}");
    assert!(done, "[DONE] ends the stream: {body}");
    // Relayed as it came: the first DATA frame holds the first events only
    // (the upstream sent the rest over the next 2 s), and the frames are
    // spread over that time.
    let first = String::from_utf8_lossy(&a.frames[0].1).to_string();
    assert!(
        !first.contains("[DONE]") && !first.contains("w4"),
        "{first}"
    );
    assert!(a.frames.len() >= 5, "{} DATA frames", a.frames.len());
    let spread = a.frames.last().expect("frames").0 - a.frames[0].0;
    assert!(
        spread >= Duration::from_millis(1200),
        "all frames within {spread:?}"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn concurrent_h2_streams_share_one_connection() {
    // Each stream echoes its question back word by word, slowly enough
    // (about 2 s) that all are open at once.
    let up = MockProvider::start(|req, _| {
        let asked = req.json()["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let words: Vec<String> = asked.split(' ').map(|w| format!("{w}.")).collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        Reply::sse(&openai_stream("m", &refs)).pace(Duration::from_millis(500))
    })
    .await;
    let dir = TempDir::new();
    // One h2 connection (one `SendRequest`) carries them all.
    let (_gw, tls_port) = tls_gateway(&up, &dir).await;
    let send = h2_connect(tls_port).await;
    let questions: Vec<String> = (0..6).map(|i| format!("s{i}a s{i}b s{i}c")).collect();
    let answers =
        futures_util::future::join_all(questions.iter().map(|q| h2_stream(&send, q))).await;
    for (q, a) in questions.iter().zip(&answers) {
        assert_eq!(a.status, 200, "{q}: {}", a.body());
        let (text, done) = deltas(&a.body());
        let want: String = q.split(' ').map(|w| format!("{w}.")).collect();
        assert_eq!(text, want, "{q}: {}", a.body());
        assert!(done, "{q}: {}", a.body());
    }
    // They ran at once: the upstream had every request before any stream
    // ended (each takes about 2 s).
    let first_end = answers
        .iter()
        .map(|a| a.frames.last().expect("frames").0)
        .min()
        .expect("answers");
    let requests = up.requests.lock().unwrap().clone();
    let generations: Vec<&Recorded> = requests.iter().filter(|r| !r.is_model_listing()).collect();
    assert_eq!(generations.len(), questions.len());
    assert!(
        generations.iter().all(|r| r.at < first_end),
        "a stream ended before every request had reached the upstream: streams were not concurrent"
    );
}
