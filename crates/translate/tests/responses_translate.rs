//! OpenAI Responses format: requests, responses and streams, both directions.

use crate::counting;
use apiproxy_translate::openai_responses::{
    decode_request, decode_response, encode_request, encode_response, StreamDecoder, StreamEncoder,
};
use apiproxy_translate::{
    ChatResponse, ContentPart, FinishReason, ImageSource, Message, Reasoning, ResponseFormat, Role,
    SseEvent, SseParser, StreamDecode, StreamEncode, StreamEvent, StreamOptions, Tool, ToolChoice,
    Usage,
};

use std::cell::Cell;

use bytes::BytesMut;
use counting::run_counting;
use proptest::prelude::*;
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/responses/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn text(t: &str) -> ContentPart {
    ContentPart::Text { text: t.into() }
}

fn parse_sse(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::default();
    let mut out = Vec::new();
    p.feed(bytes, &mut out).unwrap();
    p.finish(&mut out);
    out
}

fn decode_stream(events: &[SseEvent]) -> Vec<StreamEvent> {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    for ev in events {
        d.decode(ev, &mut out).unwrap();
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

fn data_of(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

// ---------------------------------------------------------------- requests

#[test]
fn string_input_request() {
    let req = decode_request(fixture_json("request-string-input.json")).unwrap();
    assert_eq!(req.model, "gpt-4.1-mini");
    assert_eq!(req.system, vec![text("You are a terse assistant.")]);
    assert_eq!(
        req.messages,
        vec![Message {
            role: Role::User,
            content: vec![text(
                "Tell me a three sentence bedtime story about a unicorn."
            )],
        }]
    );
    assert_eq!(req.max_tokens, Some(256));
    assert_eq!(req.temperature, Some(0.7));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.user.as_deref(), Some("user-1234"));
    assert!(!req.stream);

    let body: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4.1-mini",
            "instructions": "You are a terse assistant.",
            "input": [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Tell me a three sentence bedtime story about a unicorn."}]}],
            "store": false,
            "max_output_tokens": 256,
            "temperature": 0.7,
            "top_p": 0.9,
            "user": "user-1234"
        })
    );
}

#[test]
fn function_call_round_request() {
    let req = decode_request(fixture_json("request-function-round.json")).unwrap();
    assert_eq!(
        req.system,
        vec![text("You are a weather bot."), text("Answer in Celsius.")]
    );
    let weather = |id: &str, loc: &str| ContentPart::ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: format!("{{\"location\":\"{loc}\"}}"),
    };
    let result = |id: &str, t: &str| ContentPart::ToolResult {
        call_id: id.into(),
        name: Some("get_weather".into()),
        content: vec![text(t)],
        is_error: false,
    };
    assert_eq!(
        req.messages,
        vec![
            Message {
                role: Role::User,
                content: vec![text("What's the weather in Paris and Bogotá?")]
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Thinking {
                        text: "**Looking up weather**\n\nTwo cities, two calls.".into(),
                        signature: Some("gAAAAABor0AwEnc==".into()),
                    },
                    weather("call_12345xyz", "Paris, France"),
                    weather("call_67890abc", "Bogotá, Colombia"),
                ]
            },
            Message {
                role: Role::User,
                content: vec![
                    result("call_12345xyz", "{\"temperature\": 18}"),
                    result("call_67890abc", "{\"temperature\": 14}"),
                ]
            },
            Message {
                role: Role::Assistant,
                content: vec![text("Paris 18°C, Bogotá 14°C.")]
            },
            Message {
                role: Role::User,
                content: vec![text("Thanks! And tomorrow?")]
            },
        ]
    );
    assert_eq!(
        req.tools,
        vec![Tool {
            name: "get_weather".into(),
            description: Some("Get current temperature for a given location.".into()),
            parameters: json!({
                "type": "object",
                "properties": {"location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"}},
                "required": ["location"],
                "additionalProperties": false
            }),
            strict: Some(true),
        }]
    );
    assert_eq!(
        req.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );
    assert_eq!(req.parallel_tool_calls, Some(true));
    assert_eq!(
        req.reasoning,
        Some(Reasoning {
            effort: Some("high".into()),
            budget_tokens: None,
            disabled: false
        })
    );
    assert!(req.stream);
    assert!(req.stream_include_usage);

    // Provider side.
    let body: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
    assert_eq!(
        body["instructions"],
        "You are a weather bot.\n\nAnswer in Celsius."
    );
    assert_eq!(body["store"], false);
    assert_eq!(body["stream"], true);
    assert_eq!(body["reasoning"], json!({"effort": "high"}));
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "name": "get_weather"})
    );
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["name"], "get_weather");
    assert_eq!(body["tools"][0]["strict"], true);
    assert!(body["tools"][0].get("function").is_none(), "tools are flat");
    assert_eq!(
        body["input"],
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What's the weather in Paris and Bogotá?"}]},
            {"type": "function_call", "call_id": "call_12345xyz", "name": "get_weather", "arguments": "{\"location\":\"Paris, France\"}"},
            {"type": "function_call", "call_id": "call_67890abc", "name": "get_weather", "arguments": "{\"location\":\"Bogotá, Colombia\"}"},
            {"type": "function_call_output", "call_id": "call_12345xyz", "output": "{\"temperature\": 18}"},
            {"type": "function_call_output", "call_id": "call_67890abc", "output": "{\"temperature\": 14}"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris 18°C, Bogotá 14°C."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks! And tomorrow?"}]}
        ])
    );

    // Round trip: everything but the (documented) dropped thinking survives.
    let again = decode_request(body).unwrap();
    let mut expected = req.clone();
    expected.messages[1]
        .content
        .retain(|p| !matches!(p, ContentPart::Thinking { .. }));
    // `instructions` comes back as one system part.
    expected.system = vec![text("You are a weather bot.\n\nAnswer in Celsius.")];
    assert_eq!(again, expected);
}

