//! Background work: keeping provider catalogs fresh and reloading the
//! config on SIGHUP (sent by `apiproxy reload`, by the console's reload
//! button through [`ReloadControl`], or noticed by `server.watch_config`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::connectors::http::Connector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

use crate::config::{Config, FilesSeen};
use crate::routing::Runtime;
use crate::upstream::{catalog, Provider};
use apiproxy_store::LazyStore;

/// Fetches the model lists of providers without a configured `models` list,
/// at start and then every `store.models_cache_ttl_seconds`; a provider that
/// fails to list keeps its last good list.
/// The list is shared through the store: a replica finding a fresh list
/// there does not ask the provider again.
#[derive(Clone)]
pub struct CatalogRefresher {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub state: Arc<LazyStore>,
}

impl CatalogRefresher {
    /// Lists every provider's catalog, all at once (so a slow provider
    /// does not hold back the others at start). The connector is made at
    /// the first listing: with every catalog in the config, none is (each
    /// loads the system's CA store).
    pub async fn refresh_all(&self, connector: &mut Option<Connector>) {
        let rt = self.runtime.load_full();
        // Opened here as before, listing or not: at start, this opens it.
        let store = self.state.store().await;
        let store = store.as_ref();
        let listed = |p: &&Arc<Provider>| p.config.enabled && p.config.static_models.is_none();
        if !rt.providers.iter().any(|p| listed(&p)) {
            return;
        }
        let connector = &*connector.get_or_insert_with(|| Connector::new(None));
        let listings = rt
            .providers
            .iter()
            .filter(listed)
            .map(|p| refresh_one(connector, store, p, false));
        futures_util::future::join_all(listings).await;
    }
}

/// Lists one provider's catalog: from the store when a replica listed it
/// recently (unless `force`), else from the provider.
pub async fn refresh_one(
    connector: &Connector,
    store: &dyn apiproxy_store::Store,
    p: &Provider,
    force: bool,
) {
    if !force {
        if let Some(models) = store.get_catalog(p.id()).await {
            p.set_catalog(models, "store");
            return;
        }
    }
    match catalog::fetch(connector, p).await {
        Ok(models) => {
            log::debug!("provider {}: {} models listed", p.id(), models.len());
            store.put_catalog(p.id(), &models).await;
            p.set_catalog(models, "provider");
        }
        Err(e) => {
            log::warn!(
                "provider {}: listing models failed, keeping the last list: {e}",
                p.id()
            );
            p.listing_failed(e);
        }
    }
}

