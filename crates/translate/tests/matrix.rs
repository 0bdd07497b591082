//! Every client format against every provider format (4 × 4, including a
//! format against itself through the IR): requests, non-streaming answers,
//! streams, stream failures, and a property test of the answer round trip.
//!
//! Answers are checked by reading the client's bytes back the way that
//! client would: its own field names for bodies, its own stream decoder for
//! SSE, plus the structural rules of its stream.

mod answer;
mod client;
mod request;

use apiproxy_translate::{
    decode_request, decode_response, encode_request, encode_response, stream_decoder,
    stream_encoder, Format, StreamEvent, StreamOptions,
};
use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};

use answer::{provider_body, provider_stream, sample_answer, Answer, Call, End, Tokens};
use client::{assemble, check_stream_shape, parse_sse, read_body};
use request::{client_request, provider_view, Choice, Item, Variant};

const FORMATS: [Format; 4] = [
    Format::OpenAiChat,
    Format::OpenAiResponses,
    Format::Anthropic,
    Format::Gemini,
];

fn pairs() -> impl Iterator<Item = (Format, Format)> {
    FORMATS
        .into_iter()
        .flat_map(|c| FORMATS.into_iter().map(move |p| (c, p)))
}

fn ctx(client: Format, provider: Format) -> String {
    format!(
        "{} client -> {} provider",
        client.as_str(),
        provider.as_str()
    )
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Client request → IR → provider body, read back with the provider's names.
fn translate_request(client: Format, provider: Format, v: Variant) -> request::ReqView {
    let body = client_request(client, v);
    let shape = match client {
        Format::OpenAiChat => apiproxy_translate::detect_chat_adapter(&body).unwrap_or(client),
        _ => client,
    };
    let from_bytes = apiproxy_translate::decode_request_bytes(
        client,
        shape,
        &serde_json::to_vec(&body).expect("JSON"),
        &apiproxy_translate::Limits::default(),
    );
    let mut req = decode_request(client, body)
        .unwrap_or_else(|e| panic!("{}: decode: {e}", ctx(client, provider)));
    assert_eq!(
        from_bytes.as_ref().ok(),
        Some(&req),
        "{}: decoded from bytes",
        ctx(client, provider)
    );
    // What the proxy does: the upstream's model, and Gemini's streaming
    // comes from the endpoint.
    req.model = "upstream-model".into();
    if client == Format::Gemini {
        req.stream = v.stream;
    }
    let bytes = encode_request(provider, &req)
        .unwrap_or_else(|e| panic!("{}: encode: {e}", ctx(client, provider)));
    provider_view(provider, &bytes)
}

fn expected_reasoning(client: Format, provider: Format) -> &'static str {
    let openai_client = matches!(client, Format::OpenAiChat | Format::OpenAiResponses);
    // OpenAI clients ask for effort "high"; Anthropic and Gemini clients for
    // a budget of 8000 tokens.
    match (provider, openai_client) {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        (Format::Bedrock, _) => unreachable!("Bedrock is not in this matrix"),
        (Format::OpenAiChat | Format::OpenAiResponses, true) => "effort:high",
        (Format::OpenAiChat | Format::OpenAiResponses, false) => "effort:medium",
        (Format::Anthropic, true) => "budget:16384",
        (Format::Gemini, true) => "budget:24576",
        (Format::Anthropic | Format::Gemini, false) => "budget:8000",
    }
}