#[test]
fn image_request() {
    let req = decode_request(fixture_json("request-image.json")).unwrap();
    let content = &req.messages[0].content;
    assert_eq!(content.len(), 3);
    assert_eq!(content[0], text("What is in these images?"));
    assert!(
        matches!(&content[1], ContentPart::Image { source: ImageSource::Url { url } }
        if url.starts_with("https://upload.wikimedia.org/"))
    );
    assert_eq!(
        content[2],
        ContentPart::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==".into(),
            }
        }
    );
    let body: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
    let parts = &body["input"][0]["content"];
    assert_eq!(parts[1]["type"], "input_image");
    assert_eq!(
        parts[2]["image_url"],
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    );
    assert_eq!(decode_request(body).unwrap(), req);
}

#[test]
fn json_schema_request() {
    let req = decode_request(fixture_json("request-json-schema.json")).unwrap();
    assert_eq!(req.system, vec![text("Extract the event information.")]);
    assert_eq!(req.messages.len(), 1);
    assert_eq!(req.tool_choice, Some(ToolChoice::None));
    let Some(ResponseFormat::JsonSchema {
        name,
        schema,
        strict,
    }) = &req.response_format
    else {
        panic!("json_schema expected: {:?}", req.response_format)
    };
    assert_eq!(name, "calendar_event");
    assert_eq!(schema["required"], json!(["name", "date", "participants"]));
    assert_eq!(*strict, Some(true));
    let body: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
    assert_eq!(body["text"]["format"]["type"], "json_schema");
    assert_eq!(body["text"]["format"]["name"], "calendar_event");
    assert_eq!(body["text"]["format"]["strict"], true);
    assert_eq!(body["tool_choice"], "none");
    assert_eq!(decode_request(body).unwrap(), req);

    let obj = decode_request(
        json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}),
    )
    .unwrap();
    assert_eq!(obj.response_format, Some(ResponseFormat::JsonObject));
}

#[test]
fn request_errors_name_the_field() {
    let cases = [
        (
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search_preview"}]}),
            "tool type 'web_search_preview' can only be served by a Responses upstream",
        ),
        (
            json!({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": "code_interpreter", "container": {"type": "auto"}}]}),
            "tool type 'code_interpreter' can only be served by a Responses upstream",
        ),
        (
            json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
            "previous_response_id: server-side conversation state needs a Responses upstream",
        ),
        (
            json!({"model": "m", "input": "hi", "conversation": "conv_1"}),
            "conversation: server-side conversation state needs a Responses upstream",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-abc"}]}]}),
            "input[0].content[0]: images by file_id can only be served by a Responses upstream",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "user", "content": 42}]}),
            "input[1].content: expected a string or an array of content parts",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
            "input[0].call_id: required",
        ),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "input[0].role: expected user, assistant, system or developer, got 'robot'",
        ),
        (
            json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}),
            "input[0]: item type 'web_search_call' can only be served by a Responses upstream",
        ),
        (
            json!({"model": "m", "input": 7}),
            "input: expected a string or an array of input items",
        ),
        (
            json!({"model": 7, "input": "x"}),
            "model: expected a string",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": "many"}),
            "max_output_tokens: expected a non-negative integer",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
            "tools[0].name: required",
        ),
    ];
    for (body, want) in cases {
        let e = decode_request(body.clone()).expect_err(&body.to_string());
        assert!(
            e.message.starts_with(want),
            "{body}: got {:?}, want {want:?}",
            e.message
        );
    }
    // Unknown fields are ignored.
    let ok = decode_request(json!({"model": "m", "input": "x", "prompt_cache_key": "k",
        "include": ["reasoning.encrypted_content"], "frobnicate": {"a": 1}}))
    .unwrap();
    assert_eq!(ok.messages.len(), 1);
}

