//! The `server` section: listeners and process settings (mostly handed to
//! Pingora) and the bounds on one request.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{self, RawServer};
use super::CertPair;

/// Listener and process settings (mostly handed to Pingora).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<String>,
    pub metrics_listen: Option<String>,
    pub threads: usize,
    pub max_body_bytes: usize,
    /// Where `-d` writes the pid; its directory is created private (0700).
    pub pid_file: String,
    /// Where `-u` waits for the old process's sockets (same directory rule).
    pub upgrade_sock: String,
    pub daemon: bool,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// A request head must be complete this long after its first byte (the
    /// connection's accept, for its first request): 408 past it.
    pub header_timeout: Duration,
    /// An idle kept-alive connection is closed after this long.
    pub keepalive_timeout: Duration,
    /// A request body that sends nothing for this long ends the request.
    pub body_timeout: Duration,
    /// Bytes a second a request body must average after its grace
    /// (`proxy::request::BODY_RATE_GRACE`); slower ends the request.
    pub min_body_rate: u64,
    /// A client that takes nothing of its answer for this long is dropped
    /// (and with it the upstream request).
    pub write_timeout: Duration,
    /// Larger request heads get 431.
    pub max_header_bytes: usize,
    /// Client connections open at once (plain and TLS together); past it
    /// new ones get 503.
    pub max_connections: usize,
    /// Streams one HTTP/2 client connection may have open at once (the TLS
    /// listener); more are refused with `REFUSED_STREAM`.
    pub h2_max_streams: u32,
    /// A streaming client that got no byte for this long gets an SSE
    /// keep-alive (load balancers cut idle connections at 60 s); `None`: off.
    pub sse_keepalive: Option<Duration>,
    /// Longer model names get 400.
    pub max_model_name_bytes: usize,
    /// Bytes the tool-schema rewrites of one request may build; past it 400.
    pub max_schema_rewrite_bytes: usize,
    /// The TLS client listener, when configured.
    pub tls: Option<TlsListener>,
    /// Host names a gateway without client keys answers to besides
    /// loopback names (lowercase, without port).
    pub allowed_hosts: Vec<String>,
    /// `server.watch_config`: reload when the config or a filter file changes.
    pub watch_config: bool,
    /// `server.admin_listen`: where the admin surface is served instead of
    /// the client listeners (empty: on the client listeners).
    pub admin_listen: Vec<String>,
}

impl ServerSettings {
    /// The bounds on one request's translation.
    pub fn translate_limits(&self) -> apiproxy_translate::Limits {
        apiproxy_translate::Limits {
            schema_rewrite_bytes: self.max_schema_rewrite_bytes,
        }
    }
}

/// `server.tls`: a TLS client listener (HTTP/2 by ALPN).
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: Vec<String>,
    pub cert: String,
    pub key: String,
}

/// Default longest model name, in bytes. Real names are far shorter (the
/// longest OpenRouter ids are under 100 bytes); anything longer is a
/// mistake or an attempt to bloat logs.
pub const DEFAULT_MAX_MODEL_NAME_BYTES: usize = 256;

/// Default body limit: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Where the pid file and the upgrade socket live unless configured: a
/// directory only the gateway's user can enter (systemd's `RuntimeDirectory`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/apiproxy";
/// Default `server.pid_file` (the systemd unit's `PIDFile`).
pub const DEFAULT_PID_FILE: &str = "/run/apiproxy/apiproxy.pid";
/// Default `server.upgrade_sock`.
pub const DEFAULT_UPGRADE_SOCK: &str = "/run/apiproxy/upgrade.sock";

