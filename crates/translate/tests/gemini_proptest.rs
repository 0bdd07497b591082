//! Random and garbled input never panics the Gemini decoders, and whatever
//! they accept encodes; valid requests and answers of every shape decode
//! and come back the same (counting the cases that reached the assertions).

use crate::counting;

use apiproxy_translate::gemini::{self, StreamDecoder, StreamEncoder};
use apiproxy_translate::{SseEvent, StreamDecode, StreamEncode, StreamOptions};
use bytes::BytesMut;
use counting::run_counting;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

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
        counting::check_bytes_decode(apiproxy_translate::Format::Gemini, &v)?;
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

// ------------------------------------------------------------ valid input

/// Text as people write it: never empty, any script, quotes and escapes.
fn words() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 .,!?'\"\\\\é漢\n]{0,24}"
}

const FUNCTIONS: [&str; 2] = ["get_weather", "set_light"];

fn call_args() -> impl Strategy<Value = Value> {
    (words(), any::<i32>(), any::<bool>())
        .prop_map(|(q, n, b)| json!({"location": q, "n": n, "on": b}))
}

/// A generateContent request as Google's API reference describes it:
/// text, inline images, function calls and their responses, a system
/// instruction, tools, generation settings.
fn arb_valid_request() -> impl Strategy<Value = Value> {
    let round = (
        prop::collection::vec(words(), 1..3),
        any::<bool>(),
        prop::option::of(words()),
        prop::collection::vec((0..FUNCTIONS.len(), call_args()), 0..3),
    );
    (
        prop::collection::vec(round, 1..4),
        prop::option::of(words()),
        prop::option::of(1u64..8192),
        prop::option::of(0u32..3),
    )
        .prop_map(|(rounds, system, max_tokens, temperature)| {
            let mut contents = Vec::new();
            let mut pending: Vec<usize> = Vec::new();
            for (texts, image, answer, calls) in &rounds {
                let mut parts: Vec<Value> = pending
                    .drain(..)
                    .map(|f| json!({"functionResponse": {"name": FUNCTIONS[f], "response": {"ok": true, "fn": FUNCTIONS[f]}}}))
                    .collect();
                parts.extend(texts.iter().map(|t| json!({"text": t})));
                if *image {
                    parts.push(json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgoAAAANSUhEUg=="}}));
                }
                contents.push(json!({"role": "user", "parts": parts}));
                let mut model: Vec<Value> = answer.iter().map(|t| json!({"text": t})).collect();
                for (f, args) in calls {
                    model.push(json!({"functionCall": {"name": FUNCTIONS[*f], "args": args}}));
                    pending.push(*f);
                }
                if model.is_empty() {
                    model.push(json!({"text": "ok"}));
                }
                contents.push(json!({"role": "model", "parts": model}));
            }
            let mut last: Vec<Value> = pending
                .drain(..)
                .map(|f| json!({"functionResponse": {"name": FUNCTIONS[f], "response": {"ok": true, "fn": FUNCTIONS[f]}}}))
                .collect();
            last.push(json!({"text": "and now?"}));
            contents.push(json!({"role": "user", "parts": last}));
            let mut body = json!({
                "contents": contents,
                "tools": [{"functionDeclarations": FUNCTIONS.iter().map(|n| json!({
                    "name": n, "description": format!("the {n} function"),
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}
                })).collect::<Vec<_>>()}],
            });
            if let Some(s) = system {
                body["systemInstruction"] = json!({"parts": [{"text": s}]});
            }
            let mut config = serde_json::Map::new();
            if let Some(m) = max_tokens {
                config.insert("maxOutputTokens".into(), json!(m));
            }
            if let Some(t) = temperature {
                config.insert("temperature".into(), json!(f64::from(t) / 2.0));
            }
            if !config.is_empty() {
                body["generationConfig"] = Value::Object(config);
            }
            body
        })
}

