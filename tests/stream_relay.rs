//! Answers relayed through the real binary: the same upstream answer is
//! counted the same on every path (same format or translated, JSON or
//! stream), and same-format streams are passed through faithfully (an
//! event of several `data:` lines stays one event, invalid JSON ends the
//! stream with one error event, a compressed or mistyped answer fails over).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The upstream answers of one provider kind, each reporting the same usage.
struct Answers {
    kind: &'static str,
    json: String,
    sse: Vec<String>,
    /// What the gateway must count: (input, output).
    tokens: (u64, u64),
}

/// OpenAI(-compatible) with DeepSeek's cache-hit count.
fn deepseek() -> Answers {
    let usage = json!({"prompt_tokens": 18, "completion_tokens": 4, "total_tokens": 22,
        "prompt_cache_hit_tokens": 12, "prompt_cache_miss_tokens": 6});
    Answers {
        kind: "openai",
        json: json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "deepseek-chat",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": usage})
        .to_string(),
        sse: vec![
            format!("data: {}", json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": null}]})),
            format!("data: {}", json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
            format!("data: {}", json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat",
                "choices": [], "usage": usage})),
            "data: [DONE]".into(),
        ],
        tokens: (18, 4),
    }
}

/// Gemini with `toolUsePromptTokenCount` and thoughts.
fn gemini() -> Answers {
    let usage = json!({"promptTokenCount": 10, "toolUsePromptTokenCount": 7,
        "candidatesTokenCount": 3, "thoughtsTokenCount": 2, "totalTokenCount": 22});
    let done = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
        "finishReason": "STOP", "index": 0}], "usageMetadata": usage, "modelVersion": "gemini-2.5-pro"});
    Answers {
        kind: "gemini",
        json: done.to_string(),
        sse: vec![
            format!(
                "data: {}",
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "h"}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 10, "toolUsePromptTokenCount": 7}, "modelVersion": "gemini-2.5-pro"})
            ),
            format!("data: {done}"),
        ],
        tokens: (17, 5),
    }
}

/// Anthropic with cache reads and writes, its usage split over two events.
fn anthropic() -> Answers {
    Answers {
        kind: "anthropic",
        json: json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 42}})
        .to_string(),
        sse: vec![
            format!("event: message_start\ndata: {}", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                "role": "assistant", "model": "claude-x", "content": [],
                "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 1}}})),
            format!("event: content_block_start\ndata: {}", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            format!("event: content_block_delta\ndata: {}", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})),
            format!("event: content_block_stop\ndata: {}", json!({"type": "content_block_stop", "index": 0})),
            format!("event: message_delta\ndata: {}", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}})),
            format!("event: message_stop\ndata: {}", json!({"type": "message_stop"})),
        ],
        tokens: (125, 42),
    }
}

/// A client request of format `client` for `model`.
fn request(gw: &Gateway, client: &str, model: &str, stream: bool) -> reqwest::RequestBuilder {
    let c = client_of();
    let msgs = json!([{"role": "user", "content": "hi"}]);
    match client {
        "openai" => c
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": model, "messages": msgs, "stream": stream})),
        "anthropic" => c
            .post(format!("{}/v1/messages", gw.url()))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "max_tokens": 64, "messages": msgs, "stream": stream})),
        _ => {
            let method = if stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            c.post(format!("{}/v1beta/models/{model}:{method}", gw.url()))
                .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        }
    }
}

fn client_of() -> reqwest::Client {
    client()
}

