//! Model resolution: from the name a client asked for to an ordered list of
//! candidate upstreams (provider, upstream model).

mod runtime;
pub mod select;

pub use runtime::Runtime;

use apiproxy_store::SessionBinding;

/// One upstream that may serve a request.
#[derive(Debug, Clone, PartialEq)]
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
                    .map(|u| Candidate {
                        provider: u.provider,
                        model: u.model.clone(),
                        weight: u.weight,
                        requested: name.to_owned(),
                        logical: true,
                    })
                    .collect(),
            );
        }
        if let Some((pid, model)) = name.split_once('/') {
            if let Some(i) = self.config.provider_index(pid) {
                if !model.is_empty() {
                    let c = Candidate {
                        provider: i,
                        model: model.to_owned(),
                        weight: self.providers[i].config.weight,
                        requested: name.to_owned(),
                        logical: false,
                    };
                    return Some(if enabled(i) { vec![c] } else { Vec::new() });
                }
            }
        }
        let found: Vec<Candidate> = self
            .providers
            .iter()
            .enumerate()
            .filter(|(i, p)| enabled(*i) && p.serves(name))
            .map(|(i, p)| Candidate {
                provider: i,
                model: name.to_owned(),
                weight: p.config.weight,
                requested: name.to_owned(),
                logical: false,
            })
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// Where in `candidates` the upstream a session is bound to stands, while
    /// that upstream is healthy (stickiness gives way to a cooling upstream).
    pub fn bound_candidate(
        &self,
        candidates: &[Candidate],
        binding: &SessionBinding,
    ) -> Option<usize> {
        candidates.iter().position(|c| {
            let p = &self.providers[c.provider];
            c.requested == binding.logical_model
                && c.model == binding.model_id
                && p.id() == binding.provider_id
                && !p.health.cooling()
        })
    }

    /// Candidates for the names a request gave (`model`, then each of
    /// `models`), each name's group in weighted, health-scored random order.
    /// Returns the candidates and the names that resolved to nothing.
    pub fn candidates(&self, names: &[String]) -> (Vec<Candidate>, Vec<String>) {
        let mut out: Vec<Candidate> = Vec::new();
        let mut unknown = Vec::new();
        let mut rng = rand::thread_rng();
        for name in names {
            match self.resolve(name) {
                Some(group) => {
                    let weights: Vec<f64> = group
                        .iter()
                        .map(|c| select::score(c.weight, &self.providers[c.provider]))
                        .collect();
                    for i in select::weighted_order(&weights, &mut rng) {
                        let c = &group[i];
                        if !out
                            .iter()
                            .any(|o| o.provider == c.provider && o.model == c.model)
                        {
                            out.push(c.clone());
                        }
                    }
                }
                None => unknown.push(name.clone()),
            }
        }
        (out, unknown)
    }
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
