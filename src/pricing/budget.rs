//! Spending limits per client key (`auth.keys[].budget_usd` per
//! `budget_period`), counted in the store so every replica on one Redis
//! spends from the same budget.
//!
//! A request is admitted while the key's counter (spent, plus what requests
//! in flight reserved) is under its budget, and reserves its estimated cost
//! (capped at what is left) in the same store call that admits its rate
//! limits (`limits::admit`). After the answer the reservation is replaced
//! by the real cost. Concurrent requests thus overshoot a budget by at most
//! one request's cost, and a budget smaller than one request's estimate
//! still admits its first request. A budget whose counter cannot be read
//! (Redis down) refuses with 503: counted per replica, it could be spent
//! again on each.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiproxy_store::{SpendLimit, Store};
use serde_json::json;

use crate::config::ClientKey;
use crate::error::GatewayError;

/// Budgets are counted in millionths of a dollar (integers add atomically
/// in Redis and never drift).
pub const MICROS_PER_USD: f64 = 1e6;

use crate::config::{Budget, BudgetPeriod, Named};

/// A cost in the budget counters' unit (millionths of a dollar).
pub fn micros(usd: f64) -> u64 {
    let m = (usd * MICROS_PER_USD).round();
    if m.is_finite() && m > 0.0 {
        m as u64
    } else {
        0
    }
}

/// The spend limit a budget asks the store to check.
pub fn spend_limit(name: String, limit_usd: f64, reserve_usd: f64, ttl: Duration) -> SpendLimit {
    SpendLimit {
        name,
        limit: micros(limit_usd),
        reserve: micros(reserve_usd),
        ttl,
    }
}

/// Where the current period stands at `unix_secs`: its name (`2026-11-29`
/// or `2026-11`) appended to `name`, and the seconds until it ends.
fn write_period(period: BudgetPeriod, unix_secs: u64, name: &mut String) -> u64 {
    let days = unix_secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    // Written digit by digit: this runs on every request of a budgeted key.
    push_padded(name, y.max(0) as u64, 4);
    name.push('-');
    push_padded(name, u64::from(m), 2);
    match period {
        BudgetPeriod::Day => {
            name.push('-');
            push_padded(name, u64::from(d), 2);
            86_400 - unix_secs % 86_400
        }
        BudgetPeriod::Month => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = days_from_civil(ny, nm, 1) as u64 * 86_400;
            next.saturating_sub(unix_secs)
        }
    }
}

/// `v` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, v: u64, width: usize) {
    let mut b = itoa::Buffer::new();
    let s = b.format(v);
    out.extend(std::iter::repeat_n('0', width.saturating_sub(s.len())));
    out.push_str(s);
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm: exact for the proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The store counter of `key` in the current period, and the time it lives
/// (the period's end and a day).
fn counter(key: &str, budget: &Budget) -> (String, Duration) {
    let mut name = String::with_capacity(COUNTER_PREFIX.len() + key.len() + 11);
    name.push_str(COUNTER_PREFIX);
    name.push_str(key);
    name.push(':');
    let left = write_period(budget.period, now_secs(), &mut name);
    // The counter outlives its period by a day so a replica with a skewed
    // clock still finds it.
    (name, Duration::from_secs(left + 86_400))
}

/// The start of a budget counter's name (`budget:<owner id>:<period>`).
const COUNTER_PREFIX: &str = "budget:";

/// `micros` millionths of a dollar in dollars with `decimals` (2 or 8)
/// decimals, from the integer (exact, where a float's formatting would
/// round and cost more): 2 decimals round half up to the cent.
fn usd_of_micros(micros: u64, decimals: u32) -> String {
    let (units, frac, width) = if decimals >= 6 {
        (micros / 1_000_000, micros % 1_000_000, 6)
    } else {
        let cents = micros.saturating_add(5_000) / 10_000;
        (cents / 100, cents % 100, 2)
    };
    let mut out = String::with_capacity(24);
    push_padded(&mut out, units, 1);
    out.push('.');
    push_padded(&mut out, frac, width);
    out.extend(std::iter::repeat_n(
        '0',
        (decimals as usize).saturating_sub(width),
    ));
    out
}

/// A key's budget as it stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetState {
    pub limit_usd: f64,
    pub spent_usd: f64,
    /// Seconds until the period ends and the budget renews.
    pub renews_in_secs: u64,
}

impl BudgetState {
    pub fn remaining_usd(&self) -> f64 {
        (self.limit_usd - self.spent_usd).max(0.0)
    }
}

/// What `key` has spent in the current period; `None` without a budget.
pub async fn state(store: &dyn Store, key: &ClientKey) -> Option<BudgetState> {
    let budget = key.budget?;
    let (name, ttl) = counter(key.owner_id(), &budget);
    let micros = store.add_spend(&name, 0, ttl).await;
    Some(BudgetState {
        limit_usd: budget.usd,
        spent_usd: micros as f64 / MICROS_PER_USD,
        renews_in_secs: ttl.as_secs().saturating_sub(86_400),
    })
}

/// A budget to check and reserve from at admission (`limits::admit`).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetAsk {
    /// The counter, the limit and the cost to reserve.
    pub limit: SpendLimit,
    pub limit_usd: f64,
    pub period: BudgetPeriod,
    /// Seconds until the period ends and the budget renews.
    pub renews_in_secs: u64,
}

