//! Admission (every limit of a request, a budget included, checked and counted in one call), token and cost
//! reservations and their settlement, deferred writes and their flush, session owners and context byte bounds:
//! the same behaviour on the memory store, on one Redis and on a Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use apiproxy_store::testing::{query, RedisCluster, RedisServer};
use apiproxy_store::{
    open, BoundUpstream, Deferred, LimitBucket, LimitKind, SessionBinding, SpendLimit, SpendState,
    Store, StoreOptions,
};
use serde_json::json;

fn options(redis_url: Option<String>) -> StoreOptions {
    StoreOptions {
        redis_url,
        key_prefix: "adm:".into(),
        context_max_entries: 10,
        context_max_entry_bytes: 100,
        context_max_session_bytes: 250,
        ..StoreOptions::default()
    }
}

fn bucket(name: &str, rpm: Option<u64>, tpm: Option<u64>) -> LimitBucket {
    LimitBucket {
        name: name.into(),
        rpm,
        tpm,
    }
}

fn binding(id: &str, owner: Option<&str>, provider: &str) -> SessionBinding {
    let upstream = BoundUpstream {
        logical_model: "fast",
        provider_id: provider,
        model_id: "m",
        key_index: 0,
    };
    SessionBinding::new(id, owner, upstream)
}

async fn suite(store: Arc<dyn Store>) {
    per_key_first_and_refusals_consume_nothing(store.as_ref()).await;
    reservations_bound_concurrent_overshoot(store.clone()).await;
    deferred_writes_land_after_flush(store.as_ref()).await;
    sessions_belong_to_their_key(store.as_ref()).await;
    context_is_bounded_in_bytes(store.as_ref()).await;
    a_window_named_twice_counts_twice(store.as_ref()).await;
    a_small_tpm_admits_a_first_large_request(store.as_ref()).await;
    budgets_are_reserved_with_the_rate_limits(store.clone()).await;
    budget_and_rate_limits_refuse_together(store.as_ref()).await;
}

fn spend(name: &str, limit: u64, reserve: u64) -> SpendLimit {
    SpendLimit {
        name: name.into(),
        limit,
        reserve,
        ttl: Duration::from_secs(600),
    }
}

/// A reservation is capped at what the window has left: a request larger than a small tpm is admitted into an
/// empty window (and fills it), the next is refused.
async fn a_small_tpm_admits_a_first_large_request(store: &dyn Store) {
    let small = [bucket("key:small", None, Some(50))];
    let a = store.admit(&small, 500).await;
    assert!(a.admitted());
    assert_eq!(a.reservation.tokens, 50, "capped at what was left");
    assert!(!store.admit(&small, 500).await.admitted());
}

/// Twenty concurrent admissions against a budget of 100, each reserving 40: the budget admits while the counter
/// (reservations included) is under it, so 0, 40 and 80 (that one reserving the 20 left) go ahead. Settling
/// replaces each reservation by the real cost.
async fn budgets_are_reserved_with_the_rate_limits(store: Arc<dyn Store>) {
    let buckets = vec![bucket("key:dave", Some(1000), Some(100_000))];
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, buckets) = (store.clone(), buckets.clone());
        tasks.push(tokio::spawn(async move {
            store
                .admit_spending(&buckets, 10, Some(&spend("budget:dave", 100, 40)))
                .await
        }));
    }
    let mut reserved = Vec::new();
    for t in tasks {
        let a = t.await.expect("admission task");
        let d = a.spend.expect("a spend decision");
        if a.admitted() {
            assert_eq!(d.state, SpendState::Reserved);
            reserved.push(d.reserved);
        } else {
            assert_eq!(d.state, SpendState::Exhausted, "{a:?}");
            assert_eq!(d.reserved, 0);
        }
    }
    reserved.sort_unstable();
    assert_eq!(
        reserved,
        [20, 40, 40],
        "0, 40 and 80 are under 100; 100 is not"
    );
    assert_eq!(
        store
            .add_spend("budget:dave", 0, Duration::from_secs(600))
            .await,
        100
    );
    // The refused ones counted nowhere: 3 requests in the rpm window.
    assert_eq!(
        store.hit_requests("key:dave", 1000).await.remaining,
        1000 - 4
    );
    for r in reserved {
        store.defer(Deferred::Spend {
            name: "budget:dave".into(),
            reserved: r,
            spent: 7,
            ttl: Duration::from_secs(600),
        });
    }
    store.flush().await;
    assert_eq!(
        store
            .add_spend("budget:dave", 0, Duration::from_secs(600))
            .await,
        21,
        "the reservations are gone, the real cost counts"
    );
    // A settlement never takes a counter below zero.
    store.defer(Deferred::Spend {
        name: "budget:dave".into(),
        reserved: 1000,
        spent: 0,
        ttl: Duration::from_secs(600),
    });
    store.flush().await;
    assert_eq!(
        store
            .add_spend("budget:dave", 0, Duration::from_secs(600))
            .await,
        0
    );
}

