//! Token counting through the real binary: every client endpoint
//! (`/v1/messages/count_tokens`, `/v1/responses/input_tokens`, Gemini
//! `:countTokens` under `/v1beta` and `/v1`) against every upstream kind —
//! an Anthropic mock and a Gemini mock speaking their count endpoints as
//! the real APIs do (the Anthropic one refuses `max_tokens` and a missing
//! `model`, the Gemini one answers only `:countTokens` with a
//! `generateContentRequest` naming its model), and an OpenAI mock that must
//! never be asked (the gateway counts locally with the model's tokenizer).
//! Also: an upstream's refusal in the client's shape, failover to the next
//! candidate, unknown models, bad JSON, keys, rpm counted but tpm not, no
//! session bound, payload rules (which shape generations) left out.

use crate::common;

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-0123456789abcdef0123";

/// The number the Anthropic mock answers for a good count request.
const ANTHROPIC_COUNT: u64 = 4242;
/// The number the Gemini mock answers.
const GEMINI_COUNT: u64 = 777;

fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
    )
}

/// Anthropic's `POST /v1/messages/count_tokens`: its key and version
/// headers required; `model` and `messages` required; `max_tokens` (and
/// any other generation setting) refused as an extra input, as the real
/// endpoint does. `claude-bad` is refused as too long.
async fn anthropic_mock(key: &'static str) -> MockProvider {
    MockProvider::start(move |rec, _| {
        if rec.method != "POST" || rec.path != "/v1/messages/count_tokens" {
            return anthropic_error(404, "not_found_error", "Not Found");
        }
        if rec.header("x-api-key") != Some(key) || rec.header("anthropic-version").is_none() {
            return anthropic_error(401, "authentication_error", "invalid x-api-key");
        }
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&rec.body) else {
            return anthropic_error(400, "invalid_request_error", "invalid JSON");
        };
        let allowed = [
            "model",
            "messages",
            "system",
            "tools",
            "tool_choice",
            "thinking",
        ];
        if let Some(extra) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
            return anthropic_error(
                400,
                "invalid_request_error",
                &format!("{extra}: Extra inputs are not permitted"),
            );
        }
        if !body.get("model").is_some_and(Value::is_string) {
            return anthropic_error(400, "invalid_request_error", "model: Field required");
        }
        if !body.get("messages").is_some_and(Value::is_array) {
            return anthropic_error(400, "invalid_request_error", "messages: Field required");
        }
        if body["model"] == "claude-bad" {
            return anthropic_error(
                400,
                "invalid_request_error",
                "prompt is too long: 300000 tokens > 200000 maximum",
            );
        }
        Reply::json(200, json!({"input_tokens": ANTHROPIC_COUNT}).to_string())
    })
    .await
}

/// Gemini's `POST /v1beta/models/{model}:countTokens`: the key header
/// required; the body is `contents` or a `generateContentRequest` naming
/// `models/{model}`; anything else at the top level is refused.
async fn gemini_mock() -> MockProvider {
    MockProvider::start(|rec, _| {
        let err = |status: u16, s: &str, m: &str| {
            Reply::json(
                status,
                json!({"error": {"code": status, "message": m, "status": s}}).to_string(),
            )
        };
        let Some(model) = rec
            .path
            .strip_prefix("/v1beta/models/")
            .and_then(|p| p.strip_suffix(":countTokens"))
        else {
            return err(404, "NOT_FOUND", "not a countTokens path");
        };
        if rec.header("x-goog-api-key") != Some("gem-secret") {
            return err(403, "PERMISSION_DENIED", "bad key");
        }
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&rec.body) else {
            return err(400, "INVALID_ARGUMENT", "invalid JSON");
        };
        let ok = match (body.get("contents"), body.get("generateContentRequest")) {
            (Some(c), None) => c.is_array() && body.len() == 1,
            (None, Some(g)) => {
                body.len() == 1
                    && g["model"] == format!("models/{model}")
                    && g["contents"].is_array()
            }
            _ => false,
        };
        if !ok {
            return err(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        }
        Reply::json(
            200,
            json!({"totalTokens": GEMINI_COUNT,
                   "promptTokensDetails": [{"modality": "TEXT", "tokenCount": GEMINI_COUNT}]})
            .to_string(),
        )
    })
    .await
}

/// Payload rules that set a generation setting on every Anthropic and
/// Gemini body: a count request must not get them (both count endpoints
/// refuse such fields; the mocks do too).
const PAYLOAD_RULES: &str = r#"payload:
  override:
    - models: ["*"]
      provider: [anthropic]
      params: { temperature: 0.25 }
    - models: ["*"]
      provider: [gemini]
      params: { "generationConfig.temperature": 0.25 }
