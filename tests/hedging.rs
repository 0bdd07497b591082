//! Hedged requests (issue 9 item 5), through the real binary against mock
//! providers on loopback: a slow first attempt gets a second one on the
//! next upstream, the first good answer wins and the loser's connection is
//! closed; the budget, the single-candidate case and the metrics.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The slow upstream's delay: the tests never wait for it (its
/// connection is cut), so it is long enough that a loaded machine cannot
/// blur "answered by the hedge" and "answered by the slow one".
const ADMIN: &str = "admin-key-hedging-1";

const SLOW: Duration = Duration::from_secs(5);

/// An answer faster than this did not wait for [`SLOW`].
const WELL_BEFORE_SLOW: Duration = Duration::from_secs(4);

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// A logical model `pool` over `first` (weight so large it is always tried
/// first) and `second`, in weighted mode so nothing learned reorders them.
fn config(first: &MockProvider, second: &MockProvider, hedge: &str, routing: &str) -> String {
    format!(
        "auth:\n  open: true\n  admin_keys: [{ADMIN}]\nrouting:\n  scoring: {{ mode: weighted }}\n{routing}providers:\n  - {{ id: first, kind: openai, base_url: \"{}\", models: [m] }}\n  - {{ id: second, kind: openai, base_url: \"{}\", models: [m] }}\nmodels:\n  - name: pool\n{hedge}    upstreams:\n      - {{ provider: first, model: m, weight: 1000000 }}\n      - {{ provider: second, model: m, weight: 0.000001 }}\n",
        first.base_url(),
        second.base_url(),
    )
}

struct Answered {
    status: u16,
    provider: String,
    attempts: String,
    body: String,
    took: Duration,
}

async fn ask(gw: &Gateway, model: &str, stream: bool) -> Answered {
    let started = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-debug", "true")
        .json(&chat(model, stream))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (provider, attempts) = (header("x-debug-provider"), header("x-debug-attempts"));
    let body = r.text().await.expect("body");
    Answered {
        status,
        provider,
        attempts,
        body,
        took: started.elapsed(),
    }
}

/// The metrics once `apiproxy_hedges_total{provider, outcome}` reads
/// `want` (counted just after the answer); fails the test with the last
/// reading when it never does.
async fn metrics_when(gw: &Gateway, provider: &str, outcome: &str, want: f64) -> String {
    let (m, held) = poll(
        WAIT,
        || gw.metrics(),
        |m| hedges(m, provider, outcome) == want,
    )
    .await;
    assert!(
        held,
        "hedges{{provider={provider},outcome={outcome}}} read {}, never {want}:\n{m}",
        hedges(&m, provider, outcome)
    );
    m
}

