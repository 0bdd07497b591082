//! The response cache through the real binary: identical requests (key
//! order and spacing aside) reach the provider once; a whole answer answers
//! a stream and the other way round in every client format, from a provider
//! of the same format (relayed as is) and of another (translated); one key
//! never reads another's entry; `Cache-Control` bypasses it; errors and cut
//! streams are not stored; entries expire; two replicas on one Redis share
//! an entry; an answer over `cache.max_entry_bytes` is not stored. Hits are
//! logged, counted, priced as saved and marked in the console's records.

use crate::common;

use apiproxy_store::testing::{query, RedisServer};
use common::wire::{self, Answer, Scenario, Wire, ALL};
use common::*;
use serde_json::{json, Value};

const ALICE: &str = "ck-cache-alice-0001";
const BOB: &str = "ck-cache-bob-0002";
const ADMIN: &str = "admin-cache-0003";

fn provider_id(k: Wire) -> &'static str {
    match k {
        Wire::Chat => "oai",
        Wire::Responses => "oresp",
        Wire::Anthropic => "ant",
        Wire::Gemini => "gem",
    }
}

fn upstream_model(k: Wire) -> &'static str {
    match k {
        Wire::Chat => "gpt-4o-mini",
        Wire::Responses => "gpt-4.1-mini",
        Wire::Anthropic => "claude-haiku-4-5",
        Wire::Gemini => "gemini-2.5-flash",
    }
}

/// The caching logical model routed to one provider (`suffix` picks the
/// mock's behaviour: "", "-400", "-cut").
fn cached(k: Wire, suffix: &str) -> String {
    format!("cached-{}{suffix}", provider_id(k))
}

/// One mock per provider kind and a gateway in front of them; `extra` is
/// added to the config (a `cache:` or `store:` section).
struct Setup {
    mocks: Vec<(Wire, MockProvider)>,
    gw: Gateway,
}

fn config(mocks: &[(Wire, MockProvider)], extra: &str) -> String {
    let mut cfg = format!(
        "routing:\n  breaker: {{ consecutive_failures: 1000000, min_requests: 1000000 }}\n  retry_rounds: 1\nauth:\n  keys:\n    - {{ name: alice, key: {ALICE} }}\n    - {{ name: bob, key: {BOB} }}\n  admin_keys: [{ADMIN}]\n{extra}providers:\n"
    );
    for (k, m) in mocks {
        let wire_api = if *k == Wire::Responses {
            ", wire_api: responses"
        } else {
            ""
        };
        let kind = match k {
            Wire::Chat | Wire::Responses => "openai",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
        };
        cfg += &format!(
            "  - {{ id: {}, kind: {kind}{wire_api}, base_url: \"{}\", api_keys: [\"pk-{}\"], models: [{}] }}\n",
            provider_id(*k),
            m.base_url(),
            provider_id(*k),
            upstream_model(*k)
        );
    }
    cfg += "models:\n";
    for (k, _) in mocks {
        for suffix in ["", "-400", "-cut"] {
            cfg += &format!(
                "  - name: {}\n    cache_ttl_seconds: 600\n    upstreams: [{{ provider: {}, model: {}{suffix} }}]\n",
                cached(*k, suffix),
                provider_id(*k),
                upstream_model(*k)
            );
        }
    }
    let (k, _) = &mocks[0];
    cfg += &format!(
        "  - name: brief\n    cache_ttl_seconds: 1\n    upstreams: [{{ provider: {}, model: {} }}]\n  - name: uncached\n    upstreams: [{{ provider: {}, model: {} }}]\n",
        provider_id(*k),
        upstream_model(*k),
        provider_id(*k),
        upstream_model(*k)
    );
    cfg
}

async fn mocks() -> Vec<(Wire, MockProvider)> {
    let mut mocks = Vec::new();
    for k in ALL {
        mocks.push((
            k,
            MockProvider::start(move |rec, _| wire::provider_reply(k, rec)).await,
        ));
    }
    mocks
}

impl Setup {
    async fn start(extra: &str) -> Setup {
        let mocks = mocks().await;
        let gw = Gateway::start(&config(&mocks, extra)).await;
        Setup { mocks, gw }
    }

    fn mock(&self, k: Wire) -> &MockProvider {
        &self.mocks.iter().find(|(w, _)| *w == k).expect("mock").1
    }
}

