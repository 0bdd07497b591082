//! Usage counters per UTC day: requests, tokens and cost per client key × model × provider × upstream model.
//!
//! Written like the spend counters: the gateway defers one [`Deferred::Usage`](crate::Deferred::Usage) per
//! answered request, and the stores add them up off the request path.
//! - Embedded ([`UsageCounters`]): in memory; with `store.path` every delta is also added to the redb file (a
//!   table of its own, written by a background thread about once a second and at [`Store::flush`](crate::Store))
//!   so the counters survive a restart.
//! - Redis: one hash per day, `{prefix}usage:{day}` (hash-tagged by day on a Cluster), whose fields are the
//!   row ([`UsageDims::field`]) and one letter per amount, added with `HINCRBY` (cost in millionths of a dollar, so
//!   sums stay exact) and expired `usage_retention_days` after the day's last write; shared by every replica.
//!
//! Bounded: the store keeps what it is given; the gateway only hands it key ids, provider and model names its
//! configuration (or a provider's catalog) knows, so a client inventing model names cannot grow it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What one usage row is counted by (besides the day).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsageDims {
    /// The client key's id (`-`: no key).
    pub key_id: String,
    /// The client key's name (`-`: no key).
    pub key_name: String,
    /// The (bounded) model name the client asked for.
    pub model: String,
    /// The provider that answered (or was tried last).
    pub provider: String,
    /// The (bounded) provider's model id.
    pub upstream_model: String,
}

/// Separates the parts of a row in Redis fields and redb keys (names never hold control characters).
const SEP: char = '\u{1f}';

impl UsageDims {
    /// The row as one string (Redis field prefix, redb key suffix).
    pub fn field(&self) -> String {
        [
            self.key_id.as_str(),
            &self.key_name,
            &self.model,
            &self.provider,
            &self.upstream_model,
        ]
        .join(&SEP.to_string())
    }

    /// The inverse of [`UsageDims::field`]; `None` for anything else.
    pub fn parse(field: &str) -> Option<Self> {
        let mut parts = field.split(SEP);
        let dims = UsageDims {
            key_id: parts.next()?.to_owned(),
            key_name: parts.next()?.to_owned(),
            model: parts.next()?.to_owned(),
            provider: parts.next()?.to_owned(),
            upstream_model: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(dims)
    }
}

/// The amounts of a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAmounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    /// Millionths of a US dollar.
    pub cost_micros: u64,
}

/// The one-letter names of the amounts in a Redis field, in [`UsageAmounts::values`] order.
pub(crate) const LETTERS: [char; 5] = ['r', 'i', 'o', 'c', 'u'];

impl UsageAmounts {
    /// Adds `other`, saturating.
    pub fn add(&mut self, other: &UsageAmounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
    }

    pub(crate) fn values(&self) -> [u64; 5] {
        [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cost_micros,
        ]
    }

    fn value_mut(&mut self, i: usize) -> Option<&mut u64> {
        match i {
            0 => Some(&mut self.requests),
            1 => Some(&mut self.input_tokens),
            2 => Some(&mut self.output_tokens),
            3 => Some(&mut self.cached_input_tokens),
            4 => Some(&mut self.cost_micros),
            _ => None,
        }
    }

    /// Adds `value` to the amount Redis names `letter` (unknown letters are ignored).
    pub(crate) fn add_letter(&mut self, letter: char, value: u64) {
        if let Some(v) = LETTERS
            .iter()
            .position(|l| *l == letter)
            .and_then(|i| self.value_mut(i))
        {
            *v = v.saturating_add(value);
        }
    }

    fn to_bytes(self) -> Vec<u8> {
        self.values().iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let mut a = UsageAmounts::default();
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            if let Some(v) = a.value_mut(i) {
                *v = u64::from_le_bytes(b);
            }
        }
        a
    }
}

/// One row: a day (`YYYY-MM-DD`, UTC), what it is counted by, and the amounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub day: String,
    pub dims: UsageDims,
    pub amounts: UsageAmounts,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number ([`days_from_civil`]'s inverse).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DD` of a day number. Written digit by digit: every counted
/// request names its day, and `format!` was a third of what counting a
/// request cost (benches/README.md).
pub fn day_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}");
    }
    let y = y as u32;
    let digit = |v: u32| char::from(b'0' + (v % 10) as u8);
    let mut out = String::with_capacity(10);
    for v in [y / 1000, y / 100, y / 10, y] {
        out.push(digit(v));
    }
    out.push('-');
    out.push(digit(m / 10));
    out.push(digit(m));
    out.push('-');
    out.push(digit(d / 10));
    out.push(digit(d));
    out
}

/// The day number of a strict `YYYY-MM-DD` (a real date, years 1970–9999); `None` otherwise.
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if y < 1970 || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    // A day past the month's end (02-30) comes back as another date.
    (civil_from_days(days) == (i64::from(y), m, d)).then_some(days)
}

/// Today's day number (UTC).
pub fn today() -> i64 {
    (crate::unix_now() / 86_400.0).floor() as i64
}

