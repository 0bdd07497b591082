//! One behavioural suite, run against the memory store and against a real Redis: both must behave the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiproxy_store::testing::RedisServer;
use apiproxy_store::{open, BoundUpstream, Deferred, SessionBinding, Store, StoreOptions};
use serde_json::json;

/// Short enough to watch entries expire, long enough that a busy machine
/// does not expire them between two steps of a test.
const TTL: Duration = Duration::from_secs(2);
/// How long an expiry may take to show: generous, for a busy machine.
const EXPIRY_PATIENCE: Duration = Duration::from_secs(15);

fn options(redis_url: Option<String>) -> StoreOptions {
    StoreOptions {
        redis_url,
        key_prefix: "test:".into(),
        session_ttl: TTL,
        context_max_entries: 3,
        context_ttl: TTL,
        catalog_ttl: TTL,
        ..StoreOptions::default()
    }
}

fn binding(id: &str, provider: &str, key_index: usize) -> SessionBinding {
    let model = format!("{provider}-model");
    let upstream = BoundUpstream {
        logical_model: "fast",
        provider_id: provider,
        model_id: &model,
        key_index,
    };
    SessionBinding::new(id, None, upstream)
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Polls `check` until it holds; false if it never did within
/// [`EXPIRY_PATIENCE`].
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EXPIRY_PATIENCE;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        sleep_ms(50).await;
    }
    check().await
}

/// The whole suite; every part uses its own names, so they could run in any order.
async fn behaviour_suite(store: Arc<dyn Store>) {
    // The TTL waits dominate: run the parts that wait concurrently.
    tokio::join!(
        sessions(store.as_ref()),
        session_ttl(store.as_ref()),
        context(store.as_ref()),
        catalog(store.as_ref()),
        request_limit(store.as_ref()),
        token_limit(store.as_ref()),
    );
}

async fn sessions(store: &dyn Store) {
    assert_eq!(store.get_session("s-bind").await, None);
    assert!(
        !store.delete_session("s-bind").await,
        "nothing to delete yet"
    );

    store.bind_session(binding("s-bind", "openai", 1)).await;
    let first = store.get_session("s-bind").await.expect("bound");
    assert_eq!(first.provider_id, "openai");
    assert_eq!(first.model_id, "openai-model");
    assert_eq!(first.key_index, 1);
    assert_eq!(first.logical_model, "fast");
    assert_eq!(first.message_count, 1);
    assert!(
        first.created_at > 1.6e9,
        "created_at is unix seconds: {}",
        first.created_at
    );
    assert!(first.last_accessed >= first.created_at);

    sleep_ms(20).await;
    // Moving the binding keeps its creation time and counts the message.
    store.bind_session(binding("s-bind", "claude", 0)).await;
    let moved = store.get_session("s-bind").await.expect("still bound");
    assert_eq!(moved.provider_id, "claude");
    assert_eq!(moved.key_index, 0);
    assert_eq!(moved.created_at, first.created_at);
    assert!(moved.last_accessed > first.last_accessed);
    assert_eq!(moved.message_count, 2);

    // Sessions are independent.
    assert_eq!(store.get_session("s-other").await, None);

    assert!(store.delete_session("s-bind").await);
    assert_eq!(store.get_session("s-bind").await, None);
    assert!(!store.delete_session("s-bind").await);
}

async fn session_ttl(store: &dyn Store) {
    // Each bind starts the TTL again: a binding refreshed 0.6 TTL after it
    // was made is still there 1.2 TTL after it was made. That check means
    // something only when it runs less than a TTL after the refresh; when
    // the machine was too busy for that, it is tried again.
    let margin = Duration::from_millis(150);
    let mut kept = None;
    for _ in 0..5 {
        store.bind_session(binding("s-ttl", "openai", 0)).await;
        let made = Instant::now();
        sleep_ms(TTL.as_millis() as u64 * 6 / 10).await;
        let refreshed = Instant::now();
        store.bind_session(binding("s-ttl", "openai", 0)).await;
        sleep_ms(TTL.as_millis() as u64 * 6 / 10).await;
        let asked = Instant::now();
        let got = store.get_session("s-ttl").await;
        let answered = Instant::now();
        if asked - made > TTL + margin && answered - refreshed < TTL - margin {
            kept = Some(got.expect("a refreshed binding is still there"));
            break;
        }
        store.delete_session("s-ttl").await;
    }
    let kept = kept.expect("five tries, each too slow to check the TTL refresh");
    assert_eq!(kept.message_count, 2);
    assert!(
        eventually(|| async { store.get_session("s-ttl").await.is_none() }).await,
        "the binding expires a TTL after the last bind"
    );
    // A new binding after expiry starts over.
    store.bind_session(binding("s-ttl", "gemini", 0)).await;
    let again = store.get_session("s-ttl").await.expect("bound again");
    assert_eq!(again.message_count, 1);
    assert!(again.created_at > kept.created_at);
}

