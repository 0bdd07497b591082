//! The Redis store: state shared by every replica on one Redis, with an embedded [`MemoryStore`] answering
//! whenever Redis cannot (down, slower than 250 ms, or refusing a command).
//!
//! Keys (all under `key_prefix`, all with a TTL; values are JSON so `redis-cli` shows them plainly):
//! - `session:{id}`: a [`SessionBinding`], TTL `session_ttl`, restarted by every bind;
//! - `context:{session}`: list of snippets, newest first; `context-owner:{session}`: the key name owning it;
//!   both TTL `context_ttl`, restarted by every push;
//! - `catalog:{provider}`: JSON array of model ids, TTL `catalog_ttl`;
//! - `rpm:{name}`, `tpm:{name}`: rate windows, hashes second → amount, TTL 61 s (see `lua::RATE_WINDOW`).
//!
//! While Redis answers, session bindings, catalogs and counted usage are also written to the local store, so an
//! outage starts from recent state (stickiness holds, limits count what this replica saw).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult};

use crate::lua::{BIND_SESSION, PUSH_CONTEXT, RATE_WINDOW};
use crate::memory::MemoryStore;
use crate::redis_link::{describe, is_outage, Link, OP_TIMEOUT};
use crate::window::{allowed, refused};
use crate::{unix_now, RateDecision, SessionBinding, Store, StoreOptions};

/// The Redis-backed [`Store`] with its local fallback.
pub struct RedisStore {
    link: Arc<Link>,
    local: MemoryStore,
    prefix: String,
    session_ttl_ms: u64,
    context_max_entries: usize,
    context_ttl_ms: u64,
    catalog_ttl_ms: u64,
}

impl RedisStore {
    /// Connects to `url` (see [`crate::open`]: never fails, at worst answers locally until Redis is reachable).
    pub async fn open(url: &str, opts: &StoreOptions) -> Self {
        RedisStore {
            link: Link::start(url).await,
            local: MemoryStore::new(opts),
            prefix: opts.key_prefix.clone(),
            session_ttl_ms: ttl_ms(opts.session_ttl),
            context_max_entries: opts.context_max_entries,
            context_ttl_ms: ttl_ms(opts.context_ttl),
            catalog_ttl_ms: ttl_ms(opts.catalog_ttl),
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + id.len() + 1);
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push(':');
        key.push_str(id);
        key
    }

