//! Micro-benchmarks of the gateway's own per-request pure code, before any
//! byte goes upstream: routing the path, finding the client key, parsing the
//! JSON body and re-encoding it for a same-format upstream, and resolving
//! the model name into ordered candidates. `cargo bench -p apiproxy`.
//! (Translation and SSE costs: `cargo bench -p apiproxy-translate`.)

use apiproxy::auth;
use apiproxy::config::Config;
use apiproxy::proxy::{encode, request, routes};
use apiproxy::routing::Runtime;
use apiproxy_translate::Format;
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::HeaderMap;
use serde_json::Value;

const CONFIG: &str = r#"
auth:
  keys:
    - { name: alice, key: sk-alice-0000000000000000 }
    - { name: bob, key: sk-bob-11111111111111111111 }
    - { name: carol, key: sk-carol-222222222222222222, models: ["gpt-*", fast] }
providers:
  - { id: openai, kind: openai, base_url: "http://127.0.0.1:1", api_keys: [k1, k2], models: [gpt-4o, gpt-4o-mini, gpt-4.1] }
  - { id: claude, kind: anthropic, base_url: "http://127.0.0.1:2", api_keys: [k3], models: [claude-haiku-4-5, claude-sonnet-4-5] }
  - { id: gemini, kind: gemini, base_url: "http://127.0.0.1:3", api_keys: [k4], models: [gemini-2.5-flash] }
models:
  - name: fast
    upstreams:
      - { provider: openai, model: gpt-4o-mini, weight: 3 }
      - { provider: claude, model: claude-haiku-4-5, weight: 1 }
      - { provider: gemini, model: gemini-2.5-flash, weight: 1 }
"#;

const BODY: &str = r#"{"model":"gpt-4o-mini","max_tokens":512,"temperature":0.2,"messages":[{"role":"system","content":"You are a careful assistant. Answer briefly."},{"role":"user","content":"What is the weather in Paris today? Use the tool if you need to."},{"role":"assistant","content":"Let me check."},{"role":"user","content":"And should I take an umbrella?"}],"stream":false}"#;

