//! Cost and budgets through the real binary: the built-in price table and
//! `providers[].pricing`, the cost in `x-debug-cost`, the access log and the
//! metrics by key; budgets per key shared by two replicas on one Redis.

mod common;

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

    tokio::time::sleep(Duration::from_millis(400)).await; // the access log flushes every 200 ms
    let log = gw.log();
    assert!(
        log.contains(&format!("key=alice model=p/gpt-4o upstream=p/gpt-4o attempts=1 stream=false tokens=7/3 cost={expected:.8}")),
        "{log}"
    );
}

/// Each answer costs exactly $1 (10 tokens at $100,000 per million).
fn budget_config(redis_url: &str, up: &MockProvider) -> String {
    format!(
        r#"store:
  redis_url: "{redis_url}"
auth:
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
    for gw in [&a, &b, &a] {
        let r = spend(gw, "alice-key-123").await;
        assert_eq!(r.status(), 200);
        seen.push(remaining(&r));
        // The cost is added after the answer: let it land.
        tokio::time::sleep(Duration::from_millis(300)).await;
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
