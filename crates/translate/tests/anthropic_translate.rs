//! Anthropic Messages translation against payloads shaped like the API
//! reference's: requests, responses, stream transcripts.

use apiproxy_translate::anthropic::{
    decode_request, decode_response, encode_request, encode_response, StreamDecoder, StreamEncoder,
};
use apiproxy_translate::{
    ChatRequest, ContentPart, FinishReason, ImageSource, Message, Reasoning, ResponseFormat, Role,
    SseEvent, SseParser, StreamDecode, StreamEncode, StreamEvent, StreamOptions, Tool, ToolChoice,
    Usage,
};
use bytes::BytesMut;
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn reencode(req: &ChatRequest) -> Value {
    serde_json::from_slice(&encode_request(req).unwrap()).unwrap()
}

fn text(t: &str) -> ContentPart {
    ContentPart::Text { text: t.into() }
}

// ---------------------------------------------------------------- requests

#[test]
fn basic_request_decodes_every_field() {
    let req = decode_request(fixture_json("request-basic.json")).unwrap();
    assert_eq!(req.model, "claude-sonnet-4-5");
    assert_eq!(
        req.system,
        vec![
            text("You are a terse assistant."),
            text("Answer in French.")
        ]
    );
    assert_eq!(
        req.messages,
        vec![
            Message {
                role: Role::User,
                content: vec![text("Hello, Claude")]
            },
            Message {
                role: Role::Assistant,
                content: vec![text("Bonjour.")]
            },
            // Consecutive user turns are legal and kept apart.
            Message {
                role: Role::User,
                content: vec![text("How are you?")]
            },
            Message {
                role: Role::User,
                content: vec![text("Be brief.")]
            },
        ]
    );
    assert_eq!(req.max_tokens, Some(1024));
    assert_eq!(req.stop, vec!["\n\nHuman:".to_owned()]);
    assert_eq!(req.temperature, Some(0.2));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.user.as_deref(), Some("user-1234"));
    assert!(req.stream);
    assert_eq!(req.reasoning, None);
}

#[test]
fn basic_request_round_trips() {
    let original = fixture_json("request-basic.json");
    let out = reencode(&decode_request(original.clone()).unwrap());
    assert_eq!(
        out,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [
                {"type": "text", "text": "You are a terse assistant."},
                // The client's prompt-cache breakpoints survive translation.
                {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Bonjour."}]},
                {"role": "user", "content": [{"type": "text", "text": "How are you?",
                    "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [{"type": "text", "text": "Be brief."}]}
            ],
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "metadata": {"user_id": "user-1234"},
            "stream": true
        })
    );
}

#[test]
fn tools_thinking_and_results_decode() {
    let req = decode_request(fixture_json("request-tools.json")).unwrap();
    assert_eq!(
        req.reasoning,
        Some(Reasoning {
            budget_tokens: Some(10000),
            ..Reasoning::default()
        })
    );
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(req.parallel_tool_calls, Some(true));
    assert_eq!(req.tools.len(), 2);
    assert_eq!(req.tools[0].name, "get_weather");
    assert_eq!(
        req.tools[0].description.as_deref(),
        Some("Get the current weather in a given location")
    );
    assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
    let assistant = &req.messages[1];
    assert_eq!(assistant.role, Role::Assistant);
    assert_eq!(
        assistant.content,
        vec![
            ContentPart::Thinking {
                text: "The user wants weather and time. I can call both tools at once.".into(),
                signature: Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into()),
            },
            ContentPart::RedactedThinking {
                data: "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP".into()
            },
            text("I'll check both."),
            ContentPart::ToolCall {
                id: "toolu_01A09q90qw90lq917835lq9".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"Paris, France","unit":"celsius"}"#.into(),
            },
            ContentPart::ToolCall {
                id: "toolu_01B12r34st56uv78wx90yz12".into(),
                name: "get_time".into(),
                arguments: r#"{"timezone":"Europe/Paris"}"#.into(),
            },
        ]
    );
    assert_eq!(
        req.messages[2].content,
        vec![
            ContentPart::ToolResult {
                call_id: "toolu_01A09q90qw90lq917835lq9".into(),
                name: None,
                content: vec![text("15 degrees, light rain")],
                is_error: false,
            },
            ContentPart::ToolResult {
                call_id: "toolu_01B12r34st56uv78wx90yz12".into(),
                name: None,
                content: vec![text("time service unavailable")],
                is_error: true,
            },
            text("Also tell me if I need an umbrella."),
        ]
    );
}

