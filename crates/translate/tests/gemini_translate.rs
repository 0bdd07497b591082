//! Gemini wire format: fixtures written from the Gemini API reference.

use apiproxy_translate::gemini::{self, StreamDecoder, StreamEncoder};
use apiproxy_translate::{
    ChatRequest, ContentPart, FinishReason, ImageSource, Message, Reasoning, ResponseFormat, Role,
    SseEvent, SseParser, StreamDecode, StreamEncode, StreamEvent, StreamOptions, Tool, ToolChoice,
    Usage,
};
use bytes::BytesMut;
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/gemini/{name}",
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

fn encode_req(req: &ChatRequest) -> Value {
    serde_json::from_slice(&gemini::encode_request(req).unwrap()).unwrap()
}

/// decode → encode → decode must give the same IR.
fn assert_request_round_trip(body: Value) -> ChatRequest {
    let req = gemini::decode_request(body).unwrap();
    let again = gemini::decode_request(encode_req(&req)).unwrap();
    assert_eq!(again, req);
    req
}

fn assert_response_round_trip(body: &[u8]) -> apiproxy_translate::ChatResponse {
    let resp = gemini::decode_response(body).unwrap();
    let mut again = gemini::decode_response(&gemini::encode_response(&resp)).unwrap();
    again.created = resp.created;
    assert_eq!(again, resp);
    resp
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[test]
fn plain_text_request() {
    let req = assert_request_round_trip(fixture_json("request_text.json"));
    assert_eq!(req.model, "");
    assert!(!req.stream);
    assert_eq!(req.system, vec![text("You are a cat. Your name is Neko.")]);
    assert_eq!(req.messages.len(), 3);
    assert_eq!(req.messages[0].role, Role::User);
    assert_eq!(req.messages[1].role, Role::Assistant);
    assert_eq!(
        req.messages[1].content,
        vec![text("Meow. Who disturbs my nap?")]
    );
    assert_eq!(req.stop, vec!["Title".to_string()]);
    assert_eq!(req.temperature, Some(1.0));
    assert_eq!(req.top_p, Some(0.8));
    assert_eq!(req.top_k, Some(10));
    assert_eq!(req.max_tokens, Some(800));
    assert_eq!(req.n, Some(1));
    assert_eq!(req.seed, Some(42));
    assert_eq!(req.presence_penalty, Some(0.5));
    assert_eq!(req.frequency_penalty, Some(0.25));

    let out = encode_req(&req);
    assert!(out.get("model").is_none());
    assert!(out.get("safetySettings").is_none());
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "You are a cat. Your name is Neko."}]})
    );
    assert_eq!(out["contents"][1]["role"], "model");
    assert_eq!(
        out["generationConfig"],
        json!({"temperature": 1.0, "topP": 0.8, "topK": 10, "maxOutputTokens": 800,
               "stopSequences": ["Title"], "candidateCount": 1, "seed": 42,
               "presencePenalty": 0.5, "frequencyPenalty": 0.25})
    );
}

