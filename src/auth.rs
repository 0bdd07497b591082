//! Client and admin keys: where a key is read from and how it is matched.

use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, ClientKey};

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
            "auth:\n  keys: [{name: a, key: k-a}, {name: b, key: k-b}]\n  admin_keys: [admin-key-1]\n",
            &|_| None,
        )
        .unwrap();
        assert_eq!(find_client_key(&c.auth, "k-b"), Some(1));
        assert_eq!(find_client_key(&c.auth, "k-c"), None);
        assert!(is_admin_key(&c.auth, "admin-key-1"));
        assert!(!is_admin_key(&c.auth, "k-a"));
    }
}