#[test]
fn encode_request_maps_foreign_settings() {
    let req = apiproxy_translate::ChatRequest {
        model: "gpt-5".into(),
        system: vec![text("sys")],
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
                    ContentPart::RedactedThinking { data: "x".into() },
                    text("calling"),
                    ContentPart::ToolCall {
                        id: "toolu_1".into(),
                        name: "ls".into(),
                        arguments: String::new(),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::ToolResult {
                        call_id: "toolu_1".into(),
                        name: None,
                        content: vec![
                            text("a.png"),
                            ContentPart::Image {
                                source: ImageSource::Url {
                                    url: "https://x/a.png".into(),
                                },
                            },
                        ],
                        is_error: false,
                    },
                    text("what's that?"),
                ],
            },
        ],
        max_tokens: Some(1),
        stop: vec!["END".into()],
        seed: Some(3),
        top_k: Some(40),
        tools: vec![Tool {
            name: "ls".into(),
            description: None,
            parameters: Value::Null,
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Required),
        reasoning: Some(Reasoning {
            effort: None,
            budget_tokens: Some(10_000),
            disabled: false,
        }),
        stream: true,
        ..Default::default()
    };
    let body: Value = serde_json::from_slice(&encode_request(&req).unwrap()).unwrap();
    assert_eq!(body["max_output_tokens"], 16, "clamped to the API minimum");
    assert_eq!(body["reasoning"], json!({"effort": "medium"}));
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "name": "ls", "parameters": {"type": "object", "properties": {}}, "strict": false}])
    );
    for dropped in ["stop", "seed", "top_k", "n"] {
        assert!(
            body.get(dropped).is_none(),
            "{dropped} is not a Responses field"
        );
    }
    assert_eq!(
        body["input"],
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "toolu_1", "name": "ls", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "toolu_1", "output": [
                {"type": "input_text", "text": "a.png"},
                {"type": "input_image", "image_url": "https://x/a.png"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what's that?"}]}
        ])
    );
    // Budget thresholds.
    let effort = |b: u64| {
        let mut r = req.clone();
        r.reasoning = Some(Reasoning {
            effort: None,
            budget_tokens: Some(b),
            disabled: false,
        });
        let v: Value = serde_json::from_slice(&encode_request(&r).unwrap()).unwrap();
        v["reasoning"]["effort"].as_str().map(str::to_owned)
    };
    assert_eq!(effort(1024).as_deref(), Some("low"));
    assert_eq!(effort(4096).as_deref(), Some("low"));
    assert_eq!(effort(16384).as_deref(), Some("medium"));
    assert_eq!(effort(32000).as_deref(), Some("high"));
    assert_eq!(effort(0), None);
}

// --------------------------------------------------------------- responses

