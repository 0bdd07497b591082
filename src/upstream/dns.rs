//! Asynchronous name resolution with a cache.
//!
//! `HttpPeer::new("host:443")` would resolve on the worker thread (blocking)
//! and panic when resolution fails, so peers are built from addresses found
//! here instead.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::TokioAsyncResolver;
use once_cell::sync::Lazy;
use parking_lot::RwLock;

/// How long an answer is kept (upper bound; hickory's own cache honours TTLs).
const CACHE_FOR: Duration = Duration::from_secs(60);

static RESOLVER: Lazy<TokioAsyncResolver> = Lazy::new(|| {
    TokioAsyncResolver::tokio_from_system_conf().unwrap_or_else(|_| {
        TokioAsyncResolver::tokio(ResolverConfig::default(), ResolverOpts::default())
    })
});

static CACHE: Lazy<RwLock<HashMap<String, (IpAddr, Instant)>>> = Lazy::new(Default::default);

/// Why a provider's host name gave no address.
#[derive(Debug)]
pub enum ResolveError {
    /// The resolver failed (its error kept as the cause).
    Lookup {
        host: String,
        cause: hickory_resolver::error::ResolveError,
    },
    /// The name exists but has no address.
    NoAddress { host: String },
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Lookup { host, cause } => write!(f, "cannot resolve {host}: {cause}"),
            ResolveError::NoAddress { host } => write!(f, "cannot resolve {host}: no addresses"),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::Lookup { cause, .. } => Some(cause),
            ResolveError::NoAddress { .. } => None,
        }
    }
}

/// The address to connect to for `host:port`.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if let Some(&(ip, at)) = CACHE.read().get(host) {
        if at.elapsed() < CACHE_FOR {
            return Ok(SocketAddr::new(ip, port));
        }
    }
    let answer = match RESOLVER.lookup_ip(host).await {
        Ok(a) => a,
        // A machine without a hosts entry for it still knows localhost.
        Err(_) if host.eq_ignore_ascii_case("localhost") => {
            return Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port))
        }
        Err(cause) => {
            return Err(ResolveError::Lookup {
                host: host.to_owned(),
                cause,
            })
        }
    };
    // Prefer IPv4: many hosts publish AAAA records this machine cannot route.
    let ip = answer
        .iter()
        .find(IpAddr::is_ipv4)
        .or_else(|| answer.iter().next())
        .ok_or_else(|| ResolveError::NoAddress {
            host: host.to_owned(),
        })?;
    CACHE.write().insert(host.to_owned(), (ip, Instant::now()));
    Ok(SocketAddr::new(ip, port))
}
