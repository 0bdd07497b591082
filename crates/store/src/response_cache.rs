//! The embedded store's response cache: entries with a TTL, bounded in bytes, the oldest written going first when
//! a new one would not fit. The Redis store keeps the same bound with `lua::CACHE_PUT`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Bytes an entry takes: its key and its value (the bound is on what the gateway stores, not the map's overhead).
pub(crate) fn entry_bytes(key: &str, value: &[u8]) -> usize {
    key.len().saturating_add(value.len())
}

struct Entry {
    value: Vec<u8>,
    expires: Instant,
    /// Its place in [`ResponseCache::order`].
    seq: u64,
}

/// Entries by key, with the write order for eviction.
pub(crate) struct ResponseCache {
    max_bytes: usize,
    entries: HashMap<String, Entry>,
    /// Write sequence → key, oldest first.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    bytes: usize,
}

impl ResponseCache {
    /// An empty cache holding at most `max_bytes` of entries.
    pub(crate) fn new(max_bytes: usize) -> Self {
        ResponseCache {
            max_bytes,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
        }
    }

    /// The live value of `key`.
    pub(crate) fn get(&mut self, key: &str, now: Instant) -> Option<Vec<u8>> {
        let entry = self.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.value.clone());
        }
        self.remove(key);
        None
    }

    /// Stores `value` under `key` for `ttl`, replacing what was there; the oldest entries go until it fits. An
    /// entry larger than the whole bound is not stored.
    pub(crate) fn put(&mut self, key: String, value: Vec<u8>, ttl: Duration, now: Instant) {
        let size = entry_bytes(&key, &value);
        if size > self.max_bytes || ttl.is_zero() {
            return;
        }
        self.remove(&key);
        while self.bytes + size > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= entry_bytes(&oldest, &e.value);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.bytes += size;
        self.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
                seq,
            },
        );
    }

    /// Removes the expired entries (the sweeper's job).
    pub(crate) fn sweep(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }

    /// Bytes held now (keys and values).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.seq);
            self.bytes -= entry_bytes(key, &e.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn the_oldest_go_first_and_the_bound_holds() {
        let now = Instant::now();
        let mut c = ResponseCache::new(30);
        c.put("a".into(), vec![0; 9], TTL, now); // 10 bytes
        c.put("b".into(), vec![1; 9], TTL, now);
        c.put("c".into(), vec![2; 9], TTL, now);
        assert_eq!(c.bytes(), 30);
        c.put("d".into(), vec![3; 9], TTL, now);
        assert_eq!(c.bytes(), 30);
        assert_eq!(c.get("a", now), None, "the oldest went");
        assert_eq!(c.get("b", now), Some(vec![1; 9]));
        assert_eq!(c.get("d", now), Some(vec![3; 9]));
        // Rewriting an entry makes it the newest and counts it once.
        c.put("b".into(), vec![4; 9], TTL, now);
        c.put("e".into(), vec![5; 9], TTL, now);
        assert_eq!(c.get("c", now), None);
        assert_eq!(c.get("b", now), Some(vec![4; 9]));
        assert_eq!(c.bytes(), 30);
    }

    #[test]
    fn entries_expire_and_oversized_ones_are_not_kept() {
        let now = Instant::now();
        let mut c = ResponseCache::new(30);
        c.put("big".into(), vec![0; 40], TTL, now);
        assert_eq!((c.get("big", now), c.bytes()), (None, 0));
        c.put("a".into(), vec![0; 9], Duration::from_secs(1), now);
        c.put("b".into(), vec![0; 9], TTL, now);
        let later = now + Duration::from_secs(2);
        assert_eq!(c.get("a", later), None);
        assert_eq!(c.bytes(), 10, "an expired entry read is removed");
        c.put("c".into(), vec![0; 9], Duration::from_secs(1), now);
        c.sweep(later);
        assert_eq!(c.bytes(), 10);
        assert!(c.get("b", later).is_some());
    }
}
