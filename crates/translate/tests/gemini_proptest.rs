//! Random and garbled input never panics the Gemini decoders, and whatever
//! they accept encodes.

use apiproxy_translate::gemini::{self, StreamDecoder, StreamEncoder};
use apiproxy_translate::{SseEvent, StreamDecode, StreamEncode, StreamOptions};
use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys the decoders look at, so random trees reach deep paths.
const KEYS: &[&str] = &[
    "contents",
    "input",
    "role",
    "parts",
    "text",
    "thought",
    "thoughtSignature",
    "inlineData",
    "inline_data",
    "mimeType",
    "data",
    "fileData",
    "fileUri",
    "functionCall",
    "function_call",
    "functionResponse",
    "name",
    "args",
    "id",
    "response",
    "systemInstruction",
    "tools",
    "functionDeclarations",
    "parameters",
    "parametersJsonSchema",
    "type",
    "properties",
    "items",
    "anyOf",
    "nullable",
    "toolConfig",
    "functionCallingConfig",
    "mode",
    "allowedFunctionNames",
    "generationConfig",
    "temperature",
    "maxOutputTokens",
    "thinkingConfig",
    "thinkingBudget",
    "thinkingLevel",
    "responseSchema",
    "responseMimeType",
    "candidates",
    "content",
    "finishReason",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "promptFeedback",
    "blockReason",
    "error",
    "message",
    "responseId",
    "modelVersion",
];

const STRINGS: &[&str] = &[
    "user",
    "model",
    "function",
    "image/png",
    "application/pdf",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "ANY",
    "AUTO",
    "OBJECT",
    "application/json",
    "",
    "get_weather",
    "{\"a\":1}",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        prop::sample::select(STRINGS).prop_map(|s| Value::String(s.to_owned())),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_owned(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_never_panic(v in arb_json()) {
        if let Ok(req) = gemini::decode_request(v) {
            let body = gemini::encode_request(&req);
            prop_assert!(body.is_ok());
        }
    }

    #[test]
    fn random_responses_never_panic(v in arb_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(resp) = gemini::decode_response(&bytes) {
            let out = gemini::encode_response(&resp);
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }

    #[test]
    fn garbled_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = gemini::decode_response(&bytes);
        let mut d = StreamDecoder::default();
        let mut out = Vec::new();
        let _ = d.decode(&SseEvent { event: None, data: String::from_utf8_lossy(&bytes).into_owned() }, &mut out);
    }

    #[test]
    fn random_stream_events_never_panic(chunks in prop::collection::vec(arb_json(), 0..8)) {
        let mut d = StreamDecoder::default();
        let mut evs = Vec::new();
        for c in chunks {
            let _ = d.decode(&SseEvent { event: None, data: c.to_string() }, &mut evs);
        }
        if let Some(first) = evs.first() {
            let is_start = matches!(first, apiproxy_translate::StreamEvent::Start { .. });
            prop_assert!(is_start);
        }
        let mut enc = StreamEncoder::new(StreamOptions::default());
        let mut out = BytesMut::new();
        for e in &evs {
            enc.encode(e, &mut out);
        }
        enc.finish(&mut out);
        // Every line we wrote is `data: <json>` or blank.
        for line in std::str::from_utf8(&out).unwrap().lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                prop_assert!(serde_json::from_str::<Value>(data).is_ok());
            } else {
                prop_assert!(line.is_empty(), "unexpected line {line:?}");
            }
        }
    }
}
