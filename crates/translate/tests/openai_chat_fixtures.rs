//! OpenAI Chat Completions: recorded exchanges (tests/fixtures/openai/chat-*.yaml,
//! Apache-2.0) and hand-written shapes (hand-*) through every direction of
//! `openai_chat`.

use apiproxy_translate::ir::*;
use apiproxy_translate::openai_chat::{self, StreamDecoder, StreamEncoder};
use apiproxy_translate::{SseEvent, SseParser, StreamDecode, StreamEncode, StreamOptions};
use bytes::BytesMut;
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/openai/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Recorded {
    request: String,
    response: String,
    code: u64,
}

fn recorded(name: &str) -> Recorded {
    let y: serde_yaml::Value = serde_yaml::from_str(&fixture(name)).unwrap();
    let i = &y["interactions"][0];
    Recorded {
        request: i["request"]["body"].as_str().unwrap().to_owned(),
        response: i["response"]["body"].as_str().unwrap().to_owned(),
        code: i["response"]["code"].as_u64().unwrap(),
    }
}

const RECORDED: &[&str] = &[
    "chat-bad-request.yaml",
    "chat-basic.yaml",
    "chat-detailed-usage.yaml",
    "chat-image-to-text.yaml",
    "chat-json-mode.yaml",
    "chat-multimodal.yaml",
    "chat-multiturn.yaml",
    "chat-no-messages.yaml",
    "chat-parallel-tools.yaml",
    "chat-reasoning.yaml",
    "chat-streaming-detailed-usage.yaml",
    "chat-streaming.yaml",
    "chat-tools.yaml",
    "chat-unknown-model.yaml",
];

fn decode_req(body: &str) -> Result<ChatRequest, apiproxy_translate::TranslateError> {
    openai_chat::decode_request(serde_json::from_str(body).unwrap())
}

fn text(t: &str) -> ContentPart {
    ContentPart::Text { text: t.into() }
}

/// A tiny deterministic PRNG (no rand crate).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Feeds `bytes` through the SSE parser in random-sized pieces (1..=23 bytes).
fn sse_events(bytes: &[u8], seed: u64) -> Vec<SseEvent> {
    let mut rng = Lcg(seed);
    let mut p = SseParser::default();
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (1 + rng.next() as usize % 23).min(rest.len());
        let (a, b) = rest.split_at(n);
        p.feed(a, &mut out).unwrap();
        rest = b;
    }
    p.finish(&mut out);
    out
}

fn decode_stream(bytes: &[u8], seed: u64) -> Vec<StreamEvent> {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    for ev in sse_events(bytes, seed) {
        d.decode(&ev, &mut out).unwrap();
    }
    out
}

fn encode_stream(events: &[StreamEvent], opts: StreamOptions) -> BytesMut {
    let mut e = StreamEncoder::new(opts);
    let mut out = BytesMut::new();
    for ev in events {
        e.encode(ev, &mut out);
    }
    e.finish(&mut out);
    out
}

#[derive(Debug, Default, PartialEq)]
struct Summary {
    id: String,
    model: String,
    text: String,
    thinking: String,
    /// (index, id, name, arguments)
    tools: Vec<(u32, String, String, String)>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    errors: Vec<String>,
}

fn summarize(events: &[StreamEvent]) -> Summary {
    let mut s = Summary::default();
    assert!(
        matches!(events.first(), Some(StreamEvent::Start { .. })),
        "Start first: {events:?}"
    );
    let mut finished = false;
    for ev in events {
        match ev {
            StreamEvent::Start { id, model } => {
                assert!(s.id.is_empty(), "one Start");
                s.id = id.clone();
                s.model = model.clone();
            }
            StreamEvent::TextDelta { text } => s.text.push_str(text),
            StreamEvent::ThinkingDelta { text } => s.thinking.push_str(text),
            StreamEvent::ThinkingSignature { .. } => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                assert_eq!(*index as usize, s.tools.len(), "tool indexes count from 0");
                s.tools
                    .push((*index, id.clone(), name.clone(), String::new()));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let t = s
                    .tools
                    .iter_mut()
                    .find(|t| t.0 == *index)
                    .expect("delta after start");
                t.3.push_str(arguments);
            }
            StreamEvent::Usage(u) => {
                assert!(!finished, "usage comes before finish");
                s.usage = Some(*u);
            }
            StreamEvent::Finish { reason } => {
                assert!(!finished, "one Finish");
                finished = true;
                s.finish = Some(reason.clone());
            }
            StreamEvent::Error { message } => s.errors.push(message.clone()),
            StreamEvent::RedactedThinking { .. } => {}
        }
    }
    s
}

