//! Which of a provider's keys an attempt uses: each key's live state
//! (cooldown, strikes, rate-limit reading, own capacity) and the choice
//! among them by the provider's `key_strategy`.

use std::time::Duration;

use super::capacity::{Capacity, Slot};
use super::cooldown::{self, Cause};
use super::ratelimit::RateLimitReading;
use super::{now_ms, Provider};
use crate::config::routing::Cooldowns;
use crate::config::KeyStrategy;

/// The live state of one provider key.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    /// Out of rotation until (ms since the epoch).
    pub cooldown_until_ms: u64,
    /// Failures in a row (the cooldown doubles with each).
    pub strikes: u32,
    /// Why it last cooled down.
    pub cause: Option<Cause>,
    /// What the provider last said about this key's rate limits.
    pub ratelimit: Option<RateLimitReading>,
}

/// Which of a provider's keys an attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChoice {
    /// The key at this index of `api_keys`.
    Key(usize),
    /// The provider is configured without keys.
    Keyless,
    /// Every key is cooling down (or was already tried).
    AllCooling,
    /// No key is cooling down for good, but every one left is at its
    /// `max_concurrency` or `max_qps`.
    AllBusy,
}

/// Where one key stands for the next pick, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// Already tried by this request, or rate limited / refused and resting.
    Out,
    /// At its own `max_concurrency` or `max_qps`.
    Full,
    /// Resting after a 5xx or a network error: the last resort.
    Soft,
    /// Nearly out of its rate limit.
    Low,
    Ready,
}

impl KeyChoice {
    /// The key index, for keyed providers.
    pub fn index(self) -> Option<usize> {
        match self {
            KeyChoice::Key(i) => Some(i),
            _ => None,
        }
    }
}

impl Provider {
    /// The key for the next attempt: `prefer` (a session's key) when it is
    /// ready, else one chosen by `key_strategy` among the ready keys,
    /// skipping `skip` (keys this request already tried). A key the
    /// provider says is nearly out of its rate limit (at most `reserve`
    /// left) is used only when no other is ready; a key resting after a 5xx
    /// or a network error only as the last resort (the provider has already
    /// been ranked behind every healthy one). A key rate limited or refused
    /// is never used while it rests, nor one at its own `max_concurrency`
    /// or `max_qps`.
    pub fn pick_key(&self, prefer: Option<usize>, skip: &[usize], reserve: u64) -> KeyChoice {
        if self.keys.is_empty() {
            return KeyChoice::Keyless;
        }
        let now = now_ms();
        let standing: Vec<Standing> = (0..self.keys.len())
            .map(|i| self.standing(i, now, skip, reserve))
            .collect();
        let preferred = |s: Standing| prefer.filter(|&p| standing.get(p) == Some(&s));
        let pick = preferred(Standing::Ready)
            .or_else(|| self.choose(&standing, Standing::Ready))
            .or_else(|| preferred(Standing::Low))
            .or_else(|| self.choose(&standing, Standing::Low))
            .or_else(|| self.choose(&standing, Standing::Soft));
        match pick {
            Some(i) => KeyChoice::Key(i),
            None if standing.contains(&Standing::Full) => KeyChoice::AllBusy,
            None => KeyChoice::AllCooling,
        }
    }

    /// When every key is resting after the provider rate limited it (429):
    /// the seconds until the first one is free. `None` when any key rests
    /// for another cause, or none rests.
    pub fn rate_limited_for(&self) -> Option<u64> {
        let now = now_ms();
        let mut first_free: Option<u64> = None;
        for k in &self.keys {
            let k = k.lock();
            if k.cooldown_until_ms <= now || k.cause != Some(Cause::RateLimited) {
                return None;
            }
            first_free =
                Some(first_free.map_or(k.cooldown_until_ms, |f| f.min(k.cooldown_until_ms)));
        }
        first_free.map(|until| (until - now).div_ceil(1000).max(1))
    }

    /// Whether [`Provider::pick_key`] would find a key, without taking a
    /// turn of the rotation.
    pub fn has_key_left(&self, skip: &[usize], reserve: u64) -> bool {
        let now = now_ms();
        (0..self.keys.len()).any(|i| {
            !matches!(
                self.standing(i, now, skip, reserve),
                Standing::Out | Standing::Full
            )
        })
    }

