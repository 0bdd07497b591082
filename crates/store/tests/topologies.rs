//! Past one Redis: the store on a Redis Cluster (keys spread over the masters, every script on one slot) and
//! behind Sentinels (it follows a failover to the promoted replica).

use std::time::{Duration, Instant};

use apiproxy_store::testing::{query, RedisCluster, RedisSentinel, Reply};
use apiproxy_store::{open, BoundUpstream, LimitBucket, SessionBinding, StoreOptions};
use serde_json::json;

fn options(url: &str) -> StoreOptions {
    StoreOptions {
        redis_url: Some(url.to_string()),
        key_prefix: "topo:".into(),
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
    SessionBinding::new(id, Some("alice"), upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_spreads_sessions_and_keeps_each_script_on_one_slot() {
    let cluster = RedisCluster::start();
    let a = open(options(&cluster.url)).await;
    let b = open(options(&cluster.url)).await;
    assert!(a.healthy() && b.healthy());
    for i in 0..30 {
        a.bind_session(binding(&format!("s{i}"), "openai")).await;
        a.push_context(&format!("s{i}"), "alice", json!({"i": i}))
            .await;
    }
    for i in 0..30 {
        assert_eq!(
            b.get_session(&format!("s{i}")).await.map(|s| s.provider_id),
            Some("openai".into())
        );
        assert_eq!(
            b.get_context(&format!("s{i}")).await.1,
            vec![json!({"i": i})]
        );
    }
    // Sessions land on every master; a session's context and its owner share a slot (one script writes both).
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| match query(n.port, &["KEYS", "topo:session:*"]) {
            Ok(Reply::Array(keys)) => keys.len(),
            _ => 0,
        })
        .collect();
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    assert_eq!(per_node.iter().sum::<usize>(), 30);
    assert!(cluster
        .keys()
        .contains(&"topo:context-owner:{s7}".to_string()));

    // Two replicas claiming unbound sessions at once: one winner each, on whichever master holds the session.
    for i in 0..10 {
        let id = format!("c{i}");
        let (x, y) = tokio::join!(
            a.claim_session(binding(&id, "openai"), None),
            b.claim_session(binding(&id, "claude"), None),
        );
        let (x, y) = (x.expect("claimed"), y.expect("claimed"));
        assert_eq!(x.provider_id, y.provider_id, "one winner for {id}");
        let moved = b
            .claim_session(binding(&id, "gemini"), Some(&x))
            .await
            .expect("moved");
        assert_eq!(
            (moved.provider_id.as_str(), moved.message_count),
            ("gemini", 2)
        );
    }

    // The key's and the gateway-wide limits are checked by one script: one slot ({rate}).
    let buckets = [
        LimitBucket {
            name: "key:alice".into(),
            rpm: Some(3),
            tpm: Some(1000),
        },
        LimitBucket {
            name: "global".into(),
            rpm: Some(100),
            tpm: None,
        },
    ];
    for _ in 0..3 {
        assert!(a.admit(&buckets, 10).await.admitted());
    }
    assert!(
        !b.admit(&buckets, 10).await.admitted(),
        "one limit across replicas"
    );
    assert!(
        a.healthy() && b.healthy(),
        "no call fell back to the local store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed() {
    let mut redis = RedisSentinel::start();
    let first_master = redis.master.port;
    let store = open(options(&redis.url)).await;
    assert!(store.healthy());
    store.bind_session(binding("before", "openai")).await;
    assert!(matches!(
        query(first_master, &["EXISTS", "topo:session:before"]),
        Ok(Reply::Int(1))
    ));
    // Replication is asynchronous: let the replica catch up before the master dies.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(
        query(redis.replica.port, &["EXISTS", "topo:session:before"]),
        Ok(Reply::Int(1))
    ) {
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    redis.master.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.master_port() != Some(redis.replica.port) {
        assert!(Instant::now() < deadline, "the Sentinel did not fail over");
        // Calls keep being answered meanwhile (by the local store while the master is gone).
        store.bind_session(binding("during", "claude")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The store finds the promoted replica and writes there.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        store.bind_session(binding("after", "gemini")).await;
        if matches!(
            query(redis.replica.port, &["EXISTS", "topo:session:after"]),
            Ok(Reply::Int(1))
        ) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not follow the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(store.healthy());
    // What was written before the failover was replicated and is still there.
    assert_eq!(
        store.get_session("before").await.map(|s| s.provider_id),
        Some("openai".into())
    );
}
