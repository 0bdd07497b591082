//! Shared state through the real binary: rate limits, session stickiness,
//! context snippets; the same behaviour on the embedded store and on Redis,
//! two replicas on one Redis acting as one, and Redis outages.

use crate::common;

use std::time::{Duration, Instant};

use apiproxy_store::testing::{RedisCluster, RedisSentinel, RedisServer};
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-0001";

/// Config body: two openai-kind upstreams behind logical model `duo`, keys
/// alice and dave (rpm 5), bob (tpm 15) and carol, optional Redis.
fn config(a: &MockProvider, b: &MockProvider, redis: Option<&str>) -> String {
    let store = redis
        .map(|url| {
            format!(
                "store:\n  redis_url: {url}\n  key_prefix: \"t{}:\"\n",
                std::process::id()
            )
        })
        .unwrap_or_default();
    format!(
        "{store}auth:\n  keys:\n    - {{ name: alice, key: alice-key, rpm: 5 }}\n    - {{ name: bob, key: bob-key, tpm: 15 }}\n    - {{ name: carol, key: carol-key }}\n    - {{ name: dave, key: dave-key, rpm: 5 }}\n  admin_keys: [{ADMIN}]\nproviders:\n  - {{ id: a, kind: openai, base_url: \"{}\", api_keys: [ka], models: [ma] }}\n  - {{ id: b, kind: openai, base_url: \"{}\", api_keys: [kb], models: [mb] }}\nmodels:\n  - name: duo\n    upstreams: [{{ provider: a, model: ma }}, {{ provider: b, model: mb }}]\n",
        a.base_url(),
        b.base_url()
    )
}

async fn mocks() -> (MockProvider, MockProvider) {
    (
        MockProvider::always(Reply::json(200, openai_completion("ma", "answer from a"))).await,
        MockProvider::always(Reply::json(200, openai_completion("mb", "answer from b"))).await,
    )
}

