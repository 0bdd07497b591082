//! The `cache` section: the response cache's bounds and who shares an entry
//! (each logical model turns it on with `cache_ttl_seconds`).

use super::choices::{CacheScope, Choice};
use super::raw::RawCache;

/// `cache.max_entry_bytes` by default: 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// The largest `cache_ttl_seconds`: 30 days.
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// The response cache's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// An answer larger than this (as stored) is not cached.
    pub max_entry_bytes: usize,
    /// The most bytes of answers a store keeps (the oldest go first); on
    /// Redis, shared by every replica.
    pub max_bytes: usize,
    pub scope: CacheScope,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_bytes: apiproxy_store::DEFAULT_CACHE_MAX_BYTES,
            scope: CacheScope::Key,
        }
    }
}

/// Resolves `cache`; every problem is pushed naming its key path.
pub fn resolve(c: RawCache, problems: &mut Vec<String>) -> CacheSettings {
    let d = CacheSettings::default();
    let settings = CacheSettings {
        max_entry_bytes: c.max_entry_bytes.unwrap_or(d.max_entry_bytes),
        max_bytes: c.max_bytes.unwrap_or(d.max_bytes),
        scope: match c.scope.as_ref().map(Choice::value) {
            None => d.scope,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                problems.push(format!("cache.scope: {e}"));
                d.scope
            }
        },
    };
    if settings.max_entry_bytes == 0 {
        problems.push("cache.max_entry_bytes: must be positive".to_owned());
    }
    if settings.max_bytes < settings.max_entry_bytes {
        problems.push(format!(
            "cache.max_bytes: {} is smaller than cache.max_entry_bytes ({})",
            settings.max_bytes, settings.max_entry_bytes
        ));
    }
    settings
}