async fn context(store: &dyn Store) {
    assert_eq!(store.get_context("c1").await, (None, vec![]));
    for i in 1..=5 {
        store
            .push_context(
                "c1",
                "alice",
                json!({"request": {"n": i}, "response": format!("answer {i}")}),
            )
            .await;
    }
    let (owner, history) = store.get_context("c1").await;
    assert_eq!(owner.as_deref(), Some("alice"));
    // Newest first, capped at 3.
    let numbers: Vec<_> = history.iter().map(|e| e["request"]["n"].clone()).collect();
    assert_eq!(numbers, vec![json!(5), json!(4), json!(3)]);
    assert_eq!(history[0]["response"], json!("answer 5"));

    // Another key cannot write into alice's context.
    store
        .push_context("c1", "bob", json!({"request": "injected"}))
        .await;
    let (owner, history) = store.get_context("c1").await;
    assert_eq!(owner.as_deref(), Some("alice"));
    assert_eq!(history.len(), 3);
    assert_eq!(history[0]["request"]["n"], json!(5));

    // Another session is separate.
    store.push_context("c2", "bob", json!("b")).await;
    assert_eq!(
        store.get_context("c2").await,
        (Some("bob".into()), vec![json!("b")])
    );

    // The context expires one TTL after its last push; then anyone may start it anew.
    assert!(
        eventually(|| async { store.get_context("c1").await == (None, vec![]) }).await,
        "the context expires"
    );
    store.push_context("c1", "bob", json!("new")).await;
    assert_eq!(
        store.get_context("c1").await,
        (Some("bob".into()), vec![json!("new")])
    );
}

async fn catalog(store: &dyn Store) {
    assert_eq!(store.get_catalog("openai").await, None);
    let models = vec!["gpt-4o".to_string(), "gpt-4o-mini".to_string()];
    store.put_catalog("openai", &models).await;
    assert_eq!(store.get_catalog("openai").await, Some(models.clone()));
    assert_eq!(store.get_catalog("claude").await, None);
    store.put_catalog("claude", &[]).await;
    assert_eq!(
        store.get_catalog("claude").await,
        Some(vec![]),
        "an empty list is a cached answer"
    );
    assert!(
        eventually(|| async { store.get_catalog("openai").await.is_none() }).await,
        "the catalog expires"
    );
}

async fn request_limit(store: &dyn Store) {
    for i in 0..5 {
        let d = store.hit_requests("key:alice", 5).await;
        assert!(d.allowed, "request {} of 5", i + 1);
        assert_eq!(d.limit, 5);
        assert_eq!(d.remaining, 4 - i);
        assert_eq!(d.retry_after_secs, 0);
    }
    let sixth = store.hit_requests("key:alice", 5).await;
    assert!(
        !sixth.allowed,
        "the sixth request within a minute is refused"
    );
    assert_eq!(sixth.remaining, 0);
    assert!((1..=60).contains(&sixth.retry_after_secs), "{sixth:?}");
    // Refusals do not count, and other names have their own window.
    assert!(!store.hit_requests("key:alice", 5).await.allowed);
    assert!(
        store.hit_requests("key:alice", 7).await.allowed,
        "a higher limit lets more through"
    );
    let bob = store.hit_requests("key:bob", 5).await;
    assert!(bob.allowed);
    assert_eq!(bob.remaining, 4);
}