/// The redb table of the embedded counters: `day SEP row` → the five amounts (little-endian u64s).
const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("usage_daily");

/// How often the embedded counters write to their file.
const FILE_WRITE_INTERVAL: Duration = Duration::from_secs(1);

type Rows = BTreeMap<(String, UsageDims), UsageAmounts>;

/// The embedded counters (also the Redis store's fallback): in memory, and with a file also there.
pub struct UsageCounters {
    /// Everything counted by this process (read when there is no file).
    totals: Mutex<Rows>,
    /// Deltas not yet added to the file.
    pending: Mutex<Rows>,
    path: Option<PathBuf>,
    retention_days: u32,
}

impl UsageCounters {
    /// Counters kept `retention_days`; with `path`, also in that redb file (written by a background thread).
    pub fn new(path: Option<PathBuf>, retention_days: u32) -> Arc<Self> {
        let counters = Arc::new(UsageCounters {
            totals: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            path,
            retention_days: retention_days.max(1),
        });
        if counters.path.is_some() {
            spawn_file_writer(Arc::downgrade(&counters));
        }
        counters
    }

    /// Adds one request's usage.
    pub fn add(&self, record: UsageRecord) {
        let key = (record.day, record.dims);
        if self.path.is_some() {
            self.pending
                .lock()
                .entry(key)
                .or_default()
                .add(&record.amounts);
            return;
        }
        let oldest = day_string(today() - i64::from(self.retention_days));
        let mut totals = self.totals.lock();
        // Days past retention go, as a Redis hash expires.
        if totals.keys().next().is_some_and(|(day, _)| *day < oldest) {
            totals.retain(|(day, _), _| *day >= oldest);
        }
        totals.entry(key).or_default().add(&record.amounts);
    }

    /// The rows of days `from..=to` (`YYYY-MM-DD`), from the file and what is still pending.
    pub fn read(&self, from: &str, to: &str) -> Vec<UsageRecord> {
        let mut rows: Rows = BTreeMap::new();
        let in_range = |day: &str| day >= from && day <= to;
        if let Some(path) = &self.path {
            let upto = format!("{to}{SEP}\u{7f}");
            let read = crate::keys::with_file(path, |db| {
                let tx = db.begin_read().map_err(|e| e.to_string())?;
                let table = match tx.open_table(TABLE) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                };
                for entry in table
                    .range(from..upto.as_str())
                    .map_err(|e| e.to_string())?
                {
                    let (k, v) = entry.map_err(|e| e.to_string())?;
                    if let Some((day, dims)) = k.value().split_once(SEP) {
                        if let Some(dims) = UsageDims::parse(dims).filter(|_| in_range(day)) {
                            rows.entry((day.to_owned(), dims))
                                .or_default()
                                .add(&UsageAmounts::from_bytes(v.value()));
                        }
                    }
                }
                Ok(())
            });
            if let Err(e) = read {
                log::warn!("store: cannot read usage from the store file: {e}");
            }
            for ((day, dims), a) in self.pending.lock().iter() {
                if in_range(day) {
                    rows.entry((day.clone(), dims.clone())).or_default().add(a);
                }
            }
        } else {
            for ((day, dims), a) in self.totals.lock().iter() {
                if in_range(day) {
                    rows.insert((day.clone(), dims.clone()), *a);
                }
            }
        }
        rows.into_iter()
            .map(|((day, dims), amounts)| UsageRecord { day, dims, amounts })
            .collect()
    }

    /// Adds the pending deltas to the file (and drops days past retention from it). On failure they stay
    /// pending for the next try.
    pub fn write_file(&self) {
        let Some(path) = &self.path else { return };
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return;
        }
        let oldest = day_string(today() - i64::from(self.retention_days));
        let written = crate::keys::with_file(path, |db| {
            use redb::ReadableTable;
            let tx = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
                for ((day, dims), delta) in &batch {
                    let key = format!("{day}{SEP}{}", dims.field());
                    let mut total = table
                        .get(key.as_str())
                        .map_err(|e| e.to_string())?
                        .map(|v| UsageAmounts::from_bytes(v.value()))
                        .unwrap_or_default();
                    total.add(delta);
                    table
                        .insert(key.as_str(), total.to_bytes().as_slice())
                        .map_err(|e| e.to_string())?;
                }
                let stale = format!("{oldest}{SEP}");
                table
                    .retain_in(..stale.as_str(), |_, _| false)
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            log::warn!("store: cannot write usage to the store file (kept for the next try): {e}");
            let mut pending = self.pending.lock();
            for (key, delta) in batch {
                pending.entry(key).or_default().add(&delta);
            }
        }
    }
}

/// Writes the pending deltas every [`FILE_WRITE_INTERVAL`] on a plain thread until the counters are gone.
fn spawn_file_writer(counters: Weak<UsageCounters>) {
    let spawned = std::thread::Builder::new()
        .name("apiproxy-usage-file".into())
        .spawn(move || loop {
            std::thread::sleep(FILE_WRITE_INTERVAL);
            match counters.upgrade() {
                Some(c) => c.write_file(),
                None => break,
            }
        });
    if let Err(e) = spawned {
        log::warn!("store: cannot start the usage file writer (written at exit only): {e}");
    }
}

