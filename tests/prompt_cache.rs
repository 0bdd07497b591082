//! Prompt caching through the real binary: `cache_control` breakpoints set
//! by OpenAI-format clients (on content parts, a message, a tool) reach an
//! Anthropic upstream where they were set; `prompt_cache: auto` adds them
//! (tools, system, last user turn) for clients that set none; cache reads
//! and both classes of writes reported by Anthropic reach every client
//! format's usage, the JSON access log and the cost. The Anthropic mock
//! refuses more than four breakpoints, as the API does.

use crate::common;

use common::wire::{self, Shape, Wire, ALL};
use common::*;
use serde_json::{json, Value};

const CLIENT_KEY: &str = "ck-cache-test-0001";
const MODEL: &str = "claude-sonnet-4-5";

/// The usage the mock reports: 10 fresh, 2000 read, 3000 written (1000
/// of them for one hour), 5 out.
fn cache_usage() -> Value {
    json!({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000}})
}

fn anthropic_cache_reply(rec: &Recorded) -> Reply {
    let body = String::from_utf8_lossy(&rec.body);
    let marks = body.matches("\"cache_control\"").count();
    if marks > 4 {
        return Reply::json(
            400,
            wire::provider_error(
                Wire::Anthropic,
                400,
                "A maximum of 4 blocks with cache_control may be provided. Found 5.",
            )
            .to_string(),
        );
    }
    if !wire::requested_stream(Wire::Anthropic, rec) {
        let mut v = wire::provider_json(Wire::Anthropic, MODEL, Shape::Text);
        v["usage"] = cache_usage();
        return Reply::json(200, v.to_string());
    }
    let events: Vec<String> = wire::provider_sse(Wire::Anthropic, MODEL, Shape::Text)
        .into_iter()
        .map(|e| {
            let Some((head, data)) = e.split_once("data: ") else {
                return e;
            };
            let mut v: Value = match serde_json::from_str(data) {
                Ok(v) => v,
                Err(_) => return e,
            };
            if v["type"] == "message_start" {
                v["message"]["usage"] = cache_usage();
            }
            format!("{head}data: {v}")
        })
        .collect();
    Reply::sse(&events)
}

struct Setup {
    ant: MockProvider,
    gw: Gateway,
}

impl Setup {
    async fn start() -> Setup {
        let ant = MockProvider::start(|rec, _| anthropic_cache_reply(rec)).await;
        let cfg = format!(
            "log:\n  access_format: json\nauth:\n  keys:\n    - {{ name: tester, key: {CLIENT_KEY} }}\nproviders:\n\
             \x20 - {{ id: ant, kind: anthropic, base_url: \"{url}\", api_keys: [\"k1\"], models: [{MODEL}] }}\n\
             \x20 - {{ id: antauto, kind: anthropic, base_url: \"{url}\", api_keys: [\"k2\"], models: [{MODEL}], prompt_cache: auto }}\n\
             models:\n\
             \x20 - name: via-ant\n    upstreams: [{{ provider: ant, model: {MODEL} }}]\n\
             \x20 - name: via-auto\n    upstreams: [{{ provider: antauto, model: {MODEL} }}]\n",
            url = ant.base_url()
        );
        let gw = Gateway::start(&cfg).await;
        Setup { ant, gw }
    }

    async fn send(&self, req: &wire::ClientRequest) -> (u16, String) {
        let mut r = client()
            .post(format!("{}{}", self.gw.url(), req.path))
            .header("content-type", "application/json");
        for (k, v) in &req.headers {
            r = r.header(k, v);
        }
        let resp = r.body(req.body.to_string()).send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }
}