    /// Runs `op` on Redis within the timeout; `None` (and the failure recorded) when Redis is down or the call
    /// fails, so the caller answers locally.
    async fn redis<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.link.connection()?;
        match tokio::time::timeout(OP_TIMEOUT, f(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.link.failed(op, &describe(&e), is_outage(&e));
                None
            }
            Err(_) => {
                let why = format!("no answer within {} ms", OP_TIMEOUT.as_millis());
                self.link.failed(op, &why, true);
                None
            }
        }
    }

    async fn rate_window(
        &self,
        key: String,
        limit: u64,
        mode: &'static str,
        amount: u64,
    ) -> Option<RateDecision> {
        let answer: Vec<i64> = self
            .redis("rate limit", |mut conn| async move {
                RATE_WINDOW
                    .key(key)
                    .arg(limit)
                    .arg(mode)
                    .arg(amount)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let (ok, used, retry) = match answer[..] {
            [ok, used, retry] => (
                ok == 1,
                u64::try_from(used).unwrap_or(0),
                u64::try_from(retry).unwrap_or(1),
            ),
            _ => {
                self.link
                    .failed("rate limit", &"unexpected script answer", false);
                return None;
            }
        };
        Some(if ok {
            allowed(limit, used)
        } else {
            refused(limit, used, retry)
        })
    }
}

fn ttl_dur(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

fn ttl_ms(ttl: std::time::Duration) -> u64 {
    // Redis refuses a PX of 0.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A JSON value read from Redis; anything unreadable is treated as absent.
fn parse<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> Option<T> {
    match serde_json::from_str(raw) {
        Ok(value) => Some(value),
        Err(e) => {
            log::debug!("store: ignoring an unreadable {what} in Redis: {e}");
            None
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get_session(&self, id: &str) -> Option<SessionBinding> {
        let key = self.key("session", id);
        match self
            .redis("get session", |mut conn| async move {
                conn.get::<_, Option<String>>(key).await
            })
            .await
        {
            Some(raw) => parse("session binding", &raw?),
            None => self.local.get_session(id).await,
        }
    }

    async fn bind_session(&self, binding: SessionBinding) {
        let Ok(json) = serde_json::to_string(&binding) else {
            return self.local.bind_session(binding).await;
        };
        let key = self.key("session", &binding.conversation_id);
        let ttl = self.session_ttl_ms;
        let stored = self
            .redis("bind session", |mut conn| async move {
                BIND_SESSION
                    .key(key)
                    .arg(json)
                    .arg(ttl)
                    .arg(unix_now())
                    .invoke_async::<String>(&mut conn)
                    .await
            })
            .await;
        match stored.and_then(|raw| parse::<SessionBinding>("session binding", &raw)) {
            Some(stored) => self.local.put_session(stored),
            None => self.local.bind_session(binding).await,
        }
    }

    async fn delete_session(&self, id: &str) -> bool {
        let key = self.key("session", id);
        let deleted = self
            .redis("delete session", |mut conn| async move {
                conn.del::<_, u64>(key).await
            })
            .await;
        let local = self.local.delete_session(id).await;
        match deleted {
            Some(n) => n > 0,
            None => local,
        }
    }

    async fn push_context(&self, session: &str, owner: &str, entry: serde_json::Value) {
        if self.context_max_entries == 0 {
            return;
        }
        let Ok(json) = serde_json::to_string(&entry) else {
            return;
        };
        let keys = [
            self.key("context", session),
            self.key("context-owner", session),
        ];
        let (max, ttl) = (self.context_max_entries, self.context_ttl_ms);
        let owner_arg = owner.to_string();
        let pushed = self
            .redis("push context", |mut conn| async move {
                PUSH_CONTEXT
                    .key(&keys[..])
                    .arg(owner_arg)
                    .arg(json)
                    .arg(max)
                    .arg(ttl)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
        if pushed.is_none() {
            self.local.push_context(session, owner, entry).await;
        }
    }

    async fn get_context(&self, session: &str) -> (Option<String>, Vec<serde_json::Value>) {
        let (list, owner) = (
            self.key("context", session),
            self.key("context-owner", session),
        );
        let last = isize::try_from(self.context_max_entries).unwrap_or(isize::MAX) - 1;
        let read = self
            .redis("get context", |mut conn| async move {
                redis::pipe()
                    .get(owner)
                    .lrange(list, 0, last)
                    .query_async::<(Option<String>, Vec<String>)>(&mut conn)
                    .await
            })
            .await;
        match read {
            Some((owner, raw)) => {
                let entries: Vec<serde_json::Value> = raw
                    .iter()
                    .filter_map(|r| parse("context snippet", r))
                    .collect();
                if entries.is_empty() {
                    (None, entries)
                } else {
                    (owner, entries)
                }
            }
            None => self.local.get_context(session).await,
        }
    }

    async fn put_catalog(&self, provider: &str, models: &[String]) {
        self.local.put_catalog(provider, models).await;
        let Ok(json) = serde_json::to_string(models) else {
            return;
        };
        let key = self.key("catalog", provider);
        let ttl = self.catalog_ttl_ms;
        self.redis("put catalog", |mut conn| async move {
            conn.pset_ex::<_, _, ()>(key, json, ttl).await
        })
        .await;
    }

    async fn get_catalog(&self, provider: &str) -> Option<Vec<String>> {
        let key = self.key("catalog", provider);
        match self
            .redis("get catalog", |mut conn| async move {
                conn.get::<_, Option<String>>(key).await
            })
            .await
        {
            Some(raw) => parse("model catalog", &raw?),
            None => self.local.get_catalog(provider).await,
        }
    }

    async fn hit_requests(&self, name: &str, limit: u64) -> RateDecision {
        match self
            .rate_window(self.key("rpm", name), limit, "hit", 0)
            .await
        {
            Some(decision) => {
                if decision.allowed {
                    self.local.count_request(name);
                }
                decision
            }
            None => self.local.hit_requests(name, limit).await,
        }
    }

    async fn check_tokens(&self, name: &str, limit: u64) -> RateDecision {
        match self
            .rate_window(self.key("tpm", name), limit, "check", 0)
            .await
        {
            Some(decision) => decision,
            None => self.local.check_tokens(name, limit).await,
        }
    }

    async fn add_tokens(&self, name: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        // Counted locally either way: the local window is the fallback's memory of this replica's usage.
        self.local.add_tokens(name, tokens).await;
        self.rate_window(self.key("tpm", name), 0, "add", tokens)
            .await;
    }

    async fn add_spend(&self, name: &str, amount: u64, ttl: std::time::Duration) -> u64 {
        let key = self.key("spend", name);
        let ttl = ttl_ms(ttl);
        // Counted locally either way: the fallback's memory of this replica's spend.
        let local = self.local.add_spend(name, amount, ttl_dur(ttl)).await;
        self.redis("spend", |conn| crate::spend::redis_add(conn, key, amount, ttl))
            .await
            .unwrap_or(local)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn healthy(&self) -> bool {
        self.link.is_up()
    }
}
