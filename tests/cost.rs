//! Cost and budgets through the real binary: the built-in price table and
//! `providers[].pricing`, the cost in `x-debug-cost`, the access log and the
//! metrics by key; budgets per key shared by two replicas on one Redis.

use crate::common;

use std::time::Duration;

use apiproxy_store::testing::RedisServer;
use common::*;
use serde_json::{json, Value};

/// The mock answers 7 input and 3 output tokens.
async fn priced_gateway() -> (MockProvider, Gateway) {
    let up = MockProvider::start(|rec, _| {
        let model = rec.json()["model"].as_str().unwrap_or("m").to_owned();
        Reply::json(200, openai_completion(&model, "ok"))
    })
    .await;
    let gw = Gateway::start(&format!(
        r#"auth:
  keys:
    - {{ name: alice, key: alice-key-123 }}
providers:
  - {{ id: p, kind: openai, base_url: "{u}", models: [gpt-4o, custom] }}
  - id: q
    kind: openai
    base_url: "{u}"
    pricing:
      gpt-4o: {{ input: 1000000, output: 0 }}
      custom: {{ input: 100000, output: 200000, cached_input: 0 }}
"#,
        u = up.base_url()
    ))
    .await;
    (up, gw)
}

async fn chat(gw: &Gateway, model: &str, debug: bool) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key-123")
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
    if debug {
        r = r.header("x-debug", "true");
    }
    r.send().await.expect("request")
}

#[tokio::test]
async fn cost_shows_in_the_debug_header_the_access_log_and_the_metrics() {
    let (_up, gw) = priced_gateway().await;
    // Built-in table: gpt-4o is $2.50 in, $10 out per million tokens.
    let r = chat(&gw, "p/gpt-4o", true).await;
    assert_eq!(r.status(), 200);
    let expected = (7.0 * 2.5 + 3.0 * 10.0) / 1e6;
    assert_eq!(
        r.headers()["x-debug-cost"].to_str().unwrap(),
        format!("{expected:.8}")
    );
    // `providers[].pricing` overrides the table; matched after the last `/` too.
    let r = chat(&gw, "q/openai/gpt-4o", true).await;
    assert_eq!(r.headers()["x-debug-cost"].to_str().unwrap(), "7.00000000");
    // Without x-debug no debug header.
    let r = chat(&gw, "p/gpt-4o", false).await;
    assert!(r.headers().get("x-debug-cost").is_none());
    // An unpriced model has no cost.
    let r = chat(&gw, "p/custom", true).await;
    assert!(r.headers().get("x-debug-cost").is_none());

    let m = gw
        .metrics_until("apiproxy_cost_usd_total{key=\"alice\"")
        .await;
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("apiproxy_cost_usd_total")
                && l.contains("provider=\"q\"")
                && l.contains("key=\"alice\"")
        })
        .unwrap_or_else(|| panic!("no cost series for q/alice:\n{m}"));
    assert!(line.ends_with(" 7"), "{line}");

    // The access log is flushed every 200 ms: wait for the line (fails
    // the test with the log when it never comes).
    gw.expect_log(&format!(
        "key=alice model=p/gpt-4o upstream=p/gpt-4o attempts=1 stream=false tokens=7/3 cost={expected:.8}"
    ))
    .await;
}

const BUDGET_ADMIN: &str = "admin-key-cost-budget-1";

/// Each answer costs exactly $1 (10 tokens at $100,000 per million).
fn budget_config(redis_url: &str, up: &MockProvider) -> String {
    format!(
        r#"store:
  redis_url: "{redis_url}"
auth:
  admin_keys: [{BUDGET_ADMIN}]
  keys:
    - {{ name: alice, key: alice-key-123, budget_usd: 2.5, budget_period: day }}
    - {{ name: bob, key: bob-key-4567 }}
providers:
  - id: p
    kind: openai
    base_url: "{u}"
    pricing:
      m: {{ input: 100000, output: 100000 }}
"#,
        u = up.base_url()
    )
}