/// What a Gemini body says, in order: (role, part kind, what it holds),
/// adjacent text of one role joined.
fn gemini_digest(contents: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for c in contents.as_array().into_iter().flatten() {
        // A function's responses may come back under the user role.
        let role = match c["role"].as_str() {
            Some("model") => "model",
            _ => "user",
        }
        .to_owned();
        for p in c["parts"].as_array().into_iter().flatten() {
            let (kind, what) = if let Some(t) = p["text"].as_str() {
                ("text", t.to_owned())
            } else if let Some(d) = p.get("inlineData") {
                ("image", format!("{}|{}", d["mimeType"], d["data"]))
            } else if let Some(f) = p.get("functionCall") {
                ("call", format!("{}|{}", f["name"], f["args"]))
            } else if let Some(f) = p.get("functionResponse") {
                ("response", format!("{}", f["name"]))
            } else {
                ("unexpected", p.to_string())
            };
            match out.last_mut() {
                Some(last) if last.0 == role && last.1 == "text" && kind == "text" => {
                    last.2.push_str(&what)
                }
                _ => out.push((role.clone(), kind.to_owned(), what)),
            }
        }
    }
    out
}

#[test]
fn valid_requests_round_trip() {
    let cases = 256;
    let reached = run_counting(
        "gemini valid_requests_round_trip",
        cases,
        arb_valid_request(),
        |body| {
            prop_assert!(counting::check_bytes_decode(
                apiproxy_translate::Format::Gemini,
                &body
            )?);
            let req = gemini::decode_request(body.clone()).map_err(|e| {
                TestCaseError::fail(format!("a valid request was refused: {e:?}\n{body}"))
            })?;
            let out: Value = serde_json::from_slice(
                &gemini::encode_request(&req).map_err(|e| TestCaseError::fail(format!("{e:?}")))?,
            )
            .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert_eq!(
                &out["systemInstruction"]["parts"][0]["text"],
                &body["systemInstruction"]["parts"][0]["text"]
            );
            prop_assert_eq!(
                &out["generationConfig"]["maxOutputTokens"],
                &body["generationConfig"]["maxOutputTokens"]
            );
            prop_assert_eq!(
                &out["generationConfig"]["temperature"],
                &body["generationConfig"]["temperature"]
            );
            let names = |v: &Value| -> Vec<String> {
                v["tools"][0]["functionDeclarations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| f["name"].to_string())
                    .collect()
            };
            prop_assert_eq!(names(&out), names(&body));
            prop_assert_eq!(
                gemini_digest(&out["contents"]),
                gemini_digest(&body["contents"])
            );
            Ok(true)
        },
    );
    assert_eq!(reached, cases, "every valid request reached the assertions");
}

/// A generateContent answer as Google's API reference describes it.
fn arb_valid_response() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(words(), 0..3),
        prop::collection::vec((0..FUNCTIONS.len(), call_args()), 0..3),
        prop::sample::select(vec!["STOP", "MAX_TOKENS"]),
        0u64..100_000,
        0u64..10_000,
    )
        .prop_map(|(texts, calls, finish, prompt, answer)| {
            let mut parts: Vec<Value> = texts.iter().map(|t| json!({"text": t})).collect();
            for (f, args) in &calls {
                parts.push(json!({"functionCall": {"name": FUNCTIONS[*f], "args": args}}));
            }
            if parts.is_empty() {
                parts.push(json!({"text": "ok"}));
            }
            json!({
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": answer,
                                  "totalTokenCount": prompt + answer},
                "modelVersion": "gemini-2.5-flash",
                "responseId": "resp-1"
            })
        })
}

#[test]
fn valid_responses_round_trip() {
    let cases = 256;
    let reached = run_counting(
        "gemini valid_responses_round_trip",
        cases,
        arb_valid_response(),
        |body| {
            let resp = gemini::decode_response(body.to_string().as_bytes()).map_err(|e| {
                TestCaseError::fail(format!("a valid response was refused: {e:?}\n{body}"))
            })?;
            let out: Value = serde_json::from_slice(&gemini::encode_response(&resp))
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            let cand = |v: &Value| v["candidates"][0].clone();
            prop_assert_eq!(
                gemini_digest(&json!([cand(&out)["content"]])),
                gemini_digest(&json!([cand(&body)["content"]]))
            );
            prop_assert_eq!(&cand(&out)["finishReason"], &cand(&body)["finishReason"]);
            for k in ["promptTokenCount", "candidatesTokenCount"] {
                prop_assert_eq!(&out["usageMetadata"][k], &body["usageMetadata"][k], "{}", k);
            }
            Ok(true)
        },
    );
    assert_eq!(
        reached, cases,
        "every valid response reached the assertions"
    );
}
