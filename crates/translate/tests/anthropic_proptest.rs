//! Random and garbled input never panics the Anthropic decoders; valid
//! requests and responses of every shape decode and come back the same
//! (each such test counts the cases that reached its assertions and fails
//! when too few did); any neutral event sequence encodes into a well-formed
//! Anthropic stream.

use crate::counting;

use apiproxy_translate::anthropic::{
    decode_request, decode_response, encode_request, encode_response, StreamDecoder, StreamEncoder,
};
use apiproxy_translate::{
    FinishReason, SseEvent, SseParser, StreamDecode, StreamEncode, StreamEvent, StreamOptions,
    Usage,
};
use bytes::BytesMut;
use counting::run_counting;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z_]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "text",
            "image",
            "tool_use",
            "tool_result",
            "thinking",
            "redacted_thinking",
            "base64",
            "url",
            "user",
            "assistant",
            "enabled",
            "auto",
            "tool",
            "text_delta",
            "input_json_delta",
            "end_turn",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "type",
                        "text",
                        "content",
                        "source",
                        "data",
                        "media_type",
                        "url",
                        "id",
                        "name",
                        "input",
                        "tool_use_id",
                        "is_error",
                        "thinking",
                        "signature",
                        "role",
                        "index",
                        "delta",
                        "partial_json",
                        "usage",
                        "input_tokens",
                        "output_tokens",
                        "stop_reason",
                        "message",
                        "content_block",
                        "error",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>()
            )),
        ]
    })
}

/// A request shaped like Anthropic's with random values in its slots.
fn arb_request() -> impl Strategy<Value = Value> {
    let block = (
        prop::sample::select(vec![
            "text",
            "image",
            "tool_use",
            "tool_result",
            "thinking",
            "redacted_thinking",
            "document",
            "image_url",
        ]),
        arb_json(),
        arb_json(),
    )
        .prop_map(|(t, a, b)| {
            json!({"type": t, "text": a.clone(), "source": {"type": a.clone(), "data": b.clone(),
               "media_type": "image/png", "url": b.clone()}, "id": "x", "name": a.clone(),
               "input": b.clone(), "tool_use_id": "x", "content": a.clone(), "is_error": b.clone(),
               "thinking": "t", "signature": b.clone(), "data": a})
        });
    let message = (
        prop::sample::select(vec!["user", "assistant", "system", "bogus"]),
        prop::collection::vec(block, 0..4),
    )
        .prop_map(|(r, c)| json!({"role": r, "content": c}));
    (
        prop::collection::vec(message, 0..4),
        arb_json(),
        arb_json(),
        arb_json(),
        arb_json(),
    )
        .prop_map(|(messages, system, tools, choice, thinking)| {
            json!({"model": "m", "max_tokens": 100, "messages": messages, "system": system,
                   "tools": tools, "tool_choice": choice, "thinking": thinking})
        })
}

fn arb_sse_event() -> impl Strategy<Value = SseEvent> {
    let name = prop::option::of(prop::sample::select(vec![
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    ]));
    let shaped = (
        prop::sample::select(vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "ping",
            "error",
        ]),
        0u64..4,
        arb_json(),
    )
        .prop_map(|(t, index, v)| {
            json!({"type": t, "index": index, "message": v.clone(), "content_block": v.clone(),
                   "delta": v.clone(), "usage": v.clone(), "error": v})
            .to_string()
        });
    let data = prop_oneof![
        shaped,
        arb_json().prop_map(|v| v.to_string()),
        ".{0,40}",
        Just("[DONE]".to_owned()),
    ];
    (name, data).prop_map(|(event, data)| SseEvent {
        event: event.map(str::to_owned),
        data,
    })
}

