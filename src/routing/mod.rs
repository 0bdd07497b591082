//! Routing: from the name a client asked for to an ordered list of
//! candidate upstreams (provider, upstream model), scored (`score.rs`) on
//! what the providers' records say of each: `upstream::stats` and
//! `upstream::breaker` (latency, errors, breaker), `upstream::cooldown`
//! (keys rested by cause), `upstream::ratelimit` (the providers' own
//! rate-limit headers). Routing reads those records; it is not imported
//! by `upstream`.

pub mod hedge;
pub mod metrics;
mod runtime;
pub mod score;
pub mod select;

pub use runtime::Runtime;

use std::sync::Arc;

use apiproxy_store::SessionBinding;
use serde::Serialize;

use crate::upstream::now_ms;
use crate::upstream::stats::UpstreamStats;
use score::{Factors, ScoreInputs};

/// One upstream that may serve a request.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index into [`Runtime::providers`].
    pub provider: usize,
    /// The model name the provider knows.
    pub model: String,
    pub weight: f64,
    /// The name the client asked for (logical, `provider/model` or plain).
    pub requested: String,
    /// Whether `requested` is a logical model.
    pub logical: bool,
    /// Its score when it was ranked (`rank`; 0 before).
    pub score: f64,
    /// Routing's record of it (`Provider::stats_for`), looked up once: the
    /// request reads and writes it several times.
    pub stats: Arc<UpstreamStats>,
}

/// Model resolution is routing's part of the runtime.
impl Runtime {
    /// Every upstream that could serve `name`, unordered; `None` when the
    /// name is unknown. Order of precedence: a logical model,
    /// `provider-id/model`, then any provider whose catalog lists the name.
    pub fn resolve(&self, name: &str) -> Option<Vec<Candidate>> {
        let enabled = |i: usize| self.providers[i].config.enabled;
        if let Some(lm) = self.config.logical_model(name) {
            return Some(
                lm.upstreams
                    .iter()
                    .filter(|u| enabled(u.provider))
                    .map(|u| self.candidate(u.provider, &u.model, u.weight, name, true))
                    .collect(),
            );
        }
        // A provider's own prefix (`model_prefix`), or `<id>/`.
        let prefixed = self.providers.iter().enumerate().find_map(|(i, p)| {
            let prefix = p.config.model_prefix.as_deref()?;
            Some((i, name.strip_prefix(prefix)?))
        });
        let by_id = || {
            let (pid, model) = name.split_once('/')?;
            Some((self.config.provider_index(pid)?, model))
        };
        if let Some((i, model)) = prefixed.or_else(by_id) {
            let p = &self.providers[i];
            // An excluded model is not served under any name: on to the
            // catalogs, then 404.
            if !model.is_empty() && !p.excludes(model) {
                return Some(if enabled(i) {
                    vec![self.candidate(i, model, p.config.weight, name, false)]
                } else {
                    Vec::new()
                });
            }
        }
        let found: Vec<Candidate> = self
            .providers
            .iter()
            .enumerate()
            .filter(|(i, p)| enabled(*i) && p.serves(name))
            .map(|(i, p)| self.candidate(i, name, p.config.weight, name, false))
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// Provider `i`'s candidate for `model` (the name it is configured or
    /// asked by), with its routing record.
    fn candidate(
        &self,
        i: usize,
        model: &str,
        weight: f64,
        requested: &str,
        logical: bool,
    ) -> Candidate {
        let p = &self.providers[i];
        let model = p.upstream_model(model);
        Candidate {
            provider: i,
            stats: p.stats_for(&model),
            model,
            weight,
            requested: requested.to_owned(),
            logical,
            score: 0.0,
        }
    }

    /// Where in `candidates` the upstream a session is bound to stands,
    /// while that upstream can take a request (stickiness gives way to an
    /// open breaker or a provider whose every key is cooling down).
    pub fn bound_candidate(
        &self,
        candidates: &[Candidate],
        binding: &SessionBinding,
    ) -> Option<usize> {
        let now = now_ms();
        candidates.iter().position(|c| {
            let p = &self.providers[c.provider];
            c.requested == binding.logical_model
                && c.model == binding.model_id
                && p.id() == binding.provider_id
                && self.inputs(c, now).available()
        })
    }

    /// A failed health check counts as an upstream failure of every model
    /// routing tracks for `p` (its breakers open without clients paying).
    pub fn probe_failed(&self, p: &crate::upstream::Provider) {
        let r = &self.config.routing;
        let now = now_ms();
        for (_, s) in p.all_stats() {
            metrics::note_transition(p, s.on_failure(now, &r.scoring, &r.breaker));
        }
    }

    /// What `c`'s score is made of, now.
    pub fn inputs(&self, c: &Candidate, now: u64) -> ScoreInputs {
        let r = &self.config.routing;
        let snap = c.stats.snapshot(now, &r.scoring, &r.breaker);
        let p = &self.providers[c.provider];
        let (key_available, low, left) = p.key_outlook(r.ratelimit_reserve);
        let room = p
            .capacity
            .has_room(now, p.config.max_concurrency, p.config.max_qps)
            && p.keys_have_room(now);
        ScoreInputs::new(c.weight, &snap, key_available, left, low, room)
    }

    /// Candidates for the names a request gave (`model`, then each of
    /// `models`), each name's group in weighted random order over the
    /// candidates' scores. Candidates that cannot take a request now (open
    /// breaker, every key cooling down, no room under `max_concurrency` or
    /// `max_qps`) come after every one that can, and
    /// in `preferred_region` before the others. The proxy and
    /// `/routing/decide` both route through this.
    pub fn rank(&self, names: &[String], opts: &RankOptions) -> Ranking {
        let now = now_ms();
        let mut out: Vec<Ranked> = Vec::new();
        let mut unknown = Vec::new();
        let mut rng = rand::thread_rng();
        for name in names {
            let Some(mut group) = self.resolve(name) else {
                unknown.push(name.clone());
                continue;
            };
            group.retain(|c| {
                !opts
                    .exclude_providers
                    .iter()
                    .any(|x| x == self.providers[c.provider].id())
            });
            let inputs: Vec<ScoreInputs> = group.iter().map(|c| self.inputs(c, now)).collect();
            let scored = score::score_group(&inputs, &self.config.routing.scoring);
            let total: f64 = scored.iter().map(|s| s.0).sum();
            // One candidate (a direct model, most requests) needs no draw.
            let order = if group.len() == 1 {
                vec![0]
            } else {
                let weights: Vec<f64> = scored.iter().map(|s| s.0).collect();
                select::weighted_order(&weights, &mut rng)
            };
            // Each candidate moved out in the drawn order, not copied.
            let mut slots: Vec<Option<_>> = group
                .into_iter()
                .zip(inputs)
                .zip(scored)
                .map(Some)
                .collect();
            for i in order {
                let Some(((c, inputs), (score, factors))) = slots[i].take() else {
                    continue;
                };
                if out
                    .iter()
                    .any(|o| o.candidate.provider == c.provider && o.candidate.model == c.model)
                {
                    continue;
                }
                out.push(Ranked {
                    candidate: Candidate { score, ..c },
                    inputs,
                    factors,
                    score,
                    share: if total > 0.0 { score / total } else { 0.0 },
                });
            }
        }
        let in_region = |r: &Ranked| {
            opts.preferred_region.as_deref().is_some_and(|want| {
                self.providers[r.candidate.provider]
                    .config
                    .region
                    .as_deref()
                    == Some(want)
            })
        };
        // Stable: group order and the weighted order within survive.
        out.sort_by_key(|r| (!r.inputs.available(), !in_region(r)));
        Ranking {
            candidates: out,
            unknown,
        }
    }

    /// The candidates of `names` in routing order, and the names that
    /// resolved to nothing.
    pub fn candidates(&self, names: &[String]) -> (Vec<Candidate>, Vec<String>) {
        let r = self.rank(names, &RankOptions::default());
        (
            r.candidates.into_iter().map(|r| r.candidate).collect(),
            r.unknown,
        )
    }
}

/// What may narrow or reorder a ranking (`/routing/decide`'s options).
#[derive(Debug, Clone, Default)]
pub struct RankOptions {
    pub exclude_providers: Vec<String>,
    pub preferred_region: Option<String>,
}

/// One candidate with what its place was decided on.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    #[serde(skip)]
    pub candidate: Candidate,
    pub inputs: ScoreInputs,
    pub factors: Factors,
    pub score: f64,
    /// Its score over its group's total: its chance to come first.
    pub share: f64,
}