#[test]
fn function_calls_without_ids_pair_with_their_responses() {
    let req = gemini::decode_request(fixture_json("request_function_calling.json")).unwrap();
    // Round trip: the only loss is `additionalProperties`, which Gemini's
    // `parameters` schema cannot carry.
    let mut expected = req.clone();
    if let Some(m) = expected.tools[1].parameters.as_object_mut() {
        m.remove("additionalProperties");
    }
    assert_eq!(gemini::decode_request(encode_req(&req)).unwrap(), expected);
    let calls: Vec<(&str, &str)> = req
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            ContentPart::ToolCall { id, name, .. } => Some((id.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("call_0_get_weather", "get_weather"),
            ("call_1_get_weather", "get_weather"),
            ("call_0_set_light", "set_light"),
            ("call_2_get_weather", "get_weather"),
        ]
    );
    let results: Vec<(&str, &str, bool)> = req
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            ContentPart::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => match content.as_slice() {
                [ContentPart::Text { text }] => Some((call_id.as_str(), text.as_str(), *is_error)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        results,
        [
            (
                "call_0_get_weather",
                r#"{"temperature":21,"unit":"celsius"}"#,
                false
            ),
            (
                "call_1_get_weather",
                r#"{"temperature":14,"unit":"celsius"}"#,
                false
            ),
            ("call_0_set_light", r#"{"error":"no lights found"}"#, true),
            (
                "call_2_get_weather",
                r#"{"temperature":25,"unit":"celsius"}"#,
                false
            ),
        ]
    );
    // role "function" is a user turn.
    assert_eq!(req.messages[4].role, Role::User);
    if let ContentPart::ToolCall { arguments, .. } = &req.messages[1].content[0] {
        assert_eq!(arguments, r#"{"location":"Paris"}"#);
    }

    // Gemini's OpenAPI schema becomes plain JSON Schema.
    assert_eq!(
        req.tools[0],
        Tool {
            name: "get_weather".into(),
            description: Some("Gets the current weather for a location.".into()),
            parameters: json!({
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city name, e.g. San Francisco"},
                    "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["location"]
            }),
            strict: None,
        }
    );
    // parametersJsonSchema is JSON Schema already.
    assert_eq!(
        req.tools[1].parameters["additionalProperties"],
        json!(false)
    );
    assert_eq!(
        req.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );

    let out = encode_req(&req);
    assert_eq!(
        out["contents"][2]["parts"][0],
        json!({"functionResponse": {"id": "call_0_get_weather", "name": "get_weather",
               "response": {"temperature": 21, "unit": "celsius"}}})
    );
    assert_eq!(
        out["contents"][1]["parts"][1],
        json!({"functionCall": {"id": "call_1_get_weather", "name": "get_weather",
               "args": {"location": "London"}}})
    );
    let decls = &out["tools"][0]["functionDeclarations"];
    assert_eq!(
        decls[0]["parameters"]["properties"]["unit"],
        json!({"type": "string", "enum": ["celsius", "fahrenheit"], "nullable": true})
    );
    assert_eq!(
        decls[1]["parameters"],
        json!({"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]})
    );
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
}

#[test]
fn inline_and_file_images() {
    let req = assert_request_round_trip(fixture_json("request_inline_image.json"));
    let content = &req.messages[0].content;
    assert!(matches!(
        &content[0],
        ContentPart::Image { source: ImageSource::Base64 { media_type, data } }
            if media_type == "image/jpeg" && data.starts_with("/9j/")
    ));
    assert_eq!(
        content[1],
        ContentPart::Image {
            source: ImageSource::Url {
                url: "https://generativelanguage.googleapis.com/v1beta/files/abc-123".into()
            }
        }
    );
    assert_eq!(content[2], text("Caption these two images."));
    let out = encode_req(&req);
    assert_eq!(
        out["contents"][0]["parts"][0]["inlineData"]["mimeType"],
        "image/jpeg"
    );
    assert_eq!(
        out["contents"][0]["parts"][1]["fileData"]["fileUri"],
        "https://generativelanguage.googleapis.com/v1beta/files/abc-123"
    );
}

#[test]
fn snake_case_request() {
    let req = gemini::decode_request(fixture_json("request_snake_case.json")).unwrap();
    assert_eq!(req.system, vec![text("Answer in JSON.")]);
    let user = &req.messages[0].content;
    assert!(
        matches!(&user[0], ContentPart::Image { source: ImageSource::Base64 { media_type, .. } } if media_type == "image/png")
    );
    assert!(
        matches!(&user[1], ContentPart::Image { source: ImageSource::Url { url } } if url == "https://example.com/cat.webp")
    );
    assert_eq!(
        req.messages[1].content,
        vec![
            // The thought and the signature on the call after it: one block.
            ContentPart::Thinking {
                text: "Looking at the picture.".into(),
                signature: Some("c2lnLTE=".into())
            },
            ContentPart::ToolCall {
                id: "fc-1".into(),
                name: "lookup".into(),
                arguments: r#"{"q":"cat"}"#.into()
            },
        ]
    );
    assert!(matches!(
        &req.messages[2].content[0],
        ContentPart::ToolResult { call_id, name: Some(n), is_error: false, .. } if call_id == "fc-1" && n == "lookup"
    ));
    assert_eq!(req.tools[0].parameters["properties"]["q"]["type"], "string");
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(req.max_tokens, Some(256));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.stop, vec!["END".to_string()]);
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: json!({"type": "object", "properties": {"animal": {"type": "string"}}, "required": ["animal"]}),
            strict: None
        })
    );
    assert_eq!(
        req.reasoning,
        Some(Reasoning {
            effort: None,
            budget_tokens: Some(2048),
            disabled: false
        })
    );

    // Provider side: camelCase; thought text dropped, the signature rides
    // on the function call that followed it.
    let out = encode_req(&req);
    assert_eq!(
        out["contents"][1]["parts"],
        json!([{"functionCall": {"id": "fc-1", "name": "lookup", "args": {"q": "cat"}},
                "thoughtSignature": "c2lnLTE="}])
    );
    assert_eq!(
        out["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
    assert_eq!(
        out["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        out["generationConfig"]["responseJsonSchema"]["properties"]["animal"]["type"],
        "string"
    );
    assert_eq!(
        out["systemInstruction"]["parts"][0]["text"],
        "Answer in JSON."
    );
}

#[test]
fn input_alias_and_string_system() {
    let req =
        gemini::decode_request(json!({"input": "hi", "systemInstruction": "be brief"})).unwrap();
    assert_eq!(req.system, vec![text("be brief")]);
    assert_eq!(
        req.messages,
        vec![Message {
            role: Role::User,
            content: vec![text("hi")]
        }]
    );
    let req = gemini::decode_request(json!({"input": [
        "first",
        {"role": "model", "parts": [{"text": "ok"}]},
        {"parts": [{"text": "second"}]}
    ]}))
    .unwrap();
    assert_eq!(req.messages.len(), 3);
    assert_eq!(req.messages[1].role, Role::Assistant);
    assert_eq!(req.messages[2].content, vec![text("second")]);
}

#[test]
fn request_errors_name_the_field() {
    let e = |body: Value| gemini::decode_request(body).unwrap_err().message;
    let m = e(
        json!({"contents": [{"parts": [{"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]}]}),
    );
    assert!(
        m.contains("contents[0].parts[0].inlineData.mimeType"),
        "{m}"
    );
    assert!(m.contains("application/pdf"), "{m}");
    let m = e(json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}));
    assert!(m.contains("tools[0].googleSearch"), "{m}");
    let m = e(json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"code_execution": {}}]}));
    assert!(m.contains("tools[0].code_execution"), "{m}");
    let m = e(json!({"contents": [{"role": "user", "parts": [{"text": 5}]}]}));
    assert_eq!(
        m,
        "contents[0].parts[0].text: expected a string, got a number"
    );
    let m = e(json!({"contents": [{"role": "bot", "parts": []}]}));
    assert!(m.starts_with("contents[0].role"), "{m}");
    let m = e(
        json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": "hot"}}),
    );
    assert!(m.starts_with("generationConfig.temperature"), "{m}");
    assert_eq!(e(json!({})), "contents: required");
    assert!(e(json!([1, 2])).contains("request body"));
}

#[test]
fn thinking_config_variants() {
    let base = |tc: Value| {
        gemini::decode_request(json!({"contents": "x", "generationConfig": {"thinkingConfig": tc}}))
            .unwrap()
            .reasoning
            .unwrap()
    };
    assert!(base(json!({"thinkingBudget": 0})).disabled);
    assert_eq!(base(json!({"thinkingBudget": -1})).budget_tokens, None);
    assert_eq!(
        base(json!({"thinkingLevel": "HIGH"})).effort.as_deref(),
        Some("high")
    );
}

/// An IR request as another format's decoder would make it.
fn foreign_request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        system: vec![text("sys one"), text("sys two")],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    text("look"),
                    ContentPart::Image {
                        source: ImageSource::Url {
                            url: "data:image/png;base64,iVBORw0KGgo=".into(),
                        },
                    },
                    ContentPart::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/a.PNG?x=1".into(),
                        },
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![text("and answer"), text("")],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Thinking {
                        text: "unsigned musing".into(),
                        signature: None,
                    },
                    ContentPart::RedactedThinking { data: "xx".into() },
                    text("Calling."),
                    ContentPart::ToolCall {
                        id: "toolu_01".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"location":"Paris"}"#.into(),
                    },
                    ContentPart::ToolCall {
                        id: "toolu_02".into(),
                        name: "get_time".into(),
                        arguments: String::new(),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::ToolResult {
                        call_id: "toolu_01".into(),
                        name: None,
                        content: vec![text("72F and sunny")],
                        is_error: false,
                    },
                    ContentPart::ToolResult {
                        call_id: "toolu_02".into(),
                        name: None,
                        content: vec![text("clock broken")],
                        is_error: true,
                    },
                    ContentPart::ToolResult {
                        call_id: "toolu_02".into(),
                        name: Some("get_time".into()),
                        content: vec![
                            text(r#"{"code": 7}"#),
                            ContentPart::Image {
                                source: ImageSource::Base64 {
                                    media_type: "image/png".into(),
                                    data: "AAAA".into(),
                                },
                            },
                        ],
                        is_error: true,
                    },
                ],
            },
        ],
        tools: vec![
            Tool {
                name: "get_weather".into(),
                description: Some("weather".into()),
                parameters: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "location": {"type": "string", "format": "uri", "minLength": 1},
                        "when": {"anyOf": [{"$ref": "#/$defs/When"}, {"type": "null"}]},
                        "count": {"type": ["integer", "null"], "exclusiveMinimum": 0},
                        "kind": {"const": "city"}
                    },
                    "required": ["location", "ghost"],
                    "$defs": {"When": {"type": "string", "format": "date-time", "description": "ISO time"}}
                }),
                strict: Some(true),
            },
            Tool {
                name: "get_time".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
                strict: None,
            },
        ],
        tool_choice: Some(ToolChoice::Required),
        parallel_tool_calls: Some(true),
        reasoning: Some(Reasoning {
            effort: Some("medium".into()),
            budget_tokens: None,
            disabled: false,
        }),
        user: Some("u1".into()),
        ..Default::default()
    }
}