fn arb_stream_event() -> impl Strategy<Value = StreamEvent> {
    let s = || "[a-z \"\\\\\n]{0,8}";
    prop_oneof![
        (s(), s()).prop_map(|(id, model)| StreamEvent::Start { id, model }),
        s().prop_map(|text| StreamEvent::TextDelta { text }),
        s().prop_map(|text| StreamEvent::ThinkingDelta { text }),
        s().prop_map(|signature| StreamEvent::ThinkingSignature { signature }),
        s().prop_map(|data| StreamEvent::RedactedThinking { data }),
        (0u32..3, s(), s()).prop_map(|(index, id, name)| StreamEvent::ToolCallStart {
            index,
            id,
            name
        }),
        (0u32..3, s())
            .prop_map(|(index, arguments)| StreamEvent::ToolCallDelta { index, arguments }),
        (0u64..1000, 0u64..1000, prop::option::of(0u64..2000)).prop_map(|(i, o, c)| {
            StreamEvent::Usage(Usage {
                input_tokens: i,
                output_tokens: o,
                cached_input_tokens: c,
                ..Usage::default()
            })
        }),
        prop::sample::select(vec![
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ToolCalls,
            FinishReason::ContentFilter,
            FinishReason::Other("weird".into()),
        ])
        .prop_map(|reason| StreamEvent::Finish { reason }),
        s().prop_map(|message| StreamEvent::Error { message }),
    ]
}

/// Checks the Anthropic stream grammar; returns the event names.
fn check_stream(bytes: &[u8]) -> Result<Vec<String>, TestCaseError> {
    let mut p = SseParser::default();
    let mut evs = Vec::new();
    p.feed(bytes, &mut evs)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    p.finish(&mut evs);
    let mut names = Vec::new();
    let mut open: Option<u64> = None;
    let mut next_index = 0u64;
    let mut started = false;
    for ev in &evs {
        let name = ev.event.clone().unwrap_or_default();
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| TestCaseError::fail(format!("bad JSON {:?}: {e}", ev.data)))?;
        prop_assert_eq!(v["type"].as_str(), Some(name.as_str()));
        prop_assert!(names.last().map(String::as_str) != Some("message_stop"));
        prop_assert!(names.last().map(String::as_str) != Some("error"));
        match name.as_str() {
            "message_start" => {
                prop_assert!(!started);
                started = true;
                prop_assert!(v["message"]["usage"]["input_tokens"].is_u64());
            }
            "content_block_start" => {
                prop_assert!(started);
                prop_assert_eq!(open, None);
                prop_assert_eq!(v["index"].as_u64(), Some(next_index));
                open = Some(next_index);
                next_index += 1;
            }
            "content_block_delta" => {
                // Only into a block that was started (the open one, or an
                // earlier tool block for late arguments).
                let i = v["index"].as_u64().unwrap_or(u64::MAX);
                prop_assert!(i < next_index);
                if open != Some(i) {
                    prop_assert_eq!(v["delta"]["type"].as_str(), Some("input_json_delta"));
                }
            }
            "content_block_stop" => {
                prop_assert_eq!(v["index"].as_u64(), open);
                open = None;
            }
            "message_delta" => {
                prop_assert_eq!(open, None);
                prop_assert!(v["delta"]["stop_reason"].is_string());
                prop_assert!(v["usage"]["output_tokens"].is_u64());
            }
            "message_stop" => {
                prop_assert!(names.last().map(String::as_str) == Some("message_delta"))
            }
            "error" => prop_assert_eq!(v["type"].as_str(), Some("error")),
            other => return Err(TestCaseError::fail(format!("unexpected event {other}"))),
        }
        names.push(name);
    }
    prop_assert!(matches!(
        names.last().map(String::as_str),
        Some("message_stop" | "error")
    ));
    Ok(names)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decode_request_never_panics(body in arb_json()) {
        counting::check_bytes_decode(apiproxy_translate::Format::Anthropic, &body)?;
        let _ = decode_request(body);
    }

    #[test]
    fn shaped_requests_never_panic(body in arb_request()) {
        counting::check_bytes_decode(apiproxy_translate::Format::Anthropic, &body)?;
        // Mostly rejected (random values in the slots): valid requests are
        // checked by `valid_requests_round_trip`.
        if let Ok(req) = decode_request(body) {
            let _ = encode_request(&req);
        }
    }

    #[test]
    fn decode_response_never_panics(body in arb_json(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_response(body.to_string().as_bytes());
        let _ = decode_response(&raw);
    }

    #[test]
    fn stream_decoder_never_panics_and_starts_first(events in prop::collection::vec(arb_sse_event(), 0..24)) {
        let mut d = StreamDecoder::default();
        let mut out = Vec::new();
        for ev in &events {
            let _ = d.decode(ev, &mut out);
        }
        if let Some(first) = out.first() {
            prop_assert!(matches!(first, StreamEvent::Start { .. }), "{:?}", first);
        }
        let starts = out.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count();
        prop_assert!(starts <= 1);
    }

    #[test]
    fn any_event_sequence_encodes_to_a_well_formed_stream(
        events in prop::collection::vec(arb_stream_event(), 0..24),
        fail in prop::option::of(prop::option::of(400u16..600)),
    ) {
        let mut e = StreamEncoder::new(StreamOptions::default());
        let mut out = BytesMut::new();
        for ev in &events {
            e.encode(ev, &mut out);
        }
        match fail {
            Some(status) => e.fail(status, "upstream went away", &mut out),
            None => e.finish(&mut out),
        }
        check_stream(&out)?;
    }
}

