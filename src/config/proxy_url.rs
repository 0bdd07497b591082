//! `providers[].proxy_url`: the outbound proxy a provider's connections go
//! through (ai-proxy's `proxy-url`): an HTTP proxy spoken to with `CONNECT`,
//! or a SOCKS5 proxy.

use std::fmt;

/// How the tunnel is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// `http://`: `CONNECT host:port HTTP/1.1`.
    HttpConnect,
    /// `socks5://` (the gateway resolves the provider's name) or
    /// `socks5h://` (the proxy does).
    Socks5 { remote_dns: bool },
}

/// A parsed `proxy_url`. Its `Display` leaves out the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: ProxyScheme,
    pub host: String,
    pub port: u16,
    /// User and password (percent-decoded), for `Proxy-Authorization: Basic`
    /// or SOCKS5's username/password method.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for ProxyUrl {
    // Never the password, not even in a debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            ProxyScheme::HttpConnect => "http",
            ProxyScheme::Socks5 { remote_dns: false } => "socks5",
            ProxyScheme::Socks5 { remote_dns: true } => "socks5h",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}", self.port)
    }
}

impl ProxyUrl {
    /// Parses `http://[user:pass@]host[:port]` (port 80 by default; 8080 is
    /// only a habit), `socks5://…` or `socks5h://…` (port 1080 by default).
    pub fn parse(s: &str) -> Result<Self, String> {
        // Never echo the text: it may hold a password.
        let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
        let (scheme, default_port) = match u.scheme() {
            "http" => (ProxyScheme::HttpConnect, 80),
            "socks5" => (ProxyScheme::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyScheme::Socks5 { remote_dns: true }, 1080),
            other => {
                return Err(format!(
                    "scheme {other:?} is not http, socks5 or socks5h (an https:// proxy is not supported)"
                ))
            }
        };
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err("no host".into()),
        };
        if !(u.path().is_empty() || u.path() == "/") || u.query().is_some() {
            return Err("a proxy URL has no path or query".into());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "its credentials are not UTF-8".to_owned())
        };
        let credentials = if u.username().is_empty() && u.password().is_none() {
            None
        } else {
            Some((decode(u.username())?, decode(u.password().unwrap_or(""))?))
        };
        if let (Some((user, pass)), ProxyScheme::Socks5 { .. }) = (&credentials, scheme) {
            // RFC 1929: one length byte each.
            if user.len() > 255 || pass.len() > 255 {
                return Err("SOCKS5 credentials are at most 255 bytes each".into());
            }
        }
        Ok(ProxyUrl {
            scheme,
            host,
            port: u.port().unwrap_or(default_port),
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_ports_and_credentials() {
        let p = ProxyUrl::parse("http://u%40x:p%3Aw@proxy.local:3128").unwrap();
        assert_eq!(p.scheme, ProxyScheme::HttpConnect);
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 3128));
        assert_eq!(p.credentials, Some(("u@x".into(), "p:w".into())));
        assert_eq!(p.to_string(), "http://proxy.local:3128");
        assert!(!format!("{p:?}").contains("p:w"));
        let s = ProxyUrl::parse("socks5h://[::1]").unwrap();
        assert_eq!(s.scheme, ProxyScheme::Socks5 { remote_dns: true });
        assert_eq!(s.port, 1080);
        assert_eq!(s.to_string(), "socks5h://[::1]:1080");
        assert_eq!(ProxyUrl::parse("http://h").unwrap().port, 80);
    }

    #[test]
    fn refusals_never_echo_the_url() {
        for bad in [
            "https://user:secret@h:1",
            "ftp://user:secret@h",
            "http://user:secret@h/path",
            "nope secret",
        ] {
            let e = ProxyUrl::parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
