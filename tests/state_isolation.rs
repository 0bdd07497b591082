//! Limits and shared state that one client could turn against others
//! (issue 8, items 7, 9 and 10), through the real binary: a key over its own
//! rpm uses none of the gateway-wide rpm; concurrent requests cannot
//! overshoot a tpm (alone and across two replicas on one Redis); session
//! bindings and context belong to the key that made them; context snippets
//! are bounded in bytes.

use crate::common;

use std::time::{Duration, Instant};

use apiproxy_store::testing::{query, RedisServer, Reply as RedisReply};
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-0001";

fn store_section(redis: Option<&str>, prefix: &str) -> String {
    redis
        .map(|url| format!("store:\n  redis_url: {url}\n  key_prefix: \"{prefix}\"\n"))
        .unwrap_or_default()
}

/// Keys alice (rpm 2), bob (tpm 100), carol (no limit); one upstream.
fn config(mock: &MockProvider, extra: &str) -> String {
    format!(
        "{extra}auth:\n  keys:\n    - {{ name: alice, key: alice-key, rpm: 2 }}\n    - {{ name: bob, key: bob-key, tpm: 100 }}\n    - {{ name: carol, key: carol-key }}\n  admin_keys: [{ADMIN}]\nproviders:\n  - {{ id: a, kind: openai, base_url: \"{}\", api_keys: [ka] }}\nmodels:\n  - name: m\n    upstreams: [{{ provider: a, model: ma }}]\n",
        mock.base_url()
    )
}

async fn post(gw: &Gateway, key: &str, session: Option<&str>, body: &Value) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .header("x-debug", "true");
    if let Some(s) = session {
        r = r.header("x-session-id", s);
    }
    r.json(body).send().await.expect("request")
}

/// Generation requests the mock received (its model-list requests aside).
fn generations(mock: &MockProvider) -> usize {
    mock.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .count()
}

fn hi() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_key_over_its_own_rpm_uses_none_of_the_gateway_rpm() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("ma", "ok"))).await;
    let gw = Gateway::start(&config(&mock, "limits:\n  rpm: 5\n")).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = post(&gw, "alice-key", None, &hi()).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let v: Value = r.json().await.unwrap();
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("this key's"),
                "{v}"
            );
        }
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    // The gateway's 5 saw only alice's two admitted requests: carol has 3.
    for i in 0..3 {
        assert_eq!(
            post(&gw, "carol-key", None, &hi()).await.status(),
            200,
            "carol {i}"
        );
    }
    let r = post(&gw, "carol-key", None, &hi()).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the gateway's"),
        "{v}"
    );
    assert_eq!(generations(&mock), 5);
}

