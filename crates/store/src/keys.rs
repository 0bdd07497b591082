//! Client keys made at run time (through the admin API and the console), kept apart from the configured ones.
//!
//! Where they live decides who sees them:
//! - with Redis (one server, a Cluster or behind Sentinels: any `store.redis_url`): the hash
//!   `{prefix}console:keys` (name → JSON [`StoredKey`]) and the counter `{{prefix}console:keys}:version`
//!   (hash-tagged into the hash's slot, so one transaction writes both on a Cluster), bumped by every change, so
//!   every replica on that Redis notices a change by reading one small value;
//! - without Redis and with `store.path`: a redb database file, so keys survive a restart. The file is
//!   opened for each operation and closed after it (redb locks an open file for one process), so the
//!   old and the new process of a graceful upgrade both read and write it during the hand-over; an
//!   operation that finds the file held by the other process retries for a bounded time;
//! - with neither: this process's memory only (lost on restart; the gateway logs that once).
//!
//! Only the SHA-256 of a key is stored, never the key itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use redis::AsyncCommands;

use crate::redis_link::{Conn, Connector};
use crate::redis_url::RedisTarget;
use serde::{Deserialize, Serialize};

/// One stored client key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredKey {
    /// The key's immutable identity, which owns its state (limits, spend, sessions, context):
    /// `~` and 16 hex digits, made at creation. Records written before ids existed have none; their
    /// id is derived from the key's digest ([`StoredKey::id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unique among stored and configured keys; a label (what logs and the console show).
    pub name: String,
    /// SHA-256 of the key, lowercase hex.
    pub sha256: String,
    /// The key's last four characters, to recognise it in a list.
    pub last4: String,
    /// Requests per minute; `None`: unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute; `None`: unlimited.
    pub tpm: Option<u64>,
    /// Spending limit in USD per `budget_period`; `None`: unlimited.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// `day` (the default when absent) or `month`, in UTC.
    #[serde(default)]
    pub budget_period: Option<String>,
    /// Model allow-list (`*` globs); `None`: every model.
    pub models: Option<Vec<String>>,
    /// `any`: the key may reference any object stored at the provider; absent or `own`: only the responses it
    /// received through the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_refs: Option<String>,
    /// Unix seconds when it was made.
    pub created_at: f64,
    /// When the key stops working (Unix milliseconds); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl StoredKey {
    /// The key's identity: its recorded id, or for an older record `~` and the first 16 hex digits
    /// of its digest (the key is random, so this says nothing about it).
    pub fn id(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!("~{}", self.sha256.get(..16).unwrap_or(&self.sha256)),
        }
    }

    /// A fresh id for a new key.
    pub fn new_id(random: [u8; 8]) -> String {
        let mut id = String::with_capacity(17);
        id.push('~');
        for b in random {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }
}

/// How long one Redis command may take before the call fails.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);

/// Where stored keys are kept (see the module doc).
pub enum KeyStore {
    /// This process only.
    Memory(Mutex<BTreeMap<String, StoredKey>>, Mutex<u64>),
    /// A redb database file, opened per operation.
    Embedded(PathBuf),
    /// Redis, shared by every replica.
    Redis(Box<RedisKeys>),
}

/// The Redis side: a lazily (re)made connection and the two key names.
pub struct RedisKeys {
    /// Makes connections of the target's shape (a Sentinel target asks the
    /// Sentinels for the master each time).
    connector: tokio::sync::Mutex<Connector>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    hash: String,
    version: String,
}

/// A key in the same Cluster slot as `base`: `base` holds a hash tag already
/// (its slot is the tag's), or becomes the tag.
fn same_slot(base: &str, suffix: &str) -> String {
    let tagged = base
        .find('{')
        .and_then(|open| base[open + 1..].find('}'))
        .is_some_and(|len| len > 0);
    if tagged {
        format!("{base}{suffix}")
    } else {
        format!("{{{base}}}{suffix}")
    }
}

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("console_keys");
/// One row, `version`: bumped by every write, so a process notices the other's writes.
const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("console_keys_meta");

