//! Format translation end to end, through the real binary: every client
//! format (OpenAI Chat, OpenAI Responses, Anthropic, Gemini) against mock
//! providers of every kind speaking their true wire formats, streaming and
//! not, with tool calls; native passthrough; the request adapters of the
//! chat endpoint; errors and broken streams in each client's own shape.

use crate::common;

use common::wire::{self, Answer, Scenario, Shape, Wire, ALL, SCENARIOS};
use common::*;
use serde_json::{json, Value};

const CLIENT_KEY: &str = "ck-translation-test-0001";

fn provider_id(k: Wire) -> &'static str {
    match k {
        Wire::Chat => "oai",
        Wire::Responses => "oresp",
        Wire::Anthropic => "ant",
        Wire::Gemini => "gem",
    }
}

fn provider_key(k: Wire) -> &'static str {
    match k {
        Wire::Chat => "sk-proj-oai-test",
        Wire::Responses => "sk-proj-resp-test",
        Wire::Anthropic => "sk-ant-api03-test",
        Wire::Gemini => "AIzaSy-gem-test",
    }
}

/// The upstream model of each provider.
fn upstream_model(k: Wire) -> &'static str {
    match k {
        Wire::Chat => "gpt-4o-mini",
        Wire::Responses => "gpt-4.1-mini",
        Wire::Anthropic => "claude-haiku-4-5",
        Wire::Gemini => "gemini-2.5-flash",
    }
}

/// The logical model routed to one provider (`suffix` picks the mock's
/// behaviour: "", "-400", "-503", "-cut").
fn logical(k: Wire, suffix: &str) -> String {
    format!("via-{}{suffix}", provider_id(k))
}

/// One mock per provider kind and a gateway in front of them.
struct Setup {
    mocks: Vec<(Wire, MockProvider)>,
    gw: Gateway,
}

impl Setup {
    async fn start() -> Setup {
        let mut mocks = Vec::new();
        for k in ALL {
            mocks.push((
                k,
                MockProvider::start(move |rec, _| wire::provider_reply(k, rec)).await,
            ));
        }
        let mut cfg =
            // Every test sends its failing cases to the same upstreams:
            // breakers that never open keep each case's answer its own.
            format!("routing:\n  breaker: {{ consecutive_failures: 1000000, min_requests: 1000000 }}\nauth:\n  keys:\n    - {{ name: tester, key: {CLIENT_KEY} }}\nproviders:\n");
        for (k, m) in &mocks {
            // The chat provider is pinned to Chat Completions: the matrix
            // is about translation (`wire_api: auto` has its own tests).
            let wire_api = match k {
                Wire::Responses => ", wire_api: responses",
                Wire::Chat => ", wire_api: chat",
                _ => "",
            };
            let kind = match k {
                Wire::Chat | Wire::Responses => "openai",
                Wire::Anthropic => "anthropic",
                Wire::Gemini => "gemini",
            };
            cfg += &format!(
                "  - {{ id: {}, kind: {kind}{wire_api}, base_url: \"{}\", api_keys: [\"{}\"], models: [{}] }}\n",
                provider_id(*k),
                m.base_url(),
                provider_key(*k),
                upstream_model(*k)
            );
        }
        cfg += "models:\n";
        for k in ALL {
            for suffix in ["", "-400", "-cut", "-midfail", "-length", "-parallel"] {
                cfg += &format!(
                    "  - name: {}\n    upstreams: [{{ provider: {}, model: {}{suffix} }}]\n",
                    logical(k, suffix),
                    provider_id(k),
                    upstream_model(k)
                );
            }
        }
        cfg += "  - name: all-down\n    upstreams:\n";
        for k in ALL {
            cfg += &format!(
                "      - {{ provider: {}, model: {}-503 }}\n",
                provider_id(k),
                upstream_model(k)
            );
        }
        let gw = Gateway::start(&cfg).await;
        Setup { mocks, gw }
    }

