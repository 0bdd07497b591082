//! `apiproxy -c conf/apiproxy.yaml` (or `apiproxy run --config FILE`): runs the gateway.
//! `apiproxy -t -c FILE`: checks FILE and exits.
//! `apiproxy stop | status | reload [--config FILE]`: the running gateway of FILE.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use apiproxy::config::{Config, ServerSettings};
use apiproxy::listener::{Capacity, ClientListener, DescriptorBudget, PidHeader};
use apiproxy::proxy::{Gateway, Surface};
use apiproxy::routing::Runtime;
use apiproxy::service::{warn_disabled, CatalogRefresher, HealthChecker, Reloader};
use apiproxy_store::LazyStore;
use arc_swap::ArcSwap;
use clap::Parser;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (the `_RJEM_MALLOC_CONF`
/// environment variable still overrides them). Pingora allocates a 64 KiB
/// buffer for every request body and every response body it reads and frees
/// it at the body's end; past jemalloc's default thread-cache limit (32 KiB)
/// each one took the arena's large-allocation path, extent lookups and a
/// lock included. Cached per thread, they cost what a small allocation does
/// (benches/README.md, "The allocator's thread cache").
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to the first byte of a static, NUL-terminated string.
    Some(unsafe { &*c"tcache_max:65536".as_ptr() });

#[derive(Parser, Debug)]
#[command(name = "apiproxy", version, about = "An AI gateway on Pingora")]
struct Cli {
    /// The config file (default conf/apiproxy.yaml; without -c, APIProxy's
    /// LLM_PROVIDERS environment configuration is used when it is set).
    #[arg(short = 'c', long = "conf", visible_alias = "config", global = true)]
    conf: Option<PathBuf>,
    /// Check the config file and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon", global = true)]
    daemon: bool,
    /// Take over the listening sockets of a running apiproxy (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run the gateway (the same as no command; `--daemon` to run it in the
    /// background), as ai-proxy's `run`.
    Run,
    /// Stop the gateway of this config (through its pid file): it finishes
    /// its requests first; waits until it has exited.
    Stop,
    /// Whether the gateway of this config runs: its pid, uptime and listen
    /// addresses; exits 0 when it runs, 3 when it does not.
    Status,
    /// Reload the config of the running gateway (SIGHUP): a bad file is
    /// refused and the gateway keeps the config it has.
    Reload,
    /// Print the JSON Schema of the config file (or of a filter file) and
    /// exit; point an editor's YAML support at it (README).
    Schema {
        #[arg(value_enum, default_value_t = SchemaOf::Config)]
        of: SchemaOf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SchemaOf {
    Config,
    Filters,
}

fn main() {
    let mut cli = Cli::parse();
    let Some((config, conf_path)) = command(&mut cli) else {
        return;
    };
    init_logging(&config);

    let s = &config.server;
    let conf = server_conf(s, &cli);
    let budget = descriptor_budget(s);
    let limits = s.clone();
    let grace = std::time::Duration::from_secs(s.grace_period_seconds);
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: conf.daemon,
        ..Opt::default()
    };
    let listen = s.listen.clone();
    let metrics_listen = s.metrics_listen.clone();
    let tls = s.tls.clone();
    let h2_max_streams = s.h2_max_streams;

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    if cli.upgrade {
        // bootstrap() exits the process when the sockets do not arrive.
        log::info!("upgrade: took over the listening sockets of the running apiproxy");
    }
    // Pingora writes the pid file when it daemonizes; in the foreground it
    // is ours to write, so `apiproxy status|stop|reload` find this process.
    let pid_file = PathBuf::from(&s.pid_file);
    if !server.configuration.daemon {
        if let Err(e) = apiproxy::control::write_pid_file(&pid_file) {
            log::warn!("server.pid_file {}: {e}", pid_file.display());
        }
    }

    let state = Arc::new(LazyStore::new(config.store_options()));
    let keys = Arc::new(apiproxy::auth::StoredKeys::new(&config.store));
    let admin_listen = config.server.admin_listen.clone();
    // Absolute: a daemon runs from `/`, and SIGHUP re-reads this path.
    let conf_path = if conf_path.as_os_str().is_empty() {
        conf_path
    } else {
        std::path::absolute(&conf_path).unwrap_or(conf_path)
    };
    let reload = apiproxy::service::ReloadControl::new(conf_path);
    let system = apiproxy::console::System::new(&config.server, reload.clone());
    // Read at start: its export thread starts at the first traced request,
    // after Pingora daemonized, and lives as long as the process.
    let telemetry = apiproxy::telemetry::Telemetry::new(&config.telemetry);
    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::new(config, None)));
    // One gateway state for every listener; with `server.admin_listen`, the
    // client listeners serve the client routes and the admin listener the rest.
    let mut gateway = Gateway::new(
        runtime.clone(),
        state.clone(),
        keys,
        Arc::new(apiproxy::console::WebConsole::new(system)),
    );
    gateway.telemetry = telemetry.clone();
    let client_surface = if admin_listen.is_empty() {
        Surface::All
    } else {
        Surface::Clients
    };
    let mut app =
        pingora::proxy::http_proxy(&server.configuration, gateway.serving(client_surface));
    PidHeader::register(&mut app.downstream_modules);
    let capacity = Capacity::new(budget);
    let listener = ClientListener::new(app, limits.clone(), grace, capacity.clone());
    let mut proxy = Service::new("apiproxy".to_owned(), listener);
    for addr in &listen {
        proxy.add_tcp(addr);
    }
    if let Some(t) = &tls {
        // Its own service (its connections' handshake and h2 settings),
        // behind the same connection layer, slots and descriptor budget.
        let mut app =
            pingora::proxy::http_proxy(&server.configuration, gateway.serving(client_surface));
        PidHeader::register(&mut app.downstream_modules);
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2_idle_timeout = Some(limits.keepalive_timeout);
        app.server_options = Some(options);
        app.h2_options = Some(apiproxy::tls::h2_limits(
            limits.max_header_bytes,
            h2_max_streams,
        ));
        match apiproxy::tls::open(t) {
            Ok((acceptor, reloader)) => {
                let listener = ClientListener::new(app, limits.clone(), grace, capacity.clone())
                    .with_tls(acceptor);
                let mut tls_proxy = Service::new("apiproxy-tls".to_owned(), listener);
                for addr in &t.listen {
                    tls_proxy.add_tcp(addr);
                }
                server.add_service(tls_proxy);
                server.add_service(background_service("tls certificates", reloader));
            }
            Err(e) => {
                eprintln!("server.tls: {e}");
                std::process::exit(1);
            }
        }
    }
    server.add_service(proxy);
    if !admin_listen.is_empty() {
        let mut app =
            pingora::proxy::http_proxy(&server.configuration, gateway.serving(Surface::Admin));
        PidHeader::register(&mut app.downstream_modules);
        let mut admin = Service::new(
            "apiproxy-admin".to_owned(),
            ClientListener::new(app, limits, grace, capacity),
        );
        for addr in &admin_listen {
            admin.add_tcp(addr);
        }
        server.add_service(admin);
    }

    if let Some(addr) = metrics_listen {
        let mut prom = pingora_prometheus::prometheus_http_service();
        prom.add_tcp(&addr);
        server.add_service(prom);
    }

    add_background_services(&mut server, runtime, state.clone(), reload);
    // `run` returns once every service's runtime is gone (SIGTERM, SIGQUIT
    // after handing the sockets over, SIGINT): the store's writer thread has
    // outlived them, so what the last requests deferred (token settlements,
    // session bindings, context) is written before the process exits.
    server.run(RunArgs::default());
    flush_store(&state);
    if let Some(t) = &telemetry {
        t.flush();
    }
    // Pingora leaves its daemon's pid file behind: gone with the process, so
    // `status` says "no pid file" rather than naming a dead pid.
    apiproxy::control::remove_pid_file_if_ours(&pid_file);
    std::process::exit(0)
}

