//! `kind: azure` end to end, through the real binary: a mock on loopback
//! that behaves like Azure OpenAI (deployment paths with `api-version`, the
//! v1 GA paths, the `api-key` header or an Entra ID bearer token, its
//! content-filter refusals and rate-limit headers) and rejects what Azure
//! rejects; every client format, streaming and not; failover to an
//! `openai` provider.

use crate::common;

use common::wire::{self, Scenario, Wire, ALL};
use common::*;
use serde_json::{json, Value};

const CLIENT_KEY: &str = "ck-azure-test-0001";
const ADMIN: &str = "admin-key-azure-1";
const AZURE_KEY: &str = "0123456789abcdef0123456789abcdef";
const AD_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-test-token";
const VERSION: &str = "2024-10-21";

/// How the mock expects to be authenticated.
#[derive(Clone, Copy)]
enum Auth {
    ApiKey,
    Entra,
}

/// Azure's answer to a request it does not route: 404.
fn not_found(message: &str) -> Reply {
    Reply::json(
        404,
        json!({"error": {"code": "404", "message": message}}).to_string(),
    )
}

fn unauthorized() -> Reply {
    Reply::json(
        401,
        json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}).to_string(),
    )
}

/// The content filter's refusal of a prompt, as Azure words it.
fn prompt_filtered() -> Reply {
    Reply::json(
        400,
        json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": {"filtered": false, "severity": "safe"},
                "jailbreak": {"filtered": true, "detected": true},
                "self_harm": {"filtered": false, "severity": "safe"},
                "sexual": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": true, "severity": "high"}}}}})
        .to_string(),
    )
}

/// A completion the content filter stopped: 200, no content.
fn answer_filtered(model: &str) -> Reply {
    Reply::json(
        200,
        json!({"id": "chatcmpl-AZ1", "object": "chat.completion", "created": 1733000000,
            "model": model, "choices": [{"index": 0, "finish_reason": "content_filter",
            "message": {"role": "assistant", "content": null},
            "content_filter_results": {"hate": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": true, "severity": "medium"}}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 0, "total_tokens": 11}})
        .to_string(),
    )
}

/// A stream the content filter stops after its first words.
fn stream_filtered() -> Reply {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-AZ2", "object": "chat.completion.chunk",
            "created": 1733000000, "model": "gpt-4o-2024-11-20",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if finish == "content_filter" {
            c["choices"][0]["content_filter_results"] =
                json!({"violence": {"filtered": true, "severity": "medium"}});
        }
        format!("data: {c}")
    };
    Reply::sse(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "It is "}), Value::Null),
        chunk(json!({}), json!("content_filter")),
        "data: [DONE]".to_owned(),
    ])
}

/// Whether the request carries the credentials Azure expects.
fn authorized(rec: &Recorded, auth: Auth) -> bool {
    match auth {
        // A bearer token in place of the key is refused, as Azure does.
        Auth::ApiKey => {
            rec.header("api-key") == Some(AZURE_KEY) && rec.header("authorization").is_none()
        }
        Auth::Entra => {
            rec.header("authorization") == Some(&format!("Bearer {AD_TOKEN}"))
                && rec.header("api-key").is_none()
        }
    }
}