fn hedges(metrics: &str, provider: &str, outcome: &str) -> f64 {
    prom::sum(
        metrics,
        "apiproxy_hedges_total",
        &[("provider", provider), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn a_slow_first_attempt_is_hedged_and_the_loser_is_cut_off() {
    let slow =
        MockProvider::always(Reply::json(200, openai_completion("m", "slow")).delay(SLOW)).await;
    let fast = MockProvider::always(Reply::json(200, openai_completion("m", "fast"))).await;
    let gw = Gateway::start(&config(
        &slow,
        &fast,
        "    hedge_after_ms: 200\n    hedge_non_stream: true\n",
        "  hedge_budget_percent: 100\n",
    ))
    .await;
    let a = ask(&gw, "pool", false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("fast"), "{}", a.body);
    assert_eq!(a.provider, "second");
    assert_eq!(a.attempts, "2", "the hedge counts as an attempt");
    assert!(
        a.took < WELL_BEFORE_SLOW,
        "the answer waited for the slow upstream: {:?}",
        a.took
    );
    assert_eq!((slow.count(), fast.count()), (1, 1));
    let cut = eventually(Duration::from_secs(10), || async {
        *slow.cancelled.lock().unwrap() == 1
    })
    .await;
    assert!(cut, "the slow upstream's connection was not closed");
    let m = metrics_when(&gw, "second", "won", 1.0).await;
    assert_eq!(hedges(&m, "second", "started"), 1.0, "{m}");
    assert_eq!(hedges(&m, "second", "won"), 1.0, "{m}");
    assert_eq!(hedges(&m, "second", "lost"), 0.0, "{m}");
    // The console's request record tells the story.
    let tried = attempt_history(&gw).await;
    let lines: Vec<(&str, &str)> = tried
        .iter()
        .map(|t| {
            (
                t["provider"].as_str().unwrap_or(""),
                t["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [("first", "hedge_cancelled"), ("second", "ok")],
        "{tried:?}"
    );
    assert!(tried[0]["ms"].as_f64().unwrap_or(0.0) >= 200.0, "{tried:?}");
}

/// The newest request record's attempt history (`/admin/requests/{id}`).
async fn attempt_history(gw: &Gateway) -> Vec<Value> {
    let admin_get = |path: String| async move { gw.get_json(&path, ADMIN).await };
    let (list, found) = poll(
        Duration::from_secs(10),
        || admin_get("/admin/requests".to_owned()),
        |l| l["requests"].get(0).is_some(),
    )
    .await;
    assert!(found, "no request record: {list}");
    let id = &list["requests"][0]["id"];
    let one = admin_get(format!("/admin/requests/{id}")).await;
    one["attempt_detail"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no attempt_detail: {one}"))
}

#[tokio::test]
async fn a_first_answer_before_the_hedges_cuts_the_hedge_off() {
    let first = MockProvider::always(
        // Long after the hedge (100 ms) has reached its upstream.
        Reply::json(200, openai_completion("m", "first")).delay(Duration::from_millis(1500)),
    )
    .await;
    let hedge =
        MockProvider::always(Reply::json(200, openai_completion("m", "hedge")).delay(SLOW)).await;
    let gw = Gateway::start(&config(
        &first,
        &hedge,
        "    hedge_after_ms: 100\n    hedge_non_stream: true\n",
        "  hedge_budget_percent: 100\n",
    ))
    .await;
    let a = ask(&gw, "pool", false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.provider, "first");
    assert!(a.body.contains("first"), "{}", a.body);
    assert_eq!(hedge.count(), 1, "the hedge was sent");
    let cut = eventually(Duration::from_secs(10), || async {
        *hedge.cancelled.lock().unwrap() == 1
    })
    .await;
    assert!(cut, "the hedge's connection was not closed");
    let m = metrics_when(&gw, "second", "lost", 1.0).await;
    assert_eq!(hedges(&m, "second", "won"), 0.0, "{m}");
}

#[tokio::test]
async fn a_failed_first_attempt_leaves_the_hedge_running() {
    // The first upstream fails after the hedge started; the hedge answers.
    // A plain failover would also end on `second` after two attempts: what
    // tells a hedge apart is that it reached its upstream before the first
    // attempt failed, and that it is counted as one.
    let first = MockProvider::always(
        Reply::json(500, r#"{"error":{"message":"boom"}}"#).delay(Duration::from_millis(1500)),
    )
    .await;
    let hedge = MockProvider::always(
        Reply::json(200, openai_completion("m", "hedge")).delay(Duration::from_millis(2500)),
    )
    .await;
    let gw = Gateway::start(&config(
        &first,
        &hedge,
        "    hedge_after_ms: 100\n    hedge_non_stream: true\n",
        "  hedge_budget_percent: 100\n",
    ))
    .await;
    let a = ask(&gw, "pool", false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.provider.as_str(), a.attempts.as_str()), ("second", "2"));
    assert_eq!(
        (first.count(), hedge.count()),
        (1, 1),
        "the hedge was not sent again after the first failed"
    );
    assert_eq!(*hedge.cancelled.lock().unwrap(), 0);
    // The first attempt failed 1.5 s after it arrived (the mock's delay):
    // the hedge was already at its upstream then.
    let (first_at, hedge_at) = (first.last().at, hedge.last().at);
    assert!(
        hedge_at < first_at + Duration::from_millis(1500),
        "the second attempt arrived {:?} after the first: a failover, not a hedge",
        hedge_at.duration_since(first_at)
    );
    let m = metrics_when(&gw, "second", "won", 1.0).await;
    assert_eq!(hedges(&m, "second", "started"), 1.0, "{m}");
    let tried = attempt_history(&gw).await;
    let providers: Vec<&str> = tried
        .iter()
        .map(|t| t["provider"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(providers, ["first", "second"], "{tried:?}");
    assert_eq!(tried[1]["outcome"], "ok", "{tried:?}");
}

#[tokio::test]
async fn a_streaming_request_is_hedged_on_its_first_byte() {
    // The slow upstream sends its head at once but its first event only
    // after 5 s: the head alone is not an answer.
    let slow = MockProvider::always(Reply::sse(&openai_stream("m", &["slow"])).pace(SLOW)).await;
    let fast = MockProvider::always(Reply::sse(&openai_stream("m", &["fast", "!"]))).await;
    let gw = Gateway::start(&config(
        &slow,
        &fast,
        "    hedge_after_ms: 200\n",
        "  hedge_budget_percent: 100\n",
    ))
    .await;
    let a = ask(&gw, "pool", true).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.provider, "second");
    let text: String = sse_data(&a.body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "fast!", "{}", a.body);
    assert!(a.body.trim_end().ends_with("data: [DONE]"), "{}", a.body);
    assert!(a.took < WELL_BEFORE_SLOW, "{:?}", a.took);
    let cut = eventually(Duration::from_secs(10), || async {
        *slow.cancelled.lock().unwrap() == 1
    })
    .await;
    assert!(cut, "the slow stream's connection was not closed");
}

#[tokio::test]
async fn no_hedge_past_the_budget() {
    let slow = MockProvider::always(
        Reply::json(200, openai_completion("m", "slow")).delay(Duration::from_millis(800)),
    )
    .await;
    let fast = MockProvider::always(Reply::json(200, openai_completion("m", "fast"))).await;
    let gw = Gateway::start(&config(
        &slow,
        &fast,
        "    hedge_after_ms: 100\n    hedge_non_stream: true\n",
        "  hedge_budget_percent: 0\n",
    ))
    .await;
    for _ in 0..2 {
        let a = ask(&gw, "pool", false).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!((a.provider.as_str(), a.attempts.as_str()), ("first", "1"));
    }
    assert_eq!(fast.count(), 0, "no hedge was sent");
    let m = metrics_when(&gw, "second", "skipped_budget", 2.0).await;
    assert_eq!(hedges(&m, "second", "started"), 0.0, "{m}");
}

#[tokio::test]
async fn the_default_budget_hedges_one_request_in_ten() {
    let slow = MockProvider::always(
        Reply::json(200, openai_completion("m", "slow")).delay(Duration::from_millis(400)),
    )
    .await;
    let fast = MockProvider::always(Reply::json(200, openai_completion("m", "fast"))).await;
    // Without the floor of hedges at once, the bucket alone decides.
    let gw = Gateway::start(&config(
        &slow,
        &fast,
        "    hedge_after_ms: 50\n    hedge_non_stream: true\n",
        "  hedge_min_concurrency: 0\n",
    ))
    .await;
    let mut hedged = 0;
    for _ in 0..10 {
        let a = ask(&gw, "pool", false).await;
        assert_eq!(a.status, 200, "{}", a.body);
        if a.attempts == "2" {
            hedged += 1;
        }
    }
    assert_eq!(hedged, 1, "10% of 10 requests");
    let m = metrics_when(&gw, "second", "skipped_budget", 9.0).await;
    assert_eq!(hedges(&m, "second", "started"), 1.0, "{m}");
}

/// A fresh gateway's buckets are empty, but `routing.hedge_min_concurrency`
/// (default 2) hedges may run at once whatever they hold: the first slow
/// requests after a start are hedged, two at a time and no more.
#[tokio::test]
async fn a_fresh_gateway_hedges_up_to_the_floor_at_once() {
    // Both slow enough that three requests' hedges overlap.
    let slow = MockProvider::always(
        Reply::json(200, openai_completion("m", "slow")).delay(Duration::from_secs(4)),
    )
    .await;
    let hedge = MockProvider::always(
        Reply::json(200, openai_completion("m", "hedge")).delay(Duration::from_secs(2)),
    )
    .await;
    let gw = Gateway::start(&config(
        &slow,
        &hedge,
        "    hedge_after_ms: 100\n    hedge_non_stream: true\n",
        "",
    ))
    .await;
    let (a, b, c) = tokio::join!(
        ask(&gw, "pool", false),
        ask(&gw, "pool", false),
        ask(&gw, "pool", false)
    );
    let mut by: Vec<&str> = [&a, &b, &c]
        .iter()
        .map(|x| {
            assert_eq!(x.status, 200, "{}", x.body);
            x.provider.as_str()
        })
        .collect();
    by.sort_unstable();
    assert_eq!(
        by,
        ["first", "second", "second"],
        "two hedges at once, no third"
    );
    let m = metrics_when(&gw, "second", "skipped_budget", 1.0).await;
    assert_eq!(hedges(&m, "second", "started"), 2.0, "{m}");
    assert_eq!(hedges(&m, "second", "won"), 2.0, "{m}");
    // Once those are over, the floor is free again: the next slow request
    // is hedged although the bucket (0.4 of a hedge) is still empty.
    let d = ask(&gw, "pool", false).await;
    assert_eq!((d.provider.as_str(), d.attempts.as_str()), ("second", "2"));
}

/// A non-streaming answer's first byte is the whole answer: such requests
/// are hedged only when the logical model says `hedge_non_stream: true`.
#[tokio::test]
async fn non_streaming_requests_are_hedged_only_when_the_model_asks() {
    let slow = MockProvider::start(|req, _| {
        if req.json()["stream"] == true {
            Reply::sse(&openai_stream("m", &["slow"])).pace(SLOW)
        } else {
            Reply::json(200, openai_completion("m", "slow")).delay(Duration::from_millis(1200))
        }
    })
    .await;
    let fast = MockProvider::start(|req, _| {
        if req.json()["stream"] == true {
            Reply::sse(&openai_stream("m", &["fast"]))
        } else {
            Reply::json(200, openai_completion("m", "fast"))
        }
    })
    .await;
    let gw = Gateway::start(&config(
        &slow,
        &fast,
        "    hedge_after_ms: 100\n",
        "  hedge_budget_percent: 100\n",
    ))
    .await;
    let a = ask(&gw, "pool", false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.provider.as_str(), a.attempts.as_str()), ("first", "1"));
    assert_eq!(fast.count(), 0, "a non-streaming request was hedged");
    let s = ask(&gw, "pool", true).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!((s.provider.as_str(), s.attempts.as_str()), ("second", "2"));
}

/// Both attempts of a hedged race are the key's: the one given up (the
/// provider read it) is charged its estimated input at its upstream's
/// price, in the key's tpm, its budget and the token and cost metrics.
#[tokio::test]
async fn both_sides_of_a_hedged_race_are_charged_to_the_key() {
    let slow =
        MockProvider::always(Reply::json(200, openai_completion("m", "slow")).delay(SLOW)).await;
    let fast = MockProvider::always(Reply::json(200, openai_completion("m", "fast"))).await;
    // A dollar per input token, output free: costs are token counts.
    let price = "pricing: { m: { input: 1000000, output: 0 } }";
    let gw = Gateway::start(&format!(
        "auth:\n  keys:\n    - {{ name: alice, key: alice-key-hedge, tpm: 100000, budget_usd: 1000000 }}\n  admin_keys: [{ADMIN}]\nrouting:\n  scoring: {{ mode: weighted }}\n  hedge_budget_percent: 100\nproviders:\n  - {{ id: first, kind: openai, base_url: \"{}\", models: [m], {price} }}\n  - {{ id: second, kind: openai, base_url: \"{}\", models: [m], {price} }}\nmodels:\n  - name: pool\n    hedge_after_ms: 200\n    hedge_non_stream: true\n    upstreams:\n      - {{ provider: first, model: m, weight: 1000000 }}\n      - {{ provider: second, model: m, weight: 0.000001 }}\n",
        slow.base_url(),
        fast.base_url(),
    ))
    .await;
    let body = chat("pool", false);
    // The gateway's input estimate: the body's bytes / 4, rounded up.
    let estimate = serde_json::to_vec(&body).unwrap().len().div_ceil(4) as f64;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key-hedge")
        .header("x-debug", "true")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-debug-provider"], "second");
    // The answer: 7 input and 3 output tokens ($7); the abandoned attempt:
    // `estimate` input tokens ($1 each).
    let m = gw
        .metrics_when(
            "apiproxy_tokens_total",
            &[("provider", "first"), ("direction", "input")],
            estimate,
        )
        .await;
    let sum = |name: &str, with: &[(&str, &str)]| prom::sum(&m, name, with);
    assert_eq!(
        sum(
            "apiproxy_tokens_total",
            &[("provider", "first"), ("direction", "input")]
        ),
        estimate,
        "{m}"
    );
    assert_eq!(
        sum(
            "apiproxy_tokens_total",
            &[("provider", "second"), ("direction", "input")]
        ),
        7.0
    );
    let first_cost = sum(
        "apiproxy_cost_usd_total",
        &[("provider", "first"), ("key", "alice")],
    );
    assert!(
        (first_cost - estimate).abs() < 1e-6,
        "{first_cost} vs {estimate}: {m}"
    );
    let (keys, charged) = poll(
        Duration::from_secs(10),
        || gw.get_json("/admin/keys", ADMIN),
        |v| {
            let k = &v["keys"][0];
            k["remaining"]["tpm"].as_f64() == Some(100000.0 - 10.0 - estimate)
                && k["budget"]["spent_usd"]
                    .as_f64()
                    .is_some_and(|s| (s - (7.0 + estimate)).abs() < 1e-3)
        },
    )
    .await;
    assert!(
        charged,
        "tpm and budget charged for both attempts ({estimate} + 10 tokens, ${}): {keys}",
        7.0 + estimate
    );
}

/// Each client key earns and spends its own share of the hedge budget: a
/// key's requests do not pay for another key's hedges.
#[tokio::test]
async fn each_key_draws_hedges_from_its_own_share() {
    let slow = MockProvider::always(
        Reply::json(200, openai_completion("m", "slow")).delay(Duration::from_millis(600)),
    )
    .await;
    let fast = MockProvider::always(Reply::json(200, openai_completion("m", "fast"))).await;
    // Half a hedge per request, no floor: every second request of a key.
    let gw = Gateway::start(&format!(
        "auth:\n  keys:\n    - {{ name: alice, key: alice-key-share }}\n    - {{ name: bob, key: bob-key-share }}\nrouting:\n  scoring: {{ mode: weighted }}\n  hedge_budget_percent: 50\n  hedge_min_concurrency: 0\nproviders:\n  - {{ id: first, kind: openai, base_url: \"{}\", models: [m] }}\n  - {{ id: second, kind: openai, base_url: \"{}\", models: [m] }}\nmodels:\n  - name: pool\n    hedge_after_ms: 50\n    hedge_non_stream: true\n    upstreams:\n      - {{ provider: first, model: m, weight: 1000000 }}\n      - {{ provider: second, model: m, weight: 0.000001 }}\n",
        slow.base_url(),
        fast.base_url(),
    ))
    .await;
    let hedged = |key: &'static str| {
        let url = format!("{}/v1/chat/completions", gw.url());
        async move {
            let r = client()
                .post(url)
                .bearer_auth(key)
                .header("x-debug", "true")
                .json(&chat("pool", false))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 200);
            r.headers()["x-debug-attempts"] == "2"
        }
    };
    // A gateway-wide bucket would hedge bob's first request with alice's
    // half and leave bob's second without one.
    let seen = [
        hedged("alice-key-share").await,
        hedged("bob-key-share").await,
        hedged("bob-key-share").await,
        hedged("alice-key-share").await,
    ];
    assert_eq!(seen, [false, false, true, true]);
}

#[tokio::test]
async fn a_single_candidate_is_never_hedged() {
    let only = MockProvider::always(
        Reply::json(200, openai_completion("m", "only")).delay(Duration::from_millis(600)),
    )
    .await;
    let config = format!(
        "routing:\n  hedge_budget_percent: 100\nproviders:\n  - {{ id: only, kind: openai, base_url: \"{}\", models: [m] }}\nmodels:\n  - name: solo\n    hedge_after_ms: 100\n    upstreams: [{{ provider: only, model: m }}]\n",
        only.base_url()
    );
    let gw = Gateway::start(&config).await;
    let a = ask(&gw, "solo", false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.provider.as_str(), a.attempts.as_str()), ("only", "1"));
    assert_eq!(only.count(), 1);
    // Hedges are counted with the request, after the answer: once the
    // request is counted, a hedge would be too.
    let m = gw
        .metrics_when("apiproxy_requests_total", &[("model", "solo")], 1.0)
        .await;
    assert!(!m.contains("apiproxy_hedges_total{"), "{m}");
}

#[tokio::test]
async fn hedge_settings_are_validated() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        "routing:\n  hedge_budget_percent: 101\n  hedge_min_concurrency: 1001\nproviders:\n  - { id: p, kind: openai, base_url: \"http://127.0.0.1:9\", models: [m] }\nmodels:\n  - name: pool\n    hedge_after_ms: 0\n    upstreams: [{ provider: p, model: m }]\n  - name: lazy\n    hedge_non_stream: true\n    upstreams: [{ provider: p, model: m }]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run apiproxy -t");
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("routing.hedge_budget_percent: must be 0 to 100"),
        "{err}"
    );
    assert!(
        err.contains("models[0].hedge_after_ms: must be positive"),
        "{err}"
    );
    assert!(
        err.contains("routing.hedge_min_concurrency: must be 0 to 1000"),
        "{err}"
    );
    assert!(
        err.contains("models[1].hedge_non_stream: hedges nothing without hedge_after_ms"),
        "{err}"
    );
}