fn check_request(client: Format, provider: Format, v: Variant) {
    let c = ctx(client, provider);
    let view = translate_request(client, provider, v);

    assert!(
        view.system.starts_with(request::SYSTEM),
        "{c}: system {:?}",
        view.system
    );

    // The tool call and its result pair up by id (and by name for Gemini).
    let call_id = view.items.iter().find_map(|(_, it)| match it {
        Item::Call { id, .. } => Some(id.clone()),
        _ => None,
    });
    let call_id = call_id.unwrap_or_else(|| panic!("{c}: no tool call in {:?}", view.items));
    assert!(!call_id.is_empty(), "{c}: empty call id");
    if client != Format::Gemini {
        assert_eq!(call_id, request::CALL_ID, "{c}: call id kept");
    }
    let result_name = (provider == Format::Gemini).then(|| "get_weather".to_owned());
    let want = vec![
        ("user", Item::Text(request::ASK.into())),
        ("user", Item::ImageUrl(request::IMAGE_URL.into())),
        (
            "user",
            Item::ImageData("image/png".into(), request::IMAGE_B64.into()),
        ),
        ("assistant", Item::Text(request::SAID.into())),
        (
            "assistant",
            Item::Call {
                id: call_id.clone(),
                name: "get_weather".into(),
                args: json!({"city": "Paris"}),
            },
        ),
        (
            "user",
            Item::Result {
                id: call_id,
                name: result_name,
                output: json!({"temp": 21}),
            },
        ),
        ("user", Item::Text(request::THANKS.into())),
    ];
    assert_eq!(view.items, want, "{c}: turns");

    let names: Vec<&str> = view.tools.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"], "{c}: tools");
    let city = &view.tools[0].1["properties"]["city"];
    assert_eq!(
        city["type"], "string",
        "{c}: tool schema {:?}",
        view.tools[0].1
    );
    assert_eq!(
        view.tool_choice.as_deref(),
        Some(v.choice.name()),
        "{c}: tool_choice"
    );
    assert_eq!(view.max_tokens, Some(20000), "{c}: max tokens");
    // Anthropic refuses temperature with thinking on.
    let temperature = !(provider == Format::Anthropic && v.reasoning);
    assert_eq!(
        view.temperature,
        temperature.then_some(0.5),
        "{c}: temperature"
    );
    // Responses has no stop sequences.
    let stop = client != Format::OpenAiResponses && provider != Format::OpenAiResponses;
    let want_stop: Vec<String> = if stop { vec!["END".into()] } else { vec![] };
    assert_eq!(view.stop, want_stop, "{c}: stop");
    // Every client's JSON schema reaches every provider in its native form.
    assert!(view.json_mode, "{c}: structured output");
    let reasoning = v
        .reasoning
        .then(|| expected_reasoning(client, provider).to_owned());
    assert_eq!(view.reasoning, reasoning, "{c}: reasoning");
    // Gemini streams by endpoint, not by a body flag.
    assert_eq!(
        view.stream,
        v.stream && provider != Format::Gemini,
        "{c}: stream flag"
    );
}

#[test]
fn requests_carry_everything_to_every_provider() {
    for (client, provider) in pairs() {
        for stream in [false, true] {
            let v = Variant {
                reasoning: true,
                choice: Choice::Auto,
                stream,
            };
            check_request(client, provider, v);
        }
    }
}

#[test]
fn tool_choice_maps_to_every_provider() {
    for (client, provider) in pairs() {
        for choice in [Choice::Required, Choice::Function, Choice::Never] {
            let v = Variant {
                reasoning: false,
                choice,
                stream: false,
            };
            check_request(client, provider, v);
        }
    }
}

#[test]
fn forced_tool_choice_turns_anthropic_thinking_off() {
    for client in FORMATS {
        let v = Variant {
            reasoning: true,
            choice: Choice::Required,
            stream: false,
        };
        let view = translate_request(client, Format::Anthropic, v);
        assert_eq!(view.tool_choice.as_deref(), Some("required"));
        assert_eq!(view.reasoning, None, "{}", client.as_str());
    }
}

// ---------------------------------------------------------------------------
// Non-streaming answers
// ---------------------------------------------------------------------------

fn translate_body(provider: Format, client: Format, a: &Answer) -> Vec<u8> {
    let body = serde_json::to_vec(&provider_body(provider, a)).unwrap_or_default();
    let resp = decode_response(provider, &body)
        .unwrap_or_else(|e| panic!("{}: decode: {e}", ctx(client, provider)));
    encode_response(client, &resp)
}

#[test]
fn answers_reach_every_client() {
    let a = sample_answer();
    for (client, provider) in pairs() {
        let c = ctx(client, provider);
        let bytes = translate_body(provider, client, &a);
        let got = read_body(client, &bytes);
        got.assert_matches(&a.expected(provider, client), &c);
        // Usage in the client's own convention.
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        match client {
            // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
            Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
            Format::OpenAiChat => {
                assert_eq!(v["usage"]["prompt_tokens"], 1200, "{c}");
                assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{c}");
            }
            Format::OpenAiResponses => {
                assert_eq!(v["usage"]["input_tokens"], 1200, "{c}");
                assert_eq!(v["status"], "completed", "{c}");
                let kinds: Vec<&str> = v["output"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["type"].as_str())
                    .collect();
                assert_eq!(
                    kinds,
                    ["reasoning", "message", "function_call", "function_call"],
                    "{c}"
                );
            }
            Format::Anthropic => {
                // input_tokens excludes cache reads.
                assert_eq!(v["usage"]["input_tokens"], 200, "{c}");
                assert_eq!(v["usage"]["cache_read_input_tokens"], 1000, "{c}");
                assert_eq!(v["stop_reason"], "tool_use", "{c}");
            }
            Format::Gemini => {
                assert_eq!(v["usageMetadata"]["promptTokenCount"], 1200, "{c}");
                assert_eq!(v["candidates"][0]["finishReason"], "STOP", "{c}");
            }
        }
    }
}