    fn mock(&self, k: Wire) -> &MockProvider {
        &self.mocks.iter().find(|(w, _)| *w == k).expect("mock").1
    }

    fn total_requests(&self) -> usize {
        self.mocks.iter().map(|(_, m)| m.count()).sum()
    }

    async fn send(&self, req: &wire::ClientRequest) -> (u16, String, String) {
        self.send_raw(&req.path, &req.headers, req.body.to_string())
            .await
    }

    /// Sends a body as is; returns status, content-type and body.
    async fn send_raw(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: String,
    ) -> (u16, String, String) {
        let mut r = client()
            .post(format!("{}{path}", self.gw.url()))
            .header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let resp = r.body(body).send().await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, ct, resp.text().await.expect("body"))
    }
}

/// Reads a 200 answer in the client's format (stream or not).
fn read_answer(
    client: Wire,
    stream: bool,
    status: u16,
    ct: &str,
    body: &str,
) -> Result<Answer, String> {
    wire::ensure(status == 200, format!("status {status}: {body}"))?;
    if stream {
        wire::ensure(
            ct.starts_with("text/event-stream"),
            format!("content-type {ct}"),
        )?;
        wire::parse_stream_answer(client, body).map_err(|e| format!("{e}\nstream: {body}"))
    } else {
        wire::ensure(
            ct.starts_with("application/json"),
            format!("content-type {ct}"),
        )?;
        let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?;
        wire::parse_json_answer(client, &v).map_err(|e| format!("{e}\nbody: {body}"))
    }
}

/// Checks an answer against what the mock of `provider` said.
fn check_answer(
    client: Wire,
    provider: Wire,
    shape: Shape,
    a: &Answer,
    model: &str,
) -> Result<(), String> {
    let ctx = || format!("answer {a:?}");
    wire::ensure(
        a.model == model,
        format!("model {:?} (want {model:?}); {}", a.model, ctx()),
    )?;
    let want_text = shape.text();
    wire::ensure(
        a.text == want_text,
        format!("text {:?} (want {want_text:?})", a.text),
    )?;
    let want_calls = shape.calls();
    wire::ensure(
        a.calls.len() == want_calls.len(),
        format!(
            "{} tool calls (want {}); {}",
            a.calls.len(),
            want_calls.len(),
            ctx()
        ),
    )?;
    for (i, (c, args)) in a.calls.iter().zip(&want_calls).enumerate() {
        wire::ensure(
            c.name == wire::TOOL_NAME && &c.args == args,
            format!("tool call {i}: {c:?}"),
        )?;
        if client != Wire::Gemini {
            wire::ensure(!c.id.is_empty(), format!("tool call {i} without an id"))?;
            if let Some(up) = wire::upstream_call_ids(provider) {
                wire::ensure(
                    c.id == up[i],
                    format!("tool call {i} id {:?} (upstream said {:?})", c.id, up[i]),
                )?;
            }
        }
    }
    if client != Wire::Gemini {
        let mut ids: Vec<&str> = a.calls.iter().map(|c| c.id.as_str()).collect();
        ids.dedup();
        wire::ensure(
            ids.len() == a.calls.len(),
            format!("tool call ids repeat: {:?}", a.calls),
        )?;
    }
    let finish = wire::expected_finish(client, shape);
    wire::ensure(
        a.finish == finish,
        format!("finish {:?} (want {finish:?})", a.finish),
    )?;
    let usage = shape.usage();
    wire::ensure(
        a.usage == Some(usage),
        format!("usage {:?} (want {usage:?})", a.usage),
    )?;
    Ok(())
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Text => "text",
        Scenario::Tool => "tool",
        Scenario::ToolResult => "tool-result",
    }
}