// ------------------------------------------------------------ valid input

/// Text as people write it: never empty, any script, quotes and escapes.
fn words() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 .,!?'\"\\\\é漢\n]{0,24}"
}

const TOOLS: [&str; 3] = ["get_weather", "search_docs", "run_sql"];

fn tool_input() -> impl Strategy<Value = Value> {
    (words(), any::<i32>(), any::<bool>()).prop_map(|(q, n, b)| json!({"q": q, "n": n, "flag": b}))
}

/// One round of a conversation: the user's turn, then the assistant's
/// (thinking, text, tool calls); the calls' results open the next user turn.
#[derive(Debug, Clone)]
struct Round {
    user_texts: Vec<String>,
    image: bool,
    thinking: Option<(String, String)>,
    assistant_text: Option<String>,
    calls: Vec<(usize, Value)>,
    results_as_blocks: bool,
}

fn arb_round() -> impl Strategy<Value = Round> {
    (
        prop::collection::vec(words(), 1..3),
        any::<bool>(),
        prop::option::of((words(), "[A-Za-z0-9+/]{8,40}")),
        prop::option::of(words()),
        prop::collection::vec((0..TOOLS.len(), tool_input()), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(user_texts, image, thinking, assistant_text, calls, results_as_blocks)| Round {
                user_texts,
                image,
                thinking,
                // An assistant turn says something or calls something.
                assistant_text: if calls.is_empty() {
                    assistant_text.or(Some("ok".into()))
                } else {
                    assistant_text
                },
                calls,
                results_as_blocks,
            },
        )
}

/// A request as Anthropic's API reference describes it, of every shape the
/// gateway handles: system as a string or blocks, text, images, thinking,
/// tool calls and their results, tools and tool choice.
fn arb_valid_request() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(arb_round(), 1..4),
        words(),
        1u64..8192,
        any::<bool>(),
        prop::option::of(0u32..3),
        prop::option::of(prop::sample::select(vec!["auto", "any", "none", "tool"])),
        prop::option::of(1024u64..4096),
    )
        .prop_map(
            |(rounds, system, max_tokens, system_blocks, temperature, choice, budget)| {
                let mut messages = Vec::new();
                let mut pending: Vec<String> = Vec::new();
                for (r, round) in rounds.iter().enumerate() {
                    let mut user: Vec<Value> = pending
                        .drain(..)
                        .enumerate()
                        .map(|(i, id)| {
                            let out = format!("result {i} of {id}");
                            let content = if round.results_as_blocks {
                                json!([{"type": "text", "text": out}])
                            } else {
                                json!(out)
                            };
                            json!({"type": "tool_result", "tool_use_id": id, "content": content})
                        })
                        .collect();
                    user.extend(round.user_texts.iter().map(|t| json!({"type": "text", "text": t})));
                    if round.image {
                        user.push(json!({"type": "image", "source": {"type": "base64",
                            "media_type": "image/png", "data": "iVBORw0KGgoAAAANSUhEUg=="}}));
                    }
                    messages.push(json!({"role": "user", "content": user}));
                    let mut assistant = Vec::new();
                    if let Some((t, sig)) = &round.thinking {
                        assistant.push(json!({"type": "thinking", "thinking": t, "signature": sig}));
                    }
                    if let Some(t) = &round.assistant_text {
                        assistant.push(json!({"type": "text", "text": t}));
                    }
                    for (c, (tool, input)) in round.calls.iter().enumerate() {
                        let id = format!("toolu_{r}_{c}");
                        assistant.push(json!({"type": "tool_use", "id": id, "name": TOOLS[*tool], "input": input}));
                        pending.push(id);
                    }
                    messages.push(json!({"role": "assistant", "content": assistant}));
                }
                // The last turn is the user's: the pending results and a question.
                let mut last: Vec<Value> = pending
                    .drain(..)
                    .map(|id| json!({"type": "tool_result", "tool_use_id": id, "content": "done"}))
                    .collect();
                last.push(json!({"type": "text", "text": "and now?"}));
                messages.push(json!({"role": "user", "content": last}));
                let tools: Vec<Value> = TOOLS
                    .iter()
                    .map(|n| json!({"name": n, "description": format!("the {n} tool"),
                        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}))
                    .collect();
                let mut body = json!({
                    "model": "claude-sonnet-4-5",
                    "max_tokens": max_tokens,
                    "system": if system_blocks { json!([{"type": "text", "text": system}]) } else { json!(system) },
                    "messages": messages,
                    "tools": tools,
                });
                // Extended thinking does not take a temperature.
                if let (Some(t), None) = (temperature, budget) {
                    body["temperature"] = json!(f64::from(t) / 2.0);
                }
                // Nor forced tool use.
                let forced = matches!(choice, Some("any" | "tool"));
                if let Some(c) = choice.filter(|_| !(forced && budget.is_some())) {
                    body["tool_choice"] = if c == "tool" {
                        json!({"type": "tool", "name": TOOLS[0]})
                    } else {
                        json!({"type": c})
                    };
                }
                if let Some(b) = budget {
                    body["thinking"] = json!({"type": "enabled", "budget_tokens": b});
                    body["max_tokens"] = json!(b + max_tokens);
                }
                body
            },
        )
}

