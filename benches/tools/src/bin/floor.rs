//! `bench-floor`: the least any Pingora-based gateway can cost. A bare
//! `ProxyHttp` that sends every request to one upstream, with Pingora's
//! defaults (pooled upstream connections) and nothing else: no auth, no
//! parsing, no routing, no metrics, no logging.
//!
//! `bench-floor --listen 127.0.0.1:18002 --upstream 127.0.0.1:18001 [--threads 2]`

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut listen = "127.0.0.1:18002".to_owned();
    let mut upstream: SocketAddr = "127.0.0.1:18001".parse().expect("address");
    let mut threads = 2;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| {
            eprintln!("bench-floor: {a} needs a value");
            std::process::exit(2)
        });
        match a.as_str() {
            "--listen" => listen = v,
            "--upstream" => upstream = v.parse().expect("--upstream: an ip:port"),
            "--threads" => threads = v.parse().expect("--threads: a number"),
            other => {
                eprintln!("bench-floor: unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    let conf = ServerConf {
        threads,
        pid_file: "/tmp/bench-floor.pid".into(),
        upgrade_sock: "/tmp/bench-floor-upgrade.sock".into(),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    eprintln!("bench-floor listening on {listen}, upstream {upstream}");
    server.run_forever();
}
