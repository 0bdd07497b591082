//! OpenAI Chat Completions: random and garbled input never panics, and the
//! stream encoder always writes well-formed SSE.

use crate::counting;

use apiproxy_translate::ir::*;
use apiproxy_translate::openai_chat::{self, StreamDecoder, StreamEncoder};
use apiproxy_translate::{SseEvent, SseParser, StreamDecode, StreamEncode, StreamOptions};
use bytes::BytesMut;
use counting::run_counting;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("tool"),
            Just("system"),
            Just("function"),
            Just("text"),
            Just("image_url"),
            Just("data:image/png;base64,AAAA"),
            Just("data:;base64,"),
            Just("data:image/png,xx"),
            Just("https://x/y.png"),
            Just("[DONE]"),
            Just("stop"),
            Just("tool_calls"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("role".to_owned()),
                        Just("content".to_owned()),
                        Just("type".to_owned()),
                        Just("text".to_owned()),
                        Just("messages".to_owned()),
                        Just("tool_calls".to_owned()),
                        Just("function".to_owned()),
                        Just("name".to_owned()),
                        Just("arguments".to_owned()),
                        Just("index".to_owned()),
                        Just("id".to_owned()),
                        Just("delta".to_owned()),
                        Just("choices".to_owned()),
                        Just("usage".to_owned()),
                        Just("error".to_owned()),
                        Just("image_url".to_owned()),
                        Just("url".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Replaces the `target`-th node (pre-order) of `v` with `new`.
fn replace_nth(v: &mut Value, target: usize, seen: &mut usize, new: &Value) -> bool {
    if *seen == target {
        *v = new.clone();
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| replace_nth(x, target, seen, new)),
        Value::Object(o) => o.values_mut().any(|x| replace_nth(x, target, seen, new)),
        _ => false,
    }
}

fn agent_request() -> Value {
    let path = format!(
        "{}/tests/fixtures/openai/hand-request-agent.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A plausible upstream chunk with random holes.
fn arb_chunk() -> impl Strategy<Value = Value> {
    let tool = (
        prop::option::of(0u32..3),
        prop::option::of("call_[a-z]{1,3}"),
        prop::option::of("[a-z]{0,4}"),
        prop::option::of(".{0,6}"),
    )
        .prop_map(|(index, id, name, args)| {
            json!({"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": args}})
        });
    let delta = (
        prop::option::of(".{0,6}"),
        prop::option::of(".{0,6}"),
        prop::option::of(prop::collection::vec(tool, 0..3)),
    )
        .prop_map(|(content, reasoning, tools)| {
            json!({"content": content, "reasoning_content": reasoning, "tool_calls": tools})
        });
    let choice = (
        prop::option::of(0u64..2),
        delta,
        prop::option::of(prop_oneof![
            Just("stop"),
            Just("length"),
            Just("tool_calls"),
            Just("weird")
        ]),
    )
        .prop_map(|(index, delta, finish)| {
            json!({"index": index, "delta": delta, "finish_reason": finish})
        });
    (
        prop::option::of("chatcmpl-[a-z]{1,4}"),
        prop::collection::vec(choice, 0..2),
        prop::option::of((0u64..100, 0u64..100, prop::option::of(0u64..50))),
        arb_json(),
        0u8..10,
    )
        .prop_map(|(id, choices, usage, junk, mode)| match mode {
            0 => junk,
            1 => json!({"error": junk}),
            _ => json!({
                "id": id, "model": "m", "object": "chat.completion.chunk",
                "choices": choices,
                "usage": usage.map(|(p, c, cached)| json!({"prompt_tokens": p, "completion_tokens": c,
                    "prompt_tokens_details": {"cached_tokens": cached}}))
            }),
        })
}

fn arb_sse_data() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => arb_chunk().prop_map(|v| v.to_string()),
        1 => ".{0,40}",
        1 => Just("[DONE]".to_owned()),
        1 => arb_chunk().prop_map(|v| {
            let s = v.to_string();
            s.get(..s.len() / 2).unwrap_or("{").to_owned() // truncated JSON
        }),
    ]
}