/// A spent budget counts the request in no rate window; a rate limit that refuses reserves nothing of the budget.
async fn budget_and_rate_limits_refuse_together(store: &dyn Store) {
    let ttl = Duration::from_secs(600);
    store.add_spend("budget:erin", 100, ttl).await;
    let erin = [bucket("key:erin", Some(5), Some(1000))];
    let a = store
        .admit_spending(&erin, 10, Some(&spend("budget:erin", 100, 1)))
        .await;
    assert!(!a.admitted());
    assert_eq!(a.refused, None, "the rate limits had room");
    assert_eq!(
        a.spend.map(|d| (d.state, d.spent)),
        Some((SpendState::Exhausted, 100))
    );
    assert_eq!(store.hit_requests("key:erin", 5).await.remaining, 4);
    assert_eq!(store.check_tokens("key:erin", 1000).await.remaining, 1000);

    let full = [bucket("key:frank", Some(0), None)];
    let a = store
        .admit_spending(&full, 10, Some(&spend("budget:frank", 100, 30)))
        .await;
    assert_eq!(a.refused, Some((0, LimitKind::Requests)));
    assert_eq!(a.spend.map(|d| d.reserved), Some(0));
    assert_eq!(store.add_spend("budget:frank", 0, ttl).await, 0);
    // A budget alone (no rate limit at all) is checked too.
    let a = store
        .admit_spending(&[], 0, Some(&spend("budget:frank", 100, 30)))
        .await;
    assert!(a.admitted());
    assert_eq!(store.add_spend("budget:frank", 0, ttl).await, 30);
    // Large amounts stay exact integers (Lua numbers are doubles).
    let big = 1_000_000_000_000_000;
    let a = store
        .admit_spending(&[], 0, Some(&spend("budget:big", 10 * big, big)))
        .await;
    assert!(a.admitted(), "{a:?}");
    assert_eq!(store.add_spend("budget:big", 0, ttl).await, big);
}

/// Two buckets of one request naming the same window count the request in it twice (Redis reads every window
/// before it writes any: the second write must not overwrite the first), and the counts carry on after.
async fn a_window_named_twice_counts_twice(store: &dyn Store) {
    let twice = [
        bucket("key:twice", Some(5), None),
        bucket("key:twice", Some(5), None),
    ];
    let a = store.admit(&twice, 0).await;
    assert!(a.admitted());
    assert_eq!(store.hit_requests("key:twice", 5).await.remaining, 2);
    let a = store.admit(&twice, 0).await;
    assert!(a.admitted());
    assert_eq!(a.buckets[1].requests.map(|d| d.remaining), Some(1));
    assert!(!store.hit_requests("key:twice", 5).await.allowed);
}

/// A key over its own rpm is refused without using the gateway-wide rpm; a request the gateway-wide rpm refuses
/// leaves the key's count alone.
async fn per_key_first_and_refusals_consume_nothing(store: &dyn Store) {
    let alice = [
        bucket("key:alice", Some(2), None),
        bucket("global", Some(4), None),
    ];
    let carol = [
        bucket("key:carol", Some(10), None),
        bucket("global", Some(4), None),
    ];
    for i in 0..2 {
        let a = store.admit(&alice, 0).await;
        assert!(a.admitted(), "alice {i}");
        assert_eq!(a.buckets[0].requests.map(|d| d.remaining), Some(1 - i));
    }
    for _ in 0..5 {
        let a = store.admit(&alice, 0).await;
        assert_eq!(a.refused, Some((0, LimitKind::Requests)));
        let d = a.buckets[0].requests.expect("alice's rpm");
        assert!((1..=60).contains(&d.retry_after_secs), "{d:?}");
    }
    // The global rpm of 4 saw only alice's two admitted requests.
    for i in 0..2 {
        assert!(store.admit(&carol, 0).await.admitted(), "carol {i}");
    }
    let refused = store.admit(&carol, 0).await;
    assert_eq!(refused.refused, Some((1, LimitKind::Requests)));
    // ... and carol's own count did not move for the refused request.
    assert_eq!(refused.buckets[0].requests.map(|d| d.remaining), Some(8));
    assert_eq!(store.hit_requests("key:carol", 10).await.remaining, 7);
}

