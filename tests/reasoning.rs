//! Reasoning across formats through the real binary: a tool-use
//! conversation starts on Anthropic with thinking (a signed thinking block
//! in the answer), and each client format replays it as its SDK does to
//! Anthropic again, to Gemini (3: a model turn's call must be signed) and
//! to OpenAI Chat and Responses, streaming and not. The mocks refuse what
//! the real APIs refuse: a thinking signature they did not issue, a message
//! field or item they do not take, a request that lost its reasoning
//! setting. Anthropic must get its own signature back intact.

use crate::common;

use common::wire::{self, Wire, ALL};
use serde_json::Value;

const CLIENT_KEY: &str = "ck-reasoning-test-0001";

/// (id, kind, upstream model).
const PROVIDERS: [(&str, Wire, &str); 4] = [
    ("ant", Wire::Anthropic, "claude-sonnet-4-5"),
    ("gem", Wire::Gemini, "gemini-3-flash-preview"),
    ("oai", Wire::Chat, "o4-mini"),
    ("oresp", Wire::Responses, "gpt-5-mini"),
];

/// The thinking text the client's answer carries, in its format's shape.
fn thinking_of(client: Wire, v: &Value) -> String {
    match client {
        Wire::Chat => v["choices"][0]["message"]["reasoning_content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Wire::Responses => v["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["type"] == "reasoning")
            .flat_map(|i| i["summary"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["text"].as_str().map(str::to_owned))
            .collect(),
        Wire::Anthropic => v["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "thinking")
            .filter_map(|b| b["thinking"].as_str().map(str::to_owned))
            .collect(),
        Wire::Gemini => v["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["thought"] == true)
            .filter_map(|p| p["text"].as_str().map(str::to_owned))
            .collect(),
    }
}

#[tokio::test]
async fn a_conversation_started_on_anthropic_with_thinking_continues_anywhere() {
    let s = wire::Matrix::start(&PROVIDERS, wire::reasoning_reply, CLIENT_KEY).await;
    let mut failures = Vec::new();
    for client in ALL {
        let first = wire::reasoning_request(client, "via-ant", CLIENT_KEY);
        let (status, body) = s.send(&first).await;
        assert_eq!(status, 200, "{} turn 1: {body}", client.name());
        let answer: Value = serde_json::from_str(&body).expect("turn 1 JSON");
        assert_eq!(
            thinking_of(client, &answer),
            wire::THOUGHT,
            "{} turn 1 relays thinking in its own shape: {body}",
            client.name()
        );
        for (id, _, _) in PROVIDERS {
            for stream in [false, true] {
                let next =
                    wire::continue_request(client, &first, &answer, &format!("via-{id}"), stream);
                let (status, body) = s.send(&next).await;
                let what = format!("{} → {id} stream={stream}", client.name());
                if status != 200 {
                    failures.push(format!("{what}: {status} {body}"));
                    continue;
                }
                let parsed = if stream {
                    wire::parse_stream_answer(client, &body)
                } else {
                    serde_json::from_str::<Value>(&body)
                        .map_err(|e| e.to_string())
                        .and_then(|v| wire::parse_json_answer(client, &v))
                };
                match parsed {
                    Ok(a) if a.text == wire::ANSWER => {}
                    other => failures.push(format!("{what}: {other:?}")),
                }
                // Anthropic gets its own signed thinking back from every
                // client format that carries signatures.
                if id == "ant" && client != Wire::Chat {
                    let sent = s.mock("ant").last().json();
                    let replayed = sent["messages"][1]["content"][0].clone();
                    if replayed["type"] != "thinking"
                        || replayed["signature"] != wire::ANTHROPIC_SIGNATURE
                    {
                        failures.push(format!("{what}: thinking not replayed: {sent}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
