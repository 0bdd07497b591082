//! The web console through the real binary: its JSON admin API (records,
//! aggregates, keys made at run time and their persistence, redaction), and
//! its pages in a real headless Chromium against two replicas on one Redis.

use crate::cdp;
use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use apiproxy_store::testing::{RedisCluster, RedisSentinel, RedisServer};
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-console";
const PROVIDER_KEY: &str = "sk-provider-secret-9876";

/// Config body: one openai-kind upstream behind logical model `duo` (with a
/// price), config keys alice and bob, and `extra` appended.
fn config(up: &MockProvider, extra: &str) -> String {
    format!(
        "auth:\n  keys:\n    - {{ name: alice, key: alice-key }}\n    - {{ name: bob, key: bob-key }}\n  admin_keys: [{ADMIN}]\nproviders:\n  - id: a\n    kind: openai\n    base_url: \"{}\"\n    api_keys: [{PROVIDER_KEY}]\n    pricing: {{ m-a: {{ input: 1000, output: 2000 }} }}\nmodels:\n  - name: duo\n    upstreams: [{{ provider: a, model: m-a }}]\n{extra}",
        up.base_url()
    )
}

async fn upstream() -> MockProvider {
    MockProvider::always(Reply::json(200, openai_completion("m-a", "hello"))).await
}

async fn chat(gw: &Gateway, key: &str, session: Option<&str>) -> reqwest::Response {
    chat_model(gw, key, session, "duo").await
}

async fn chat_model(
    gw: &Gateway,
    key: &str,
    session: Option<&str>,
    model: &str,
) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key);
    if let Some(s) = session {
        r = r.header("x-session-id", s);
    }
    r.json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request")
}