#[test]
fn tools_request_round_trips() {
    let original = fixture_json("request-tools.json");
    let out = reencode(&decode_request(original.clone()).unwrap());
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 10000})
    );
    assert_eq!(out["max_tokens"], 16000);
    // disable_parallel_tool_use: false is the default: auto is sent as is.
    assert_eq!(out["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        out["tools"][1],
        json!({"name": "get_time", "description": "Get the current time in a given time zone",
               "input_schema": original["tools"][1]["input_schema"]})
    );
    assert_eq!(
        out["tools"][0]["input_schema"],
        original["tools"][0]["input_schema"]
    );
    // The assistant turn comes back block for block.
    assert_eq!(out["messages"][1], original["messages"][1]);
    assert_eq!(
        out["messages"][2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
             "content": [{"type": "text", "text": "15 degrees, light rain"}]},
            {"type": "tool_result", "tool_use_id": "toolu_01B12r34st56uv78wx90yz12",
             "content": [{"type": "text", "text": "time service unavailable"}], "is_error": true},
            {"type": "text", "text": "Also tell me if I need an umbrella."}
        ])
    );
}

#[test]
fn images_decode_and_round_trip() {
    let original = fixture_json("request-images.json");
    let req = decode_request(original.clone()).unwrap();
    assert_eq!(
        req.messages[0].content[0],
        ContentPart::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: original["messages"][0]["content"][0]["source"]["data"]
                    .as_str()
                    .unwrap()
                    .into()
            }
        }
    );
    assert_eq!(
        req.messages[0].content[1],
        ContentPart::Image {
            source: ImageSource::Url {
                url: "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg".into()
            }
        }
    );
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));
    assert_eq!(req.parallel_tool_calls, Some(false));
    let ContentPart::ToolResult { content, .. } = &req.messages[2].content[0] else {
        panic!("expected a tool result");
    };
    assert_eq!(content.len(), 2);
    assert!(matches!(
        &content[1],
        ContentPart::Image { source: ImageSource::Base64 { media_type, .. } } if media_type == "image/jpeg"
    ));
    let out = reencode(&req);
    assert_eq!(out["messages"], original["messages"]);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}

#[test]
fn unsupported_blocks_and_tools_are_named() {
    let e = decode_request(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}
    ]}))
    .unwrap_err();
    assert!(e.message.starts_with("messages[0].content[1]:"), "{e}");
    assert!(e.message.contains("`document`"), "{e}");

    let e = decode_request(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
            "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}]}
    ]}))
    .unwrap_err();
    assert!(
        e.message.starts_with("messages[0].content[0].content[0]:"),
        "{e}"
    );
    assert!(e.message.contains("`search_result`"), "{e}");

    let e = decode_request(json!({"model": "m", "messages": [],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}))
    .unwrap_err();
    assert!(e.message.starts_with("tools[0]:"), "{e}");
    assert!(e.message.contains("web_search_20250305"), "{e}");

    // A custom tool may say so explicitly.
    let ok = decode_request(json!({"model": "m", "messages": [],
        "tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}}]}))
    .unwrap();
    assert_eq!(ok.tools[0].name, "f");
}

#[test]
fn wrong_types_name_the_field() {
    let cases = [
        (json!({"model": "m"}), "messages: required"),
        (
            json!({"model": 3, "messages": []}),
            "model: expected a string",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content: expected a string or an array of content blocks",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role: unknown role `tool`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}]}]}),
            "messages[0].content[0].source.data: required",
        ),
        (
            json!({"model": "m", "messages": [], "max_tokens": "ten"}),
            "max_tokens: expected a non-negative integer",
        ),
        (
            json!({"model": "m", "messages": [], "system": 1}),
            "system: expected a string or an array of text blocks",
        ),
        (
            json!({"model": "m", "messages": [], "tool_choice": {"type": "sometimes"}}),
            "tool_choice.type: unknown value `sometimes`",
        ),
        (
            json!({"model": "m", "messages": [], "thinking": {"type": "enabled", "budget_tokens": -1}}),
            "thinking.budget_tokens: expected a non-negative integer",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]}),
            "messages[0].content[0].is_error: expected a boolean",
        ),
    ];
    for (body, want) in cases {
        let e = decode_request(body.clone()).unwrap_err();
        assert!(
            e.message.starts_with(want),
            "{body}: got `{e}`, want `{want}`"
        );
    }
    assert!(decode_request(json!([1])).is_err());
}

#[test]
fn thinking_disabled_and_unknown_fields() {
    let req = decode_request(
        json!({"model": "m", "messages": [], "thinking": {"type": "disabled"},
        "container": "x", "mcp_servers": [], "temperature": null}),
    )
    .unwrap();
    assert_eq!(
        req.reasoning,
        Some(Reasoning {
            disabled: true,
            ..Reasoning::default()
        })
    );
    assert_eq!(req.temperature, None);
    assert_eq!(reencode(&req)["thinking"], json!({"type": "disabled"}));
}

