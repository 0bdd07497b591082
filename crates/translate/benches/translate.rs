//! Micro-benchmarks of the translation hot paths: each request and response
//! direction through the neutral representation, and SSE parsing plus
//! translation per event, and same-format relaying. `cargo bench -p
//! apiproxy-translate`.
//!
//! Every format's payloads are made from one OpenAI-shaped request, answer
//! and stream (translated once at start-up), so the inputs stay valid as
//! the converters evolve and need no fixture files.

use apiproxy_translate::{self as t, Format, SseEvent, SseParser, StreamEvent, StreamOptions};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};

const FORMATS: [Format; 4] = [
    Format::OpenAiChat,
    Format::OpenAiResponses,
    Format::Anthropic,
    Format::Gemini,
];

/// A typical agent turn: system prompt, a few messages, one tool.
fn openai_request() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "max_tokens": 1024,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a careful assistant. Answer briefly and cite the files you used."},
            {"role": "user", "content": "What is the weather in Paris today? Use the tool if you need to."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\":18,\"sky\":\"cloudy\"}"},
            {"role": "user", "content": "And should I take an umbrella?"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}]
    })
}

fn openai_response() -> Vec<u8> {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "It is 18 °C and cloudy in Paris. Rain is not forecast, but a small umbrella would not hurt."}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 24, "total_tokens": 144}
    })
    .to_string()
    .into_bytes()
}

/// An OpenAI stream of `n` events: role, text deltas, finish, usage, [DONE].
fn openai_stream(n: usize) -> Vec<u8> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut out = String::new();
    let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
    push(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    for i in 0..n - 4 {
        push(chunk(json!({"content": format!("word{i} ")}), Value::Null));
    }
    push(chunk(json!({}), json!("stop")));
    push(
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
        "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": n - 4, "total_tokens": n + 116}}),
    );
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn parse_sse(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::default();
    let mut evs = Vec::new();
    p.feed(bytes, &mut evs).expect("sse");
    p.finish(&mut evs);
    evs
}

/// The same stream in `fmt`'s wire shape.
fn stream_in(fmt: Format, openai: &[u8]) -> Vec<u8> {
    let mut dec = t::stream_decoder(Format::OpenAiChat);
    let mut enc = t::stream_encoder(
        fmt,
        StreamOptions {
            model_override: None,
            include_usage: true,
        },
    );
    let mut out = BytesMut::new();
    let mut evs: Vec<StreamEvent> = Vec::new();
    for ev in parse_sse(openai) {
        evs.clear();
        dec.decode(&ev, &mut evs).expect("decode");
        for e in &evs {
            enc.encode(e, &mut out);
        }
    }
    enc.finish(&mut out);
    out.to_vec()
}

fn requests(c: &mut Criterion) {
    let ir = t::decode_request(Format::OpenAiChat, openai_request()).expect("request");
    let mut g = c.benchmark_group("request");
    for from in FORMATS {
        let mut body: Value =
            serde_json::from_slice(&t::encode_request(from, &ir).expect("encode")).expect("json");
        if from == Format::Gemini {
            // Gemini carries the model in the path; the gateway sets it from there.
            body.as_object_mut().map(|o| o.remove("model"));
        }
        let raw = serde_json::to_vec(&body).expect("json");
        for to in FORMATS.into_iter().filter(|f| *f != from) {
            let id = format!("{}->{}", from.as_str(), to.as_str());
            g.throughput(Throughput::Bytes(raw.len() as u64));
            g.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    let v: Value = serde_json::from_slice(black_box(&raw)).expect("json");
                    let mut ir = t::decode_request(from, v).expect("decode");
                    ir.model = "target-model".into();
                    t::encode_request(to, &ir).expect("encode")
                })
            });
        }
    }
    g.finish();
}

fn responses(c: &mut Criterion) {
    let ir = t::decode_response(Format::OpenAiChat, &openai_response()).expect("response");
    let mut g = c.benchmark_group("response");
    for upstream in FORMATS {
        let raw = t::encode_response(upstream, &ir);
        for client in FORMATS.into_iter().filter(|f| *f != upstream) {
            let id = format!("{}->{}", upstream.as_str(), client.as_str());
            g.throughput(Throughput::Bytes(raw.len() as u64));
            g.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    let r = t::decode_response(upstream, black_box(&raw)).expect("decode");
                    t::encode_response(client, &r)
                })
            });
        }
    }
    g.finish();
}