/// The value of `apiproxy_tokens_total` for a provider and direction.
fn tokens_in(metrics: &str, provider: &str, direction: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("apiproxy_tokens_total{"))
        .filter(|l| l.contains(&format!("provider=\"{provider}\"")))
        .filter(|l| l.contains(&format!("direction=\"{direction}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the provider's token counters reach `want` (they are added
/// after the answer, in the logging phase).
async fn wait_tokens(gw: &Gateway, provider: &str, want: (u64, u64)) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = gw.metrics().await;
        let got = (
            tokens_in(&m, provider, "input"),
            tokens_in(&m, provider, "output"),
        );
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_path_counts_the_same_usage_for_the_same_answer() {
    for answers in [deepseek(), gemini(), anthropic()] {
        let (json_body, sse) = (answers.json.clone(), answers.sse.clone());
        let kind = answers.kind;
        let mock = MockProvider::start(move |rec, _| {
            let stream = rec.path.contains("streamGenerateContent")
                || rec.json().get("stream").and_then(Value::as_bool) == Some(true);
            if stream {
                Reply::sse(&sse)
            } else {
                Reply::json(200, json_body.clone())
            }
        })
        .await;
        let gw = Gateway::start(&format!(
            "providers:\n  - {{ id: up, kind: {kind}, base_url: \"{}\", api_keys: [\"k-up\"], models: [m-up] }}\n",
            mock.base_url()
        ))
        .await;
        let mut total = (0, 0);
        // The provider's own format (passthrough) and the two others
        // (translated), each as JSON and as a stream.
        for client in ["openai", "anthropic", "gemini"] {
            for stream in [false, true] {
                let r = request(&gw, client, "up/m-up", stream)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let body = r.text().await.unwrap();
                assert_eq!(status, 200, "{kind} → {client} stream={stream}: {body}");
                assert!(
                    body.contains("hi"),
                    "{kind} → {client} stream={stream}: {body}"
                );
                total = (total.0 + answers.tokens.0, total.1 + answers.tokens.1);
                assert_eq!(
                    wait_tokens(&gw, "up", total).await,
                    total,
                    "{kind} upstream, {client} client, stream={stream}: counted differently"
                );
            }
        }
    }
}

#[tokio::test]
async fn same_format_streams_are_relayed_faithfully() {
    // An Anthropic event whose JSON is split over several `data:` lines.
    let mut events = anthropic().sse;
    events[2] = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\ndata: \"index\":0,\ndata: \"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}".into();
    let multi = MockProvider::always(Reply::sse(&events)).await;
    // A chat stream whose second event is not JSON.
    let mut bad = openai_stream("gpt-up", &["Hel", "lo"]);
    bad[2] = "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"garbage".into();
    let broken = MockProvider::always(Reply::sse(&bad).pace(Duration::from_millis(50))).await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: ant, kind: anthropic, base_url: \"{}\", api_keys: [\"k1\"], models: [claude-x] }}\n  - {{ id: oai, kind: openai, base_url: \"{}\", api_keys: [\"k2\"], models: [gpt-up] }}\nmodels:\n  - name: claude-fast\n    upstreams: [{{ provider: ant, model: claude-x }}]\n",
        multi.base_url(),
        broken.base_url()
    ))
    .await;

    let r = request(&gw, "anthropic", "claude-fast", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let mut parser = apiproxy_translate::SseParser::default();
    let mut got = Vec::new();
    parser.feed(body.as_bytes(), &mut got).unwrap();
    parser.finish(&mut got);
    let names: Vec<_> = got
        .iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{body}"
    );
    let delta: Value = serde_json::from_str(&got[2].data).expect("one event, one JSON document");
    assert_eq!(delta["delta"]["text"], "hi");
    let start: Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(
        start["message"]["model"], "claude-fast",
        "logical name shown: {body}"
    );
    assert_eq!(wait_tokens(&gw, "ant", (125, 42)).await, (125, 42));

    // Invalid JSON after the stream started: what came before, then one
    // error event in the client's format and `[DONE]`; no garbage.
    let r = request(&gw, "openai", "oai/gpt-up", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains("garbage"), "{body}");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let errors: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["error"]["type"], "upstream_error", "{body}");
    assert!(data[0].contains("\"role\":\"assistant\""), "{body}");
}

