//! Who may pass: the one decision every endpoint asks ([`caller`]), where a
//! key is read from and how it is matched.
//!
//! Whether a key is needed at all comes from the configuration
//! ([`AuthConfig::requires_key`]), never from whether a store answered; a
//! key that cannot be checked because the stored keys cannot be read is
//! refused (503), never waved through.

pub mod origin;
pub mod stored;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, ClientKey, Inspection};
use crate::error::GatewayError;
pub use stored::{Lookup, StoredKeys};

/// Who is calling, as far as its key says.
#[derive(Debug)]
pub enum Caller<'a> {
    /// No key, on a gateway that needs none (or an unknown key there).
    Anonymous,
    /// A client key, configured or made at run time.
    Client(KeyRef<'a>),
    /// An admin key.
    Admin,
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A key is needed and none was sent: 401.
    Missing,
    /// The key matches nothing: 401.
    Invalid,
    /// The key matched one that expired at this time (Unix ms): 401.
    Expired(u64),
    /// The key is not configured, and the keys made at run time cannot be
    /// read to check it: 503.
    Unverifiable,
}

impl Refusal {
    /// The client's error for a client endpoint.
    pub fn to_error(self) -> GatewayError {
        match self {
            Refusal::Missing => GatewayError::unauthorized(
                "missing API key: send it as `Authorization: Bearer <key>`",
            ),
            Refusal::Invalid => GatewayError::unauthorized("invalid API key"),
            Refusal::Expired(at) => GatewayError::unauthorized(format!(
                "this API key expired at {}",
                crate::config::expiry_text(at)
            )),
            Refusal::Unverifiable => GatewayError::upstream(
                503,
                "the API key cannot be checked now (the key store is unreachable): try again shortly",
            )
            .retry_after(2),
        }
    }
}

/// The one decision of who is calling: an admin key, a client key (from
/// `auth.keys`, then the keys made at run time), or nobody. A gateway that
/// needs a key refuses a request without one (401), with an unknown one
/// (401), and with one it cannot check because the stored keys have never
/// been read (503). A gateway that needs none serves a request without a
/// key, or with one it does not know, as anonymous.
pub async fn caller<'a>(
    auth: &'a AuthConfig,
    stored: &Arc<StoredKeys>,
    presented: Option<&str>,
) -> Result<Caller<'a>, Refusal> {
    let Some(presented) = presented else {
        return if auth.requires_key() {
            Err(Refusal::Missing)
        } else {
            Ok(Caller::Anonymous)
        };
    };
    // Hashed once for all three lookups.
    let d = digest(presented);
    if is_admin_digest(auth, &d) {
        return Ok(Caller::Admin);
    }
    if let Some(i) = find_client_digest(auth, &d) {
        return unexpired(KeyRef::Configured(&auth.keys[i]));
    }
    stored.freshen().await;
    match stored.lookup(&d) {
        Lookup::Found(k) => unexpired(KeyRef::Stored(k)),
        _ if !auth.requires_key() => Ok(Caller::Anonymous),
        Lookup::Absent => Err(Refusal::Invalid),
        Lookup::Unknown => Err(Refusal::Unverifiable),
    }
}

/// A matched key, unless its `expires_at` has passed.
fn unexpired(k: KeyRef<'_>) -> Result<Caller<'_>, Refusal> {
    match k.expires_at_ms {
        Some(at) if stored::now_ms() >= at => Err(Refusal::Expired(at)),
        _ => Ok(Caller::Client(k)),
    }
}

/// Failed admin authentications per client address in the current minute:
/// past `auth.admin_failures_per_minute`, that address gets 429 until the
/// minute ends, before any key is compared (an admin key is a password to
/// the whole fleet: guessing it must be slow).
#[derive(Default)]
pub struct AdminFailures {
    /// Address → (minute started at, ms since epoch; failures in it).
    by_addr: parking_lot::Mutex<HashMap<IpAddr, (u64, u32)>>,
}

/// Addresses remembered at most; past it, finished minutes are forgotten
/// first, then everything (an attacker with more addresses than this gets
/// no more guesses per address than the limit allows in a minute anyway).
const MAX_TRACKED_ADDRESSES: usize = 10_000;
const MINUTE_MS: u64 = 60_000;

impl AdminFailures {
    /// `Err(seconds until the minute ends)` when `addr` is over `limit`.
    fn check(&self, addr: IpAddr, limit: u32, now_ms: u64) -> Result<(), u64> {
        match self.by_addr.lock().get(&addr) {
            Some(&(start, n)) if now_ms < start + MINUTE_MS && n >= limit => {
                Err((start + MINUTE_MS - now_ms).div_ceil(1000))
            }
            _ => Ok(()),
        }
    }

    fn note(&self, addr: IpAddr, now_ms: u64) {
        let mut map = self.by_addr.lock();
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, (start, _)| now_ms < *start + MINUTE_MS);
            if map.len() >= MAX_TRACKED_ADDRESSES {
                map.clear();
            }
        }
        let e = map.entry(addr).or_insert((now_ms, 0));
        if now_ms >= e.0 + MINUTE_MS {
            *e = (now_ms, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

/// What an admin endpoint's gate needs: the keys, the failure counts, and
/// who is asking.
pub struct AdminGate<'a> {
    pub auth: &'a AuthConfig,
    pub stored: &'a Arc<StoredKeys>,
    pub failures: &'a AdminFailures,
    /// The client's address (`None` over a Unix socket).
    pub peer: Option<IpAddr>,
}

/// Who passed an inspection endpoint's gate ([`AdminGate::require_reader`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    Admin,
    /// A client key, by its id (`auth.inspection: clients`): it reads the
    /// gateway's shape, never another key's state.
    Client(String),
}

impl AdminGate<'_> {
    /// An admin key passes; a client key gets 403; anything else 401
    /// (whether or not the gateway needs client keys), counted against the
    /// client's address: past `auth.admin_failures_per_minute`, 429.
    pub async fn require_admin(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        self.gate(headers, false).await.map(|_| ())
    }

    /// The inspection endpoints: an admin key passes, and with
    /// `auth.inspection: clients` a client key too; otherwise as
    /// [`AdminGate::require_admin`].
    pub async fn require_reader(&self, headers: &HeaderMap) -> Result<Reader, GatewayError> {
        self.gate(headers, self.auth.inspection == Inspection::Clients)
            .await
    }

    async fn gate(&self, headers: &HeaderMap, clients_read: bool) -> Result<Reader, GatewayError> {
        let now = stored::now_ms();
        if let Some(addr) = self.peer {
            if let Err(wait) = self
                .failures
                .check(addr, self.auth.admin_failures_per_minute, now)
            {
                return Err(GatewayError::rate_limited(
                    "too many failed admin authentications from this address: wait",
                    wait,
                ));
            }
        }
        let presented = presented_key(headers, None);
        let refused = match caller(self.auth, self.stored, presented).await {
            Ok(Caller::Admin) => return Ok(Reader::Admin),
            Ok(Caller::Client(k)) if clients_read => return Ok(Reader::Client(k.id.clone())),
            Ok(Caller::Client(_)) => GatewayError::forbidden("this endpoint needs an admin key"),
            _ if presented.is_none() => GatewayError::unauthorized("missing admin key"),
            Ok(Caller::Anonymous) | Err(_) => GatewayError::unauthorized("invalid admin key"),
        };
        if let Some(addr) = self.peer {
            self.failures.note(addr, now);
        }
        Err(refused)
    }
}

