//! The `auth` section: client keys (hashed, allow-lists compiled) and
//! admin keys.

use std::collections::HashSet;
use std::net::SocketAddr;

use globset::GlobSet;
use sha2::{Digest, Sha256};

use super::choices::Inspection;
use super::raw::{self, RawAuth};
use super::{Budget, Choice, ServerSettings};

/// Client and admin keys.
#[derive(Debug, Default)]
pub struct AuthConfig {
    pub keys: Vec<ClientKey>,
    /// SHA-256 of each admin key.
    pub admin_keys: Vec<[u8; 32]>,
    /// `auth.open`: serving without client keys on a non-loopback address
    /// was asked for explicitly.
    pub open: bool,
    /// Admin keys shorter than 32 characters (a warning: an admin key is a
    /// password to the whole fleet).
    pub short_admin_keys: usize,
    /// Failed admin authentications one client address may make per
    /// minute; past it 429 (`auth.admin_failures_per_minute`).
    pub admin_failures_per_minute: u32,
    /// `auth.inspection`: whether client keys read the inspection endpoints.
    pub inspection: Inspection,
    /// `auth.default_key_rpm` / `default_key_tpm`: the limits of a key that
    /// sets none (`None`: unlimited).
    pub default_key_rpm: Option<u64>,
    pub default_key_tpm: Option<u64>,
}

/// Failed admin authentications per client address and minute.
pub const DEFAULT_ADMIN_FAILURES_PER_MINUTE: u32 = 10;

impl AuthConfig {
    /// Whether a client request must present a key. Decided from the
    /// configuration alone, never from whether a store answered: keys are
    /// configured, or an admin key exists that can make keys at run time
    /// (and `auth.open` does not say anonymous clients are meant).
    pub fn requires_key(&self) -> bool {
        !self.keys.is_empty() || (!self.admin_keys.is_empty() && !self.open)
    }
}

/// One client key. The secret itself is not kept, only its SHA-256.
#[derive(Debug)]
pub struct ClientKey {
    /// The key's immutable identity: what its state (rate-limit windows,
    /// spend, session bindings, context) is kept under. A configured key's
    /// is its name; a key made at run time has `~` and 16 hex digits, a
    /// form configured names may not take, so a key made later never
    /// inherits another's state.
    pub id: String,
    /// A label: what logs, metrics and the console show.
    pub name: String,
    pub sha256: [u8; 32],
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// The allow-list; `None` allows every model.
    pub models: Option<GlobSet>,
    /// Spending limit per period, shared by every replica.
    pub budget: Option<Budget>,
    /// `provider_refs: any`: the key may reference any object stored at the
    /// provider, not only the responses it received (proxy/refs.rs).
    pub provider_refs_any: bool,
    /// When the key stops working (Unix milliseconds); `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// Unix milliseconds of an RFC 3339 time (`2027-01-31T00:00:00Z`, any
/// offset), or what is wrong with it.
pub fn parse_expiry(text: &str) -> Result<u64, String> {
    let t: jiff::Timestamp = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an RFC 3339 time like 2027-01-31T00:00:00Z"))?;
    u64::try_from(t.as_millisecond()).map_err(|_| format!("{text:?} is before 1970"))
}

/// An expiry as RFC 3339 in UTC, for answers and messages.
pub fn expiry_text(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| ms.to_string(), |t| t.to_string())
}

impl ClientKey {
    /// What this key's state (rate windows, budget counters) is stored
    /// under: today its id. The one place to change when that changes.
    pub fn owner_id(&self) -> &str {
        &self.id
    }

    /// Whether this key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|g| g.is_match(model))
    }
}