/// How long an operation on the file waits for another process (the other side of an upgrade)
/// to close it.
const FILE_BUSY_WAIT: Duration = Duration::from_secs(3);

/// Opens the file (created when missing), runs `f`, and closes it. While another process holds the
/// file (redb's lock), retries every few milliseconds for up to [`FILE_BUSY_WAIT`].
pub(crate) fn with_file<T>(
    path: &Path,
    f: impl FnOnce(&redb::Database) -> Result<T, String>,
) -> Result<T, String> {
    let started = std::time::Instant::now();
    let db = loop {
        match redb::Database::create(path) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < FILE_BUSY_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(format!(
                    "cannot open the store file {}: {e}",
                    path.display()
                ))
            }
        }
    };
    f(&db)
}

fn bump_version(tx: &redb::WriteTransaction) -> Result<(), String> {
    use redb::ReadableTable;
    let mut t = tx.open_table(META).map_err(|e| e.to_string())?;
    let v = t
        .get("version")
        .map_err(|e| e.to_string())?
        .map_or(0, |v| v.value());
    t.insert("version", v + 1).map_err(|e| e.to_string())?;
    Ok(())
}

impl KeyStore {
    /// Opens the key store: Redis when `redis_url` is set, else the redb file at `path` (created when missing),
    /// else memory. `Err` when the file cannot be opened (another process holds it, or it is not a redb file).
    pub fn open(
        redis_url: Option<&str>,
        key_prefix: &str,
        path: Option<&Path>,
    ) -> Result<KeyStore, String> {
        if let Some(url) = redis_url {
            let connector = RedisTarget::parse(url)
                .and_then(Connector::new)
                .map_err(|e| format!("invalid Redis URL {}: {e}", crate::redact_url(url)))?;
            let hash = format!("{key_prefix}console:keys");
            return Ok(KeyStore::Redis(Box::new(RedisKeys {
                connector: tokio::sync::Mutex::new(connector),
                conn: tokio::sync::Mutex::new(None),
                version: same_slot(&hash, ":version"),
                hash,
            })));
        }
        if let Some(path) = path {
            // Make the tables exist, so a first read finds them; this also checks the file.
            with_file(path, |db| {
                let tx = db.begin_write().map_err(|e| e.to_string())?;
                tx.open_table(TABLE).map_err(|e| e.to_string())?;
                tx.open_table(META).map_err(|e| e.to_string())?;
                tx.commit().map_err(|e| e.to_string())
            })?;
            return Ok(KeyStore::Embedded(path.to_owned()));
        }
        Ok(KeyStore::Memory(Mutex::default(), Mutex::new(0)))
    }