/// The JSON data of every client SSE event (`[DONE]` as a string).
fn client_chunks(bytes: &[u8]) -> Vec<Value> {
    sse_events(bytes, 7)
        .into_iter()
        .map(|e| {
            assert!(e.event.is_none(), "chat streams carry data lines only");
            if e.is_done() {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(&e.data).unwrap()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[test]
fn recorded_requests_decode() {
    for name in RECORDED {
        let r = recorded(name);
        let got = decode_req(&r.request);
        match *name {
            "chat-bad-request.yaml" => {
                let e = got.unwrap_err();
                assert_eq!(
                    e.message,
                    "messages[0].content: expected a string or an array of content parts, got null"
                );
                continue;
            }
            "chat-no-messages.yaml" => {
                assert!(got.unwrap_err().message.starts_with("messages: "));
                continue;
            }
            _ => {}
        }
        let req = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        match *name {
            "chat-basic.yaml" | "chat-streaming.yaml" => {
                assert_eq!(req.model, "gpt-5-nano");
                assert_eq!(
                    req.messages,
                    vec![Message {
                        role: Role::User,
                        content: vec![text("Hello!")]
                    }]
                );
                assert_eq!(req.stream, *name == "chat-streaming.yaml");
                assert!(!req.stream_include_usage);
            }
            "chat-unknown-model.yaml" => assert_eq!(req.model, "gpt-4.1-nano-wrong"),
            "chat-detailed-usage.yaml" | "chat-streaming-detailed-usage.yaml" => {
                assert_eq!(req.system, vec![text("Hello, I'm a developer!")]);
                assert!(req.messages.is_empty());
                assert_eq!(req.max_tokens, Some(100));
                assert_eq!(req.temperature, Some(1.0));
                let streaming = *name == "chat-streaming-detailed-usage.yaml";
                assert_eq!(req.stream, streaming);
                assert_eq!(req.stream_include_usage, streaming);
            }
            "chat-image-to-text.yaml" => {
                let c = &req.messages[0].content;
                assert_eq!(c[0], text("Answer in up to 5 words: What's in this image?"));
                match &c[1] {
                    ContentPart::Image {
                        source: ImageSource::Base64 { media_type, data },
                    } => {
                        assert_eq!(media_type, "image/png");
                        assert!(data.starts_with("iVBORw0KGgo") && data.ends_with("CYII="));
                    }
                    other => panic!("{other:?}"),
                }
            }
            "chat-multimodal.yaml" => {
                assert_eq!(req.max_tokens, Some(100));
                assert!(matches!(
                    &req.messages[0].content[1],
                    ContentPart::Image { source: ImageSource::Url { url } }
                        if url.starts_with("https://upload.wikimedia.org/")
                ));
            }
            "chat-multiturn.yaml" => {
                assert_eq!(req.system, vec![text("You are a helpful assistant.")]);
                let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
                assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
                assert_eq!(
                    req.messages[1].content,
                    vec![text("Hello! How can I assist you today?")]
                );
            }
            "chat-json-mode.yaml" => {
                assert_eq!(req.response_format, Some(ResponseFormat::JsonObject))
            }
            "chat-tools.yaml" | "chat-parallel-tools.yaml" => {
                assert_eq!(req.tools.len(), 1);
                assert_eq!(req.tools[0].name, "get_current_weather");
                assert_eq!(
                    req.tools[0].description.as_deref(),
                    Some("Get the current weather in a given location")
                );
                assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
                assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
                let parallel = (*name == "chat-parallel-tools.yaml").then_some(true);
                assert_eq!(req.parallel_tool_calls, parallel);
            }
            "chat-reasoning.yaml" => {
                assert!(matches!(&req.messages[0].content[0],
                    ContentPart::Text { text } if text.starts_with("A bat and ball")))
            }
            other => panic!("no assertions for {other}"),
        }
        // Same-format round trip keeps everything the IR carries.
        let again =
            decode_req(std::str::from_utf8(&openai_chat::encode_request(&req).unwrap()).unwrap());
        if req.messages.is_empty() {
            continue; // a developer-only request: re-encoded it is still developer-only
        }
        let mut again = again.unwrap();
        if req.stream {
            // The encoder always asks the upstream for usage.
            assert!(again.stream_include_usage);
            again.stream_include_usage = req.stream_include_usage;
        }
        assert_eq!(again, req, "{name} round trip");
    }
}

#[test]
fn agent_request_decodes_everything() {
    let req = decode_req(&fixture("hand-request-agent.json")).unwrap();
    assert_eq!(req.model, "gpt-4.1");
    assert_eq!(
        req.system,
        vec![text("You are a coding agent."), text("Prefer small diffs.")]
    );
    assert_eq!(req.messages.len(), 5, "{:#?}", req.messages);
    assert_eq!(
        req.messages[0].content[1],
        ContentPart::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        }
    );
    assert_eq!(
        req.messages[0].content[2],
        ContentPart::Image {
            source: ImageSource::Url {
                url: "https://example.com/cat.jpg".into()
            }
        }
    );
    assert_eq!(
        req.messages[1],
        Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Thinking {
                    text: "Two cities: call the tool twice.".into(),
                    signature: None
                },
                ContentPart::ToolCall {
                    id: "call_sf".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"San Francisco, CA"}"#.into()
                },
                ContentPart::ToolCall {
                    id: "call_tokyo".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"Tokyo"}"#.into()
                },
            ]
        }
    );
    // Both tool messages in one User message.
    assert_eq!(
        req.messages[2],
        Message {
            role: Role::User,
            content: vec![
                ContentPart::ToolResult {
                    call_id: "call_sf".into(),
                    name: None,
                    content: vec![text("18C, fog")],
                    is_error: false
                },
                ContentPart::ToolResult {
                    call_id: "call_tokyo".into(),
                    name: None,
                    content: vec![text("25C, sunny")],
                    is_error: false
                },
            ]
        }
    );
    assert_eq!(req.messages[3].role, Role::Assistant);
    assert_eq!(req.messages[4].content, vec![text("Thanks!")]);
    assert_eq!(
        req.tools,
        vec![Tool {
            name: "get_weather".into(),
            description: Some("Get the weather".into()),
            parameters: json!({"type": "object", "properties": {"location": {"type": "string"}},
                "required": ["location"], "additionalProperties": false}),
            strict: Some(true),
        }]
    );
    assert_eq!(
        req.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );
    assert_eq!(req.parallel_tool_calls, Some(true));
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            strict: Some(true)
        })
    );
    assert_eq!(req.max_tokens, Some(1024), "max_completion_tokens wins");
    assert_eq!(req.stop, vec!["\n\nEND".to_owned()]);
    assert_eq!(req.temperature, Some(0.2));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.seed, Some(42));
    assert_eq!(req.n, Some(1));
    assert_eq!(req.presence_penalty, Some(0.5));
    assert_eq!(req.frequency_penalty, Some(-0.5));
    assert_eq!(req.user.as_deref(), Some("user-1234"));
    assert_eq!(
        req.reasoning,
        Some(Reasoning {
            effort: Some("high".into()),
            budget_tokens: None,
            disabled: false
        })
    );
    assert!(req.stream && req.stream_include_usage);
}