fn ir_request() -> ChatRequest {
    ChatRequest {
        model: "claude-haiku-4-5".into(),
        messages: vec![Message {
            role: Role::User,
            content: vec![text("hi")],
        }],
        ..ChatRequest::default()
    }
}

#[test]
fn encode_defaults_and_drops() {
    let mut req = ir_request();
    req.n = Some(3);
    req.seed = Some(7);
    req.presence_penalty = Some(0.5);
    req.frequency_penalty = Some(0.5);
    req.stream = true;
    req.stream_include_usage = true;
    req.stop = vec!["END".into(), "  ".into()];
    req.temperature = Some(1.7);
    let out = reencode(&req);
    assert_eq!(
        out,
        json!({"model": "claude-haiku-4-5", "max_tokens": 4096, "stream": true,
               "stop_sequences": ["END"], "temperature": 1.0,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    );
}

#[test]
fn encode_thinking_budgets() {
    let with = |effort: Option<&str>, budget: Option<u64>, max: Option<u64>| {
        let mut req = ir_request();
        req.reasoning = Some(Reasoning {
            effort: effort.map(str::to_owned),
            budget_tokens: budget,
            disabled: false,
        });
        req.max_tokens = max;
        req.temperature = Some(0.3);
        req.top_k = Some(5);
        reencode(&req)
    };
    let out = with(Some("low"), None, None);
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(out["max_tokens"], 1024 + 4096);
    // Thinking refuses temperature and top_k.
    assert!(out.get("temperature").is_none() && out.get("top_k").is_none());
    let out = with(Some("medium"), None, Some(20000));
    assert_eq!(out["thinking"]["budget_tokens"], 4096);
    assert_eq!(out["max_tokens"], 20000);
    let out = with(Some("high"), None, Some(1000));
    assert_eq!(out["thinking"]["budget_tokens"], 16384);
    // max_tokens must exceed the budget: the client's limit goes to the answer.
    assert_eq!(out["max_tokens"], 16384 + 1000);
    let out = with(Some("minimal"), None, Some(100));
    assert!(out.get("thinking").is_none());
    assert_eq!(out["temperature"], 0.3);
    let out = with(None, Some(500), None);
    assert_eq!(
        out["thinking"]["budget_tokens"], 1024,
        "raised to the minimum"
    );
    let out = with(None, Some(0), None);
    assert_eq!(out["thinking"], json!({"type": "disabled"}));
}

#[test]
fn encode_forced_tool_drops_thinking() {
    let mut req = ir_request();
    req.tools = vec![Tool {
        name: "f".into(),
        description: None,
        parameters: Value::Null,
        strict: Some(true),
    }];
    req.tool_choice = Some(ToolChoice::Function("f".into()));
    req.reasoning = Some(Reasoning {
        effort: Some("high".into()),
        ..Reasoning::default()
    });
    let out = reencode(&req);
    assert!(out.get("thinking").is_none());
    assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "f"}));
    assert_eq!(
        out["tools"],
        json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
    );
    req.tools.push(Tool {
        name: "g".into(),
        description: Some("G".into()),
        parameters: json!({"properties": {"a": {"type": "string"}}}),
        strict: None,
    });
    assert_eq!(
        reencode(&req)["tools"][1],
        json!({"name": "g", "description": "G",
               "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}})
    );
    req.tool_choice = Some(ToolChoice::None);
    req.parallel_tool_calls = Some(false);
    assert_eq!(reencode(&req)["tool_choice"], json!({"type": "none"}));
    req.tool_choice = None;
    assert_eq!(
        reencode(&req)["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // No tools: no tool_choice (Anthropic refuses it).
    req.tools.clear();
    req.tool_choice = Some(ToolChoice::Required);
    assert!(reencode(&req).get("tool_choice").is_none());
}

#[test]
fn encode_tool_results_first_and_merged() {
    let mut req = ir_request();
    req.messages = vec![
        Message {
            role: Role::User,
            content: vec![text("weather in Paris and Rome?")],
        },
        Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Thinking {
                    text: "unsigned, from another provider".into(),
                    signature: None,
                },
                ContentPart::ToolCall {
                    id: "call_1".into(),
                    name: "w".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                },
                ContentPart::ToolCall {
                    id: "call:2".into(),
                    name: "w".into(),
                    arguments: String::new(),
                },
            ],
        },
        // One user turn per OpenAI `tool` message, then the user's text.
        Message {
            role: Role::User,
            content: vec![ContentPart::ToolResult {
                call_id: "call_1".into(),
                name: Some("w".into()),
                content: vec![text("sunny")],
                is_error: false,
            }],
        },
        Message {
            role: Role::User,
            content: vec![
                text("and thanks"),
                ContentPart::ToolResult {
                    call_id: "call:2".into(),
                    name: Some("w".into()),
                    content: vec![],
                    is_error: true,
                },
            ],
        },
    ];
    let out = reencode(&req);
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "w", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "tool_result", "tool_use_id": "call_2", "is_error": true},
                {"type": "text", "text": "and thanks"}
            ]}
        ])
    );
}

