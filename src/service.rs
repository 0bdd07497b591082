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

use crate::config::Config;
use crate::routing::Runtime;
use crate::upstream::catalog;
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
    pub async fn refresh_all(&self, connector: &Connector) {
        let rt = self.runtime.load_full();
        let store = self.state.store().await;
        for p in rt
            .providers
            .iter()
            .filter(|p| p.config.enabled && p.config.static_models.is_none())
        {
            if let Some(models) = store.get_catalog(p.id()).await {
                p.catalog.store(Some(Arc::new(models)));
                continue;
            }
            match catalog::fetch(connector, p).await {
                Ok(models) => {
                    log::debug!("provider {}: {} models listed", p.id(), models.len());
                    store.put_catalog(p.id(), &models).await;
                    p.catalog.store(Some(Arc::new(models)));
                }
                Err(e) => log::warn!(
                    "provider {}: listing models failed, keeping the last list: {e}",
                    p.id()
                ),
            }
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
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    match self.reload() {
                        Ok(()) => {
                            log::info!("config reloaded from {}", self.path.display());
                            self.refresher.refresh_all(&connector).await;
                        }
                        Err(problems) => log::error!(
                            "config reload rejected, the running config stays: {}",
                            problems.join("; ")
                        ),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
