//! Spend counters: integer totals (the gateway counts millionths of a
//! dollar) that expire at a given time. Used for per-key budgets; on Redis
//! one `INCRBY` per request, so every replica adds to the same total.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// The embedded counters (also the Redis store's fallback).
#[derive(Default)]
pub struct SpendCounters {
    /// Keyed by `budget:<owner id>:<period>`: names the config and the
    /// stored keys give, never a request's, so a fast seeded hasher does.
    totals: DashMap<String, (u64, Instant), foldhash::fast::RandomState>,
}

impl SpendCounters {
    /// Adds `amount` to `name` (a counter past its expiry starts again from
    /// zero and lives `ttl`); returns the new total.
    pub fn add(&self, name: &str, amount: u64, ttl: Duration) -> u64 {
        let now = Instant::now();
        if amount == 0 {
            return self
                .totals
                .get(name)
                .filter(|e| e.1 > now)
                .map_or(0, |e| e.0);
        }
        self.update(name, ttl, |e, _| {
            e.0 = e.0.saturating_add(amount);
        })
    }

    /// Replaces `reserved` by `spent` on `name` (the settlement of a reservation): never below zero.
    pub fn settle(&self, name: &str, reserved: u64, spent: u64, ttl: Duration) {
        self.update(name, ttl, |e, now| {
            e.0 = e.0.saturating_sub(reserved).saturating_add(spent);
            e.1 = now + ttl;
        });
    }

    /// Applies `f` to `name`'s live counter, with the time it reads (one past its expiry starts again from zero and
    /// lives `ttl`); returns the new total. A counter that exists is changed in place: its name is copied only when
    /// it is new.
    fn update(
        &self,
        name: &str,
        ttl: Duration,
        f: impl FnOnce(&mut (u64, Instant), Instant),
    ) -> u64 {
        let now = Instant::now();
        let apply = |e: &mut (u64, Instant)| {
            if e.1 <= now {
                *e = (0, now + ttl);
            }
            f(e, now);
            e.0
        };
        if let Some(mut e) = self.totals.get_mut(name) {
            return apply(&mut e);
        }
        // Counters are few (budgeted keys × live periods): sweeping now and
        // then on a write keeps expired ones from piling up.
        if self.totals.len() >= 1024 {
            self.sweep();
        }
        let mut e = self.totals.entry(name.to_owned()).or_insert((0, now + ttl));
        apply(&mut e)
    }

    /// Drops expired counters.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.totals.retain(|_, e| e.1 > now);
    }
}

/// Adds `amount` to the Redis counter `key` and (re)sets its expiry; returns
/// the new total.
pub(crate) async fn redis_add(
    mut conn: crate::redis_link::Conn,
    key: String,
    amount: u64,
    ttl_ms: u64,
) -> redis::RedisResult<u64> {
    if amount == 0 {
        let v: Option<u64> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        return Ok(v.unwrap_or(0));
    }
    let (total, _): (u64, i64) = redis::pipe()
        .atomic()
        .cmd("INCRBY")
        .arg(&key)
        .arg(amount)
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(ttl_ms)
        .query_async(&mut conn)
        .await?;
    Ok(total)
}

/// Replaces a reservation by the real cost on the Redis counter `key` (`delta` = cost − reserved), never below
/// zero, and restarts its expiry.
pub(crate) async fn redis_settle(
    mut conn: crate::redis_link::Conn,
    key: String,
    delta: i64,
    ttl_ms: u64,
) -> redis::RedisResult<i64> {
    crate::lua::SETTLE_SPEND
        .key(key)
        .arg(delta)
        .arg(ttl_ms)
        .invoke_async(&mut conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_read_and_expire() {
        let c = SpendCounters::default();
        assert_eq!(c.add("a", 0, Duration::from_secs(60)), 0);
        assert_eq!(c.add("a", 5, Duration::from_secs(60)), 5);
        assert_eq!(c.add("a", 7, Duration::from_secs(60)), 12);
        assert_eq!(c.add("a", 0, Duration::from_secs(60)), 12);
        assert_eq!(c.add("b", 1, Duration::ZERO), 1);
        assert_eq!(c.add("b", 0, Duration::ZERO), 0);
        c.sweep();
        assert!(c.totals.get("b").is_none());
    }

    #[test]
    fn settling_replaces_a_reservation_and_never_goes_negative() {
        let c = SpendCounters::default();
        let ttl = Duration::from_secs(60);
        c.add("a", 100, ttl);
        c.settle("a", 100, 30, ttl);
        assert_eq!(c.add("a", 0, ttl), 30);
        c.settle("a", 50, 0, ttl);
        assert_eq!(c.add("a", 0, ttl), 0);
    }
}
