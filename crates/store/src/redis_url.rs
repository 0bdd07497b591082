//! Where Redis is: one server, a Redis Cluster, or a master found through Sentinels, all written as one URL in
//! `store.redis_url` (so a deployment changes shape by changing one string):
//!
//! - `redis://[[user]:password@]host:port[/db]` (also `rediss://`, `redis+unix://`, `unix://`): one server;
//! - `redis+cluster://[[user]:password@]host:port,host:port,...` (`rediss+cluster://` with TLS): a Redis Cluster,
//!   any reachable nodes of it (the rest are discovered); the credentials apply to every node; no database number
//!   (a cluster has only database 0);
//! - `redis+sentinel://[[user]:password@]host:port,host:port,.../master-name[/db]` (`rediss+sentinel://`): the
//!   master that the Sentinels at those addresses name `master-name`; the credentials and the database are the
//!   master's (Sentinels are asked without credentials). The store follows a failover: it asks the Sentinels again
//!   whenever the master stops answering or refuses writes, and every few seconds anyway.

use redis::sentinel::SentinelNodeConnectionInfo;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, TlsMode};

/// A parsed `store.redis_url`.
pub enum RedisTarget {
    /// One Redis server.
    Single(ConnectionInfo),
    /// The seed nodes of a Redis Cluster.
    Cluster(Vec<ConnectionInfo>),
    /// A master found through Sentinels.
    Sentinel {
        /// The Sentinels' addresses.
        sentinels: Vec<ConnectionInfo>,
        /// The name the Sentinels monitor the master under.
        master: String,
        /// How to connect to the master they name (TLS, credentials, database).
        node: SentinelNodeConnectionInfo,
    },
}

const CLUSTER: [&str; 2] = ["redis+cluster://", "rediss+cluster://"];
const SENTINEL: [&str; 2] = ["redis+sentinel://", "rediss+sentinel://"];

impl RedisTarget {
    /// Parses a `store.redis_url`. Errors describe the problem without echoing the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        if let Some((tls, rest)) = strip_scheme(url, CLUSTER) {
            let (auth, hosts, path) = split(rest)?;
            if !path.is_empty() && path != "0" {
                return Err("a Redis Cluster has only database 0".into());
            }
            let nodes = node_urls(tls, auth, hosts)?
                .into_iter()
                .map(|u| u.into_connection_info().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(RedisTarget::Cluster(nodes));
        }
        if let Some((tls, rest)) = strip_scheme(url, SENTINEL) {
            let (auth, hosts, path) = split(rest)?;
            let mut parts = path.split('/');
            let master = parts.next().unwrap_or_default();
            if master.is_empty() {
                return Err(
                    "the master name is missing (redis+sentinel://host:port/master-name)".into(),
                );
            }
            let db = match parts.next() {
                None | Some("") => 0,
                Some(n) => n
                    .parse::<i64>()
                    .map_err(|_| "the database must be a number".to_string())?,
            };
            // Credentials and database belong to the master: parse them from a one-node URL of the same form.
            let master_info = format!("redis://{auth}127.0.0.1/{db}")
                .into_connection_info()
                .map_err(|e| e.to_string())?;
            let sentinels = node_urls(tls, "", hosts)?
                .into_iter()
                .map(|u| u.into_connection_info().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let node = SentinelNodeConnectionInfo {
                tls_mode: tls.then_some(TlsMode::Secure),
                redis_connection_info: Some(RedisConnectionInfo {
                    db,
                    ..master_info.redis
                }),
            };
            return Ok(RedisTarget::Sentinel {
                sentinels,
                master: master.to_string(),
                node,
            });
        }
        url.into_connection_info()
            .map(RedisTarget::Single)
            .map_err(|e| e.to_string())
    }