#[test]
fn encode_foreign_request() {
    let out = encode_req(&foreign_request("gemini-2.5-flash"));
    assert!(out.get("model").is_none());
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "sys one"}, {"text": "sys two"}]})
    );
    let contents = out["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "two user turns merge: {out}");
    assert_eq!(
        contents[0]["parts"],
        json!([
            {"text": "look"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.PNG?x=1"}},
            {"text": "and answer"}
        ])
    );
    assert_eq!(
        contents[1],
        json!({"role": "model", "parts": [
            {"text": "Calling."},
            {"functionCall": {"id": "toolu_01", "name": "get_weather", "args": {"location": "Paris"}}},
            {"functionCall": {"id": "toolu_02", "name": "get_time", "args": {}}}
        ]})
    );
    assert_eq!(
        contents[2]["parts"],
        json!([
            {"functionResponse": {"id": "toolu_01", "name": "get_weather", "response": {"result": "72F and sunny"}}},
            {"functionResponse": {"id": "toolu_02", "name": "get_time", "response": {"error": "clock broken"}}},
            {"functionResponse": {"id": "toolu_02", "name": "get_time", "response": {"error": {"code": 7}}}},
            {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
        ])
    );
    let decls = &out["tools"][0]["functionDeclarations"];
    assert_eq!(
        decls[0]["parameters"],
        json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "minLength": 1},
                "when": {"type": "string", "format": "date-time", "description": "ISO time", "nullable": true},
                "count": {"type": "integer", "nullable": true},
                "kind": {"type": "string", "enum": ["city"]}
            },
            "required": ["location"]
        })
    );
    // No parameters at all rather than an empty OBJECT schema.
    assert_eq!(decls[1], json!({"name": "get_time"}));
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        out["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 8192, "includeThoughts": true})
    );
}