#[test]
fn encode_rejects_invalid_tool_arguments() {
    let mut req = ir_request();
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![ContentPart::ToolCall {
            id: "call_9".into(),
            name: "lookup".into(),
            arguments: r#"{"q": "unterminated"#.into(),
        }],
    });
    let e = encode_request(&req).unwrap_err();
    assert!(
        e.message.contains("call_9") && e.message.contains("lookup"),
        "{e}"
    );
}

#[test]
fn encode_json_schema_natively_where_the_model_has_it() {
    let mut req = ir_request();
    req.system = vec![text("Be terse.")];
    let schema = json!({"type": "object", "properties": {"x": {"type": "integer"}}});
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: schema.clone(),
        strict: Some(true),
    });
    req.messages[0].content.push(ContentPart::Image {
        source: ImageSource::Url {
            url: "https://example.com/a.png".into(),
        },
    });
    let out = reencode(&req);
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "Be terse."}])
    );
    assert_eq!(
        out["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    assert!(out.get("tools").is_none() && out.get("response_format").is_none());
    assert_eq!(
        out["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
    );
}

#[test]
fn which_models_have_native_structured_output() {
    use apiproxy_translate::anthropic::native_structured_output as native;
    for m in [
        "claude-haiku-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-opus-4-6",
        "claude-sonnet-4.6",
        "claude-opus-5",
    ] {
        assert!(native(m), "{m}");
    }
    for m in [
        "claude-3-5-haiku-20241022",
        "claude-3-7-sonnet-latest",
        "claude-sonnet-4-20250514",
        "claude-opus-4-1",
        "claude-opus-4-1@20250805",
        "claude-sonnet-4",
    ] {
        assert!(!native(m), "{m}");
    }
}

#[test]
fn encode_json_schema_as_forced_tool_on_older_models() {
    let mut req = ir_request();
    req.model = "claude-3-5-haiku-20241022".into();
    req.reasoning = Some(Reasoning {
        budget_tokens: Some(2048),
        ..Reasoning::default()
    });
    let schema = json!({"type": "object", "properties": {"x": {"type": "integer"}}});
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: schema.clone(),
        strict: None,
    });
    let out = reencode(&req);
    assert!(out.get("output_config").is_none());
    assert_eq!(out["tools"][0]["name"], "apiproxy_structured_output");
    assert_eq!(out["tools"][0]["input_schema"], schema);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": "apiproxy_structured_output"})
    );
    // Anthropic refuses thinking with a forced tool.
    assert!(out.get("thinking").is_none());

    // With tools of its own the client's stay callable.
    req.tools = vec![Tool {
        name: "lookup".into(),
        description: None,
        parameters: json!({"type": "object"}),
        strict: None,
    }];
    let out = reencode(&req);
    assert_eq!(out["tools"][0]["name"], "lookup");
    assert_eq!(out["tools"][1]["name"], "apiproxy_structured_output");
    assert_eq!(out["tool_choice"], json!({"type": "any"}));
}

#[test]
fn json_object_without_schema_is_refused_naming_the_field() {
    let mut req = ir_request();
    req.response_format = Some(ResponseFormat::JsonObject);
    let e = encode_request(&req).unwrap_err().to_string();
    assert!(e.starts_with("response_format:"), "{e}");
    assert!(e.contains("json_schema"), "{e}");
}

#[test]
fn decode_output_config_and_beta_output_format() {
    let schema = json!({"type": "object", "properties": {"x": {"type": "integer"}}});
    let req = decode_request(json!({"model": "claude-opus-4-6", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}}))
    .unwrap();
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "output".into(),
            schema: schema.clone(),
            strict: Some(true)
        })
    );
    assert_eq!(req.reasoning.unwrap().effort.as_deref(), Some("low"));
    let req = decode_request(json!({"model": "m", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "output_format": {"type": "json_schema", "schema": schema}}))
    .unwrap();
    assert!(matches!(
        req.response_format,
        Some(ResponseFormat::JsonSchema { .. })
    ));
    let e = decode_request(json!({"model": "m", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "output_config": {"format": {"type": "json_schema"}}}))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("output_config.format.schema"), "{e}");
}