#[tokio::test]
async fn compressed_or_mistyped_answers_fail_over_cleanly() {
    let gz = MockProvider::always(
        Reply::sse(&openai_stream("gpt-up", &["x"])).header("content-encoding", "gzip"),
    )
    .await;
    let html = MockProvider::always(Reply {
        content_type: "text/html".into(),
        ..Reply::json(200, "<html>maintenance</html>")
    })
    .await;
    let good = MockProvider::always(Reply::sse(&openai_stream("gpt-up", &["fine"]))).await;
    let good_json =
        MockProvider::always(Reply::json(200, openai_completion("gpt-up", "fine"))).await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: gz, kind: openai, base_url: \"{}\", api_keys: [\"k1\"], models: [m] }}\n  - {{ id: html, kind: openai, base_url: \"{}\", api_keys: [\"k2\"], models: [m] }}\n  - {{ id: good, kind: openai, base_url: \"{}\", api_keys: [\"k3\"], models: [m] }}\n  - {{ id: goodjson, kind: openai, base_url: \"{}\", api_keys: [\"k4\"], models: [m] }}\n",
        gz.base_url(),
        html.base_url(),
        good.base_url(),
        good_json.base_url()
    ))
    .await;
    for (first, then, stream) in [
        ("gz", "good", true),
        ("html", "good", true),
        ("gz", "goodjson", false),
        ("html", "goodjson", false),
    ] {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("x-debug", "true")
            .json(&json!({"model": format!("{first}/m"), "models": [format!("{then}/m")], "stream": stream, "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{first} → {then}");
        assert_eq!(r.headers()["x-debug-provider"], then, "{first} → {then}");
        let body = r.text().await.unwrap();
        assert!(body.contains("fine"), "{body}");
    }
    // Alone, a gzip answer is a clean 502 in the client's shape.
    let r = request(&gw, "anthropic", "gz/m", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content-encoding"),
        "{v}"
    );
}

/// The token counter of `direction`.
fn tokens_counter(metrics: &str, direction: &str) -> f64 {
    prom::sum(
        metrics,
        "apiproxy_tokens_total",
        &[("direction", direction)],
    )
}

#[tokio::test]
async fn huge_token_counts_saturate_on_every_path() {
    let max = u64::MAX;
    // Half of u64's range: one answer's total saturates (input + output), and
    // two answers' output would wrap a counter to 0.
    let half = 1u64 << 63;
    let usage = json!({"input_tokens": max, "cache_read_input_tokens": max, "cache_creation_input_tokens": 9, "output_tokens": half});
    let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "usage": usage})
    .to_string();
    let events = vec![
        format!(
            "event: message_start\ndata: {}",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null, "usage": usage}})
        ),
        format!(
            "event: content_block_start\ndata: {}",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        ),
        format!(
            "event: content_block_delta\ndata: {}",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})
        ),
        format!(
            "event: content_block_stop\ndata: {}",
            json!({"type": "content_block_stop", "index": 0})
        ),
        format!(
            "event: message_delta\ndata: {}",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": max}})
        ),
        format!(
            "event: message_stop\ndata: {}",
            json!({"type": "message_stop"})
        ),
    ];
    let mock = MockProvider::start(move |rec, _| {
        if rec.json()["stream"] == true {
            Reply::sse(&events)
        } else {
            Reply::json(200, body.clone())
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: ant, kind: anthropic, base_url: \"{}\", api_keys: [\"k\"], models: [claude-x] }}\n",
        mock.base_url()
    ))
    .await;
    // Same format and translated, whole and streamed: every path answers
    // and reports the saturated total, never a wrapped one.
    let v: Value = request(&gw, "anthropic", "ant/claude-x", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["output_tokens"], half, "{v}");
    let v: Value = request(&gw, "openai", "ant/claude-x", false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], max, "{v}");
    assert_eq!(v["usage"]["total_tokens"], max, "{v}");
    // Two answers of 2^63 output tokens: the counter stops at u64::MAX (a
    // wrapping one would read 0).
    let m = gw.metrics_when("apiproxy_requests_total", &[], 2.0).await;
    assert_eq!(tokens_counter(&m, "output"), max as f64, "{m}");
    let r = request(&gw, "anthropic", "ant/claude-x", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("\"output_tokens\":{half}")),
        "{text}"
    );
    let mut r = request(&gw, "openai", "ant/claude-x", true);
    r = r.json(&json!({"model": "ant/claude-x", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}));
    let text = r.send().await.unwrap().text().await.unwrap();
    let last_usage = sse_data(&text)
        .iter()
        .rev()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .unwrap_or_else(|| panic!("no usage chunk: {text}"));
    assert_eq!(last_usage["usage"]["prompt_tokens"], max, "{text}");
    assert_eq!(last_usage["usage"]["total_tokens"], max, "{text}");
    // Four answers: the counters stay at u64::MAX.
    let m = gw.metrics_when("apiproxy_requests_total", &[], 4.0).await;
    assert_eq!(tokens_counter(&m, "input"), max as f64, "{m}");
    assert_eq!(tokens_counter(&m, "output"), max as f64, "{m}");
    assert!(
        gw.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        gw.log()
    );
}

/// A streamed answer leaves its HTTP/1.1 connection open for the next
/// request: its body is chunked, so the client knows where it ends. (It was
/// framed by closing the connection while its header said `keep-alive`, so
/// every stream cost a client a new connection.) An HTTP/1.0 client, which
/// has no chunks, still gets its stream, ended by the close.
#[tokio::test]
async fn a_stream_keeps_its_connection_alive() {
    let up = MockProvider::always(Reply::sse(&openai_stream("m", &["one", " two"]))).await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\", models: [m] }}\n",
        up.base_url()
    ))
    .await;
    let mut conn = common::raw_http::KeptAlive::new(gw.port);
    let ask =
        json!({"model": "p/m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for turn in 0..3 {
        let a = conn
            .post(&ask)
            .await
            .unwrap_or_else(|e| panic!("turn {turn}: {e}"));
        assert_eq!(a.status, 200, "turn {turn}: {}", a.head);
        assert_eq!(a.header("transfer-encoding"), Some("chunked"), "{}", a.head);
        assert_eq!(a.header("connection"), Some("keep-alive"), "{}", a.head);
        let body = String::from_utf8_lossy(&a.body).to_string();
        let text: String = sse_data(&body)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "one two", "turn {turn}: {body}");
        assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
        assert!(conn.is_open(), "turn {turn}");
    }
    assert_eq!(up.count(), 3);

    // HTTP/1.0: no chunks; the answer ends with the connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let body = ask.to_string();
    sock.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut all))
        .await
        .expect("the HTTP/1.0 stream ended with its connection")
        .expect("read");
    let all = String::from_utf8_lossy(&all).to_string();
    let (head, rest) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(head.contains(" 200 "), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
}