#[async_trait]
impl BackgroundService for CatalogRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut connector: Option<Connector> = None;
        loop {
            self.refresh_all(&mut connector).await;
            let every = self
                .runtime
                .load()
                .config
                .store
                .catalog_ttl
                .max(Duration::from_secs(5));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Active health checks: lists the models of each provider with a
/// `health_check` every `interval_s`, bounded by `timeout_ms`; a failure
/// feeds the provider's breakers (`Runtime::probe_failed`).
pub struct HealthChecker {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Made at the first probe: a config without health checks holds no
        // connector (each loads the system's CA store).
        let mut connector: Option<Connector> = None;
        let mut due: std::collections::HashMap<String, std::time::Instant> = Default::default();
        loop {
            let rt = self.runtime.load_full();
            let now = std::time::Instant::now();
            for p in rt.providers.iter().filter(|p| p.config.enabled) {
                let Some(hc) = p.config.health_check else {
                    continue;
                };
                if due.get(p.id()).is_some_and(|d| *d > now) {
                    continue;
                }
                due.insert(p.id().to_owned(), now + hc.interval);
                let connector = connector.get_or_insert_with(|| Connector::new(None));
                let probe = catalog::probe(connector, p, hc.timeout, |p| rt.probe_failed(p)).await;
                if !probe.ok {
                    log::warn!(
                        "provider {}: health check failed: {}",
                        p.id(),
                        probe.error.as_deref().unwrap_or("")
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Re-reads the config file on SIGHUP and swaps it in; a config that fails
/// validation is logged and the running one stays.
pub struct Reloader {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub refresher: CatalogRefresher,
    /// The config file's path, what the reloads did, and the console's way in.
    pub control: Arc<ReloadControl>,
}

/// What one reload did (the console's System page shows the last one).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// Counts the reloads this process began, from 1.
    pub number: u64,
    /// Unix milliseconds when it ended.
    pub at_ms: u64,
    /// `signal` (SIGHUP: `apiproxy reload` or the console's button) or
    /// `watch` (`server.watch_config`).
    pub trigger: &'static str,
    /// Whether the new config was taken.
    pub ok: bool,
    /// Why it was refused (the lines the log shows), empty when taken.
    pub problems: Vec<String>,
}

/// Why a reload asked for through [`ReloadControl::reload`] has no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadUnavailable {
    /// The reload service does not listen for SIGHUP (not started yet, or
    /// the signal could not be set up): sending one would stop the process.
    NotListening,
    /// No reload ended within the wait.
    TimedOut,
    /// The signal could not be sent.
    Signal(String),
}

impl std::fmt::Display for ReloadUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadUnavailable::NotListening => {
                write!(f, "the reload service is not listening for SIGHUP")
            }
            ReloadUnavailable::TimedOut => write!(f, "no reload finished in time"),
            ReloadUnavailable::Signal(e) => write!(f, "cannot send SIGHUP to this process: {e}"),
        }
    }
}

/// The config file's path, the reloads' outcomes, and a reload asked for
/// from inside the process: shared by the [`Reloader`] and the console.
/// A reload asked for here is a SIGHUP to this process, the signal
/// `apiproxy reload` sends: the same reload (config and TLS certificates),
/// whoever asks.
pub struct ReloadControl {
    path: PathBuf,
    /// Reloads begun (the next outcome's `number` once it ends).
    begun: AtomicU64,
    /// Set while the reload service listens for SIGHUP.
    listening: AtomicBool,
    last: Mutex<Option<ReloadOutcome>>,
    ended: tokio::sync::Notify,
}

impl ReloadControl {
    /// For the config at `path` (empty: the environment configuration).
    pub fn new(path: PathBuf) -> Arc<ReloadControl> {
        Arc::new(ReloadControl {
            path,
            begun: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            last: Mutex::new(None),
            ended: tokio::sync::Notify::new(),
        })
    }

    /// The config file (empty: the environment configuration).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last reload's outcome, if one ran since start.
    pub fn last(&self) -> Option<ReloadOutcome> {
        self.last.lock().clone()
    }

    /// Reloads as `apiproxy reload` does (SIGHUP to this process) and waits
    /// up to `wait` for a reload that began after this call: its outcome.
    pub async fn reload(&self, wait: Duration) -> Result<ReloadOutcome, ReloadUnavailable> {
        if !self.listening.load(Ordering::Acquire) {
            return Err(ReloadUnavailable::NotListening);
        }
        // A reload under way may have read the files before the caller
        // changed them: only one begun after this point counts.
        let after = self.begun.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + wait;
        let ended = self.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        // SAFETY: kill has no memory preconditions; the process signals itself.
        if unsafe { libc::kill(libc::getpid(), libc::SIGHUP) } != 0 {
            return Err(ReloadUnavailable::Signal(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        loop {
            if let Some(o) = self.last().filter(|o| o.number > after) {
                return Ok(o);
            }
            if tokio::time::timeout_at(deadline, ended.as_mut())
                .await
                .is_err()
            {
                return Err(ReloadUnavailable::TimedOut);
            }
            ended.set(self.ended.notified());
            ended.as_mut().enable();
        }
    }

    fn begin(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn end(&self, number: u64, trigger: &'static str, problems: Vec<String>) {
        *self.last.lock() = Some(ReloadOutcome {
            number,
            at_ms: crate::upstream::now_ms(),
            trigger,
            ok: problems.is_empty(),
            problems,
        });
        self.ended.notify_waiters();
    }
}

impl Reloader {
    /// Loads the file and swaps it in. Returns the problems when it fails.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let config = Config::load(&self.control.path)?;
        warn_disabled(&config);
        let old = self.runtime.load_full();
        self.runtime
            .store(Arc::new(Runtime::new(config, Some(&old))));
        Ok(())
    }
}

/// One warning line per provider disabled for lack of keys.
pub fn warn_disabled(config: &Config) {
    for p in config.providers.iter().filter(|p| !p.enabled) {
        if p.disabled {
            log::info!("provider {}: disabled in the config", p.id);
            continue;
        }
        log::warn!(
            "provider {}: every api key is empty, provider disabled (set its key variable to enable it)",
            p.id
        );
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload disabled: {e}");
                return;
            }
        };
        self.control.listening.store(true, Ordering::Release);
        // Made at the first reload that lists a catalog.
        let mut connector: Option<Connector> = None;
        // `server.watch_config`: the files as last taken, and a change seen
        // once (taken when the next look finds it unchanged: an editor's
        // save in several writes is one reload).
        // The files as the running config was read from them, not as they
        // are now: an edit made while the gateway started is still a change.
        let mut taken = self.runtime.load().config.files_seen.clone();
        let mut pending: Option<Option<FilesSeen>> = None;
        loop {
            let watching = !self.control.path.as_os_str().is_empty()
                && self.runtime.load().config.server.watch_config;
            tokio::select! {
                _ = hup.recv() => {
                    if self.reload_logged(&mut connector, "signal").await {
                        taken = self.runtime.load().config.files_seen.clone();
                    }
                    pending = None;
                }
                _ = tokio::time::sleep(WATCH_EVERY), if watching => {
                    let now = self.files_seen();
                    if now == taken {
                        pending = None;
                    } else if pending.as_ref() == Some(&now) {
                        log::info!("config files changed: reloading (server.watch_config)");
                        // Taken: the files as the new config was read from
                        // them. Refused: not tried again until they change.
                        taken = if self.reload_logged(&mut connector, "watch").await {
                            self.runtime.load().config.files_seen.clone()
                        } else {
                            now
                        };
                        pending = None;
                    } else {
                        pending = Some(now);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How often `server.watch_config` looks at the files.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Reloader {
    fn files_seen(&self) -> Option<FilesSeen> {
        let rt = self.runtime.load();
        Some(FilesSeen::read(
            &self.control.path,
            rt.config.filters_path.as_deref(),
        ))
    }

    /// Reloads as SIGHUP does: the new config swapped in and the catalogs
    /// refreshed, or the problems logged and the running config kept.
    /// Whether the new config was taken.
    /// The outcome is recorded once the config is swapped in or refused,
    /// before the catalogs are listed (which can take a provider's timeout).
    async fn reload_logged(
        &self,
        connector: &mut Option<Connector>,
        trigger: &'static str,
    ) -> bool {
        let number = self.control.begin();
        match self.reload() {
            Ok(()) => {
                log::info!("config reloaded from {}", self.control.path.display());
                self.control.end(number, trigger, Vec::new());
                self.refresher.refresh_all(connector).await;
                true
            }
            Err(problems) => {
                log::error!(
                    "config reload rejected, the running config stays: {}",
                    problems.join("; ")
                );
                self.control.end(number, trigger, problems);
                false
            }
        }
    }
}