#[test]
fn agent_request_encodes_for_openai() {
    let req = decode_req(&fixture("hand-request-agent.json")).unwrap();
    let body: Value = serde_json::from_slice(&openai_chat::encode_request(&req).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "You are a coding agent.\n\nPrefer small diffs."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this screenshot, and what's the weather in SF and Tokyo?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_sf", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}},
                    {"id": "call_tokyo", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Tokyo\"}"}}
                ]},
                {"role": "tool", "content": "18C, fog", "tool_call_id": "call_sf"},
                {"role": "tool", "content": "25C, sunny", "tool_call_id": "call_tokyo"},
                {"role": "assistant", "content": "SF is 18C and foggy; Tokyo is 25C and sunny."},
                {"role": "user", "content": "Thanks!"}
            ],
            "max_completion_tokens": 1024,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["\n\nEND"],
            "seed": 42,
            "n": 1,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "user": "user-1234",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                    "required": ["location"], "additionalProperties": false}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": true,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": true}},
            "reasoning_effort": "high",
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[test]
fn foreign_ir_encodes_deliberately() {
    // What an Anthropic client could send, in IR.
    let req = ChatRequest {
        model: "gpt-4o".into(),
        system: vec![text("a"), text("b")],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![text("hi")],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Thinking {
                        text: "hmm".into(),
                        signature: Some("sig".into()),
                    },
                    ContentPart::RedactedThinking { data: "xx".into() },
                    text("Let me look."),
                    ContentPart::ToolCall {
                        id: "toolu_1".into(),
                        name: "read".into(),
                        arguments: String::new(),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::ToolResult {
                        call_id: "toolu_1".into(),
                        name: Some("read".into()),
                        content: vec![
                            text("line 1"),
                            ContentPart::Image {
                                source: ImageSource::Base64 {
                                    media_type: "image/jpeg".into(),
                                    data: "AAAA".into(),
                                },
                            },
                        ],
                        is_error: true,
                    },
                    text("and now?"),
                ],
            },
        ],
        top_k: Some(40),
        tool_choice: Some(ToolChoice::Required), // no tools: dropped
        parallel_tool_calls: Some(false),        // no tools: dropped
        reasoning: Some(Reasoning {
            effort: None,
            budget_tokens: Some(10_000),
            disabled: false,
        }),
        stream: true,
        ..ChatRequest::default()
    };
    let body: Value = serde_json::from_slice(&openai_chat::encode_request(&req).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "a\n\nb"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
                {"role": "tool", "content": "Error: line 1\n[image: image/jpeg, not shown]", "tool_call_id": "toolu_1"},
                {"role": "user", "content": "and now?"}
            ],
            "reasoning_effort": "medium",
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[test]
fn budget_to_effort_thresholds() {
    use openai_chat::effort_for_budget as e;
    assert_eq!(e(0), None);
    assert_eq!(e(1024), Some("low"));
    assert_eq!(e(4000), Some("low"));
    assert_eq!(e(4096), Some("low"));
    assert_eq!(e(4097), Some("medium"));
    assert_eq!(e(16384), Some("medium"));
    assert_eq!(e(31999), Some("high"));
    let mut req = ChatRequest {
        model: "o3".into(),
        reasoning: Some(Reasoning {
            effort: None,
            budget_tokens: Some(20_000),
            disabled: true,
        }),
        ..ChatRequest::default()
    };
    let body: Value = serde_json::from_slice(&openai_chat::encode_request(&req).unwrap()).unwrap();
    assert!(body.get("reasoning_effort").is_none(), "disabled: omitted");
    req.reasoning = Some(Reasoning {
        effort: None,
        budget_tokens: Some(20_000),
        disabled: false,
    });
    let body: Value = serde_json::from_slice(&openai_chat::encode_request(&req).unwrap()).unwrap();
    assert_eq!(body["reasoning_effort"], "high");
}