    fn standing(&self, i: usize, now: u64, skip: &[usize], reserve: u64) -> Standing {
        if skip.contains(&i) {
            return Standing::Out;
        }
        let k = self.keys[i].lock();
        if k.cooldown_until_ms > now {
            return match k.cause {
                Some(Cause::ServerError | Cause::Network) => Standing::Soft,
                _ => Standing::Out,
            };
        }
        let low = k.ratelimit.as_ref().is_some_and(|r| r.low(now, reserve));
        drop(k);
        let o = &self.config.key_options[i];
        if !self.key_capacity[i].has_room(now, o.max_concurrency, o.max_qps) {
            Standing::Full
        } else if low {
            Standing::Low
        } else {
            Standing::Ready
        }
    }

    /// One of the keys standing at `want`, by the provider's strategy.
    fn choose(&self, standing: &[Standing], want: Standing) -> Option<usize> {
        let eligible = || (0..standing.len()).filter(|&i| standing[i] == want);
        match self.config.key_strategy {
            KeyStrategy::FillFirst => eligible().next(),
            KeyStrategy::RoundRobin => {
                // Smooth weighted round-robin over the eligible keys: each
                // gains its weight, the highest is picked and pays the total.
                let mut current = self.rotation.lock();
                let mut total = 0.0;
                let mut best: Option<usize> = None;
                for i in eligible() {
                    let w = self.config.key_options[i].weight;
                    current[i] += w;
                    total += w;
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    current[b] -= total;
                }
                best
            }
        }
    }