/// Everything but running the gateway: `schema`, `-t`, `stop`, `status`,
/// `reload` (each exits or returns `None`). Else the config to run with
/// and its path (empty for the environment configuration).
fn command(cli: &mut Cli) -> Option<(Config, PathBuf)> {
    if let Some(Command::Schema { of }) = cli.command {
        let schema = match of {
            SchemaOf::Config => apiproxy::config::json_schema(),
            SchemaOf::Filters => apiproxy::config::filters::json_schema(),
        };
        // A closed pipe (`apiproxy schema | head`) is not an error.
        let _ = writeln!(std::io::stdout().lock(), "{schema:#}");
        return None;
    }
    let ctl = match cli.command {
        Some(Command::Stop) => Some(Control::Stop),
        Some(Command::Status) => Some(Control::Status),
        Some(Command::Reload) => Some(Control::Reload),
        _ => None,
    };
    // An empty path is the environment configuration (`Config::load`).
    let conf_path = cli.conf.take().unwrap_or_else(|| {
        if std::env::var_os("LLM_PROVIDERS").is_some() {
            PathBuf::new()
        } else {
            PathBuf::from("conf/apiproxy.yaml")
        }
    });
    let config = match Config::load(&conf_path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            std::process::exit(1);
        }
    };
    if let Some(c) = ctl {
        std::process::exit(control(c, &config.server, &conf_path));
    }
    if cli.test {
        for w in config.warnings() {
            eprintln!("warning: {w}");
        }
        println!("config ok");
        return None;
    }
    Some((config, conf_path))
}