/// Resolves `auth`; `server` tells which listeners other machines reach.
pub fn resolve(a: RawAuth, server: &ServerSettings, problems: &mut Vec<String>) -> AuthConfig {
    let mut auth = AuthConfig::default();
    let mut key_names = HashSet::new();
    for (i, k) in a.keys.into_iter().enumerate() {
        let at = format!("auth.keys[{i}]");
        if k.name.is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        }
        if !key_names.insert(k.name.clone()) {
            problems.push(format!("{at}.name: duplicate key name {:?}", k.name));
        }
        if k.name == "-" || k.name.starts_with('~') {
            // `-` stands for "no key" in logs and owners; `~…` are the ids of keys made at run time.
            problems.push(format!(
                "{at}.name: {:?} is reserved (`-` and names starting with `~`)",
                k.name
            ));
        }
        if let Some(key) = client_key(&at, k, problems) {
            auth.keys.push(key);
        }
    }
    for (i, k) in a.admin_keys.iter().enumerate() {
        if k.is_empty() {
            // An unset ${APIPROXY_ADMIN_KEY:-} leaves admin endpoints closed.
            continue;
        }
        if k.chars().count() < 16 {
            problems.push(format!(
                "auth.admin_keys[{i}]: shorter than 16 characters (an admin key opens every endpoint of the gateway: use 32 or more random characters)"
            ));
        } else if k.chars().count() < 32 {
            auth.short_admin_keys += 1;
        }
        let digest = sha256(k);
        if auth.keys.iter().any(|c| c.sha256 == digest) {
            problems.push(format!(
                "auth.admin_keys[{i}]: is also a client key in auth.keys: give admins their own key"
            ));
        }
        auth.admin_keys.push(digest);
    }
    auth.open = a.open.unwrap_or(false);
    auth.default_key_rpm = a.default_key_rpm.filter(|n| *n > 0);
    auth.default_key_tpm = a.default_key_tpm.filter(|n| *n > 0);
    auth.inspection = match a.inspection.as_ref().map(Choice::value) {
        None => Inspection::Admin,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            problems.push(format!("auth.inspection: {e}"));
            Inspection::Admin
        }
    };
    auth.admin_failures_per_minute = match a.admin_failures_per_minute {
        None => DEFAULT_ADMIN_FAILURES_PER_MINUTE,
        Some(0) => {
            problems.push("auth.admin_failures_per_minute: must be at least 1".to_owned());
            DEFAULT_ADMIN_FAILURES_PER_MINUTE
        }
        Some(n) => n,
    };
    if !auth.requires_key() && !auth.open {
        let tls = server.tls.iter().flat_map(|t| &t.listen);
        let listeners = (server.listen.iter().map(|a| ("server.listen", a)))
            .enumerate()
            .chain(tls.map(|a| ("server.tls.listen", a)).enumerate());
        for (i, (key, a)) in listeners {
            if a.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback()) {
                problems.push(format!(
                    "{key}[{i}]: {a} is reachable from other machines and no client key is needed: add auth.keys (or an admin key to make keys in the console) or set auth.open: true"
                ));
            }
        }
    }
    auth
}

/// One of `auth.keys`, checked; `None` after a problem.
fn client_key(at: &str, k: raw::RawKey, problems: &mut Vec<String>) -> Option<ClientKey> {
    let digest = match (&k.key, &k.key_sha256) {
        (Some(_), Some(_)) => {
            problems.push(format!("{at}: give key or key_sha256, not both"));
            return None;
        }
        (None, None) => {
            problems.push(format!("{at}: key or key_sha256 is required"));
            return None;
        }
        (Some(key), None) if key.is_empty() => {
            problems.push(format!(
                "{at}.key: is empty (is its environment variable set?)"
            ));
            return None;
        }
        (Some(key), None) => sha256(key),
        (None, Some(h)) => match hex::decode(h.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            Some(d) => d,
            None => {
                problems.push(format!("{at}.key_sha256: expected 64 hex characters"));
                return None;
            }
        },
    };
    let budget = match Budget::resolve(
        k.budget_usd,
        k.budget_period.as_ref().map(super::Choice::as_str),
    ) {
        Ok(b) => b,
        Err(e) => {
            problems.push(format!("{at}.{e}"));
            None
        }
    };
    let models = match k.models {
        None => None,
        Some(pats) => Some(super::providers::compile_globs(
            &format!("{at}.models"),
            &pats,
            problems,
        )?),
    };
    let expires_at_ms = match k.expires_at.as_deref().map(parse_expiry) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            problems.push(format!("{at}.expires_at: {e}"));
            return None;
        }
    };
    Some(ClientKey {
        expires_at_ms,
        id: k.name.clone(),
        name: k.name,
        sha256: digest,
        rpm: k.rpm,
        tpm: k.tpm,
        models,
        budget,
        provider_refs_any: k.provider_refs == Some(raw::ProviderRefs::Any),
    })
}

pub(crate) fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}