#[test]
fn gemini3_unsigned_calls_get_the_documented_dummy_signature() {
    let out = encode_req(&foreign_request("gemini-3-pro-preview"));
    let parts = &out["contents"][1]["parts"];
    assert_eq!(
        parts[1]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(parts[2].get("thoughtSignature").is_none());
    assert!(parts[0].get("thoughtSignature").is_none());
    // Older models get nothing invented.
    let out = encode_req(&foreign_request("gemini-2.5-flash"));
    assert!(out["contents"][1]["parts"][1]
        .get("thoughtSignature")
        .is_none());
}

#[test]
fn reasoning_mappings() {
    let enc = |model: &str, r: Reasoning| {
        let req = ChatRequest {
            model: model.into(),
            messages: vec![Message {
                role: Role::User,
                content: vec![text("x")],
            }],
            reasoning: Some(r),
            ..Default::default()
        };
        encode_req(&req)["generationConfig"]["thinkingConfig"].clone()
    };
    let effort = |e: &str| Reasoning {
        effort: Some(e.into()),
        ..Default::default()
    };
    assert_eq!(
        enc("gemini-2.5-flash", effort("low"))["thinkingBudget"],
        1024
    );
    assert_eq!(
        enc("gemini-2.5-flash", effort("high"))["thinkingBudget"],
        24576
    );
    assert_eq!(
        enc(
            "gemini-2.5-flash",
            Reasoning {
                disabled: true,
                ..Default::default()
            }
        ),
        json!({"thinkingBudget": 0})
    );
    // Pro cannot turn thinking off: no thinkingConfig at all.
    assert_eq!(
        enc(
            "gemini-2.5-pro",
            Reasoning {
                disabled: true,
                ..Default::default()
            }
        ),
        Value::Null
    );
    // Budgets above the model's maximum are clamped.
    assert_eq!(
        enc(
            "gemini-2.5-flash",
            Reasoning {
                budget_tokens: Some(31999),
                ..Default::default()
            }
        ),
        json!({"thinkingBudget": 24576, "includeThoughts": true})
    );
    assert_eq!(
        enc("gemini-2.5-flash", Reasoning::default()),
        json!({"includeThoughts": true})
    );
    // Gemini 3 takes a thinking level for an effort, a budget for a budget.
    assert_eq!(
        enc("gemini-3-pro-preview", effort("minimal")),
        json!({"thinkingLevel": "low", "includeThoughts": true})
    );
    assert_eq!(
        enc("gemini-3-flash-preview", effort("medium")),
        json!({"thinkingLevel": "high", "includeThoughts": true})
    );
    assert_eq!(
        enc(
            "gemini-3-flash-preview",
            Reasoning {
                budget_tokens: Some(2048),
                ..Default::default()
            }
        ),
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[test]
fn plain_text_response() {
    let resp = assert_response_round_trip(fixture("response_text.json").as_bytes());
    assert_eq!(resp.id, "mAitaLmkHPPlz7IPvtfUqQ4");
    assert_eq!(resp.model, "gemini-2.0-flash");
    assert_eq!(
        resp.content,
        vec![text("AI learns patterns from data to make predictions.")]
    );
    assert_eq!(resp.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        resp.usage,
        Some(Usage {
            input_tokens: 9,
            output_tokens: 10,
            ..Default::default()
        })
    );
    let out: Value = serde_json::from_slice(&gemini::encode_response(&resp)).unwrap();
    assert_eq!(
        out,
        json!({
            "candidates": [{"content": {"parts": [{"text": "AI learns patterns from data to make predictions."}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 10, "totalTokenCount": 19},
            "modelVersion": "gemini-2.0-flash",
            "responseId": "mAitaLmkHPPlz7IPvtfUqQ4"
        })
    );
}

#[test]
fn parallel_calls_response() {
    let resp = assert_response_round_trip(fixture("response_parallel_calls.json").as_bytes());
    assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));
    let [ContentPart::Thinking {
        text: t,
        signature: Some(sig),
    }, ContentPart::ToolCall {
        id: id1,
        name: n1,
        arguments: a1,
    }, ContentPart::ToolCall {
        id: id2,
        arguments: a2,
        ..
    }] = resp.content.as_slice()
    else {
        panic!("{:?}", resp.content)
    };
    assert!(t.is_empty());
    assert_eq!(sig, "CiQB0e2Kb7vQ1x9s");
    assert_eq!(n1, "get_weather");
    assert_eq!(a1, r#"{"location":"Paris"}"#);
    assert_eq!(a2, r#"{"location":"London"}"#);
    assert!(id1.starts_with("call_") && id2.starts_with("call_") && id1 != id2);
    // Synthesized ids are unique across answers.
    let other =
        gemini::decode_response(fixture("response_parallel_calls.json").as_bytes()).unwrap();
    assert!(matches!(&other.content[1], ContentPart::ToolCall { id, .. } if id != id1));
    // Output includes thoughts.
    assert_eq!(
        resp.usage,
        Some(Usage {
            input_tokens: 120,
            output_tokens: 130,
            reasoning_tokens: Some(100),
            ..Default::default()
        })
    );
    let out: Value = serde_json::from_slice(&gemini::encode_response(&resp)).unwrap();
    assert_eq!(out["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        out["candidates"][0]["content"]["parts"][0]["thoughtSignature"],
        "CiQB0e2Kb7vQ1x9s"
    );
    assert_eq!(
        out["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"location": "Paris"})
    );
    assert_eq!(
        out["usageMetadata"],
        json!({"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 250, "thoughtsTokenCount": 100})
    );
}

#[test]
fn thinking_response_and_cached_tokens() {
    let resp = assert_response_round_trip(fixture("response_thinking.json").as_bytes());
    assert_eq!(
        resp.content,
        vec![
            ContentPart::Thinking {
                text: "**Counting primes**\n\nI need the primes below 10: 2, 3, 5, 7.".into(),
                signature: Some("EtwBCtkBAdHtim9sig==".into())
            },
            text("There are 4 prime numbers below 10: 2, 3, 5 and 7."),
        ]
    );
    assert_eq!(
        resp.usage,
        Some(Usage {
            input_tokens: 1200,
            output_tokens: 220,
            cached_input_tokens: Some(1024),
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: Some(200),
        })
    );
    let out: Value = serde_json::from_slice(&gemini::encode_response(&resp)).unwrap();
    // Gemini clients see the signature on the thought part itself.
    assert_eq!(
        out["candidates"][0]["content"]["parts"],
        json!([
            {"text": "**Counting primes**\n\nI need the primes below 10: 2, 3, 5, 7.", "thought": true,
             "thoughtSignature": "EtwBCtkBAdHtim9sig=="},
            {"text": "There are 4 prime numbers below 10: 2, 3, 5 and 7."}
        ])
    );
    assert_eq!(
        out["usageMetadata"],
        json!({"promptTokenCount": 1200, "candidatesTokenCount": 20, "totalTokenCount": 1420,
               "cachedContentTokenCount": 1024, "thoughtsTokenCount": 200})
    );
}

#[test]
fn blocked_prompt_and_errors() {
    let resp = gemini::decode_response(fixture("response_prompt_blocked.json").as_bytes()).unwrap();
    assert_eq!(resp.finish_reason, Some(FinishReason::ContentFilter));
    assert!(resp.content.is_empty());
    assert_eq!(resp.usage.map(|u| u.input_tokens), Some(12));
    let out: Value = serde_json::from_slice(&gemini::encode_response(&resp)).unwrap();
    assert_eq!(out["candidates"][0]["finishReason"], "SAFETY");

    let e = gemini::decode_response(fixture("response_error.json").as_bytes()).unwrap_err();
    assert_eq!(e.message, "API key not valid. Please pass a valid API key.");
    assert!(gemini::decode_response(b"not json").is_err());
}

#[test]
fn finish_reason_mapping() {
    let fin = |r: &str| {
        let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": r}]});
        gemini::decode_response(body.to_string().as_bytes())
            .unwrap()
            .finish_reason
            .unwrap()
    };
    assert_eq!(fin("STOP"), FinishReason::Stop);
    assert_eq!(fin("MAX_TOKENS"), FinishReason::Length);
    for r in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
    ] {
        assert_eq!(fin(r), FinishReason::ContentFilter, "{r}");
    }
    assert_eq!(
        fin("MALFORMED_FUNCTION_CALL"),
        FinishReason::Other("MALFORMED_FUNCTION_CALL".into())
    );
    let enc = |r: FinishReason| {
        let resp = apiproxy_translate::ChatResponse {
            finish_reason: Some(r),
            content: vec![text("x")],
            ..Default::default()
        };
        let v: Value = serde_json::from_slice(&gemini::encode_response(&resp)).unwrap();
        v["candidates"][0]["finishReason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(enc(FinishReason::ToolCalls), "STOP");
    assert_eq!(enc(FinishReason::Length), "MAX_TOKENS");
    assert_eq!(enc(FinishReason::ContentFilter), "SAFETY");
    assert_eq!(enc(FinishReason::Other("pause_turn".into())), "OTHER");
    assert_eq!(enc(FinishReason::Other("RECITATION".into())), "RECITATION");
}

#[test]
fn usage_convention_both_ways() {
    // IR output includes reasoning; Gemini candidates exclude thoughts.
    let resp = apiproxy_translate::ChatResponse {
        id: "r".into(),
        content: vec![text("x")],
        usage: Some(Usage {
            input_tokens: 50,
            output_tokens: 80,
            cached_input_tokens: Some(10),
            cache_creation_input_tokens: Some(5),
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: Some(60),
        }),
        ..Default::default()
    };
    let out: Value = serde_json::from_slice(&gemini::encode_response(&resp)).unwrap();
    assert_eq!(
        out["usageMetadata"],
        json!({"promptTokenCount": 50, "candidatesTokenCount": 20, "totalTokenCount": 130,
               "cachedContentTokenCount": 10, "thoughtsTokenCount": 60})
    );
    let back = gemini::decode_response(&gemini::encode_response(&resp)).unwrap();
    assert_eq!(
        back.usage,
        Some(Usage {
            cache_creation_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            ..resp.usage.unwrap()
        })
    );
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// A tiny deterministic PRNG for chunk sizes.
fn chunk_sizes(seed: u64, len: usize) -> Vec<usize> {
    let mut x = seed | 1;
    let mut out = Vec::new();
    let mut total = 0;
    while total < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x % 40) as usize + 1;
        out.push(n);
        total += n;
    }
    out
}

fn parse_sse(bytes: &[u8], sizes: &[usize]) -> Vec<SseEvent> {
    let mut p = SseParser::default();
    let mut evs = Vec::new();
    let mut rest = bytes;
    for &n in sizes {
        let (a, b) = rest.split_at(n.min(rest.len()));
        p.feed(a, &mut evs).unwrap();
        rest = b;
    }
    p.feed(rest, &mut evs).unwrap();
    p.finish(&mut evs);
    evs
}

fn decode_stream(evs: &[SseEvent]) -> Vec<StreamEvent> {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    for ev in evs {
        d.decode(ev, &mut out).unwrap();
    }
    out
}

/// Tool call ids are synthesized per decoder: compare with them blanked.
fn blank_ids(evs: Vec<StreamEvent>) -> Vec<StreamEvent> {
    evs.into_iter()
        .map(|e| match e {
            StreamEvent::ToolCallStart { index, name, .. } => StreamEvent::ToolCallStart {
                index,
                id: String::new(),
                name,
            },
            e => e,
        })
        .collect()
}

#[test]
fn thinking_stream_decodes_in_any_chunking() {
    let raw = fixture("stream_thinking_text.sse");
    let whole = decode_stream(&parse_sse(raw.as_bytes(), &[]));
    assert_eq!(
        whole,
        vec![
            StreamEvent::Start {
                id: "sTr-Xa1bC2dE3fG4".into(),
                model: "gemini-2.5-flash".into()
            },
            // A chunk's usage comes before its content.
            StreamEvent::Usage(Usage {
                input_tokens: 11,
                ..Default::default()
            }),
            StreamEvent::ThinkingDelta {
                text: "**Planning the poem**\n\nA short poem about the sea.".into()
            },
            StreamEvent::ThinkingSignature {
                signature: "Q2lRQjBlMktiN3NpZw==".into()
            },
            StreamEvent::TextDelta {
                text: "Waves fold".into()
            },
            StreamEvent::TextDelta {
                text: " into \"foam\",\nsalt on the wind.".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: 11,
                output_tokens: 312,
                cached_input_tokens: Some(4),
                cache_creation_input_tokens: None,
                cache_creation_1h_input_tokens: None,
                reasoning_tokens: Some(300),
            }),
            StreamEvent::Finish {
                reason: FinishReason::Stop
            },
        ]
    );
    for seed in 1..40 {
        let sizes = chunk_sizes(seed, raw.len());
        assert_eq!(
            decode_stream(&parse_sse(raw.as_bytes(), &sizes)),
            whole,
            "seed {seed}"
        );
    }
}

#[test]
fn function_call_stream_decodes() {
    let raw = fixture("stream_function_calls.sse");
    let evs = decode_stream(&parse_sse(raw.as_bytes(), &[]));
    let StreamEvent::ToolCallStart { id: id0, .. } = &evs[5] else {
        panic!("{evs:?}")
    };
    assert!(id0.starts_with("call_"));
    assert_eq!(
        blank_ids(evs.clone()),
        vec![
            StreamEvent::Start {
                id: "fcS-1".into(),
                model: "gemini-2.5-flash".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: 60,
                ..Default::default()
            }),
            StreamEvent::TextDelta {
                text: "Let me check both cities.".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: 60,
                output_tokens: 25,
                ..Default::default()
            }),
            StreamEvent::ThinkingSignature {
                signature: "c2lnLXBhcmlz".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: String::new(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: r#"{"location":"Paris"}"#.into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: String::new(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: r#"{"location":"London","unit":"celsius"}"#.into()
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls
            },
        ]
    );
}

#[test]
fn stream_error_chunk() {
    let raw = fixture("stream_error.sse");
    let evs = decode_stream(&parse_sse(raw.as_bytes(), &[]));
    assert_eq!(
        evs,
        vec![
            StreamEvent::Start {
                id: "err-1".into(),
                model: "gemini-2.5-flash".into()
            },
            StreamEvent::TextDelta {
                text: "Partial".into()
            },
            StreamEvent::Error {
                message: "The model is overloaded. Please try again later.".into()
            },
        ]
    );
    // An error as the very first chunk still starts the stream.
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    d.decode(
        &SseEvent {
            event: None,
            data: r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#
                .into(),
        },
        &mut out,
    )
    .unwrap();
    assert!(matches!(&out[0], StreamEvent::Start { .. }));
    assert_eq!(
        out[1],
        StreamEvent::Error {
            message: "quota".into()
        }
    );
    // Garbage is an error, not a panic.
    assert!(d
        .decode(
            &SseEvent {
                event: None,
                data: "{oops".into()
            },
            &mut out
        )
        .is_err());
}

#[test]
fn prompt_block_in_stream() {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    d.decode(
        &SseEvent {
            event: None,
            data: fixture_json("response_prompt_blocked.json").to_string(),
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(
        out.last(),
        Some(&StreamEvent::Finish {
            reason: FinishReason::ContentFilter
        })
    );
}

/// The events with every `Usage` but the last removed (the encoder sends
/// usage once, in the final chunk).
fn last_usage_only(evs: &[StreamEvent]) -> (Vec<StreamEvent>, Option<Usage>) {
    let last = evs.iter().rev().find_map(|e| match e {
        StreamEvent::Usage(u) => Some(*u),
        _ => None,
    });
    let rest = evs
        .iter()
        .filter(|e| !matches!(e, StreamEvent::Usage(_)))
        .cloned()
        .collect();
    (rest, last)
}

/// Every chunk the encoder wrote, parsed; asserts the SSE is `data:` only.
fn encoded_chunks(bytes: &[u8]) -> Vec<Value> {
    let s = std::str::from_utf8(bytes).unwrap();
    assert!(!s.contains("event:"), "{s}");
    assert!(!s.contains("[DONE]"), "{s}");
    let evs = parse_sse(bytes, &[]);
    evs.iter()
        .map(|e| {
            assert!(e.event.is_none());
            serde_json::from_str(&e.data).unwrap()
        })
        .collect()
}

fn encode_all(evs: &[StreamEvent], opts: StreamOptions) -> Vec<u8> {
    let mut enc = StreamEncoder::new(opts);
    let mut out = BytesMut::new();
    for e in evs {
        enc.encode(e, &mut out);
    }
    enc.finish(&mut out);
    out.to_vec()
}

#[test]
fn thinking_stream_round_trip() {
    let raw = fixture("stream_thinking_text.sse");
    let evs = decode_stream(&parse_sse(raw.as_bytes(), &[]));
    let bytes = encode_all(&evs, StreamOptions::default());
    let chunks = encoded_chunks(&bytes);
    for c in &chunks {
        assert_eq!(c["modelVersion"], "gemini-2.5-flash");
        assert_eq!(c["responseId"], "sTr-Xa1bC2dE3fG4");
        assert_eq!(c["candidates"][0]["content"]["role"], "model");
    }
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"],
        json!([{"text": "**Planning the poem**\n\nA short poem about the sea.", "thought": true}])
    );
    assert_eq!(
        chunks[1]["candidates"][0]["content"]["parts"],
        json!([{"text": "Waves fold", "thoughtSignature": "Q2lRQjBlMktiN3NpZw=="}])
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 11, "candidatesTokenCount": 12, "totalTokenCount": 323,
               "cachedContentTokenCount": 4, "thoughtsTokenCount": 300})
    );
    // Decoding what we wrote gives back the same neutral events.
    let again = decode_stream(&parse_sse(&bytes, &[]));
    assert_eq!(last_usage_only(&again), last_usage_only(&evs));
}

#[test]
fn function_call_stream_round_trip() {
    let raw = fixture("stream_function_calls.sse");
    let evs = decode_stream(&parse_sse(raw.as_bytes(), &[]));
    let bytes = encode_all(&evs, StreamOptions::default());
    let again = decode_stream(&parse_sse(&bytes, &[]));
    // Ids are kept by the encoder, so the second decode sees the same ones.
    assert_eq!(last_usage_only(&again), last_usage_only(&evs));
    let chunks = encoded_chunks(&bytes);
    // One whole functionCall part per chunk, args as an object.
    let first = &chunks[1]["candidates"][0]["content"]["parts"][0];
    assert_eq!(first["functionCall"]["args"], json!({"location": "Paris"}));
    assert_eq!(first["thoughtSignature"], "c2lnLXBhcmlz");
    assert_eq!(
        chunks[2]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"location": "London", "unit": "celsius"})
    );
}

#[test]
fn encoder_buffers_openai_style_argument_deltas() {
    let evs = vec![
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "gpt-4o".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_a".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"loc".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "ation\":\"Paris\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "call_b".into(),
            name: "get_time".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "".into(),
        },
        StreamEvent::Finish {
            reason: FinishReason::ToolCalls,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 7,
            output_tokens: 9,
            ..Default::default()
        }),
    ];
    let opts = StreamOptions {
        model_override: Some("my-logical-model".into()),
        include_usage: false,
    };
    let chunks = encoded_chunks(&encode_all(&evs, opts));
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"id": "call_a", "name": "get_weather", "args": {"location": "Paris"}}}])
    );
    assert_eq!(
        chunks[1]["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"id": "call_b", "name": "get_time", "args": {}}}])
    );
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        chunks[2]["usageMetadata"],
        json!({"promptTokenCount": 7, "candidatesTokenCount": 9, "totalTokenCount": 16})
    );
    for c in &chunks {
        assert_eq!(c["modelVersion"], "my-logical-model");
        assert_eq!(c["responseId"], "chatcmpl-1");
    }
}