async fn token_limit(store: &dyn Store) {
    let fresh = store.check_tokens("key:carol", 100).await;
    assert!(fresh.allowed);
    assert_eq!(fresh.remaining, 100);
    // Checking adds nothing.
    assert_eq!(store.check_tokens("key:carol", 100).await.remaining, 100);

    store.add_tokens("key:carol", 60).await;
    let d = store.check_tokens("key:carol", 100).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, 40);

    store.add_tokens("key:carol", 0).await;
    store.add_tokens("key:carol", 50).await;
    let d = store.check_tokens("key:carol", 100).await;
    assert!(!d.allowed, "110 tokens used of 100");
    assert_eq!(d.remaining, 0);
    assert!((1..=60).contains(&d.retry_after_secs), "{d:?}");
    // Token and request windows of one name are separate.
    assert!(store.hit_requests("key:carol", 1).await.allowed);
    assert!(store.check_tokens("key:dave", 100).await.allowed);
}

/// Claims (`a` and `b`: two replicas on one Redis, or one memory store twice): an unbound session goes to one
/// claim only, however many race; a claim that saw the binding moves it, one that saw another leaves it.
async fn claims(a: &dyn Store, b: &dyn Store) {
    for i in 0..20 {
        let id = format!("s-claim-{i}");
        let (x, y) = tokio::join!(
            a.claim_session(binding(&id, "openai", 0), None),
            b.claim_session(binding(&id, "claude", 0), None),
        );
        let (x, y) = (
            x.expect("a's claim answered"),
            y.expect("b's claim answered"),
        );
        assert_eq!(x.provider_id, y.provider_id, "one winner for {id}");
        assert_eq!(x.message_count, 1, "{x:?}");
        let stored = b.get_session(&id).await.expect("bound");
        assert_eq!(stored.provider_id, x.provider_id);
    }

    let id = "s-claim-move";
    let first = a
        .claim_session(binding(id, "openai", 0), None)
        .await
        .expect("claimed");
    assert_eq!(
        (first.provider_id.as_str(), first.message_count),
        ("openai", 1)
    );
    // Saw a binding that is not the live one: nothing moves.
    let stale = b
        .claim_session(binding(id, "claude", 0), Some(&binding(id, "gemini", 0)))
        .await
        .expect("answered");
    assert_eq!(stale.provider_id, "openai");
    // Saw the live one: it moves, keeping its history.
    let moved = b
        .claim_session(binding(id, "claude", 1), Some(&first))
        .await
        .expect("moved");
    assert_eq!(moved.provider_id, "claude");
    assert_eq!(moved.key_index, 1);
    assert_eq!(moved.message_count, 2);
    assert!(
        (moved.created_at - first.created_at).abs() < 1e-3,
        "{moved:?}"
    );
    // A replica that still saw the first binding cannot move it back.
    let late = a
        .claim_session(binding(id, "openai", 0), Some(&first))
        .await
        .expect("answered");
    assert_eq!(late.provider_id, "claude");
    // Another client key's session is never claimed.
    let mut other = binding(id, "openai", 0);
    other.owner = Some("mallory".into());
    let kept = a
        .claim_session(other, Some(&moved))
        .await
        .expect("answered");
    assert_eq!(kept.provider_id, "claude");
    // Deferred, the same rule.
    a.defer(Deferred::Claim {
        binding: binding(id, "gemini", 0),
        expected: Some(Box::new(moved.clone())),
    });
    a.flush().await;
    let now = b.get_session(id).await.expect("bound");
    assert_eq!((now.provider_id.as_str(), now.message_count), ("gemini", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_behaviour() {
    let store = open(options(None)).await;
    assert_eq!(store.kind(), "memory");
    assert!(store.healthy());
    claims(store.as_ref(), store.as_ref()).await;
    behaviour_suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_behaviour() {
    let server = RedisServer::start();
    let store = open(options(Some(server.url.clone()))).await;
    assert_eq!(store.kind(), "redis");
    assert!(store.healthy(), "connected at open");
    let replica = open(options(Some(server.url.clone()))).await;
    claims(store.as_ref(), replica.as_ref()).await;
    assert!(replica.healthy(), "the replica's claims reached Redis");
    behaviour_suite(store.clone()).await;
    assert!(store.healthy(), "no fallback was needed");
    // And the state really is in Redis, not in the fallback.
    let mut redis = redis::Client::open(server.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("a direct connection");
    for key in [
        "test:rpm:key:alice",
        "test:tpm:key:carol",
        "test:session:s-ttl",
        "test:context:c1",
    ] {
        assert!(
            redis::Commands::exists::<_, bool>(&mut redis, key).expect("EXISTS"),
            "{key} in Redis"
        );
    }
}