/// What Azure would do with `rec`: route it by path and version, check
/// its credentials, then answer as OpenAI does (Chat Completions or
/// Responses), except for the deployments named after a behaviour.
fn azure_reply(rec: &Recorded, auth: Auth, deployments: &[&str]) -> Reply {
    let (path, query) = rec.path.split_once('?').unwrap_or((&rec.path, ""));
    let version = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="));
    let body: Value = serde_json::from_slice(&rec.body).unwrap_or(Value::Null);
    let (wire, deployment) = if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let Some(d) = rest.strip_suffix("/chat/completions") else {
            return not_found("Resource not found");
        };
        if version != Some(VERSION) {
            return not_found("Resource not found");
        }
        (Wire::Chat, d.to_owned())
    } else if path == "/openai/responses" && version == Some(VERSION) {
        (
            Wire::Responses,
            body["model"].as_str().unwrap_or("").to_owned(),
        )
    } else if path == "/openai/v1/chat/completions" || path == "/openai/v1/responses" {
        // The v1 GA API takes no api-version (other than `preview`).
        if version.is_some_and(|v| v != "preview") {
            return Reply::json(
                400,
                r#"{"error":{"code":"BadRequest","message":"api-version query parameter is not allowed when using /v1 path"}}"#,
            );
        }
        let wire = if path.ends_with("/responses") {
            Wire::Responses
        } else {
            Wire::Chat
        };
        (wire, body["model"].as_str().unwrap_or("").to_owned())
    } else {
        return not_found("Resource not found");
    };
    if !authorized(rec, auth) {
        return unauthorized();
    }
    if !deployments.contains(&deployment.as_str()) {
        return not_found("The API deployment for this resource does not exist.");
    }
    match deployment.as_str() {
        "dep-filter-prompt" => return prompt_filtered(),
        "dep-filter-answer" => return answer_filtered("gpt-4o-2024-11-20"),
        "dep-filter-stream" => return stream_filtered(),
        "dep-busy" => {
            return Reply::json(
                429,
                r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 30 seconds."}}"#,
            )
            // Azure's milliseconds win over its seconds.
            .header("retry-after", "1")
            .header("retry-after-ms", "600000")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-remaining-tokens", "0");
        }
        _ => {}
    }
    let mut reply = wire::provider_reply(wire, rec);
    if wire == Wire::Chat && reply.content_type == "text/event-stream" {
        // Azure opens a chat stream with the prompt filter's verdict: a
        // chunk without choices, id or model.
        let verdict = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                "hate": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": false, "severity": "safe"}}}]});
        let first = format!("data: {verdict}\n\n").into_bytes();
        reply.chunks.insert(0, (std::time::Duration::ZERO, first));
    }
    reply
        .header("x-ratelimit-remaining-requests", "99")
        .header("x-ratelimit-remaining-tokens", "79000")
        .header("apim-request-id", "9d3c9a0e-7f1b-4c55-b1a4-3a5f2f4e0c11")
}

async fn azure_mock(auth: Auth, deployments: &'static [&'static str]) -> MockProvider {
    MockProvider::start(move |rec, _| azure_reply(rec, auth, deployments)).await
}

const DEPLOYMENTS: &[&str] = &[
    "dep-4o",
    "dep-filter-prompt",
    "dep-filter-answer",
    "dep-filter-stream",
    "dep-busy",
];

/// An azure provider `id` on `mock`, its models mapped to deployments.
fn azure_provider(id: &str, mock: &MockProvider, extra: &str) -> String {
    format!(
        "  - {{ id: {id}, kind: azure, base_url: \"{}\", api_version: \"{VERSION}\", api_keys: [\"{AZURE_KEY}\"], models: [{{name: gpt-4o, deployment: dep-4o}}, {{name: filtered-prompt, deployment: dep-filter-prompt}}, {{name: filtered-answer, deployment: dep-filter-answer}}, {{name: filtered-stream, deployment: dep-filter-stream}}, {{name: busy, deployment: dep-busy}}]{extra} }}\n",
        mock.base_url()
    )
}

/// Logical models `{id}.{model}`, each served by provider `id`'s `model`
/// (clients of every format name a model the same way, a Gemini client
/// in its path).
fn logical(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("models:\n");
    for (id, model) in pairs {
        out += &format!(
            "  - name: {id}.{model}\n    upstreams: [{{ provider: {id}, model: {model} }}]\n"
        );
    }
    out
}

fn config(providers: &str, models: &str) -> String {
    format!(
        "auth:\n  admin_keys: [{ADMIN}]\n  keys:\n    - {{ name: tester, key: {CLIENT_KEY} }}\nproviders:\n{providers}{models}"
    )
}

/// The mock's own strictness, so that a gateway getting a path, version or
/// credential wrong cannot pass these tests.
#[tokio::test]
async fn the_mock_rejects_what_azure_rejects() {
    let mock = azure_mock(Auth::ApiKey, DEPLOYMENTS).await;
    let chat = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let post = |path: &str, headers: &[(&str, &str)]| {
        let mut r = client()
            .post(format!("{}{path}", mock.base_url()))
            .header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(chat.clone()).send()
    };
    let good = format!("/openai/deployments/dep-4o/chat/completions?api-version={VERSION}");
    let key = [("api-key", AZURE_KEY)];
    assert_eq!(post(&good, &key).await.unwrap().status(), 200);
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case; 7] = [
        ("/v1/chat/completions".into(), key.to_vec(), 404),
        (
            "/openai/deployments/dep-4o/chat/completions".into(),
            key.to_vec(),
            404,
        ),
        (
            "/openai/deployments/dep-4o/chat/completions?api-version=2022-01-01".into(),
            key.to_vec(),
            404,
        ),
        (good.clone(), vec![], 401),
        (
            good.clone(),
            vec![("authorization", "Bearer sk-proj-not-azure")],
            401,
        ),
        (
            format!("/openai/deployments/nope/chat/completions?api-version={VERSION}"),
            key.to_vec(),
            404,
        ),
        (
            format!("/openai/v1/chat/completions?api-version={VERSION}"),
            key.to_vec(),
            400,
        ),
    ];
    for (path, headers, want) in cases {
        let got = post(&path, &headers).await.unwrap().status().as_u16();
        assert_eq!(got, want, "{path} {headers:?}");
    }
}