#[test]
fn encoder_closes_a_stream_without_finish_and_fails_once() {
    let mut enc = StreamEncoder::new(StreamOptions::default());
    let mut out = BytesMut::new();
    enc.encode(
        &StreamEvent::Start {
            id: "msg_1".into(),
            model: "claude".into(),
        },
        &mut out,
    );
    enc.encode(&StreamEvent::TextDelta { text: "hi".into() }, &mut out);
    enc.encode(
        &StreamEvent::ThinkingSignature {
            signature: "sig".into(),
        },
        &mut out,
    );
    enc.finish(&mut out);
    enc.finish(&mut out);
    let chunks = encoded_chunks(&out);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        chunks[1]["candidates"][0]["content"]["parts"],
        json!([{"text": "", "thoughtSignature": "sig"}])
    );

    let mut enc = StreamEncoder::new(StreamOptions::default());
    let mut out = BytesMut::new();
    enc.encode(
        &StreamEvent::TextDelta {
            text: "part".into(),
        },
        &mut out,
    );
    enc.fail(Some(503), "upstream went away", &mut out);
    enc.finish(&mut out);
    enc.fail(Some(503), "again", &mut out);
    let chunks = encoded_chunks(&out);
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[1],
        json!({"error": {"code": 503, "message": "upstream went away", "status": "UNAVAILABLE"}})
    );
    // The first chunk had a synthesized id even without Start.
    assert!(chunks[0]["responseId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    // An upstream error event inside the stream.
    let mut enc = StreamEncoder::new(StreamOptions::default());
    let mut out = BytesMut::new();
    enc.encode(
        &StreamEvent::Error {
            message: "boom".into(),
        },
        &mut out,
    );
    enc.finish(&mut out);
    let chunks = encoded_chunks(&out);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["error"]["message"], "boom");
}