fn arb_stream_event() -> impl Strategy<Value = StreamEvent> {
    prop_oneof![
        (".{0,8}", ".{0,8}").prop_map(|(id, model)| StreamEvent::Start { id, model }),
        ".{0,8}".prop_map(|text| StreamEvent::TextDelta { text }),
        ".{0,8}".prop_map(|text| StreamEvent::ThinkingDelta { text }),
        ".{0,8}".prop_map(|signature| StreamEvent::ThinkingSignature { signature }),
        (0u32..4, ".{0,6}", ".{0,6}").prop_map(|(index, id, name)| StreamEvent::ToolCallStart {
            index,
            id,
            name
        }),
        (0u32..4, ".{0,6}")
            .prop_map(|(index, arguments)| StreamEvent::ToolCallDelta { index, arguments }),
        (any::<u32>(), any::<u32>()).prop_map(|(i, o)| StreamEvent::Usage(Usage {
            input_tokens: i.into(),
            output_tokens: o.into(),
            ..Usage::default()
        })),
        prop_oneof![
            Just(FinishReason::Stop),
            Just(FinishReason::Length),
            Just(FinishReason::ToolCalls),
            Just(FinishReason::ContentFilter),
            ".{0,5}".prop_map(FinishReason::Other),
        ]
        .prop_map(|reason| StreamEvent::Finish { reason }),
        ".{0,8}".prop_map(|message| StreamEvent::Error { message }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_request_never_panics_on_random_json(v in arb_json()) {
        counting::check_bytes_decode(apiproxy_translate::Format::OpenAiChat, &v)?;
        counting::check_bytes_decode(apiproxy_translate::Format::OpenAiChat, &json!({"model": "m", "messages": [v.clone()]}))?;
        let _ = openai_chat::decode_request(v.clone());
        // Random bodies inside a valid envelope reach deeper.
        let _ = openai_chat::decode_request(json!({"model": "m", "messages": [v]}));
    }

    #[test]
    fn decode_response_never_panics(v in arb_json(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(resp) = openai_chat::decode_response(v.to_string().as_bytes()) {
            let out = openai_chat::encode_response(&resp);
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
        let _ = openai_chat::decode_response(&bytes);
    }

    #[test]
    fn stream_decoder_never_panics_and_starts_first(datas in prop::collection::vec(arb_sse_data(), 0..12)) {
        let mut d = StreamDecoder::default();
        let mut events = Vec::new();
        for data in datas {
            let before = events.len();
            let r = d.decode(&SseEvent { event: None, data }, &mut events);
            if r.is_err() {
                prop_assert_eq!(events.len(), before, "an error pushes nothing");
            }
        }
        if let Some(first) = events.first() {
            let is_start = matches!(first, StreamEvent::Start { .. });
            prop_assert!(is_start);
        }
        let starts = events.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count();
        prop_assert!(starts <= 1);
        let finishes = events.iter().filter(|e| matches!(e, StreamEvent::Finish { .. })).count();
        prop_assert!(finishes <= 1);
        // ... and whatever came out re-encodes into well-formed client SSE.
        let mut e = StreamEncoder::new(StreamOptions { model_override: None, include_usage: true });
        let mut out = BytesMut::new();
        for ev in &events {
            e.encode(ev, &mut out);
        }
        e.finish(&mut out);
        let mut p = SseParser::default();
        let mut parsed = Vec::new();
        p.feed(&out, &mut parsed).unwrap();
        p.finish(&mut parsed);
        prop_assert!(parsed.last().is_some_and(|e| e.is_done()));
        for ev in &parsed[..parsed.len() - 1] {
            prop_assert!(serde_json::from_str::<Value>(&ev.data).is_ok());
        }
    }

    #[test]
    fn stream_encoder_always_well_formed(events in prop::collection::vec(arb_stream_event(), 0..16), fail in any::<bool>()) {
        let mut e = StreamEncoder::new(StreamOptions { model_override: Some("fast".into()), include_usage: true });
        let mut out = BytesMut::new();
        for ev in &events {
            e.encode(ev, &mut out);
        }
        if fail {
            e.fail(None, "boom", &mut out);
        }
        e.finish(&mut out);
        let mut p = SseParser::default();
        let mut parsed = Vec::new();
        p.feed(&out, &mut parsed).unwrap();
        p.finish(&mut parsed);
        let done = parsed.iter().filter(|e| e.is_done()).count();
        prop_assert_eq!(done, 1);
        prop_assert!(parsed.last().is_some_and(|e| e.is_done()));
        let chunks: Vec<Value> = parsed[..parsed.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        if chunks[0].get("error").is_none() {
            prop_assert_eq!(&chunks[0]["choices"][0]["delta"]["role"], "assistant");
        } else {
            // fail() before anything was sent: just the error and [DONE].
            prop_assert!(fail && events.is_empty() && chunks.len() == 1);
        }
        let finishes = chunks
            .iter()
            .filter(|c| c["choices"][0]["finish_reason"].is_string())
            .count();
        prop_assert!(finishes <= 1);
        for c in chunks.iter().filter(|c| c.get("error").is_none()) {
            prop_assert_eq!(&c["model"], "fast");
            prop_assert_eq!(&c["id"], &chunks[0]["id"]);
        }
    }
}

#[test]
fn garbled_agent_requests_decode_or_are_refused() {
    // A real agent request with one node replaced by random JSON: most
    // still decode, and whatever decodes encodes and decodes again.
    let cases = 512;
    let reached = run_counting(
        "garbled_agent_requests_decode_or_are_refused",
        cases,
        (0usize..200, arb_json()),
        |(target, new)| {
            let mut body = agent_request();
            let mut seen = 0;
            replace_nth(&mut body, target, &mut seen, &new);
            let Ok(req) = openai_chat::decode_request(body) else {
                return Ok(false);
            };
            let out = openai_chat::encode_request(&req)
                .map_err(|e| TestCaseError::fail(format!("decoded but not encoded: {e:?}")))?;
            let again: Value = serde_json::from_slice(&out)
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert!(again["messages"].is_array());
            prop_assert!(openai_chat::decode_request(again).is_ok(), "re-decodes");
            Ok(true)
        },
    );
    assert!(
        reached >= cases / 4,
        "only {reached} of {cases} garbled requests decoded"
    );
}

/// A tool call sent without an id gets a made-up one on each decode: the
/// bytes and tree decodes still agree on everything else.
#[test]
fn bytes_and_tree_decodes_agree_on_calls_without_ids() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ]}
    ]});
    let agreed = counting::check_bytes_decode(apiproxy_translate::Format::OpenAiChat, &body);
    assert!(matches!(agreed, Ok(true)), "{agreed:?}");
}
