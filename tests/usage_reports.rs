//! Usage reports through the real binary: `GET /admin/usage` grouped by key, model, provider and day after
//! requests from two keys to two models (tokens from the mock's usage, cost from `providers[].pricing`), the CSV
//! download, counters kept across a restart with `store.path` and shared by two replicas on one Redis, bad
//! queries and non-admin callers refused.

use crate::cdp;
use crate::common;

use apiproxy_store::testing::RedisServer;
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-usage-1";
const ALICE: &str = "alice-key-usage-1";
const BOB: &str = "bob-key-usage-22";

/// `m1` answers 7 input / 3 output tokens ($0.1 a token: $1.00 an answer); `m2` 11 / 5 with 4 cached ($0.2 an
/// input token, output free: $2.20); `boom` a 500.
async fn upstream() -> MockProvider {
    MockProvider::start(|rec, _| {
        let model = rec.json()["model"].as_str().unwrap_or("").to_owned();
        let (input, output, cached) = match model.as_str() {
            "m1" => (7, 3, 0),
            "m2" => (11, 5, 4),
            _ => return Reply::json(500, r#"{"error":{"message":"boom","type":"server_error"}}"#),
        };
        Reply::json(
            200,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
                          "prompt_tokens_details": {"cached_tokens": cached}}
            })
            .to_string(),
        )
    })
    .await
}

fn config(up: &MockProvider, store: &str) -> String {
    format!(
        r#"{store}auth:
  admin_keys: [{ADMIN}]
  keys:
    - {{ name: alice, key: {ALICE} }}
    - {{ name: bob, key: {BOB} }}
providers:
  - id: p
    kind: openai
    base_url: "{u}"
    models: [m1, boom]
    pricing:
      m1: {{ input: 100000, output: 100000 }}
  - id: q
    kind: openai
    base_url: "{u}"
    models: [m2]
    pricing:
      m2: {{ input: 200000, output: 0, cached_input: 200000 }}
"#,
        u = up.base_url()
    )
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> u16 {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// alice: m1 ×2, m2 ×1, boom ×1 (an error: a request with no tokens); bob: m1 ×1, m2 ×2. Seven in all.
async fn traffic(gw: &Gateway) {
    for (key, model) in [
        (ALICE, "p/m1"),
        (ALICE, "p/m1"),
        (ALICE, "q/m2"),
        (BOB, "p/m1"),
        (BOB, "q/m2"),
        (BOB, "q/m2"),
    ] {
        assert_eq!(chat(gw, key, model).await, 200, "{key} {model}");
    }
    assert!(
        chat(gw, ALICE, "p/boom").await >= 500,
        "the failing model fails"
    );
}

async fn usage(gw: &Gateway, query: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut r = client().get(format!("{}/admin/usage{query}", gw.url()));
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `/admin/usage?{query}` until its totals count `requests` (the counters are written in the background).
#[must_use]
async fn usage_counting(gw: &Gateway, query: &str, requests: u64) -> Value {
    let (v, done) = poll(
        WAIT,
        || async { usage(gw, query, Some(ADMIN)).await.1 },
        |v: &Value| v["totals"]["requests"] == requests,
    )
    .await;
    assert!(done, "the usage never counted {requests} requests: {v}");
    v
}

fn row<'a>(v: &'a Value, field: &str, value: &str) -> &'a Value {
    v["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r[field] == value))
        .unwrap_or_else(|| panic!("no row {field}={value}: {v}"))
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-6)
}

/// `(requests, input, output, cached)` and the cost of a row.
fn check(r: &Value, counts: (u64, u64, u64, u64), cost: f64) {
    let got = (
        r["requests"].as_u64().unwrap_or(u64::MAX),
        r["input_tokens"].as_u64().unwrap_or(u64::MAX),
        r["output_tokens"].as_u64().unwrap_or(u64::MAX),
        r["cached_input_tokens"].as_u64().unwrap_or(u64::MAX),
    );
    assert_eq!(got, counts, "{r}");
    assert!(close(&r["cost_usd"], cost), "cost {cost}: {r}");
}

/// The report of [`traffic`] (or `times` of it), in every grouping.
async fn check_reports(gw: &Gateway, times: u64) {
    let t = times;
    let v = usage_counting(gw, "?group_by=key", 7 * t).await;
    check(
        row(&v, "key", "alice"),
        (4 * t, 25 * t, 11 * t, 4 * t),
        4.2 * t as f64,
    );
    check(
        row(&v, "key", "bob"),
        (3 * t, 29 * t, 13 * t, 8 * t),
        5.4 * t as f64,
    );
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(row(&v, "key", "alice")["key_id"].is_string(), "{v}");
    check(
        &v["totals"],
        (7 * t, 54 * t, 24 * t, 12 * t),
        9.6 * t as f64,
    );

    let v = usage_counting(gw, "?group_by=model", 7 * t).await;
    check(
        row(&v, "model", "p/m1"),
        (3 * t, 21 * t, 9 * t, 0),
        3.0 * t as f64,
    );
    check(
        row(&v, "model", "q/m2"),
        (3 * t, 33 * t, 15 * t, 12 * t),
        6.6 * t as f64,
    );
    check(row(&v, "model", "p/boom"), (t, 0, 0, 0), 0.0);

    let v = usage_counting(gw, "?group_by=provider", 7 * t).await;
    check(
        row(&v, "provider", "p"),
        (4 * t, 21 * t, 9 * t, 0),
        3.0 * t as f64,
    );
    check(
        row(&v, "provider", "q"),
        (3 * t, 33 * t, 15 * t, 12 * t),
        6.6 * t as f64,
    );

    let v = usage_counting(gw, "?group_by=day", 7 * t).await;
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(
        rows.len(),
        30,
        "the default range is the last 30 days, every day a row: {v}"
    );
    let today = v["to"].as_str().expect("to");
    check(
        row(&v, "day", today),
        (7 * t, 54 * t, 24 * t, 12 * t),
        9.6 * t as f64,
    );
    let empty = rows.iter().filter(|r| r["requests"] == 0).count();
    assert_eq!(empty, 29, "{v}");
}

#[tokio::test]
async fn reports_group_by_key_model_provider_and_day() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "")).await;
    traffic(&gw).await;
    check_reports(&gw, 1).await;
}