/// Twenty concurrent admissions against a tpm of 100, each reserving 40: only those admitted while the window
/// was under the limit go ahead (three: 0, 40, 80), whatever the order; settling replaces the reservations.
async fn reservations_bound_concurrent_overshoot(store: Arc<dyn Store>) {
    let buckets = vec![bucket("key:bob", None, Some(100))];
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, buckets) = (store.clone(), buckets.clone());
        tasks.push(tokio::spawn(async move { store.admit(&buckets, 40).await }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        let a = t.await.expect("admission task");
        if a.admitted() {
            admitted.push(a);
        } else {
            assert_eq!(a.refused, Some((0, LimitKind::Tokens)));
        }
    }
    assert_eq!(admitted.len(), 3, "0, 40 and 80 are under 100; 100 is not");
    assert_eq!(
        store.check_tokens("key:bob", 1000).await.remaining,
        1000 - 100,
        "the third reservation is capped at the 20 left"
    );
    for a in &admitted {
        store.defer(Deferred::Settle {
            buckets: vec!["key:bob".into()],
            reservation: a.reservation,
            used: 10,
        });
    }
    store.flush().await;
    assert_eq!(
        store.check_tokens("key:bob", 1000).await.remaining,
        1000 - 30,
        "the reservations are gone, the real usage counts"
    );
    assert!(store.admit(&buckets, 40).await.admitted());
}

async fn deferred_writes_land_after_flush(store: &dyn Store) {
    store.defer(Deferred::Bind(binding("d1", Some("alice"), "openai")));
    store.defer(Deferred::Context {
        session: "d1".into(),
        owner: "alice".into(),
        entry: json!({"n": 1}),
    });
    store.flush().await;
    let b = store.get_session("d1").await.expect("bound");
    assert_eq!(b.provider_id, "openai");
    assert_eq!(b.owner.as_deref(), Some("alice"));
    assert_eq!(store.get_context("d1").await.1, vec![json!({"n": 1})]);
}

async fn sessions_belong_to_their_key(store: &dyn Store) {
    store
        .bind_session(binding("own", Some("alice"), "openai"))
        .await;
    store
        .bind_session(binding("own", Some("mallory"), "claude"))
        .await;
    let b = store.get_session("own").await.expect("bound");
    assert_eq!(b.provider_id, "openai", "another key does not move it");
    assert_eq!(b.message_count, 1);
    assert!(b.belongs_to(Some("alice")) && !b.belongs_to(Some("mallory")));
    store
        .bind_session(binding("own", Some("alice"), "gemini"))
        .await;
    let b = store.get_session("own").await.expect("bound");
    assert_eq!((b.provider_id.as_str(), b.message_count), ("gemini", 2));
}