/// A client key that matched: one from `auth.keys`, or one made at run
/// time (through the admin API) and read from the console's key cache.
#[derive(Debug, Clone)]
pub enum KeyRef<'a> {
    Configured(&'a ClientKey),
    Stored(Arc<ClientKey>),
}

impl std::ops::Deref for KeyRef<'_> {
    type Target = ClientKey;

    fn deref(&self) -> &ClientKey {
        match self {
            KeyRef::Configured(k) => k,
            KeyRef::Stored(k) => k,
        }
    }
}

/// The key a request presents: `Authorization: Bearer K`, `x-api-key: K`
/// (Anthropic SDKs), `x-goog-api-key: K` or `?key=K` (Gemini SDKs).
pub fn presented_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            if !v.trim().is_empty() {
                return Some(v.trim());
            }
        }
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .filter(|k| !k.is_empty())
}

/// SHA-256 of a key: what configured and stored keys are matched by.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Index of the client key matching `key` ([`find_client_digest`] of its
/// [`digest`]).
pub fn find_client_key(auth: &AuthConfig, key: &str) -> Option<usize> {
    find_client_digest(auth, &digest(key))
}

/// Index of the client key whose [`digest`] is `d`. Every configured key is
/// compared in constant time, so timing tells nothing about which one is
/// closest.
fn find_client_digest(auth: &AuthConfig, d: &[u8; 32]) -> Option<usize> {
    let mut found = None;
    for (i, k) in auth.keys.iter().enumerate() {
        if bool::from(k.sha256.ct_eq(d)) {
            found = Some(i);
        }
    }
    found
}

/// Whether the key whose [`digest`] is `d` is an admin key.
fn is_admin_digest(auth: &AuthConfig, d: &[u8; 32]) -> bool {
    auth.admin_keys
        .iter()
        .fold(false, |acc, k| acc | bool::from(k.ct_eq(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_failures_are_counted_per_address_and_minute() {
        let f = AdminFailures::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(f.check(a, 3, 1_000).is_ok());
            f.note(a, 1_000);
        }
        assert_eq!(f.check(a, 3, 31_000), Err(30));
        assert!(
            f.check(b, 3, 31_000).is_ok(),
            "another address is not slowed"
        );
        assert!(f.check(a, 3, 61_000).is_ok(), "a new minute");
        f.note(a, 61_000);
        assert!(f.check(a, 3, 61_001).is_ok(), "the count starts again");
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let f = AdminFailures::default();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            f.note(IpAddr::from(i.to_be_bytes()), 0);
        }
        assert!(f.by_addr.lock().len() <= MAX_TRACKED_ADDRESSES);
    }
    use crate::config::Config;

    #[test]
    fn key_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h, Some("alt=sse&key=g1")), Some("g1"));
        h.insert("x-goog-api-key", "g2".parse().unwrap());
        assert_eq!(presented_key(&h, None), Some("g2"));
        h.insert("x-api-key", "a1".parse().unwrap());
        assert_eq!(presented_key(&h, None), Some("a1"));
        h.insert("authorization", "Bearer sk-1".parse().unwrap());
        assert_eq!(presented_key(&h, None), Some("sk-1"));
        assert_eq!(presented_key(&HeaderMap::new(), Some("alt=sse")), None);
    }

    #[test]
    fn matching() {
        let c = Config::from_yaml(
            "auth:\n  keys: [{name: a, key: k-a}, {name: b, key: k-b}]\n  admin_keys: [admin-key-0000001]\n",
            &|_| None,
        )
        .unwrap();
        assert_eq!(find_client_key(&c.auth, "k-b"), Some(1));
        assert_eq!(find_client_key(&c.auth, "k-c"), None);
        assert!(is_admin_digest(&c.auth, &digest("admin-key-0000001")));
        assert!(!is_admin_digest(&c.auth, &digest("k-a")));
    }
}