/// The text of a content value: a string or the text blocks of a list.
fn text_in(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

/// What a request says, in order, independent of how it is split into
/// messages and blocks: (role, block type, what the block holds).
fn request_digest(v: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for m in v["messages"].as_array().into_iter().flatten() {
        let role = m["role"].as_str().unwrap_or_default().to_owned();
        let blocks = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            _ => vec![],
        };
        for b in blocks {
            let ty = b["type"].as_str().unwrap_or_default().to_owned();
            let what = match ty.as_str() {
                "text" => b["text"].as_str().unwrap_or_default().to_owned(),
                "image" => format!("{}", b["source"]),
                "thinking" => format!("{}|{}", b["thinking"], b["signature"]),
                "tool_use" => format!("{}|{}|{}", b["id"], b["name"], b["input"]),
                "tool_result" => format!("{}|{}", b["tool_use_id"], text_in(&b["content"])),
                other => format!("unexpected block {other}: {b}"),
            };
            out.push((role.clone(), ty, what));
        }
    }
    // Adjacent text blocks of one role may be joined or split: compare text
    // by what it says.
    let mut merged: Vec<(String, String, String)> = Vec::new();
    for item in out {
        match merged.last_mut() {
            Some(last) if last.0 == item.0 && last.1 == "text" && item.1 == "text" => {
                last.2.push_str(&item.2)
            }
            _ => merged.push(item),
        }
    }
    merged
}

