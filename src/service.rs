//! Background work: keeping provider catalogs fresh and reloading the
//! config on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

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
    /// does not hold back the others at start).
    pub async fn refresh_all(&self, connector: &Connector) {
        let rt = self.runtime.load_full();
        let store = self.state.store().await;
        let store = store.as_ref();
        let listings = rt
            .providers
            .iter()
            .filter(|p| p.config.enabled && p.config.static_models.is_none())
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
        let connector = Connector::new(None);
        loop {
            self.refresh_all(&connector).await;
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
        let connector = Connector::new(None);
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
                let probe = catalog::probe(&connector, p, hc.timeout, |p| rt.probe_failed(p)).await;
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
    pub path: PathBuf,
    pub refresher: CatalogRefresher,
}

impl Reloader {
    /// Loads the file and swaps it in. Returns the problems when it fails.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let config = Config::load(&self.path)?;
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
        let connector = Connector::new(None);
        // `server.watch_config`: the files as last taken, and a change seen
        // once (taken when the next look finds it unchanged: an editor's
        // save in several writes is one reload).
        // The files as the running config was read from them, not as they
        // are now: an edit made while the gateway started is still a change.
        let mut taken = self.runtime.load().config.files_seen.clone();
        let mut pending: Option<Option<FilesSeen>> = None;
        loop {
            let watching =
                !self.path.as_os_str().is_empty() && self.runtime.load().config.server.watch_config;
            tokio::select! {
                _ = hup.recv() => {
                    if self.reload_logged(&connector).await {
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
                        taken = if self.reload_logged(&connector).await {
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
            &self.path,
            rt.config.filters_path.as_deref(),
        ))
    }

    /// Reloads as SIGHUP does: the new config swapped in and the catalogs
    /// refreshed, or the problems logged and the running config kept.
    /// Whether the new config was taken.
    async fn reload_logged(&self, connector: &Connector) -> bool {
        match self.reload() {
            Ok(()) => {
                log::info!("config reloaded from {}", self.path.display());
                self.refresher.refresh_all(connector).await;
                true
            }
            Err(problems) => {
                log::error!(
                    "config reload rejected, the running config stays: {}",
                    problems.join("; ")
                );
                false
            }
        }
    }
}