    /// `"redis"`, `"file"` or `"memory"`.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyStore::Memory(..) => "memory",
            KeyStore::Embedded(_) => "file",
            KeyStore::Redis(_) => "redis",
        }
    }

    /// Whether another process can change the keys (so readers must poll [`KeyStore::version`]):
    /// other replicas on Redis, the other side of an upgrade on the file.
    pub fn shared(&self) -> bool {
        !matches!(self, KeyStore::Memory(..))
    }

    /// Every stored key, by name.
    pub async fn list(&self) -> Result<Vec<StoredKey>, String> {
        match self {
            KeyStore::Memory(m, _) => Ok(m.lock().values().cloned().collect()),
            KeyStore::Embedded(path) => {
                let path = path.clone();
                blocking(move || {
                    with_file(&path, |db| {
                        use redb::ReadableTable;
                        let tx = db.begin_read().map_err(|e| e.to_string())?;
                        let t = tx.open_table(TABLE).map_err(|e| e.to_string())?;
                        let mut out = Vec::new();
                        for row in t.iter().map_err(|e| e.to_string())? {
                            let (_, v) = row.map_err(|e| e.to_string())?;
                            // A row that does not parse (written by a newer version?) is skipped, not fatal.
                            if let Ok(k) = serde_json::from_slice::<StoredKey>(v.value()) {
                                out.push(k);
                            }
                        }
                        Ok(out)
                    })
                })
                .await
            }
            KeyStore::Redis(r) => {
                let all: BTreeMap<String, String> = r
                    .run(|mut c, h, _| async move { c.hgetall(h).await })
                    .await?;
                Ok(all
                    .values()
                    .filter_map(|v| serde_json::from_str(v).ok())
                    .collect())
            }
        }
    }

    /// Creates or replaces the key named `key.name`.
    pub async fn put(&self, key: &StoredKey) -> Result<(), String> {
        let json = serde_json::to_string(key).map_err(|e| e.to_string())?;
        match self {
            KeyStore::Memory(m, v) => {
                m.lock().insert(key.name.clone(), key.clone());
                *v.lock() += 1;
                Ok(())
            }
            KeyStore::Embedded(path) => {
                let (path, name) = (path.clone(), key.name.clone());
                blocking(move || {
                    with_file(&path, |db| {
                        let tx = db.begin_write().map_err(|e| e.to_string())?;
                        {
                            let mut t = tx.open_table(TABLE).map_err(|e| e.to_string())?;
                            t.insert(name.as_str(), json.as_bytes())
                                .map_err(|e| e.to_string())?;
                        }
                        bump_version(&tx)?;
                        tx.commit().map_err(|e| e.to_string())
                    })
                })
                .await
            }
            KeyStore::Redis(r) => {
                let name = key.name.clone();
                r.run(|mut c, h, v| async move {
                    redis::pipe()
                        .atomic()
                        .hset(h, name, json)
                        .incr(v, 1)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
            }
        }
    }

    /// Removes the key named `name`; true when there was one.
    pub async fn remove(&self, name: &str) -> Result<bool, String> {
        match self {
            KeyStore::Memory(m, v) => {
                *v.lock() += 1;
                Ok(m.lock().remove(name).is_some())
            }
            KeyStore::Embedded(path) => {
                let (path, name) = (path.clone(), name.to_owned());
                blocking(move || {
                    with_file(&path, |db| {
                        let tx = db.begin_write().map_err(|e| e.to_string())?;
                        let had = {
                            let mut t = tx.open_table(TABLE).map_err(|e| e.to_string())?;
                            let had = t.remove(name.as_str()).map_err(|e| e.to_string())?;
                            had.is_some()
                        };
                        bump_version(&tx)?;
                        tx.commit().map_err(|e| e.to_string())?;
                        Ok(had)
                    })
                })
                .await
            }
            KeyStore::Redis(r) => {
                let name = name.to_owned();
                let (removed, _): (u64, u64) = r
                    .run(|mut c, h, v| async move {
                        redis::pipe()
                            .atomic()
                            .hdel(h, name)
                            .incr(v, 1)
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                Ok(removed > 0)
            }
        }
    }

    /// A number that changes with every write (by any replica, for Redis).
    pub async fn version(&self) -> Result<u64, String> {
        match self {
            KeyStore::Memory(_, v) => Ok(*v.lock()),
            KeyStore::Embedded(path) => {
                let path = path.clone();
                blocking(move || {
                    with_file(&path, |db| {
                        let tx = db.begin_read().map_err(|e| e.to_string())?;
                        let t = tx.open_table(META).map_err(|e| e.to_string())?;
                        let v = t.get("version").map_err(|e| e.to_string())?;
                        Ok(v.map_or(0, |v| v.value()))
                    })
                })
                .await
            }
            KeyStore::Redis(r) => {
                let v: Option<u64> = r.run(|mut c, _, v| async move { c.get(v).await }).await?;
                Ok(v.unwrap_or(0))
            }
        }
    }
}

impl RedisKeys {
    /// Runs one command with the connection and the two key names, within [`REDIS_TIMEOUT`]. A failed call
    /// drops the connection so the next call makes a new one.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(Conn, String, String) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = {
            let mut slot = self.conn.lock().await;
            match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let mut connector = self.connector.lock().await;
                    // The connector bounds each connect; this bounds the whole.
                    let made = tokio::time::timeout(REDIS_TIMEOUT * 5, connector.connect())
                        .await
                        .map_err(|_| "Redis did not answer in time".to_string())?
                        .map_err(|e| format!("cannot reach Redis: {e}"))?;
                    *slot = Some(made.clone());
                    made
                }
            }
        };
        match tokio::time::timeout(
            REDIS_TIMEOUT,
            f(conn, self.hash.clone(), self.version.clone()),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *self.conn.lock().await = None;
                Err(format!("Redis: {e}"))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err("Redis did not answer in time".to_string())
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("store task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_counter_shares_the_hash_slot() {
        assert_eq!(
            same_slot("apiproxy:console:keys", ":version"),
            "{apiproxy:console:keys}:version"
        );
        assert_eq!(
            same_slot("{app}:console:keys", ":version"),
            "{app}:console:keys:version"
        );
        // An empty tag is no tag: the whole name is hashed.
        assert_eq!(same_slot("{}console:keys", ":v"), "{{}console:keys}:v");
    }

    fn key(name: &str) -> StoredKey {
        StoredKey {
            id: Some(format!("~{name}")),
            name: name.into(),
            sha256: "ab".repeat(32),
            last4: "wxyz".into(),
            rpm: Some(5),
            tpm: None,
            budget_usd: Some(1.5),
            budget_period: Some("month".into()),
            models: Some(vec!["fast".into()]),
            provider_refs: None,
            created_at: 1.0,
            expires_at_ms: Some(1_900_000_000_000),
        }
    }

    #[tokio::test]
    async fn the_file_store_keeps_keys_across_reopening() {
        let dir = std::env::temp_dir().join(format!("apiproxy-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        let _ = std::fs::remove_file(&path);
        {
            let s = KeyStore::open(None, "p:", Some(&path)).unwrap();
            assert_eq!(s.kind(), "file");
            s.put(&key("a")).await.unwrap();
            s.put(&key("b")).await.unwrap();
            assert!(s.remove("b").await.unwrap());
            assert!(!s.remove("b").await.unwrap());
        }
        let s = KeyStore::open(None, "p:", Some(&path)).unwrap();
        assert_eq!(s.list().await.unwrap(), vec![key("a")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_file_is_shared_with_another_process_holding_it_for_a_while() {
        let dir = std::env::temp_dir().join(format!("apiproxy-keys-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        let _ = std::fs::remove_file(&path);
        // The old process of an upgrade: a store of its own on the same file.
        let old = KeyStore::open(None, "p:", Some(&path)).unwrap();
        let new = KeyStore::open(None, "p:", Some(&path)).unwrap();
        assert!(
            new.shared(),
            "the other side of an upgrade can write the file"
        );
        old.put(&key("a")).await.unwrap();
        let v1 = new.version().await.unwrap();
        assert_eq!(new.list().await.unwrap(), vec![key("a")]);
        // Someone holds the file open for a moment (as redb does during an operation): the
        // next operation waits for it instead of failing.
        let held = redb::Database::create(&path).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        new.put(&key("b")).await.unwrap();
        release.join().unwrap();
        assert!(
            old.version().await.unwrap() > v1,
            "a write moves the version"
        );
        assert_eq!(old.list().await.unwrap(), vec![key("a"), key("b")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_are_recorded_or_derived_from_the_digest() {
        let mut k = key("a");
        assert_eq!(k.id(), "~a");
        k.id = None;
        assert_eq!(k.id(), format!("~{}", "ab".repeat(8)));
        assert_eq!(
            StoredKey::new_id([0xde, 0xad, 0, 1, 2, 3, 4, 0xff]),
            "~dead0001020304ff"
        );
    }

    #[tokio::test]
    async fn memory_store_counts_versions() {
        let s = KeyStore::open(None, "p:", None).unwrap();
        let v0 = s.version().await.unwrap();
        s.put(&key("a")).await.unwrap();
        assert!(s.version().await.unwrap() > v0);
        assert_eq!(s.list().await.unwrap().len(), 1);
    }
}