/// Per event: SSE parsing alone, and parsing plus translation for every
/// upstream→client direction (throughput is in upstream events).
fn streams(c: &mut Criterion) {
    let openai = openai_stream(200);
    let mut g = c.benchmark_group("sse");
    for upstream in FORMATS {
        let raw = stream_in(upstream, &openai);
        let n = parse_sse(&raw).len() as u64;
        g.throughput(Throughput::Elements(n));
        g.bench_function(BenchmarkId::new("parse", upstream.as_str()), |b| {
            b.iter(|| parse_sse(black_box(&raw)))
        });
        for client in FORMATS.into_iter().filter(|f| *f != upstream) {
            let id = format!("{}->{}", upstream.as_str(), client.as_str());
            g.bench_function(BenchmarkId::new("translate", id), |b| {
                b.iter(|| {
                    let mut p = SseParser::default();
                    let mut evs = Vec::new();
                    let mut ir = Vec::new();
                    let mut dec = t::stream_decoder(upstream);
                    let mut enc = t::stream_encoder(client, StreamOptions::default());
                    let mut out = BytesMut::new();
                    // Fed in network-sized pieces, as the relay sees them.
                    for piece in raw.chunks(1400) {
                        evs.clear();
                        p.feed(piece, &mut evs).expect("sse");
                        for ev in &evs {
                            ir.clear();
                            dec.decode(ev, &mut ir).expect("decode");
                            for e in &ir {
                                enc.encode(e, &mut out);
                            }
                        }
                    }
                    enc.finish(&mut out);
                    out
                })
            });
        }
    }
    g.finish();
}

/// Same-format relaying, as the gateway relays an answer in the client's
/// own format: a stream (model renamed, usage read, output counted) and a
/// whole body, untraced and traced (its finish reasons read too).
fn same_format(c: &mut Criterion) {
    use apiproxy_translate::passthrough::{self as pt, PassthroughOptions, PassthroughStream};
    let openai = openai_stream(200);
    let mut g = c.benchmark_group("same_format");
    for fmt in FORMATS {
        let raw = stream_in(fmt, &openai);
        g.throughput(Throughput::Elements(parse_sse(&raw).len() as u64));
        for traced in [false, true] {
            let opts = PassthroughOptions {
                model_override: Some("fast".into()),
                drop_usage_chunk: true,
                count_output: true,
                finish_reasons: traced,
                ..Default::default()
            };
            let name = if traced { "stream traced" } else { "stream" };
            g.bench_function(BenchmarkId::new(name, fmt.as_str()), |b| {
                b.iter(|| {
                    let mut relay = PassthroughStream::new(fmt, opts.clone());
                    let mut out = BytesMut::new();
                    for piece in black_box(&raw).chunks(1400) {
                        relay.feed(piece, &mut out).expect("relay");
                    }
                    relay.finish(&mut out).expect("relay");
                    (out, relay.take_finish_reasons())
                })
            });
        }
    }
    let body = openai_response();
    g.throughput(Throughput::Elements(1));
    g.bench_function("body/openai", |b| {
        b.iter(|| pt::passthrough_body(Format::OpenAiChat, black_box(&body), Some("fast")))
    });
    g.bench_function("body traced/openai", |b| {
        b.iter(|| {
            pt::passthrough_body_with_finish(Format::OpenAiChat, black_box(&body), Some("fast"))
        })
    });
    g.finish();
}

/// Bedrock's ConverseStream: binary event-stream frames (CRC-checked by the
/// AWS crate) cut into events, alone and translated to OpenAI Chat SSE
/// (throughput in frames).
fn bedrock_frames(c: &mut Criterion) {
    use apiproxy_translate::bedrock::EventStreamParser;
    let raw = stream_in(Format::Bedrock, &openai_stream(200));
    let frames = |bytes: &[u8]| {
        let mut p = EventStreamParser::default();
        let mut evs = Vec::new();
        for piece in bytes.chunks(1400) {
            p.feed(piece, &mut evs).expect("frames");
        }
        evs
    };
    let mut g = c.benchmark_group("bedrock");
    g.throughput(Throughput::Elements(frames(&raw).len() as u64));
    g.bench_function("parse", |b| b.iter(|| frames(black_box(&raw))));
    g.bench_function("translate/bedrock->openai", |b| {
        b.iter(|| {
            let mut dec = t::stream_decoder(Format::Bedrock);
            let mut enc = t::stream_encoder(Format::OpenAiChat, StreamOptions::default());
            let mut ir = Vec::new();
            let mut out = BytesMut::new();
            for ev in frames(black_box(&raw)) {
                ir.clear();
                dec.decode(&ev, &mut ir).expect("decode");
                for e in &ir {
                    enc.encode(e, &mut out);
                }
            }
            enc.finish(&mut out);
            out
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = requests, responses, streams, same_format, bedrock_frames
}
criterion_main!(benches);