/// Default client limits, as nginx and Envoy would have them for an edge.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 60_000;
/// 32 kbit/s, below any real link (GPRS included): a 16 MiB body may take
/// 68 minutes, a byte a minute is cut after the grace.
pub const DEFAULT_MIN_BODY_RATE: u64 = 4096;
/// The highest minimum rate accepted (1 GiB/s).
pub const MAX_MIN_BODY_RATE: u64 = 1 << 30;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Pingora's own hard cap on a request head.
pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024 - 1;
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// A schema rewrite past this is work no tool set needs (64 MiB).
pub const MAX_MAX_SCHEMA_REWRITE_BYTES: usize = 64 << 20;
/// nginx's `http2_max_concurrent_streams` default; RFC 9113 asks for at
/// least 100 so clients are not starved.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;
pub const MAX_H2_MAX_STREAMS: u32 = 10_000;
/// Seconds without a byte before a streaming client gets a keep-alive:
/// well under the 60 s idle cut of common load balancers.
pub const DEFAULT_SSE_KEEPALIVE_S: u64 = 15;
/// The longest keep-alive interval accepted.
pub const MAX_SSE_KEEPALIVE_S: u64 = 3600;

/// Resolves `server`; every problem is pushed naming its key path.
pub fn resolve(s: RawServer, problems: &mut Vec<String>) -> ServerSettings {
    let listen = s
        .listen
        .map(raw::OneOrMany::into_vec)
        .unwrap_or_else(|| vec!["127.0.0.1:8080".to_owned()]);
    if listen.is_empty() {
        problems.push("server.listen: at least one address is needed".to_owned());
    }
    for (i, a) in listen.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen[{i}]: {a:?} is not an address like 0.0.0.0:8080"
            ));
        }
    }
    if let Some(m) = &s.metrics_listen {
        if m.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.metrics_listen: {m:?} is not an address like 127.0.0.1:9100"
            ));
        }
    }
    if s.threads == Some(0) {
        problems.push("server.threads: must be at least 1".to_owned());
    }
    if s.max_model_name_bytes == Some(0) {
        problems.push("server.max_model_name_bytes: must be positive".to_owned());
    }
    if s.max_schema_rewrite_bytes
        .is_some_and(|b| !(1024..=MAX_MAX_SCHEMA_REWRITE_BYTES).contains(&b))
    {
        problems.push(format!(
            "server.max_schema_rewrite_bytes: must be between 1024 and {MAX_MAX_SCHEMA_REWRITE_BYTES}"
        ));
    }
    if s.max_body_bytes == Some(0) {
        problems.push("server.max_body_bytes: must be positive".to_owned());
    }
    for (key, v) in [
        ("header_timeout_ms", s.header_timeout_ms),
        ("keepalive_timeout_ms", s.keepalive_timeout_ms),
        ("body_timeout_ms", s.body_timeout_ms),
        ("write_timeout_ms", s.write_timeout_ms),
        ("max_connections", s.max_connections),
    ] {
        if v == Some(0) {
            problems.push(format!("server.{key}: must be positive"));
        }
    }
    if s.min_body_rate_bytes_per_s
        .is_some_and(|r| !(1..=MAX_MIN_BODY_RATE).contains(&r))
    {
        problems.push(format!(
            "server.min_body_rate_bytes_per_s: must be between 1 and {MAX_MIN_BODY_RATE}"
        ));
    }
    if s.h2_max_concurrent_streams
        .is_some_and(|n| !(1..=MAX_H2_MAX_STREAMS).contains(&n))
    {
        problems.push(format!(
            "server.h2_max_concurrent_streams: must be between 1 and {MAX_H2_MAX_STREAMS}"
        ));
    }
    if s.sse_keepalive_s.is_some_and(|k| k > MAX_SSE_KEEPALIVE_S) {
        problems.push(format!(
            "server.sse_keepalive_s: at most {MAX_SSE_KEEPALIVE_S} (0 turns keep-alives off)"
        ));
    }
    if let Some(b) = s.max_header_bytes {
        if !(1024..=MAX_MAX_HEADER_BYTES as u64).contains(&b) {
            problems.push(format!(
                "server.max_header_bytes: must be between 1024 and {MAX_MAX_HEADER_BYTES}"
            ));
        }
    }
    for (key, path) in [("pid_file", &s.pid_file), ("upgrade_sock", &s.upgrade_sock)] {
        if let Some(p) = path {
            if !Path::new(p).is_absolute() {
                problems.push(format!("server.{key}: {p:?} must be an absolute path"));
            }
        }
    }
    let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
    ServerSettings {
        listen,
        metrics_listen: s.metrics_listen,
        threads: s.threads.unwrap_or(2),
        max_body_bytes: s
            .max_body_bytes
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_MAX_BODY_BYTES),
        pid_file: s.pid_file.unwrap_or_else(|| DEFAULT_PID_FILE.to_owned()),
        upgrade_sock: s
            .upgrade_sock
            .unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.to_owned()),
        daemon: s.daemon.unwrap_or(false),
        error_log: s.error_log,
        user: s.user,
        group: s.group,
        // Long enough for a long stream to finish on upgrade, short enough
        // for a quick restart.
        grace_period_seconds: s.grace_period_seconds.unwrap_or(60),
        graceful_shutdown_timeout_seconds: s.graceful_shutdown_timeout_seconds.unwrap_or(10),
        header_timeout: ms(s.header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS),
        keepalive_timeout: ms(s.keepalive_timeout_ms, DEFAULT_KEEPALIVE_TIMEOUT_MS),
        body_timeout: ms(s.body_timeout_ms, DEFAULT_BODY_TIMEOUT_MS),
        min_body_rate: s.min_body_rate_bytes_per_s.unwrap_or(DEFAULT_MIN_BODY_RATE),
        write_timeout: ms(s.write_timeout_ms, DEFAULT_WRITE_TIMEOUT_MS),
        max_header_bytes: s
            .max_header_bytes
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_connections: s
            .max_connections
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        h2_max_streams: s
            .h2_max_concurrent_streams
            .unwrap_or(DEFAULT_H2_MAX_STREAMS),
        sse_keepalive: match s.sse_keepalive_s.unwrap_or(DEFAULT_SSE_KEEPALIVE_S) {
            0 => None,
            k => Some(Duration::from_secs(k)),
        },
        max_model_name_bytes: s
            .max_model_name_bytes
            .unwrap_or(DEFAULT_MAX_MODEL_NAME_BYTES),
        max_schema_rewrite_bytes: s
            .max_schema_rewrite_bytes
            .unwrap_or(apiproxy_translate::gemini::MAX_SCHEMA_REWRITE_BYTES),
        tls: s.tls.map(|t| tls(t, problems)),
        admin_listen: admin_listen(s.admin_listen, problems),
        allowed_hosts: allowed_hosts(s.allowed_hosts.unwrap_or_default(), problems),
        watch_config: s.watch_config.unwrap_or(false),
    }
}