#[test]
fn structured_tool_answer_decodes_as_text() {
    let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "apiproxy_structured_output",
            "input": {"x": 3}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 3}});
    let r = decode_response(body.to_string().as_bytes()).unwrap();
    assert_eq!(r.content, vec![text(r#"{"x":3}"#)]);
    assert_eq!(r.finish_reason, Some(FinishReason::Stop));

    let events = [
        r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-3-5-haiku","usage":{"input_tokens":5,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"apiproxy_structured_output","input":{}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"x\""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":":3}"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}"#,
    ]
    .map(|d| SseEvent {
        event: None,
        data: d.to_owned(),
    });
    let out = decode_all(&events);
    let text: String = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, r#"{"x":3}"#);
    assert!(!out
        .iter()
        .any(|e| matches!(e, StreamEvent::ToolCallStart { .. })));
    assert!(out.contains(&StreamEvent::Finish {
        reason: FinishReason::Stop
    }));
}

// --------------------------------------------------------------- responses

#[test]
fn text_response_and_usage_convention() {
    let body = fixture("response-text.json");
    let resp = decode_response(body.as_bytes()).unwrap();
    assert_eq!(resp.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(resp.model, "claude-sonnet-4-5-20250929");
    assert_eq!(resp.content, vec![text("Hi! My name is Claude.")]);
    assert_eq!(resp.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        resp.usage,
        Some(Usage {
            input_tokens: 2095 + 2051 + 1800,
            output_tokens: 503,
            cached_input_tokens: Some(1800),
            cache_creation_input_tokens: Some(2051),
            cache_creation_1h_input_tokens: None,
            reasoning_tokens: None,
        })
    );
    // Back out: byte-for-byte the same JSON value.
    let again: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
    assert_eq!(again, fixture_json("response-text.json"));
}

#[test]
fn tool_response_round_trips() {
    let body = fixture("response-tools.json");
    let resp = decode_response(body.as_bytes()).unwrap();
    assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(resp.content.len(), 5);
    assert_eq!(
        resp.content[3],
        ContentPart::ToolCall {
            id: "toolu_01A09q90qw90lq917835lq9".into(),
            name: "get_weather".into(),
            arguments: r#"{"location":"Paris, France","unit":"celsius"}"#.into(),
        }
    );
    assert!(
        matches!(&resp.content[0], ContentPart::Thinking { signature: Some(s), .. } if s.starts_with("WaUj"))
    );
    assert!(matches!(
        &resp.content[1],
        ContentPart::RedactedThinking { .. }
    ));
    let again: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
    assert_eq!(again, fixture_json("response-tools.json"));
}

#[test]
fn error_response_is_an_error() {
    let e = decode_response(fixture("error-overloaded.json").as_bytes()).unwrap_err();
    assert!(e.message.contains("Overloaded"), "{e}");
}

// ----------------------------------------------------------------- streams

/// Feeds `bytes` to a parser in chunks of the sizes `sizes` cycles through.
fn parse_chunked(bytes: &[u8], sizes: &[usize]) -> Vec<SseEvent> {
    let mut p = SseParser::default();
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].clamp(1, rest.len());
        k += 1;
        let (a, b) = rest.split_at(n);
        p.feed(a, &mut out).unwrap();
        rest = b;
    }
    p.finish(&mut out);
    out
}

fn decode_all(events: &[SseEvent]) -> Vec<StreamEvent> {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    for ev in events {
        d.decode(ev, &mut out).unwrap();
    }
    out
}

fn encode_all(events: &[StreamEvent], opts: StreamOptions) -> Vec<u8> {
    let mut e = StreamEncoder::new(opts);
    let mut out = BytesMut::new();
    for ev in events {
        e.encode(ev, &mut out);
    }
    e.finish(&mut out);
    out.to_vec()
}