async fn admin(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client()
        .request(method, format!("{}{path}", gw.url()))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.expect("admin request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(gw: &Gateway, path: &str) -> Value {
    let (status, v) = admin(gw, reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// The recent request records once the newest passes `done` (a record is
/// written in the logging phase, just after the client has its answer).
async fn records_until(gw: &Gateway, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = get(gw, "/admin/requests").await;
        if list["requests"].get(0).is_some_and(&done) {
            return list;
        }
        assert!(Instant::now() < deadline, "no such record: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `key` gets `want` from `gw` (keys made on one replica reach
/// others within the refresh bound, 1 s; 10 s here for a loaded machine).
async fn status_becomes(gw: &Gateway, key: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = chat(gw, key, None).await.status().as_u16();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "key still gets {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn admin_api_needs_the_admin_key() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "")).await;
    let url = format!("{}/admin/overview", gw.url());
    let none = client().get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let client_key = client()
        .get(&url)
        .bearer_auth("alice-key")
        .send()
        .await
        .unwrap();
    assert_eq!(client_key.status(), 403);
    let wrong = client()
        .get(&url)
        .bearer_auth("nope-nope-nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // The pages themselves hold no data and need no key; every file is compiled in.
    let page = client()
        .get(format!("{}/ui/", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/ui/app.js") && !html.contains("https://"));
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 301);
    assert_eq!(redirect.headers()["location"], "/ui/");
    let missing = client()
        .get(format!("{}/ui/nope.js", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// The traffic the console tests below read: three requests of alice's
/// in session s-1, one of bob's, one of alice's for an unknown model (404);
/// returns once every record is written, the newest 3 kept
/// (`console.recent_requests: 3`).
async fn alice_and_bob_traffic(gw: &Gateway) -> Value {
    for _ in 0..3 {
        assert_eq!(chat(gw, "alice-key", Some("s-1")).await.status(), 200);
    }
    // A record is written after its answer: wait for each before the next
    // request, so the ring's order is the requests' order on a busy machine.
    let alice_records = |list: &Value| {
        list["requests"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|r| r["key"] == "alice").count())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while alice_records(&get(gw, "/admin/requests").await) < 3 {
        assert!(Instant::now() < deadline, "alice's three records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(chat(gw, "bob-key", None).await.status(), 200);
    records_until(gw, |r| r["key"] == "bob").await;
    let unknown = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key")
        .json(&json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    records_until(gw, |r| r["status"] == 404).await
}

#[tokio::test]
async fn records_are_kept_newest_first_and_tailed_live() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "console:\n  recent_requests: 3\n")).await;

    // A live tail filtered to bob, opened before the traffic.
    let tail = client()
        .get(format!("{}/admin/requests/tail?key=bob", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 200);
    assert_eq!(tail.headers()["content-type"], "text/event-stream");

    let list = alice_and_bob_traffic(&gw).await;

    // The tail delivers bob's request, and only his.
    let mut stream = tail.bytes_stream();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: request") {
        use futures_util::StreamExt;
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.next())
            .await
            .expect("the tail sent bob's request")
            .expect("tail open")
            .expect("tail chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let event: Value = serde_json::from_str(
        seen.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line"),
    )
    .unwrap();
    assert_eq!(event["key"], "bob");
    assert_eq!(event["provider"], "a");
    assert_eq!(event["status"], 200);

    // The ring keeps the newest 3 (console.recent_requests), newest first.
    let reqs = list["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 3, "{list}");
    assert_eq!(reqs[0]["status"], 404);
    assert_eq!(reqs[0]["provider"], "");
    assert_eq!(reqs[1]["key"], "bob");
    let first = &reqs[2];
    assert_eq!(first["key"], "alice");
    assert_eq!(first["upstream_model"], "m-a");
    assert_eq!(first["input_tokens"], 7);
    assert_eq!(first["output_tokens"], 3);
    // 7 * 1000 / 1e6 + 3 * 2000 / 1e6
    assert!(
        (first["cost_usd"].as_f64().unwrap() - 0.013).abs() < 1e-9,
        "{first}"
    );
    assert_eq!(first["session"], "s-1");
    assert!(
        first.get("body").is_none(),
        "bodies are not kept unless capture_bodies is on"
    );
    let one = get(&gw, &format!("/admin/requests/{}", first["id"])).await;
    assert_eq!(one["id"], first["id"]);
    let errors = get(&gw, "/admin/requests?status=4xx").await;
    assert_eq!(errors["requests"].as_array().unwrap().len(), 1);
    let (bad, _) = admin(
        &gw,
        reqwest::Method::GET,
        "/admin/requests?status=zzz",
        None,
    )
    .await;
    assert_eq!(bad, 400);
    let (gone, _) = admin(&gw, reqwest::Method::GET, "/admin/requests/1", None).await;
    assert_eq!(gone, 404, "the oldest records left the ring");
}

#[tokio::test]
async fn aggregates_sessions_and_key_usage_count_every_request_and_hide_secrets() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "console:\n  recent_requests: 3\n")).await;
    alice_and_bob_traffic(&gw).await;

    // The hour's aggregates count every request, not only the kept records.
    let o = get(&gw, "/admin/overview").await;
    assert_eq!(o["hour"]["requests"], 5);
    assert_eq!(o["hour"]["client_errors"], 1);
    assert_eq!(o["hour"]["input_tokens"], 28);
    assert!((o["hour"]["cost_usd"].as_f64().unwrap() - 0.052).abs() < 1e-9);
    assert!(o["hour"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(o["points"].as_array().unwrap().len(), 360);

    // Logical models: all of duo's traffic went to its one upstream.
    let m = get(&gw, "/admin/models").await;
    let u = &m["logical_models"][0]["upstreams"][0];
    // Counted over the kept records (the ring holds 3, two reached the upstream).
    assert_eq!(u["requests"], 2);
    assert_eq!(u["live_share"], 1.0);
    assert_eq!(u["configured_share"], 1.0);

    // Providers: keys masked to the last four; config: no secret anywhere.
    let p = get(&gw, "/admin/providers").await;
    assert_eq!(p["providers"][0]["api_keys"][0], "…9876");
    assert_eq!(p["providers"][0]["status"], "healthy");
    let c = get(&gw, "/admin/config").await;
    let text = c.to_string();
    for secret in [PROVIDER_KEY, ADMIN, "alice-key"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(c["console"]["recent_requests"], 3);
    assert_eq!(c["providers"][0]["api_keys"][0], "…9876");

    // Sessions: the binding and the context of s-1.
    let s = get(&gw, "/admin/sessions/s-1").await;
    assert_eq!(s["binding"]["provider_id"], "a");
    assert_eq!(s["binding"]["message_count"], 3);
    assert_eq!(s["context"]["owner"], "alice");
    assert_eq!(s["context"]["history"].as_array().unwrap().len(), 3);

    // Usage per key.
    let k = get(&gw, "/admin/keys").await;
    let alice = k["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "alice")
        .unwrap();
    assert_eq!(alice["usage"]["requests"], 4);
    assert_eq!(alice["usage"]["errors"], 1);
}

#[tokio::test]
async fn unauthenticated_requests_are_counted_but_not_recorded() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "console:\n  recent_requests: 3\n")).await;
    assert_eq!(chat(&gw, "alice-key", None).await.status(), 200);
    records_until(&gw, |r| r["key"] == "alice").await;
    let tail = client()
        .get(format!("{}/admin/requests/tail", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 200);
    for i in 0..12 {
        let mut r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "duo", "messages": [{"role": "user", "content": "x"}]}));
        if i % 2 == 0 {
            r = r.bearer_auth("not-a-key");
        }
        assert_eq!(r.send().await.unwrap().status(), 401);
    }
    let (overview, counted) = poll(
        Duration::from_secs(10),
        || get(&gw, "/admin/overview"),
        |v| v["unauthenticated"] == 12,
    )
    .await;
    assert!(counted, "twelve 401s counted: {overview}");
    assert_eq!(overview["hour"]["requests"], 13, "{overview}");
    let list = get(&gw, "/admin/requests").await;
    let reqs = list["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1, "only alice's record: {list}");
    assert_eq!(reqs[0]["key"], "alice");
    // The tail's first event is bob's request, sent after the 401s.
    assert_eq!(chat(&gw, "bob-key", None).await.status(), 200);
    let mut stream = tail.bytes_stream();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: request") {
        use futures_util::StreamExt;
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.next())
            .await
            .expect("the tail sent a request")
            .expect("tail open")
            .expect("tail chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let event: Value = serde_json::from_str(
        seen.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line"),
    )
    .unwrap();
    assert_eq!(event["key"], "bob", "{seen}");
}

/// The console, the key's budget and the cost metric price a request the
/// same way: here from the built-in table (no `pricing` configured).
#[tokio::test]
async fn the_console_prices_requests_as_budgets_and_metrics_do() {
    let up = MockProvider::always(Reply::json(200, openai_completion("gpt-4o", "hi"))).await;
    let gw = Gateway::start(&format!(
        "auth:\n  keys:\n    - {{ name: alice, key: alice-key, budget_usd: 100 }}\n  admin_keys: [{ADMIN}]\nproviders:\n  - {{ id: p, kind: openai, base_url: \"{}\", models: [gpt-4o] }}\n",
        up.base_url()
    ))
    .await;
    assert_eq!(
        chat_model(&gw, "alice-key", None, "p/gpt-4o")
            .await
            .status(),
        200
    );
    // Built-in table: gpt-4o is $2.50 in, $10 out per million tokens.
    let expected = (7.0 * 2.5 + 3.0 * 10.0) / 1e6;
    let list = records_until(&gw, |r| r["key"] == "alice").await;
    let recorded = list["requests"][0]["cost_usd"].as_f64();
    assert!(
        recorded.is_some_and(|c| (c - expected).abs() < 1e-12),
        "the console's cost: {list}"
    );
    let m = gw
        .metrics_when(
            "apiproxy_cost_usd_total",
            &[("key", "alice")],
            expected * 0.99,
        )
        .await;
    let metric = prom::sum(&m, "apiproxy_cost_usd_total", &[("key", "alice")]);
    assert!((metric - expected).abs() < 1e-12, "{metric}: {m}");
    let keys = get(&gw, "/admin/keys").await;
    let spent = keys["keys"][0]["budget"]["spent_usd"].as_f64();
    // The budget counts whole micro-dollars.
    assert!(
        spent.is_some_and(|s| (s - expected).abs() < 1e-6),
        "the budget's spend: {keys}"
    );
    let overview = get(&gw, "/admin/overview").await;
    let hour = overview["hour"]["cost_usd"].as_f64();
    assert!(
        hour.is_some_and(|c| (c - expected).abs() < 1e-12),
        "the overview's cost: {overview}"
    );
}

/// A Redis password given in the URL's query (`?password=`, `?pass=`) is
/// hidden like one in its user info: in the console's config view and in
/// every log line.
#[tokio::test]
async fn a_redis_password_in_the_query_is_hidden() {
    let up = upstream().await;
    // Nothing listens there: the store falls back to local state.
    let url = format!(
        "redis://127.0.0.1:{}/0?password=query-secret-42&pass=other-secret-43",
        free_port()
    );
    let gw = Gateway::start(&config(&up, &format!("store:\n  redis_url: \"{url}\"\n"))).await;
    let c = get(&gw, "/admin/config").await;
    let shown = c["store"]["redis_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        shown,
        url.replace("query-secret-42", "***")
            .replace("other-secret-43", "***"),
        "{c}"
    );
    assert_eq!(chat(&gw, "alice-key", None).await.status(), 200);
    // The lines that could carry the URL: the store's warning that Redis
    // is unreachable, and the request's access line (flushed every 200
    // ms). Only once both are written does their absence say anything.
    gw.expect_log(" access] POST /v1/chat/completions").await;
    let (log, warned) = poll(
        WAIT,
        || async { gw.log() },
        |l| {
            l.lines()
                .any(|l| l.contains("WARN") && l.to_lowercase().contains("redis"))
        },
    )
    .await;
    assert!(warned, "no warning about the unreachable Redis:\n{log}");
    assert!(
        log.contains("Redis at 127.0.0.1:"),
        "the warning names the store:\n{log}"
    );
    for secret in ["query-secret-42", "other-secret-43"] {
        assert!(!c.to_string().contains(secret), "{c}");
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test]
async fn collection_can_be_turned_off() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "console:\n  collect: false\n")).await;
    assert_eq!(chat(&gw, "alice-key", None).await.status(), 200);
    // The metrics are counted in the same step of the logging phase, just
    // before the console's collection: once they show the request, the
    // console has had its chance to record it.
    let _counted = gw.metrics_until("status=\"200\"").await;
    let o = get(&gw, "/admin/overview").await;
    assert_eq!(o["collecting"], false);
    assert_eq!(o["hour"]["requests"], 0);
    assert!(get(&gw, "/admin/requests").await["requests"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bodies_are_kept_redacted_and_bounded_only_when_asked() {
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        "log:\n  capture_bodies: true\nconsole:\n  max_body_chars: 60\n",
    ))
    .await;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key")
        .json(&json!({"model": "duo", "api_key": "sk-in-the-body-123", "messages": [{"role": "user", "content": "a long question ".repeat(20)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list = records_until(&gw, |r| r["status"] == 200).await;
    let body = list["requests"][0]["body"]
        .as_str()
        .unwrap_or_else(|| panic!("a captured body in {list}"))
        .to_owned();
    assert!(!body.contains("sk-in-the-body-123"), "{body}");
    assert!(body.contains("[redacted]"), "{body}");
    assert_eq!(
        body.chars().count(),
        61,
        "60 characters and an ellipsis: {body}"
    );
}

/// A captured body is kept `console.capture_ttl_seconds`; its record stays.
#[tokio::test]
async fn captured_bodies_are_dropped_past_their_age() {
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        "log:\n  capture_bodies: true\nconsole:\n  capture_ttl_seconds: 5\n",
    ))
    .await;
    assert_eq!(chat(&gw, "alice-key", None).await.status(), 200);
    let list = records_until(&gw, |r| r["status"] == 200).await;
    let id = list["requests"][0]["id"].clone();
    let path = format!("/admin/requests/{id}");
    // Read just after the record is written: well within its 5 s, which no
    // stall of a loaded machine crosses.
    let kept = get(&gw, &path).await;
    assert!(kept["body"].is_string(), "captured at first: {kept}");
    let (one, dropped) = poll(
        WAIT,
        || get(&gw, &path),
        |r| r["id"] == id && r.get("body").is_none(),
    )
    .await;
    assert!(dropped, "the body outlived its age: {one}");
    let list = get(&gw, "/admin/requests").await;
    assert_eq!(list["requests"][0]["id"], id, "the record stays: {list}");
    assert!(list["requests"][0].get("body").is_none(), "{list}");
}

#[tokio::test]
async fn keys_made_at_run_time_work_persist_and_can_be_revoked() {
    let up = upstream().await;
    let dir = TempDir::new();
    let store_path = dir.0.join("store.redb");
    let body = config(&up, &format!("store:\n  path: {}\n", store_path.display()));
    let gw = Gateway::start(&body).await;

    let (status, made) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "ci-bot", "rpm": 2})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(made["last4"], key[key.len() - 4..]);
    assert_eq!(chat(&gw, &key, None).await.status(), 200);
    assert_eq!(chat(&gw, &key, None).await.status(), 200);
    let limited = chat(&gw, &key, None).await;
    assert_eq!(
        limited.status(),
        429,
        "rpm 2 holds for a key made at run time"
    );

    // Names are unique across both sources; bad bodies are refused.
    for (body, want) in [
        (json!({"name": "ci-bot"}), 409),
        (json!({"name": "alice"}), 409),
        (json!({"name": "bad name"}), 400),
        (json!({"name": "x", "rpm": -1}), 400),
        (json!({"rpm": 1}), 400),
    ] {
        let (got, v) = admin(
            &gw,
            reqwest::Method::POST,
            "/admin/keys",
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, want, "{body} → {v}");
    }
    let (got, _) = admin(
        &gw,
        reqwest::Method::PATCH,
        "/admin/keys/alice",
        Some(json!({"rpm": 1})),
    )
    .await;
    assert_eq!(got, 409, "config keys are changed in the config file");

    // Lifting the limit takes effect at once; the list shows the key masked.
    let (got, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        "/admin/keys/ci-bot",
        Some(json!({"rpm": null, "models": ["duo"]})),
    )
    .await;
    assert_eq!(got, 200, "{v}");
    assert_eq!(chat(&gw, &key, None).await.status(), 200);
    let list = get(&gw, "/admin/keys").await;
    assert_eq!(list["store"], "file");
    let listed = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci-bot")
        .unwrap()
        .clone();
    assert_eq!(listed["source"], "console");
    assert_eq!(listed["rpm"], Value::Null);
    assert!(
        !list.to_string().contains(&key),
        "the key is shown once only"
    );

    // The embedded store keeps it across a restart.
    drop(gw);
    let gw = Gateway::start(&body).await;
    assert_eq!(chat(&gw, &key, None).await.status(), 200, "{}", gw.log());

    let (got, _) = admin(&gw, reqwest::Method::DELETE, "/admin/keys/ci-bot", None).await;
    assert_eq!(got, 204);
    assert_eq!(chat(&gw, &key, None).await.status(), 401);
    let (got, _) = admin(&gw, reqwest::Method::DELETE, "/admin/keys/ci-bot", None).await;
    assert_eq!(got, 404);
    drop(gw);
    let gw = Gateway::start(&body).await;
    assert_eq!(
        chat(&gw, &key, None).await.status(),
        401,
        "revoked stays revoked"
    );
}

#[tokio::test]
async fn a_key_made_at_run_time_can_have_a_budget() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "")).await;
    for (body, want) in [
        (json!({"name": "b1", "budget_usd": -1}), 400),
        (json!({"name": "b1", "budget_usd": "ten"}), 400),
        (json!({"name": "b1", "budget_period": "week"}), 400),
    ] {
        let (got, v) = admin(
            &gw,
            reqwest::Method::POST,
            "/admin/keys",
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, want, "{body} → {v}");
    }
    // Each answer costs a few cents at m-a's price: a one-cent monthly
    // budget lasts one request.
    let (status, made) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "capped", "budget_usd": 0.01, "budget_period": "month"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["budget_usd"], 0.01);
    assert_eq!(made["budget_period"], "month");
    let key = made["key"].as_str().unwrap().to_owned();
    let first = chat(&gw, &key, None).await;
    assert_eq!(first.status(), 200);
    assert!(
        first.headers().contains_key("x-budget-remaining-usd"),
        "{:?}",
        first.headers()
    );
    // The spend is settled just after the answer: the budget then refuses.
    status_becomes(&gw, &key, 429).await;
    let refused = chat(&gw, &key, None).await;
    assert!(refused.headers().contains_key("retry-after"));
    let v: Value = refused.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("budget"),
        "{v}"
    );
    let listed = get(&gw, "/admin/keys").await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "capped")
        .unwrap()
        .clone();
    assert_eq!(listed["budget"]["period"], "month", "{listed}");
    assert_eq!(listed["budget"]["limit_usd"], 0.01, "{listed}");
    assert!(
        listed["budget"]["spent_usd"].as_f64().unwrap() > 0.01,
        "{listed}"
    );
    assert_eq!(listed["budget"]["remaining_usd"], 0.0, "{listed}");
    // Raising it lets the key spend again; other keys never had a budget.
    let (got, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        "/admin/keys/capped",
        Some(json!({"budget_usd": 100})),
    )
    .await;
    assert_eq!(got, 200, "{v}");
    assert_eq!(v["budget_usd"], 100.0);
    assert_eq!(chat(&gw, &key, None).await.status(), 200);
    let alice = get(&gw, "/admin/keys").await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(alice["budget"], Value::Null, "{alice}");
}

#[tokio::test]
async fn a_request_record_lists_every_attempt() {
    let up = upstream().await;
    let down =
        MockProvider::always(Reply::json(503, r#"{"error":{"message":"overloaded"}}"#)).await;
    let gw = Gateway::start(&config(
        &up,
        "  - name: failing\n    upstreams: [{ provider: down, model: m-d }]\n",
    )
    .replace(
        "models:\n",
        &format!(
            "  - {{ id: down, kind: openai, base_url: \"{}\", api_keys: [sk-down-1234] }}\nmodels:\n",
            down.base_url()
        ),
    ))
    .await;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key")
        .json(&json!({"model": "failing", "models": ["duo"], "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list = records_until(&gw, |r| r["key"] == "alice").await;
    let id = &list["requests"][0]["id"];
    let one = get(&gw, &format!("/admin/requests/{id}")).await;
    let tried = one["attempt_detail"].as_array().expect("attempt_detail");
    assert_eq!(tried.len(), 2, "{one}");
    assert_eq!(tried[0]["provider"], "down", "{one}");
    assert_eq!(tried[0]["model"], "m-d");
    assert_eq!(tried[0]["outcome"], "5xx");
    assert_eq!(tried[0]["status"], 503);
    assert_eq!(tried[0]["sent"], true);
    assert!(tried[0]["ms"].as_f64().unwrap() > 0.0, "{one}");
    assert_eq!(tried[1]["provider"], "a");
    assert_eq!(tried[1]["outcome"], "ok");
    assert_eq!(tried[1]["status"], 200);
    assert_eq!(one["attempts"], 2);
}

/// A key made on one replica works on the other, is changed and revoked
/// everywhere: the store at `url` (a Cluster or Sentinels) carries it.
async fn keys_are_shared_through(url: &str) {
    let up = upstream().await;
    let body = config(&up, &format!("store:\n  redis_url: \"{url}\"\n"));
    let gw1 = Gateway::start(&body).await;
    let gw2 = Gateway::start(&body).await;
    let (status, made) = admin(
        &gw1,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "shared", "rpm": 100})),
    )
    .await;
    assert_eq!(status, 201, "{made}\n{}", gw1.log());
    let key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw1, "/admin/keys").await["store"], "redis");
    status_becomes(&gw2, &key, 200).await;
    let (status, v) = admin(&gw2, reqwest::Method::DELETE, "/admin/keys/shared", None).await;
    assert_eq!(status, 204, "{v}");
    status_becomes(&gw1, &key, 401).await;
    assert!(
        !gw1.log().contains("unavailable") && !gw2.log().contains("unavailable"),
        "{}\n{}",
        gw1.log(),
        gw2.log()
    );
}

#[tokio::test]
async fn keys_made_at_run_time_live_in_a_redis_cluster() {
    let cluster = RedisCluster::start();
    keys_are_shared_through(&cluster.url).await;
    let names = cluster.keys();
    // The hash went with its last key; its version counter stays, tagged
    // into the hash's slot (both are written in one transaction).
    assert!(
        names.iter().any(|k| k == "{apiproxy:console:keys}:version"),
        "{names:?}"
    );
}

#[tokio::test]
async fn keys_made_at_run_time_live_behind_sentinels() {
    let sentinel = RedisSentinel::start();
    keys_are_shared_through(&sentinel.url).await;
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// Opens a page of the console (by its hash) and waits until it has drawn.
async fn open(b: &mut cdp::Browser, page: &str) {
    b.eval(&format!("location.hash = '#/{page}'; true")).await;
    b.wait_for(&format!(
        "document.querySelector('#page').dataset.ready === '{}'",
        page.split('/').next().unwrap_or(page)
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser_with_two_replicas() {
    let redis = RedisServer::start();
    let up = upstream().await;
    let body = config(
        &up,
        &format!(
            "store:\n  redis_url: {}\n  key_prefix: \"ui{}:\"\n",
            redis.url,
            std::process::id()
        ),
    );
    let gw1 = Gateway::start(&body).await;
    let gw2 = Gateway::start(&body).await;
    for _ in 0..3 {
        assert_eq!(chat(&gw1, "alice-key", Some("sess-ui")).await.status(), 200);
    }
    let shots = screenshots();

    let mut b = cdp::Browser::launch().await;
    b.viewport(1280, 800, false).await;
    b.navigate(&format!("{}/ui/", gw1.url())).await;
    b.wait_for(
        "document.querySelector('#signin-view') && !document.querySelector('#signin-view').hidden",
    )
    .await;
    b.eval(&format!(
        "document.querySelector('#admin-key').value = '{ADMIN}'; document.querySelector('#signin').requestSubmit(); true"
    ))
    .await;

    // Overview: the requests made show in the hour's numbers and charts.
    b.wait_for("document.querySelector('#page').dataset.ready === 'overview'")
        .await;
    // What the page shows, as a reader sees it: the stat's text, and the
    // drawn lines of the charts.
    let stat = |label: &str| {
        format!(
            "[...document.querySelectorAll('.stat')].find(c => c.querySelector('.l').textContent === '{label}')?.querySelector('.v').textContent"
        )
    };
    let shown = b
        .wait_for(&format!("{} === '3'", stat("requests (last hour)")))
        .await;
    assert_eq!(shown, true);
    let errors = b.eval(&stat("error rate (5xx, hour)")).await;
    assert!(
        errors.as_str().is_some_and(|t| t.starts_with('0')),
        "{errors}"
    );
    let tokens = b.eval(&stat("tokens in / out")).await;
    assert!(
        tokens
            .as_str()
            .is_some_and(|t| t != "0 / 0" && t.contains(" / ")),
        "{tokens}"
    );
    // Each chart's lines (all its series: Latency's p50 and p99 share one
    // scale, and only the larger reaches the top), as the heights they draw
    // (0: the axis, 96: the chart's max); the legend says the chart's name.
    let heights = b
        .eval(
            "Object.fromEntries([...document.querySelectorAll('#charts .chart')].map(c => [
                c.querySelector('h3 span').textContent,
                [...c.querySelectorAll('polyline')].flatMap(l => l.getAttribute('points').split(' ')
                    .map(xy => Math.round(99 - Number(xy.split(',')[1]))))
            ]))",
        )
        .await;
    let drawn = |title: &str| -> Vec<i64> {
        heights[title]
            .as_array()
            .unwrap_or_else(|| panic!("no chart {title:?}: {heights}"))
            .iter()
            .map(|h| h.as_i64().unwrap_or(-1))
            .collect()
    };
    for title in ["Requests per second", "Latency", "Tokens", "Cost"] {
        let line = drawn(title);
        assert!(
            line.iter().any(|h| *h >= 90) && line.iter().all(|h| (0..=96).contains(h)),
            "{title} draws the requests up to its max: {line:?}"
        );
    }
    let errors = drawn("Error rate");
    assert!(errors.iter().all(|h| *h == 0), "no 5xx: {errors:?}");
    b.screenshot(&shots.join("overview.png")).await;

    // Providers: health and the key masked to its last four.
    open(&mut b, "providers").await;
    let keys = b
        .eval("document.querySelector('[data-provider=a] .keys').textContent")
        .await;
    assert_eq!(keys, "…9876");
    let text = b.eval("document.body.innerText").await;
    assert!(!text.as_str().unwrap().contains(PROVIDER_KEY));
    assert!(text.as_str().unwrap().contains("healthy"));
    b.screenshot(&shots.join("providers.png")).await;

    // Logical models: duo's one upstream served all of its traffic.
    open(&mut b, "models").await;
    let share = b
        .eval("document.querySelector('[data-model=duo] .live-share').textContent")
        .await;
    assert_eq!(share, "100 %");
    b.screenshot(&shots.join("models.png")).await;

    // Requests: a request made now appears in the live tail; a click shows it.
    open(&mut b, "requests").await;
    b.wait_for(
        "document.querySelector('#tail') && document.querySelectorAll('#tail tr').length === 3",
    )
    .await;
    b.wait_for("document.querySelector('h2 .live:not(.off)')")
        .await;
    assert_eq!(chat(&gw1, "bob-key", None).await.status(), 200);
    let row = b
        .wait_for("[...document.querySelectorAll('#tail tr')].find(tr => tr.textContent.includes('bob'))?.dataset.id")
        .await;
    b.eval(&format!(
        "document.querySelector('#tail tr[data-id=\"{}\"]').click(); true",
        row.as_str().unwrap()
    ))
    .await;
    b.wait_for(&format!(
        "document.querySelector('#request-detail').dataset.id === '{}'",
        row.as_str().unwrap()
    ))
    .await;
    let detail = b
        .eval("document.querySelector('#request-detail').innerText")
        .await;
    let detail = detail.as_str().unwrap();
    assert!(
        detail.contains("bob") && detail.contains("m-a") && detail.contains("$0.013"),
        "{detail}"
    );
    let tried = b
        .eval("[...document.querySelectorAll('#attempt-detail tbody tr')].map(tr => tr.innerText).join('|')")
        .await;
    let tried = tried.as_str().unwrap();
    assert!(
        tried.contains("a/m-a") && tried.contains("ok") && tried.contains("200"),
        "{tried:?} in {detail} / {}",
        get(&gw1, &format!("/admin/requests/{}", row.as_str().unwrap())).await
    );
    b.screenshot(&shots.join("requests.png")).await;

    // Sessions: the binding made by alice's requests.
    open(&mut b, "sessions/sess-ui").await;
    let binding = b
        .wait_for("document.querySelector('#binding')?.innerText")
        .await;
    assert!(binding.as_str().unwrap().contains("a/m-a"), "{binding}");
    b.screenshot(&shots.join("sessions.png")).await;

    // Keys: make one; it works on this replica and on the other one at once.
    open(&mut b, "keys").await;
    b.eval("document.querySelector('#new-name').value = 'ui-key'; document.querySelector('#new-rpm').value = '50'; document.querySelector('#new-budget').value = '5'; document.querySelector('#new-period').value = 'month'; document.querySelector('#create-key').requestSubmit(); true")
        .await;
    let key = b
        .wait_for("document.querySelector('#new-key')?.textContent")
        .await;
    let key = key.as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-apx-"), "{key}");
    b.wait_for("document.querySelector('#keys tr[data-key=ui-key]')")
        .await;
    let left = b
        .eval("document.querySelector('#keys tr[data-key=ui-key] .budget-left').textContent")
        .await;
    assert_eq!(left.as_str(), Some("$5 (per month)"), "{left}");
    b.screenshot(&shots.join("keys.png")).await;
    assert_eq!(chat(&gw1, &key, None).await.status(), 200);
    status_becomes(&gw2, &key, 200).await;

    // Revoke it (two clicks): it stops working on both replicas.
    b.eval("document.querySelector('#keys tr[data-key=ui-key] .revoke').click(); true")
        .await;
    b.eval("document.querySelector('#keys tr[data-key=ui-key] .revoke').click(); true")
        .await;
    b.wait_for("document.querySelector('#key-notice').textContent.includes('revoked')")
        .await;
    b.wait_for("!document.querySelector('#keys tr[data-key=ui-key]')")
        .await;
    assert_eq!(chat(&gw1, &key, None).await.status(), 401);
    status_becomes(&gw2, &key, 401).await;

    // Config: effective, no secret in it.
    open(&mut b, "config").await;
    let cfg = b
        .eval("document.querySelector('#config-json').textContent")
        .await;
    let cfg = cfg.as_str().unwrap();
    assert!(cfg.contains("\"duo\"") && cfg.contains("…9876"));
    for secret in [PROVIDER_KEY, ADMIN, "alice-key"] {
        assert!(!cfg.contains(secret), "{secret} shown");
    }
    b.screenshot(&shots.join("config.png")).await;

    // Phone width: every page fits without sideways scrolling of the page.
    b.viewport(390, 844, true).await;
    for page in [
        "overview",
        "providers",
        "models",
        "requests",
        "keys",
        "config",
    ] {
        open(&mut b, page).await;
        let fits = b
            .eval("document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await;
        assert_eq!(fits, true, "{page} overflows at phone width");
    }
    open(&mut b, "overview").await;
    b.screenshot(&shots.join("overview-phone.png")).await;

    // Nothing went wrong in the browser.
    b.eval("1").await;
    assert!(
        b.errors.is_empty(),
        "browser console errors: {:#?}",
        b.errors
    );
}

#[test]
fn console_limits_are_checked_by_dash_t() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        "console:\n  recent_requests: 0\n  max_body_chars: 0\n  nope: 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("console"), "{err}");
    std::fs::write(
        &path,
        "console:\n  recent_requests: 0\n  max_body_chars: 0\n  capture_ttl_seconds: 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("console.recent_requests: must be between 1 and 1000000"),
        "{err}"
    );
    assert!(
        err.contains("console.max_body_chars: must be positive"),
        "{err}"
    );
    assert!(
        err.contains("console.capture_ttl_seconds: must be between 1 and 604800"),
        "{err}"
    );
}

/// Makes the README's picture, `docs/console.png`: the overview after a few
/// minutes of mixed traffic over two upstreams (some failing, some unknown
/// models). By hand: `cargo test --test console docs_screenshot -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/console.png; takes about three minutes"]
async fn docs_screenshot() {
    let fast = MockProvider::start(|_, n| {
        Reply::json(200, openai_completion("gpt-4o-mini", "hi"))
            .delay(Duration::from_millis(20 + (n as u64 * 37) % 60))
    })
    .await;
    let slow = MockProvider::start(|_, n| {
        if n % 17 == 5 {
            Reply::json(500, r#"{"error":{"message":"overloaded"}}"#)
        } else {
            Reply::json(200, openai_completion("gpt-4o", "hello"))
                .delay(Duration::from_millis(90 + (n as u64 * 53) % 150))
        }
    })
    .await;
    let body = format!(
        "auth:\n  keys:\n    - {{ name: web, key: web-key }}\n  admin_keys: [{ADMIN}]\nproviders:\n  - id: openai\n    kind: openai\n    base_url: \"{}\"\n    api_keys: [sk-openai-demo-0001]\n    retryable_status: \"429\"\n    pricing: {{ gpt-4o-mini: {{ input: 150, output: 600 }} }}\n  - id: azure\n    kind: openai\n    base_url: \"{}\"\n    api_keys: [sk-azure-demo-0002]\n    retryable_status: \"429\"\n    pricing: {{ gpt-4o: {{ input: 2500, output: 10000 }} }}\nmodels:\n  - name: fast\n    upstreams: [{{ provider: openai, model: gpt-4o-mini, weight: 3 }}, {{ provider: azure, model: gpt-4o, weight: 1 }}]\n",
        fast.base_url(),
        slow.base_url()
    );
    let gw = Gateway::start(&body).await;
    let deadline = Instant::now() + Duration::from_secs(170);
    let mut i = 0u32;
    while Instant::now() < deadline {
        let burst = 2 + ((f64::from(i) / 9.0).sin().abs() * 10.0) as usize;
        let calls = (0..burst).map(|_| chat_model(&gw, "web-key", None, "fast"));
        futures_util::future::join_all(calls).await;
        if i.is_multiple_of(5) {
            let _ = client()
                .post(format!("{}/v1/chat/completions", gw.url()))
                .bearer_auth("web-key")
                .json(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        i += 1;
    }
    let mut b = cdp::Browser::launch().await;
    b.viewport(1280, 800, false).await;
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
    b.screenshot(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console.png"))
        .await;
    b.eval("1").await;
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}