#[test]
fn finish_reasons_map_across_formats() {
    for end in [End::Natural, End::Length, End::Filter] {
        for calls in [false, true] {
            let mut a = sample_answer();
            a.end = end;
            if !calls {
                a.calls.clear();
            }
            for (client, provider) in pairs() {
                let c = format!("{} ({end:?}, calls: {calls})", ctx(client, provider));
                let got = read_body(client, &translate_body(provider, client, &a));
                assert_eq!(got.finish, a.finish(), "{c}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// Provider SSE (fed in random small chunks) → provider decoder → client
/// encoder. `fail_after`: call `fail()` after that many provider events.
fn translate_stream(
    provider: Format,
    client: Format,
    transcript: &str,
    seed: u64,
    fail_after: Option<usize>,
) -> Vec<u8> {
    let c = ctx(client, provider);
    let mut dec = stream_decoder(provider);
    let mut enc = stream_encoder(
        client,
        StreamOptions {
            model_override: Some("logical-model".into()),
            include_usage: true,
        },
    );
    let mut out = BytesMut::new();
    let mut neutral = Vec::new();
    let events = parse_sse(transcript.as_bytes(), seed);
    // A failure past the last event: the connection dropped before the end.
    let fail_at = fail_after.map(|k| k.min(events.len()));
    for (seen, ev) in events.iter().enumerate() {
        if fail_at == Some(seen) {
            break;
        }
        neutral.clear();
        dec.decode(ev, &mut neutral)
            .unwrap_or_else(|e| panic!("{c}: provider decode of {:?}: {e}", ev.data));
        for n in &neutral {
            enc.encode(n, &mut out);
        }
    }
    if fail_at.is_some() {
        enc.fail(Some(502), "upstream went away", &mut out);
        // Whatever the proxy does next adds nothing.
        enc.finish(&mut out);
        enc.encode(
            &StreamEvent::TextDelta {
                text: "late".into(),
            },
            &mut out,
        );
        return out.to_vec();
    }
    enc.finish(&mut out);
    out.to_vec()
}

/// The client's SSE decoded with the client format's own decoder (the
/// format module's: signatures read as the client got them).
fn decode_client_stream(client: Format, bytes: &[u8], seed: u64) -> Vec<StreamEvent> {
    use apiproxy_translate::{anthropic, gemini, openai_chat, openai_responses, StreamDecode};
    let mut dec: Box<dyn StreamDecode> = match client {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => Box::new(openai_chat::StreamDecoder::default()),
        Format::OpenAiResponses => Box::new(openai_responses::StreamDecoder::default()),
        Format::Anthropic => Box::new(anthropic::StreamDecoder::default()),
        Format::Gemini => Box::new(gemini::StreamDecoder::default()),
    };
    let mut events = Vec::new();
    for ev in parse_sse(bytes, seed ^ 0x5eed) {
        dec.decode(&ev, &mut events)
            .unwrap_or_else(|e| panic!("{}: client decode of {:?}: {e}", client.as_str(), ev.data));
    }
    events
}

fn check_stream_round_trip(client: Format, provider: Format, a: &Answer, seed: u64) {
    let c = ctx(client, provider);
    let bytes = translate_stream(provider, client, &provider_stream(provider, a), seed, None);
    check_stream_shape(client, &bytes, false);
    let (got, errors) = assemble(client, &decode_client_stream(client, &bytes, seed));
    assert!(errors.is_empty(), "{c}: errors {errors:?}");
    got.assert_matches(&a.expected(provider, client), &format!("{c} (stream)"));
}

#[test]
fn streams_reach_every_client() {
    let a = sample_answer();
    for (client, provider) in pairs() {
        for seed in [1, 2, 3] {
            check_stream_round_trip(client, provider, &a, seed);
        }
    }
}

#[test]
fn stream_finish_reasons_and_text_only_answers() {
    for end in [End::Natural, End::Length, End::Filter] {
        let mut a = sample_answer();
        a.end = end;
        a.calls.clear();
        for (client, provider) in pairs() {
            check_stream_round_trip(client, provider, &a, 11);
        }
    }
}

#[test]
fn failing_streams_end_with_one_error_in_the_client_shape() {
    let a = sample_answer();
    for (client, provider) in pairs() {
        let transcript = provider_stream(provider, &a);
        for fail_after in [0, 1, 3, 6, 100] {
            let c = format!("{} (fail after {fail_after})", ctx(client, provider));
            let bytes = translate_stream(provider, client, &transcript, 5, Some(fail_after));
            check_stream_shape(client, &bytes, true);
            let (_, errors) = assemble(client, &decode_client_stream(client, &bytes, 5));
            assert_eq!(errors.len(), 1, "{c}: {errors:?}");
            assert!(errors[0].contains("upstream went away"), "{c}: {errors:?}");
        }
    }
}

/// A call that streams no argument text (a function without parameters)
/// reaches every client as `{}`: OpenAI SDKs parse the accumulated
/// arguments, and `""` is not JSON.
#[test]
fn calls_without_arguments_reach_clients_as_empty_objects() {
    let mut a = sample_answer();
    a.calls[1].args.clear();
    for (client, provider) in pairs() {
        let c = ctx(client, provider);
        let got = read_body(client, &translate_body(provider, client, &a));
        got.assert_matches(&a.expected(provider, client), &c);
        check_stream_round_trip(client, provider, &a, 4);
    }
}

/// The provider's own in-stream error event, as each provider writes it.
fn provider_error_event(provider: Format) -> &'static str {
    match provider {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => {
            "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"
        }
        Format::OpenAiResponses => {
            "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"overloaded\",\"param\":null,\"sequence_number\":99}\n\n"
        }
        Format::Anthropic => {
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"overloaded\"}}\n\n"
        }
        Format::Gemini => {
            "data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n\n"
        }
    }
}

#[test]
fn upstream_stream_errors_reach_every_client_once() {
    let mut a = sample_answer();
    a.calls.clear();
    for (client, provider) in pairs() {
        let c = ctx(client, provider);
        // The answer's first events, then the provider's error.
        let full = provider_stream(provider, &a);
        let cut: String = full.split_inclusive("\n\n").take(3).collect();
        let transcript = format!("{cut}{}", provider_error_event(provider));
        let bytes = translate_stream(provider, client, &transcript, 9, None);
        check_stream_shape(client, &bytes, true);
        let (_, errors) = assemble(client, &decode_client_stream(client, &bytes, 9));
        assert_eq!(errors.len(), 1, "{c}: {errors:?}");
        assert!(errors[0].contains("overloaded"), "{c}: {errors:?}");
    }
}

// ---------------------------------------------------------------------------
// Property: any answer survives every provider → client translation
// ---------------------------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?\"\\\\/\n\u{e9}\u{4e2d}\u{1f600}{}]{1,12}"
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        arb_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arguments as JSON text cut into 1..4 deltas at char boundaries.
fn arb_args() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..4),
        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    )
        .prop_map(|(m, cuts)| {
            let text = Value::Object(m.into_iter().collect()).to_string();
            let chars: Vec<char> = text.chars().collect();
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(chars.len())).collect();
            at.sort_unstable();
            at.dedup();
            let mut out = Vec::new();
            let mut from = 0;
            for a in at.into_iter().filter(|&a| a > 0) {
                out.push(chars[from..a].iter().collect());
                from = a;
            }
            out.push(chars[from..].iter().collect());
            out
        })
}