#[tokio::test]
async fn the_csv_download_has_a_header_and_a_line_per_group() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "")).await;
    traffic(&gw).await;
    let _ = usage_counting(&gw, "", 7).await;
    let r = client()
        .get(format!(
            "{}/admin/usage?group_by=model&format=csv",
            gw.url()
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"usage-")
            && disposition.ends_with("-by-model.csv\""),
        "{disposition}"
    );
    let body = r.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "model,requests,input_tokens,output_tokens,cached_input_tokens,cost_usd"
    );
    assert!(lines.contains(&"q/m2,3,33,15,12,6.6"), "{body}");
    assert!(lines.contains(&"p/m1,3,21,9,0,3"), "{body}");
    assert!(lines.contains(&"p/boom,1,0,0,0,0"), "{body}");
    assert_eq!(lines.len(), 4, "{body}");
}

#[tokio::test]
async fn bad_queries_and_non_admins_are_refused() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "")).await;
    for (query, says) in [
        ("?from=2026-02-30", "YYYY-MM-DD"),
        ("?to=yesterday", "YYYY-MM-DD"),
        ("?from=2026-03-01&to=2026-02-01", "after"),
        ("?from=2024-01-01&to=2025-12-31", "at most 366"),
        ("?group_by=color", "group_by"),
        ("?format=xml", "format"),
    ] {
        let (status, v) = usage(&gw, query, Some(ADMIN)).await;
        assert_eq!(status, 400, "{query}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{query}: {v}");
    }
    assert_eq!(usage(&gw, "", Some(ALICE)).await.0, 403, "a client key");
    assert_eq!(usage(&gw, "", None).await.0, 401, "no key");
    assert_eq!(usage(&gw, "", Some(ADMIN)).await.0, 200);
}

