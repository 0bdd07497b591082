//! `wire_api: auto`, the default of `kind: openai`: a Responses client goes
//! to the provider's own `/v1/responses`; after a 404 or 405 there the
//! provider is remembered as having none (logged once) and its Responses
//! clients are translated to chat. Chat clients are never affected.

use crate::common;

use common::wire::{self, Scenario, Wire};
use common::*;
use serde_json::Value;

const ADMIN: &str = "admin-key-of-the-wire-api-tests-0123456789";

async fn send(gw: &Gateway, client: Wire, model: &str, stream: bool) -> (u16, String) {
    let req = wire::client_request(client, model, Scenario::Text, stream, "k");
    let mut r = common::client().post(format!("{}{}", gw.url(), req.path));
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    let r = r.json(&req.body).send().await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The answer is well formed for the client's SDK and carries the text.
fn check_answer(client: Wire, stream: bool, body: &str) {
    let answer = if stream {
        wire::parse_stream_answer(client, body)
    } else {
        wire::parse_json_answer(client, &serde_json::from_str(body).expect("JSON"))
    }
    .unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(answer.text, Scenario::Text.shape().text(), "{body}");
}

fn paths(mock: &MockProvider) -> Vec<String> {
    mock.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect()
}

#[tokio::test]
async fn responses_clients_go_native_where_the_provider_has_the_api_and_fall_back_where_not() {
    // One service with the Responses API, one with chat only (404 there).
    let native = MockProvider::start(|rec, _| {
        if rec.path.ends_with("/responses") {
            wire::provider_reply(Wire::Responses, rec)
        } else {
            wire::provider_reply(Wire::Chat, rec)
        }
    })
    .await;
    let chat_only = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let pinned = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let gw = Gateway::start(&format!(
        "auth:\n  open: true\n  admin_keys: [{ADMIN}]\nproviders:\n  - {{ id: native, kind: openai, base_url: \"{}\", models: [m-1] }}\n  - {{ id: chatonly, kind: openai, base_url: \"{}\", models: [m-1] }}\n  - {{ id: pinned, kind: openai, base_url: \"{}\", models: [m-1], wire_api: chat }}\n",
        native.base_url(),
        chat_only.base_url(),
        pinned.base_url()
    ))
    .await;

    // Native: the client's own body on the provider's /v1/responses.
    for stream in [false, true] {
        let (status, body) = send(&gw, Wire::Responses, "native/m-1", stream).await;
        assert_eq!(status, 200, "{body}");
        check_answer(Wire::Responses, stream, &body);
    }
    assert_eq!(paths(&native), ["/v1/responses", "/v1/responses"]);
    let sent: Value = native.last().json();
    assert!(sent.get("input").is_some(), "a Responses body: {sent}");
    // A chat client of the same provider: chat, untouched.
    let (status, body) = send(&gw, Wire::Chat, "native/m-1", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(native.last().path, "/v1/chat/completions");

    // Chat only: the first Responses request meets a 404 and is sent again
    // as chat on the same key; the answer is the client's format all the same.
    let (status, body) = send(&gw, Wire::Responses, "chatonly/m-1", false).await;
    assert_eq!(status, 200, "{body}");
    check_answer(Wire::Responses, false, &body);
    assert_eq!(paths(&chat_only), ["/v1/responses", "/v1/chat/completions"]);
    // Remembered: straight to chat from now on, streams too.
    let (status, body) = send(&gw, Wire::Responses, "chatonly/m-1", true).await;
    assert_eq!(status, 200, "{body}");
    check_answer(Wire::Responses, true, &body);
    assert_eq!(
        paths(&chat_only),
        [
            "/v1/responses",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ]
    );
    let log = gw.log_until("no Responses API here").await;
    assert_eq!(
        log.matches("no Responses API here").count(),
        1,
        "logged once: {log}"
    );
    // The 404 was no failure of the provider.
    let h = gw.get_json("/providers/chatonly/health", ADMIN).await;
    assert_eq!(h["status"], "healthy", "{h}");

    // `wire_api: chat` never tries the Responses API.
    let (status, body) = send(&gw, Wire::Responses, "pinned/m-1", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(paths(&pinned), ["/v1/chat/completions"]);
}

#[test]
fn auto_is_a_wire_api_value_and_only_for_openai_compatible_kinds() {
    let (ok, out) = check_config_text(
        "providers:\n  - { id: a, kind: openai, base_url: \"http://127.0.0.1:9\", wire_api: auto }\n",
    );
    assert!(ok, "{out}");
    let (ok, out) = check_config_text(
        "providers:\n  - { id: a, kind: anthropic, base_url: \"http://127.0.0.1:9\", wire_api: auto }\n",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("providers[0].wire_api"), "{out}");
}
