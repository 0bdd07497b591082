//! Usage counters ([`Store::usage`], [`Deferred::Usage`]) on every backend.

use std::sync::Arc;

use apiproxy_store::testing::{RedisCluster, RedisServer};
use apiproxy_store::usage::{day_string, today, UsageAmounts, UsageDims, UsageRecord};
use apiproxy_store::{open, Deferred, Store, StoreOptions};

fn options(redis_url: Option<String>) -> StoreOptions {
    StoreOptions {
        redis_url,
        key_prefix: format!("usage-test-{}:", std::process::id()),
        ..StoreOptions::default()
    }
}

fn record(day: &str, key: &str, model: &str, input: u64, cost_micros: u64) -> UsageRecord {
    UsageRecord {
        day: day.into(),
        dims: UsageDims {
            key_id: format!("id-{key}"),
            key_name: key.into(),
            model: model.into(),
            provider: "prov".into(),
            upstream_model: "up".into(),
        },
        amounts: UsageAmounts {
            requests: 1,
            input_tokens: input,
            output_tokens: input + 1,
            cached_input_tokens: 2,
            cost_micros,
        },
    }
}

fn count(store: &dyn Store, r: UsageRecord) {
    store.defer(Deferred::Usage(Box::new(r)));
}

/// Deltas of one row are summed, rows and days kept apart, and a range reads only its days.
async fn suite(store: Arc<dyn Store>) {
    let today = day_string(today());
    let yesterday = day_string(today_n() - 1);
    for _ in 0..3 {
        count(store.as_ref(), record(&today, "alice", "fast", 10, 1_500));
    }
    count(store.as_ref(), record(&today, "bob", "smart", 7, 20));
    count(store.as_ref(), record(&yesterday, "alice", "fast", 1, 1));
    store.flush().await;
    let rows = store.usage(&today, &today).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let alice = rows.iter().find(|r| r.dims.key_name == "alice").unwrap();
    assert_eq!(alice.dims, record(&today, "alice", "fast", 0, 0).dims);
    assert_eq!(
        alice.amounts,
        UsageAmounts {
            requests: 3,
            input_tokens: 30,
            output_tokens: 33,
            cached_input_tokens: 6,
            cost_micros: 4_500
        }
    );
    let both = store.usage(&yesterday, &today).await;
    assert_eq!(both.len(), 3);
    assert!(both
        .iter()
        .any(|r| r.day == yesterday && r.amounts.input_tokens == 1));
    assert!(store.usage("2000-01-01", "2000-01-31").await.is_empty());
}

fn today_n() -> i64 {
    today()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_usage() {
    suite(open(options(None)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_usage_survives_reopening() {
    let dir = std::env::temp_dir().join(format!("apiproxy-usage-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = StoreOptions {
        usage_path: Some(dir.join("store.redb")),
        ..options(None)
    };
    let today = day_string(today());
    {
        let store = open(opts.clone()).await;
        suite(store.clone()).await;
    }
    let store = open(opts).await;
    let rows = store.usage(&today, &today).await;
    assert_eq!(rows.len(), 2, "the file kept today's rows: {rows:?}");
    count(store.as_ref(), record(&today, "bob", "smart", 1, 0));
    store.flush().await;
    let bob = store.usage(&today, &today).await;
    let bob = bob.iter().find(|r| r.dims.key_name == "bob").unwrap();
    assert_eq!((bob.amounts.requests, bob.amounts.input_tokens), (2, 8));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_usage_is_shared_by_replicas() {
    let server = RedisServer::start();
    let a = open(options(Some(server.url.clone()))).await;
    suite(a.clone()).await;
    let b = open(options(Some(server.url.clone()))).await;
    let today = day_string(today());
    count(b.as_ref(), record(&today, "alice", "fast", 5, 0));
    b.flush().await;
    let rows = a.usage(&today, &today).await;
    let alice = rows.iter().find(|r| r.dims.key_name == "alice").unwrap();
    assert_eq!(
        (alice.amounts.requests, alice.amounts.input_tokens),
        (4, 35)
    );
    assert!(a.healthy() && b.healthy(), "answered by Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_usage() {
    let cluster = RedisCluster::start();
    let store = open(options(Some(cluster.url.clone()))).await;
    suite(store.clone()).await;
    assert!(store.healthy(), "answered by the cluster");
}