/// Entries over 100 bytes are not kept; a session keeps at most 250 bytes, the oldest going first. Keys and
/// numbers count, not only strings.
async fn context_is_bounded_in_bytes(store: &dyn Store) {
    let big_keys: serde_json::Map<String, serde_json::Value> =
        (0..20).map(|i| (format!("k{i:03}"), json!(i))).collect();
    store
        .push_context("b", "alice", serde_json::Value::Object(big_keys))
        .await;
    assert_eq!(
        store.get_context("b").await.1,
        Vec::<serde_json::Value>::new()
    );
    let entry =
        |i: u64| json!({"i": i, "pad": [1000000, 2000000, 3000000, 4000000, 5000000, 6000000]});
    let size = serde_json::to_vec(&entry(0)).unwrap().len();
    assert!((50..=100).contains(&size), "{size}");
    for i in 0..6 {
        store.push_context("b", "alice", entry(i)).await;
    }
    let (_, kept) = store.get_context("b").await;
    let expected = 250 / size;
    assert_eq!(kept.len(), expected);
    assert_eq!(kept[0]["i"], 5, "newest first");
    let bytes: usize = kept
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap().len())
        .sum();
    assert!(bytes <= 250, "{bytes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_admission() {
    suite(open(options(None)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_admission() {
    let server = RedisServer::start();
    let store = open(options(Some(server.url.clone()))).await;
    assert!(store.healthy());
    suite(store.clone()).await;
    assert!(store.healthy(), "every call was answered by Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_admission() {
    let cluster = RedisCluster::start();
    let store = open(options(Some(cluster.url.clone()))).await;
    assert!(store.healthy());
    suite(store.clone()).await;
    assert!(store.healthy(), "every call was answered by the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_cannot_overshoot_tpm_together() {
    let server = RedisServer::start();
    let a = open(options(Some(server.url.clone()))).await;
    let b = open(options(Some(server.url.clone()))).await;
    let buckets = vec![bucket("key:shared", None, Some(100))];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let buckets = buckets.clone();
        tasks.push(tokio::spawn(async move {
            store.admit(&buckets, 40).await.admitted()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.expect("task"));
    }
    assert_eq!(admitted, 3);
}

/// A budget cannot be checked while Redis is down: refused (fail closed), nothing counted; rate limits alone keep
/// the local fallback. A spend counter that is not a number fails closed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_fail_closed_when_redis_cannot_answer() {
    let mut server = RedisServer::start();
    let store = open(options(Some(server.url.clone()))).await;
    let buckets = [bucket("key:gina", Some(10), None)];
    let limit = spend("budget:gina", 1000, 10);
    assert!(store
        .admit_spending(&buckets, 0, Some(&limit))
        .await
        .admitted());
    query(
        server.port,
        &["SET", "adm:spend:budget:junk", "not a number"],
    )
    .expect("SET");
    let junk = store
        .admit_spending(&buckets, 0, Some(&spend("budget:junk", 1000, 10)))
        .await;
    assert_eq!(junk.spend.map(|d| d.state), Some(SpendState::Unknown));
    assert!(!junk.admitted());
    server.stop();
    let a = store.admit_spending(&buckets, 0, Some(&limit)).await;
    assert_eq!(a.spend.map(|d| d.state), Some(SpendState::Unknown));
    assert!(!a.admitted(), "{a:?}");
    assert!(
        store.admit(&buckets, 0).await.admitted(),
        "rate limits alone degrade to local counting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_writes_what_was_deferred_before_the_store_goes() {
    let server = RedisServer::start();
    let store = open(options(Some(server.url.clone()))).await;
    for i in 0..500 {
        store.defer(Deferred::Bind(binding(&format!("f{i}"), None, "openai")));
    }
    store.flush().await;
    drop(store);
    let other = open(options(Some(server.url.clone()))).await;
    for i in [0, 250, 499] {
        assert!(other.get_session(&format!("f{i}")).await.is_some(), "f{i}");
    }
}

/// A Redis window whose buckets are older than a minute (written "in the past" by hand): they stop counting,
/// are removed, and the running total follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_windows_forget_buckets_older_than_a_minute() {
    use apiproxy_store::testing::{query, Reply};
    let server = RedisServer::start();
    let store = open(options(Some(server.url.clone()))).await;
    let now: i64 = match query(server.port, &["TIME"]) {
        Ok(Reply::Array(t)) => t[0].clone().text().unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    };
    let key = "adm:rpm:key:old";
    let (old, recent, stale_mark) = (now - 65, now - 10, now - 70);
    let hset = query(
        server.port,
        &[
            "HSET",
            key,
            &old.to_string(),
            "3",
            &recent.to_string(),
            "2",
            "n",
            "5",
            "o",
            &stale_mark.to_string(),
        ],
    );
    assert_eq!(hset, Ok(Reply::Int(4)));
    // Limit 3: the 3 requests of 65 s ago no longer count, the 2 of 10 s ago do.
    let d = store.hit_requests("key:old", 3).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.remaining, 0);
    let d = store.hit_requests("key:old", 3).await;
    assert!(!d.allowed);
    // The bucket of 10 s ago frees up in 50 s (49 if a second ticked since TIME was read).
    assert!((49..=50).contains(&d.retry_after_secs), "{d:?}");
    let old_field = query(server.port, &["HEXISTS", key, &old.to_string()]);
    assert_eq!(old_field, Ok(Reply::Int(0)), "the stale bucket is removed");
    // An admission's first write of a second restarts the window's TTL (just over a minute).
    assert!(store
        .admit(&[bucket("key:ttl", Some(3), Some(100))], 7)
        .await
        .admitted());
    for key in ["adm:rpm:key:ttl", "adm:tpm:key:ttl"] {
        match query(server.port, &["TTL", key]) {
            Ok(Reply::Int(t)) => assert!((55..=61).contains(&t), "{key}: TTL {t}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(
        query(server.port, &["HGET", "adm:tpm:key:ttl", "n"]),
        Ok(Reply::Bulk(Some("7".into())))
    );
    assert!(store.healthy());
}
