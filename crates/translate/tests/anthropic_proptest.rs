//! Random and garbled input never panics the Anthropic decoders, and any
//! neutral event sequence encodes into a well-formed Anthropic stream.

use apiproxy_translate::anthropic::{
    decode_request, decode_response, encode_request, encode_response, StreamDecoder, StreamEncoder,
};
use apiproxy_translate::{
    FinishReason, SseEvent, SseParser, StreamDecode, StreamEncode, StreamEvent, StreamOptions,
    Usage,
};
use bytes::BytesMut;
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
        let _ = decode_request(body);
    }

    #[test]
    fn shaped_requests_decode_and_encode_without_panic(body in arb_request()) {
        if let Ok(req) = decode_request(body) {
            if let Ok(bytes) = encode_request(&req) {
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert!(v["max_tokens"].as_u64().unwrap_or(0) > 0);
                prop_assert!(v["messages"].is_array());
            }
        }
    }

    #[test]
    fn decode_response_never_panics(body in arb_json(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(resp) = decode_response(body.to_string().as_bytes()) {
            let out: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
            prop_assert_eq!(out["type"].as_str(), Some("message"));
        }
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
