//! Gemini tool schemas: `$ref` inlining is bounded by total size, through
//! the real binary. A 300-byte schema whose definition refers to itself
//! three times would inline to 3^32 nodes; it gets a 400 at once, nothing
//! reaches the provider and the gateway's memory stays flat.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The resident memory of process `pid`; fails the test when it cannot be
/// read (a reading of 0 would make any growth look flat).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// A Gemini `generateContent` answer.
fn gemini_answer(text: &str) -> String {
    json!({
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
        "modelVersion": "gemini-2.5-flash"
    })
    .to_string()
}

/// Far more than a bounded rewrite takes on a loaded machine, far less
/// than an unbounded one (3^32 nodes) would.
const QUICKLY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_self_referential_schema_gets_400_quickly_with_flat_memory() {
    let gem = MockProvider::always(Reply::json(200, gemini_answer("sent"))).await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: gem, kind: gemini, base_url: \"{}\", api_keys: [\"AIza-test\"], models: [gemini-2.5-flash] }}\n",
        gem.base_url()
    ))
    .await;
    let schema = json!({
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/n"}},
        "$defs": {"n": {"type": "object", "description": "a node", "properties": {
            "a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/n"}, "c": {"$ref": "#/$defs/n"}
        }}}
    });
    assert!(schema.to_string().len() <= 300);
    let before = rss_kib(gw.pid());
    assert!(before > 0, "an RSS of 0 KiB");
    for _ in 0..5 {
        let started = Instant::now();
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "gem/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "tree", "parameters": schema}}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        let took = started.elapsed();
        assert!(took < QUICKLY, "the 400 took {took:?}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("$ref"), "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    assert_eq!(gem.count(), 0, "nothing reached the provider");
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");

    // A schema using a definition twice is inlined and sent.
    let ok = json!({"type": "object", "properties": {
        "from": {"$ref": "#/$defs/place"}, "to": {"$ref": "#/$defs/place"}},
        "$defs": {"place": {"type": "string", "enum": ["A", "B"]}}});
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": "gem/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "trip", "parameters": ok}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "sent", "{v}");
    assert_eq!(gem.count(), 1);
    let sent = gem.last().json();
    let params = &sent["tools"][0]["functionDeclarations"][0]["parameters"];
    assert_eq!(
        params["properties"]["to"]["enum"],
        json!(["A", "B"]),
        "{sent}"
    );
}

#[tokio::test]
async fn the_schema_budget_is_configurable() {
    let gem = MockProvider::always(Reply::json(200, gemini_answer("sent"))).await;
    let gw = Gateway::start_with_server(
        "max_schema_rewrite_bytes: 4096",
        &format!(
            "providers:\n  - {{ id: gem, kind: gemini, base_url: \"{}\", api_keys: [\"AIza-test\"], models: [gemini-2.5-flash] }}\n",
            gem.base_url()
        ),
    )
    .await;
    // About 6 KiB of parameters once rewritten: within the default budget,
    // past this gateway's 4 KiB.
    let described = |n: usize| {
        json!({"type": "object", "properties": {
            "a": {"type": "string", "description": "x".repeat(n)},
            "b": {"type": "string", "description": "y".repeat(n)}}})
    };
    let send = |schema: Value| {
        let url = format!("{}/v1/chat/completions", gw.url());
        async move {
            client()
                .post(url)
                .json(&json!({"model": "gem/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "t", "parameters": schema}}]}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = send(described(3000)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("4096") && msg.contains("server.max_schema_rewrite_bytes"),
        "{v}"
    );
    assert_eq!(gem.count(), 0, "nothing reached the provider");
    // A small one still goes through.
    let r = send(described(100)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(gem.count(), 1);

    // Out of range: refused by -t with its key path.
    let dir = TempDir::new();
    let file = dir.0.join("c.yaml");
    std::fs::write(
        &file,
        "server:\n  max_schema_rewrite_bytes: 10\nproviders: []\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("server.max_schema_rewrite_bytes"),
        "{err}"
    );
}
