//! A provider's `base_url` (and any endpoint URL a kind's settings name),
//! parsed into what a connection needs.

/// Where a provider lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash; empty for none.
    pub path: String,
}

/// Parses an `http` or `https` URL without query or fragment.
pub(super) fn parse_base_url(s: &str) -> Result<BaseUrl, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    let tls = match u.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("{s:?} has no host")),
    };
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{s:?} must not carry a query or fragment"));
    }
    let port = u
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    Ok(BaseUrl {
        tls,
        host,
        port,
        path: u.path().trim_end_matches('/').to_owned(),
    })
}