    /// Whether keys must be hash-tagged so that each script touches one slot.
    pub fn clustered(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// The target for logs: addresses only, never credentials.
    pub fn describe(&self) -> String {
        let list = |nodes: &[ConnectionInfo]| {
            nodes
                .iter()
                .map(|n| address(&n.addr))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            RedisTarget::Single(info) => address(&info.addr),
            RedisTarget::Cluster(nodes) => format!("cluster {}", list(nodes)),
            RedisTarget::Sentinel {
                sentinels, master, ..
            } => format!("master `{master}` of sentinels {}", list(sentinels)),
        }
    }
}

// Hand-written: the connection infos hold the password.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `host:port` (or the socket path) of an address.
pub(crate) fn address(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
    }
}

/// `(tls, rest after the scheme)` when `url` starts with one of `schemes` (plain, then TLS).
fn strip_scheme<'a>(url: &'a str, schemes: [&str; 2]) -> Option<(bool, &'a str)> {
    schemes
        .iter()
        .enumerate()
        .find_map(|(i, scheme)| url.strip_prefix(scheme).map(|rest| (i == 1, rest)))
}

/// Splits `[auth@]hosts[/path]` into `("auth@" or "", hosts, path)`.
fn split(rest: &str) -> Result<(&str, &str, &str), String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i + 1..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (auth, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    if hosts.is_empty() {
        return Err("no host:port given".into());
    }
    Ok((auth, hosts, path))
}

/// One `redis://` (or `rediss://`) URL per comma-separated host.
fn node_urls(tls: bool, auth: &str, hosts: &str) -> Result<Vec<String>, String> {
    let scheme = if tls { "rediss" } else { "redis" };
    hosts
        .split(',')
        .map(str::trim)
        .map(|host| {
            if host.is_empty() {
                Err("an empty host in the node list".to_string())
            } else {
                Ok(format!("{scheme}://{auth}{host}"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server() {
        let t = RedisTarget::parse("redis://:pw@127.0.0.1:6380/2").expect("valid");
        assert!(!t.clustered());
        assert_eq!(t.describe(), "127.0.0.1:6380");
        let RedisTarget::Single(info) = t else {
            panic!("single")
        };
        assert_eq!(info.redis.db, 2);
        assert_eq!(info.redis.password.as_deref(), Some("pw"));
    }

    #[test]
    fn cluster_nodes_share_the_credentials() {
        let t =
            RedisTarget::parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001").expect("valid");
        assert!(t.clustered());
        assert_eq!(t.describe(), "cluster 10.0.0.1:7000,10.0.0.2:7001");
        let RedisTarget::Cluster(nodes) = t else {
            panic!("cluster")
        };
        assert_eq!(nodes.len(), 2);
        assert!(nodes
            .iter()
            .all(|n| n.redis.password.as_deref() == Some("pw")));
        assert!(RedisTarget::parse("redis+cluster://h:1/3").is_err());
        assert!(RedisTarget::parse("redis+cluster://h:1,,h:2").is_err());
        assert!(RedisTarget::parse("redis+cluster://").is_err());
    }

    #[test]
    fn sentinel_credentials_are_the_masters() {
        let t =
            RedisTarget::parse("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/3").expect("valid");
        assert_eq!(
            t.describe(),
            "master `mymaster` of sentinels s1:26379,s2:26380"
        );
        let RedisTarget::Sentinel {
            sentinels,
            master,
            node,
        } = t
        else {
            panic!("sentinel")
        };
        assert_eq!(master, "mymaster");
        assert!(sentinels.iter().all(|s| s.redis.password.is_none()));
        let redis = node.redis_connection_info.expect("master credentials");
        assert_eq!(redis.password.as_deref(), Some("pw"));
        assert_eq!(redis.db, 3);
        assert!(RedisTarget::parse("redis+sentinel://s1:26379").is_err());
        assert!(RedisTarget::parse("redis+sentinel://s1:26379/m/x").is_err());
    }

    #[test]
    fn errors_never_echo_the_password() {
        for bad in [
            "http://:hunter2@h",
            "redis+cluster://:hunter2@h:1/9",
            "redis+sentinel://:hunter2@h:1",
        ] {
            let err = crate::validate_redis_url(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