async fn spend(gw: &Gateway, key: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(&json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request")
}

fn remaining(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-budget-remaining-usd")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_a_budget() {
    let redis = RedisServer::start();
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let a = Gateway::start(&budget_config(&redis.url, &up)).await;
    let b = Gateway::start(&budget_config(&redis.url, &up)).await;

    let mut seen = Vec::new();
    for (n, gw) in [&a, &b, &a].into_iter().enumerate() {
        let r = spend(gw, "alice-key-123").await;
        assert_eq!(r.status(), 200);
        seen.push(remaining(&r));
        // The cost is settled after the answer: wait until the shared
        // store shows it, as read by the other replica.
        let other = if n == 1 { &a } else { &b };
        let dollars = (n + 1) as f64;
        let (keys, settled) = poll(
            WAIT,
            || other.get_json("/admin/keys", BUDGET_ADMIN),
            |v| {
                v["keys"].as_array().into_iter().flatten().any(|k| {
                    k["name"] == "alice"
                        && k["budget"]["spent_usd"]
                            .as_f64()
                            .is_some_and(|s| (s - dollars).abs() < 1e-6)
                })
            },
        )
        .await;
        assert!(settled, "${dollars} never showed as spent: {keys}");
    }
    assert_eq!(seen, ["2.50000000", "1.50000000", "0.50000000"]);

    // $3 spent of $2.50: refused on the other replica, in the client's shape.
    let r = spend(&b, "alice-key-123").await;
    assert_eq!(r.status(), 429);
    assert_eq!(remaining(&r), "0.00000000");
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget"),
        "{body}"
    );
    let r = client()
        .post(format!("{}/v1/messages", a.url()))
        .header("x-api-key", "alice-key-123")
        .json(&json!({"model": "p/m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    // The upstream saw only the three admitted requests.
    let generations = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(generations, 3);
    // Another key is not affected, and carries no budget header.
    let r = spend(&a, "bob-key-4567").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-budget-remaining-usd").is_none());
}

/// Price of model `m` at provider `p` in the budget tests: $0.10 a token,
/// in or out.
const TENTH: &str = "m: { input: 100000, output: 100000 }";

/// A chat body for `p/m` asking at most `max_tokens`, and the tokens the
/// gateway reserves for it (body bytes ÷ 4, rounded up, + `max_tokens`).
fn capped_body(max_tokens: u64) -> (Vec<u8>, u64) {
    let body = serde_json::to_vec(&json!({
        "model": "p/m", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    let reserved = body.len().div_ceil(4) as u64 + max_tokens;
    (body, reserved)
}

async fn send_body(gw: &Gateway, key: &str, body: &[u8]) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("request")
}

/// 20 concurrent requests of one budgeted key, spread over `gws`, on a
/// budget that holds two requests' reservations: each is admitted only
/// while spent + reserved is under the budget, so at most three are
/// served (the third reserving what is left), never all of them.
async fn budget_holds_under_concurrency(gws: &[&Gateway], up: &MockProvider) {
    let (body, _) = capped_body(5);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = format!("{}/v1/chat/completions", gws[i % gws.len()].url());
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth("alice-key-123")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, text)
        }));
    }
    let mut served = 0;
    for t in tasks {
        match t.await.expect("task") {
            (200, _) => served += 1,
            (429, text) => assert!(text.contains("budget"), "{text}"),
            (status, text) => panic!("unexpected {status}: {text}"),
        }
    }
    assert!(
        (1..=3).contains(&served),
        "{served} of 20 served on a budget for two"
    );
    let generations = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(generations, served, "refused requests never went upstream");
}

