//! Long waits (`server.sse_keepalive_s`), through the real binary: a
//! streaming client that gets no byte for the interval gets keep-alives
//! until the answer comes, failover still works while they go out, and
//! when every upstream fails the open stream ends with one error event in
//! the client's format. Gemini clients get `data:` lines only.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A stream whose response header comes at once and whose first event
/// comes after `wait`.
fn late_stream(wait: Duration) -> Reply {
    let mut r = Reply::sse(&openai_stream("gpt-up", &["late", " answer"]));
    r.chunks[0].0 = wait;
    r
}

fn config(providers: &[(&str, &MockProvider)]) -> String {
    let mut c = "  sse_keepalive_s: 1\nproviders:\n".to_owned();
    for (id, m) in providers {
        c.push_str(&format!(
            "  - {{ id: {id}, kind: openai, base_url: \"{}\", api_keys: [\"k-{id}\"], models: [m], read_timeout_ms: 30000 }}\n",
            m.base_url()
        ));
    }
    c
}

async fn chat_stream(gw: &Gateway, model: &str, fallbacks: &[&str]) -> (u16, String) {
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": model, "models": fallbacks, "stream": true,
            "messages": [{"role": "user", "content": "think hard"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn a_slow_first_byte_gets_keepalives_then_the_answer() {
    // The header late (the upstream thinks before answering at all) and
    // the first event late (header at once, then silence).
    let late_header = MockProvider::always(
        Reply::sse(&openai_stream("gpt-up", &["late", " answer"]))
            .delay(Duration::from_millis(3500)),
    )
    .await;
    let late_event = MockProvider::always(late_stream(Duration::from_millis(3500))).await;
    let gw = Gateway::start(&config(&[("hdr", &late_header), ("evt", &late_event)])).await;
    for model in ["hdr/m", "evt/m"] {
        let (status, body) = chat_stream(&gw, model, &[]).await;
        assert_eq!(status, 200, "{model}: {body}");
        let keepalives = body.matches(": keepalive\n\n").count();
        assert!(
            keepalives >= 2,
            "{model}: {keepalives} keep-alives in {body:?}"
        );
        // All of them before the answer, which is whole and well formed.
        let first_data = body.find("data: ").unwrap();
        assert!(
            body[first_data..].matches(": keepalive").count() == 0,
            "{body:?}"
        );
        let data = sse_data(&body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body:?}");
        let text: String = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "late answer", "{body:?}");
    }
    // Time to first token counts the answer, not the keep-alives: both
    // answers came after 3.5 s.
    let m = gw
        .metrics_when("apiproxy_time_to_first_token_seconds_count", &[], 2.0)
        .await;
    let ttft: f64 = m
        .lines()
        .filter(|l| l.starts_with("apiproxy_time_to_first_token_seconds_sum"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        ttft >= 6.5,
        "TTFT sum {ttft} s: keep-alives were counted\n{m}"
    );
}

#[tokio::test]
async fn failover_still_works_while_keepalives_go_out() {
    let overloaded = MockProvider::always(
        Reply::json(503, r#"{"error":{"message":"overloaded"}}"#)
            .delay(Duration::from_millis(2500)),
    )
    .await;
    let good = MockProvider::always(Reply::sse(&openai_stream("gpt-up", &["second"]))).await;
    let gw = Gateway::start(&config(&[("busy", &overloaded), ("good", &good)])).await;
    let (status, body) = chat_stream(&gw, "busy/m", &["good/m"]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.matches(": keepalive").count() >= 1, "{body:?}");
    assert!(body.contains("\"content\":\"second\""), "{body:?}");
    assert!(!body.contains("\"error\""), "{body:?}");
    assert_eq!(overloaded.count(), 1);
    assert_eq!(good.count(), 1);
}

#[tokio::test]
async fn every_upstream_failing_after_keepalives_ends_the_stream_with_one_error_event() {
    let overloaded = MockProvider::always(
        Reply::json(503, r#"{"error":{"message":"overloaded"}}"#)
            .delay(Duration::from_millis(2500)),
    )
    .await;
    let gw = Gateway::start(&config(&[("busy", &overloaded)])).await;
    // OpenAI Chat client: the error chunk, then [DONE].
    let (status, body) = chat_stream(&gw, "busy/m", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(": keepalive\n\n"), "{body:?}");
    let data = sse_data(&body);
    assert_eq!(data.len(), 2, "{body:?}");
    let err: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(err["error"]["type"], "upstream_error", "{body:?}");
    assert_eq!(data[1], "[DONE]");

    // Anthropic client: one `event: error`.
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "busy/m", "max_tokens": 16, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.starts_with(": keepalive\n\n"), "{body:?}");
    assert_eq!(body.matches("event: error\n").count(), 1, "{body:?}");
    assert_eq!(body.matches("event: ").count(), 1, "{body:?}");
}

#[tokio::test]
async fn gemini_clients_are_kept_alive_with_data_lines_only() {
    let late = MockProvider::always(late_stream(Duration::from_millis(2500))).await;
    let gw = Gateway::start(&config(&[("late", &late)])).await;
    let r = client()
        .post(format!(
            "{}/v1beta/models/late/m:streamGenerateContent?alt=sse",
            gw.url()
        ))
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    // What Google's SDKs do: every non-empty line is `data: <json>`.
    let mut text = String::new();
    let mut empty_chunks = 0;
    for line in body.lines().filter(|l| !l.is_empty()) {
        let json = line
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not a data line: {line:?} in {body:?}"));
        let v: Value = serde_json::from_str(json).unwrap();
        let part = v["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_default();
        if part.is_empty() && v.get("usageMetadata").is_none() {
            empty_chunks += 1;
        }
        text.push_str(part);
    }
    assert!(empty_chunks >= 1, "{body:?}");
    assert_eq!(text, "late answer", "{body:?}");
}