#[derive(Clone, Copy)]
enum Control {
    Stop,
    Status,
    Reload,
}

/// `apiproxy stop | status | reload`: the gateway of this config, found
/// through its pid file. Returns the exit code.
fn control(what: Control, s: &ServerSettings, conf_path: &std::path::Path) -> i32 {
    use apiproxy::control;
    let config_name = if conf_path.as_os_str().is_empty() {
        "the environment configuration".to_owned()
    } else {
        conf_path.display().to_string()
    };
    let running = match control::find(std::path::Path::new(&s.pid_file)) {
        Ok(r) => r,
        Err(why) => {
            println!(
                "apiproxy ({config_name}) is not running: {why} ({})",
                s.pid_file
            );
            // Stopping what does not run is done, as `systemctl stop` has it.
            return match what {
                Control::Stop => 0,
                Control::Status | Control::Reload => control::NOT_RUNNING,
            };
        }
    };
    let pid = running.pid;
    match what {
        Control::Status => {
            let mut listen = s.listen.clone();
            if let Some(t) = &s.tls {
                listen.extend(t.listen.iter().map(|a| format!("{a} (TLS)")));
            }
            listen.extend(s.admin_listen.iter().map(|a| format!("{a} (admin)")));
            if let Some(m) = &s.metrics_listen {
                listen.push(format!("{m} (metrics)"));
            }
            let up = running
                .uptime
                .map_or_else(|| "unknown".to_owned(), control::human_duration);
            println!("apiproxy ({config_name}) is running");
            println!("  pid:       {pid}");
            println!("  uptime:    {up}");
            println!("  listening: {}", listen.join(", "));
            0
        }
        Control::Reload => match control::signal(&running, libc::SIGHUP) {
            Ok(()) => {
                println!("apiproxy (pid {pid}): reload requested; its log says whether the config was taken");
                0
            }
            Err(e) => {
                eprintln!("apiproxy (pid {pid}): cannot signal it: {e}");
                1
            }
        },
        Control::Stop => {
            if let Err(e) = control::signal(&running, libc::SIGTERM) {
                eprintln!("apiproxy (pid {pid}): cannot signal it: {e}");
                return 1;
            }
            let limit = control::stop_wait(s);
            if control::wait_gone(&running, limit) {
                println!("apiproxy (pid {pid}) stopped");
                0
            } else {
                eprintln!(
                    "apiproxy (pid {pid}) is still running after {}s",
                    limit.as_secs()
                );
                1
            }
        }
    }
}

