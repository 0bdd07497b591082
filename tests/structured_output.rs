//! Structured output through the real binary: each client format's JSON
//! schema request reaches each provider kind in that provider's native
//! form (Anthropic `output_config.format`, or the forced tool on a model
//! without it; Gemini `responseJsonSchema`; OpenAI `response_format` /
//! `text.format`), and the answer comes back as the client's own text,
//! streaming and not. The mocks refuse what the real APIs refuse (an
//! unknown top-level field at Anthropic, `output_config` on a Claude 3
//! model, a schema without `responseMimeType` at Gemini) and answer JSON
//! only when the schema reached them. JSON mode without a schema, which an
//! Anthropic upstream cannot express, is a 400 in the client's shape.

use crate::common;

use common::wire::{self, Answer, Shape, Wire, ALL};
use serde_json::Value;

const CLIENT_KEY: &str = "ck-structured-test-0001";

/// A provider: (id, kind, wire_api, upstream model).
const PROVIDERS: [(&str, Wire, &str); 5] = [
    ("oai", Wire::Chat, "gpt-4o-mini"),
    ("oresp", Wire::Responses, "gpt-4.1-mini"),
    ("ant", Wire::Anthropic, "claude-haiku-4-5"),
    // No native structured outputs: the forced tool.
    ("ant3", Wire::Anthropic, "claude-3-5-haiku-20241022"),
    ("gem", Wire::Gemini, "gemini-2.5-flash"),
];

fn read_answer(client: Wire, stream: bool, status: u16, body: &str) -> Result<Answer, String> {
    wire::ensure(status == 200, format!("status {status}: {body}"))?;
    if stream {
        wire::parse_stream_answer(client, body).map_err(|e| format!("{e}\nstream: {body}"))
    } else {
        let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?;
        wire::parse_json_answer(client, &v).map_err(|e| format!("{e}\nbody: {body}"))
    }
}

#[tokio::test]
async fn every_clients_schema_reaches_every_provider_in_its_native_form() {
    let s = wire::Matrix::start(&PROVIDERS, wire::structured_reply, CLIENT_KEY).await;
    let mut failures = Vec::new();
    for client in ALL {
        for (id, kind, _) in PROVIDERS {
            // A same-format request goes through as the client wrote it:
            // an Anthropic client asking a Claude 3 model for
            // output_config gets Anthropic's own refusal.
            if client == Wire::Anthropic && id == "ant3" {
                continue;
            }
            for stream in [false, true] {
                let req = wire::structured_request(
                    client,
                    &format!("via-{id}"),
                    stream,
                    CLIENT_KEY,
                    false,
                );
                let (status, body) = s.send(&req).await;
                let checked = read_answer(client, stream, status, &body).and_then(|a| {
                    wire::ensure(
                        a.text == wire::STRUCTURED_ANSWER && a.calls.is_empty(),
                        format!("answer {a:?}"),
                    )?;
                    let want = wire::expected_finish(client, Shape::Text);
                    wire::ensure(
                        a.finish == want,
                        format!("finish {:?} (want {want})", a.finish),
                    )
                });
                if let Err(e) = checked {
                    failures.push(format!(
                        "{} → {id} ({}) stream={stream}: {e}",
                        client.name(),
                        kind.name()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn json_mode_without_a_schema_to_anthropic_is_a_400_naming_the_field() {
    let s = wire::Matrix::start(&PROVIDERS, wire::structured_reply, CLIENT_KEY).await;
    for client in [Wire::Chat, Wire::Responses, Wire::Gemini] {
        for stream in [false, true] {
            let before = s.mock("ant").count();
            let req = wire::structured_request(client, "via-ant", stream, CLIENT_KEY, true);
            let (status, body) = s.send(&req).await;
            assert_eq!(status, 400, "{} stream={stream}: {body}", client.name());
            let v: Value = serde_json::from_str(&body).expect("error body is JSON");
            let msg = v["error"]["message"].as_str().unwrap_or_default();
            assert!(
                msg.contains("response_format") && msg.contains("json_schema"),
                "{}: {body}",
                client.name()
            );
            match client {
                Wire::Gemini => assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{body}"),
                _ => assert_eq!(v["error"]["type"], "invalid_request_error", "{body}"),
            }
            assert_eq!(s.mock("ant").count(), before, "nothing sent upstream");
        }
    }
}
