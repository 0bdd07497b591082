//! The response cache of both stores: entries read back while they live, the byte bound (`cache_max_bytes`) held
//! by evicting the oldest written, entries over the whole bound not kept, the TTL kept in the store; on Redis the
//! bound is shared by every replica on it.

use std::sync::Arc;
use std::time::Duration;

use apiproxy_store::testing::{RedisCluster, RedisServer};
use apiproxy_store::{open, Deferred, Store, StoreOptions};

/// Room for three 100-byte entries (keys are 2 bytes: `k0`, `k1`, ...).
const BOUND: usize = 3 * 102;

fn options(redis_url: Option<String>, prefix: &str) -> StoreOptions {
    StoreOptions {
        redis_url,
        key_prefix: prefix.into(),
        cache_max_bytes: BOUND,
        ..StoreOptions::default()
    }
}

fn put(store: &dyn Store, key: &str, fill: u8, ttl: Duration) {
    store.defer(Deferred::Cache {
        key: key.into(),
        value: vec![fill; 100],
        ttl,
    });
}

const LONG: Duration = Duration::from_secs(600);

async fn suite(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(s.get_cached("k0").await, None, "an empty cache misses");
    // One at a time: the writes of one batch go out together, and on a
    // Cluster they may reach Redis in any order ("oldest" below is the
    // first written).
    for (i, key) in ["k0", "k1", "k2"].iter().enumerate() {
        put(s, key, i as u8, LONG);
        s.flush().await;
    }
    for (i, key) in ["k0", "k1", "k2"].iter().enumerate() {
        assert_eq!(s.get_cached(key).await, Some(vec![i as u8; 100]), "{key}");
    }
    // A fourth entry does not fit: the oldest written goes.
    put(s, "k3", 3, LONG);
    s.flush().await;
    assert_eq!(s.get_cached("k0").await, None, "the oldest was evicted");
    for key in ["k1", "k2", "k3"] {
        assert!(s.get_cached(key).await.is_some(), "{key} kept");
    }
    // Rewriting an entry counts it once and makes it the newest.
    put(s, "k1", 9, LONG);
    put(s, "k4", 4, LONG);
    s.flush().await;
    assert_eq!(s.get_cached("k2").await, None, "now k2 was the oldest");
    assert_eq!(s.get_cached("k1").await, Some(vec![9; 100]));
    assert!(s.get_cached("k3").await.is_some());
    assert!(s.get_cached("k4").await.is_some());
    // An entry larger than the whole bound is not kept, and evicts nothing.
    s.defer(Deferred::Cache {
        key: "big".into(),
        value: vec![0; BOUND],
        ttl: LONG,
    });
    s.flush().await;
    assert_eq!(s.get_cached("big").await, None);
    assert!(s.get_cached("k4").await.is_some(), "nothing evicted for it");
    // The TTL is the store's.
    put(s, "short", 7, Duration::from_millis(300));
    s.flush().await;
    assert_eq!(s.get_cached("short").await, Some(vec![7; 100]));
    let expired = async {
        while s.get_cached("short").await.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), expired)
        .await
        .expect("a 300 ms entry expires (waited 30 s)");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_cache_is_bounded_and_expires() {
    suite(open(options(None, "c:")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_store_cache_is_bounded_and_expires() {
    let server = RedisServer::start();
    suite(open(options(Some(server.url.clone()), "c:")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_cache_is_bounded_and_expires() {
    let cluster = RedisCluster::start();
    suite(open(options(Some(cluster.url.clone()), "c:")).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_one_redis_share_entries_and_one_bound() {
    let server = RedisServer::start();
    let a = open(options(Some(server.url.clone()), "shared:")).await;
    let b = open(options(Some(server.url.clone()), "shared:")).await;
    put(a.as_ref(), "k0", 1, LONG);
    a.flush().await;
    assert_eq!(
        b.get_cached("k0").await,
        Some(vec![1; 100]),
        "b reads a's entry"
    );
    // Three more from b: the bound is one for both, so a's entry (the oldest) goes.
    for key in ["k1", "k2", "k3"] {
        put(b.as_ref(), key, 2, LONG);
    }
    b.flush().await;
    assert_eq!(a.get_cached("k0").await, None);
    assert!(a.get_cached("k3").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_a_read_is_a_quick_miss_and_entries_are_kept_locally() {
    let mut server = RedisServer::start();
    let store = open(options(Some(server.url.clone()), "down:")).await;
    put(store.as_ref(), "shared", 1, LONG);
    store.flush().await;
    assert!(store.get_cached("shared").await.is_some());
    server.stop();
    let read = tokio::time::timeout(Duration::from_secs(5), store.get_cached("shared"));
    assert_eq!(
        read.await.expect("a read answers with Redis down"),
        None,
        "what only Redis held is a miss"
    );
    // Written while Redis is away: kept by this replica and read back.
    put(store.as_ref(), "local", 2, LONG);
    store.flush().await;
    let read = tokio::time::timeout(Duration::from_secs(5), store.get_cached("local"));
    assert_eq!(read.await.expect("answers"), Some(vec![2; 100]));
}