    /// Takes a unit of key `i`'s own capacity (`max_concurrency`,
    /// `max_qps`), held until the slot drops; `None` when it has no room.
    pub fn acquire_key(&self, i: usize) -> Option<Option<Slot<'_>>> {
        let o = self.config.key_options.get(i)?;
        if o.max_concurrency.is_none() && o.max_qps.is_none() {
            return Some(None);
        }
        self.key_capacity[i]
            .acquire(now_ms(), o.max_concurrency, o.max_qps)
            .map(Some)
    }

    /// Whether some key could take a request now as far as its own
    /// capacity goes (a keyless provider: yes).
    pub fn keys_have_room(&self, now: u64) -> bool {
        self.keys.is_empty()
            || self
                .config
                .key_options
                .iter()
                .zip(&self.key_capacity)
                .any(|(o, c)| c.has_room(now, o.max_concurrency, o.max_qps))
    }

    /// Requests in flight with key `i`.
    pub fn key_in_flight(&self, i: usize) -> u32 {
        self.key_capacity.get(i).map_or(0, Capacity::in_flight)
    }

    /// Whether some key is usable now, and whether every usable key is
    /// nearly out of its rate limit, with the most requests any has left.
    pub fn key_outlook(&self, reserve: u64) -> (bool, bool, Option<u64>) {
        if self.keys.is_empty() {
            return (true, false, None);
        }
        let now = now_ms();
        let (mut any, mut all_low, mut best) = (false, true, None::<u64>);
        for k in &self.keys {
            let k = k.lock();
            if k.cooldown_until_ms > now {
                continue;
            }
            any = true;
            let r = k.ratelimit.as_ref();
            all_low &= r.is_some_and(|r| r.low(now, reserve));
            if let Some(left) = r.and_then(|r| r.requests_left(now)) {
                best = Some(best.map_or(left, |b| b.max(left)));
            }
        }
        (any, any && all_low, best)
    }

    /// Takes key `i` out of rotation for `cause`; returns how long. The
    /// rest doubles with each failure of the key in a row.
    pub fn cool_key(
        &self,
        i: usize,
        cause: Cause,
        retry_after_secs: Option<u64>,
        c: &Cooldowns,
    ) -> Duration {
        let Some(k) = self.keys.get(i) else {
            return Duration::ZERO;
        };
        let mut k = k.lock();
        k.strikes = k.strikes.saturating_add(1);
        let d = cooldown::key_cooldown(cause, k.strikes, retry_after_secs, c);
        k.cooldown_until_ms = now_ms() + d.as_millis() as u64;
        k.cause = Some(cause);
        d
    }

    /// Key `i` answered: its failures in a row start over.
    pub fn key_succeeded(&self, i: usize) {
        if let Some(k) = self.keys.get(i) {
            k.lock().strikes = 0;
        }
    }

    /// Keeps the rate-limit reading of an answer given with key `i`.
    pub fn note_ratelimit(&self, i: usize, r: RateLimitReading) {
        if let Some(k) = self.keys.get(i) {
            k.lock().ratelimit = Some(r);
        }
    }

    /// The text of API key `i`, for the request's credentials.
    pub fn api_key(&self, i: Option<usize>) -> Option<&str> {
        i.and_then(|i| self.config.api_keys.get(i))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_provider as provider;

    #[test]
    fn keys_rotate_and_cool_down() {
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a, b, c]}]",
        );
        let c = crate::config::routing::RoutingSettings::default().cooldowns;
        let picks: Vec<_> = (0..3)
            .map(|_| p.pick_key(None, &[], 1).index().unwrap())
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "each key used once per round: {picks:?}");
        assert_eq!(
            p.cool_key(1, Cause::ServerError, None, &c),
            Duration::from_secs(15)
        );
        for _ in 0..6 {
            assert_ne!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        }
        assert_eq!(p.pick_key(Some(2), &[], 1), KeyChoice::Key(2));
        // Resting after a 5xx: still the last resort.
        assert_eq!(p.pick_key(Some(1), &[0, 2], 1), KeyChoice::Key(1));
        p.cool_key(0, Cause::RateLimited, Some(30), &c);
        assert_eq!(p.pick_key(None, &[1, 2], 1), KeyChoice::AllCooling);
        // A second failure in a row doubles the rest; a success resets it.
        assert_eq!(
            p.cool_key(1, Cause::ServerError, None, &c),
            Duration::from_secs(30)
        );
        p.key_succeeded(1);
        assert_eq!(
            p.cool_key(1, Cause::ServerError, None, &c),
            Duration::from_secs(15)
        );
        let keyless = provider("providers: [{id: o, kind: openai, base_url: 'http://h'}]");
        assert_eq!(keyless.pick_key(None, &[], 1), KeyChoice::Keyless);
    }

    #[test]
    fn a_key_nearly_out_of_its_rate_limit_is_used_last() {
        let p =
            provider("providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a, b]}]");
        let now = now_ms();
        p.note_ratelimit(
            0,
            RateLimitReading {
                remaining_requests: Some(1),
                read_at_ms: now,
                ..Default::default()
            },
        );
        for _ in 0..4 {
            assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        }
        // Even a session's preferred key gives way while another has room.
        assert_eq!(p.pick_key(Some(0), &[], 1), KeyChoice::Key(1));
        assert_eq!(p.pick_key(None, &[1], 1), KeyChoice::Key(0));
        assert_eq!(p.key_outlook(1), (true, false, Some(1)));
    }

    #[test]
    fn round_robin_is_weighted_and_fill_first_stays_on_the_first_key() {
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a, {key: b, weight: 2}]}]",
        );
        let picks: Vec<_> = (0..6)
            .map(|_| p.pick_key(None, &[], 1).index().unwrap())
            .collect();
        assert_eq!(picks, [1, 0, 1, 1, 0, 1]);
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', key_strategy: fill-first, api_keys: [a, b, c]}]",
        );
        let c = crate::config::routing::RoutingSettings::default().cooldowns;
        for _ in 0..3 {
            assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(0));
        }
        assert_eq!(
            p.pick_key(Some(2), &[], 1),
            KeyChoice::Key(2),
            "a session keeps its key"
        );
        p.cool_key(0, Cause::RateLimited, None, &c);
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        assert_eq!(p.pick_key(None, &[1], 1), KeyChoice::Key(2));
        assert!(p.has_key_left(&[1], 1));
        assert!(!p.has_key_left(&[1, 2], 1), "key 0 rests after its 429");
    }

    #[test]
    fn a_key_at_its_own_capacity_is_skipped() {
        let p = provider(
            "providers: [{id: o, kind: openai, base_url: 'http://h', key_strategy: fill-first, api_keys: [{key: a, max_concurrency: 1}, {key: b, max_concurrency: 1}]}]",
        );
        let first = p.acquire_key(0).unwrap();
        assert_eq!(p.key_in_flight(0), 1);
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(1));
        let second = p.acquire_key(1).unwrap();
        assert!(!p.keys_have_room(now_ms()));
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::AllBusy);
        assert!(p.acquire_key(0).is_none());
        drop((first, second));
        assert_eq!(p.pick_key(None, &[], 1), KeyChoice::Key(0));
        // A key without limits takes no slot at all.
        let q = provider("providers: [{id: o, kind: openai, base_url: 'http://h', api_keys: [a]}]");
        assert!(matches!(q.acquire_key(0), Some(None)));
    }
}