#[test]
fn legacy_functions_decode() {
    let req = openai_chat::decode_request(json!({
        "model": "gpt-3.5-turbo",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "function_call": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"role": "function", "name": "get_weather", "content": "sunny"}
        ],
        "functions": [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "function_call": {"name": "get_weather"}
    }))
    .unwrap();
    let ContentPart::ToolCall { id, name, .. } = &req.messages[1].content[0] else {
        panic!("{:?}", req.messages[1]);
    };
    assert_eq!(name, "get_weather");
    assert_eq!(
        req.messages[2].content,
        vec![ContentPart::ToolResult {
            call_id: id.clone(),
            name: Some("get_weather".into()),
            content: vec![text("sunny")],
            is_error: false
        }]
    );
    assert_eq!(req.tools[0].name, "get_weather");
    assert_eq!(
        req.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );
}

#[test]
fn request_errors_name_the_field() {
    let cases = [
        (json!([]), "request body must be a JSON object"),
        (json!({"model": "m"}), "messages: required (an array of messages)"),
        (
            json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
            "model: expected a string, got a number",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}, {"role": "user", "content": 3}]}),
            "messages[2].content: expected a string or an array of content parts, got a number",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}),
            "messages[0].content[0]: content part type \"input_audio\" is not supported for translation",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "file", "file": {"file_id": "f"}}]}]}),
            "messages[0].content[1]: content part type \"file\" is not supported for translation",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            "messages[0].content[0].image_url.url: expected an http(s) URL or a base64 data URL",
        ),
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role: unsupported role \"robot\" (expected system, developer, user, assistant or tool)",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id: required (a string)",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"description": "d"}}]}),
            "tools[0].function.name: required (a string)",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}),
            "stop[0]: expected a string, got a number",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            "max_tokens: expected a non-negative integer, got a number",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}),
            "tool_choice: unknown value \"sometimes\" (expected auto, none, required or a function)",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(
            openai_chat::decode_request(body.clone())
                .unwrap_err()
                .message,
            want,
            "{body}"
        );
    }
    // Unknown fields are ignored.
    let req = openai_chat::decode_request(
        json!({"messages": [{"role": "user", "content": "x", "weird": 1}],
        "logprobs": true, "prediction": {"type": "content"}, "stop": "END"}),
    )
    .unwrap();
    assert_eq!(req.stop, vec!["END".to_owned()]);
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[test]
fn recorded_responses_decode_and_round_trip() {
    for name in RECORDED {
        let r = recorded(name);
        if name.contains("streaming") {
            continue;
        }
        let got = openai_chat::decode_response(r.response.as_bytes());
        if r.code != 200 {
            let e = got.unwrap_err();
            let upstream: Value = serde_json::from_str(&r.response).unwrap();
            let msg = upstream["error"]["message"].as_str().unwrap();
            assert_eq!(e.message, format!("upstream error: {msg}"));
            continue;
        }
        let resp = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let upstream: Value = serde_json::from_str(&r.response).unwrap();
        assert_eq!(resp.id, upstream["id"].as_str().unwrap());
        assert_eq!(resp.model, "gpt-5-nano-2025-08-07");
        assert_eq!(resp.created, upstream["created"].as_u64().unwrap());
        let u = &upstream["usage"];
        assert_eq!(
            resp.usage,
            Some(Usage {
                input_tokens: u["prompt_tokens"].as_u64().unwrap(),
                output_tokens: u["completion_tokens"].as_u64().unwrap(),
                cached_input_tokens: Some(0),
                cache_creation_input_tokens: None,
                cache_creation_1h_input_tokens: None,
                reasoning_tokens: u["completion_tokens_details"]["reasoning_tokens"].as_u64(),
            })
        );
        let msg = &upstream["choices"][0]["message"];
        match upstream["choices"][0]["finish_reason"].as_str().unwrap() {
            "tool_calls" => {
                assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));
                let call = &msg["tool_calls"][0];
                assert_eq!(
                    resp.content,
                    vec![ContentPart::ToolCall {
                        id: call["id"].as_str().unwrap().into(),
                        name: "get_current_weather".into(),
                        arguments: call["function"]["arguments"].as_str().unwrap().into(),
                    }]
                );
            }
            "length" => {
                assert_eq!(resp.finish_reason, Some(FinishReason::Length));
                assert!(resp.content.is_empty(), "empty content is no part");
            }
            "stop" => {
                assert_eq!(resp.finish_reason, Some(FinishReason::Stop));
                assert_eq!(resp.content, vec![text(msg["content"].as_str().unwrap())]);
            }
            other => panic!("{other}"),
        }
        // Encoded for a client, the same answer comes back.
        let out = openai_chat::encode_response(&resp);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], msg["content"]);
        assert_eq!(
            v["choices"][0]["finish_reason"],
            upstream["choices"][0]["finish_reason"]
        );
        assert_eq!(v["usage"]["total_tokens"], u["total_tokens"]);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            u["completion_tokens_details"]["reasoning_tokens"]
        );
        assert_eq!(openai_chat::decode_response(&out).unwrap(), resp, "{name}");
    }
}