fn concurrent_budget_config(store: &str, up: &MockProvider, budget_usd: f64) -> String {
    format!(
        r#"{store}auth:
  keys:
    - {{ name: alice, key: alice-key-123, budget_usd: {budget_usd}, budget_period: day }}
providers:
  - {{ id: p, kind: openai, base_url: "{u}", pricing: {{ {TENTH} }} }}
"#,
        u = up.base_url()
    )
}

/// The mock answers slowly, so all 20 are admitted or refused before the
/// first answer settles, even on a loaded machine.
async fn slow_mock() -> MockProvider {
    MockProvider::always(
        Reply::json(200, openai_completion("m", "ok")).delay(Duration::from_secs(5)),
    )
    .await
}

#[tokio::test]
async fn concurrent_requests_cannot_overshoot_a_budget() {
    let up = slow_mock().await;
    let (_, reserved) = capped_body(5);
    let two = 2.0 * reserved as f64 * 0.1;
    let gw = Gateway::start(&concurrent_budget_config("", &up, two)).await;
    budget_holds_under_concurrency(&[&gw], &up).await;
}

#[tokio::test]
async fn two_replicas_on_one_redis_cannot_overshoot_a_budget() {
    let redis = RedisServer::start();
    let up = slow_mock().await;
    let (_, reserved) = capped_body(5);
    let two = 2.0 * reserved as f64 * 0.1;
    let store = format!("store:\n  redis_url: \"{}\"\n", redis.url);
    let cfg = concurrent_budget_config(&store, &up, two);
    let a = Gateway::start(&cfg).await;
    let b = Gateway::start(&cfg).await;
    budget_holds_under_concurrency(&[&a, &b], &up).await;
}

/// A budget smaller than one request's estimate still admits its first
/// request (the reservation is capped at what is left), and only that one.
#[tokio::test]
async fn a_small_budget_admits_its_first_request() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start(&concurrent_budget_config("", &up, 0.5)).await;
    let (body, _) = capped_body(100);
    let r = send_body(&gw, "alice-key-123", &body).await;
    assert_eq!(r.status(), 200);
    // The answer costs $1 (10 tokens): spent, the budget refuses from now on.
    let refused = eventually(Duration::from_secs(15), || async {
        send_body(&gw, "alice-key-123", &body).await.status() == 429
    })
    .await;
    assert!(refused, "the spent budget kept admitting");
    assert_eq!(up.count(), 1);
}