async fn chat(gw: &Gateway, key: &str, session: Option<&str>, text: &str) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .header("x-debug", "true");
    if let Some(s) = session {
        r = r.header("x-session-id", s);
    }
    r.json(&json!({"model": "duo", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .expect("request")
}

/// The sixth request of alice within a minute is refused, whichever
/// gateway of `gws` gets it.
async fn rpm_limit_holds(gws: &[&Gateway]) {
    for i in 0..5 {
        let r = chat(gws[i % gws.len()], "alice-key", None, "hi").await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-ratelimit-limit-requests"], "5");
        assert_eq!(
            r.headers()["x-ratelimit-remaining-requests"],
            (4 - i).to_string().as_str()
        );
    }
    let r = chat(gws[5 % gws.len()], "alice-key", None, "hi").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // Another key is not affected.
    assert_eq!(chat(gws[0], "carol-key", None, "hi").await.status(), 200);
}

/// How long state written after an answer (tokens, bindings, context) may
/// take to show: generous, for a busy machine; a check that holds returns at
/// once.
const PATIENCE: Duration = Duration::from_secs(15);

/// bob's tpm of 15: each answer reports 10 tokens, so once two answers are
/// counted (on whichever replica) his next request is refused.
async fn tpm_limit_counts_reported_usage(gws: &[&Gateway]) {
    let last = gws[gws.len() - 1];
    assert_eq!(chat(gws[0], "bob-key", None, "hi").await.status(), 200);
    // At most 10 of 15 used: let through once the first answer's token
    // reservation (its body's size, over 15) is settled to its usage (10).
    let deadline = Instant::now() + PATIENCE;
    let r = loop {
        let r = chat(last, "bob-key", None, "hi").await;
        if r.status() == 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "15");
    // Tokens are counted once an answer is done, so the refusal comes as
    // soon as both answers are counted (polled, bounded).
    let mut refused = None;
    for _ in 0..60 {
        let r = chat(gws[0], "bob-key", None, "hi").await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = refused.expect("bob refused once 20 of his 15 tokens were counted");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
    // The refusal holds on the other replica too.
    assert_eq!(chat(last, "bob-key", None, "hi").await.status(), 429);
}

/// The session binding `sid` as the admin endpoint of `gw` shows it
/// (`None`: 404).
async fn binding(gw: &Gateway, sid: &str) -> Option<Value> {
    let r = client()
        .get(format!("{}/routing/sessions/{sid}", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("binding");
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200);
    Some(r.json().await.expect("binding JSON"))
}

/// Waits until `gw` shows session `sid` bound to `provider` with at least
/// `messages` messages; returns the binding.
async fn bound(gw: &Gateway, sid: &str, provider: &str, messages: u64) -> Value {
    let (last, ok) = poll(
        PATIENCE,
        || binding(gw, sid),
        |b| {
            b.as_ref().is_some_and(|b| {
                b["provider_id"] == provider && b["message_count"].as_u64() >= Some(messages)
            })
        },
    )
    .await;
    assert!(
        ok,
        "session {sid} bound to {provider} with {messages} messages: {last:?}"
    );
    last.expect("a binding")
}

/// A session sticks to the upstream that served it first, on every replica.
async fn sessions_stick(gws: &[&Gateway], sid: &str) -> String {
    let first = chat(gws[0], "carol-key", Some(sid), "first question").await;
    assert_eq!(first.status(), 200);
    let provider = first.headers()["x-debug-provider"]
        .to_str()
        .unwrap()
        .to_owned();
    // The binding is claimed before the answer's first byte, so it is
    // already there on the other replica.
    bound(gws[gws.len() - 1], sid, &provider, 1).await;
    for i in 0..8 {
        let r = chat(gws[i % gws.len()], "carol-key", Some(sid), &format!("q{i}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-debug-provider"],
            provider.as_str(),
            "request {i} of the session"
        );
    }
    let b = bound(gws[gws.len() - 1], sid, &provider, 9).await;
    assert_eq!(b["conversation_id"], sid);
    assert_eq!(b["logical_model"], "duo");
    assert_eq!(b["provider_id"], provider.as_str());
    assert_eq!(b["message_count"], 9);
    provider
}

/// Each replica writes its snippets after its answers, so two consecutive
/// turns answered by different replicas may land in either order: they are
/// still read back in the order asked.
async fn context_is_kept_for_its_key(gw: &Gateway, sid: &str) {
    let url = format!("{}/context/{sid}", gw.url());
    let history = |v: &Value| v["history"].as_array().cloned().unwrap_or_default();
    // Snippets are stored once each answer is done.
    let (v, stored) = poll(
        PATIENCE,
        || async {
            client()
                .get(&url)
                .bearer_auth("carol-key")
                .send()
                .await
                .expect("context")
                .json::<Value>()
                .await
                .expect("context JSON")
        },
        |v| history(v).len() == 9,
    )
    .await;
    assert!(stored, "nine snippets: {v}");
    let history = history(&v);
    assert_eq!(v["session_id"], sid);
    assert_eq!(history.len(), 9);
    let asked: Vec<&str> = history
        .iter()
        .map(|h| {
            h["request"]["message"]["content"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    let want = vec![
        "q7",
        "q6",
        "q5",
        "q4",
        "q3",
        "q2",
        "q1",
        "q0",
        "first question",
    ];
    // Newest first, in the order asked, whichever replica wrote each.
    assert_eq!(asked, want);
    assert!(history.iter().all(|h| h["response"]["text"]
        .as_str()
        .unwrap_or_default()
        .starts_with("answer from")));
    // Another client key may not read it; an admin may.
    let r = client()
        .get(&url)
        .bearer_auth("bob-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client().get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // An unknown session has an empty history.
    let v = gw.get_json("/context/nobody", "carol-key").await;
    assert_eq!(v["history"], json!([]));
}

async fn sessions_can_be_released(gw: &Gateway, sid: &str) {
    let url = format!("{}/routing/sessions/{sid}", gw.url());
    let r = client()
        .delete(&url)
        .bearer_auth("carol-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a client key cannot use admin endpoints");
    let r = client()
        .delete(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client()
        .delete(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client().get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Waits until every gateway's store is connected (on a busy machine a
/// cluster's first connection can take longer than the store waits at
/// start; until then a replica answers from its local store).
async fn connected(gws: &[&Gateway]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for gw in gws {
        while !gw.metrics().await.contains("apiproxy_store_redis_up 1") {
            assert!(Instant::now() < deadline, "the store did not connect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn embedded_store_behaviour() {
    let (a, b) = mocks().await;
    let gw = Gateway::start(&config(&a, &b, None)).await;
    rpm_limit_holds(&[&gw]).await;
    tpm_limit_counts_reported_usage(&[&gw]).await;
    sessions_stick(&[&gw], "s-embedded").await;
    context_is_kept_for_its_key(&gw, "s-embedded").await;
    sessions_can_be_released(&gw, "s-embedded").await;
}

#[tokio::test]
async fn two_replicas_on_one_redis_act_as_one() {
    let redis = RedisServer::start();
    let (a, b) = mocks().await;
    let cfg = config(&a, &b, Some(&redis.url));
    let gw1 = Gateway::start(&cfg).await;
    let gw2 = Gateway::start(&cfg).await;
    rpm_limit_holds(&[&gw1, &gw2]).await;
    tpm_limit_counts_reported_usage(&[&gw1, &gw2]).await;
    sessions_stick(&[&gw1, &gw2], "s-redis").await;
    context_is_kept_for_its_key(&gw2, "s-redis").await;
    sessions_can_be_released(&gw1, "s-redis").await;
}

#[tokio::test]
async fn two_replicas_on_a_redis_cluster_act_as_one() {
    let cluster = RedisCluster::start();
    let (a, b) = mocks().await;
    let cfg = config(&a, &b, Some(&cluster.url));
    let gw1 = Gateway::start(&cfg).await;
    let gw2 = Gateway::start(&cfg).await;
    connected(&[&gw1, &gw2]).await;
    rpm_limit_holds(&[&gw1, &gw2]).await;
    tpm_limit_counts_reported_usage(&[&gw1, &gw2]).await;
    sessions_stick(&[&gw1, &gw2], "s-cluster").await;
    context_is_kept_for_its_key(&gw2, "s-cluster").await;
    sessions_can_be_released(&gw1, "s-cluster").await;
    // Everything was answered by the cluster, never by a replica's local fallback.
    for gw in [&gw1, &gw2] {
        let m = gw.metrics().await;
        assert!(m.contains("apiproxy_store_redis_up 1"), "{m}");
        assert!(m.contains("apiproxy_store_errors_total 0"), "{m}");
    }
    let keys = cluster.keys();
    assert!(
        keys.iter().any(|k| k.ends_with("{rate}:rpm:key:alice")),
        "rate windows are hash-tagged: {keys:?}"
    );
}

/// Mocks that answer a streaming request with SSE and any other with JSON.
async fn streaming_mocks() -> (MockProvider, MockProvider) {
    let mock = |model: &'static str| {
        MockProvider::start(move |req, _| {
            if req.json()["stream"] == true {
                Reply::sse(&openai_stream(model, &["answer ", "from ", model]))
            } else {
                Reply::json(
                    200,
                    openai_completion(model, &format!("answer from {model}")),
                )
            }
        })
    };
    (mock("ma").await, mock("mb").await)
}

/// Turns of one session sent to the replicas in turn, each the moment the
/// previous answer's head arrived (a load balancer in front, a client that
/// acts on the first byte): every turn is served by one upstream.
async fn turns_in_a_row_stay_on_one_upstream(gws: &[&Gateway], sid: &str, stream: bool) -> String {
    let mut served = Vec::new();
    // The answers' bodies are read only once every turn was sent.
    let mut open = Vec::new();
    for i in 0..20 {
        let r = client()
            .post(format!("{}/v1/chat/completions", gws[i % gws.len()].url()))
            .bearer_auth("carol-key")
            .header("x-debug", "true")
            .header("x-session-id", sid)
            .json(&json!({"model": "duo", "stream": stream,
                "messages": [{"role": "user", "content": format!("turn {i}")}]}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "turn {i}");
        served.push(r.headers()["x-debug-provider"].to_str().unwrap().to_owned());
        open.push(r);
    }
    for (i, r) in open.into_iter().enumerate() {
        let body = r.text().await.expect("answer body");
        assert!(body.contains("answer"), "turn {i}: {body}");
    }
    assert!(
        served.iter().all(|p| *p == served[0]),
        "one upstream for the session (stream: {stream}): {served:?}"
    );
    served.swap_remove(0)
}

/// What one replica promised, every replica knows: a session's binding is
/// in Redis before the client has the first byte of the answer that made
/// it, so the next turn, sent at once to the other replica, follows it.
#[tokio::test]
async fn turns_alternating_between_replicas_with_no_pause_stay_on_one_upstream() {
    let redis = RedisServer::start();
    let (a, b) = streaming_mocks().await;
    let cfg = config(&a, &b, Some(&redis.url));
    let gw1 = Gateway::start(&cfg).await;
    let gw2 = Gateway::start(&cfg).await;
    connected(&[&gw1, &gw2]).await;
    for round in 0..3 {
        let sid = format!("s-json-{round}");
        let p = turns_in_a_row_stay_on_one_upstream(&[&gw1, &gw2], &sid, false).await;
        // Bound once, then every turn counted (the later ones after their answers).
        bound(&gw2, &sid, &p, 20).await;
        let sid = format!("s-sse-{round}");
        let p = turns_in_a_row_stay_on_one_upstream(&[&gw2, &gw1], &sid, true).await;
        bound(&gw1, &sid, &p, 20).await;
    }
}

#[tokio::test]
async fn replicas_follow_a_sentinel_failover() {
    let mut redis = RedisSentinel::start();
    let (a, b) = mocks().await;
    let cfg = config(&a, &b, Some(&redis.url));
    let gw1 = Gateway::start(&cfg).await;
    let gw2 = Gateway::start(&cfg).await;
    connected(&[&gw1, &gw2]).await;
    sessions_stick(&[&gw1, &gw2], "s-sentinel").await;

    redis.master.stop();
    // Requests are answered all along; the Sentinel promotes the replica.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while redis.master_port() != Some(redis.replica.port) {
        assert!(Instant::now() < deadline, "the Sentinel did not fail over");
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        assert_eq!(chat(gw, "carol-key", None, "hi").await.status(), 200);
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both replicas find the new master and share state through it again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for gw in [&gw1, &gw2] {
            assert_eq!(chat(gw, "carol-key", None, "hi").await.status(), 200);
        }
        let up1 = gw1.metrics().await.contains("apiproxy_store_redis_up 1");
        let up2 = gw2.metrics().await.contains("apiproxy_store_redis_up 1");
        if up1 && up2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not follow the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rpm_limit_holds(&[&gw1, &gw2]).await;
    assert!(
        gw1.log().contains("new master"),
        "the failover is logged:\n{}",
        gw1.log()
    );
}

#[tokio::test]
async fn state_is_in_redis_when_the_gateway_exits_on_sigterm() {
    let redis = RedisServer::start();
    let (a, b) = mocks().await;
    let gw = Gateway::start(&config(&a, &b, Some(&redis.url))).await;
    assert_eq!(
        chat(&gw, "carol-key", Some("s-exit"), "last words")
            .await
            .status(),
        200
    );
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let prefix = format!("t{}:", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.log().contains("shutdown: shared state flushed") {
        assert!(Instant::now() < deadline, "no exit:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    use apiproxy_store::testing::{query, Reply as R};
    let exists = |key: String| query(redis.port, &["EXISTS", &key]) == Ok(R::Int(1));
    assert!(exists(format!("{prefix}session:s-exit")));
    assert!(exists(format!("{prefix}context:s-exit")));
}

#[tokio::test]
async fn a_session_moves_when_its_upstream_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Each mock answers 503 once its flag is set.
    let down = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let mock = |flag: Arc<AtomicBool>, model: &'static str| {
        MockProvider::start(move |_, _| {
            if flag.load(Ordering::Relaxed) {
                Reply::json(503, r#"{"error":{"message":"down"}}"#)
            } else {
                Reply::json(200, openai_completion(model, "ok"))
            }
        })
    };
    let a = mock(down[0].clone(), "ma").await;
    let b = mock(down[1].clone(), "mb").await;
    let gw = Gateway::start(&config(&a, &b, None)).await;
    let served_by =
        |r: &reqwest::Response| r.headers()["x-debug-provider"].to_str().unwrap().to_owned();
    let first = chat(&gw, "carol-key", Some("s-move"), "hi").await;
    assert_eq!(first.status(), 200);
    let served = served_by(&first);
    let (i, other) = if served == "a" { (0, "b") } else { (1, "a") };
    // The binding is there before its upstream fails, so the next request
    // takes the "bound upstream failed" path for certain.
    bound(&gw, "s-move", &served, 1).await;
    let mock_of = |id: &str| if id == "a" { &a } else { &b };
    let tried_before = mock_of(&served).count();

    down[i].store(true, Ordering::Relaxed);
    let r = chat(&gw, "carol-key", Some("s-move"), "again").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), other);
    assert_eq!(
        mock_of(&served).count(),
        tried_before + 1,
        "the bound upstream was tried first"
    );
    // The binding followed the request to the other upstream.
    bound(&gw, "s-move", other, 2).await;

    // It stays there once the first upstream is back: every request goes to
    // `other` (a gateway that picked afresh each time would send about half
    // of them back; all eight by chance: 1 in 256).
    down[i].store(false, Ordering::Relaxed);
    for n in 0..8 {
        let r = chat(&gw, "carol-key", Some("s-move"), &format!("more {n}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), other, "request {n} after the move");
    }
    let b = bound(&gw, "s-move", other, 10).await;
    assert_eq!(b["provider_id"], other);
}

#[tokio::test]
async fn requests_survive_a_redis_outage_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let (a, b) = mocks().await;
    let cfg = config(&a, &b, Some(&redis.url));
    let gw1 = Gateway::start(&cfg).await;
    let gw2 = Gateway::start(&cfg).await;
    assert_eq!(chat(&gw1, "carol-key", None, "hi").await.status(), 200);

    redis.stop();
    // Every request is answered from local state: served, sticky within
    // each replica, and alice's rpm still counted (locally).
    for (n, gw) in [&gw1, &gw2].into_iter().enumerate() {
        let sid = format!("s-outage-{n}");
        let first = chat(gw, "carol-key", Some(&sid), "hi").await;
        assert_eq!(first.status(), 200, "replica {n} with Redis down");
        let provider = first.headers()["x-debug-provider"].clone();
        // With Redis down the binding is kept locally, written just after
        // the answer: the next turns are sent once it is there.
        let held = eventually(PATIENCE, || async {
            !gw.get_json(&format!("/admin/sessions/{sid}"), ADMIN).await["binding"].is_null()
        })
        .await;
        assert!(held, "replica {n} never bound {sid} with Redis down");
        for i in 0..3 {
            let r = chat(gw, "carol-key", Some(&sid), "again").await;
            assert_eq!(r.status(), 200, "replica {n}, request {i} with Redis down");
            assert_eq!(
                r.headers()["x-debug-provider"],
                provider,
                "replica {n} sticks"
            );
        }
    }
    // dave, so that alice's window is fresh for the check after the outage.
    for i in 0..5 {
        assert_eq!(
            chat(&gw1, "dave-key", None, "hi").await.status(),
            200,
            "dave {i}"
        );
    }
    assert_eq!(
        chat(&gw1, "dave-key", None, "hi").await.status(),
        429,
        "the local count refuses the sixth"
    );
    let m = gw1.metrics_until("apiproxy_store_redis_up 0").await;
    assert!(m.contains("apiproxy_store_redis_up 0"), "{m}");

    redis.restart();
    // Once both replicas are back on Redis, alice's rpm is shared again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up1 = gw1.metrics().await.contains("apiproxy_store_redis_up 1");
        let up2 = gw2.metrics().await.contains("apiproxy_store_redis_up 1");
        if up1 && up2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not reconnect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rpm_limit_holds(&[&gw1, &gw2]).await;
}

#[tokio::test]
async fn redis_unreachable_at_start_still_serves() {
    let (a, b) = mocks().await;
    let dead = format!("redis://127.0.0.1:{}/0", free_port());
    let gw = Gateway::start(&config(&a, &b, Some(&dead))).await;
    // Served from local state: alice's rpm of 5 still holds, the session
    // still sticks.
    let first = chat(&gw, "alice-key", Some("s-dead"), "hi").await;
    assert_eq!(first.status(), 200);
    let provider = first.headers()["x-debug-provider"].clone();
    // The binding is written in the logging phase, just after the answer:
    // the next request (a new connection) waits for it.
    let bound = eventually(PATIENCE, || async {
        !gw.get_json("/admin/sessions/s-dead", ADMIN).await["binding"].is_null()
    })
    .await;
    assert!(bound, "the session was never bound");
    for i in 1..5 {
        let r = chat(&gw, "alice-key", Some("s-dead"), "hi").await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-debug-provider"], provider);
    }
    assert_eq!(
        chat(&gw, "alice-key", Some("s-dead"), "hi").await.status(),
        429
    );
    assert_eq!(
        gw.metric("apiproxy_store_redis_up", &[]).await,
        0.0,
        "{}",
        gw.metrics().await
    );
    // Exactly one warning: one a minute, not one per request.
    let redis_warnings = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.to_lowercase().contains("redis"))
            .count()
    };
    let (log, _) = poll(PATIENCE, || async { gw.log() }, |l| redis_warnings(l) >= 1).await;
    assert_eq!(redis_warnings(&log), 1, "one warning:\n{log}");
}