/// What came back: status, `x-apiproxy-cache`, content type, body.
struct Got {
    status: u16,
    cache: Option<String>,
    ct: String,
    body: String,
}

async fn send(gw: &Gateway, path: &str, headers: &[(String, String)], body: String) -> Got {
    let mut r = client()
        .post(format!("{}{path}", gw.url()))
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(k, v);
    }
    let resp = r.body(body).send().await.expect("request");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, cache, ct) = (
        resp.status().as_u16(),
        header("x-apiproxy-cache"),
        header("content-type").unwrap_or_default(),
    );
    Got {
        status,
        cache,
        ct,
        body: resp.text().await.expect("body"),
    }
}

async fn ask(gw: &Gateway, req: &wire::ClientRequest) -> Got {
    send(gw, &req.path, &req.headers, req.body.to_string()).await
}

/// The answer in the client's format (stream or whole), checked well formed.
fn answer_of(client: Wire, stream: bool, got: &Got) -> Answer {
    assert_eq!(got.status, 200, "{}", got.body);
    if stream {
        assert!(got.ct.starts_with("text/event-stream"), "{}", got.ct);
        wire::parse_stream_answer(client, &got.body)
            .unwrap_or_else(|e| panic!("{e}\nstream: {}", got.body))
    } else {
        assert!(got.ct.starts_with("application/json"), "{}", got.ct);
        let v: Value = serde_json::from_str(&got.body).expect("JSON");
        wire::parse_json_answer(client, &v).unwrap_or_else(|e| panic!("{e}\nbody: {}", got.body))
    }
}

/// Waits until the gateway counted `n` requests of `result` (the logging
/// phase, after the answer was stored).
async fn counted(gw: &Gateway, result: &str, n: f64) {
    let _ = gw
        .metrics_when("apiproxy_cache_requests_total", &[("result", result)], n)
        .await;
}

fn chat_body(model: &str, text: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0.7})
        .to_string()
}

fn bearer(key: &str) -> Vec<(String, String)> {
    vec![("authorization".to_owned(), format!("Bearer {key}"))]
}

#[tokio::test]
async fn identical_requests_reach_the_provider_once_whatever_their_key_order_and_spacing() {
    let s = Setup::start("").await;
    let model = cached(Wire::Chat, "");
    let first = send(
        &s.gw,
        "/v1/chat/completions",
        &bearer(ALICE),
        chat_body(&model, "hello"),
    )
    .await;
    assert_eq!(first.cache.as_deref(), Some("miss"));
    let a = answer_of(Wire::Chat, false, &first);
    counted(&s.gw, "miss", 1.0).await;
    // The same request, its members in another order and spaced out.
    let same = format!(
        "{{\n  \"temperature\" : 0.7 ,\n  \"messages\" : [ {{ \"content\" : \"hello\", \"role\" : \"user\" }} ],\n  \"model\" : \"{model}\"\n}}"
    );
    let second = send(&s.gw, "/v1/chat/completions", &bearer(ALICE), same).await;
    assert_eq!(second.cache.as_deref(), Some("hit"), "{}", second.body);
    assert_eq!(answer_of(Wire::Chat, false, &second), a, "the same answer");
    assert_eq!(s.mock(Wire::Chat).count(), 1, "the provider was asked once");

    // Logged, counted, priced as saved, and marked in the console.
    let m =
        s.gw.metrics_when(
            "apiproxy_cache_requests_total",
            &[("model", &model), ("result", "hit")],
            1.0,
        )
        .await;
    let saved = prom::sum(&m, "apiproxy_cache_saved_usd_total", &[("model", &model)]);
    assert!(saved > 0.0, "a hit of a priced model saves its price:\n{m}");
    let log = s.gw.log_until(" cache=hit").await;
    let hit_line = log
        .lines()
        .find(|l| l.contains(" cache=hit"))
        .expect("an access line");
    assert!(
        hit_line.contains("key=alice") && hit_line.contains(" 200 "),
        "{hit_line}"
    );
    assert!(log.contains(" cache=miss"), "the first was logged a miss");
    let records = s.gw.get_json("/admin/requests", ADMIN).await;
    let marks: Vec<&str> = records["requests"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["cache"].as_str())
        .collect();
    assert!(
        marks.contains(&"hit") && marks.contains(&"miss"),
        "{records}"
    );

    // A hit charges nothing: only the first answer's tokens are counted
    // (the mock reports 12 in, 5 out).
    let tokens = prom::sum(&m, "apiproxy_tokens_total", &[("provider", "oai")]);
    assert_eq!(tokens, 17.0, "{m}");
    // A model without caching carries no header.
    let plain = send(
        &s.gw,
        "/v1/chat/completions",
        &bearer(ALICE),
        chat_body("uncached", "hello"),
    )
    .await;
    assert_eq!((plain.status, plain.cache), (200, None));
}

