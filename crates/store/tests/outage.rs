//! Redis lost while running: calls keep answering (locally, quickly), the metrics say so, sharing resumes after.
//! Alone in its test binary so the process-wide `apiproxy_store_redis_up` gauge is this test's alone.

use std::time::{Duration, Instant};

use apiproxy_store::testing::RedisServer;
use apiproxy_store::{open, BoundUpstream, SessionBinding, StoreOptions};
use serde_json::json;

fn binding(id: &str, provider: &str) -> SessionBinding {
    let upstream = BoundUpstream {
        logical_model: "fast",
        provider_id: provider,
        model_id: "m",
        key_index: 0,
    };
    SessionBinding::new(id, None, upstream)
}

fn metric(name: &str) -> f64 {
    prometheus::gather()
        .iter()
        .find(|family| family.name() == name)
        .and_then(|family| family.get_metric().first().cloned())
        .map(|m| {
            if m.get_counter().is_some() {
                m.get_counter().value()
            } else {
                m.get_gauge().value()
            }
        })
        .unwrap_or(f64::NAN)
}

/// Runs `call`, which must answer (from local state) rather than wait on
/// the dead Redis. Every Redis call has a 250 ms budget; the bound here only
/// catches a hang, and is generous because the machine may be busy.
async fn quick<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung with Redis down"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_and_back() {
    let mut server = RedisServer::start();
    let opts = StoreOptions {
        redis_url: Some(server.url.clone()),
        ..StoreOptions::default()
    };
    let a = open(opts.clone()).await;
    let b = open(opts).await;
    assert!(a.healthy() && b.healthy());
    assert_eq!(metric("apiproxy_store_redis_up"), 1.0);
    let errors_before = metric("apiproxy_store_errors_total");

    a.bind_session(binding("sticky", "openai")).await;
    for _ in 0..2 {
        assert!(a.hit_requests("key:alice", 3).await.allowed);
    }

    server.stop();

    // Every call still answers, quickly. The first one notices the outage; the rest go straight to the fallback.
    quick("get_session", a.get_session("sticky")).await;
    let sticky = quick("get_session", a.get_session("sticky")).await;
    assert_eq!(
        sticky.map(|s| s.provider_id),
        Some("openai".into()),
        "bindings made while Redis was up stay sticky during the outage"
    );
    assert!(!a.healthy());
    assert_eq!(metric("apiproxy_store_redis_up"), 0.0);
    assert!(metric("apiproxy_store_errors_total") > errors_before);

    // The local limit carries on from what this replica counted (2 of 3).
    assert!(
        quick("hit_requests", a.hit_requests("key:alice", 3))
            .await
            .allowed
    );
    assert!(
        !quick("hit_requests", a.hit_requests("key:alice", 3))
            .await
            .allowed
    );
    quick("bind_session", a.bind_session(binding("during", "claude"))).await;
    assert_eq!(
        quick("get_session", a.get_session("during"))
            .await
            .map(|s| s.provider_id),
        Some("claude".into())
    );
    quick("push_context", a.push_context("c", "alice", json!(1))).await;
    assert_eq!(
        quick("get_context", a.get_context("c")).await.1,
        vec![json!(1)]
    );
    quick("put_catalog", a.put_catalog("p", &["m".into()])).await;
    assert!(quick("get_catalog", a.get_catalog("p")).await.is_some());
    quick("add_tokens", a.add_tokens("key:alice", 10)).await;
    assert_eq!(
        quick("check_tokens", a.check_tokens("key:alice", 100))
            .await
            .remaining,
        90
    );
    assert!(quick("delete_session", a.delete_session("during")).await);
    // B notices too, on its first call or its probe.
    quick("hit_requests", b.hit_requests("key:bob", 3)).await;
    quick("hit_requests", b.hit_requests("key:bob", 3)).await;

    server.restart();

    // Both reconnect by themselves and share again (the restarted Redis is empty).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.healthy() && b.healthy()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        a.healthy() && b.healthy(),
        "reconnected within a few seconds"
    );
    assert_eq!(metric("apiproxy_store_redis_up"), 1.0);
    a.bind_session(binding("after", "gemini")).await;
    assert_eq!(
        b.get_session("after").await.map(|s| s.provider_id),
        Some("gemini".into())
    );
    for _ in 0..2 {
        assert!(a.hit_requests("key:shared", 2).await.allowed);
    }
    assert!(
        !b.hit_requests("key:shared", 2).await.allowed,
        "one limit across replicas again"
    );
}
