//! Provider keys (issue 9 items 6 and 7): `key_strategy` (round-robin
//! weighted by each key's `weight`, or fill-first) and each key's own
//! `max_concurrency` / `max_qps`, through the real binary; which key was
//! used is read from the `Authorization` header the mock provider saw.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-keys-1";

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(gw: &Gateway, model: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat(model))
        .send()
        .await
        .expect("request")
}

fn ok_reply() -> Reply {
    Reply::json(200, openai_completion("m", "hello"))
}

/// How many requests (model listings aside) the mock got with each key.
fn keys_seen(mock: &MockProvider) -> Vec<String> {
    mock.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !r.is_model_listing())
        .map(|r| {
            r.header("authorization")
                .unwrap_or("")
                .trim_start_matches("Bearer ")
                .to_owned()
        })
        .collect()
}

fn count(seen: &[String], key: &str) -> usize {
    seen.iter().filter(|k| *k == key).count()
}

#[tokio::test]
async fn round_robin_follows_key_weights_and_env_expansion() {
    let mock = MockProvider::always(ok_reply()).await;
    let config = format!(
        "providers:\n  - id: p\n    kind: openai\n    base_url: \"{}\"\n    models: [m]\n    api_keys: [key-a, {{ key: \"${{SECOND_KEY}}\", weight: 3 }}]\n",
        mock.base_url()
    );
    let gw = Gateway::start_with_env(&config, &[("SECOND_KEY", "key-from-env")]).await;
    for _ in 0..40 {
        assert_eq!(post(&gw, "p/m").await.status(), 200);
    }
    let seen = keys_seen(&mock);
    assert_eq!(
        (count(&seen, "key-a"), count(&seen, "key-from-env")),
        (10, 30),
        "a 1:3 split, every key used in each cycle: {seen:?}"
    );
    // Smooth: the light key is never skipped for a whole cycle of four.
    for w in seen.windows(4) {
        assert!(w.iter().any(|k| k == "key-a"), "{seen:?}");
    }
}

#[tokio::test]
async fn fill_first_uses_the_first_key_until_it_rests() {
    let limited = Arc::new(AtomicBool::new(false));
    let l = limited.clone();
    let mock = MockProvider::start(move |r, _| {
        if l.load(Ordering::SeqCst) && r.header("authorization") == Some("Bearer key-a") {
            Reply::json(429, r#"{"error":{"message":"slow down"}}"#).header("retry-after", "60")
        } else {
            ok_reply()
        }
    })
    .await;
    let config = format!(
        "auth:\n  open: true\n  admin_keys: [{ADMIN}]\nproviders:\n  - id: p\n    kind: openai\n    base_url: \"{}\"\n    models: [m]\n    key_strategy: fill-first\n    api_keys: [key-a, key-b, key-c]\n",
        mock.base_url()
    );
    let gw = Gateway::start(&config).await;
    for _ in 0..5 {
        assert_eq!(post(&gw, "p/m").await.status(), 200);
    }
    assert_eq!(keys_seen(&mock), vec!["key-a"; 5]);
    limited.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        assert_eq!(post(&gw, "p/m").await.status(), 200);
    }
    let seen = keys_seen(&mock);
    // The 429 moved that request to key-b, which is used from then on.
    assert_eq!(
        seen[5..],
        ["key-a", "key-b", "key-b", "key-b", "key-b"],
        "{seen:?}"
    );
    let health = gw.get_json("/providers/p/health", ADMIN).await;
    assert_eq!(health["key_strategy"], "fill-first", "{health}");
    assert_eq!(health["keys"][0]["available"], false, "{health}");
    assert_eq!(health["keys"][1]["weight"], 1.0, "{health}");
}

#[tokio::test]
async fn a_key_at_its_concurrency_is_skipped_then_the_next_candidate_then_429() {
    // Held long enough for the checks below on a loaded machine.
    let keyed = MockProvider::always(ok_reply().delay(Duration::from_secs(4))).await;
    let spare = MockProvider::always(ok_reply()).await;
    let config = format!(
        "auth:\n  open: true\n  admin_keys: [{ADMIN}]\nrouting:\n  scoring: {{ mode: weighted }}\nproviders:\n  - id: keyed\n    kind: openai\n    base_url: \"{}\"\n    models: [m]\n    api_keys: [{{ key: key-1, max_concurrency: 1 }}, {{ key: key-2, max_concurrency: 1 }}]\n  - {{ id: spare, kind: openai, base_url: \"{}\", models: [m] }}\nmodels:\n  - name: pool\n    upstreams:\n      - {{ provider: keyed, model: m, weight: 1000000 }}\n      - {{ provider: spare, model: m, weight: 0.000001 }}\n",
        keyed.base_url(),
        spare.base_url()
    );
    let gw = Arc::new(Gateway::start(&config).await);
    // Two requests hold both keys.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { post(&gw, "keyed/m").await.status().as_u16() })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async { keyed.count() == 2 }).await,
        "both held requests reached the provider"
    );
    let seen = keys_seen(&keyed);
    assert_eq!(
        (count(&seen, "key-1"), count(&seen, "key-2")),
        (1, 1),
        "the second request took the other key: {seen:?}"
    );
    let health = gw.get_json("/providers/keyed/health", ADMIN).await;
    assert_eq!(health["keys"][0]["in_flight"], 1, "{health}");
    assert_eq!(health["keys"][1]["max_concurrency"], 1, "{health}");
    // The logical model moves on to its other upstream...
    let r = post(&gw, "pool").await;
    assert_eq!(r.status(), 200);
    assert_eq!(spare.count(), 1);
    // ...and with no other candidate the client gets 429 with Retry-After.
    let r = post(&gw, "keyed/m").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("error json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_concurrency or max_qps"),
        "{body}"
    );
    assert_eq!(keyed.count(), 2, "nothing more was sent to the full keys");
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // Freed again.
    assert_eq!(post(&gw, "keyed/m").await.status(), 200);
}

