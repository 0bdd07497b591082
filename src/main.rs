//! `apiproxy -c conf/apiproxy.yaml`: runs the gateway.
//! `apiproxy -t -c FILE`: checks FILE and exits.

use std::path::PathBuf;
use std::sync::Arc;

use apiproxy::config::Config;
use apiproxy::proxy::Gateway;
use apiproxy::routing::Runtime;
use apiproxy::service::{warn_disabled, CatalogRefresher, Reloader};
use apiproxy::state::SharedState;
use arc_swap::ArcSwap;
use clap::Parser;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "apiproxy", version, about = "An AI gateway on Pingora")]
struct Cli {
    /// The config file.
    #[arg(short = 'c', long = "conf", default_value = "conf/apiproxy.yaml")]
    conf: PathBuf,
    /// Check the config file and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Take over the listening sockets of a running apiproxy (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
}

fn main() {
    let cli = Cli::parse();
    let config = match Config::load(&cli.conf) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            std::process::exit(1);
        }
    };
    if cli.test {
        println!("config ok");
        return;
    }

    let mut log = env_logger::Builder::new();
    log.parse_filters(&config.log_level);
    if let Ok(filters) = std::env::var("RUST_LOG") {
        log.parse_filters(&filters);
    }
    log.format_timestamp_millis().init();
    warn_disabled(&config);
    apiproxy::metrics::init();

    let s = &config.server;
    let mut conf = ServerConf {
        threads: s.threads,
        daemon: s.daemon || cli.daemon,
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    if let Some(p) = &s.pid_file {
        conf.pid_file.clone_from(p);
    }
    if let Some(u) = &s.upgrade_sock {
        conf.upgrade_sock.clone_from(u);
    }
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: conf.daemon,
        ..Opt::default()
    };
    let listen = s.listen.clone();
    let metrics_listen = s.metrics_listen.clone();

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let state = Arc::new(SharedState::new(config.store_options()));
    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::new(config, None)));
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(runtime.clone(), state.clone()),
        "apiproxy",
    );
    for addr in &listen {
        proxy.add_tcp(addr);
    }
    server.add_service(proxy);

    if let Some(addr) = metrics_listen {
        let mut prom = pingora_prometheus::prometheus_http_service();
        prom.add_tcp(&addr);
        server.add_service(prom);
    }

    let refresher = CatalogRefresher {
        runtime: runtime.clone(),
        state: state.clone(),
    };
    server.add_service(background_service("catalog refresh", refresher.clone()));
    server.add_service(background_service(
        "config reload",
        Reloader {
            runtime,
            path: cli.conf,
            refresher,
        },
    ));
    // `run` returns once every service's runtime is gone (SIGTERM, SIGQUIT
    // after handing the sockets over, SIGINT): the store's writer thread has
    // outlived them, so what the last requests deferred (token settlements,
    // session bindings, context) is written before the process exits.
    server.run(RunArgs::default());
    flush_store(&state);
    std::process::exit(0)
}

/// Writes the store's deferred work (bounded: a few seconds at most).
fn flush_store(state: &SharedState) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            rt.block_on(state.flush());
            log::info!("shutdown: shared state flushed");
        }
        Err(e) => log::error!("shutdown: cannot flush the shared state: {e}"),
    }
}
