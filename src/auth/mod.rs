//! Who may pass: the one decision every endpoint asks ([`caller`]), where a
//! key is read from and how it is matched.
//!
//! Whether a key is needed at all comes from the configuration
//! ([`AuthConfig::requires_key`]), never from whether a store answered; a
//! key that cannot be checked because the stored keys cannot be read is
//! refused (503), never waved through.

pub mod origin;
pub mod stored;

use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, ClientKey};
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
    if is_admin_key(auth, presented) {
        return Ok(Caller::Admin);
    }
    if let Some(i) = find_client_key(auth, presented) {
        return Ok(Caller::Client(KeyRef::Configured(&auth.keys[i])));
    }
    stored.freshen().await;
    match stored.lookup(&digest(presented)) {
        Lookup::Found(k) => Ok(Caller::Client(KeyRef::Stored(k))),
        _ if !auth.requires_key() => Ok(Caller::Anonymous),
        Lookup::Absent => Err(Refusal::Invalid),
        Lookup::Unknown => Err(Refusal::Unverifiable),
    }
}

/// An admin endpoint's gate: an admin key passes; a client key gets 403;
/// anything else 401 (whether or not the gateway needs client keys).
pub async fn require_admin(
    auth: &AuthConfig,
    stored: &Arc<StoredKeys>,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    let presented = presented_key(headers, None);
    if presented.is_none() {
        return Err(GatewayError::unauthorized("missing admin key"));
    }
    match caller(auth, stored, presented).await {
        Ok(Caller::Admin) => Ok(()),
        Ok(Caller::Client(_)) => Err(GatewayError::forbidden("this endpoint needs an admin key")),
        Ok(Caller::Anonymous) | Err(_) => Err(GatewayError::unauthorized("invalid admin key")),
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

/// Index of the client key matching `key`. Every configured key is compared
/// in constant time, so timing tells nothing about which one is closest.
pub fn find_client_key(auth: &AuthConfig, key: &str) -> Option<usize> {
    let d = digest(key);
    let mut found = None;
    for (i, k) in auth.keys.iter().enumerate() {
        if bool::from(k.sha256.ct_eq(&d)) {
            found = Some(i);
        }
    }
    found
}

/// Whether `key` is an admin key.
pub fn is_admin_key(auth: &AuthConfig, key: &str) -> bool {
    let d = digest(key);
    auth.admin_keys
        .iter()
        .fold(false, |acc, k| acc | bool::from(k.ct_eq(&d)))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(is_admin_key(&c.auth, "admin-key-0000001"));
        assert!(!is_admin_key(&c.auth, "k-a"));
    }
}