#[test]
fn response_with_reasoning_message_and_two_calls() {
    let resp = decode_response(fixture("response-reasoning-tools.json").as_bytes()).unwrap();
    assert_eq!(
        resp.id,
        "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b"
    );
    assert_eq!(resp.model, "gpt-5-2025-08-07");
    assert_eq!(resp.created, 1756315696);
    assert_eq!(
        resp.content,
        vec![
            ContentPart::Thinking {
                text: "**Checking the weather**\n\nThe user wants two cities.".into(),
                signature: Some("gAAAAABor0A1secret==".into()),
            },
            text("Let me check both cities."),
            ContentPart::ToolCall {
                id: "call_12345xyz".into(),
                name: "get_weather".into(),
                arguments: "{\"location\":\"Paris, France\"}".into(),
            },
            ContentPart::ToolCall {
                id: "call_67890abc".into(),
                name: "get_weather".into(),
                arguments: "{\"location\":\"Bogotá, Colombia\"}".into(),
            },
        ]
    );
    assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        resp.usage,
        Some(Usage {
            input_tokens: 1320,
            output_tokens: 412,
            cached_input_tokens: Some(1024),
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: Some(320),
        })
    );

    let out: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
    assert_eq!(out["object"], "response");
    assert_eq!(out["status"], "completed");
    assert_eq!(out["incomplete_details"], Value::Null);
    assert_eq!(out["created_at"], 1756315696);
    let output = out["output"].as_array().unwrap();
    assert_eq!(output.len(), 4);
    assert_eq!(output[0]["type"], "reasoning");
    assert!(output[0]["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(output[0]["summary"][0]["type"], "summary_text");
    assert_eq!(output[0]["encrypted_content"], "gAAAAABor0A1secret==");
    assert_eq!(output[1]["type"], "message");
    assert_eq!(output[1]["role"], "assistant");
    assert_eq!(output[1]["status"], "completed");
    assert_eq!(
        output[1]["content"],
        json!([{"type": "output_text", "text": "Let me check both cities.", "annotations": []}])
    );
    assert!(output[2]["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(output[2]["call_id"], "call_12345xyz");
    assert_eq!(
        output[3]["arguments"],
        "{\"location\":\"Bogotá, Colombia\"}"
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 1320, "input_tokens_details": {"cached_tokens": 1024},
               "output_tokens": 412, "output_tokens_details": {"reasoning_tokens": 320},
               "total_tokens": 1732})
    );
    // Round trip.
    assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
}

#[test]
fn incomplete_response() {
    let resp = decode_response(fixture("response-incomplete.json").as_bytes()).unwrap();
    assert_eq!(resp.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        resp.content,
        vec![text("Silent circuits hum,\nThoughts emerge in")]
    );
    let out: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
    assert_eq!(out["status"], "incomplete");
    assert_eq!(
        out["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);

    let filtered = ChatResponse {
        finish_reason: Some(FinishReason::ContentFilter),
        ..resp
    };
    let out: Value = serde_json::from_slice(&encode_response(&filtered)).unwrap();
    assert_eq!(out["incomplete_details"]["reason"], "content_filter");
    assert_eq!(
        decode_response(&encode_response(&filtered))
            .unwrap()
            .finish_reason,
        Some(FinishReason::ContentFilter)
    );
}

#[test]
fn response_edge_cases() {
    // A plain completed answer is Stop; ids are synthesized when missing.
    let resp = decode_response(
        br#"{"status":"completed","model":"m","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}]}"#,
    )
    .unwrap();
    assert_eq!(resp.finish_reason, Some(FinishReason::Stop));
    assert!(resp.id.starts_with("resp_"));
    let empty = ChatResponse::default();
    let out: Value = serde_json::from_slice(&encode_response(&empty)).unwrap();
    assert!(out["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(out["output"], json!([]));
    assert_eq!(out["usage"], Value::Null);
    // A failed response or garbage is an error, not a panic.
    assert!(decode_response(
        br#"{"status":"failed","error":{"code":"server_error","message":"boom"}}"#
    )
    .unwrap_err()
    .message
    .contains("boom"));
    assert!(decode_response(b"[1,2]").is_err());
    assert!(decode_response(b"{").is_err());
}

// ----------------------------------------------------------------- streams

fn expected_transcript_events() -> Vec<StreamEvent> {
    let mut v = vec![
        StreamEvent::Start {
            id: "resp_68af5c1a2b3c8190a1b2c3d4e5f6a7b80c1d2e3f4a5b6c7d".into(),
            model: "gpt-5-mini-2025-08-07".into(),
        },
        StreamEvent::ThinkingDelta {
            text: "**Planning".into(),
        },
        StreamEvent::ThinkingDelta {
            text: " the answer**\n\nThe user".into(),
        },
        StreamEvent::ThinkingDelta {
            text: " asks about Paris.".into(),
        },
        StreamEvent::ThinkingSignature {
            signature: "gAAAAABor1w-enc==".into(),
        },
    ];
    for t in ["Let", " me", " check the weather", " in Paris \"now\"."] {
        v.push(StreamEvent::TextDelta { text: t.into() });
    }
    v.push(StreamEvent::ToolCallStart {
        index: 0,
        id: "call_DF3wZtLHv5eBNfURjvI8MULJ".into(),
        name: "get_weather".into(),
    });
    for a in ["{\"", "location", "\":\"", "Paris", ", France", "\"}"] {
        v.push(StreamEvent::ToolCallDelta {
            index: 0,
            arguments: a.into(),
        });
    }
    v.push(StreamEvent::Usage(Usage {
        input_tokens: 312,
        output_tokens: 96,
        cached_input_tokens: Some(128),
        cache_creation_input_tokens: None,
        cache_creation_1h_input_tokens: None,
        reasoning_tokens: Some(64),
    }));
    v.push(StreamEvent::Finish {
        reason: FinishReason::ToolCalls,
    });
    v
}

#[test]
fn stream_transcript_decodes() {
    let events = parse_sse(fixture("stream-reasoning-text-tool.sse").as_bytes());
    assert_eq!(decode_stream(&events), expected_transcript_events());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn stream_transcript_in_random_chunks(cuts in proptest::collection::vec(1usize..400, 1..60)) {
        let whole = fixture("stream-reasoning-text-tool.sse").into_bytes();
        let mut parser = SseParser::default();
        let mut dec = StreamDecoder::default();
        let mut sse = Vec::new();
        let mut out = Vec::new();
        let mut rest = &whole[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            parser.feed(chunk, &mut sse).unwrap();
            for ev in sse.drain(..) {
                dec.decode(&ev, &mut out).unwrap();
            }
        }
        parser.finish(&mut sse);
        for ev in sse.drain(..) {
            dec.decode(&ev, &mut out).unwrap();
        }
        prop_assert_eq!(out, expected_transcript_events());
    }
}

#[test]
fn encoder_stream_matches_the_sdk_sequence() {
    let bytes = encode_stream(&expected_transcript_events(), StreamOptions::default());
    let events = parse_sse(&bytes);
    let data = data_of(&events);
    let types: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (ev, d)) in events.iter().zip(&data).enumerate() {
        assert_eq!(d["type"], ev.event.as_deref().unwrap());
        assert_eq!(
            d["sequence_number"], i as u64,
            "sequence numbers increase from 0"
        );
    }
    assert_eq!(data[0]["response"]["status"], "in_progress");
    assert_eq!(data[0]["response"]["output"], json!([]));
    assert_eq!(
        data[0]["response"]["id"],
        "resp_68af5c1a2b3c8190a1b2c3d4e5f6a7b80c1d2e3f4a5b6c7d"
    );
    // The message item and its text events agree on ids and indexes.
    let msg_id = data[10]["item"]["id"].as_str().unwrap();
    assert!(msg_id.starts_with("msg_"));
    assert_eq!(data[10]["output_index"], 1);
    assert_eq!(data[12]["item_id"], msg_id);
    assert_eq!(data[12]["output_index"], 1);
    assert_eq!(data[12]["content_index"], 0);
    assert_eq!(
        data[16]["text"],
        "Let me check the weather in Paris \"now\"."
    );
    // The function call item.
    assert_eq!(data[19]["item"]["type"], "function_call");
    assert_eq!(data[19]["item"]["call_id"], "call_DF3wZtLHv5eBNfURjvI8MULJ");
    assert_eq!(data[19]["item"]["arguments"], "");
    assert_eq!(data[26]["arguments"], "{\"location\":\"Paris, France\"}");
    assert_eq!(data[27]["item"]["status"], "completed");
    // The final response carries every item in full, and the usage.
    let fin = &data[28]["response"];
    assert_eq!(fin["status"], "completed");
    assert_eq!(fin["model"], "gpt-5-mini-2025-08-07");
    assert_eq!(fin["output"][0]["encrypted_content"], "gAAAAABor1w-enc==");
    assert_eq!(
        fin["output"][0]["summary"][0]["text"],
        "**Planning the answer**\n\nThe user asks about Paris."
    );
    assert_eq!(
        fin["output"][1]["content"][0]["text"],
        "Let me check the weather in Paris \"now\"."
    );
    assert_eq!(
        fin["output"][2]["arguments"],
        "{\"location\":\"Paris, France\"}"
    );
    assert_eq!(fin["usage"]["total_tokens"], 408);
    assert_eq!(fin["usage"]["input_tokens_details"]["cached_tokens"], 128);
}

#[test]
fn encoder_output_decodes_to_the_same_events() {
    let original = expected_transcript_events();
    let bytes = encode_stream(&original, StreamOptions::default());
    assert_eq!(decode_stream(&parse_sse(&bytes)), original);

    // The upstream transcript → decoder → encoder → decoder is stable too.
    let upstream = decode_stream(&parse_sse(fixture("stream-incomplete.sse").as_bytes()));
    let again = decode_stream(&parse_sse(&encode_stream(
        &upstream,
        StreamOptions::default(),
    )));
    assert_eq!(again, upstream);
}

#[test]
fn incomplete_and_failed_streams() {
    let ev = decode_stream(&parse_sse(fixture("stream-incomplete.sse").as_bytes()));
    assert_eq!(ev.len(), 4);
    assert_eq!(
        ev[1],
        StreamEvent::TextDelta {
            text: "Silent circuits hum,".into()
        }
    );
    assert_eq!(
        ev[3],
        StreamEvent::Finish {
            reason: FinishReason::Length
        }
    );
    let bytes = encode_stream(&ev, StreamOptions::default());
    let events = parse_sse(&bytes);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("response.incomplete"));
    let d: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(d["response"]["status"], "incomplete");
    assert_eq!(
        d["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );

    let ev = decode_stream(&parse_sse(fixture("stream-failed.sse").as_bytes()));
    assert_eq!(
        ev.last(),
        Some(&StreamEvent::Error {
            message: "The model produced invalid content.".into()
        })
    );
    assert!(matches!(ev[0], StreamEvent::Start { .. }));

    // A bare `error` event.
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    d.decode(
        &SseEvent {
            event: Some("error".into()),
            data: r#"{"type":"error","code":"ERR_SOMETHING","message":"Something went wrong","param":null,"sequence_number":1}"#.into(),
        },
        &mut out,
    )
    .unwrap();
    assert!(
        matches!(&out[0], StreamEvent::Start { id, model } if id.starts_with("resp_") && model == "unknown")
    );
    assert_eq!(
        out[1],
        StreamEvent::Error {
            message: "Something went wrong".into()
        }
    );
}

#[test]
fn decoder_tolerates_arguments_only_in_done_events_and_parallel_calls() {
    let lines = [
        r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","model":"m","status":"in_progress","output":[]}}"#,
        r#"{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"fc_a","type":"function_call","call_id":"call_a","name":"f","arguments":""}}"#,
        r#"{"type":"response.function_call_arguments.done","sequence_number":2,"item_id":"fc_a","output_index":0,"arguments":"{\"x\":1}"}"#,
        r#"{"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"fc_a","type":"function_call","call_id":"call_a","name":"f","arguments":"{\"x\":1}"}}"#,
        r#"{"type":"response.output_item.done","sequence_number":4,"output_index":1,"item":{"id":"fc_b","type":"function_call","call_id":"call_b","name":"g","arguments":"{}"}}"#,
        r#"{"type":"response.keepalive","sequence_number":5}"#,
        r#"{"type":"response.completed","sequence_number":6,"response":{"id":"resp_1","model":"m","status":"completed","output":[]}}"#,
    ];
    let events: Vec<SseEvent> = lines
        .iter()
        .map(|d| SseEvent {
            event: None,
            data: d.to_string(),
        })
        .collect();
    assert_eq!(
        decode_stream(&events),
        vec![
            StreamEvent::Start {
                id: "resp_1".into(),
                model: "m".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_a".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"x\":1}".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_b".into(),
                name: "g".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into()
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls
            },
        ]
    );
}

#[test]
fn encoder_closes_streams_and_fails_once() {
    // No Start, no Finish: synthesized id, usage after the text, closed properly.
    let opts = StreamOptions {
        model_override: Some("fast".into()),
        include_usage: false,
    };
    let mut e = StreamEncoder::new(opts.clone());
    let mut out = BytesMut::new();
    e.encode(&StreamEvent::TextDelta { text: "hi".into() }, &mut out);
    e.encode(
        &StreamEvent::Finish {
            reason: FinishReason::Stop,
        },
        &mut out,
    );
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
    let events = parse_sse(&out);
    let data = data_of(&events);
    assert_eq!(data[0]["type"], "response.created");
    assert!(data[0]["response"]["id"]
        .as_str()
        .unwrap()
        .starts_with("resp_"));
    assert_eq!(data[0]["response"]["model"], "fast");
    let last = data.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["usage"]["total_tokens"], 4);
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "hi");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some("response.completed"))
            .count(),
        1
    );

    // model_override wins over the upstream's model.
    let bytes = encode_stream(
        &[StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "gpt-4o-2024".into(),
        }],
        opts,
    );
    let d = data_of(&parse_sse(&bytes));
    assert_eq!(d[0]["response"]["model"], "fast");
    assert_eq!(d[0]["response"]["id"], "chatcmpl-1");

    // fail: exactly one error event, nothing after it.
    let mut e = StreamEncoder::new(StreamOptions::default());
    let mut out = BytesMut::new();
    e.encode(
        &StreamEvent::Start {
            id: "resp_1".into(),
            model: "m".into(),
        },
        &mut out,
    );
    e.encode(&StreamEvent::TextDelta { text: "par".into() }, &mut out);
    let before = out.len();
    e.fail(Some(502), "upstream went away", &mut out);
    e.fail(Some(502), "again", &mut out);
    e.encode(
        &StreamEvent::TextDelta {
            text: "tial".into(),
        },
        &mut out,
    );
    e.finish(&mut out);
    let tail = parse_sse(&out[before..]);
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&tail[0].data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["message"], "upstream went away");

    // An upstream Error event also ends the stream with one error event.
    let bytes = encode_stream(
        &[
            StreamEvent::Start {
                id: "r".into(),
                model: "m".into(),
            },
            StreamEvent::Error {
                message: "overloaded".into(),
            },
        ],
        StreamOptions::default(),
    );
    let evs = parse_sse(&bytes);
    assert_eq!(evs.last().unwrap().event.as_deref(), Some("error"));
    assert!(!evs
        .iter()
        .any(|e| e.event.as_deref() == Some("response.completed")));
}