#[tokio::test]
async fn every_client_format_reaches_every_provider_kind() {
    let s = Setup::start().await;
    let mut failures = Vec::new();
    let mut table = String::new();
    for client in ALL {
        for provider in ALL {
            for stream in [false, true] {
                let mut row = Vec::new();
                for scenario in SCENARIOS {
                    let model = logical(provider, "");
                    let req = wire::client_request(client, &model, scenario, stream, CLIENT_KEY);
                    let before = s.mock(provider).count();
                    let (status, ct, body) = s.send(&req).await;
                    if std::env::var_os("E2E_DUMP").is_some() {
                        println!(
                            "=== {} → {} stream={stream} {scenario:?}\n{body}",
                            client.name(),
                            provider.name()
                        );
                    }
                    let result = read_answer(client, stream, status, &ct, &body)
                        .and_then(|a| check_answer(client, provider, scenario.shape(), &a, &model))
                        .and_then(|()| {
                            wire::ensure(
                                s.mock(provider).count() == before + 1,
                                format!("{} upstream requests", s.mock(provider).count() - before),
                            )?;
                            let rec = s.mock(provider).last();
                            wire::ensure(
                                !rec.headers.iter().any(|(_, v)| v.contains(CLIENT_KEY)),
                                "the client key reached the upstream".into(),
                            )?;
                            wire::check_upstream(
                                provider,
                                &rec,
                                upstream_model(provider),
                                provider_key(provider),
                                scenario,
                                stream,
                            )
                            .map_err(|e| format!("upstream request: {e}"))
                        });
                    row.push(if result.is_ok() { "ok" } else { "FAIL" });
                    if let Err(e) = result {
                        failures.push(format!(
                            "{} → {} ({}, {}): {e}",
                            client.name(),
                            provider.name(),
                            if stream { "stream" } else { "json" },
                            scenario_name(scenario)
                        ));
                    }
                }
                table += &format!(
                    "{:>10} → {:<10} {:<6} text:{:<4} tool:{:<4} tool-result:{}\n",
                    client.name(),
                    provider.name(),
                    if stream { "stream" } else { "json" },
                    row[0],
                    row[1],
                    row[2]
                );
            }
        }
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{table}\n{} failing:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn model_names_shown_to_clients() {
    let s = Setup::start().await;
    let mut failures = Vec::new();
    for client in ALL {
        for provider in ALL {
            for stream in [false, true] {
                // A logical name shows as asked; a provider/model name shows
                // what the provider answered.
                for (asked, want) in [
                    (logical(provider, ""), logical(provider, "")),
                    (
                        format!("{}/{}", provider_id(provider), upstream_model(provider)),
                        wire::served_model(provider, upstream_model(provider)),
                    ),
                ] {
                    let req =
                        wire::client_request(client, &asked, Scenario::Text, stream, CLIENT_KEY);
                    let (status, ct, body) = s.send(&req).await;
                    let r = read_answer(client, stream, status, &ct, &body).and_then(|a| {
                        wire::ensure(
                            a.model == want,
                            format!("model {:?} (want {want:?})", a.model),
                        )
                    });
                    if let Err(e) = r {
                        failures.push(format!(
                            "{} → {} {} asking {asked}: {e}",
                            client.name(),
                            provider.name(),
                            if stream { "stream" } else { "json" }
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn responses_to_a_responses_upstream_pass_through_natively() {
    let s = Setup::start().await;
    let model = logical(Wire::Responses, "");
    // Fields the gateway has no reason to know about travel untouched.
    let body = json!({
        "model": model,
        "instructions": wire::SYSTEM,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": wire::QUESTION}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB..."}
        ],
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": false,
        "metadata": {"trace": "t-1"},
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "truncation": "auto",
        "service_tier": "flex",
        "prompt_cache_key": "pck-1",
        "max_output_tokens": 300
    });
    for stream in [false, true] {
        let mut body = body.clone();
        if stream {
            body["stream"] = json!(true);
        }
        let headers = vec![("authorization".to_owned(), format!("Bearer {CLIENT_KEY}"))];
        let (status, ct, answer) = s
            .send_raw("/v1/responses", &headers, body.to_string())
            .await;
        let a = read_answer(Wire::Responses, stream, status, &ct, &answer).unwrap();
        assert_eq!(a.text, wire::ANSWER);
        assert_eq!(a.model, model);
        assert_eq!(a.usage, Some(Shape::Text.usage()));

        let rec = s.mock(Wire::Responses).last();
        assert_eq!(rec.path, "/v1/responses");
        assert_eq!(
            rec.header("authorization"),
            Some("Bearer sk-proj-resp-test")
        );
        let mut expected = body.clone();
        expected["model"] = json!(upstream_model(Wire::Responses));
        assert_eq!(
            rec.json(),
            expected,
            "the body reaches the upstream unchanged but for the model"
        );

        // The answer is the upstream's, renamed.
        let upstream_answer = if stream {
            wire::provider_sse(
                Wire::Responses,
                upstream_model(Wire::Responses),
                Shape::Text,
            )
            .join("\n\n")
                + "\n\n"
        } else {
            wire::provider_json(
                Wire::Responses,
                upstream_model(Wire::Responses),
                Shape::Text,
            )
            .to_string()
        };
        let served = wire::served_model(Wire::Responses, upstream_model(Wire::Responses));
        let renamed = |s: &str| {
            s.replace(
                &format!("\"model\":\"{served}\""),
                &format!("\"model\":\"{model}\""),
            )
        };
        if stream {
            let got: Vec<Value> = wire::sse_events(&answer)
                .iter()
                .map(|e| serde_json::from_str(&e.data).unwrap())
                .collect();
            let want: Vec<Value> = wire::sse_events(&renamed(&upstream_answer))
                .iter()
                .map(|e| serde_json::from_str(&e.data).unwrap())
                .collect();
            assert_eq!(got, want, "events pass through unchanged but for the model");
        } else {
            let got: Value = serde_json::from_str(&answer).unwrap();
            let want: Value = serde_json::from_str(&renamed(&upstream_answer)).unwrap();
            assert_eq!(got, want);
        }
    }
}

#[tokio::test]
async fn chat_endpoint_adapts_claude_and_gemini_bodies() {
    let s = Setup::start().await;
    let headers = vec![("authorization".to_owned(), format!("Bearer {CLIENT_KEY}"))];
    // A Claude-style body on /v1/chat/completions: system + content blocks,
    // with a tool round trip.
    let claude = |model: &str, stream: bool| {
        json!({
            "model": model,
            "max_tokens": 512,
            "system": [{"type": "text", "text": wire::SYSTEM}],
            "stream": stream,
            "tools": [{"name": wire::TOOL_NAME, "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": wire::QUESTION}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_adapt1", "name": wire::TOOL_NAME, "input": wire::tool_args()}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_adapt1", "content": wire::TOOL_OUTPUT}]}
            ]
        })
    };
    // Gemini-style bodies: `contents`, and `input` holding contents.
    let gemini = |model: &str, stream: bool, key: &str| {
        json!({
            "model": model,
            "stream": stream,
            "systemInstruction": {"parts": [{"text": wire::SYSTEM}]},
            key: [{"role": "user", "parts": [{"text": wire::QUESTION}]}]
        })
    };
    // Streams ask for the usage chunk as OpenAI clients do; without
    // `stream_options` there is none (checked once below).
    let with_usage = |mut body: Value| {
        if body["stream"] == true {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    };
    let mut failures = Vec::new();
    for provider in ALL {
        for stream in [false, true] {
            let model = logical(provider, "");
            for (what, body, scenario) in [
                ("claude-style", claude(&model, stream), Scenario::ToolResult),
                (
                    "gemini contents",
                    gemini(&model, stream, "contents"),
                    Scenario::Text,
                ),
                (
                    "gemini input",
                    gemini(&model, stream, "input"),
                    Scenario::Text,
                ),
            ] {
                let (status, ct, answer) = s
                    .send_raw(
                        "/v1/chat/completions",
                        &headers,
                        with_usage(body).to_string(),
                    )
                    .await;
                let r = read_answer(Wire::Chat, stream, status, &ct, &answer)
                    .and_then(|a| check_answer(Wire::Chat, provider, scenario.shape(), &a, &model))
                    .and_then(|()| {
                        wire::check_upstream(
                            provider,
                            &s.mock(provider).last(),
                            upstream_model(provider),
                            provider_key(provider),
                            scenario,
                            stream,
                        )
                    });
                if let Err(e) = r {
                    failures.push(format!(
                        "{what} → {} {}: {e}",
                        provider.name(),
                        if stream { "stream" } else { "json" }
                    ));
                }
            }
        }
    }
    // Without `stream_options`, an adapted stream carries no usage chunk.
    for provider in ALL {
        let model = logical(provider, "");
        for (what, body) in [
            ("claude-style", claude(&model, true)),
            ("gemini contents", gemini(&model, true, "contents")),
        ] {
            let (status, ct, answer) = s
                .send_raw("/v1/chat/completions", &headers, body.to_string())
                .await;
            match read_answer(Wire::Chat, true, status, &ct, &answer) {
                Ok(a) if a.usage.is_none() => {}
                Ok(a) => failures.push(format!(
                    "{what} → {} stream without stream_options: usage {:?}",
                    provider.name(),
                    a.usage
                )),
                Err(e) => failures.push(format!("{what} → {}: {e}", provider.name())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Checks an error body has `wire`'s own error shape.
fn check_error(
    wire: Wire,
    status: u16,
    body: &str,
    want_status: u16,
    contains: &str,
) -> Result<(), String> {
    wire::ensure(
        status == want_status,
        format!("status {status} (want {want_status}): {body}"),
    )?;
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("error body not JSON ({e}): {body}"))?;
    let msg = match wire {
        Wire::Chat | Wire::Responses => {
            wire::ensure(v["error"]["type"].is_string(), format!("error.type: {v}"))?;
            wire::ensure(v["error"].get("code").is_some(), format!("error.code: {v}"))?;
            &v["error"]["message"]
        }
        Wire::Anthropic => {
            wire::ensure(
                v["type"] == "error" && v["error"]["type"].is_string(),
                format!("shape: {v}"),
            )?;
            &v["error"]["message"]
        }
        Wire::Gemini => {
            wire::ensure(
                v["error"]["code"] == want_status,
                format!("error.code: {v}"),
            )?;
            let st = match want_status {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                404 => "NOT_FOUND",
                _ => "",
            };
            wire::ensure(
                v["error"]["status"]
                    .as_str()
                    .is_some_and(|s| st.is_empty() || s == st),
                format!("error.status: {v}"),
            )?;
            &v["error"]["message"]
        }
    };
    wire::ensure(
        msg.as_str().is_some_and(|m| m.contains(contains)),
        format!("message does not contain {contains:?}: {v}"),
    )
}

#[tokio::test]
async fn errors_come_in_each_client_formats_shape() {
    let s = Setup::start().await;
    let mut failures = Vec::new();
    let mut fail = |what: String, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(format!("{what}: {e}"));
        }
    };
    for client in ALL {
        for stream in [false, true] {
            let mode = if stream { "stream" } else { "json" };
            // Unknown model.
            let req =
                wire::client_request(client, "no-such-model", Scenario::Text, stream, CLIENT_KEY);
            let before = s.total_requests();
            let (status, _, body) = s.send(&req).await;
            fail(
                format!("{} {mode} unknown model", client.name()),
                check_error(client, status, &body, 404, "no-such-model"),
            );
            assert_eq!(
                s.total_requests(),
                before,
                "nothing goes upstream for an unknown model"
            );

            // Bad JSON.
            let req = wire::client_request(
                client,
                &logical(Wire::Chat, ""),
                Scenario::Text,
                stream,
                CLIENT_KEY,
            );
            let (status, _, body) = s
                .send_raw(&req.path, &req.headers, "{\"model\": \"x\", ".into())
                .await;
            fail(
                format!("{} {mode} bad JSON", client.name()),
                check_error(client, status, &body, 400, "JSON"),
            );

            // No key, in the SDK's header.
            let (status, _, body) = s.send_raw(&req.path, &[], req.body.to_string()).await;
            fail(
                format!("{} {mode} no key", client.name()),
                check_error(client, status, &body, 401, ""),
            );

            // The upstream refuses the request: its message, in the client's shape.
            for provider in ALL {
                let req = wire::client_request(
                    client,
                    &logical(provider, "-400"),
                    Scenario::Text,
                    stream,
                    CLIENT_KEY,
                );
                let (status, _, body) = s.send(&req).await;
                fail(
                    format!(
                        "{} → {} {mode} upstream 400",
                        client.name(),
                        provider.name()
                    ),
                    check_error(client, status, &body, 400, wire::UPSTREAM_400),
                );
            }

            // Every upstream fails.
            let req = wire::client_request(client, "all-down", Scenario::Text, stream, CLIENT_KEY);
            let before: Vec<usize> = ALL.iter().map(|k| s.mock(*k).count()).collect();
            let (status, _, body) = s.send(&req).await;
            fail(
                format!("{} {mode} all upstreams down", client.name()),
                check_error(client, status, &body, 502, "all upstreams failed"),
            );
            let after: Vec<usize> = ALL.iter().map(|k| s.mock(*k).count()).collect();
            fail(
                format!(
                    "{} {mode} all upstreams down: each tried once",
                    client.name()
                ),
                wire::ensure(
                    before.iter().zip(&after).all(|(b, a)| a - b == 1),
                    format!("attempts per provider {before:?} → {after:?}"),
                ),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_one_error_event_in_the_clients_format() {
    let s = Setup::start().await;
    let mut failures = Vec::new();
    for client in ALL {
        for provider in ALL {
            let req = wire::client_request(
                client,
                &logical(provider, "-cut"),
                Scenario::Text,
                true,
                CLIENT_KEY,
            );
            let (status, ct, body) = s.send(&req).await;
            let r = check_one_error_event(client, status, &ct, &body);
            if let Err(e) = r {
                failures.push(format!(
                    "{} → {}: {e}\nstream: {body}",
                    client.name(),
                    provider.name()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn gemini_sdk_paths_and_key_styles() {
    let s = Setup::start().await;
    let model = logical(Wire::Anthropic, "");
    let req = wire::client_request(Wire::Gemini, &model, Scenario::Text, false, CLIENT_KEY);
    // `?key=` (older SDKs and curl examples) and the /v1 prefix (newer SDKs).
    for path in [
        format!("/v1beta/models/{model}:generateContent?key={CLIENT_KEY}"),
        format!("/v1/models/{model}:generateContent?key={CLIENT_KEY}"),
        format!("/v1/models/{model}:streamGenerateContent?alt=sse&key={CLIENT_KEY}"),
    ] {
        let stream = path.contains("stream");
        let (status, ct, body) = s.send_raw(&path, &[], req.body.to_string()).await;
        let a = read_answer(Wire::Gemini, stream, status, &ct, &body)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        check_answer(Wire::Gemini, Wire::Anthropic, Shape::Text, &a, &model).unwrap();
        let rec = s.mock(Wire::Anthropic).last();
        assert!(
            !rec.path.contains(CLIENT_KEY)
                && !rec.headers.iter().any(|(_, v)| v.contains(CLIENT_KEY)),
            "the client key stays at the gateway"
        );
    }
    // A Gemini client's own key reaching a Gemini upstream is replaced too.
    let req = wire::client_request(
        Wire::Gemini,
        &logical(Wire::Gemini, ""),
        Scenario::Text,
        false,
        CLIENT_KEY,
    );
    let (status, _, _) = s
        .send_raw(
            &format!("{}?key={CLIENT_KEY}", req.path),
            &[],
            req.body.to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let rec = s.mock(Wire::Gemini).last();
    assert_eq!(
        rec.header("x-goog-api-key"),
        Some(provider_key(Wire::Gemini))
    );
    assert!(!rec.path.contains("key="), "{}", rec.path);
}

#[tokio::test]
async fn length_finish_and_parallel_tool_calls_translate() {
    let s = Setup::start().await;
    let mut failures = Vec::new();
    let mut table = String::new();
    for client in ALL {
        for provider in ALL {
            let mut row = Vec::new();
            for (shape, suffix, scenario) in [
                (Shape::Length, "-length", Scenario::Text),
                (Shape::Parallel, "-parallel", Scenario::Tool),
            ] {
                for stream in [false, true] {
                    let model = logical(provider, suffix);
                    let req = wire::client_request(client, &model, scenario, stream, CLIENT_KEY);
                    let (status, ct, body) = s.send(&req).await;
                    let r = read_answer(client, stream, status, &ct, &body)
                        .and_then(|a| check_answer(client, provider, shape, &a, &model));
                    row.push(if r.is_ok() { "ok" } else { "FAIL" });
                    if let Err(e) = r {
                        failures.push(format!(
                            "{} → {} {shape:?} {}: {e}",
                            client.name(),
                            provider.name(),
                            if stream { "stream" } else { "json" }
                        ));
                    }
                }
            }
            table += &format!(
                "{:>10} → {:<10} length json:{:<4} stream:{:<4} parallel json:{:<4} stream:{}\n",
                client.name(),
                provider.name(),
                row[0],
                row[1],
                row[2],
                row[3]
            );
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n\n"));
}

#[tokio::test]
async fn an_error_event_inside_an_upstream_stream_reaches_the_client_in_its_format() {
    let s = Setup::start().await;
    let mut failures = Vec::new();
    for client in ALL {
        for provider in ALL {
            let req = wire::client_request(
                client,
                &logical(provider, "-midfail"),
                Scenario::Text,
                true,
                CLIENT_KEY,
            );
            let (status, ct, body) = s.send(&req).await;
            let r = check_one_error_event(client, status, &ct, &body);
            if let Err(e) = r {
                failures.push(format!(
                    "{} → {}: {e}\nstream: {body}",
                    client.name(),
                    provider.name()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A stream that started with text and then ended with exactly one error
/// event in the client's format, with nothing after it.
fn check_one_error_event(client: Wire, status: u16, ct: &str, body: &str) -> Result<(), String> {
    wire::ensure(status == 200, format!("status {status}"))?;
    wire::ensure(
        ct.starts_with("text/event-stream"),
        format!("content-type {ct}"),
    )?;
    wire::ensure(
        body.contains(wire::ANSWER_PIECES[0]),
        "the text before the failure is missing".into(),
    )?;
    let (errors, after) = wire::stream_errors(client, body);
    wire::ensure(errors.len() == 1, format!("{} error events", errors.len()))?;
    wire::ensure(after == 0, format!("{after} events after the error event"))?;
    let e = &errors[0];
    match client {
        Wire::Chat => wire::ensure(e["error"]["message"].is_string(), format!("{e}"))?,
        Wire::Responses => wire::ensure(
            (e["type"] == "error" && e["message"].is_string())
                || (e["type"] == "response.failed"
                    && e["response"]["error"]["message"].is_string()),
            format!("{e}"),
        )?,
        Wire::Anthropic => wire::ensure(
            e["error"]["type"].is_string() && e["error"]["message"].is_string(),
            format!("{e}"),
        )?,
        Wire::Gemini => wire::ensure(
            e["error"]["code"].is_u64()
                && e["error"]["status"].is_string()
                && e["error"]["message"].is_string(),
            format!("{e}"),
        )?,
    }
    if client == Wire::Gemini {
        wire::ensure(
            body.lines().all(|l| l.is_empty() || l.starts_with("data:")),
            "Gemini streams carry `data:` lines only".into(),
        )?;
    }
    Ok(())
}
