//! Every runtime that calls the Redis store gets a connection of its own, whose task runs on that runtime (a call
//! is then not handed to another thread and woken from it); a runtime that goes away takes only its own connection
//! with it. The gateway opens the store on whichever runtime calls first and serves from Pingora's.
//! Alone in its test binary so the process-wide `apiproxy_store_errors_total` counter is this test's alone.

use std::time::{Duration, Instant};

use apiproxy_store::testing::{query, RedisServer, Reply};
use apiproxy_store::{open, BoundUpstream, SessionBinding, Store, StoreOptions};

/// Generous: the machine may be busy; a connection is normally made in milliseconds.
const WAIT: Duration = Duration::from_secs(20);

fn binding(id: &str) -> SessionBinding {
    let upstream = BoundUpstream {
        logical_model: "fast",
        provider_id: "openai",
        model_id: "m",
        key_index: 0,
    };
    SessionBinding::new(id, None, upstream)
}

/// The clients connected to the Redis on `port`, not counting the one asking.
fn clients(port: u16) -> usize {
    match query(port, &["CLIENT", "LIST"]) {
        Ok(Reply::Bulk(Some(list))) => list.lines().count().saturating_sub(1),
        other => panic!("CLIENT LIST answered {other:?}"),
    }
}

fn errors() -> f64 {
    prometheus::gather()
        .iter()
        .find(|family| family.name() == "apiproxy_store_errors_total")
        .and_then(|family| family.get_metric().first().cloned())
        .map(|m| m.get_counter().value())
        .expect("the store's error counter is registered")
}

/// Calls the store from the current runtime until Redis has `want` clients (the runtime's own connection is made in
/// the background after its first call); panics past [`WAIT`].
async fn call_until_clients(store: &dyn Store, port: u16, want: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        store.get_session("probe").await;
        let now = clients(port);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: Redis has {now} clients, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a binding from the current runtime and checks that it reached Redis (not the local fallback).
async fn bind_in_redis(store: &dyn Store, port: u16, id: &str) {
    store.bind_session(binding(id)).await;
    let key = format!("rt:session:{id}");
    assert_eq!(
        query(port, &["EXISTS", &key]),
        Ok(Reply::Int(1)),
        "{id} was written to Redis"
    );
}

#[test]
fn each_runtime_calls_on_its_own_connection_and_keeps_none_alive() {
    let server = RedisServer::start();
    let opts = StoreOptions {
        redis_url: Some(server.url.clone()),
        key_prefix: "rt:".into(),
        ..StoreOptions::default()
    };
    // Opened on a short-lived runtime, as the gateway may.
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let store = first.block_on(open(opts));
    assert!(store.healthy());
    let errors_before = errors();
    // The home connection (probes, reconnects, Sentinel following) on the store's own thread.
    let home = clients(server.port);
    assert_eq!(home, 1, "one connection before any call");

    first.block_on(async {
        bind_in_redis(&*store, server.port, "first").await;
        call_until_clients(&*store, server.port, home + 1, "the first runtime's own").await;
        bind_in_redis(&*store, server.port, "first-own").await;
    });
    drop(first);
    let deadline = Instant::now() + WAIT;
    while clients(server.port) != home {
        assert!(
            Instant::now() < deadline,
            "the first runtime's connection outlived it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Another runtime: served by Redis at once (through the home connection until its own is made), never
    // by the dead runtime's connection.
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    second.block_on(async {
        bind_in_redis(&*store, server.port, "second").await;
        call_until_clients(&*store, server.port, home + 1, "the second runtime's own").await;
        bind_in_redis(&*store, server.port, "second-own").await;
    });
    assert!(store.healthy());
    assert_eq!(
        errors(),
        errors_before,
        "no call failed or fell back to the local store"
    );
}
