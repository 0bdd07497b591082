//! The `models` section: logical models and their upstreams.

use std::collections::HashSet;
use std::time::Duration;

use super::raw::RawModel;
use super::ProviderConfig;

/// A logical model: a name routed over weighted upstreams.
#[derive(Debug, Clone)]
pub struct LogicalModel {
    pub name: String,
    pub description: Option<String>,
    /// `hedge_after_ms`: an attempt with no answer after this long gets a
    /// second one on the next upstream (docs/routing.md, "Hedged requests").
    pub hedge_after: Option<Duration>,
    /// `hedge_non_stream`: non-streaming requests are hedged too.
    pub hedge_non_stream: bool,
    /// `cache_ttl_seconds`: identical requests are answered from the
    /// response cache this long after a first answer (`None`: no caching).
    pub cache_ttl: Option<Duration>,
    pub upstreams: Vec<UpstreamRef>,
}

/// One upstream of a logical model.
#[derive(Debug, Clone)]
pub struct UpstreamRef {
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub model: String,
    pub weight: f64,
}

/// Resolves `models` against the resolved `providers` (and every id given).
pub fn resolve(
    ms: Vec<RawModel>,
    providers: &[ProviderConfig],
    ids: &HashSet<String>,
    problems: &mut Vec<String>,
) -> Vec<LogicalModel> {
    let mut models = Vec::new();
    let mut names = HashSet::new();
    for (i, m) in ms.into_iter().enumerate() {
        let at = format!("models[{i}]");
        if m.name.is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        }
        if !names.insert(m.name.clone()) {
            problems.push(format!("{at}.name: duplicate logical model {:?}", m.name));
        }
        if m.upstreams.is_empty() {
            problems.push(format!("{at}.upstreams: at least one upstream is needed"));
        }
        let mut upstreams = Vec::new();
        for (j, u) in m.upstreams.into_iter().enumerate() {
            let uat = format!("{at}.upstreams[{j}]");
            let weight = u.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                problems.push(format!("{uat}.weight: must be a positive number"));
            }
            if u.model.is_empty() {
                problems.push(format!("{uat}.model: must not be empty"));
            }
            match providers.iter().position(|p| p.id == u.provider) {
                Some(provider) => upstreams.push(UpstreamRef {
                    provider,
                    model: u.model,
                    weight,
                }),
                None if ids.contains(&u.provider) => {} // that provider has its own problem
                None => problems.push(format!("{uat}.provider: unknown provider {:?}", u.provider)),
            }
        }
        if m.hedge_after_ms == Some(0) {
            problems.push(format!("{at}.hedge_after_ms: must be positive"));
        }
        if m.hedge_non_stream == Some(true) && m.hedge_after_ms.is_none() {
            problems.push(format!(
                "{at}.hedge_non_stream: hedges nothing without hedge_after_ms"
            ));
        }
        if let Some(ttl) = m.cache_ttl_seconds {
            if !(1..=super::cache::MAX_TTL_SECONDS).contains(&ttl) {
                problems.push(format!(
                    "{at}.cache_ttl_seconds: must be between 1 and {}",
                    super::cache::MAX_TTL_SECONDS
                ));
            }
        }
        models.push(LogicalModel {
            cache_ttl: m
                .cache_ttl_seconds
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            hedge_non_stream: m.hedge_non_stream.unwrap_or(false),
            hedge_after: m
                .hedge_after_ms
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            name: m.name,
            description: m.description,
            upstreams,
        });
    }
    models
}