"#;

struct Setup {
    gw: Gateway,
    _rules: TempDir,
    anth: MockProvider,
    gem: MockProvider,
    oai: MockProvider,
    dead: MockProvider,
}

async fn setup() -> Setup {
    let anth = anthropic_mock("anth-secret").await;
    let gem = gemini_mock().await;
    let oai = MockProvider::always(Reply::json(500, r#"{"error":{"message":"not asked"}}"#)).await;
    let dead = MockProvider::always(anthropic_error(503, "overloaded_error", "Overloaded")).await;
    let rules = TempDir::new();
    std::fs::write(rules.0.join("payload.yaml"), PAYLOAD_RULES).expect("write rules");
    let gw = Gateway::start(&format!(
        r#"filters_dir: {}
auth:
  admin_keys: ["{ADMIN}"]
  keys:
    - {{ name: alice, key: alice-key }}
    - {{ name: lim, key: lim-key, rpm: 2, tpm: 10 }}
providers:
  - {{ id: anth, kind: anthropic, base_url: "{}", api_keys: [anth-secret], models: [claude-up, claude-bad] }}
  - {{ id: gem, kind: gemini, base_url: "{}", api_keys: [gem-secret], models: [gem-up] }}
  - {{ id: oai, kind: openai, base_url: "{}", api_keys: [oai-secret], models: [gpt-4o, gpt-4] }}
  - {{ id: dead, kind: anthropic, base_url: "{}", api_keys: [dead-secret], models: [claude-x] }}
models:
  - {{ name: a, upstreams: [{{ provider: anth, model: claude-up }}] }}
  - {{ name: g, upstreams: [{{ provider: gem, model: gem-up }}] }}
  - {{ name: o, upstreams: [{{ provider: oai, model: gpt-4o }}] }}
"#,
        rules.0.display(),
        anth.base_url(),
        gem.base_url(),
        oai.base_url(),
        dead.base_url()
    ))
    .await;
    Setup {
        gw,
        _rules: rules,
        anth,
        gem,
        oai,
        dead,
    }
}

/// The client formats' count endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Client {
    Anthropic,
    Gemini,
    /// Gemini under `/v1/models/`, with the `contents`-only body.
    GeminiV1Contents,
    OpenAi,
}

const CLIENTS: [Client; 4] = [
    Client::Anthropic,
    Client::Gemini,
    Client::GeminiV1Contents,
    Client::OpenAi,
];

/// The tool every full request carries, in each format.
fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// Path and body of a count request for `model` with a system prompt, a
/// tool and "hello world" (the `contents`-only Gemini body has neither
/// system nor tools: that form cannot carry them).
fn count_request(client: Client, model: &str) -> (String, Value) {
    match client {
        Client::Anthropic => (
            "/v1/messages/count_tokens".into(),
            json!({"model": model, "system": "You are terse.",
                   "tools": [{"name": "get_weather", "description": "Weather of a city",
                              "input_schema": weather_schema()}],
                   "messages": [{"role": "user", "content": "hello world"}]}),
        ),
        Client::Gemini => (
            format!("/v1beta/models/{model}:countTokens"),
            json!({"generateContentRequest": {
                "model": format!("models/{model}"),
                "systemInstruction": {"parts": [{"text": "You are terse."}]},
                "tools": [{"functionDeclarations": [{"name": "get_weather",
                    "description": "Weather of a city", "parameters": weather_schema()}]}],
                "contents": [{"role": "user", "parts": [{"text": "hello world"}]}]}}),
        ),
        Client::GeminiV1Contents => (
            format!("/v1/models/{model}:countTokens"),
            json!({"contents": [{"role": "user", "parts": [{"text": "hello world"}]}]}),
        ),
        Client::OpenAi => (
            "/v1/responses/input_tokens".into(),
            json!({"model": model, "instructions": "You are terse.",
                   "tools": [{"type": "function", "name": "get_weather",
                              "description": "Weather of a city", "parameters": weather_schema()}],
                   "input": "hello world"}),
        ),
    }
}

/// Whether the request carried the system prompt and the tool.
fn full(client: Client) -> bool {
    client != Client::GeminiV1Contents
}

async fn post(gw: &Gateway, key: Option<&str>, path: &str, body: &Value) -> reqwest::Response {
    let mut r = client().post(format!("{}{path}", gw.url()));
    if let Some(k) = key {
        r = r.header("x-api-key", k);
    }
    r.json(body).send().await.expect("request")
}

/// The count a client got, read in its own shape (the shape checked whole).
fn read_count(client: Client, v: &Value) -> u64 {
    let obj = v.as_object().expect("an object");
    match client {
        Client::Anthropic => {
            assert_eq!(obj.len(), 1, "{v}");
            v["input_tokens"].as_u64().expect("input_tokens")
        }
        Client::Gemini | Client::GeminiV1Contents => {
            assert_eq!(obj.len(), 1, "{v}");
            v["totalTokens"].as_u64().expect("totalTokens")
        }
        Client::OpenAi => {
            assert_eq!(v["object"], "response.input_tokens", "{v}");
            v["input_tokens"].as_u64().expect("input_tokens")
        }
    }
}

/// The error a client got, checked to be in its own shape: its message.
fn error_message(client: Client, status: u16, v: &Value) -> String {
    match client {
        Client::Anthropic => {
            assert_eq!(v["type"], "error", "{v}");
            v["error"]["message"].as_str().expect("message").to_owned()
        }
        Client::Gemini | Client::GeminiV1Contents => {
            assert_eq!(v["error"]["code"], status, "{v}");
            assert!(v["error"]["status"].is_string(), "{v}");
            v["error"]["message"].as_str().expect("message").to_owned()
        }
        Client::OpenAi => {
            assert!(v["error"]["type"].is_string(), "{v}");
            v["error"]["message"].as_str().expect("message").to_owned()
        }
    }
}

#[tokio::test]
async fn every_client_endpoint_counts_on_anthropic_upstreams() {
    let s = setup().await;
    for c in CLIENTS {
        let before = s.anth.count();
        let (path, body) = count_request(c, "a");
        let r = post(&s.gw, Some("alice-key"), &path, &body).await;
        assert_eq!(r.status(), 200, "{c:?}");
        assert!(
            r.headers().get("x-apiproxy-token-count").is_none(),
            "{c:?}: the provider's own count"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(read_count(c, &v), ANTHROPIC_COUNT, "{c:?}");
        assert_eq!(s.anth.count(), before + 1, "{c:?}: one count request");
        let got = s.anth.last().json();
        assert_eq!(got["model"], "claude-up", "{c:?}");
        assert!(got.get("max_tokens").is_none(), "{c:?}: {got}");
        let text = got["messages"].to_string();
        assert!(text.contains("hello world"), "{c:?}: {got}");
        if full(c) {
            assert!(
                got["system"].to_string().contains("You are terse."),
                "{c:?}: {got}"
            );
            assert_eq!(got["tools"][0]["name"], "get_weather", "{c:?}: {got}");
            assert_eq!(
                got["tools"][0]["input_schema"]["required"][0], "city",
                "{c:?}"
            );
        }
    }
    assert_eq!(s.oai.count() + s.gem.count() + s.dead.count(), 0);
}

#[tokio::test]
async fn every_client_endpoint_counts_on_gemini_upstreams() {
    let s = setup().await;
    for c in CLIENTS {
        let before = s.gem.count();
        let (path, body) = count_request(c, "g");
        let r = post(&s.gw, Some("alice-key"), &path, &body).await;
        assert_eq!(r.status(), 200, "{c:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(read_count(c, &v), GEMINI_COUNT, "{c:?}");
        assert_eq!(s.gem.count(), before + 1);
        let rec = s.gem.last();
        assert_eq!(rec.path, "/v1beta/models/gem-up:countTokens");
        let got = rec.json();
        let inner = &got["generateContentRequest"];
        assert_eq!(inner["model"], "models/gem-up", "{c:?}: {got}");
        assert!(
            inner["contents"].to_string().contains("hello world"),
            "{c:?}: {got}"
        );
        if full(c) {
            assert!(
                inner["systemInstruction"]
                    .to_string()
                    .contains("You are terse."),
                "{c:?}: {got}"
            );
            assert_eq!(
                inner["tools"][0]["functionDeclarations"][0]["name"], "get_weather",
                "{c:?}: {got}"
            );
        }
    }
    assert_eq!(s.oai.count() + s.anth.count(), 0);
}

#[tokio::test]
async fn openai_upstreams_are_counted_locally_with_their_tokenizer() {
    let s = setup().await;
    let mut counts = Vec::new();
    for c in CLIENTS {
        let (path, body) = count_request(c, "o");
        let r = post(&s.gw, Some("alice-key"), &path, &body).await;
        assert_eq!(r.status(), 200, "{c:?}");
        assert_eq!(
            r.headers()
                .get("x-apiproxy-token-count")
                .map(|v| v.to_str().unwrap()),
            Some("estimated"),
            "{c:?}"
        );
        let v: Value = r.json().await.unwrap();
        counts.push(read_count(c, &v));
    }
    // The same conversation in every format is the same chat request.
    assert_eq!(counts[0], counts[1], "{counts:?}");
    assert_eq!(counts[0], counts[3], "{counts:?}");
    // "hello world" alone: 2 tokens in o200k_base, 3 framing its message
    // (plus 1 for the role "user") and 3 priming the reply.
    assert_eq!(counts[2], 9, "{counts:?}");
    // The system prompt and the tool count too.
    assert!(counts[0] > counts[2] + 10, "{counts:?}");
    // gpt-4 (cl100k_base) counts "hello world" the same.
    let r = post(
        &s.gw,
        Some("alice-key"),
        "/v1/messages/count_tokens",
        &json!({"model": "oai/gpt-4", "messages": [{"role": "user", "content": "hello world"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["input_tokens"], 9);
    assert_eq!(
        s.oai.count(),
        0,
        "OpenAI has no count endpoint: never asked"
    );
}

#[tokio::test]
async fn upstream_refusals_come_back_in_the_clients_shape() {
    let s = setup().await;
    for c in CLIENTS {
        let (path, body) = count_request(c, "anth/claude-bad");
        let r = post(&s.gw, Some("alice-key"), &path, &body).await;
        assert_eq!(r.status(), 400, "{c:?}");
        let v: Value = r.json().await.unwrap();
        let m = error_message(c, 400, &v);
        assert!(m.contains("prompt is too long"), "{c:?}: {v}");
        assert!(!v.to_string().contains("anth-secret"), "{v}");
    }
}

#[tokio::test]
async fn a_failing_upstream_fails_over_to_the_next_candidate() {
    let s = setup().await;
    let r = post(
        &s.gw,
        Some("alice-key"),
        "/v1/messages/count_tokens",
        &json!({"model": "dead/claude-x", "models": ["g"],
                "messages": [{"role": "user", "content": "hello world"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["input_tokens"],
        GEMINI_COUNT
    );
    assert_eq!(s.dead.count(), 1, "the 503 was tried first");
    assert_eq!(s.dead.last().path, "/v1/messages/count_tokens");
    assert_eq!(s.gem.count(), 1);
    // Every candidate failing: 502 (as for a generation) in the client's
    // shape, never a 0.
    let r = post(
        &s.gw,
        Some("alice-key"),
        "/v1beta/models/dead/claude-x:countTokens",
        &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    error_message(Client::Gemini, 502, &v);
}

#[tokio::test]
async fn unknown_models_bad_json_and_missing_keys_are_refused_in_shape() {
    let s = setup().await;
    for c in CLIENTS {
        let (path, body) = count_request(c, "nope");
        let r = post(&s.gw, Some("alice-key"), &path, &body).await;
        assert_eq!(r.status(), 404, "{c:?}");
        let v: Value = r.json().await.unwrap();
        assert!(error_message(c, 404, &v).contains("nope"), "{c:?}: {v}");

        let (path, _) = count_request(c, "a");
        let r = client()
            .post(format!("{}{path}", s.gw.url()))
            .header("x-api-key", "alice-key")
            .header("content-type", "application/json")
            .body("{\"model\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{c:?}");
        let v: Value = r.json().await.unwrap();
        error_message(c, 400, &v);

        let (path, body) = count_request(c, "a");
        let r = post(&s.gw, None, &path, &body).await;
        assert_eq!(r.status(), 401, "{c:?}");
        let v: Value = r.json().await.unwrap();
        error_message(c, 401, &v);
    }
    // A count request is a POST.
    let r = client()
        .get(format!("{}/v1/messages/count_tokens", s.gw.url()))
        .header("x-api-key", "alice-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(s.anth.count() + s.gem.count() + s.oai.count(), 0);
}

#[tokio::test]
async fn counts_take_from_rpm_but_not_tpm_and_bind_no_session() {
    let s = setup().await;
    // `lim` has rpm 2 and tpm 10: this request alone is over 10 tokens by
    // the gateway's estimate, and still passes twice.
    let (path, body) = count_request(Client::Anthropic, "o");
    for i in 0..2 {
        let r = client()
            .post(format!("{}{path}", s.gw.url()))
            .header("x-api-key", "lim-key")
            .header("x-session-id", "count-session")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "count {i} is within rpm 2, tpm or not");
        assert_eq!(
            r.headers()
                .get("x-ratelimit-remaining-requests")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some((1 - i).to_string())
        );
    }
    let r = post(&s.gw, Some("lim-key"), &path, &body).await;
    assert_eq!(r.status(), 429, "the third request of the minute");
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    error_message(Client::Anthropic, 429, &v);
    // No session was bound by the counts.
    let r = client()
        .get(format!("{}/routing/sessions/count-session", s.gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