fn arb_answer() -> impl Strategy<Value = Answer> {
    // Some calls stream no argument text at all (a function without
    // parameters).
    let args = prop_oneof![4 => arb_args(), 1 => Just(Vec::new())];
    let calls = prop::collection::vec(("[a-z][a-z_]{0,10}", args), 0..3);
    let usage = (
        0u64..200_000,
        0u64..=100,
        0u64..50_000,
        prop::option::of(0u64..=100),
    );
    let end = prop_oneof![Just(End::Natural), Just(End::Length), Just(End::Filter)];
    (
        prop::collection::vec(arb_text(), 0..3),
        prop::option::of("[A-Za-z0-9+/]{8,24}={0,2}"),
        prop::collection::vec(arb_text(), 0..4),
        calls,
        usage,
        end,
    )
        .prop_map(
            |(thinking, sig, text, calls, (input, cached_pct, output, r_pct), end)| {
                let signature = sig.filter(|_| !thinking.is_empty());
                Answer {
                    thinking,
                    signature,
                    text,
                    calls: calls
                        .into_iter()
                        .enumerate()
                        .map(|(k, (name, args))| Call {
                            id: format!("call_{k}x{}", name.len()),
                            name,
                            args,
                        })
                        .collect(),
                    usage: Tokens {
                        input,
                        cached: input * cached_pct / 100,
                        output,
                        reasoning: r_pct.map(|p| output * p / 100),
                    },
                    end,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Each case runs all 16 pairs, streaming and not.
    #[test]
    fn any_answer_round_trips_through_every_pair(a in arb_answer(), seed in any::<u64>()) {
        for (client, provider) in pairs() {
            let c = ctx(client, provider);
            let body = translate_body(provider, client, &a);
            read_body(client, &body).assert_matches(&a.expected(provider, client), &c);
            check_stream_round_trip(client, provider, &a, seed);
        }
    }
}

// ---------------------------------------------------------------------------
// Edge cases across the matrix
// ---------------------------------------------------------------------------

/// Two parallel calls of the same function and their two results, as each
/// client writes them (Gemini: no ids, paired by name and order).
fn parallel_history(client: Format) -> Value {
    let call = |id: &str, city: &str| (id.to_owned(), json!({"city": city}));
    let calls = [call("call_p1", "Paris"), call("call_p2", "Oslo")];
    let results = [json!({"temp": 21}), json!({"temp": 3})];
    match client {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => json!({"model": "m", "messages": [
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": calls.iter().map(|(id, a)|
                json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": a.to_string()}})).collect::<Vec<_>>()},
            {"role": "tool", "tool_call_id": "call_p1", "content": results[0].to_string()},
            {"role": "tool", "tool_call_id": "call_p2", "content": results[1].to_string()}]}),
        Format::OpenAiResponses => {
            let mut input = vec![json!({"role": "user", "content": "Weather in Paris and Oslo?"})];
            for (id, a) in &calls {
                input.push(json!({"type": "function_call", "call_id": id, "name": "get_weather", "arguments": a.to_string()}));
            }
            for ((id, _), r) in calls.iter().zip(&results) {
                input.push(
                    json!({"type": "function_call_output", "call_id": id, "output": r.to_string()}),
                );
            }
            json!({"model": "m", "input": input})
        }
        Format::Anthropic => json!({"model": "m", "max_tokens": 100, "messages": [
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": calls.iter().map(|(id, a)|
                json!({"type": "tool_use", "id": id, "name": "get_weather", "input": a})).collect::<Vec<_>>()},
            {"role": "user", "content": calls.iter().zip(&results).map(|((id, _), r)|
                json!({"type": "tool_result", "tool_use_id": id, "content": r.to_string()})).collect::<Vec<_>>()}]}),
        Format::Gemini => json!({"contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris and Oslo?"}]},
            {"role": "model", "parts": calls.iter().map(|(_, a)|
                json!({"functionCall": {"name": "get_weather", "args": a}})).collect::<Vec<_>>()},
            {"role": "user", "parts": results.iter().map(|r|
                json!({"functionResponse": {"name": "get_weather", "response": r}})).collect::<Vec<_>>()}]}),
    }
}