/// A budgeted key cannot use a model without a price (it could not be
/// charged): 403 naming it. Other keys can, and such answers are counted.
#[tokio::test]
async fn unpriced_models_are_refused_to_budgeted_keys_and_counted_for_others() {
    let up = MockProvider::always(Reply::json(200, openai_completion("custom", "ok"))).await;
    let gw = Gateway::start(&format!(
        r#"auth:
  keys:
    - {{ name: alice, key: alice-key-123, budget_usd: 100 }}
    - {{ name: bob, key: bob-key-4567 }}
providers:
  - {{ id: p, kind: openai, base_url: "{u}", models: [gpt-4o, custom] }}
"#,
        u = up.base_url()
    ))
    .await;
    let ask = |key: &'static str| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(key)
            .json(&json!({"model": "p/custom", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let r = ask("alice-key-123").await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`custom`") && message.contains("price") && message.contains("pricing"),
        "{body}"
    );
    assert_eq!(up.count(), 0, "nothing went upstream");
    // A priced model is fine for her.
    assert_eq!(chat(&gw, "p/gpt-4o", false).await.status(), 200);
    // bob has no budget: served, and counted as unpriced.
    assert_eq!(ask("bob-key-4567").await.unwrap().status(), 200);
    let m = gw
        .metrics_when(
            "apiproxy_unpriced_requests_total",
            &[("provider", "p"), ("model", "custom")],
            1.0,
        )
        .await;
    assert_eq!(
        common::prom::sum(
            &m,
            "apiproxy_unpriced_requests_total",
            &[("provider", "p"), ("model", "custom")]
        ),
        1.0,
        "{m}"
    );
}

/// While the shared store cannot be read, a budgeted key gets 503 (every
/// replica counting alone could spend the budget again); rate limits keep
/// their local fallback.
#[tokio::test]
async fn budgets_fail_closed_when_the_store_is_down() {
    let mut redis = RedisServer::start();
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start(&format!(
        r#"store:
  redis_url: "{r}"
auth:
  keys:
    - {{ name: alice, key: alice-key-123, budget_usd: 100 }}
    - {{ name: bob, key: bob-key-4567, rpm: 100 }}
providers:
  - {{ id: p, kind: openai, base_url: "{u}", pricing: {{ {TENTH} }} }}
"#,
        r = redis.url,
        u = up.base_url()
    ))
    .await;
    assert_eq!(spend(&gw, "alice-key-123").await.status(), 200);
    redis.stop();
    let r = spend(&gw, "alice-key-123").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("budget of this key cannot be checked"),
        "{body}"
    );
    assert_eq!(spend(&gw, "bob-key-4567").await.status(), 200);
    assert_eq!(up.count(), 2, "the refused request never went upstream");
}

/// 40 bytes of answer text: one delta of the mid-stream tests (10 tokens
/// by the estimate).
const WORD: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";

/// A client of `kind` (`openai` or `anthropic`, the provider's too) reads 5
/// deltas of a stream and leaves before its end, where the provider's final
/// usage comes. Its key (tpm 100,000, $1,000 budget, $1 a token) must then
/// be charged `input` tokens (the provider's, or `None`: the estimate) plus
/// the 50 output tokens relayed, for the tpm, the budget and the cost
/// metric alike, and the access log says the usage was estimated.
async fn leave_mid_stream(kind: &str, events: Vec<String>, input: Option<u64>) {
    let mut reply = Reply::sse(&events);
    // Everything up to the 5th delta comes at once; the rest (the final
    // usage among it) much later: the client is gone by then.
    let last_delta = events.iter().rposition(|e| e.contains(WORD)).unwrap();
    reply.chunks[last_delta + 1].0 = Duration::from_secs(60);
    let up = MockProvider::always(reply).await;
    let gw = Gateway::start(&format!(
        r#"limits:
  default_output_tokens: 1
auth:
  keys:
    - {{ name: alice, key: alice-key-123, tpm: 100000, budget_usd: 1000 }}
providers:
  - {{ id: p, kind: {kind}, base_url: "{u}", pricing: {{ m: {{ input: 1000000, output: 1000000 }} }} }}
"#,
        u = up.base_url()
    ))
    .await;
    let (path, body) = match kind {
        "anthropic" => (
            "/v1/messages",
            json!({"model": "p/m", "stream": true, "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
        _ => (
            "/v1/chat/completions",
            json!({"model": "p/m", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
    };
    let body = serde_json::to_vec(&body).unwrap();
    let send = || {
        client()
            .post(format!("{}{path}", gw.url()))
            .bearer_auth("alice-key-123")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let estimate = body.len().div_ceil(4) as u64;
    let input = input.unwrap_or(estimate);
    // Reserved: the input estimate and an output of 1 (`max_tokens` or
    // `default_output_tokens`); charged: the input and the 50 tokens
    // relayed. At $1 a token.
    let (reserved, charged) = (estimate + 1, input + 50);

    let mut r = send().await.expect("request");
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while seen.matches(WORD).count() < 5 {
            match r.chunk().await.expect("stream") {
                Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
                None => panic!("the stream ended early: {seen}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "5 deltas never arrived: {seen}");
    assert!(!seen.contains("\"output_tokens\":77"), "{seen}");
    assert!(!seen.contains("completion_tokens"), "{seen}");
    drop(r); // the client leaves before the final usage

    // The access line is written once the request is settled.
    let log = gw.log_until(" client_gone").await;
    assert!(
        log.contains(" client_gone"),
        "the request never ended:\n{log}"
    );

    // The next request sees both charged: the tpm window holds `charged`
    // (and the probe's own reservation), the budget `charged` dollars.
    let probe = send().await.expect("probe");
    assert_eq!(probe.status(), 200);
    let header = |name: &str| probe.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(
        header("x-ratelimit-remaining-tokens"),
        (100_000 - charged - reserved).to_string()
    );
    assert_eq!(
        header("x-budget-remaining-usd"),
        format!("{:.8}", 1000.0 - charged as f64)
    );
    let line = log
        .lines()
        .find(|l| l.contains(" client_gone"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "tokens={input}/50 cost={charged}.00000000 usage=estimated"
        )),
        "{line}"
    );
    assert!(charged > reserved);
    let cost = gw
        .metric("apiproxy_cost_usd_total", &[("key", "alice")])
        .await;
    assert_eq!(cost, charged as f64);
}

/// OpenAI reports usage only in the last event: a client that reads the
/// text and leaves before it would otherwise leave no usage at all.
#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_charged() {
    leave_mid_stream("openai", openai_stream("m", &[WORD; 5]), None).await;
}

/// Anthropic's first event reports the input and 1 output token, the rest
/// comes at the end: a client leaving before it is charged the output it
/// was relayed, not that 1.
#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_charged_past_a_partial_usage() {
    let mut events = vec![
        r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}"#.to_owned(),
        r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
    ];
    for _ in 0..5 {
        events.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{WORD}\"}}}}"
        ));
    }
    events.extend([
        r#"event: content_block_stop
data: {"type":"content_block_stop","index":0}"#
            .to_owned(),
        r#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":77}}"#
            .to_owned(),
        r#"event: message_stop
data: {"type":"message_stop"}"#
            .to_owned(),
    ]);
    leave_mid_stream("anthropic", events, Some(12)).await;
}

/// A budget charges a streamed answer what its usage event reports, and
/// refuses the next stream once spent, before anything goes upstream.
#[tokio::test]
async fn a_budget_charges_and_stops_streamed_answers() {
    const ADMIN: &str = "admin-key-cost-stream-1";
    // 5 input and 2 output tokens at $0.10 each: $0.70 a stream.
    let up = MockProvider::always(Reply::sse(&openai_stream("m", &["a", "b"]))).await;
    let gw = Gateway::start(&format!(
        r#"auth:
  admin_keys: [{ADMIN}]
  keys:
    - {{ name: alice, key: alice-key-123, budget_usd: 1, budget_period: day }}
providers:
  - {{ id: p, kind: openai, base_url: "{u}", pricing: {{ {TENTH} }} }}
"#,
        u = up.base_url()
    ))
    .await;
    let stream = || async {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth("alice-key-123")
            .json(&json!({"model": "p/m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let left = remaining(&r);
        (status, left, r.text().await.expect("body"))
    };
    let spent_becomes = |dollars: f64| {
        let gw = &gw;
        async move {
            let (keys, held) = poll(
                WAIT,
                || gw.get_json("/admin/keys", ADMIN),
                |v| {
                    v["keys"][0]["budget"]["spent_usd"]
                        .as_f64()
                        .is_some_and(|s| (s - dollars).abs() < 1e-6)
                },
            )
            .await;
            assert!(held, "the budget never showed ${dollars} spent: {keys}");
        }
    };
    let (status, left, body) = stream().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(left, "1.00000000");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    // The usage event's tokens, not the reservation (which was far more).
    spent_becomes(0.7).await;
    let (status, left, body) = stream().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(left, "0.30000000");
    spent_becomes(1.4).await;
    // Spent: the third stream is refused before it starts.
    let (status, left, body) = stream().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(left, "0.00000000");
    assert!(body.contains("budget"), "{body}");
    assert_eq!(up.count(), 2, "the refused stream never went upstream");
}