#[test]
fn valid_requests_round_trip() {
    let cases = 256;
    let reached = run_counting(
        "valid_requests_round_trip",
        cases,
        arb_valid_request(),
        |body| {
            prop_assert!(counting::check_bytes_decode(
                apiproxy_translate::Format::Anthropic,
                &body
            )?);
            let req = decode_request(body.clone()).map_err(|e| {
                TestCaseError::fail(format!("a valid request was refused: {e:?}\n{body}"))
            })?;
            let bytes = encode_request(&req)
                .map_err(|e| TestCaseError::fail(format!("encoding failed: {e:?}\n{body}")))?;
            let out: Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert_eq!(&out["model"], &body["model"]);
            prop_assert_eq!(&out["max_tokens"], &body["max_tokens"]);
            prop_assert_eq!(text_in(&out["system"]), text_in(&body["system"]));
            prop_assert_eq!(&out["temperature"], &body["temperature"]);
            // Thinking goes when the tool-use turn being answered has no
            // thinking block to begin with (Anthropic would refuse it).
            let msgs = body["messages"].as_array().cloned().unwrap_or_default();
            let pos = msgs.iter().rposition(|m| m["role"] == "assistant");
            let answering = pos.is_some_and(|p| {
                p + 1 < msgs.len()
                    && msgs[p + 1..].iter().all(|m| {
                        m["content"]
                            .as_array()
                            .is_some_and(|c| c.iter().all(|b| b["type"] == "tool_result"))
                    })
            });
            let last_assistant = pos.map(|p| &msgs[p]).filter(|_| answering);
            let unsigned_tool_turn = last_assistant.is_some_and(|m| {
                let blocks = m["content"].as_array().cloned().unwrap_or_default();
                blocks.iter().any(|b| b["type"] == "tool_use")
                    && !blocks.iter().any(|b| {
                        (b["type"] == "thinking"
                            && b["signature"].as_str().is_some_and(|s| !s.is_empty()))
                            || b["type"] == "redacted_thinking"
                    })
            });
            if unsigned_tool_turn && body["thinking"]["type"] == "enabled" {
                prop_assert_eq!(&out["thinking"], &Value::Null);
            } else {
                prop_assert_eq!(&out["thinking"], &body["thinking"]);
            }
            prop_assert_eq!(&out["tool_choice"], &body["tool_choice"]);
            let names = |v: &Value| -> Vec<String> {
                v["tools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| t["name"].to_string())
                    .collect()
            };
            prop_assert_eq!(names(&out), names(&body));
            for (a, b) in out["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(body["tools"].as_array().into_iter().flatten())
            {
                prop_assert_eq!(&a["input_schema"], &b["input_schema"]);
            }
            prop_assert_eq!(request_digest(&out), request_digest(&body));
            // Roles alternate, starting with the user, as the API requires.
            let roles: Vec<&str> = out["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["role"].as_str())
                .collect();
            prop_assert_eq!(roles.first().copied(), Some("user"));
            prop_assert!(roles.windows(2).all(|w| w[0] != w[1]), "roles {:?}", roles);
            Ok(true)
        },
    );
    assert_eq!(reached, cases, "every valid request reached the assertions");
}

/// A response as Anthropic's API reference describes it.
fn arb_valid_response() -> impl Strategy<Value = Value> {
    (
        prop::option::of((words(), "[A-Za-z0-9+/]{8,40}")),
        prop::collection::vec(words(), 0..3),
        prop::collection::vec((0..TOOLS.len(), tool_input()), 0..3),
        prop::sample::select(vec!["end_turn", "max_tokens"]),
        0u64..100_000,
        0u64..10_000,
    )
        .prop_map(|(thinking, texts, calls, stop, input, output)| {
            let mut content = Vec::new();
            if let Some((t, sig)) = thinking {
                content.push(json!({"type": "thinking", "thinking": t, "signature": sig}));
            }
            content.extend(texts.iter().map(|t| json!({"type": "text", "text": t})));
            for (i, (tool, args)) in calls.iter().enumerate() {
                content.push(json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": TOOLS[*tool], "input": args}));
            }
            json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": content,
                "stop_reason": if calls.is_empty() { stop } else { "tool_use" },
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output}
            })
        })
}

#[test]
fn valid_responses_round_trip() {
    let cases = 256;
    let reached = run_counting(
        "valid_responses_round_trip",
        cases,
        arb_valid_response(),
        |body| {
            let resp = decode_response(body.to_string().as_bytes()).map_err(|e| {
                TestCaseError::fail(format!("a valid response was refused: {e:?}\n{body}"))
            })?;
            let out: Value = serde_json::from_slice(&encode_response(&resp))
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert_eq!(out["type"].as_str(), Some("message"));
            prop_assert_eq!(out["role"].as_str(), Some("assistant"));
            prop_assert_eq!(&out["model"], &body["model"]);
            prop_assert_eq!(&out["stop_reason"], &body["stop_reason"]);
            prop_assert_eq!(
                &out["usage"]["input_tokens"],
                &body["usage"]["input_tokens"]
            );
            prop_assert_eq!(
                &out["usage"]["output_tokens"],
                &body["usage"]["output_tokens"]
            );
            let wrap =
                |v: &Value| json!({"messages": [{"role": "assistant", "content": v["content"]}]});
            prop_assert_eq!(request_digest(&wrap(&out)), request_digest(&wrap(&body)));
            Ok(true)
        },
    );
    assert_eq!(
        reached, cases,
        "every valid response reached the assertions"
    );
}