/// A Responses upstream ends its stream with `response.completed` (finish
/// and usage, no text): the Gemini client's last chunk holds the finish
/// reason and usage with a content of no parts, as Gemini's own final
/// chunks do (`"content": {"role": "model"}`), never an empty text part.
#[test]
fn last_chunk_of_a_foreign_stream_has_no_empty_text_part() {
    let upstream = concat!(
        "event: response.created\n",
        r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1756322842,"status":"in_progress","model":"gpt-5-mini","output":[]}}"#,
        "\n\n",
        "event: response.output_item.added\n",
        r#"data: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#,
        "\n\n",
        "event: response.output_text.delta\n",
        r#"data: {"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello"}"#,
        "\n\n",
        "event: response.output_text.delta\n",
        r#"data: {"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" there."}"#,
        "\n\n",
        "event: response.output_item.done\n",
        r#"data: {"type":"response.output_item.done","sequence_number":4,"output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"text":"Hello there."}],"role":"assistant"}}"#,
        "\n\n",
        "event: response.completed\n",
        r#"data: {"type":"response.completed","sequence_number":5,"response":{"id":"resp_1","object":"response","created_at":1756322842,"status":"completed","model":"gpt-5-mini","output":[],"usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":0},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12}}}"#,
        "\n\n",
    );
    let mut dec = apiproxy_translate::openai_responses::StreamDecoder::default();
    let mut evs = Vec::new();
    for ev in parse_sse(upstream.as_bytes(), &[]) {
        dec.decode(&ev, &mut evs).unwrap();
    }
    let chunks = encoded_chunks(&encode_all(&evs, StreamOptions::default()));

    let parts: Vec<&Value> = chunks
        .iter()
        .flat_map(|c| c["candidates"][0]["content"]["parts"].as_array())
        .flatten()
        .collect();
    assert_eq!(
        parts,
        [&json!({"text": "Hello"}), &json!({"text": " there."})]
    );
    let last = chunks.last().unwrap();
    assert_eq!(
        last["candidates"],
        json!([{"content": {"role": "model"}, "finishReason": "STOP", "index": 0}])
    );
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12,
               "cachedContentTokenCount": 0, "thoughtsTokenCount": 0})
    );
    // Gemini's own decoder reads the final chunk back to the same answer.
    let again = decode_stream(&parse_sse(&encode_all(&evs, StreamOptions::default()), &[]));
    assert_eq!(last_usage_only(&again).0, last_usage_only(&evs).0);
}

