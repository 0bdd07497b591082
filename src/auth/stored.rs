//! Client keys made at run time (the second source of keys, after
//! `auth.keys`): the store they persist in and this process's cached copy,
//! which is what the hot path reads. Owned by the gateway (one per process,
//! shared by its listeners), read by the console's key endpoints.
//!
//! Freshness: a write through this process updates the cache at once. With a
//! store another process can write (Redis: other replicas; the file: the
//! other side of a graceful upgrade), a request that finds the cache older
//! than [`REFRESH_EVERY`] starts a background check of the store's version
//! counter and reloads only when it moved. Requests never wait on the store,
//! except while the cache has never been loaded: the first requests wait for
//! one load together, and a failed load is retried (never cached).
//!
//! What the cache cannot say is said: [`Lookup::Unknown`] until a load has
//! succeeded, so the caller can refuse instead of guessing (see
//! [`super::caller`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apiproxy_store::keys::{KeyStore, StoredKey};
use arc_swap::ArcSwap;
use globset::{Glob, GlobSetBuilder};

use crate::config::{ClientKey, StoreSettings};

/// How stale the cache may get before a request starts a check of the store.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// After a failed load or check (Redis down, the file unreadable), wait this
/// long before the next one.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// What this process knows of the stored keys.
#[derive(Default)]
pub struct KeyCache {
    /// The store's version when this was loaded.
    pub version: u64,
    pub by_digest: HashMap<[u8; 32], Arc<ClientKey>>,
    /// The stored records, by name order.
    pub stored: Vec<StoredKey>,
}

/// The answer of a lookup in the cache.
pub enum Lookup {
    /// A stored key with this digest.
    Found(Arc<ClientKey>),
    /// No stored key has this digest (as of the last successful load).
    Absent,
    /// The stored keys have never been read by this process: nobody can say.
    Unknown,
}

/// Where the key store is (the `store` section; fixed for the process, like
/// the store itself).
#[derive(Clone, Debug)]
struct Location {
    redis_url: Option<String>,
    /// The prefix of its Redis key names (`store.key_prefix`).
    redis_key_prefix: String,
    path: Option<PathBuf>,
}

/// The store of run-time keys and the cached copy.
pub struct StoredKeys {
    location: Location,
    /// Opened on the first success; a failure is not kept.
    store: tokio::sync::Mutex<Option<Arc<KeyStore>>>,
    cache: ArcSwap<KeyCache>,
    /// One first load at a time; the others wait for it.
    first_load: tokio::sync::Mutex<()>,
    /// The next load or check may start at (ms since epoch).
    next_check_ms: AtomicU64,
    loaded: AtomicBool,
    checking: AtomicBool,
}

