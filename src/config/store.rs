//! The `store` section: where shared state lives.

use std::time::Duration;

use super::raw::RawStore;

/// Where shared state lives.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `None`: the embedded in-memory store.
    pub redis_url: Option<String>,
    pub key_prefix: String,
    pub session_ttl: Duration,
    pub context_ttl: Duration,
    pub catalog_ttl: Duration,
    /// How long a Responses API response the gateway keeps lives (`store.responses_ttl_seconds`).
    pub responses_ttl: Duration,
    /// The largest response record kept, in bytes of JSON (`store.responses_max_bytes`).
    pub responses_max_bytes: usize,
    /// The most responses a `previous_response_id` chain expands (`store.responses_max_chain`).
    pub responses_max_chain: usize,
    /// The embedded store's file (client keys made at run time); `None`: memory only.
    pub path: Option<std::path::PathBuf>,
    /// Days the usage counters are kept (`store.usage_retention_days`, 1–3660).
    pub usage_retention_days: u32,
}

/// Resolves `store`; every problem is pushed naming its key path.
pub fn resolve(st: RawStore, problems: &mut Vec<String>) -> StoreSettings {
    if let Some(u) = st.redis_url.as_deref().filter(|u| !u.is_empty()) {
        if let Err(e) = apiproxy_store::validate_redis_url(u) {
            problems.push(format!("store.redis_url: {e}"));
        }
    }
    let store = StoreSettings {
        redis_url: st.redis_url.filter(|u| !u.is_empty()),
        key_prefix: st.key_prefix.unwrap_or_else(|| "apiproxy:".to_owned()),
        session_ttl: Duration::from_secs(st.session_ttl_seconds.unwrap_or(3600)),
        context_ttl: Duration::from_secs(st.context_ttl_seconds.unwrap_or(86400)),
        catalog_ttl: Duration::from_secs(st.models_cache_ttl_seconds.unwrap_or(300)),
        responses_ttl: Duration::from_secs(st.responses_ttl_seconds.unwrap_or(30 * 86400)),
        responses_max_bytes: st.responses_max_bytes.unwrap_or(4 * 1024 * 1024),
        responses_max_chain: st.responses_max_chain.unwrap_or(100),
        path: st
            .path
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from),
        usage_retention_days: st.usage_retention_days.unwrap_or(400),
    };
    if store.responses_ttl.is_zero() {
        problems.push("store.responses_ttl_seconds: must be at least 1".to_owned());
    }
    if store.responses_max_bytes < 1024 {
        problems.push(format!(
            "store.responses_max_bytes: {} is too small to hold a response (at least 1024)",
            store.responses_max_bytes
        ));
    }
    if store.responses_max_chain == 0 {
        problems.push("store.responses_max_chain: must be at least 1".to_owned());
    }
    if !(1..=3660).contains(&store.usage_retention_days) {
        problems.push(format!(
            "store.usage_retention_days: {} must be between 1 and 3660",
            store.usage_retention_days
        ));
    }
    if let Some(p) = Some(&store.key_prefix).filter(|p| p.contains(['{', '}'])) {
        // Braces are Redis Cluster hash tags: the store adds its own so each script stays on one slot.
        problems.push(format!(
            "store.key_prefix: {p:?} must not contain {{ or }} (Redis Cluster hash tags)"
        ));
    }
    store
}