/// Candidates in routing order.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub candidates: Vec<Ranked>,
    /// Names that resolved to nothing.
    pub unknown: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn runtime() -> Runtime {
        let yaml = r#"
providers:
  - { id: openai, kind: openai, base_url: "http://127.0.0.1:1", models: [gpt-4o, shared] }
  - { id: claude, kind: anthropic, base_url: "http://127.0.0.1:2", models: [claude-haiku-4-5, shared] }
  - { id: off, kind: openai, base_url: "http://127.0.0.1:3", api_keys: [""], models: [shared] }
models:
  - name: fast
    upstreams:
      - { provider: openai, model: gpt-4o-mini, weight: 3 }
      - { provider: claude, model: claude-haiku-4-5, weight: 1 }
  - name: gpt-4o
    upstreams: [{ provider: claude, model: claude-sonnet-4-5 }]
"#;
        Runtime::new(Config::from_yaml(yaml, &|_| None).unwrap(), None)
    }

    #[test]
    fn resolution_order() {
        let rt = runtime();
        // A logical model wins over a catalog entry of the same name.
        let c = rt.resolve("gpt-4o").unwrap();
        assert_eq!(
            (c[0].provider, c[0].model.as_str(), c[0].logical),
            (1, "claude-sonnet-4-5", true)
        );
        let c = rt.resolve("openai/gpt-4.1").unwrap();
        assert_eq!((c[0].provider, c[0].model.as_str()), (0, "gpt-4.1"));
        let c = rt.resolve("claude-haiku-4-5").unwrap();
        assert_eq!((c.len(), c[0].provider), (1, 1));
        // The disabled provider is never a candidate.
        let c = rt.resolve("shared").unwrap();
        assert_eq!(c.iter().map(|c| c.provider).collect::<Vec<_>>(), [0, 1]);
        assert!(rt.resolve("nope").is_none());
        assert!(rt.resolve("nobody/x").is_none());
    }

    #[test]
    fn fallback_list_keeps_group_order_and_reports_unknown_names() {
        let rt = runtime();
        let names = [
            "claude-haiku-4-5".to_owned(),
            "nope".to_owned(),
            "openai/gpt-4o".to_owned(),
        ];
        let (c, unknown) = rt.candidates(&names);
        assert_eq!(unknown, ["nope"]);
        assert_eq!(
            c.iter()
                .map(|c| (c.provider, c.model.as_str()))
                .collect::<Vec<_>>(),
            [(1, "claude-haiku-4-5"), (0, "gpt-4o")]
        );
    }

    #[test]
    fn logical_model_split_follows_weights() {
        let rt = runtime();
        let names = ["fast".to_owned()];
        let first_openai = (0..4000)
            .filter(|_| rt.candidates(&names).0[0].provider == 0)
            .count();
        let share = first_openai as f64 / 4000.0;
        assert!((share - 0.75).abs() <= 0.0375, "openai share {share}");
    }
}