#[tokio::test]
async fn a_key_over_its_qps_gives_way_to_the_next_key() {
    let mock = MockProvider::always(ok_reply()).await;
    let config = format!(
        "providers:\n  - id: p\n    kind: openai\n    base_url: \"{}\"\n    models: [m]\n    key_strategy: fill-first\n    api_keys: [{{ key: key-a, max_qps: 1 }}, key-b]\n",
        mock.base_url()
    );
    let gw = Gateway::start(&config).await;
    // Three sent together. Only a burst that reached the provider within
    // half a second says something about a second's budget: a stalled
    // machine that spreads one wider gets another try, once key-a's
    // second is over.
    let mut judged = None;
    for _ in 0..5 {
        let before = mock.requests.lock().unwrap().len();
        let statuses: Vec<u16> = futures_util::future::join_all(
            (0..3).map(|_| async { post(&gw, "p/m").await.status().as_u16() }),
        )
        .await;
        assert_eq!(statuses, [200, 200, 200]);
        let burst: Vec<Recorded> = mock.requests.lock().unwrap()[before..].to_vec();
        let (first, last) = (
            burst.iter().map(|r| r.at).min().expect("requests"),
            burst.iter().map(|r| r.at).max().expect("requests"),
        );
        if last - first < Duration::from_millis(500) {
            judged = Some(burst);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let burst = judged.expect("no burst of three landed within 500 ms");
    let key_of = |k: &str| {
        burst
            .iter()
            .filter(|r| r.header("authorization") == Some(&format!("Bearer {k}")))
            .count()
    };
    assert_eq!(
        (key_of("key-a"), key_of("key-b")),
        (1, 2),
        "the first key's one request a second, the rest on the next: {:?}",
        keys_seen(&mock)
    );
}

/// `apiproxy -t` on `yaml`: its problem lines (it must fail).
fn check(yaml: &str) -> String {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run apiproxy -t");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    text
}

#[tokio::test]
async fn key_options_are_validated() {
    let provider =
        "providers:\n  - id: p\n    kind: openai\n    base_url: \"http://127.0.0.1:9\"\n";
    let err = check(&format!(
        "{provider}    key_strategy: random\n    api_keys: [ok, {{ key: k2, weight: 0, max_concurrency: 0, max_qps: 0 }}]\n"
    ));
    for line in [
        "providers[0].key_strategy: \"random\" is not round-robin or fill-first",
        "providers[0].api_keys[1].weight: must be a positive number",
        "providers[0].api_keys[1].max_concurrency: must be at least 1",
        "providers[0].api_keys[1].max_qps: must be at least 1",
    ] {
        assert!(err.contains(line), "{line} missing in: {err}");
    }
    // A mistyped option is named, with where it is; the key is not echoed.
    let err = check(&format!(
        "{provider}    api_keys: [{{ key: sk-secret-3, wieght: 2 }}]\n"
    ));
    assert!(err.contains("providers[0].api_keys[0]"), "{err}");
    assert!(err.contains("unknown field `wieght`"), "{err}");
    assert!(
        !err.contains("sk-secret-3"),
        "no key in a problem line: {err}"
    );
}

/// Every problem `apiproxy schema config` finds in `yaml`, with its path.
fn schema_problems(yaml: &str) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["schema", "config"])
        .output()
        .expect("run apiproxy schema");
    assert!(out.status.success(), "{out:?}");
    let schema: Value = serde_json::from_slice(&out.stdout).expect("schema json");
    let instance: Value = serde_yaml::from_str(yaml).expect("yaml");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[test]
fn the_schema_knows_key_objects_and_hedging() {
    let good = "routing: { hedge_budget_percent: 20 }\nproviders:\n  - { id: p, kind: openai, base_url: \"http://127.0.0.1:9\", key_strategy: fill-first, api_keys: [a, { key: b, weight: 3, max_concurrency: 2, max_qps: 5 }] }\nmodels:\n  - { name: pool, hedge_after_ms: 500, upstreams: [{ provider: p, model: m }] }\n";
    assert_eq!(schema_problems(good), Vec::<String>::new());
    let bad = "providers:\n  - { id: p, kind: openai, base_url: \"http://127.0.0.1:9\", api_keys: [{ key: b, wieght: 3 }] }\n";
    let problems = schema_problems(bad);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("/providers/0/api_keys/0")),
        "{problems:?}"
    );
}