/// A `ClientKey` for a stored record; `None` when the record is unusable
/// (a bad digest or glob: written by hand or by a newer version).
pub fn client_key(k: &StoredKey) -> Option<ClientKey> {
    let budget = crate::config::Budget::resolve(k.budget_usd, k.budget_period.as_deref()).ok()?;
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
        id: k.id(),
        name: k.name.clone(),
        sha256,
        rpm: k.rpm,
        tpm: k.tpm,
        models,
        budget,
        provider_refs_any: k.provider_refs.as_deref() == Some("any"),
        expires_at_ms: k.expires_at_ms,
    })
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StoredKeys {
    /// The stored keys of the store `settings` describe (nothing is opened yet).
    pub fn new(settings: &StoreSettings) -> StoredKeys {
        StoredKeys {
            location: Location {
                redis_url: settings.redis_url.clone(),
                redis_key_prefix: settings.key_prefix.clone(),
                path: settings.path.clone(),
            },
            store: tokio::sync::Mutex::new(None),
            cache: ArcSwap::from_pointee(KeyCache::default()),
            first_load: tokio::sync::Mutex::new(()),
            next_check_ms: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            checking: AtomicBool::new(false),
        }
    }

    /// The key store, opened on first use. A failure to open (the file
    /// unusable) is returned and tried again on the next call.
    pub async fn store(&self) -> Result<Arc<KeyStore>, String> {
        let mut slot = self.store.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let l = self.location.clone();
        // Opening the file may wait for the other process of an upgrade.
        let opened = tokio::task::spawn_blocking(move || {
            KeyStore::open(
                l.redis_url.as_deref(),
                &l.redis_key_prefix,
                l.path.as_deref(),
            )
        })
        .await
        .map_err(|e| format!("opening the key store: {e}"))??;
        let opened = Arc::new(opened);
        *slot = Some(opened.clone());
        Ok(opened)
    }

    /// The cached copy.
    pub fn cached(&self) -> Arc<KeyCache> {
        self.cache.load_full()
    }

    /// The stored key with this digest, from the cache (no I/O).
    pub fn lookup(&self, digest: &[u8; 32]) -> Lookup {
        if !self.loaded.load(Ordering::Acquire) {
            return Lookup::Unknown;
        }
        match self.cache.load().by_digest.get(digest) {
            Some(k) => Lookup::Found(k.clone()),
            None => Lookup::Absent,
        }
    }

    /// Makes the cache fresh enough for a lookup: until a load has
    /// succeeded, the first requests wait for one (a failure is retried
    /// after [`RETRY_AFTER_FAILURE`], meanwhile lookups say `Unknown`);
    /// then a background check starts when the cache is older than
    /// [`REFRESH_EVERY`].
    pub async fn freshen(self: &Arc<Self>) {
        if !self.loaded.load(Ordering::Acquire) {
            // Boxed: only the first requests wait here, and inline this
            // future would take kilobytes of every request's future.
            Box::pin(self.first_load()).await;
            return;
        }
        let now = now_ms();
        if now < self.next_check_ms.load(Ordering::Relaxed)
            || self.checking.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let wait = match this.check().await {
                Ok(()) => REFRESH_EVERY,
                Err(e) => {
                    log::warn!("checking client keys made in the console: {e}");
                    RETRY_AFTER_FAILURE
                }
            };
            this.next_check_ms
                .store(now_ms() + wait.as_millis() as u64, Ordering::Relaxed);
            this.checking.store(false, Ordering::Release);
        });
    }

    async fn first_load(&self) {
        let _one = self.first_load.lock().await;
        if self.loaded.load(Ordering::Acquire)
            || now_ms() < self.next_check_ms.load(Ordering::Relaxed)
        {
            return;
        }
        if let Err(e) = self.reload().await {
            log::warn!(
                "client keys made in the console cannot be read ({e}); requests with such keys get 503 until they can"
            );
            self.next_check_ms.store(
                now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }

    /// Reloads when the store's version moved (only a shared store can move).
    async fn check(&self) -> Result<(), String> {
        let store = self.store().await?;
        if !store.shared() {
            return Ok(());
        }
        let version = store.version().await?;
        if version != self.cache.load().version {
            self.reload().await?;
        }
        Ok(())
    }

    /// Reads every stored key into the cache. On failure the cache stays as
    /// it was (loaded or not).
    pub async fn reload(&self) -> Result<(), String> {
        let store = self.store().await?;
        let version = store.version().await?;
        let mut stored = store.list().await?;
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
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_records_become_client_keys() {
        let k = StoredKey {
            id: Some("~0123456789abcdef".into()),
            name: "ci".into(),
            sha256: "0f".repeat(32),
            last4: "abcd".into(),
            rpm: Some(3),
            tpm: None,
            budget_usd: Some(2.0),
            budget_period: Some("month".into()),
            models: Some(vec!["fast*".into()]),
            provider_refs: None,
            created_at: 0.0,
            expires_at_ms: Some(1_900_000_000_000),
        };
        let ck = client_key(&k).unwrap();
        assert_eq!(ck.expires_at_ms, Some(1_900_000_000_000));
        assert_eq!(ck.id, "~0123456789abcdef");
        assert_eq!(ck.rpm, Some(3));
        let budget = ck.budget.unwrap();
        assert_eq!(budget.usd, 2.0);
        assert_eq!(budget.period, crate::config::BudgetPeriod::Month);
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

    #[tokio::test]
    async fn an_unreadable_store_is_unknown_until_it_can_be_read() {
        let dir = std::env::temp_dir().join(format!("apiproxy-stored-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A directory where the file should be: it cannot be opened.
        let path = dir.join("store.redb");
        std::fs::create_dir_all(&path).unwrap();
        let settings = StoreSettings {
            path: Some(path.clone()),
            ..crate::config::Config::from_yaml("{}", &|_| None)
                .unwrap()
                .store
        };
        let keys = Arc::new(StoredKeys::new(&settings));
        keys.freshen().await;
        assert!(matches!(keys.lookup(&[0; 32]), Lookup::Unknown));
        // The failure is not kept: once the file can be opened, the next load reads it.
        std::fs::remove_dir_all(&path).unwrap();
        keys.next_check_ms.store(0, Ordering::Relaxed);
        keys.freshen().await;
        assert!(matches!(keys.lookup(&[0; 32]), Lookup::Absent));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