/// The chat body bob sends: small, `max_tokens` 40. Returns it with the
/// tokens the gateway reserves for it (body bytes / 4, rounded up, + 40).
fn bounded_body() -> (Vec<u8>, u64) {
    let body = serde_json::to_vec(&json!({
        "model": "m", "max_tokens": 40,
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    let estimate = body.len().div_ceil(4) as u64 + 40;
    (body, estimate)
}

/// Sends `n` bob requests at once, spread over `gws`; returns how many got 200.
async fn concurrent_bob(gws: &[&Gateway], n: usize) -> usize {
    let (body, _) = bounded_body();
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("{}/v1/chat/completions", gws[i % gws.len()].url());
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth("bob-key")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    ok
}

/// bob's tpm is 100 and each request reserves `estimate` (about 60): of 20
/// concurrent requests only those admitted while the window was under 100
/// go ahead, and once their answers are in, the window holds their real
/// usage (10 tokens each), not the reservations.
async fn tpm_holds_under_concurrency(gws: &[&Gateway], mock: &MockProvider) {
    let (body, estimate) = bounded_body();
    let admitted = concurrent_bob(gws, 20).await;
    let bound = 100_u64.div_ceil(estimate) as usize;
    assert!(
        (1..=bound).contains(&admitted),
        "{admitted} of 20 admitted; at most {bound} fit under tpm 100 with {estimate} reserved each"
    );
    assert_eq!(
        generations(mock),
        admitted,
        "refused requests never went upstream"
    );
    // Settled in the background right after each answer: probe until a
    // probe finds every earlier answer settled (10 tokens each). A probe
    // admitted before that is answered too, and counted from then on. The
    // bound is generous: settlement lags on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0u64;
    loop {
        let r = client()
            .post(format!("{}/v1/chat/completions", gws[0].url()))
            .bearer_auth("bob-key")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let remaining: u64 = r.headers()["x-ratelimit-remaining-tokens"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            // 10 tokens per answered request, this one's reservation on top;
            // an unsettled reservation (`estimate` > 10) leaves less.
            let settled = 100 - 10 * (admitted as u64 + probes) - estimate;
            assert!(remaining <= settled, "{remaining} > {settled}");
            if remaining == settled {
                break;
            }
            probes += 1;
            assert!(
                10 * (admitted as u64 + probes) + estimate < 100,
                "the probes filled the window before the answers were settled"
            );
            // Give this probe's own settlement time before the next one.
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        assert!(Instant::now() < deadline, "reservations were never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn concurrent_requests_cannot_overshoot_tpm() {
    let mock = MockProvider::always(
        // Slow enough that all 20 are admitted or refused before the
        // first answer settles, even on a loaded machine.
        Reply::json(200, openai_completion("ma", "ok")).delay(Duration::from_secs(3)),
    )
    .await;
    let gw = Gateway::start(&config(&mock, "")).await;
    tpm_holds_under_concurrency(&[&gw], &mock).await;
}

#[tokio::test]
async fn two_replicas_on_one_redis_cannot_overshoot_tpm() {
    let redis = RedisServer::start();
    let mock = MockProvider::always(
        // Slow enough that all 20 are admitted or refused before the
        // first answer settles, even on a loaded machine.
        Reply::json(200, openai_completion("ma", "ok")).delay(Duration::from_secs(3)),
    )
    .await;
    let cfg = config(&mock, &store_section(Some(&redis.url), "iso:"));
    let gw1 = Gateway::start(&cfg).await;
    let gw2 = Gateway::start(&cfg).await;
    tpm_holds_under_concurrency(&[&gw1, &gw2], &mock).await;
}

/// Upstream `a` has almost no weight, `b` almost all: a request goes to `b`
/// unless a session binding says `a`. `b` fails its first request, so the
/// first session request fails over to `a` and binds there.
async fn owned_bindings(redis: Option<&str>) {
    let a = MockProvider::always(Reply::json(200, openai_completion("ma", "from a"))).await;
    // Counts generation requests only: the catalog warm-up lists models too.
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = MockProvider::start(move |req, _| {
        let n = if req.method == "POST" {
            posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        } else {
            usize::MAX
        };
        if n == 0 {
            Reply::json(503, r#"{"error":{"message":"busy"}}"#)
        } else {
            Reply::json(200, openai_completion("mb", "from b"))
        }
    })
    .await;
    let cfg = format!(
        "{}auth:\n  keys:\n    - {{ name: carol, key: carol-key }}\n    - {{ name: mallory, key: mallory-key }}\n  admin_keys: [{ADMIN}]\nproviders:\n  - {{ id: a, kind: openai, base_url: \"{}\", api_keys: [ka] }}\n  - {{ id: b, kind: openai, base_url: \"{}\", api_keys: [kb, kb2] }}\nmodels:\n  - name: m\n    upstreams: [{{ provider: a, model: ma, weight: 0.000001 }}, {{ provider: b, model: mb, weight: 1000000 }}]\n",
        store_section(redis, "own:"),
        a.base_url(),
        b.base_url()
    );
    // b has a second key: its 503 rests `kb` (routing.cooldowns), and b
    // stays where the weights send everyone.
    let gw = Gateway::start(&cfg).await;
    let provider =
        |r: &reqwest::Response| r.headers()["x-debug-provider"].to_str().unwrap().to_owned();

    let r = post(&gw, "carol-key", Some("s-own"), &hi()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        provider(&r),
        "a",
        "b failed, a served and the session is bound to a"
    );
    // The binding is written after the answer: wait for it (generously).
    let bound = eventually(Duration::from_secs(15), || async {
        let r = client()
            .get(format!("{}/routing/sessions/s-own", gw.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("binding");
        r.status() == 200 && r.json::<Value>().await.expect("binding JSON")["provider_id"] == "a"
    })
    .await;
    assert!(bound, "carol's session is bound to a");
    let r = post(&gw, "carol-key", Some("s-own"), &hi()).await;
    assert_eq!(provider(&r), "a", "carol's session sticks to a");

    // mallory sends the same session id: the binding is neither read (b,
    // where the weights send everyone) nor moved.
    for i in 0..5 {
        let r = post(&gw, "mallory-key", Some("s-own"), &hi()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            provider(&r),
            "b",
            "mallory's request {i} does not follow carol's binding"
        );
    }
    // carol's next turn is touched after mallory's would have been (one
    // background writer, in order): once it shows, the count is final.
    let r = post(&gw, "carol-key", Some("s-own"), &hi()).await;
    assert_eq!(provider(&r), "a", "still carol's");
    let (binding, touched) = poll(
        WAIT,
        || async {
            client()
                .get(format!("{}/routing/sessions/s-own", gw.url()))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("binding")
                .json::<Value>()
                .await
                .expect("binding JSON")
        },
        |b| b["message_count"].as_u64().is_some_and(|n| n >= 3),
    )
    .await;
    assert!(
        touched,
        "carol's third turn never touched the binding: {binding}"
    );
    assert_eq!(binding["provider_id"], "a");
    assert_eq!(binding["message_count"], 3, "only carol's requests count");
    assert_eq!(binding["owner"], "carol", "the admin API sees the owner");
    // mallory cannot read carol's context either.
    let r = client()
        .get(format!("{}/context/s-own", gw.url()))
        .bearer_auth("mallory-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn session_bindings_belong_to_their_key() {
    owned_bindings(None).await;
}

#[tokio::test]
async fn session_bindings_belong_to_their_key_on_redis() {
    let redis = RedisServer::start();
    owned_bindings(Some(&redis.url)).await;
}

#[tokio::test]
async fn context_without_an_owner_is_never_served_to_a_client_key() {
    let redis = RedisServer::start();
    let mock = MockProvider::always(Reply::json(200, openai_completion("ma", "ok"))).await;
    let gw = Gateway::start(&config(&mock, &store_section(Some(&redis.url), "noown:"))).await;
    // A context list whose owner was never recorded (or whose owner key was lost).
    let pushed = query(
        redis.port,
        &[
            "RPUSH",
            "noown:context:orphan",
            r#"{"request":{"message":"secret"}}"#,
        ],
    );
    assert_eq!(pushed, Ok(RedisReply::Int(1)));
    let url = format!("{}/context/orphan", gw.url());
    for key in ["carol-key", "bob-key"] {
        let r = client().get(&url).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), 403, "{key}");
        assert!(!r.text().await.unwrap().contains("secret"));
    }
    let v: Value = client()
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["history"][0]["request"]["message"], "secret",
        "the admin reads it"
    );
}

/// A message of a thousand one-character parts: no string is long, yet its
/// JSON is about 25 KiB. Entries are capped at 1,024 bytes and a session at
/// 3,000.
async fn context_bounded_in_bytes(redis: Option<&str>) {
    let mock = MockProvider::always(Reply::json(200, openai_completion("ma", "ok"))).await;
    let extra = format!(
        "{}context:\n  max_entry_bytes: 1024\n  max_session_bytes: 3000\n",
        store_section(redis, "bytes:")
    );
    let gw = Gateway::start(&config(&mock, &extra)).await;
    // Each request starts with its own number, so the last one's snippet
    // can be waited for.
    let body = |n: usize| {
        let mut parts: Vec<Value> = (0..1000)
            .map(|i| json!({"type": "text", "text": format!("{}", i % 10)}))
            .collect();
        parts[0] = json!({"type": "text", "text": format!("request-{n}-")});
        json!({"model": "m", "messages": [{"role": "user", "content": parts}]})
    };
    assert!(serde_json::to_vec(&body(0)).unwrap().len() > 20_000);
    for i in 0..8 {
        let r = post(&gw, "carol-key", Some("s-bytes"), &body(i)).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    // Snippets are written after the answer: wait for the last one.
    let (v, written) = poll(
        WAIT,
        || async {
            client()
                .get(format!("{}/context/s-bytes", gw.url()))
                .bearer_auth("carol-key")
                .send()
                .await
                .expect("context")
                .json::<Value>()
                .await
                .unwrap_or(Value::Null)
        },
        |v| v["history"].to_string().contains("request-7-"),
    )
    .await;
    assert!(written, "the last request's snippet never showed: {v}");
    let history = v["history"].as_array().expect("history");
    assert!(!history.is_empty(), "something is kept");
    let sizes: Vec<usize> = history
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap().len())
        .collect();
    assert!(sizes.iter().all(|&n| n <= 1024), "{sizes:?}");
    assert!(sizes.iter().sum::<usize>() <= 3000, "{sizes:?}");
    assert!(history.len() < 8, "the oldest went: {sizes:?}");
    assert_eq!(history[0]["response"]["text"], "ok");
}

#[tokio::test]
async fn context_is_bounded_in_bytes() {
    context_bounded_in_bytes(None).await;
}

#[tokio::test]
async fn context_is_bounded_in_bytes_on_redis() {
    let redis = RedisServer::start();
    context_bounded_in_bytes(Some(&redis.url)).await;
}

#[tokio::test]
async fn context_byte_limits_are_checked_by_apiproxy_t() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        "context:\n  max_entry_bytes: 10\n  max_session_bytes: 5\nstore:\n  key_prefix: \"a{b}\"\nproviders: []\nmodels: []\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run apiproxy -t");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    for key in [
        "context.max_entry_bytes:",
        "context.max_session_bytes:",
        "store.key_prefix:",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
}

/// A request without an output cap reserves `limits.default_output_tokens`
/// per choice (`n`), not its input alone: of 20 concurrent uncapped
/// requests on a tpm of 3000, only those admitted while the window was
/// under it go ahead (about 1000 tokens each: at most 3), where counting
/// the input alone let every one through.
#[tokio::test]
async fn requests_without_an_output_cap_reserve_the_default_output() {
    let mock = MockProvider::always(
        // Slow enough that all 20 are admitted or refused before the
        // first answer settles, even on a loaded machine.
        Reply::json(200, openai_completion("ma", "ok")).delay(Duration::from_secs(5)),
    )
    .await;
    let gw = Gateway::start(&format!(
        "limits:\n  default_output_tokens: 1000\nauth:\n  keys:\n    - {{ name: dan, key: dan-key, tpm: 3000 }}\n    - {{ name: eve, key: eve-key, tpm: 500 }}\n    - {{ name: fay, key: fay-key, tpm: 5000 }}\nproviders:\n  - {{ id: a, kind: openai, base_url: \"{}\" }}\nmodels:\n  - name: m\n    upstreams: [{{ provider: a, model: ma }}]\n",
        mock.base_url()
    ))
    .await;
    let body = serde_json::to_vec(&hi()).unwrap();
    let input = body.len().div_ceil(4) as u64;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (url, body) = (format!("{}/v1/chat/completions", gw.url()), body.clone());
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth("dan-key")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.expect("task") {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (1..=3).contains(&admitted),
        "{admitted} of 20 admitted on tpm 3000 with {} reserved each",
        input + 1000
    );

    // `n: 2` reserves the default output twice.
    let two = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]});
    let two_input = serde_json::to_vec(&two).unwrap().len().div_ceil(4) as u64;
    let r = post(&gw, "fay-key", None, &two).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-ratelimit-remaining-tokens"]
            .to_str()
            .unwrap(),
        (5000 - two_input - 2 * 1000).to_string()
    );

    // eve's tpm of 500 is smaller than one request's reservation, yet admits
    // her first request: the reservation is capped at what the window has
    // left (all of it), and while that request is out the next one waits.
    let first = {
        let (url, body) = (format!("{}/v1/chat/completions", gw.url()), body.clone());
        tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth("eve-key")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request")
        })
    };
    let upstream_has_it = eventually(Duration::from_secs(15), || async {
        generations(&mock) == admitted + 2
    })
    .await;
    assert!(upstream_has_it, "eve's first request never went upstream");
    let r = post(&gw, "eve-key", None, &hi()).await;
    assert_eq!(r.status(), 429, "the window is full while the first is out");
    let r = first.await.expect("task");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
}

#[tokio::test]
async fn default_output_tokens_is_checked_by_apiproxy_t() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        "limits:\n  default_output_tokens: 0\nproviders: []\nmodels: []\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run apiproxy -t");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("limits.default_output_tokens: must be between 1 and"),
        "{text}"
    );
}