#[test]
fn parallel_tool_calls_and_cached_tokens_response() {
    let body = fixture("hand-response-cached-parallel.json");
    let resp = openai_chat::decode_response(body.as_bytes()).unwrap();
    assert_eq!(
        resp.content,
        vec![
            ContentPart::ToolCall {
                id: "call_sf".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"San Francisco, CA"}"#.into()
            },
            ContentPart::ToolCall {
                id: "call_tokyo".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"Tokyo"}"#.into()
            },
        ]
    );
    assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        resp.usage,
        Some(Usage {
            input_tokens: 2048,
            output_tokens: 52,
            cached_input_tokens: Some(1920),
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: Some(0)
        })
    );
    let out: Value = serde_json::from_slice(&openai_chat::encode_response(&resp)).unwrap();
    assert_eq!(
        out,
        json!({
            "id": "chatcmpl-BTresp",
            "object": "chat.completion",
            "created": 1746000300,
            "model": "gpt-4.1-2025-04-14",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [
                        {"id": "call_sf", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}},
                        {"id": "call_tokyo", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Tokyo\"}"}}
                    ],
                    "refusal": null
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 2048, "completion_tokens": 52, "total_tokens": 2100,
                "prompt_tokens_details": {"cached_tokens": 1920},
                "completion_tokens_details": {"reasoning_tokens": 0}}
        })
    );
}