/// Adds coalesced rows to their Redis day hashes and restarts each day's expiry: one pipeline per day (each
/// day hash is one Cluster slot).
pub(crate) async fn redis_add(
    mut conn: crate::redis_link::Conn,
    rows: Vec<(String, String, UsageAmounts)>,
    ttl_secs: u64,
) -> redis::RedisResult<()> {
    let mut days: BTreeMap<&str, redis::Pipeline> = BTreeMap::new();
    for (key, field, amounts) in &rows {
        let pipe = days.entry(key).or_insert_with(redis::pipe);
        for (letter, value) in LETTERS.iter().zip(amounts.values()) {
            if value > 0 {
                pipe.cmd("HINCRBY")
                    .arg(key)
                    .arg(format!("{field}{SEP}{letter}"))
                    .arg(value)
                    .ignore();
            }
        }
    }
    for (key, mut pipe) in days {
        pipe.cmd("EXPIRE").arg(key).arg(ttl_secs).ignore();
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

/// Reads the day hashes `keys` (`(day, key)` pairs) into rows.
pub(crate) async fn redis_read(
    mut conn: crate::redis_link::Conn,
    keys: Vec<(String, String)>,
) -> redis::RedisResult<Vec<UsageRecord>> {
    let mut rows: Rows = BTreeMap::new();
    for (day, key) in keys {
        let hash: BTreeMap<String, u64> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        for (field, value) in hash {
            let Some((dims, letter)) = field.rsplit_once(SEP) else {
                continue;
            };
            let (Some(dims), Some(letter)) = (UsageDims::parse(dims), letter.chars().next()) else {
                continue;
            };
            rows.entry((day.clone(), dims))
                .or_default()
                .add_letter(letter, value);
        }
    }
    Ok(rows
        .into_iter()
        .map(|((day, dims), amounts)| UsageRecord { day, dims, amounts })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(day: &str, key: &str, model: &str, tokens: u64) -> UsageRecord {
        UsageRecord {
            day: day.into(),
            dims: UsageDims {
                key_id: format!("id-{key}"),
                key_name: key.into(),
                model: model.into(),
                provider: "p".into(),
                upstream_model: "m".into(),
            },
            amounts: UsageAmounts {
                requests: 1,
                input_tokens: tokens,
                output_tokens: 2 * tokens,
                cached_input_tokens: 1,
                cost_micros: 10,
            },
        }
    }

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(day_string(parse_day("2024-02-29").unwrap()), "2024-02-29");
        assert_eq!(day_string(parse_day("2026-12-31").unwrap()), "2026-12-31");
        // Every day of four centuries reads back as the same day, written
        // as `format!` writes it.
        for days in -1..146_100 {
            let (y, m, d) = civil_from_days(days);
            let s = day_string(days);
            assert_eq!(s, format!("{y:04}-{m:02}-{d:02}"));
            if days >= 0 {
                assert_eq!(parse_day(&s), Some(days), "{s}");
            }
        }
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-32",
            "x",
            "+026-01-01",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_round_trip() {
        let r = record("2026-01-01", "alice", "fast", 1);
        assert_eq!(UsageDims::parse(&r.dims.field()), Some(r.dims.clone()));
        assert_eq!(UsageDims::parse("a\u{1f}b"), None);
    }

    #[test]
    fn memory_counters_add_up_per_day_and_row() {
        let c = UsageCounters::new(None, 400);
        let today = day_string(today());
        c.add(record(&today, "alice", "fast", 5));
        c.add(record(&today, "alice", "fast", 7));
        c.add(record(&today, "bob", "fast", 1));
        let rows = c.read(&today, &today);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].dims.key_name, "alice");
        assert_eq!(rows[0].amounts.requests, 2);
        assert_eq!(rows[0].amounts.input_tokens, 12);
        assert_eq!(rows[0].amounts.output_tokens, 24);
        assert_eq!(rows[0].amounts.cost_micros, 20);
        assert!(c.read("1999-01-01", "1999-12-31").is_empty());
    }

    #[test]
    fn file_counters_survive_reopening_and_add_to_what_is_there() {
        let dir = std::env::temp_dir().join(format!("usage-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        let today = day_string(today());
        {
            let c = UsageCounters::new(Some(path.clone()), 400);
            c.add(record(&today, "alice", "fast", 5));
            assert_eq!(
                c.read(&today, &today)[0].amounts.input_tokens,
                5,
                "pending is read"
            );
            c.write_file();
        }
        let c = UsageCounters::new(Some(path.clone()), 400);
        c.add(record(&today, "alice", "fast", 3));
        c.write_file();
        let rows = c.read(&today, &today);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].amounts.requests, 2);
        assert_eq!(rows[0].amounts.input_tokens, 8);
        std::fs::remove_dir_all(&dir).ok();
    }
}
