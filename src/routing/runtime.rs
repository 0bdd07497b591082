//! The live configuration and the providers' state: what one request loads
//! once (from an `ArcSwap`) and keeps to its end. Swapped whole on reload.

use std::sync::Arc;

use crate::config::Config;
use crate::upstream::Provider;

/// The live configuration and the providers' state.
pub struct Runtime {
    pub config: Config,
    pub providers: Vec<Arc<Provider>>,
    /// Hedges left to start, gateway-wide (starts empty on reload).
    pub hedges: super::hedge::HedgeBudget,
}

impl Runtime {
    /// Builds the runtime for `config`. On reload (`previous`), a provider
    /// whose address and kind did not change keeps its fetched catalog; its
    /// keys' cooldowns and health start afresh.
    pub fn new(config: Config, previous: Option<&Runtime>) -> Runtime {
        let providers = config
            .providers
            .iter()
            .map(|pc| {
                let p = Provider::new(pc.clone());
                if let Some(old) = previous.and_then(|r| r.provider(&pc.id)) {
                    if old.config.base == pc.base && old.config.kind == pc.kind {
                        p.catalog.store(old.catalog.load_full());
                    }
                }
                Arc::new(p)
            })
            .collect::<Vec<Arc<Provider>>>();
        // Every configured provider shows on /metrics from the start (a
        // fresh provider's breakers are closed).
        for p in &providers {
            super::metrics::BREAKERS_OPEN
                .with_label_values(&[p.id()])
                .set(0);
        }
        Runtime {
            config,
            providers,
            hedges: Default::default(),
        }
    }

    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.id() == id)
    }
}