#[test]
fn parallel_tool_results_pair_with_their_calls() {
    for (client, provider) in pairs() {
        let c = ctx(client, provider);
        let mut req =
            decode_request(client, parallel_history(client)).unwrap_or_else(|e| panic!("{c}: {e}"));
        req.model = "upstream-model".into();
        let body = encode_request(provider, &req).unwrap_or_else(|e| panic!("{c}: {e}"));
        let view = provider_view(provider, &body);
        let calls: Vec<(String, Value)> = view
            .items
            .iter()
            .filter_map(|(_, it)| match it {
                Item::Call { id, args, .. } => Some((id.clone(), args["city"].clone())),
                _ => None,
            })
            .collect();
        let results: Vec<(String, Value)> = view
            .items
            .iter()
            .filter_map(|(_, it)| match it {
                Item::Result { id, output, .. } => Some((id.clone(), output["temp"].clone())),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), 2, "{c}: {:?}", view.items);
        assert_eq!(results.len(), 2, "{c}: {:?}", view.items);
        assert_ne!(calls[0].0, calls[1].0, "{c}: distinct call ids");
        // Paris (21°) and Oslo (3°) answer their own calls.
        let temp_of = |id: &str| {
            results
                .iter()
                .find(|(r, _)| r == id)
                .map(|(_, t)| t.clone())
        };
        assert_eq!(
            temp_of(&calls[0].0),
            Some(json!(21)),
            "{c}: {calls:?} {results:?}"
        );
        assert_eq!(
            temp_of(&calls[1].0),
            Some(json!(3)),
            "{c}: {calls:?} {results:?}"
        );
        assert_eq!(calls[0].1, "Paris", "{c}");
        if client != Format::Gemini {
            assert_eq!(calls[0].0, "call_p1", "{c}");
        }
    }
}