fn thinking_tools_events() -> Vec<StreamEvent> {
    let usage_start = Usage {
        input_tokens: 472 + 100 + 2000,
        output_tokens: 2,
        cached_input_tokens: Some(2000),
        cache_creation_input_tokens: Some(100),
        cache_creation_1h_input_tokens: None,
        reasoning_tokens: None,
    };
    vec![
        StreamEvent::Start {
            id: "msg_01Stream7Xk2".into(),
            model: "claude-sonnet-4-5-20250929".into(),
        },
        StreamEvent::Usage(usage_start),
        StreamEvent::ThinkingDelta {
            text: "The user wants weather and time.".into(),
        },
        StreamEvent::ThinkingDelta {
            text: " Call both tools.".into(),
        },
        StreamEvent::ThinkingSignature {
            signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into(),
        },
        StreamEvent::TextDelta {
            text: "I'll check ".into(),
        },
        StreamEvent::TextDelta {
            text: "both. éè \"quoted\"\n".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_01A09q90qw90lq917835lq9".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"location\": \"Par".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "is, France\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "toolu_01B12r34st56uv78wx90yz12".into(),
            name: "get_time".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "{\"timezone\": \"Europe/Paris\"}".into(),
        },
        StreamEvent::Finish {
            reason: FinishReason::ToolCalls,
        },
        StreamEvent::Usage(Usage {
            output_tokens: 89,
            ..usage_start
        }),
    ]
}

#[test]
fn stream_transcript_decodes_in_any_chunking() {
    let raw = fixture("stream-thinking-tools.sse");
    let want = thinking_tools_events();
    for sizes in [&[usize::MAX][..], &[1], &[7, 3, 1, 64], &[13, 2, 200, 5]] {
        let events = parse_chunked(raw.as_bytes(), sizes);
        assert_eq!(decode_all(&events), want, "chunk sizes {sizes:?}");
    }
}

#[test]
fn simple_text_stream_decodes() {
    let events = parse_chunked(fixture("stream-text.sse").as_bytes(), &[5]);
    let got = decode_all(&events);
    assert_eq!(
        got,
        vec![
            StreamEvent::Start {
                id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".into(),
                model: "claude-haiku-4-5".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: 25,
                output_tokens: 1,
                ..Usage::default()
            }),
            StreamEvent::TextDelta {
                text: "Hello".into()
            },
            StreamEvent::TextDelta { text: "!".into() },
            StreamEvent::Finish {
                reason: FinishReason::Length
            },
            StreamEvent::Usage(Usage {
                input_tokens: 25,
                output_tokens: 15,
                ..Usage::default()
            }),
        ]
    );
}

/// The `(event name, data JSON)` pairs of an SSE byte stream.
fn sse_json(bytes: &[u8]) -> Vec<(String, Value)> {
    parse_chunked(bytes, &[usize::MAX])
        .into_iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data)
                .unwrap_or_else(|err| panic!("bad JSON {:?}: {err}", e.data));
            (e.event.unwrap_or_default(), v)
        })
        .collect()
}

#[test]
fn stream_round_trip_is_equivalent() {
    let raw = fixture("stream-thinking-tools.sse");
    let upstream = sse_json(raw.as_bytes());
    let encoded = encode_all(&thinking_tools_events(), StreamOptions::default());
    let ours = sse_json(&encoded);
    // Same events (pings aside), same data: block for block, delta for
    // delta, except the empty input_json_delta Anthropic sends first.
    let keep =
        |(name, v): &(String, Value)| name != "ping" && v["delta"]["partial_json"] != json!("");
    let upstream: Vec<_> = upstream.into_iter().filter(keep).collect();
    assert_eq!(ours.len(), upstream.len());
    for ((n1, v1), (n2, v2)) in ours.iter().zip(&upstream) {
        assert_eq!(n1, n2);
        if n1 == "message_delta" {
            assert_eq!(v1["delta"], v2["delta"]);
            assert_eq!(v1["usage"]["output_tokens"], 89);
            assert_eq!(v1["usage"]["input_tokens"], 472);
            assert_eq!(v1["usage"]["cache_read_input_tokens"], 2000);
            assert_eq!(v1["usage"]["cache_creation_input_tokens"], 100);
        } else {
            assert_eq!(v1, v2, "{n1}");
        }
    }
    // And decoding our output gives the same neutral events back.
    let again = decode_all(&parse_chunked(&encoded, &[3]));
    assert_eq!(again, thinking_tools_events());
}

#[test]
fn stream_error_event_decodes_and_encodes() {
    let events = decode_all(&parse_chunked(fixture("stream-error.sse").as_bytes(), &[9]));
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Error {
            message: "Overloaded".into()
        })
    );
    let bytes = encode_all(&events, StreamOptions::default());
    let out = sse_json(&bytes);
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    // Nothing after the error, not even message_stop from finish().
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(out[3].1["type"], "error");
    assert_eq!(out[3].1["error"]["message"], "Overloaded");
}

