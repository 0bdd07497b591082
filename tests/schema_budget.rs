//! Gemini tool schemas: `$ref` inlining is bounded by total size, through
//! the real binary. A 300-byte schema whose definition refers to itself
//! three times would inline to 3^32 nodes; it gets a 400 at once, nothing
//! reaches the provider and the gateway's memory stays flat.

mod common;

use common::*;
use serde_json::{json, Value};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_self_referential_schema_gets_400_quickly_with_flat_memory() {
    let gem = MockProvider::always(Reply::json(200, "{}")).await;
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
    for _ in 0..5 {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "gem/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "tree", "parameters": schema}}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
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
    let _ = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": "gem/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "trip", "parameters": ok}}]}))
        .send()
        .await
        .unwrap();
    let sent = gem.last().json();
    let params = &sent["tools"][0]["functionDeclarations"][0]["parameters"];
    assert_eq!(
        params["properties"]["to"]["enum"],
        json!(["A", "B"]),
        "{sent}"
    );
}