async fn stop(gw: &mut Gateway) {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    gw.expect_log("shutdown: shared state flushed").await;
    assert!(gw.wait_exit(WAIT).await.is_some(), "no exit:\n{}", gw.log());
}

#[tokio::test]
async fn counters_survive_a_restart_with_a_store_file() {
    let up = upstream().await;
    let dir = TempDir::new();
    let store = format!("store:\n  path: {}\n", dir.0.join("store.redb").display());
    let mut gw = Gateway::start(&config(&up, &store)).await;
    traffic(&gw).await;
    let _ = usage_counting(&gw, "", 7).await;
    stop(&mut gw).await;
    drop(gw);

    let gw = Gateway::start(&config(&up, &store)).await;
    let (status, v) = usage(&gw, "?group_by=key", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert_eq!(v["totals"]["requests"], 7, "kept across the restart: {v}");
    // And the new process adds to them.
    traffic(&gw).await;
    check_reports(&gw, 2).await;
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_the_counters() {
    let redis = RedisServer::start();
    let up = upstream().await;
    let store = format!(
        "store:\n  redis_url: \"{}\"\n  key_prefix: \"usage{}:\"\n",
        redis.url,
        free_port()
    );
    let a = Gateway::start(&config(&up, &store)).await;
    let b = Gateway::start(&config(&up, &store)).await;
    traffic(&a).await;
    traffic(&b).await;
    // Each replica reports what both counted.
    check_reports(&a, 2).await;
    check_reports(&b, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_page_in_a_real_browser() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "")).await;
    traffic(&gw).await;
    let _ = usage_counting(&gw, "", 7).await;
    let mut b = cdp::Browser::launch().await;
    b.viewport(1280, 900, false).await;
    b.navigate(&format!("{}/ui/", gw.url())).await;
    b.wait_for(
        "document.querySelector('#signin-view') && !document.querySelector('#signin-view').hidden",
    )
    .await;
    b.eval(&format!(
        "document.querySelector('#admin-key').value = '{ADMIN}'; document.querySelector('#signin').requestSubmit(); true"
    ))
    .await;
    b.wait_for("document.querySelector('#page').dataset.ready === 'overview'")
        .await;
    b.eval("location.hash = '#/usage'; true").await;
    b.wait_for("document.querySelector('#page').dataset.ready === 'usage'")
        .await;
    // By key (the default): one row per key, and three per-day charts.
    let keys = b
        .wait_for("[...document.querySelectorAll('#usage-rows tr')].map(r => r.dataset.group).sort().join(',') || null")
        .await;
    assert_eq!(keys, "alice,bob");
    let charts = b
        .eval("document.querySelectorAll('#usage-charts svg').length")
        .await;
    assert_eq!(charts, 3);
    let alice = b
        .eval("document.querySelector('#usage-rows tr[data-group=alice]').children[1].textContent")
        .await;
    assert_eq!(alice, "4");
    // By model.
    b.eval("{ const g = document.querySelector('#usage-group'); g.value = 'model'; g.dispatchEvent(new Event('change')); } true")
        .await;
    let models = b
        .wait_for("(() => { const g = [...document.querySelectorAll('#usage-rows tr')].map(r => r.dataset.group).sort().join(','); return g.includes('p/m1') ? g : null; })()")
        .await;
    assert_eq!(models, "p/boom,p/m1,q/m2");
    let shots =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    b.screenshot(&shots.join("usage.png")).await;
    // The CSV download fetches with the admin key.
    b.eval("document.querySelector('#usage-csv').click(); true")
        .await;
    let name = b
        .wait_for("document.querySelector('#usage-csv').dataset.downloaded || null")
        .await;
    assert!(
        name.as_str().is_some_and(|n| n.ends_with("-by-model.csv")),
        "{name}"
    );
}