#[test]
fn signed_thinking_from_other_formats_signs_the_next_part() {
    // What an Anthropic client sends back after a Gemini answer.
    let req = ChatRequest {
        model: "gemini-3-flash-preview".into(),
        messages: vec![
            Message {
                role: Role::User,
                content: vec![text("weather?")],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Thinking {
                        text: "I should call the tool.".into(),
                        signature: Some("R2VtaW5pU2ln".into()),
                    },
                    ContentPart::ToolCall {
                        id: "toolu_9".into(),
                        name: "get_weather".into(),
                        arguments: "{}".into(),
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![ContentPart::Thinking {
                    text: "only thinking".into(),
                    signature: Some("c2lnMg==".into()),
                }],
            },
        ],
        ..Default::default()
    };
    let out = encode_req(&req);
    assert_eq!(
        out["contents"][1]["parts"],
        json!([
            {"functionCall": {"id": "toolu_9", "name": "get_weather", "args": {}},
             "thoughtSignature": "R2VtaW5pU2ln"},
            {"text": "only thinking", "thought": true, "thoughtSignature": "c2lnMg=="}
        ])
    );
    // Decoding that back joins nothing across the call: same IR shape.
    let back = gemini::decode_request(out).unwrap();
    assert_eq!(
        back.messages[1].content[0],
        ContentPart::Thinking {
            text: String::new(),
            signature: Some("R2VtaW5pU2ln".into())
        }
    );
}

#[test]
fn thought_runs_join_into_one_signed_block() {
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "a", "thought": true},
        {"text": "b", "thought": true},
        {"text": "", "thought": true, "thoughtSignature": "s1"},
        {"text": "answer"},
        {"text": "", "thoughtSignature": "s2"}
    ]}, "finishReason": "STOP"}]});
    let resp = gemini::decode_response(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        resp.content,
        vec![
            ContentPart::Thinking {
                text: "ab".into(),
                signature: Some("s1".into())
            },
            text("answer"),
            ContentPart::Thinking {
                text: String::new(),
                signature: Some("s2".into())
            },
        ]
    );
    let out: Value = serde_json::from_slice(&gemini::encode_response(&resp)).unwrap();
    assert_eq!(
        out["candidates"][0]["content"]["parts"],
        json!([
            {"text": "ab", "thought": true, "thoughtSignature": "s1"},
            {"text": "answer"},
            {"text": "", "thoughtSignature": "s2"}
        ])
    );
}