/// Every client format, streaming and not, with and without tools, reaches
/// the deployment of the model it asked for, with the `api-key` header and
/// the `api-version` query.
#[tokio::test]
async fn every_client_format_reaches_the_deployment() {
    let mock = azure_mock(Auth::ApiKey, DEPLOYMENTS).await;
    let models = logical(&[("az", "gpt-4o")]);
    let gw = Gateway::start(&config(&azure_provider("az", &mock, ""), &models)).await;
    for client_wire in ALL {
        for stream in [false, true] {
            for scenario in [Scenario::Text, Scenario::Tool] {
                let req =
                    wire::client_request(client_wire, "az.gpt-4o", scenario, stream, CLIENT_KEY);
                let a = wire::read_ok_answer(client_wire, stream, &wire::send_to(&gw, &req).await);
                let shape = scenario.shape();
                assert_eq!(a.text, shape.text(), "{client_wire:?} {stream} {a:?}");
                assert_eq!(a.calls.len(), shape.calls().len(), "{client_wire:?} {a:?}");
                let rec = mock.last();
                assert_eq!(
                    rec.path,
                    format!("/openai/deployments/dep-4o/chat/completions?api-version={VERSION}")
                );
                assert_eq!(rec.header("api-key"), Some(AZURE_KEY));
                assert_eq!(rec.header("authorization"), None);
                assert_eq!(rec.json()["stream"].as_bool().unwrap_or(false), stream);
            }
        }
    }
    // The key never reaches a client, and the answers carried Azure's
    // rate-limit headers: the key's reading shows.
    let h = gw.get_json("/providers/az/health", ADMIN).await;
    assert_eq!(h["keys"][0]["ratelimit"]["remaining_requests"], 99, "{h}");
    assert_eq!(h["keys"][0]["ratelimit"]["remaining_tokens"], 79000, "{h}");
}

/// `wire_api: responses`: the Responses API, the deployment in the body;
/// with `api_version: v1`, the v1 paths without a version.
#[tokio::test]
async fn responses_and_the_v1_api() {
    let mock = azure_mock(Auth::ApiKey, DEPLOYMENTS).await;
    let v1 = |id: &str, wire_api: &str| {
        azure_provider(id, &mock, wire_api)
            .replace(&format!("api_version: \"{VERSION}\""), "api_version: v1")
    };
    let providers = [
        azure_provider("azr", &mock, ", wire_api: responses"),
        v1("az1", ""),
        v1("az1r", ", wire_api: responses"),
    ]
    .concat();
    let models = logical(&[("azr", "gpt-4o"), ("az1", "gpt-4o"), ("az1r", "gpt-4o")]);
    let gw = Gateway::start(&config(&providers, &models)).await;
    let cases = [
        ("azr", format!("/openai/responses?api-version={VERSION}")),
        ("az1", "/openai/v1/chat/completions".to_owned()),
        ("az1r", "/openai/v1/responses".to_owned()),
    ];
    for (id, path) in cases {
        for client_wire in [Wire::Chat, Wire::Responses, Wire::Anthropic, Wire::Gemini] {
            for stream in [false, true] {
                let model = format!("{id}.gpt-4o");
                let req =
                    wire::client_request(client_wire, &model, Scenario::Text, stream, CLIENT_KEY);
                let a = wire::read_ok_answer(client_wire, stream, &wire::send_to(&gw, &req).await);
                assert_eq!(a.text, wire::ANSWER, "{id} {client_wire:?} {stream}");
                let rec = mock.last();
                assert_eq!(rec.path, path, "{id} {client_wire:?}");
                assert_eq!(
                    rec.json()["model"],
                    "dep-4o",
                    "{id}: the deployment in the body"
                );
            }
        }
    }
}

