//! The gateway core through the real binary: auth, the OpenAI endpoint
//! (passthrough), model resolution, failover before the first byte, bodies
//! of any size, errors in the client's shape, cancellation.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn provider(id: &str, mock: &MockProvider, extra: &str) -> String {
    format!(
        "  - {{ id: {id}, kind: openai, base_url: \"{}\", api_keys: [\"sk-{id}\"], models: [m-{id}]{extra} }}\n",
        mock.base_url()
    )
}

async fn post(gw: &Gateway, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn auth_keys_allow_lists_and_key_forwarding() {
    let up = MockProvider::always(Reply::json(200, openai_completion("gpt-x", "hi"))).await;
    let gw = Gateway::start(&format!(
        "auth:\n  keys:\n    - {{ name: alice, key: alice-key, models: [\"m-*\"] }}\n    - {{ name: bob, key_sha256: \"{}\" }}\nproviders:\n{}",
        "81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9", // sha256("bob")
        provider("p1", &up, "")
    ))
    .await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let body = json!({"model": "m-p1", "messages": [{"role": "user", "content": "hi"}]});

    let r = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "authentication_error");

    let r = client()
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The Anthropic endpoint answers 401 in Anthropic's shape.
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .json(&json!({"model": "m-p1", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "authentication_error");

    let r = client()
        .post(&url)
        .bearer_auth("alice-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-p1"),
        "the provider key goes upstream"
    );
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains("alice-key")),
        "the client key never goes upstream"
    );

    // x-api-key and ?key= work too; bob has no allow-list.
    let r = client()
        .post(&url)
        .header("x-api-key", "bob")
        .json(&json!({"model": "p1/other", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(format!("{url}?key=bob"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // alice may not use p1/other.
    let r = client()
        .post(&url)
        .bearer_auth("alice-key")
        .json(&json!({"model": "p1/other", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("p1/other"));

    // /health needs no key.
    assert_eq!(
        client()
            .get(format!("{}/health", gw.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn logical_model_passthrough_renames_the_model_and_sends_the_upstream_name() {
    let up = MockProvider::always(Reply::json(
        200,
        openai_completion("gpt-4o-mini-2024", "hello"),
    ))
    .await;
    let gw = Gateway::start(&format!(
        "providers:\n{}models:\n  - name: fast\n    upstreams: [{{ provider: p1, model: gpt-4o-mini }}]\n",
        provider("p1", &up, "")
    ))
    .await;
    let r = post(&gw, json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "fast");
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    let sent = up.last().json();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(
        sent["temperature"], 0.2,
        "other fields reach the upstream unchanged"
    );
    assert_eq!(up.last().path, "/v1/chat/completions");

    // A plain (non-logical) name keeps the upstream's model field.
    let r = post(&gw, json!({"model": "p1/gpt-4o-mini", "messages": []})).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4o-mini-2024");
}

#[tokio::test]
async fn streaming_passthrough_and_usage_chunk() {
    let up = MockProvider::always(Reply::sse(&openai_stream("gpt-up", &["Hel", "lo"]))).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}models:\n  - name: chat\n    upstreams: [{{ provider: p1, model: gpt-up }}]\n",
        provider("p1", &up, "")
    ))
    .await;
    let r = post(
        &gw,
        json!({"model": "chat", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    assert!(chunks.iter().all(|c| c["model"] == "chat"), "{body}");
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "usage chunk dropped when the client did not ask: {body}"
    );
    // The gateway asked the upstream for usage.
    assert_eq!(up.last().json()["stream_options"]["include_usage"], true);

    let r = post(
        &gw,
        json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true}, "messages": []}),
    )
    .await;
    let body = r.text().await.unwrap();
    assert!(body.contains("\"usage\":{\"prompt_tokens\":5"), "{body}");
}

#[tokio::test]
async fn failover_on_retryable_status_refused_port_and_timeout() {
    let bad = MockProvider::always(Reply::json(503, r#"{"error":{"message":"overloaded"}}"#)).await;
    let slow = MockProvider::always(
        Reply::json(200, openai_completion("slow", "late")).delay(Duration::from_secs(5)),
    )
    .await;
    let good = MockProvider::always(Reply::json(200, openai_completion("good", "ok"))).await;
    let refused = free_port();
    let gw = Gateway::start(&format!(
        "providers:\n{}{}  - {{ id: dead, kind: openai, base_url: \"http://127.0.0.1:{refused}\", connect_timeout_ms: 500 }}\n{}models:\n  - name: chain\n    upstreams: [{{ provider: bad, model: a, weight: 1000 }}]\n  - name: chain2\n    upstreams: [{{ provider: dead, model: b }}]\n  - name: chain3\n    upstreams: [{{ provider: slow, model: c }}]\n",
        provider("bad", &bad, ""),
        provider("slow", &slow, ", read_timeout_ms: 300"),
        provider("good", &good, ""),
    ))
    .await;

    // model + models fallback list: bad (503) → good.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-debug", "true")
        .json(&json!({"model": "chain", "models": ["chain2", "chain3", "good/x"], "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-debug-provider"], "good");
    assert_eq!(r.headers()["x-debug-model"], "x");
    assert_eq!(r.headers()["x-debug-attempts"], "4");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "ok");
    assert_eq!(bad.count(), 1);
    assert_eq!(slow.count(), 1);
    assert_eq!(good.count(), 1);

    // Streaming requests fail over the same way.
    let good_stream = MockProvider::always(Reply::sse(&openai_stream("g", &["ok"]))).await;
    drop(gw);
    let gw = Gateway::start(&format!(
        "providers:\n{}{}models:\n  - name: s\n    upstreams: [{{ provider: bad, model: a, weight: 1000 }}, {{ provider: gs, model: b, weight: 0.001 }}]\n",
        provider("bad", &bad, ""),
        provider("gs", &good_stream, ""),
    ))
    .await;
    let bad_before = bad.count();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-debug", "true")
        .json(&json!({"model": "s", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-debug-provider"], "gs");
    assert_eq!(r.headers()["x-debug-attempts"], "2");
    assert!(r.text().await.unwrap().contains("\"content\":\"ok\""));
    assert_eq!(
        bad.count(),
        bad_before + 1,
        "the failing upstream was tried first"
    );
    assert_eq!(good_stream.count(), 1);
}

#[tokio::test]
async fn every_upstream_failing_gives_502_or_504_naming_the_attempts() {
    let bad = MockProvider::always(Reply::json(500, r#"{"error":{"message":"boom"}}"#)).await;
    let slow = MockProvider::always(Reply::json(200, "{}").delay(Duration::from_secs(5))).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}",
        provider("bad", &bad, ""),
        provider("slow", &slow, ", read_timeout_ms: 200")
    ))
    .await;
    let r = post(
        &gw,
        json!({"model": "bad/x", "models": ["slow/y"], "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("bad/x: status 500: boom") && msg.contains("slow/y: timed out"),
        "{msg}"
    );

    let r = post(&gw, json!({"model": "slow/y", "messages": []})).await;
    assert_eq!(r.status(), 504);
}

#[tokio::test]
async fn non_retryable_client_errors_are_relayed_as_is() {
    let up = MockProvider::always(Reply::json(
        400,
        r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":null}}"#,
    ))
    .await;
    let other = MockProvider::always(Reply::json(200, openai_completion("o", "no"))).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}",
        provider("p1", &up, ""),
        provider("p2", &other, "")
    ))
    .await;
    let r = post(
        &gw,
        json!({"model": "p1/x", "models": ["p2/y"], "temperature": 9, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "temperature");
    assert_eq!(other.count(), 0, "a client error is not failed over");
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_one_error_event() {
    let up =
        MockProvider::always(Reply::sse(&openai_stream("m", &["a", "b", "c", "d"])).cut_after(3))
            .await;
    let gw = Gateway::start(&format!("providers:\n{}", provider("p1", &up, ""))).await;
    let r = post(
        &gw,
        json!({"model": "p1/m", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let errors: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["error"]["type"], "upstream_error");
    assert!(body.contains("\"content\":\"b\""));
}

/// The logical model `big`: upstream `a` (tried first, answers 503) then
/// `b` (answers "big ok"), bodies up to `max_body_bytes`.
async fn big_model_failing_over(max_body_bytes: usize) -> (MockProvider, MockProvider, Gateway) {
    let first = MockProvider::always(Reply::json(503, "{}")).await;
    let second = MockProvider::always(Reply::json(200, openai_completion("m", "big ok"))).await;
    let gw = Gateway::start(&format!(
        "  max_body_bytes: {max_body_bytes}\nproviders:\n{}{}models:\n  - name: big\n    upstreams: [{{ provider: a, model: m1, weight: 1000000 }}, {{ provider: b, model: m2, weight: 0.000001 }}]\n",
        provider("a", &first, ""),
        provider("b", &second, "")
    ))
    .await;
    (first, second, gw)
}

#[tokio::test]
async fn large_bodies_fail_over_and_oversized_bodies_get_413() {
    let (first, second, gw) = big_model_failing_over(2097152).await;
    let big = "x".repeat(1 << 20);
    let body = json!({"model": "big", "messages": [{"role": "user", "content": big}]});
    let r = post(&gw, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(first.count(), 1);
    let got = second.last().json();
    assert_eq!(
        got["messages"][0]["content"].as_str().map(str::len),
        Some(1 << 20)
    );
    assert_eq!(got["model"], "m2");

    let huge = "y".repeat(17 << 20);
    let r = post(
        &gw,
        json!({"model": "big", "messages": [{"role": "user", "content": huge}]}),
    )
    .await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than"));
}

/// A translated body over 1 MiB is not held decoded between attempts: the
/// failover's attempt decodes the client's bytes again and sends the same
/// translation.
#[tokio::test]
async fn large_translated_bodies_fail_over_whole() {
    let (first, second, gw) = big_model_failing_over(4194304).await;
    let turns: Vec<Value> = (0..40_000)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("turn {i:06}")})
        })
        .collect();
    let body = json!({"model": "big", "max_tokens": 16, "system": "be brief", "messages": turns});
    assert!(body.to_string().len() > 1 << 20);
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["content"][0]["text"], "big ok", "{v}");
    assert_eq!(first.count(), 1);
    for (name, got) in [
        ("first", first.last().json()),
        ("second", second.last().json()),
    ] {
        let msgs = got["messages"].as_array().expect("messages");
        assert_eq!(
            msgs.len(),
            40_001,
            "{name}: the system message and every turn"
        );
        assert_eq!(msgs[0]["role"], "system");
        assert_eq!(msgs[40_000]["content"], "turn 039999", "{name}");
    }
    assert_eq!(second.last().json()["model"], "m2");
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_reason() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "x"))).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider("p1", &up, ""))).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let cases: Vec<(&str, &str)> = vec![
        ("{not json", "not valid JSON"),
        ("[1,2]", "must be a JSON object"),
        (r#"{"messages":[]}"#, "missing field `model`"),
        (r#"{"model":5,"messages":[]}"#, "`model` must be"),
        (
            r#"{"model":"p1/m","stream":"yes","messages":[]}"#,
            "`stream` must be a boolean",
        ),
        (
            r#"{"model":"p1/m","models":"a","messages":[]}"#,
            "`models` must be",
        ),
        ("", "empty"),
    ];
    for (body, want) in cases {
        let r = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // A form content type (as curl -d sends) is accepted.
    let r = client()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"model":"p1/m","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Unknown model: 404 in the OpenAI shape.
    let r = post(&gw, json!({"model": "nope", "messages": []})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn model_list_has_logical_and_provider_models() {
    let a = MockProvider::always(Reply::json(200, "{}")).await;
    let listed = MockProvider::start(|req, _| {
        if req.path == "/v1/models" {
            Reply::json(
                200,
                r#"{"object":"list","data":[{"id":"listed-1"},{"id":"m-a"}]}"#,
            )
        } else {
            Reply::json(200, openai_completion("listed-1", "from the catalog"))
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "providers:\n{}  - {{ id: auto, kind: openai, base_url: \"{}\", api_keys: [k] }}\nmodels:\n  - name: fast\n    upstreams: [{{ provider: a, model: m-a }}]\n",
        provider("a", &a, ""),
        listed.base_url()
    ))
    .await;
    // The catalog is fetched in the background at start.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ids = loop {
        let v: Value = client()
            .get(format!("{}/v1/models", gw.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        if ids.iter().any(|i| i == "auto/listed-1") || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for want in ["fast", "a/m-a", "auto/listed-1", "auto/m-a", "listed-1"] {
        assert!(ids.iter().any(|i| i == want), "{want} missing from {ids:?}");
    }
    assert!(
        !ids.iter().any(|i| i == "m-a"),
        "m-a is on two providers: only qualified names"
    );
    assert_eq!(
        listed.requests.lock().unwrap()[0].header("authorization"),
        Some("Bearer k")
    );
    // Zero-config routing: a model only the fetched catalog lists.
    let r = post(&gw, json!({"model": "listed-1", "messages": []})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from the catalog");
    let r = client()
        .get(format!("{}/models", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn key_rotation_moves_past_a_rate_limited_key() {
    let up = MockProvider::start(|req, _| {
        if req.header("authorization") == Some("Bearer k1") {
            Reply::json(429, r#"{"error":{"message":"slow down"}}"#)
        } else {
            Reply::json(200, openai_completion("m", "from k2"))
        }
    })
    .await;
    // A static model list: no catalog listing spends k1's 429 (or k1) first.
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\", api_keys: [k1, k2], models: [m] }}\n",
        up.base_url()
    ))
    .await;
    for _ in 0..4 {
        let r = post(&gw, json!({"model": "p/m", "messages": []})).await;
        assert_eq!(r.status(), 200);
    }
    let k1_uses = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.header("authorization") == Some("Bearer k1"))
        .count();
    assert_eq!(k1_uses, 1, "k1 cools down after its 429");
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_request() {
    let up = MockProvider::always(
        Reply::json(200, openai_completion("m", "late")).delay(Duration::from_secs(10)),
    )
    .await;
    let gw = Gateway::start(&format!("providers:\n{}", provider("p1", &up, ""))).await;
    let body = r#"{"model":"p1/m","messages":[]}"#;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while up.count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(sock);
    let deadline = Instant::now() + Duration::from_secs(15);
    while *up.cancelled.lock().unwrap() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *up.cancelled.lock().unwrap(),
        1,
        "the upstream saw the request dropped"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "x"))).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider("p1", &up, ""))).await;
    let body = format!(
        r#"{{"model":"p1/m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "z".repeat(200_000)
    );
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    // The client waits for the interim answer before sending the body; a
    // gateway that never sends it fails here instead of hanging.
    let interim = read_head(&mut sock).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 "),
        "an interim 100 Continue first: {interim:?}"
    );
    sock.write_all(body.as_bytes()).await.unwrap();
    let head = read_head(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        up.last().json()["messages"][0]["content"]
            .as_str()
            .map(str::len),
        Some(200_000),
        "the whole body reached the upstream"
    );
}

/// Reads one response head (up to the blank line) within a generous 15 s.
async fn read_head(sock: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = sock.read(&mut byte).await.expect("read");
            assert!(n > 0, "connection closed after {head:?}");
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("a response head within 15 s");
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_failovers() {
    let bad = MockProvider::always(Reply::json(503, "{}")).await;
    let good = MockProvider::always(Reply::json(200, openai_completion("m", "x"))).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}models:\n  - name: lm\n    upstreams: [{{ provider: bad, model: a, weight: 1000000 }}, {{ provider: good, model: b, weight: 0.000001 }}]\n",
        provider("bad", &bad, ""),
        provider("good", &good, "")
    ))
    .await;
    assert_eq!(
        post(&gw, json!({"model": "lm", "messages": []}))
            .await
            .status(),
        200
    );
    // The logging phase runs just after the response is written, and its
    // counters and the in-flight gauge are not one atomic step: wait for
    // all of them, then say which one is missing.
    let wanted = [
        r#"apiproxy_requests_total{format="openai",model="lm",provider="good",status="200",upstream_model="b"} 1"#,
        r#"apiproxy_tokens_total{direction="input",model="b",provider="good"} 7"#,
        r#"apiproxy_failovers_total{from_provider="bad"} 1"#,
        "apiproxy_inflight_requests 0",
    ];
    let (m, _) = poll(
        WAIT,
        || gw.metrics(),
        |m: &String| wanted.iter().all(|w| m.contains(w)),
    )
    .await;
    assert!(
        m.contains(r#"apiproxy_requests_total{format="openai",model="lm",provider="good",status="200",upstream_model="b"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"apiproxy_tokens_total{direction="input",model="b",provider="good"} 7"#),
        "{m}"
    );
    assert!(
        m.contains(r#"apiproxy_failovers_total{from_provider="bad"} 1"#),
        "{m}"
    );
    assert!(
        m.contains("apiproxy_gateway_overhead_seconds_bucket"),
        "{m}"
    );
    assert!(m.contains("apiproxy_inflight_requests 0"), "{m}");
}

#[test]
fn config_check_reports_each_problem_by_key_path() {
    let dir = TempDir::new();
    let bad = dir.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  - { id: a, kind: openai, base_url: \"nope\", retryable_status: \"500-400\" }\n  - { id: a, kind: openai, base_url: \"http://h\" }\nmodels:\n  - { name: m, upstreams: [{ provider: zz, model: q }] }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("providers[0].base_url:")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("providers[0].retryable_status:")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("providers[1].id: duplicate")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("models[0].upstreams[0].provider: unknown provider")),
        "{err}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c", "conf/apiproxy.yaml"])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config ok");
}

#[tokio::test]
async fn the_default_config_starts_without_provider_keys() {
    let text = std::fs::read_to_string("conf/apiproxy.yaml").unwrap();
    // Keep everything but the server section, which the harness supplies.
    let rest = text
        .split_once("\nlog:")
        .map(|(_, r)| format!("log:{r}"))
        .unwrap();
    // The harness starts every gateway without OPENAI_API_KEY and friends,
    // whatever the developer's shell exports: with them this config would
    // send the request below to a real provider.
    let gw = Gateway::start(&rest).await;
    let log = gw.log();
    for id in ["openai", "anthropic", "gemini"] {
        assert!(
            log.contains(&format!(
                "provider {id}: every api key is empty, provider disabled"
            )),
            "{log}"
        );
    }
    let r = post(&gw, json!({"model": "fast", "messages": []})).await;
    assert_eq!(r.status(), 503, "no provider is enabled");
}

#[tokio::test]
async fn https_upstream_by_hostname_with_sni_and_certificate_checks() {
    let dir = TempDir::new();
    make_certs(&dir.0);
    let up = MockProvider::start_tls(&dir.0.join("leaf.pem"), &dir.0.join("leaf.key"), |_, _| {
        Reply::json(200, openai_completion("m", "over tls"))
    })
    .await;
    let ca = dir.0.join("ca.pem");
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: tls, kind: openai, base_url: \"https://localhost:{port}\", ca_file: \"{ca}\" }}\n  - {{ id: untrusted, kind: openai, base_url: \"https://localhost:{port}\", connect_timeout_ms: 2000 }}\n",
        port = up.port,
        ca = ca.display()
    ))
    .await;
    let r = post(&gw, json!({"model": "tls/m", "messages": []})).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "over tls");
    assert_eq!(
        up.sni.lock().unwrap().first().map(String::as_str),
        Some("localhost")
    );
    assert_eq!(
        up.last().header("host"),
        Some(format!("localhost:{}", up.port).as_str())
    );

    // Without the private CA the certificate is refused: no request is sent
    // (only generation requests are counted: the trusted provider's catalog
    // listing may reach the mock at any time).
    let posts = |up: &MockProvider| {
        up.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    let before = posts(&up);
    let r = post(&gw, json!({"model": "untrusted/m", "messages": []})).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("untrusted/m: connect failed"),
        "{v}"
    );
    assert_eq!(posts(&up), before);

    // -t reports an unreadable CA file by key path.
    let bad = dir.0.join("bad.yaml");
    std::fs::write(&bad, "providers:\n  - { id: x, kind: openai, base_url: \"https://h\", ca_file: /nonexistent.pem }\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("providers[0].ca_file: cannot read"));
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_stream() {
    // 40 events 500 ms apart: 20 s, which the cancellation must beat (the
    // client leaves after the third); no stall of a loaded machine lets the
    // stream end first.
    let words: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let up = MockProvider::always(
        Reply::sse(&openai_stream("m", &refs)).pace(Duration::from_millis(500)),
    )
    .await;
    let gw = Gateway::start(&format!("providers:\n{}", provider("p1", &up, ""))).await;
    let mut r = post(
        &gw,
        json!({"model": "p1/m", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut got = String::new();
    while !got.contains("w2") {
        let c = r.chunk().await.unwrap().expect("more of the stream");
        got.push_str(&String::from_utf8_lossy(&c));
    }
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(15);
    while *up.cancelled.lock().unwrap() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *up.cancelled.lock().unwrap(),
        1,
        "the upstream stream was dropped with the client"
    );
    let m = gw.metrics_until("apiproxy_inflight_streams 0").await;
    assert!(m.contains("apiproxy_inflight_streams 0"), "{m}");
}

#[tokio::test]
async fn provider_keys_never_reach_a_client_or_the_log() {
    // Providers echo the key they were sent in every way they fail: a
    // refused key, a 400, a 429, a 500 (an attempt that fails over), a stream
    // that breaks after it started with an error naming the key.
    let refused = MockProvider::always(Reply::json(
        401,
        r#"{"error":{"message":"Incorrect API key provided: sk-p1. You can find your API key at ...","type":"invalid_request_error"}}"#,
    ))
    .await;
    let echo = MockProvider::always(Reply::json(
        400,
        r#"{"error":{"message":"bad request for key sk-p2"}}"#,
    ))
    .await;
    let limited = MockProvider::always(
        Reply::json(
            429,
            r#"{"error":{"message":"Rate limit reached for key sk-p3 in organization org-1"}}"#,
        )
        .header("retry-after", "30"),
    )
    .await;
    let broken = MockProvider::always(Reply::json(
        500,
        r#"{"error":{"message":"internal error while serving sk-p4"}}"#,
    ))
    .await;
    let mut events = openai_stream("m", &["first", "second"]);
    events.insert(
        2,
        r#"data: {"error":{"message":"stream aborted for sk-p5","type":"server_error"}}"#.into(),
    );
    events.truncate(3);
    let midstream = MockProvider::always(Reply::sse(&events)).await;
    let good = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_env(
        &format!(
            "providers:\n{}{}{}{}{}{}",
            provider("p1", &refused, ""),
            provider("p2", &echo, ""),
            provider("p3", &limited, ""),
            provider("p4", &broken, ""),
            provider("p5", &midstream, ""),
            provider("ok", &good, "")
        ),
        // Every log line the gateway can write, not only the default ones.
        &[("RUST_LOG", "debug")],
    )
    .await;
    let keys = ["sk-p1", "sk-p2", "sk-p3", "sk-p4", "sk-p5", "sk-ok"];
    let no_key = |what: &str, text: &str| {
        for k in keys {
            assert!(!text.contains(k), "{k} in {what}:\n{text}");
        }
    };

    let r = post(&gw, json!({"model": "p1/m", "messages": []})).await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("refused the gateway's credentials"), "{body}");
    no_key("the 401 answer", &body);

    let r = post(&gw, json!({"model": "p2/m", "messages": []})).await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("bad request for key ***"), "{body}");
    no_key("the 400 answer", &body);

    // Failed attempts that end in an error: their messages are in the
    // answer and in the access line.
    let r = post(
        &gw,
        json!({"model": "p3/m", "models": ["p4/m"], "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("p3/m: status 429") && body.contains("p4/m: status 500"),
        "{body}"
    );
    no_key("the 502 answer", &body);

    // A failed attempt followed by a success.
    let r = post(
        &gw,
        json!({"model": "p4/m", "models": ["ok/m"], "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    no_key("the 200 answer", &r.text().await.unwrap());

    // A stream that breaks after its first event with an error naming the
    // key, to a client of the same format and to one of another.
    let r = post(
        &gw,
        json!({"model": "p5/m", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("\"content\":\"first\""), "{body}");
    no_key("the broken stream", &body);
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .json(&json!({"model": "p5/m", "stream": true, "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("first"), "{body}");
    assert!(body.contains("event: error"), "{body}");
    no_key("the broken stream, translated", &body);

    let r = client()
        .get(format!("{}/providers", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Access lines reach the file up to 200 ms after their request: wait for
    // all six before reading the log.
    assert!(
        eventually(Duration::from_secs(15), || async { gw.access_lines() >= 6 }).await,
        "six access lines:\n{}",
        gw.log()
    );
    let log = gw.log();
    assert!(
        log.contains("DEBUG"),
        "the gateway logged at debug level:\n{log}"
    );
    assert!(
        log.contains("upstream=p4/m attempts=2"),
        "the access line of the request whose attempts all failed:\n{log}"
    );
    // Each failed attempt has its debug line, its upstream's words scrubbed.
    for line in [
        "attempt failed: p3/m: status 429: Rate limit reached for key *** in organization",
        "attempt failed: p4/m: status 500: internal error while serving ***",
    ] {
        assert!(log.contains(line), "{line:?} not in the log:\n{log}");
    }
    no_key("the log", &log);
}

#[tokio::test]
async fn admin_endpoints_describe_providers_models_and_routing() {
    let a = MockProvider::always(Reply::json(200, openai_completion("m", "x"))).await;
    let b = MockProvider::always(Reply::json(200, openai_completion("m", "x"))).await;
    let gw = Gateway::start(&format!(
        "auth:\n  keys: [{{ name: c, key: client-key }}]\n  admin_keys: [admin-key-123456]\nproviders:\n{}{}models:\n  - name: lm\n    description: two ways\n    upstreams: [{{ provider: a, model: ma, weight: 3 }}, {{ provider: b, model: mb, weight: 1 }}]\n",
        provider("a", &a, ""),
        provider("b", &b, "")
    ))
    .await;
    let get = |path: &str, key: Option<&str>| {
        let mut r = client().get(format!("{}{path}", gw.url()));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(get("/providers", None).await.unwrap().status(), 401);
    assert_eq!(get("/providers", Some("nope")).await.unwrap().status(), 401);
    assert_eq!(
        get("/providers", Some("client-key"))
            .await
            .unwrap()
            .status(),
        403
    );
    let r = get("/providers", Some("admin-key-123456")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("sk-a") && !text.contains("sk-b"),
        "no provider key in {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["providers"][0]["id"], "a");
    let v: Value = get("/providers/b/models", Some("admin-key-123456"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["models"], json!(["m-b"]));
    let v: Value = get("/providers/a/health", Some("admin-key-123456"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "healthy");
    assert_eq!(
        get("/providers/zz", Some("admin-key-123456"))
            .await
            .unwrap()
            .status(),
        404
    );
    let v: Value = get("/logical-models/lm/upstreams", Some("admin-key-123456"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["upstreams"].as_array().unwrap().len(), 2);
    let v: Value = get("/logical-models", Some("admin-key-123456"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["logical_models"][0]["description"], "two ways");

    let r = client()
        .post(format!("{}/routing/decide", gw.url()))
        .header("x-api-key", "admin-key-123456")
        .json(&json!({"logical_model": "lm", "exclude_providers": ["b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["selected_upstream"]["provider_id"], "a");
    assert_eq!(v["all_candidates"].as_array().unwrap().len(), 1);
    assert!(v["decision_time"].as_f64().is_some());
    let r = client()
        .post(format!("{}/routing/decide", gw.url()))
        .bearer_auth("admin-key-123456")
        .json(&json!({"model": "lm"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let scores: Vec<f64> = v["all_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, [0.75, 0.25]);
    let r = client()
        .post(format!("{}/routing/decide", gw.url()))
        .bearer_auth("admin-key-123456")
        .json(&json!({"logical_model": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .post(format!("{}/routing/decide", gw.url()))
        .bearer_auth("admin-key-123456")
        .json(&json!({"logical_model": "lm", "exclude_providers": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}
