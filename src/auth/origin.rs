//! The open gateway (no key needed) and the browser: a web page the operator
//! visits can send requests to `127.0.0.1`, and with DNS rebinding read the
//! answers. So a gateway that serves without keys refuses what only a
//! browser on another site sends: a cross-site `Origin` or `Sec-Fetch-Site`
//! (403), and a `Host` that is not a loopback name or one of
//! `server.allowed_hosts` (421: a rebound name). A local tool, which sends
//! no `Origin`, is served as before.

use std::net::IpAddr;

use http::HeaderMap;

use crate::error::GatewayError;

/// The refusal for a request to an open gateway, or `None` when it may pass.
/// `host` is the request's `Host` (HTTP/1) or `:authority` (HTTP/2).
pub fn refusal(
    allowed_hosts: &[String],
    headers: &HeaderMap,
    host: Option<&str>,
) -> Option<GatewayError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        let site = site.trim();
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Some(cross_site());
        }
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let same = match (origin.to_str().ok().and_then(origin_authority), host) {
            (Some(o), Some(h)) => o.eq_ignore_ascii_case(h.trim()),
            _ => false,
        };
        if !same {
            return Some(cross_site());
        }
    }
    let host = host?.trim();
    let name = host_name(host);
    if is_loopback_name(name) || allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        return None;
    }
    Some(GatewayError::client(
        421,
        format!(
            "host {:?} is not a loopback name: a gateway without client keys answers only to loopback names and server.allowed_hosts",
            name.get(..100).unwrap_or(name)
        ),
    ))
}

fn cross_site() -> GatewayError {
    GatewayError::forbidden(
        "cross-site requests are refused: this gateway needs no client key, so it serves local tools only (set auth.keys to serve browsers)",
    )
}

/// `host[:port]` of an `Origin` (`scheme://host[:port]`); `None` for `null`
/// or anything else that names no origin.
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.trim().split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then_some(authority)
}

/// The name part of `host[:port]` (an IPv6 address without its brackets).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || lower.trim_end_matches('.') == "localhost"
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn local_tools_pass() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "localhost",
            "app.localhost:1",
            "127.1.2.3",
        ] {
            assert!(refusal(&[], &headers(&[]), Some(host)).is_none(), "{host}");
        }
        // HTTP/1.0 without Host: a local tool.
        assert!(refusal(&[], &headers(&[]), None).is_none());
        // The console's own page: same origin.
        let h = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(refusal(&[], &h, Some("127.0.0.1:8080")).is_none());
        assert!(refusal(
            &[],
            &headers(&[("sec-fetch-site", "none")]),
            Some("localhost")
        )
        .is_none());
    }

    #[test]
    fn pages_of_other_sites_are_refused() {
        for (origin, site) in [
            ("https://evil.example", None),
            ("null", None),
            ("http://127.0.0.1:9999", None),
            ("http://127.0.0.1:8080", Some("cross-site")),
            ("http://127.0.0.1:8080", Some("same-site")),
        ] {
            let mut h = headers(&[("origin", origin)]);
            if let Some(s) = site {
                h.insert("sec-fetch-site", s.parse().unwrap());
            }
            let e = refusal(&[], &h, Some("127.0.0.1:8080")).expect(origin);
            assert_eq!(e.status, 403, "{origin} {site:?}");
        }
        let h = headers(&[("sec-fetch-site", "cross-site")]);
        assert_eq!(refusal(&[], &h, Some("localhost")).unwrap().status, 403);
    }

    #[test]
    fn rebound_names_get_421_unless_allowed() {
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
        ] {
            assert_eq!(
                refusal(&[], &headers(&[]), Some(host)).unwrap().status,
                421,
                "{host}"
            );
        }
        let allowed = vec!["gateway.internal".to_owned()];
        assert!(refusal(&allowed, &headers(&[]), Some("Gateway.Internal:8080")).is_none());
    }
}