#[test]
fn deepseek_reasoning_response() {
    let body = fixture("hand-response-deepseek-reasoning.json");
    let resp = openai_chat::decode_response(body.as_bytes()).unwrap();
    assert_eq!(
        resp.content,
        vec![
            ContentPart::Thinking {
                text: "Compare decimals: 0.8 > 0.11.".into(),
                signature: None
            },
            text("9.8 is greater."),
        ]
    );
    assert_eq!(resp.usage.unwrap().reasoning_tokens, Some(31));
    let out: Value = serde_json::from_slice(&openai_chat::encode_response(&resp)).unwrap();
    assert_eq!(
        out["choices"][0]["message"]["reasoning_content"],
        "Compare decimals: 0.8 > 0.11."
    );
    assert_eq!(out["choices"][0]["message"]["content"], "9.8 is greater.");
    assert_eq!(out["id"], "930c60df-bf64-41c9-a88e-3ec75f81e00e");
}

#[test]
fn foreign_response_encodes() {
    // A Gemini-like answer: no id, no created, STOP with a function call.
    let resp = ChatResponse {
        model: "gemini-2.5-flash".into(),
        content: vec![
            text("Checking"),
            text(" now."),
            ContentPart::ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
            },
        ],
        finish_reason: Some(FinishReason::Stop),
        ..ChatResponse::default()
    };
    let out: Value = serde_json::from_slice(&openai_chat::encode_response(&resp)).unwrap();
    assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(out["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(out["choices"][0]["message"]["content"], "Checking now.");
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert!(out.get("usage").is_none());
    let other = ChatResponse {
        finish_reason: Some(FinishReason::Other("pause_turn".into())),
        ..ChatResponse::default()
    };
    let out: Value = serde_json::from_slice(&openai_chat::encode_response(&other)).unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["choices"][0]["message"]["content"], "");
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// The text an upstream transcript carries, read independently of the decoder.
fn transcript_text(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Client chunks are well formed: one id/created/model, role first,
/// usage-only chunk (if any) right before `[DONE]`, `[DONE]` last.
fn check_client_stream(bytes: &[u8], include_usage: bool) -> Vec<Value> {
    let chunks = client_chunks(bytes);
    assert_eq!(chunks.last(), Some(&Value::String("[DONE]".into())));
    let objs: Vec<&Value> = chunks.iter().filter(|c| c.is_object()).collect();
    let first = objs[0];
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    for c in &objs {
        if c.get("error").is_some() {
            continue;
        }
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], first["id"]);
        assert_eq!(c["created"], first["created"]);
        assert_eq!(c["model"], first["model"]);
    }
    let with_usage: Vec<usize> = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.get("usage").is_some_and(|u| !u.is_null()))
        .map(|(i, _)| i)
        .collect();
    if include_usage && !with_usage.is_empty() {
        assert_eq!(with_usage, vec![chunks.len() - 2]);
        assert_eq!(chunks[chunks.len() - 2]["choices"], json!([]));
    } else {
        assert!(with_usage.is_empty());
    }
    chunks
}

#[test]
fn recorded_streams_decode_in_random_pieces() {
    for (name, finish, usage) in [
        ("chat-streaming.yaml", FinishReason::Stop, None),
        (
            "chat-streaming-detailed-usage.yaml",
            FinishReason::Length,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 100,
                cached_input_tokens: Some(0),
                cache_creation_input_tokens: None,
                cache_creation_1h_input_tokens: None,
                reasoning_tokens: Some(100),
            }),
        ),
    ] {
        let r = recorded(name);
        let expected_text = transcript_text(&r.response);
        let mut first: Option<Vec<StreamEvent>> = None;
        for seed in 0..8 {
            let events = decode_stream(r.response.as_bytes(), seed);
            if let Some(f) = &first {
                assert_eq!(&events, f, "{name}: chunking must not matter");
                continue;
            }
            let s = summarize(&events);
            assert!(s.id.starts_with("chatcmpl-C4Hq"));
            assert_eq!(s.model, "gpt-5-nano-2025-08-07");
            assert_eq!(s.text, expected_text);
            assert_eq!(s.finish, Some(finish.clone()));
            assert_eq!(s.usage, usage);
            assert!(s.tools.is_empty() && s.errors.is_empty());
            if name == "chat-streaming.yaml" {
                assert!(s
                    .text
                    .starts_with("Hi there! How can I help today? I can answer"));
            }
            first = Some(events);
        }
        // Same-format round trip: decode -> encode -> decode is the same stream.
        let events = first.unwrap();
        for include_usage in [true, false] {
            let bytes = encode_stream(
                &events,
                StreamOptions {
                    model_override: None,
                    include_usage,
                },
            );
            check_client_stream(&bytes, include_usage);
            let again = decode_stream(&bytes, 3);
            let mut want = summarize(&events);
            if !include_usage {
                want.usage = None;
            }
            assert_eq!(summarize(&again), want, "{name}");
        }
    }
}