/// The logger (`log.level`, `RUST_LOG` wins), the config's warnings and the
/// metrics registry.
fn init_logging(config: &Config) {
    let mut log = env_logger::Builder::new();
    log.parse_filters(&config.log_level);
    if let Ok(filters) = std::env::var("RUST_LOG") {
        log.parse_filters(&filters);
    }
    match config.log_timezone.clone() {
        None => log.format_timestamp_millis(),
        // `log.timezone`: the same line, its time in that zone with its offset.
        Some(tz) => log.format(move |buf, record| {
            let at = jiff::Timestamp::now().to_zoned(tz.clone());
            writeln!(
                buf,
                "[{} {:<5} {}] {}",
                at.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z"),
                record.level(),
                record.target(),
                record.args()
            )
        }),
    };
    // The real logger, wrapped: its warn and error lines are also kept for
    // the console's App Log page (`applog`).
    let logger = log.build();
    log::set_max_level(logger.filter());
    if log::set_boxed_logger(Box::new(apiproxy::applog::Capture { inner: logger })).is_err() {
        eprintln!("a logger was already set: the console's App Log stays empty");
    }
    warn_disabled(config);
    for w in config.warnings() {
        log::warn!("{w}");
    }
    apiproxy::metrics::init();
}

/// Pingora's settings from `server`; with `-d` or `-u`, the private
/// directories of the pid file and the upgrade socket (exits when they
/// cannot be made).
fn server_conf(s: &ServerSettings, cli: &Cli) -> ServerConf {
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
    conf.pid_file.clone_from(&s.pid_file);
    conf.upgrade_sock.clone_from(&s.upgrade_sock);
    if conf.daemon || cli.upgrade {
        // -d writes the pid file, -u listens on the upgrade socket.
        for path in [&s.pid_file, &s.upgrade_sock] {
            if let Err(e) = private_dir_for(path) {
                log::error!("{e}");
                std::process::exit(1);
            }
        }
    }
    conf
}

/// Catalog refresh, health checks and the SIGHUP reload.
fn add_background_services(
    server: &mut Server,
    runtime: Arc<ArcSwap<Runtime>>,
    state: Arc<LazyStore>,
    control: Arc<apiproxy::service::ReloadControl>,
) {
    let refresher = CatalogRefresher {
        runtime: runtime.clone(),
        state: state.clone(),
    };
    server.add_service(background_service("catalog refresh", refresher.clone()));
    server.add_service(background_service(
        "health checks",
        HealthChecker {
            runtime: runtime.clone(),
        },
    ));
    server.add_service(background_service(
        "config reload",
        Reloader {
            runtime,
            refresher,
            control,
        },
    ));
}

/// Writes the store's deferred work (bounded: a few seconds at most).
fn flush_store(state: &LazyStore) {
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

/// Makes sure the directory holding `path` exists; a directory it creates is
/// private (0700): whoever can write there could take the upgrade socket and
/// with it the listening sockets. An existing directory others can write to
/// gets a warning.
fn private_dir_for(path: &str) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let Some(dir) = std::path::Path::new(path).parent() else {
        return Ok(());
    };
    match std::fs::metadata(dir) {
        Ok(m) => {
            if m.permissions().mode() & 0o022 != 0 {
                log::warn!(
                    "{} (holding {path}) is writable by other users: use a private directory such as {}",
                    dir.display(),
                    apiproxy::config::DEFAULT_RUNTIME_DIR
                );
            }
            Ok(())
        }
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {} for {path}: {e}", dir.display())),
    }
}

/// The descriptor budget of the process (`listener::DescriptorBudget`),
/// after raising the open-file soft limit to the hard one (as nginx and Go
/// do). Warns when it lowers `server.max_connections`, or leaves no room
/// for an HTTP/2 connection.
fn descriptor_budget(s: &ServerSettings) -> DescriptorBudget {
    let budget = DescriptorBudget::new(
        open_file_limit(),
        s.max_connections,
        s.h2_max_streams,
        s.tls.is_some(),
    );
    if budget.max_connections < s.max_connections {
        log::warn!(
            "server.max_connections lowered from {} to {}: the open-file limit leaves {} descriptors for client connections, {} each with the upstream connections of a request and its hedge (raise LimitNOFILE / ulimit -n)",
            s.max_connections,
            budget.max_connections,
            budget.total,
            budget.http1
        );
    }
    if s.tls.is_some() && !budget.holds_h2() {
        log::warn!(
            "HTTP/2 connections will be refused: one takes {} descriptors (server.h2_max_concurrent_streams {} with their hedges), the open-file limit leaves {} (raise LimitNOFILE or lower h2_max_concurrent_streams)",
            budget.h2,
            s.h2_max_streams,
            budget.total
        );
    }
    budget
}

/// The open-file limit, raised to the hard limit first; `None` when it
/// cannot be read.
fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}