#[test]
fn encoder_handles_interleaved_tools_and_length() {
    // Two tools whose deltas interleave (some upstreams do), then Length.
    let events = vec![
        StreamEvent::Start {
            id: "msg_01".into(),
            model: "claude".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_a".into(),
            name: "a".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"p\":".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "toolu_b".into(),
            name: "b".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "1}".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "{}".into(),
        },
        StreamEvent::Finish {
            reason: FinishReason::Length,
        },
    ];
    let bytes = encode_stream(&events, StreamOptions::default());
    let data = data_of(&parse_sse(&bytes));
    let fin = data.last().unwrap();
    assert_eq!(fin["type"], "response.incomplete");
    assert_eq!(fin["response"]["output"][0]["arguments"], "{\"p\":1}");
    assert_eq!(fin["response"]["output"][1]["arguments"], "{}");
    assert_eq!(fin["response"]["output"][1]["call_id"], "toolu_b");
}

#[test]
fn decoder_replays_text_sent_only_in_the_done_item() {
    let events: Vec<SseEvent> = [
        r#"{"type":"response.created","response":{"id":"resp_2","model":"m"}}"#,
        r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"msg_a","type":"message","role":"assistant","content":[{"type":"output_text","text":"whole answer"}]}}"#,
        r#"{"type":"response.output_text.delta","item_id":"msg_b","output_index":1,"content_index":0,"delta":"streamed"}"#,
        r#"{"type":"response.output_item.done","output_index":1,"item":{"id":"msg_b","type":"message","role":"assistant","content":[{"type":"output_text","text":"streamed"}]}}"#,
        r#"{"type":"response.completed","response":{"id":"resp_2","status":"completed","output":[]}}"#,
    ]
    .iter()
    .map(|d| SseEvent {
        event: None,
        data: d.to_string(),
    })
    .collect();
    let out = decode_stream(&events);
    assert_eq!(
        &out[1..],
        &[
            StreamEvent::TextDelta {
                text: "whole answer".into()
            },
            StreamEvent::TextDelta {
                text: "streamed".into()
            },
            StreamEvent::Finish {
                reason: FinishReason::Stop
            },
        ]
    );
}