/// `server.tls`: its addresses checked and its certificate pair read.
fn tls(t: raw::RawTls, problems: &mut Vec<String>) -> TlsListener {
    let listen = t.listen.into_vec();
    if listen.is_empty() {
        problems.push("server.tls.listen: at least one address is needed".to_owned());
    }
    for (i, a) in listen.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.tls.listen[{i}]: {a:?} is not an address like 0.0.0.0:8443"
            ));
        }
    }
    if let Err(e) = CertPair::load(&t.cert, &t.key) {
        problems.push(format!("server.tls: {e}"));
    }
    TlsListener {
        listen,
        cert: t.cert,
        key: t.key,
    }
}

/// `server.admin_listen`: every address checked.
fn admin_listen(l: Option<raw::OneOrMany>, problems: &mut Vec<String>) -> Vec<String> {
    let admin = l.map(|l| l.into_vec()).unwrap_or_default();
    for (i, a) in admin.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.admin_listen[{i}]: {a:?} is not an address like 127.0.0.1:8081"
            ));
        }
    }
    admin
}

/// `server.allowed_hosts`: lowercased host names, without port or scheme.
fn allowed_hosts(hosts: Vec<String>, problems: &mut Vec<String>) -> Vec<String> {
    hosts
        .into_iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains([':', '/', ' ']) {
                problems.push(format!(
                    "server.allowed_hosts[{i}]: {h:?} is not a host name (no port, no scheme)"
                ));
                return None;
            }
            Some(h)
        })
        .collect()
}