/// What a request of `key` asks of its budget when it may cost up to
/// `reserve_usd`; `None` without a budget.
pub fn ask(key: &ClientKey, reserve_usd: f64) -> Option<BudgetAsk> {
    let budget = key.budget?;
    let (name, ttl) = counter(key.owner_id(), &budget);
    Some(BudgetAsk {
        limit: spend_limit(name, budget.usd, reserve_usd, ttl),
        limit_usd: budget.usd,
        period: budget.period,
        renews_in_secs: ttl.as_secs().saturating_sub(86_400),
    })
}

impl BudgetAsk {
    /// `x-budget-limit-usd` and `x-budget-remaining-usd` (before this
    /// request), given the counter as the admission found it.
    pub fn headers(&self, spent_micros: u64) -> [(&'static str, String); 2] {
        [
            ("x-budget-limit-usd", usd_of_micros(self.limit.limit, 2)),
            (
                "x-budget-remaining-usd",
                usd_of_micros(self.limit.limit.saturating_sub(spent_micros), 8),
            ),
        ]
    }

    /// The budget is spent: 429 (see README: the status OpenAI gives an
    /// exhausted quota, and one every SDK surfaces as a limit) with
    /// `Retry-After` at the period's end.
    pub fn spent(&self) -> GatewayError {
        let mut e = GatewayError::client(
            429,
            format!(
                "the budget of this key (${:.2} per {}) is spent; it renews in {} s",
                self.limit_usd,
                self.period.name(),
                self.renews_in_secs
            ),
        );
        e.retry_after = Some(self.renews_in_secs.max(1));
        e
    }

    /// The budget's counter cannot be read or reserved from: 503, fail
    /// closed (each replica counting alone could spend it again).
    pub fn cannot_be_checked(&self) -> GatewayError {
        GatewayError::unavailable(
            "the budget of this key cannot be checked (the shared store is unavailable); retry shortly",
        )
    }
}

/// Every budgeted key as it stands, for the admin console:
/// `[{"key", "period", "limit_usd", "spent_usd", "remaining_usd", "renews_in_secs"}]`.
pub async fn report(store: &dyn Store, keys: &[ClientKey]) -> serde_json::Value {
    let mut out = Vec::new();
    for k in keys {
        let Some(s) = state(store, k).await else {
            continue;
        };
        out.push(json!({
            "key": k.name,
            "period": match k.budget.map(|b| b.period) {
                Some(BudgetPeriod::Month) => "month",
                _ => "day",
            },
            "limit_usd": s.limit_usd,
            "spent_usd": s.spent_usd,
            "remaining_usd": s.remaining_usd(),
            "renews_in_secs": s.renews_in_secs,
        }));
    }
    serde_json::Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_period(period: BudgetPeriod, unix_secs: u64) -> (String, u64) {
        let mut name = String::new();
        let left = write_period(period, unix_secs, &mut name);
        (name, left)
    }

    #[test]
    fn periods_are_utc_days_and_months() {
        // 2024-02-29 12:00:00 UTC
        let t = 1_709_208_000;
        assert_eq!(
            current_period(BudgetPeriod::Day, t),
            ("2024-02-29".into(), 43_200)
        );
        assert_eq!(
            current_period(BudgetPeriod::Month, t),
            ("2024-02".into(), 43_200)
        );
        // 2025-12-31 23:59:59 → January 1st is one second away.
        let t = 1_767_225_599;
        assert_eq!(
            current_period(BudgetPeriod::Month, t),
            ("2025-12".into(), 1)
        );
        assert_eq!(
            current_period(BudgetPeriod::Day, 0),
            ("1970-01-01".into(), 86_400)
        );
        // Every day of four years names itself as the calendar does.
        for day in 19_000..20_461u64 {
            let t = day * 86_400 + 7;
            let (y, m, d) = civil_from_days(day as i64);
            assert_eq!(
                current_period(BudgetPeriod::Day, t).0,
                format!("{y:04}-{m:02}-{d:02}")
            );
            assert_eq!(
                current_period(BudgetPeriod::Month, t).0,
                format!("{y:04}-{m:02}")
            );
        }
    }

    #[test]
    fn dollars_are_written_from_the_integer_count() {
        for (micros, cents, full) in [
            (0, "0.00", "0.00000000"),
            (1, "0.00", "0.00000100"),
            (4_999, "0.00", "0.00499900"),
            (5_000, "0.01", "0.00500000"),
            (12_500, "0.01", "0.01250000"),
            (999_999, "1.00", "0.99999900"),
            (1_000_000, "1.00", "1.00000000"),
            (2_500_000, "2.50", "2.50000000"),
            (
                1_000_000_000_000_000,
                "1000000000.00",
                "1000000000.00000000",
            ),
        ] {
            assert_eq!(usd_of_micros(micros, 2), cents, "{micros}");
            assert_eq!(usd_of_micros(micros, 8), full, "{micros}");
        }
        // What a float's formatting gives, where the float is exact.
        for usd in [0.0, 0.01, 0.5, 2.5, 3.25, 1234.75] {
            assert_eq!(usd_of_micros(micros(usd), 2), format!("{usd:.2}"));
            assert_eq!(usd_of_micros(micros(usd), 8), format!("{usd:.8}"));
        }
    }

    #[test]
    fn bad_budget_keys_are_named() {
        assert!(Budget::resolve(Some(-1.0), None)
            .unwrap_err()
            .starts_with("budget_usd"));
        assert!(Budget::resolve(Some(1.0), Some("week"))
            .unwrap_err()
            .starts_with("budget_period"));
        assert_eq!(
            Budget::resolve(Some(2.5), Some("month")).unwrap(),
            Some(Budget {
                usd: 2.5,
                period: BudgetPeriod::Month
            })
        );
    }
}
