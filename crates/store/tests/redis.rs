//! What only the Redis store does: share state between replicas, keep Redis tidy, survive what Redis holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiproxy_store::testing::RedisServer;
use apiproxy_store::{open, BoundUpstream, SessionBinding, Store, StoreOptions};
use redis::Commands;
use serde_json::json;

fn options(url: &str, prefix: &str) -> StoreOptions {
    StoreOptions {
        redis_url: Some(url.to_string()),
        key_prefix: prefix.to_string(),
        ..StoreOptions::default()
    }
}

fn binding(id: &str, provider: &str) -> SessionBinding {
    let upstream = BoundUpstream {
        logical_model: "fast",
        provider_id: provider,
        model_id: "m",
        key_index: 0,
    };
    SessionBinding::new(id, None, upstream)
}

fn direct(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("a direct connection to the test Redis")
}

/// Polls `check` every 100 ms for up to `secs` seconds.
async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_limits_and_sessions() {
    let server = RedisServer::start();
    let a = open(options(&server.url, "apiproxy:")).await;
    let b = open(options(&server.url, "apiproxy:")).await;
    assert!(a.healthy() && b.healthy());

    // One rpm limit across both: 5 allowed in total, the sixth refused whichever replica asks.
    let mut allowed = 0;
    for (i, store) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let d = store.hit_requests("key:alice", 5).await;
        assert!(d.allowed, "request {}", i + 1);
        assert_eq!(d.remaining, 4 - i as u64);
        allowed += 1;
    }
    assert_eq!(allowed, 5);
    for store in [&a, &b] {
        let d = store.hit_requests("key:alice", 5).await;
        assert!(!d.allowed);
        assert!((1..=60).contains(&d.retry_after_secs), "{d:?}");
    }

    // One token window.
    a.add_tokens("key:alice", 70).await;
    b.add_tokens("key:alice", 40).await;
    assert!(!a.check_tokens("key:alice", 100).await.allowed);
    assert_eq!(b.check_tokens("key:alice", 200).await.remaining, 90);

    // One session binding: bound on A, seen and moved on B, deleted on A.
    a.bind_session(binding("conv-1", "openai")).await;
    let seen = b.get_session("conv-1").await.expect("B sees A's binding");
    assert_eq!(seen.provider_id, "openai");
    b.bind_session(binding("conv-1", "claude")).await;
    let moved = a.get_session("conv-1").await.expect("A sees B's move");
    assert_eq!(moved.provider_id, "claude");
    assert_eq!(moved.message_count, 2);
    assert_eq!(moved.created_at, seen.created_at);
    assert!(a.delete_session("conv-1").await);
    assert_eq!(b.get_session("conv-1").await, None);
    assert!(!b.delete_session("conv-1").await);

    // One context and one catalog.
    a.push_context("conv-2", "alice", json!({"request": 1}))
        .await;
    b.push_context("conv-2", "alice", json!({"request": 2}))
        .await;
    b.push_context("conv-2", "mallory", json!({"request": 3}))
        .await;
    let (owner, history) = a.get_context("conv-2").await;
    assert_eq!(owner.as_deref(), Some("alice"));
    assert_eq!(history, vec![json!({"request": 2}), json!({"request": 1})]);
    a.put_catalog("openai", &["gpt-4o".to_string()]).await;
    assert_eq!(
        b.get_catalog("openai").await,
        Some(vec!["gpt-4o".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_separate_gateways_on_one_redis() {
    let server = RedisServer::start();
    let blue = open(options(&server.url, "blue:")).await;
    let green = open(options(&server.url, "green:")).await;
    blue.bind_session(binding("s", "openai")).await;
    assert_eq!(green.get_session("s").await, None);
    assert!(blue.hit_requests("k", 1).await.allowed);
    assert!(green.hit_requests("k", 1).await.allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_is_prefixed_expiring_and_readable_json() {
    let server = RedisServer::start();
    let store = open(options(&server.url, "gw:")).await;
    store.bind_session(binding("s1", "openai")).await;
    store
        .push_context(
            "s1",
            "alice",
            json!({"request": {"model": "fast"}, "response": "hi"}),
        )
        .await;
    store.put_catalog("openai", &["gpt-4o".to_string()]).await;
    store.hit_requests("key:alice", 10).await;
    store.add_tokens("key:alice", 123).await;

    let mut redis = direct(&server);
    let mut keys: Vec<String> = redis.keys("*").expect("KEYS");
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "gw:catalog:openai",
            "gw:context-owner:s1",
            "gw:context:s1",
            "gw:rpm:key:alice",
            "gw:session:s1",
            "gw:tpm:key:alice",
        ]
    );
    for key in &keys {
        let ttl: i64 = redis.pttl(key).expect("PTTL");
        assert!(ttl > 0, "{key} has a TTL ({ttl})");
    }
    // Defaults: session 1 h, context 24 h, catalog 300 s, windows just over a minute.
    let pttl = |r: &mut redis::Connection, k: &str| -> i64 { r.pttl(k).expect("PTTL") };
    assert!(pttl(&mut redis, "gw:session:s1") > 3_590_000);
    assert!(pttl(&mut redis, "gw:context:s1") > 86_000_000);
    assert!((295_000..=300_000).contains(&pttl(&mut redis, "gw:catalog:openai")));
    assert!(pttl(&mut redis, "gw:rpm:key:alice") <= 61_000);

    // Operators can read the values with redis-cli.
    let session: String = redis.get("gw:session:s1").expect("GET");
    let session: serde_json::Value = serde_json::from_str(&session).expect("JSON");
    assert_eq!(session["provider_id"], "openai");
    assert_eq!(session["message_count"], 1);
    let catalog: String = redis.get("gw:catalog:openai").expect("GET");
    assert_eq!(catalog, r#"["gpt-4o"]"#);
    let snippet: Vec<String> = redis.lrange("gw:context:s1", 0, -1).expect("LRANGE");
    assert_eq!(
        snippet,
        vec![r#"{"request":{"model":"fast"},"response":"hi"}"#]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_values_read_as_absent() {
    let server = RedisServer::start();
    let store = open(options(&server.url, "apiproxy:")).await;
    let mut redis = direct(&server);
    let _: () = redis.set("apiproxy:session:bad", "{not json").expect("SET");
    let _: () = redis.set("apiproxy:catalog:bad", "[1, 2").expect("SET");
    let _: () = redis
        .rpush("apiproxy:context:bad", &["{oops", r#"{"ok":true}"#])
        .expect("RPUSH");
    let _: () = redis
        .set("apiproxy:context-owner:bad", "alice")
        .expect("SET");
    let _: () = redis
        .hset("apiproxy:rpm:bad", "not-a-second", "x")
        .expect("HSET");
    let _: () = redis
        .set("apiproxy:tpm:bad", "a string, not a hash")
        .expect("SET");

    assert_eq!(store.get_session("bad").await, None);
    assert_eq!(store.get_catalog("bad").await, None);
    assert_eq!(
        store.get_context("bad").await,
        (Some("alice".into()), vec![json!({"ok": true})])
    );
    let d = store.hit_requests("bad", 1).await;
    assert!(d.allowed, "garbage in a window counts for nothing");
    // A value of the wrong type makes Redis refuse the script: answered locally, Redis still up.
    assert!(store.check_tokens("bad", 10).await.allowed);
    assert!(store.healthy());

    // Binding over a corrupt value starts a fresh binding.
    store.bind_session(binding("bad", "openai")).await;
    let fresh = store.get_session("bad").await.expect("rebound");
    assert_eq!(fresh.message_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_then_connects_in_the_background() {
    let mut server = RedisServer::start();
    server.stop();
    // Open does not hang on a dead Redis (a generous bound: only a hang fails).
    let store = tokio::time::timeout(
        Duration::from_secs(15),
        open(options(&server.url, "apiproxy:")),
    )
    .await
    .expect("open answers with Redis down");
    assert_eq!(store.kind(), "redis");
    assert!(!store.healthy());

    // Everything works locally meanwhile.
    store.bind_session(binding("s", "openai")).await;
    assert_eq!(
        store.get_session("s").await.map(|b| b.provider_id),
        Some("openai".into())
    );
    assert!(store.hit_requests("k", 1).await.allowed);
    assert!(!store.hit_requests("k", 1).await.allowed);

    server.restart();
    let up = eventually(20, || store.healthy()).await;
    assert!(up, "connected once Redis is there");
    let other = open(options(&server.url, "apiproxy:")).await;
    store.bind_session(binding("shared", "claude")).await;
    assert_eq!(
        other.get_session("shared").await.map(|b| b.provider_id),
        Some("claude".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_url_answers_locally() {
    let store = open(StoreOptions {
        redis_url: Some("http://:hunter2@example.com".into()),
        ..StoreOptions::default()
    })
    .await;
    assert_eq!(store.kind(), "redis");
    assert!(!store.healthy());
    store.put_catalog("p", &["m".to_string()]).await;
    assert_eq!(store.get_catalog("p").await, Some(vec!["m".to_string()]));
}

#[test]
fn store_outlives_the_runtime_that_opened_it() {
    let server = RedisServer::start();
    // The gateway may open the store on a throwaway runtime and use it from Pingora's.
    let opener = tokio::runtime::Runtime::new().expect("runtime");
    let store: Arc<dyn Store> = opener.block_on(open(options(&server.url, "apiproxy:")));
    drop(opener);
    let user = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    user.block_on(async {
        assert!(store.healthy());
        store.bind_session(binding("s", "openai")).await;
        assert!(store.get_session("s").await.is_some());
        assert!(store.healthy(), "answered by Redis, not the fallback");
    });
    let mut redis = direct(&server);
    assert!(redis
        .exists::<_, bool>("apiproxy:session:s")
        .expect("EXISTS"));
}