#[test]
fn openai_order_usage_after_finish() {
    // What an OpenAI upstream yields: usage in a chunk after finish_reason,
    // parallel tool calls, no id in Anthropic style.
    let events = vec![
        StreamEvent::Start {
            id: "chatcmpl-abc".into(),
            model: "gpt-4o-2024-08-06".into(),
        },
        StreamEvent::TextDelta {
            text: String::new(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_a".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"x\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "1}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "call_b".into(),
            name: "g".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "{}".into(),
        },
        StreamEvent::Finish {
            reason: FinishReason::ToolCalls,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 300,
            output_tokens: 40,
            cached_input_tokens: Some(256),
            ..Usage::default()
        }),
    ];
    let opts = StreamOptions {
        model_override: Some("smart".into()),
        include_usage: false,
    };
    let out = sse_json(&encode_all(&events, opts));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(out[0].1["message"]["id"], "chatcmpl-abc");
    assert_eq!(out[0].1["message"]["model"], "smart");
    assert_eq!(out[0].1["message"]["content"], json!([]));
    assert_eq!(
        out[1].1,
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}})
    );
    assert_eq!(
        out[3].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "1}"})
    );
    assert_eq!(out[5].1["index"], 1);
    assert_eq!(out[6].1["index"], 1);
    assert_eq!(
        out[8].1,
        json!({"type": "message_delta",
               "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 44, "output_tokens": 40,
                         "cache_read_input_tokens": 256, "cache_creation_input_tokens": 0}})
    );
}

#[test]
fn finish_closes_what_the_upstream_left_open() {
    // No Finish, a tool call open: the block is closed, tool_use inferred.
    let out = sse_json(&encode_all(
        &[
            StreamEvent::Start {
                id: String::new(),
                model: "m".into(),
            },
            StreamEvent::TextDelta {
                text: "Let me look.".into(),
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: String::new(),
                name: "search".into(),
            },
        ],
        StreamOptions::default(),
    ));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(out[0].1["message"]["id"]
        .as_str()
        .unwrap()
        .starts_with("msg_"));
    assert!(out[4].1["content_block"]["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
    assert_eq!(out[6].1["delta"]["stop_reason"], "tool_use");

    // Nothing at all: still a well-formed empty message.
    let out = sse_json(&encode_all(&[], StreamOptions::default()));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    assert_eq!(out[1].1["delta"]["stop_reason"], "end_turn");
}

#[test]
fn fail_writes_one_error_and_nothing_after() {
    let mut e = StreamEncoder::new(StreamOptions::default());
    let mut out = BytesMut::new();
    e.encode(&StreamEvent::TextDelta { text: "par".into() }, &mut out);
    e.fail(Some(429), "rate limited upstream", &mut out);
    e.encode(&StreamEvent::TextDelta { text: "x".into() }, &mut out);
    e.finish(&mut out);
    e.fail(None, "again", &mut out);
    let ev = sse_json(&out);
    assert_eq!(ev.len(), 4);
    assert_eq!(ev[3].0, "error");
    assert_eq!(
        ev[3].1,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited upstream"}})
    );
}

#[test]
fn thinking_blocks_split_on_signature_and_redacted_passes_through() {
    let events = vec![
        StreamEvent::ThinkingDelta { text: "a".into() },
        StreamEvent::ThinkingSignature {
            signature: "s1".into(),
        },
        StreamEvent::RedactedThinking {
            data: "opaque".into(),
        },
        StreamEvent::ThinkingDelta { text: "b".into() },
        StreamEvent::ThinkingDelta { text: "c".into() },
    ];
    let out = sse_json(&encode_all(&events, StreamOptions::default()));
    let starts: Vec<&Value> = out
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(
        starts[0]["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        starts[1]["content_block"],
        json!({"type": "redacted_thinking", "data": "opaque"})
    );
    assert_eq!(starts[2]["index"], 2);
    // Decoding our own output gives the events back (plus the synthesized start).
    let raw = encode_all(&events, StreamOptions::default());
    let back = decode_all(&parse_chunked(&raw, &[4]));
    assert_eq!(&back[2..7], &events[..]);
}

#[test]
fn claude_style_body_on_the_chat_endpoint() {
    // What lib's chat-endpoint detection hands to this decoder: Anthropic
    // blocks mixed with OpenAI habits (system role, image_url parts).
    let req = apiproxy_translate::decode_request(
        apiproxy_translate::Format::OpenAiChat,
        json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "tool_result", "tool_use_id": "t1", "content": "42"}
            ]}
        ]}),
    )
    .unwrap();
    assert_eq!(req.system, vec![text("Be brief.")]);
    assert_eq!(req.messages.len(), 1);
    assert_eq!(
        req.messages[0].content[0],
        ContentPart::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }
        }
    );
}

