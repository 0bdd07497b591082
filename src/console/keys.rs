//! Client keys made at run time (the second source of keys, after
//! `auth.keys`): the store they persist in and this process's cached copy,
//! which is what the hot path reads.
//!
//! Freshness: a write through this process updates the cache at once. With
//! Redis, other replicas notice within [`REFRESH_EVERY`]: a request that
//! finds the cache older than that starts a background check of the store's
//! version counter (one `GET`) and reloads only when it moved. Requests never
//! wait on Redis, except the very first one of a process (the cache has not
//! been loaded yet).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apiproxy_store::keys::{KeyStore, StoredKey};
use arc_swap::ArcSwap;
use globset::{Glob, GlobSetBuilder};
use tokio::sync::OnceCell;

use crate::config::{ClientKey, Config};
use crate::upstream::now_ms;

/// How stale the cache may get before a request starts a check of the store.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// After a failed check (Redis down), wait this long before the next one.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// What this process knows of the stored keys.
#[derive(Default)]
pub struct KeyCache {
    /// The store's version when this was loaded.
    pub version: u64,
    pub by_digest: HashMap<[u8; 32], Arc<ClientKey>>,
    /// The stored records, by name order.
    pub stored: Vec<StoredKey>,
}

/// The store of run-time keys and the cached copy.
pub struct StoredKeys {
    store: OnceCell<Result<Arc<KeyStore>, String>>,
    cache: ArcSwap<KeyCache>,
    /// When the cache was last checked against the store (ms since epoch).
    checked_ms: AtomicU64,
    /// The next check may start at (ms since epoch).
    next_check_ms: AtomicU64,
    loaded: AtomicBool,
    checking: AtomicBool,
}

impl Default for StoredKeys {
    fn default() -> Self {
        StoredKeys {
            store: OnceCell::new(),
            cache: ArcSwap::from_pointee(KeyCache::default()),
            checked_ms: AtomicU64::new(0),
            next_check_ms: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            checking: AtomicBool::new(false),
        }
    }
}

/// A `ClientKey` for a stored record; `None` when the record is unusable
/// (a bad digest or glob: written by hand or by a newer version).
pub fn client_key(k: &StoredKey) -> Option<ClientKey> {
    let budget =
        crate::pricing::budget::Budget::resolve(k.budget_usd, k.budget_period.as_deref()).ok()?;
    let sha256 = hex::decode(&k.sha256)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())?;
    let models = match &k.models {
        None => None,
        Some(pats) => {
            let mut b = GlobSetBuilder::new();
            for p in pats {
                b.add(Glob::new(p).ok()?);
            }
            Some(b.build().ok()?)
        }
    };
    Some(ClientKey {
        name: k.name.clone(),
        sha256,
        rpm: k.rpm,
        tpm: k.tpm,
        models,
        budget,
    })
}

impl StoredKeys {
    /// The key store, opened on first use from the config's store settings.
    pub async fn store(&self, config: &Config) -> Result<Arc<KeyStore>, String> {
        self.store
            .get_or_init(|| async {
                let s = &config.store;
                let opened =
                    KeyStore::open(s.redis_url.as_deref(), &s.key_prefix, s.path.as_deref())
                        .map(Arc::new);
                if let Err(e) = &opened {
                    log::error!("client keys made in the console are unavailable: {e}");
                }
                opened
            })
            .await
            .clone()
    }

    /// The cached copy.
    pub fn cached(&self) -> Arc<KeyCache> {
        self.cache.load_full()
    }

    /// The stored key with this digest, from the cache (no I/O).
    pub fn find(&self, digest: &[u8; 32]) -> Option<Arc<ClientKey>> {
        self.cache.load().by_digest.get(digest).cloned()
    }

    /// Whether any key is stored (as far as the cache knows).
    pub fn is_empty(&self) -> bool {
        self.cache.load().by_digest.is_empty()
    }

    /// Makes the cache fresh enough for a lookup: loads it (waiting) the
    /// first time, then starts a background check when it is older than
    /// [`REFRESH_EVERY`].
    pub async fn freshen(&'static self, rt: &Arc<crate::routing::Runtime>) {
        if !self.loaded.load(Ordering::Acquire) {
            // Boxed: only the first request waits here, and inline this
            // future would take ~3.5 KiB of every request's future.
            if let Err(e) = Box::pin(self.reload(&rt.config)).await {
                log::warn!("loading client keys made in the console: {e}");
            }
            return;
        }
        let now = now_ms();
        if now < self.next_check_ms.load(Ordering::Relaxed)
            || self.checking.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let rt = rt.clone();
        tokio::spawn(async move {
            let result = self.check(&rt.config).await;
            let wait = match result {
                Ok(()) => REFRESH_EVERY,
                Err(e) => {
                    log::warn!("checking client keys made in the console: {e}");
                    RETRY_AFTER_FAILURE
                }
            };
            self.next_check_ms
                .store(now_ms() + wait.as_millis() as u64, Ordering::Relaxed);
            self.checking.store(false, Ordering::Release);
        });
    }

    /// Reloads when the store's version moved (only a shared store can move).
    async fn check(&self, config: &Config) -> Result<(), String> {
        let store = self.store(config).await?;
        if !store.shared() {
            return Ok(());
        }
        let version = store.version().await?;
        if version != self.cache.load().version {
            self.reload(config).await?;
        }
        self.checked_ms.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Reads every stored key into the cache.
    pub async fn reload(&self, config: &Config) -> Result<(), String> {
        let store = self.store(config).await;
        // Even when the store cannot be read, the cache counts as loaded (empty):
        // the background check keeps trying.
        let store = match store {
            Ok(s) => s,
            Err(e) => {
                self.loaded.store(true, Ordering::Release);
                return Err(e);
            }
        };
        let version = store.version().await;
        let listed = store.list().await;
        self.loaded.store(true, Ordering::Release);
        let (version, mut stored) = (version?, listed?);
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        let by_digest = stored
            .iter()
            .filter_map(|k| {
                let ck = client_key(k)?;
                Some((ck.sha256, Arc::new(ck)))
            })
            .collect();
        self.cache.store(Arc::new(KeyCache {
            version,
            by_digest,
            stored,
        }));
        self.checked_ms.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_records_become_client_keys() {
        let k = StoredKey {
            name: "ci".into(),
            sha256: "0f".repeat(32),
            last4: "abcd".into(),
            rpm: Some(3),
            tpm: None,
            budget_usd: Some(2.0),
            budget_period: Some("month".into()),
            models: Some(vec!["fast*".into()]),
            created_at: 0.0,
        };
        let ck = client_key(&k).unwrap();
        assert_eq!(ck.rpm, Some(3));
        let budget = ck.budget.unwrap();
        assert_eq!(budget.usd, 2.0);
        assert_eq!(budget.period, crate::pricing::budget::BudgetPeriod::Month);
        assert!(ck.allows("fast-1"));
        assert!(!ck.allows("slow"));
        let bad = StoredKey {
            sha256: "zz".into(),
            ..k.clone()
        };
        assert!(client_key(&bad).is_none());
        let bad_period = StoredKey {
            budget_period: Some("week".into()),
            ..k
        };
        assert!(client_key(&bad_period).is_none());
    }
}