/// Every `cache_control` in an Anthropic request: (where, value).
fn breakpoints(v: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (i, t) in v["tools"].as_array().into_iter().flatten().enumerate() {
        if let Some(c) = t.get("cache_control") {
            out.push((format!("tools[{i}]"), c.clone()));
        }
    }
    for (i, b) in v["system"].as_array().into_iter().flatten().enumerate() {
        if let Some(c) = b.get("cache_control") {
            out.push((format!("system[{i}]"), c.clone()));
        }
    }
    for (i, m) in v["messages"].as_array().into_iter().flatten().enumerate() {
        for (j, b) in m["content"].as_array().into_iter().flatten().enumerate() {
            if let Some(c) = b.get("cache_control") {
                out.push((format!("messages[{i}].content[{j}]"), c.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn openai_clients_breakpoints_reach_anthropic_where_they_were_set() {
    let s = Setup::start().await;
    let eph = json!({"type": "ephemeral"});
    let hour = json!({"type": "ephemeral", "ttl": "1h"});
    let mut req = wire::client_request(
        Wire::Chat,
        "via-auto",
        wire::Scenario::Tool,
        false,
        CLIENT_KEY,
    );
    req.body["messages"] = json!([
        {"role": "system", "content": [{"type": "text", "text": wire::SYSTEM, "cache_control": hour}]},
        {"role": "user", "content": [
            {"type": "text", "text": "A long document.", "cache_control": eph},
            {"type": "text", "text": wire::QUESTION}]}]);
    req.body["tools"][0]["cache_control"] = eph.clone();
    let (status, body) = s.send(&req).await;
    assert_eq!(status, 200, "{body}");
    let sent = s.ant.last().json();
    // The client's own, and only those (auto adds none when the client set some).
    assert_eq!(
        breakpoints(&sent),
        vec![
            ("tools[0]".to_owned(), eph.clone()),
            ("system[0]".to_owned(), hour),
            ("messages[0].content[0]".to_owned(), eph),
        ],
        "{sent}"
    );
}

#[tokio::test]
async fn auto_breakpoints_for_clients_that_set_none() {
    let s = Setup::start().await;
    let eph = json!({"type": "ephemeral"});
    for client in [Wire::Chat, Wire::Responses, Wire::Gemini] {
        for stream in [false, true] {
            let req = wire::client_request(
                client,
                "via-auto",
                wire::Scenario::ToolResult,
                stream,
                CLIENT_KEY,
            );
            let (status, body) = s.send(&req).await;
            assert_eq!(status, 200, "{} stream={stream}: {body}", client.name());
            let sent = s.ant.last().json();
            let marks = breakpoints(&sent);
            let last = sent["messages"]
                .as_array()
                .map(|m| m.len() - 1)
                .unwrap_or(0);
            let last_block = sent["messages"][last]["content"]
                .as_array()
                .map(|c| c.len() - 1)
                .unwrap_or(0);
            assert_eq!(
                marks,
                vec![
                    ("tools[0]".to_owned(), eph.clone()),
                    ("system[0]".to_owned(), eph.clone()),
                    (
                        format!("messages[{last}].content[{last_block}]"),
                        eph.clone()
                    ),
                ],
                "{} stream={stream}: {sent}",
                client.name()
            );
            // Not on a provider without prompt_cache: auto.
            let req = wire::client_request(
                client,
                "via-ant",
                wire::Scenario::ToolResult,
                stream,
                CLIENT_KEY,
            );
            let (status, body) = s.send(&req).await;
            assert_eq!(status, 200, "{body}");
            assert!(breakpoints(&s.ant.last().json()).is_empty());
        }
    }
}

/// The cache counts as each client format reports them: (input, cached).
fn client_cache_usage(client: Wire, stream: bool, body: &str) -> (u64, u64) {
    let usage = if stream {
        // The last usage the stream reported.
        wire::sse_events(body)
            .into_iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .filter_map(|v| match client {
                Wire::Chat => v.get("usage").filter(|u| u.is_object()).cloned(),
                Wire::Responses => v["response"]
                    .get("usage")
                    .filter(|u| u.is_object())
                    .cloned(),
                Wire::Anthropic => v["message"].get("usage").cloned(),
                Wire::Gemini => v.get("usageMetadata").cloned(),
            })
            .next_back()
            .unwrap_or_default()
    } else {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        match client {
            Wire::Chat | Wire::Responses | Wire::Anthropic => v["usage"].clone(),
            Wire::Gemini => v["usageMetadata"].clone(),
        }
    };
    let n = |p: &Value| p.as_u64().unwrap_or(0);
    match client {
        Wire::Chat => (
            n(&usage["prompt_tokens"]),
            n(&usage["prompt_tokens_details"]["cached_tokens"]),
        ),
        Wire::Responses => (
            n(&usage["input_tokens"]),
            n(&usage["input_tokens_details"]["cached_tokens"]),
        ),
        Wire::Anthropic => (
            n(&usage["input_tokens"])
                + n(&usage["cache_read_input_tokens"])
                + n(&usage["cache_creation_input_tokens"]),
            n(&usage["cache_read_input_tokens"]),
        ),
        Wire::Gemini => (
            n(&usage["promptTokenCount"]),
            n(&usage["cachedContentTokenCount"]),
        ),
    }
}

#[tokio::test]
async fn cache_reads_and_writes_reach_usage_log_and_cost() {
    let s = Setup::start().await;
    for client in ALL {
        for stream in [false, true] {
            let req =
                wire::client_request(client, "via-ant", wire::Scenario::Text, stream, CLIENT_KEY);
            let (status, body) = s.send(&req).await;
            let what = format!("{} stream={stream}", client.name());
            assert_eq!(status, 200, "{what}: {body}");
            assert_eq!(
                client_cache_usage(client, stream, &body),
                (5010, 2000),
                "{what}: {body}"
            );
        }
    }
    // Eight JSON access lines, each with the cache counts and the cost:
    // 10 × 3 + 2000 × 0.30 + 2000 × 3.75 + 1000 × 6 + 5 × 15 per million.
    let (log, seen) = poll(
        WAIT,
        || async { s.gw.log() },
        |log| {
            log.lines()
                .filter(|l| l.starts_with('{') && l.contains("via-ant"))
                .count()
                >= 8
        },
    )
    .await;
    assert!(seen, "JSON access lines:\n{log}");
    for line in log
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("via-ant"))
    {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(v["input_tokens"], 5010, "{line}");
        assert_eq!(v["cached_input_tokens"], 2000, "{line}");
        assert_eq!(v["cache_write_input_tokens"], 3000, "{line}");
        let cost = v["cost_usd"].as_f64().expect("cost");
        assert!((cost - 0.014205).abs() < 1e-9, "{line}");
    }
}
