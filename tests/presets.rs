//! `kind: openai` presets through the real binary: a preset fills the base
//! URL (shown by `/providers/{id}`), an explicit `base_url` wins (the mocks
//! here are on loopback), OpenRouter's ranking headers come from `app_url`
//! and `app_name`, Ollama and vLLM run without keys, and `-t` names a
//! preset's misuse.

use crate::common;

use common::wire::{self, Scenario, Wire};
use common::*;
use serde_json::Value;

const CLIENT_KEY: &str = "ck-presets-test-0001";
const ADMIN: &str = "admin-key-presets-1";

fn config(providers: &str) -> String {
    format!(
        "auth:\n  admin_keys: [{ADMIN}]\n  keys:\n    - {{ name: tester, key: {CLIENT_KEY} }}\nproviders:\n{providers}"
    )
}

/// Asks `model` as an OpenAI chat client; the status and body.
async fn ask(gw: &Gateway, model: &str) -> (u16, String) {
    let req = wire::client_request(Wire::Chat, model, Scenario::Text, false, CLIENT_KEY);
    let mut r = client()
        .post(format!("{}{}", gw.url(), req.path))
        .header("content-type", "application/json");
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    let resp = r.body(req.body.to_string()).send().await.expect("request");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

fn answer_text(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    wire::parse_json_answer(Wire::Chat, &v)
        .unwrap_or_else(|e| panic!("{e}: {body}"))
        .text
}

/// OpenRouter at a loopback `base_url` under its own path: the request
/// goes there with the key and the ranking headers; Ollama without a key
/// sends no credentials.
#[tokio::test]
async fn presets_reach_an_explicit_base_url_with_their_quirks() {
    let router = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let ollama = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let providers = format!(
        "  - {{ id: or, kind: openai, preset: openrouter, base_url: \"{}/api/v1\", api_keys: [sk-or-v1-test], app_url: \"https://app.example\", app_name: \"Example App\", models: [openai/gpt-4o-mini] }}\n  - {{ id: ol, kind: openai, preset: ollama, base_url: \"{}/v1\", models: [llama3.2] }}\n",
        router.base_url(),
        ollama.base_url()
    );
    let gw = Gateway::start(&config(&providers)).await;
    let (status, body) = ask(&gw, "or/openai/gpt-4o-mini").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_text(&body), wire::ANSWER);
    let rec = router.last();
    assert_eq!(rec.path, "/api/v1/chat/completions");
    assert_eq!(rec.header("authorization"), Some("Bearer sk-or-v1-test"));
    assert_eq!(rec.header("http-referer"), Some("https://app.example"));
    assert_eq!(rec.header("x-title"), Some("Example App"));

    let (status, body) = ask(&gw, "ol/llama3.2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_text(&body), wire::ANSWER);
    let rec = ollama.last();
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(rec.header("authorization"), None);
    assert_eq!(rec.header("http-referer"), None);
    let p = gw.get_json("/providers/ol", ADMIN).await;
    assert_eq!(p["preset"], "ollama", "{p}");
}

/// Without `base_url`, each preset's documented URL (no request is sent:
/// the models are configured, so nothing is listed).
#[tokio::test]
async fn a_preset_without_base_url_takes_the_services_url() {
    let cases = [
        ("deepseek", "https://api.deepseek.com:443"),
        ("groq", "https://api.groq.com:443/openai/v1"),
        ("mistral", "https://api.mistral.ai:443/v1"),
        ("openrouter", "https://openrouter.ai:443/api/v1"),
        ("together", "https://api.together.xyz:443/v1"),
        ("fireworks", "https://api.fireworks.ai:443/inference/v1"),
        ("xai", "https://api.x.ai:443/v1"),
        ("ollama", "http://localhost:11434/v1"),
        ("vllm", "http://localhost:8000/v1"),
    ];
    let providers: String = cases
        .iter()
        .map(|(name, _)| {
            format!("  - {{ id: {name}, kind: openai, preset: {name}, api_keys: [k-{name}], models: [m] }}\n")
        })
        .collect();
    let gw = Gateway::start(&config(&providers)).await;
    for (name, url) in cases {
        let p = gw.get_json(&format!("/providers/{name}"), ADMIN).await;
        assert_eq!(p["base_url"], url, "{p}");
        assert_eq!(p["preset"], name, "{p}");
    }
}

/// `-t` names each misuse with its key path.
#[test]
fn preset_misuse_is_named() {
    let (ok, out) = check_config_text(
        "providers:\n  - { id: a, kind: anthropic, preset: groq, api_keys: [k] }\n  - { id: g, kind: openai, preset: groq }\n  - { id: x, kind: openai, preset: bedrock, api_keys: [k] }\n  - { id: m, kind: openai, preset: mistral, api_keys: [k], app_name: Me }\n  - { id: n, kind: openai }\n",
    );
    assert!(!ok, "{out}");
    for needle in [
        "providers[0].preset: only for kind openai",
        "providers[1].api_keys: preset groq needs a key",
        "providers[2].preset: \"bedrock\" is not one of deepseek,",
        "providers[3].app_name: only for preset openrouter",
        "providers[4].base_url: missing",
    ] {
        assert!(out.contains(needle), "{needle} not in {out}");
    }
}