#[tokio::test]
async fn streams_and_whole_answers_answer_each_other_in_every_client_format() {
    let s = Setup::start("").await;
    let mut failures = Vec::new();
    let mut misses = 0.0;
    for client in ALL {
        // The provider of the client's own format (relayed as is) and the
        // next one (translated).
        let next = ALL[(ALL.iter().position(|w| *w == client).unwrap_or(0) + 1) % ALL.len()];
        for provider in [client, next] {
            let model = cached(provider, "");
            // Whole first, then a stream; then (another question) the other way.
            for (scenario, first_stream) in [(Scenario::Text, false), (Scenario::Tool, true)] {
                let before = s.mock(provider).count();
                let first = ask(
                    &s.gw,
                    &wire::client_request(client, &model, scenario, first_stream, ALICE),
                )
                .await;
                let a = answer_of(client, first_stream, &first);
                misses += 1.0;
                counted(&s.gw, "miss", misses).await;
                let second = ask(
                    &s.gw,
                    &wire::client_request(client, &model, scenario, !first_stream, ALICE),
                )
                .await;
                let b = answer_of(client, !first_stream, &second);
                let what = format!(
                    "{} → {} {scenario:?}, {} then {}",
                    client.name(),
                    provider.name(),
                    if first_stream { "stream" } else { "whole" },
                    if first_stream { "whole" } else { "stream" }
                );
                if (first.cache.as_deref(), second.cache.as_deref()) != (Some("miss"), Some("hit"))
                {
                    failures.push(format!(
                        "{what}: cache {:?} then {:?}",
                        first.cache, second.cache
                    ));
                }
                if s.mock(provider).count() != before + 1 {
                    failures.push(format!(
                        "{what}: {} upstream requests",
                        s.mock(provider).count() - before
                    ));
                }
                // Gemini carries no call ids: the gateway names the calls
                // it stores, and a Gemini client's SDK does not read ids.
                let (a, b) = if client == Wire::Gemini {
                    (without_ids(a), without_ids(b))
                } else {
                    (a, b)
                };
                if a != b {
                    failures.push(format!(
                        "{what}: answers differ:\n {a:?}\n {b:?}\nsecond body: {}",
                        second.body
                    ));
                }
                if b.model != model
                    || b.text != scenario.shape().text()
                    || b.calls.len() != scenario.shape().calls().len()
                {
                    failures.push(format!("{what}: answer {b:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn without_ids(mut a: Answer) -> Answer {
    for c in &mut a.calls {
        c.id.clear();
    }
    a
}

#[tokio::test]
async fn one_key_never_reads_another_keys_entry() {
    let s = Setup::start("").await;
    let model = cached(Wire::Anthropic, "");
    let req = |key| wire::client_request(Wire::Anthropic, &model, Scenario::Text, false, key);
    assert_eq!(ask(&s.gw, &req(ALICE)).await.cache.as_deref(), Some("miss"));
    counted(&s.gw, "miss", 1.0).await;
    let bob = ask(&s.gw, &req(BOB)).await;
    assert_eq!(
        bob.cache.as_deref(),
        Some("miss"),
        "bob does not get alice's entry"
    );
    counted(&s.gw, "miss", 2.0).await;
    assert_eq!(ask(&s.gw, &req(ALICE)).await.cache.as_deref(), Some("hit"));
    assert_eq!(ask(&s.gw, &req(BOB)).await.cache.as_deref(), Some("hit"));
    assert_eq!(
        s.mock(Wire::Anthropic).count(),
        2,
        "one upstream request per key"
    );
}

#[tokio::test]
async fn with_global_scope_every_key_shares_an_entry() {
    let s = Setup::start("cache:\n  scope: global\n").await;
    let model = cached(Wire::Gemini, "");
    let req = |key| wire::client_request(Wire::Gemini, &model, Scenario::Text, false, key);
    assert_eq!(ask(&s.gw, &req(ALICE)).await.cache.as_deref(), Some("miss"));
    counted(&s.gw, "miss", 1.0).await;
    assert_eq!(ask(&s.gw, &req(BOB)).await.cache.as_deref(), Some("hit"));
    assert_eq!(s.mock(Wire::Gemini).count(), 1);
}

#[tokio::test]
async fn cache_control_bypasses_the_cache() {
    let s = Setup::start("").await;
    let model = cached(Wire::Chat, "");
    let body = || chat_body(&model, "bypass me");
    let with = |cc: &str| {
        let mut h = bearer(ALICE);
        h.push(("cache-control".to_owned(), cc.to_owned()));
        h
    };
    // no-store: neither read nor written.
    let got = send(&s.gw, "/v1/chat/completions", &with("no-store"), body()).await;
    assert_eq!((got.status, got.cache.as_deref()), (200, Some("bypass")));
    counted(&s.gw, "bypass", 1.0).await;
    let got = send(&s.gw, "/v1/chat/completions", &bearer(ALICE), body()).await;
    assert_eq!(got.cache.as_deref(), Some("miss"), "no-store wrote nothing");
    counted(&s.gw, "miss", 1.0).await;
    // Now cached; no-cache does not read it (and the fresh answer is stored).
    let got = send(
        &s.gw,
        "/v1/chat/completions",
        &with("max-age=0, No-Cache"),
        body(),
    )
    .await;
    assert_eq!(got.cache.as_deref(), Some("bypass"));
    counted(&s.gw, "bypass", 2.0).await;
    assert_eq!(s.mock(Wire::Chat).count(), 3, "every bypass went upstream");
    let got = send(&s.gw, "/v1/chat/completions", &bearer(ALICE), body()).await;
    assert_eq!(got.cache.as_deref(), Some("hit"));
    assert_eq!(s.mock(Wire::Chat).count(), 3);
}

#[tokio::test]
async fn errors_and_cut_streams_are_not_stored() {
    let s = Setup::start("").await;
    let failing = cached(Wire::Chat, "-400");
    for n in 1..=2 {
        let got = send(
            &s.gw,
            "/v1/chat/completions",
            &bearer(ALICE),
            chat_body(&failing, "x"),
        )
        .await;
        assert_eq!(got.status, 400, "{}", got.body);
        assert_ne!(got.cache.as_deref(), Some("hit"));
        assert_eq!(
            s.mock(Wire::Chat).count(),
            n,
            "each error came from upstream"
        );
        counted(&s.gw, "miss", n as f64).await;
    }
    let cut = cached(Wire::Anthropic, "-cut");
    let req = wire::client_request(Wire::Anthropic, &cut, Scenario::Text, true, ALICE);
    for n in 1..=2 {
        let got = ask(&s.gw, &req).await;
        assert_eq!(got.cache.as_deref(), Some("miss"), "{}", got.body);
        let (errors, _) = wire::stream_errors(Wire::Anthropic, &got.body);
        assert!(
            !errors.is_empty(),
            "the cut stream ends in an error: {}",
            got.body
        );
        assert_eq!(s.mock(Wire::Anthropic).count(), n);
        counted(&s.gw, "miss", 2.0 + n as f64).await;
    }
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let s = Setup::start("").await;
    let body = || chat_body("brief", "soon gone");
    assert_eq!(
        send(&s.gw, "/v1/chat/completions", &bearer(ALICE), body())
            .await
            .cache
            .as_deref(),
        Some("miss")
    );
    counted(&s.gw, "miss", 1.0).await;
    // `cache_ttl_seconds: 1`: a miss again once it has expired.
    let mut results = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = send(&s.gw, "/v1/chat/completions", &bearer(ALICE), body()).await;
        results.push(got.cache.clone().unwrap_or_default());
        if got.cache.as_deref() == Some("miss") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never a miss again within {WAIT:?}: {results:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(s.mock(Wire::Chat).count(), 2, "{results:?}");
}

#[tokio::test]
async fn an_answer_over_max_entry_bytes_is_not_stored() {
    // A provider whose answer is short or 4,000 characters long.
    let mock = MockProvider::start(|rec, _| {
        let long = String::from_utf8_lossy(&rec.body).contains("long");
        let text = if long {
            "x".repeat(4000)
        } else {
            "ok".to_owned()
        };
        Reply::json(200, openai_completion("m", &text))
    })
    .await;
    let gw = Gateway::start(&format!(
        "auth:\n  keys: [{{ name: alice, key: {ALICE} }}]\ncache:\n  max_entry_bytes: 2048\nproviders:\n  - {{ id: p, kind: openai, base_url: \"{}\", api_keys: [pk], models: [m] }}\nmodels:\n  - {{ name: c, cache_ttl_seconds: 600, upstreams: [{{ provider: p, model: m }}] }}\n",
        mock.base_url()
    ))
    .await;
    for (n, text) in [(1, "short"), (2, "long"), (3, "long")] {
        let got = send(
            &gw,
            "/v1/chat/completions",
            &bearer(ALICE),
            chat_body("c", text),
        )
        .await;
        assert_eq!((got.status, got.cache.as_deref()), (200, Some("miss")));
        assert_eq!(mock.count(), n);
        counted(&gw, "miss", n as f64).await;
    }
    let got = send(
        &gw,
        "/v1/chat/completions",
        &bearer(ALICE),
        chat_body("c", "short"),
    )
    .await;
    assert_eq!(
        got.cache.as_deref(),
        Some("hit"),
        "the short answer was stored"
    );
    assert_eq!(mock.count(), 3);
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_an_entry() {
    let redis = RedisServer::start();
    let mocks = mocks().await;
    let store = format!("store:\n  redis_url: {}\n", redis.url);
    let a = Gateway::start(&config(&mocks, &store)).await;
    let b = Gateway::start(&config(&mocks, &store)).await;
    let model = cached(Wire::Responses, "");
    let req = |stream| wire::client_request(Wire::Responses, &model, Scenario::Text, stream, ALICE);
    let first = ask(&a, &req(false)).await;
    assert_eq!(first.cache.as_deref(), Some("miss"));
    let whole = answer_of(Wire::Responses, false, &first);
    // Written in the background: wait until Redis holds the entry.
    let stored = eventually(WAIT, || async {
        matches!(
            query(redis.port, &["KEYS", "apiproxy:cache:*"]),
            Ok(apiproxy_store::testing::Reply::Array(keys)) if !keys.is_empty()
        )
    })
    .await;
    assert!(stored, "the entry never reached Redis");
    let second = ask(&b, &req(true)).await;
    assert_eq!(second.cache.as_deref(), Some("hit"), "{}", second.body);
    assert_eq!(answer_of(Wire::Responses, true, &second), whole);
    let mock = &mocks
        .iter()
        .find(|(w, _)| *w == Wire::Responses)
        .expect("mock")
        .1;
    assert_eq!(mock.count(), 1, "one upstream request for both replicas");
}

/// A request for several choices (OpenAI's `n`, Gemini's `candidateCount`)
/// is neither read from the cache nor stored: `n: 1` is one choice, and is
/// cached.
#[tokio::test]
async fn requests_for_several_choices_bypass_the_cache() {
    let s = Setup::start("").await;
    let model = cached(Wire::Chat, "");
    let with_n = |n: u64| {
        json!({"model": model, "messages": [{"role": "user", "content": "choose"}], "n": n})
            .to_string()
    };
    for _ in 0..2 {
        let got = send(&s.gw, "/v1/chat/completions", &bearer(ALICE), with_n(2)).await;
        assert_eq!((got.status, got.cache.as_deref()), (200, Some("bypass")));
    }
    assert_eq!(s.mock(Wire::Chat).count(), 2, "each went upstream");
    for want in ["miss", "hit"] {
        let got = send(&s.gw, "/v1/chat/completions", &bearer(ALICE), with_n(1)).await;
        assert_eq!((got.status, got.cache.as_deref()), (200, Some(want)));
    }
    assert_eq!(s.mock(Wire::Chat).count(), 3);

    let gem = cached(Wire::Gemini, "");
    let mut req = wire::client_request(Wire::Gemini, &gem, Scenario::Text, false, ALICE);
    req.body["generationConfig"] = json!({"candidateCount": 2});
    for _ in 0..2 {
        assert_eq!(ask(&s.gw, &req).await.cache.as_deref(), Some("bypass"));
    }
    assert_eq!(s.mock(Wire::Gemini).count(), 2);
    req.body["generationConfig"] = json!({"candidateCount": 1});
    for want in ["miss", "hit"] {
        assert_eq!(ask(&s.gw, &req).await.cache.as_deref(), Some(want));
    }
    assert_eq!(s.mock(Wire::Gemini).count(), 3);
}