#[test]
fn streamed_parallel_tool_calls() {
    let body = fixture("hand-stream-parallel-tools.sse");
    for seed in 0..6 {
        let events = decode_stream(body.as_bytes(), seed);
        let s = summarize(&events);
        assert_eq!(s.id, "chatcmpl-BTpar4ll3l");
        assert_eq!(
            s.tools,
            vec![
                (
                    0,
                    "call_sf".into(),
                    "get_weather".into(),
                    r#"{"location": "San Francisco, CA"}"#.into()
                ),
                (
                    1,
                    "call_tokyo".into(),
                    "get_weather".into(),
                    "{\"location\": \"Tokyo, 日本\"}".into()
                ),
            ]
        );
        assert_eq!(s.finish, Some(FinishReason::ToolCalls));
        assert_eq!(
            s.usage,
            Some(Usage {
                input_tokens: 2048,
                output_tokens: 52,
                cached_input_tokens: Some(1920),
                cache_creation_input_tokens: None,
                cache_creation_1h_input_tokens: None,
                reasoning_tokens: Some(0),
            })
        );
        assert!(s.text.is_empty());
    }
    // Re-encoded for an OpenAI client.
    let events = decode_stream(body.as_bytes(), 1);
    let bytes = encode_stream(
        &events,
        StreamOptions {
            model_override: Some("fast".into()),
            include_usage: true,
        },
    );
    let chunks = check_client_stream(&bytes, true);
    assert!(chunks
        .iter()
        .filter(|c| c.is_object())
        .all(|c| c["model"] == "fast"));
    let tool_deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(
        tool_deltas[0],
        &json!({"index": 0, "id": "call_sf", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
    );
    assert_eq!(
        tool_deltas[1],
        &json!({"index": 0, "function": {"arguments": "{\"location\": \"San"}})
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(finish[0]["choices"][0]["delta"], json!({}));
    let usage = &chunks[chunks.len() - 2]["usage"];
    assert_eq!(
        usage,
        &json!({"prompt_tokens": 2048, "completion_tokens": 52, "total_tokens": 2100,
            "prompt_tokens_details": {"cached_tokens": 1920},
            "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    let again = summarize(&decode_stream(&bytes, 9));
    let mut want = summarize(&events);
    want.model = "fast".into();
    assert_eq!(again, want);
}

#[test]
fn streamed_deepseek_reasoning() {
    let body = fixture("hand-stream-deepseek-reasoning.sse");
    let events = decode_stream(body.as_bytes(), 5);
    let s = summarize(&events);
    assert_eq!(s.thinking, "The user asks 9.11 vs 9.8. 0.8 > 0.11.");
    assert_eq!(s.text, "9.8 is greater.");
    assert_eq!(s.finish, Some(FinishReason::Stop));
    assert_eq!(s.usage.unwrap().reasoning_tokens, Some(31));
    // Usage and finish came in one chunk: usage first.
    let n = events.len();
    assert!(matches!(events[n - 2], StreamEvent::Usage(_)));
    assert!(matches!(events[n - 1], StreamEvent::Finish { .. }));
    let bytes = encode_stream(&events, StreamOptions::default());
    let chunks = check_client_stream(&bytes, false);
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({"reasoning_content": "The user asks 9.11 vs 9.8."})
    );
    assert_eq!(summarize(&decode_stream(&bytes, 2)).thinking, s.thinking);
}

#[test]
fn error_inside_stream() {
    let body = fixture("hand-stream-error.sse");
    let events = decode_stream(body.as_bytes(), 4);
    let s = summarize(&events);
    assert_eq!(s.text, "Partial");
    assert_eq!(
        s.errors,
        vec!["The server had an error while processing your request. Sorry about that!".to_owned()]
    );
    assert_eq!(s.finish, None);
    let bytes = encode_stream(&events, StreamOptions::default());
    let chunks = client_chunks(&bytes);
    let n = chunks.len();
    assert_eq!(
        chunks[n - 2],
        json!({"error": {"type": "upstream_error", "status": null,
            "message": "The server had an error while processing your request. Sorry about that!"}})
    );
    assert_eq!(chunks[n - 1], "[DONE]");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()),
        "no finish after an error"
    );
}

#[test]
fn encoder_fail_and_unfinished_streams() {
    // fail(): one error event, then [DONE]; nothing after.
    let mut e = StreamEncoder::new(StreamOptions::default());
    let mut out = BytesMut::new();
    e.encode(
        &StreamEvent::Start {
            id: "chatcmpl-x".into(),
            model: "m".into(),
        },
        &mut out,
    );
    e.encode(&StreamEvent::TextDelta { text: "He".into() }, &mut out);
    e.fail(Some(502), "upstream reset", &mut out);
    e.finish(&mut out);
    let chunks = client_chunks(&out);
    assert_eq!(chunks.len(), 4);
    assert_eq!(
        chunks[2],
        json!({"error": {"type": "upstream_error", "status": 502, "message": "upstream reset"}})
    );
    assert_eq!(chunks[3], "[DONE]");

    // finish() without Finish: a closing chunk is synthesized.
    let mut e = StreamEncoder::new(StreamOptions {
        model_override: None,
        include_usage: true,
    });
    let mut out = BytesMut::new();
    e.encode(&StreamEvent::TextDelta { text: "Hi".into() }, &mut out);
    e.encode(
        &StreamEvent::Usage(Usage {
            input_tokens: 3,
            output_tokens: 1,
            ..Usage::default()
        }),
        &mut out,
    );
    e.finish(&mut out);
    e.finish(&mut out); // idempotent
    let chunks = check_client_stream(&out, true);
    assert!(chunks[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        chunks[3]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
    );
    assert_eq!(chunks.len(), 5);
}

#[test]
fn decoder_handles_compat_server_quirks() {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    let mut feed = |s: &str, out: &mut Vec<StreamEvent>| {
        d.decode(
            &SseEvent {
                event: None,
                data: s.into(),
            },
            out,
        )
    };
    // No id/model (synthesized), name arriving after the arguments, tool
    // calls without an index, OpenRouter-style `reasoning`, keep-alive junk.
    feed(
        r#"{"choices":[{"delta":{"role":"assistant","reasoning":"think"}}]}"#,
        &mut out,
    )
    .unwrap();
    feed(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"arguments":"{\"a\""}}]}}]}"#, &mut out).unwrap();
    feed(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":":1}"}}]}}]}"#, &mut out).unwrap();
    feed(r#"{"choices":[{"delta":{"tool_calls":[{"id":"c2","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#, &mut out).unwrap();
    feed("", &mut out).unwrap();
    feed(
        r#"{"choices":[{"index":1,"delta":{"content":"other choice"}}]}"#,
        &mut out,
    )
    .unwrap();
    feed(
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        &mut out,
    )
    .unwrap();
    assert!(feed("not json", &mut out).is_err());
    feed("[DONE]", &mut out).unwrap();
    let s = summarize(&out);
    assert!(s.id.starts_with("chatcmpl-"));
    assert_eq!(s.thinking, "think");
    assert_eq!(
        s.tools,
        vec![
            (0, "c1".into(), "f".into(), "{\"a\":1}".into()),
            (1, "c2".into(), "g".into(), "{}".into())
        ]
    );
    assert_eq!(s.text, "");
    assert_eq!(s.finish, Some(FinishReason::ToolCalls));
}