/// A previous answer's signed thinking, replayed by each client, reaches
/// the provider kind that issued it (a raw signature is the client
/// format's own kind; a wrapped one names its kind) and is dropped for the
/// others, which refuse a signature they did not issue.
#[test]
fn replayed_thinking_signatures() {
    let raw = "EqQBCkYIARgCsig";
    let cases = [Format::Anthropic, Format::Gemini, Format::OpenAiResponses]
        .into_iter()
        .flat_map(|client| {
            [
                (client, client, raw.to_owned()),
                (
                    client,
                    Format::Anthropic,
                    apiproxy_translate::signature::wrap(Format::Anthropic, raw),
                ),
                (
                    client,
                    Format::Gemini,
                    apiproxy_translate::signature::wrap(Format::Gemini, raw),
                ),
            ]
        });
    for (client, issuer, sig) in cases {
        let sig = sig.as_str();
        let body = match client {
            Format::Anthropic => json!({"model": "m", "max_tokens": 100, "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Need the tool.", "signature": sig},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]}),
            Format::Gemini => json!({"contents": [
                {"role": "user", "parts": [{"text": "Weather?"}]},
                {"role": "model", "parts": [
                    {"text": "Need the tool.", "thought": true},
                    {"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": sig}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": "sunny"}}}]}]}),
            _ => json!({"model": "m", "input": [
                {"role": "user", "content": "Weather?"},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need the tool."}], "encrypted_content": sig},
                {"type": "function_call", "call_id": "toolu_1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"}]}),
        };
        let mut req = decode_request(client, body).unwrap_or_else(|e| panic!("{e}"));
        req.model = "gemini-3-pro-preview".into();
        for provider in FORMATS {
            let c = ctx(client, provider);
            let out: Value = serde_json::from_slice(
                &encode_request(provider, &req).unwrap_or_else(|e| panic!("{c}: {e}")),
            )
            .unwrap_or_default();
            let text = out.to_string();
            let c = format!("{c} (signed by {})", issuer.as_str());
            assert!(
                !text.contains(sig) || sig == raw,
                "{c}: wrapped signature sent: {text}"
            );
            if provider != issuer
                || matches!(provider, Format::OpenAiChat | Format::OpenAiResponses)
            {
                // Foreign (or OpenAI, which takes no reasoning back): gone.
                assert!(!text.contains(raw), "{c}: {text}");
                assert!(!text.contains("Need the tool."), "{c}: {text}");
                continue;
            }
            match provider {
                Format::Anthropic => {
                    let block = &out["messages"][1]["content"][0];
                    assert_eq!(block["type"], "thinking", "{c}: {out}");
                    assert_eq!(block["signature"], raw, "{c}");
                    assert_eq!(out["messages"][1]["content"][1]["type"], "tool_use", "{c}");
                }
                Format::Gemini => {
                    // Gemini 3 needs the signature on the call it preceded.
                    let parts = &out["contents"][1]["parts"];
                    let call = parts
                        .as_array()
                        .and_then(|p| p.iter().find(|p| p["functionCall"].is_object()))
                        .cloned()
                        .unwrap_or_default();
                    assert_eq!(call["thoughtSignature"], raw, "{c}: {parts}");
                }
                _ => {}
            }
        }
    }
}

/// Gemini reports the prompt size on its first chunk: an Anthropic client
/// must see it in `message_start`, as Anthropic itself sends it.
#[test]
fn input_tokens_known_up_front_reach_message_start() {
    let a = sample_answer();
    for provider in [Format::Anthropic, Format::Gemini] {
        let bytes = translate_stream(
            provider,
            Format::Anthropic,
            &provider_stream(provider, &a),
            3,
            None,
        );
        let events = parse_sse(&bytes, 3);
        let start: Value = serde_json::from_str(&events[0].data).unwrap_or_default();
        assert_eq!(start["type"], "message_start");
        let u = &start["message"]["usage"];
        assert_eq!(
            (
                u["input_tokens"].as_u64(),
                u["cache_read_input_tokens"].as_u64()
            ),
            (Some(200), Some(1000)),
            "{}: {u}",
            provider.as_str()
        );
    }
}
