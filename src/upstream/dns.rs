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

/// The address to connect to for `host:port`.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
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
        Err(e) => return Err(format!("cannot resolve {host}: {e}")),
    };
    // Prefer IPv4: many hosts publish AAAA records this machine cannot route.
    let ip = answer
        .iter()
        .find(IpAddr::is_ipv4)
        .or_else(|| answer.iter().next())
        .ok_or_else(|| format!("cannot resolve {host}: no addresses"))?;
    CACHE.write().insert(host.to_owned(), (ip, Instant::now()));
    Ok(SocketAddr::new(ip, port))
}
