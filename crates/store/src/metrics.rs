//! The store's Prometheus metrics, in the default registry (the one the gateway's `/metrics` serves).

use std::sync::LazyLock;

use prometheus::{IntCounter, IntGauge};

/// Redis operations that failed or timed out (each answered by the local fallback instead).
pub(crate) static ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "apiproxy_store_errors_total",
            "Store operations on Redis that failed or timed out and were answered locally",
        )
        .expect("a valid metric definition"),
    )
});

/// 1 while Redis answers, 0 while the store runs on its local fallback.
pub(crate) static REDIS_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "apiproxy_store_redis_up",
            "Whether the Redis store is reachable (1) or running on its local fallback (0)",
        )
        .expect("a valid metric definition"),
    )
});

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    // Registration fails only when a metric of that name exists already; the metric still counts, unexported.
    if let Err(e) = prometheus::register(Box::new(metric.clone())) {
        log::warn!("store: metric not registered: {e}");
    }
    metric
}