#[test]
fn decoder_ignores_done_and_rejects_garbage() {
    let mut d = StreamDecoder::default();
    let mut out = Vec::new();
    d.decode(
        &SseEvent {
            event: None,
            data: "[DONE]".into(),
        },
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    let e = d
        .decode(
            &SseEvent {
                event: Some("content_block_delta".into()),
                data: "{not json".into(),
            },
            &mut out,
        )
        .unwrap_err();
    assert!(e.message.contains("content_block_delta"), "{e}");
}

// ----------------------------------------------------------- prompt caching

#[test]
fn cache_control_from_anthropic_and_openai_clients_reaches_anthropic() {
    let eph = json!({"type": "ephemeral"});
    let hour = json!({"type": "ephemeral", "ttl": "1h"});
    // An Anthropic client's breakpoints on system, tools and messages.
    let req = decode_request(json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
        "system": [{"type": "text", "text": "Long rules.", "cache_control": hour}],
        "tools": [{"name": "a", "input_schema": {"type": "object"}},
                  {"name": "b", "input_schema": {"type": "object"}, "cache_control": eph}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": ""},
            {"type": "text", "text": "Big document.", "cache_control": eph},
            {"type": "text", "text": "Question?"}]}]}))
    .unwrap();
    let out = reencode(&req);
    assert_eq!(out["system"][0]["cache_control"], hour);
    assert!(out["tools"][0].get("cache_control").is_none());
    assert_eq!(out["tools"][1]["cache_control"], eph);
    // The empty text is left out; the breakpoint stays on its block.
    assert_eq!(out["messages"][0]["content"][0]["text"], "Big document.");
    assert_eq!(out["messages"][0]["content"][0]["cache_control"], eph);
    assert!(out["messages"][0]["content"][1]
        .get("cache_control")
        .is_none());

    // An OpenAI-format client's, on content parts and on a message.
    let req = apiproxy_translate::decode_request(
        apiproxy_translate::Format::OpenAiChat,
        json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Rules.", "cache_control": eph}]},
            {"role": "user", "content": "Doc.", "cache_control": hour}],
          "tools": [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}},
              "cache_control": eph}]}),
    )
    .unwrap();
    let out = reencode(&req);
    assert_eq!(out["system"][0]["cache_control"], eph);
    assert_eq!(out["messages"][0]["content"][0]["cache_control"], hour);
    assert_eq!(out["tools"][0]["cache_control"], eph);
}

#[test]
fn at_most_four_breakpoints_the_last_ones() {
    let mut req = ir_request();
    req.messages[0].content = (0..6).map(|i| text(&format!("part {i}"))).collect();
    req.cache = (0..6)
        .map(|part| apiproxy_translate::CacheMark {
            at: apiproxy_translate::CacheAt::Part { message: 0, part },
            ttl: None,
        })
        .collect();
    let out = reencode(&req);
    let marked: Vec<usize> = (0..6)
        .filter(|i| {
            out["messages"][0]["content"][*i]
                .get("cache_control")
                .is_some()
        })
        .collect();
    assert_eq!(marked, vec![2, 3, 4, 5]);
}

#[test]
fn auto_breakpoints_on_tools_system_and_last_user_turn() {
    use apiproxy_translate::anthropic::auto_cache_marks;
    let mut req = ir_request();
    req.system = vec![text("a"), text("b")];
    req.tools = vec![Tool {
        name: "t".into(),
        description: None,
        parameters: json!({"type": "object"}),
        strict: None,
    }];
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![text("answer")],
    });
    req.messages.push(Message {
        role: Role::User,
        content: vec![text("x"), text("y")],
    });
    auto_cache_marks(&mut req);
    let out = reencode(&req);
    let eph = json!({"type": "ephemeral"});
    assert_eq!(out["tools"][0]["cache_control"], eph);
    assert!(out["system"][0].get("cache_control").is_none());
    assert_eq!(out["system"][1]["cache_control"], eph);
    assert_eq!(out["messages"][2]["content"][1]["cache_control"], eph);
    assert_eq!(out.to_string().matches("cache_control").count(), 3);
    // A client's own breakpoints are left alone.
    let before = req.cache.clone();
    req.cache.truncate(1);
    auto_cache_marks(&mut req);
    assert_eq!(req.cache, before[..1]);
}

#[test]
fn cache_write_classes_are_read() {
    let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}}});
    let u = decode_response(body.to_string().as_bytes())
        .unwrap()
        .usage
        .unwrap();
    assert_eq!(u.input_tokens, 410);
    assert_eq!(u.cached_input_tokens, Some(100));
    assert_eq!(u.cache_creation_input_tokens, Some(300));
    assert_eq!(u.cache_creation_1h_input_tokens, Some(100));
}