#[test]
fn decoder_handles_azure_and_index_zero_servers() {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    let mut feed = |s: &str, out: &mut Vec<StreamEvent>| {
        d.decode(
            &SseEvent {
                event: None,
                data: s.into(),
            },
            out,
        )
        .unwrap()
    };
    // Azure: an empty-id filter-results chunk first.
    feed(
        r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
        &mut out,
    );
    assert!(out.is_empty());
    feed(
        r#"{"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"a","arguments":"{}"}}]}}]}"#,
        &mut out,
    );
    // A server numbering every call 0.
    feed(
        r#"{"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_2","type":"function","function":{"name":"b","arguments":"{\"x\":"}}]}}]}"#,
        &mut out,
    );
    feed(
        r#"{"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}"#,
        &mut out,
    );
    feed(
        r#"{"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        &mut out,
    );
    feed("[DONE]", &mut out);
    let s = summarize(&out);
    assert_eq!(s.id, "chatcmpl-az");
    assert_eq!(s.model, "gpt-4o-2024-11-20");
    assert_eq!(
        s.tools,
        vec![
            (0, "call_1".into(), "a".into(), "{}".into()),
            (1, "call_2".into(), "b".into(), "{\"x\":1}".into())
        ]
    );
    assert_eq!(s.finish, Some(FinishReason::ToolCalls));
}