/// Without keys, `azure_ad_token` (from the environment here) is sent as a
/// bearer token; the token never shows in an answer.
#[tokio::test]
async fn an_entra_id_token_authenticates_a_keyless_provider() {
    let mock = azure_mock(Auth::Entra, DEPLOYMENTS).await;
    let provider = format!(
        "  - {{ id: az, kind: azure, base_url: \"{}\", api_version: \"{VERSION}\", azure_ad_token: \"${{AZ_TOKEN}}\", models: [{{name: gpt-4o, deployment: dep-4o}}, dep-filter-prompt] }}\n",
        mock.base_url()
    );
    let models = logical(&[("az", "gpt-4o")]);
    let gw = Gateway::start_with_env(&config(&provider, &models), &[("AZ_TOKEN", AD_TOKEN)]).await;
    for stream in [false, true] {
        let req = wire::client_request(
            Wire::Anthropic,
            "az.gpt-4o",
            Scenario::Text,
            stream,
            CLIENT_KEY,
        );
        let a = wire::read_ok_answer(Wire::Anthropic, stream, &wire::send_to(&gw, &req).await);
        assert_eq!(a.text, wire::ANSWER);
        assert_eq!(
            mock.last().header("authorization"),
            Some(&*format!("Bearer {AD_TOKEN}"))
        );
    }
    // A model without `deployment` goes to the deployment of its name.
    let req = wire::client_request(
        Wire::Chat,
        "az/dep-filter-prompt",
        Scenario::Text,
        false,
        CLIENT_KEY,
    );
    let (status, _, body) = wire::send_to(&gw, &req).await;
    assert_eq!(status, 400, "{body}");
    assert!(mock
        .last()
        .path
        .starts_with("/openai/deployments/dep-filter-prompt/"));
    assert!(!body.contains(AD_TOKEN) && !gw.log().contains(AD_TOKEN));
}

/// A wrong `api_version` reaches nothing: Azure's 404 is what the client
/// learns (the mock is as strict as Azure, so the right one above counts).
#[tokio::test]
async fn a_wrong_api_version_is_refused_by_azure() {
    let mock = azure_mock(Auth::ApiKey, DEPLOYMENTS).await;
    let provider = azure_provider("az", &mock, "").replace(VERSION, "2023-03-15-preview");
    let gw = Gateway::start(&config(&provider, "")).await;
    let req = wire::client_request(Wire::Chat, "az/gpt-4o", Scenario::Text, false, CLIENT_KEY);
    let (status, _, body) = wire::send_to(&gw, &req).await;
    assert_eq!(status, 404, "{body}");
    assert!(mock.last().path.ends_with("api-version=2023-03-15-preview"));
}

/// The content filter's refusals, of the prompt (400) and of the answer
/// (200 with `finish_reason: content_filter`), reach every client as a 400
/// in its own error shape naming the content filter.
#[tokio::test]
async fn content_filter_refusals_are_clear_400s() {
    let mock = azure_mock(Auth::ApiKey, DEPLOYMENTS).await;
    let models = logical(&[("az", "filtered-prompt"), ("az", "filtered-answer")]);
    let gw = Gateway::start(&config(&azure_provider("az", &mock, ""), &models)).await;
    for model in ["az.filtered-prompt", "az.filtered-answer"] {
        for client_wire in ALL {
            let req = wire::client_request(client_wire, model, Scenario::Text, false, CLIENT_KEY);
            let (status, ct, body) = wire::send_to(&gw, &req).await;
            assert_eq!(status, 400, "{model} {client_wire:?}: {body}");
            assert!(ct.starts_with("application/json"), "{ct}");
            let v: Value = serde_json::from_str(&body).expect("JSON error");
            let message = match client_wire {
                Wire::Anthropic => {
                    assert_eq!(v["type"], "error", "{body}");
                    v["error"]["message"].as_str()
                }
                Wire::Gemini => {
                    assert_eq!(v["error"]["code"], 400, "{body}");
                    v["error"]["message"].as_str()
                }
                Wire::Chat | Wire::Responses => v["error"]["message"].as_str(),
            }
            .unwrap_or_default();
            assert!(
                message.contains("content filter"),
                "{model} {client_wire:?}: {body}"
            );
            let flagged = if model.ends_with("prompt") {
                "(flagged: jailbreak, violence)"
            } else {
                "(flagged: violence)"
            };
            assert!(message.contains(flagged), "{body}");
        }
    }
    // One request each way per client, none retried elsewhere.
    assert_eq!(mock.count(), 2 * ALL.len());
}