#[test]
fn reasoning_summary_without_effort_is_not_a_setting() {
    let req = decode_request(json!({"model": "m", "input": "x", "reasoning": {"summary": "auto"}}))
        .unwrap();
    assert_eq!(req.reasoning, None);
    let req = decode_request(json!({"model": "m", "input": "x", "reasoning": {"effort": "none"}}))
        .unwrap();
    assert_eq!(
        req.reasoning,
        Some(Reasoning {
            effort: Some("none".into()),
            budget_tokens: None,
            disabled: true
        })
    );
}

// ---------------------------------------------------------------- fuzzing

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("developer"),
            Just("message"),
            Just("function_call"),
            Just("function_call_output"),
            Just("reasoning"),
            Just("input_text"),
            Just("output_text"),
            Just("input_image"),
            Just("function"),
            Just("data:image/png;base64,AAAA"),
            Just("data:"),
            Just("https://x"),
            Just("json_schema"),
            Just("response.output_item.added"),
            Just("response.completed"),
            Just("incomplete"),
            Just("completed"),
            Just("failed"),
            Just("max_output_tokens"),
            Just(""),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("type"),
                        Just("role"),
                        Just("content"),
                        Just("input"),
                        Just("text"),
                        Just("call_id"),
                        Just("name"),
                        Just("arguments"),
                        Just("output"),
                        Just("image_url"),
                        Just("tools"),
                        Just("tool_choice"),
                        Just("format"),
                        Just("summary"),
                        Just("item"),
                        Just("item_id"),
                        Just("delta"),
                        Just("response"),
                        Just("usage"),
                        Just("status"),
                        Just("output_index"),
                        Just("input_tokens"),
                        Just("incomplete_details"),
                        Just("reason"),
                        Just("error"),
                        Just("message"),
                        Just("model"),
                        Just("id"),
                        Just("encrypted_content"),
                        Just("schema"),
                        Just("reasoning"),
                        Just("effort"),
                        Just("instructions"),
                        Just("max_output_tokens"),
                    ],
                    inner,
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoders_never_panic_on_random_json(v in arb_json()) {
        let _ = decode_request(v.clone());
        let _ = decode_request(json!({"model": "m", "input": v.clone(), "tools": v.clone(), "text": v.clone()}));
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(r) = decode_response(&bytes) {
            // Whatever decodes re-encodes to valid JSON.
            let _: Value = serde_json::from_slice(&encode_response(&r)).unwrap();
        }
        let mut d = StreamDecoder::default();
        let mut out = Vec::new();
        let _ = d.decode(&SseEvent { event: None, data: v.to_string() }, &mut out);
        for ty in ["response.created", "response.output_item.added", "response.output_item.done",
                   "response.function_call_arguments.delta", "response.function_call_arguments.done",
                   "response.output_text.delta", "response.reasoning_summary_text.delta",
                   "response.completed", "response.incomplete", "response.failed", "error"] {
            let mut obj = json!({"type": ty, "sequence_number": 1});
            if let (Some(o), Value::Object(extra)) = (obj.as_object_mut(), &v) {
                for (k, x) in extra {
                    if k != "type" {
                        o.insert(k.clone(), x.clone());
                    }
                }
            }
            let _ = d.decode(&SseEvent { event: Some(ty.into()), data: obj.to_string() }, &mut out);
        }
        // Start comes first, exactly once.
        let starts = out.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count();
        prop_assert!(starts <= 1);
        if let Some(first) = out.first() {
            prop_assert!(matches!(first, StreamEvent::Start { .. }), "first event was {:?}", first);
        }
        // Whatever the decoder said, the encoder turns into parseable SSE.
        let mut enc = StreamEncoder::new(StreamOptions::default());
        let mut buf = BytesMut::new();
        for ev in &out {
            enc.encode(ev, &mut buf);
        }
        enc.finish(&mut buf);
        for ev in parse_sse(&buf) {
            let _: Value = serde_json::from_str(&ev.data).unwrap();
        }
    }

    #[test]
    fn stream_decoder_never_panics_on_garbage(data in ".{0,200}", event in proptest::option::of("[a-z._]{0,30}")) {
        let mut d = StreamDecoder::default();
        let mut out = Vec::new();
        let _ = d.decode(&SseEvent { event, data }, &mut out);
    }
}