fn request(c: &mut Criterion) {
    let config = Config::from_yaml(CONFIG, &|_| None).expect("config");
    let rt = Runtime::new(config, None);
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        "Bearer sk-carol-222222222222222222"
            .parse()
            .expect("header"),
    );
    headers.insert("content-type", "application/json".parse().expect("header"));

    c.bench_function("route", |b| {
        b.iter(|| routes::route(black_box("POST"), black_box("/v1/chat/completions")))
    });
    c.bench_function("client_key", |b| {
        b.iter(|| {
            let k = auth::presented_key(black_box(&headers), None).expect("key");
            auth::find_client_key(&rt.config.auth, k)
        })
    });
    let mut g = c.benchmark_group("body");
    g.throughput(Throughput::Bytes(BODY.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(BODY.as_bytes())).expect("json");
            let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
            (v, model)
        })
    });
    g.bench_function("parse+reencode (Value, before)", |b| {
        b.iter(|| {
            let mut v: Value = serde_json::from_slice(black_box(BODY.as_bytes())).expect("json");
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "model".into(),
                    Value::String("gpt-4o-mini-2024-07-18".into()),
                );
            }
            serde_json::to_vec(&v).expect("json")
        })
    });
    let route = request::LlmRoute {
        format: Format::OpenAiChat,
        path_model: None,
        path_stream: false,
    };
    g.bench_function("scan+splice (the gateway's path)", |b| {
        b.iter(|| {
            let body = Bytes::from_static(black_box(BODY.as_bytes()));
            let parsed =
                request::parse_body(Format::OpenAiChat, body, &route, false).expect("parsed");
            encode::passthrough_body(Format::OpenAiChat, "gpt-4o-mini-2024-07-18", &parsed)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("resolve");
    for name in ["gpt-4o-mini", "openai/gpt-4.1", "fast", "claude-sonnet-4-5"] {
        let names = vec![name.to_owned()];
        g.bench_function(name, |b| b.iter(|| rt.candidates(black_box(&names))));
    }
    let fallback = vec![
        "fast".to_owned(),
        "openai/gpt-4o".to_owned(),
        "claude-sonnet-4-5".to_owned(),
    ];
    g.bench_function("fallback-list-3", |b| {
        b.iter(|| rt.candidates(black_box(&fallback)))
    });
    g.finish();
}

/// What the console's collection adds to each request in the logging phase
/// (aggregates, the record ring, per-key usage): `console::record`.
fn console_record(c: &mut Criterion) {
    let config = Config::from_yaml(CONFIG, &|_| None).expect("config");
    let rt = Runtime::new(config, None);
    let mut ctx = apiproxy::proxy::ctx::RequestCtx {
        format: Some(apiproxy_translate::Format::OpenAiChat),
        client_key_name: Some("alice".into()),
        requested_model: "fast".into(),
        provider: "openai".into(),
        upstream_model: "gpt-4o-mini".into(),
        status: 200,
        attempts: 1,
        upstream_wait: std::time::Duration::from_micros(800),
        first_byte: Some(std::time::Duration::from_micros(900)),
        usage: Some(apiproxy_translate::Usage {
            input_tokens: 40,
            output_tokens: 12,
            ..Default::default()
        }),
        ..Default::default()
    };
    c.bench_function("console_record", |b| {
        b.iter(|| {
            apiproxy::console::record(
                &rt,
                black_box(&mut ctx),
                std::time::Duration::from_micros(1000),
            )
        })
    });
}

/// The search that decides whether a body is walked for provider-side
/// references (`proxy::refs`), against the single Aho-Corasick automaton it
/// replaced, on the usual body and on one of 4 KiB (a longer conversation).
fn references(c: &mut Criterion) {
    let names = apiproxy::proxy::refs::NEEDLE_NAMES;
    let before = aho_corasick::AhoCorasick::new(names).expect("fixed patterns");
    let turn = r#"{"role":"user","content":"What is the weather in Paris today? Use the tool if you need to."},"#;
    let long = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{}{{"role":"user","content":"ok"}}]}}"#,
        turn.repeat(4096 / turn.len())
    );
    let mut g = c.benchmark_group("references");
    for (size, body) in [("short", BODY.as_bytes()), ("4KiB", long.as_bytes())] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("{size}: aho-corasick (before)"), |b| {
            b.iter(|| before.find(black_box(body)).is_some())
        });
        g.bench_function(format!("{size}: a substring search per name (now)"), |b| {
            b.iter(|| apiproxy::proxy::refs::references(black_box(body)))
        });
    }
}

/// The response cache's key on a miss (`proxy::cache::entry_key`: the body
/// read into its canonical encoding and hashed), beside SHA-256 of the
/// body's bytes as they came, the least any key of the body could cost:
/// the load bench's body, the usual body and one of 4 KiB.
fn cache_key(c: &mut Criterion) {
    use apiproxy::proxy::cache::{entry_key, Reader};
    use sha2::Digest;
    let small = r#"{"model": "bench-logical", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello in one sentence."}]}"#;
    let turn = r#"{"role":"user","content":"What is the weather in Paris today? Use the tool if you need to."},"#;
    let long = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{}{{"role":"user","content":"ok"}}]}}"#,
        turn.repeat(4096 / turn.len())
    );
    let mut g = c.benchmark_group("cache_key");
    for (size, body) in [
        ("load bench's", small.as_bytes()),
        ("short", BODY.as_bytes()),
        ("4KiB", long.as_bytes()),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("{size}: SHA-256 of the bytes (floor)"), |b| {
            b.iter(|| sha2::Sha256::digest(black_box(body)))
        });
        g.bench_function(format!("{size}: entry_key"), |b| {
            b.iter(|| {
                entry_key(
                    Reader::Key(Some("k-0123456789abcdef")),
                    "fast",
                    Format::OpenAiChat,
                    black_box(body),
                )
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = request, console_record, references, cache_key
}
criterion_main!(benches);