/// A stream the filter stops after its first byte cannot become a 400: it
/// ends with each client format's own "filtered" finish.
#[tokio::test]
async fn a_stream_the_filter_stops_ends_with_the_formats_filtered_finish() {
    let mock = azure_mock(Auth::ApiKey, DEPLOYMENTS).await;
    let models = logical(&[("az", "filtered-stream")]);
    let gw = Gateway::start(&config(&azure_provider("az", &mock, ""), &models)).await;
    let want = [
        (Wire::Chat, "content_filter"),
        (Wire::Responses, "incomplete: content_filter"),
        (Wire::Anthropic, "refusal"),
        (Wire::Gemini, "SAFETY"),
    ];
    for (client_wire, finish) in want {
        let req = wire::client_request(
            client_wire,
            "az.filtered-stream",
            Scenario::Text,
            true,
            CLIENT_KEY,
        );
        let a = wire::read_ok_answer(client_wire, true, &wire::send_to(&gw, &req).await);
        assert_eq!(a.text, "It is ", "{client_wire:?}");
        assert_eq!(a.finish, finish, "{client_wire:?} {a:?}");
    }
}

/// An Azure deployment out of quota (429, `retry-after-ms`) gives way to
/// the `openai` provider behind it; the key rests as long as Azure asked.
#[tokio::test]
async fn failover_from_azure_to_openai() {
    let azure = azure_mock(Auth::ApiKey, DEPLOYMENTS).await;
    let openai = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let providers = format!(
        "{}  - {{ id: oai, kind: openai, base_url: \"{}\", api_keys: [sk-proj-oai-test], models: [gpt-4o-mini] }}\n",
        azure_provider("az", &azure, ""),
        openai.base_url()
    );
    // The order of a model's upstreams is a weighted draw: Azure, far
    // heavier, is drawn first almost always; the loop waits for the draw.
    let models = "models:\n  - name: smart\n    upstreams: [{ provider: az, model: busy, weight: 1000 }, { provider: oai, model: gpt-4o-mini, weight: 1 }]\n";
    let gw = Gateway::start(&config(&providers, models)).await;
    let clients = [Wire::Chat, Wire::Anthropic, Wire::Gemini];
    let mut sent = 0;
    while azure.count() == 0 {
        assert!(sent < 50, "Azure never drawn in {sent} requests");
        let client_wire = clients[sent % clients.len()];
        let req = wire::client_request(client_wire, "smart", Scenario::Text, true, CLIENT_KEY);
        let a = wire::read_ok_answer(client_wire, true, &wire::send_to(&gw, &req).await);
        assert_eq!(a.text, wire::ANSWER, "{client_wire:?}");
        assert_eq!(
            wire::requested_model(Wire::Chat, &openai.last()),
            "gpt-4o-mini"
        );
        sent += 1;
    }
    // Its key then rests: Azure is not asked again.
    for client_wire in clients {
        let req = wire::client_request(client_wire, "smart", Scenario::Text, false, CLIENT_KEY);
        let a = wire::read_ok_answer(client_wire, false, &wire::send_to(&gw, &req).await);
        assert_eq!(a.text, wire::ANSWER, "{client_wire:?}");
    }
    assert_eq!(azure.count(), 1);
    // It rests for the 600 000 ms Azure named, not the 1 s of its
    // `retry-after`.
    let h = gw.get_json("/providers/az/health", ADMIN).await;
    assert_eq!(h["keys"][0]["cause"], "rate_limited", "{h}");
    let until = h["keys"][0]["cooldown_until_ms"].as_u64().expect("resting");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(until > now + 300_000, "rests until {until}, now {now}");
}

/// `-t` names what an azure provider lacks, and the azure keys on another
/// kind.
#[test]
fn config_problems_are_named() {
    let (ok, out) = check_config_text(
        "providers:\n  - { id: az, kind: azure, base_url: \"https://r.openai.azure.com\", api_keys: [k] }\n  - { id: o, kind: openai, base_url: \"https://api.openai.com\", api_version: v1, models: [{name: a, deployment: d}] }\n",
    );
    assert!(!ok, "{out}");
    for needle in [
        "providers[0].api_version: kind azure needs it",
        "providers[0].models: kind azure needs its models listed",
        "providers[1].api_version: only for kind azure",
        "providers[1].models[].deployment: only for kind azure",
    ] {
        assert!(out.contains(needle), "{needle} not in {out}");
    }
    let (ok, out) = check_config_text(
        "providers:\n  - { id: az, kind: azure, base_url: \"https://r.openai.azure.com\", api_version: \"2024-10-21&x=1\", api_keys: [k], models: [m] }\n",
    );
    assert!(!ok && out.contains("is not an API version"), "{out}");
}