// ------------------------------------------------ bytes near valid requests

/// Text as people write it: never empty, any script, quotes and escapes.
fn words() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 .,!?'\"\\\\é漢\n]{0,24}"
}

/// A Responses request as OpenAI's API reference describes it: input as a
/// string or as items (messages with text and images, function calls and
/// their outputs, earlier answers), instructions, tools, limits.
fn arb_valid_request() -> impl Strategy<Value = Value> {
    let turn = (
        prop::collection::vec(words(), 1..3),
        any::<bool>(),
        prop::collection::vec((words(), any::<i32>()), 0..3),
        prop::option::of(words()),
    );
    (
        prop::collection::vec(turn, 1..4),
        prop::option::of(words()),
        prop::option::of(16u64..4096),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(turns, instructions, max_output, stream, string_input)| {
            let mut input = Vec::new();
            for (t, (texts, image, calls, answer)) in turns.iter().enumerate() {
                let mut content: Vec<Value> = texts
                    .iter()
                    .map(|x| json!({"type": "input_text", "text": x}))
                    .collect();
                if *image {
                    content.push(json!({"type": "input_image", "detail": "auto",
                        "image_url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}));
                }
                input.push(json!({"role": "user", "content": content}));
                for (c, (city, n)) in calls.iter().enumerate() {
                    let call_id = format!("call_{t}_{c}");
                    input.push(json!({"type": "function_call", "call_id": call_id,
                        "name": "get_weather", "arguments": json!({"city": city, "n": n}).to_string()}));
                    input.push(json!({"type": "function_call_output", "call_id": call_id,
                        "output": format!("{n} degrees in {city}")}));
                }
                if let Some(a) = answer {
                    input.push(json!({"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": a, "annotations": []}]}));
                }
            }
            let mut body = json!({
                "model": "gpt-4.1-mini",
                "input": input,
                "stream": stream,
                "tools": [{"type": "function", "name": "get_weather", "description": "Weather of a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            });
            if string_input {
                body["input"] = json!(turns[0].0.concat());
            }
            if let Some(i) = instructions {
                body["instructions"] = json!(i);
            }
            if let Some(m) = max_output {
                body["max_output_tokens"] = json!(m);
            }
            body
        })
}

/// What a Responses request says, in order: (item type, role, content).
fn responses_digest(v: &Value) -> Vec<String> {
    let items = match &v["input"] {
        Value::String(s) => vec![json!({"role": "user", "content": s})],
        Value::Array(a) => a.clone(),
        _ => vec![],
    };
    let text = |c: &Value| -> String {
        match c {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .map(|p| match p["type"].as_str() {
                    Some("input_image") => format!("[image {}]", p["image_url"]),
                    _ => p["text"].as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
            _ => String::new(),
        }
    };
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let line = match item["type"].as_str().unwrap_or("message") {
            "message" => format!("{}: {}", item["role"], text(&item["content"])),
            "function_call" => {
                let args: Value =
                    serde_json::from_str(item["arguments"].as_str().unwrap_or("null"))
                        .unwrap_or(Value::Null);
                format!("call {} {} {args}", item["call_id"], item["name"])
            }
            "function_call_output" => format!("output {} {}", item["call_id"], item["output"]),
            other => format!("unexpected item {other}"),
        };
        // Consecutive messages of one role may be merged.
        match (out.last_mut(), line.split_once(": ")) {
            (Some(last), Some((role, rest))) if last.starts_with(&format!("{role}: ")) => {
                last.push_str(rest)
            }
            _ => out.push(line),
        }
    }
    out
}

#[test]
fn valid_requests_round_trip() {
    let cases = 256;
    let reached = run_counting(
        "responses valid_requests_round_trip",
        cases,
        arb_valid_request(),
        |body| {
            prop_assert!(counting::check_bytes_decode(
                apiproxy_translate::Format::OpenAiResponses,
                &body
            )?);
            let req = decode_request(body.clone()).map_err(|e| {
                TestCaseError::fail(format!("a valid request was refused: {e:?}\n{body}"))
            })?;
            let out: Value = serde_json::from_slice(
                &encode_request(&req).map_err(|e| TestCaseError::fail(format!("{e:?}")))?,
            )
            .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert_eq!(&out["model"], &body["model"]);
            prop_assert_eq!(&out["instructions"], &body["instructions"]);
            prop_assert_eq!(&out["max_output_tokens"], &body["max_output_tokens"]);
            prop_assert_eq!(
                out["stream"].as_bool().unwrap_or(false),
                body["stream"] == true
            );
            prop_assert_eq!(&out["tools"][0]["name"], &body["tools"][0]["name"]);
            prop_assert_eq!(
                &out["tools"][0]["parameters"],
                &body["tools"][0]["parameters"]
            );
            prop_assert_eq!(responses_digest(&out), responses_digest(&body));
            Ok(true)
        },
    );
    assert_eq!(reached, cases, "every valid request reached the assertions");
}

/// How the bytes of a valid request are damaged.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
}

fn arb_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Replace(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

#[test]
fn request_decoder_never_panics_on_bytes() {
    // Bytes of valid requests, whole or damaged in one place: the decoders
    // meet JSON that is almost right, not only noise that never parses.
    let cases = 512;
    let decoded = Cell::new(0u32);
    let reached = run_counting(
        "request_decoder_never_panics_on_bytes",
        cases,
        (arb_valid_request(), arb_damage()),
        |(body, damage)| {
            let mut bytes = serde_json::to_vec(&body).expect("JSON");
            match &damage {
                Damage::None => {}
                Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
                Damage::Replace(i, b) => {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
                Damage::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            }
            let _ = decode_response(&bytes);
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                // What is not JSON is refused from its bytes too.
                prop_assert!(apiproxy_translate::decode_request_bytes(
                    apiproxy_translate::Format::OpenAiResponses,
                    apiproxy_translate::Format::OpenAiResponses,
                    &bytes,
                    &apiproxy_translate::Limits::default(),
                )
                .is_err());
                return Ok(false);
            };
            counting::check_bytes_decode(apiproxy_translate::Format::OpenAiResponses, &v)?;
            let result = decode_request(v);
            if matches!(damage, Damage::None) {
                prop_assert!(
                    result.is_ok(),
                    "a valid request was refused: {:?}",
                    result.err()
                );
            }
            if let Ok(req) = result {
                decoded.set(decoded.get() + 1);
                // Whatever decodes encodes to JSON.
                let bytes =
                    encode_request(&req).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            }
            Ok(true)
        },
    );
    println!(
        "request_decoder_never_panics_on_bytes: {} decoded",
        decoded.get()
    );
    // A quarter of the cases are undamaged (128 ± 10) and some damaged ones
    // still parse: a run that parses or decodes far fewer checked nothing.
    assert!(
        reached >= cases / 6,
        "only {reached} of {cases} cases parsed as JSON"
    );
    assert!(
        decoded.get() >= cases / 8,
        "only {} of {cases} cases decoded",
        decoded.get()
    );
}
