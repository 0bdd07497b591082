//! `providers[].preset`: OpenAI-compatible services known by name. A
//! preset gives a `kind: openai` provider its service's documented base URL
//! (an explicit `base_url` wins: a proxy in front, a local port) and the
//! service's quirks: local servers (Ollama, vLLM) take no key, the cloud
//! services need one, and OpenRouter's ranking headers come from
//! `app_url` and `app_name`.

use super::choices::{Choice, Named, Preset, ProviderKind};
use super::raw::RawProvider;

impl Preset {
    /// The base URL each service documents for OpenAI clients (the local
    /// servers' default ports).
    pub fn base_url(self) -> &'static str {
        match self {
            // DeepSeek documents the bare host; `/v1` is the default prefix.
            Preset::DeepSeek => "https://api.deepseek.com",
            Preset::Groq => "https://api.groq.com/openai/v1",
            Preset::Mistral => "https://api.mistral.ai/v1",
            Preset::OpenRouter => "https://openrouter.ai/api/v1",
            Preset::Together => "https://api.together.xyz/v1",
            Preset::Fireworks => "https://api.fireworks.ai/inference/v1",
            Preset::Xai => "https://api.x.ai/v1",
            Preset::Ollama => "http://localhost:11434/v1",
            Preset::Vllm => "http://localhost:8000/v1",
        }
    }

    /// A local server, run without keys.
    pub fn keyless(self) -> bool {
        matches!(self, Preset::Ollama | Preset::Vllm)
    }
}

/// What a provider's preset settles: its base URL and extra headers.
pub struct Resolved {
    /// `None`: neither `base_url` nor a preset (the problem is noted).
    pub base_url: Option<String>,
    pub preset: Option<Preset>,
    /// Headers the preset adds (OpenRouter's `HTTP-Referer`, `X-Title`).
    pub headers: Vec<(String, String)>,
}

/// `kind: bedrock`'s runtime endpoint in its region (a region that is no
/// region is reported by the kind's own checks).
fn bedrock_base_url(kind: ProviderKind, region: Option<&str>) -> Option<String> {
    let region = region.filter(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })?;
    (kind == ProviderKind::Bedrock)
        .then(|| format!("https://bedrock-runtime.{region}.amazonaws.com"))
}

/// Resolves `preset`, `base_url`, `app_url` and `app_name` of provider
/// `p` (at `at`); problems are pushed with their key path.
pub fn resolve(
    at: &str,
    kind: ProviderKind,
    p: &RawProvider,
    problems: &mut Vec<String>,
) -> Resolved {
    let preset = match p.preset.as_ref().map(Choice::value) {
        None => None,
        Some(Err(e)) => {
            problems.push(format!("{at}.preset: {e}"));
            None
        }
        Some(Ok(_)) if kind != ProviderKind::OpenAi => {
            problems.push(format!("{at}.preset: only for kind openai"));
            None
        }
        Some(Ok(v)) => Some(v),
    };
    let base_url = p
        .base_url
        .clone()
        .or_else(|| preset.map(|s| s.base_url().to_owned()))
        .or_else(|| bedrock_base_url(kind, p.region.as_deref()));
    if base_url.is_none() && p.preset.is_none() {
        problems.push(format!("{at}.base_url: missing (give it, or a preset)"));
    }
    if let Some(s) = preset.filter(|s| !s.keyless() && p.api_keys.is_empty()) {
        problems.push(format!(
            "{at}.api_keys: preset {} needs a key (only ollama and vllm run without)",
            s.name()
        ));
    }
    let mut headers = Vec::new();
    let ranking = [("app_url", "HTTP-Referer"), ("app_name", "X-Title")];
    for ((key, header), value) in ranking.iter().zip([&p.app_url, &p.app_name]) {
        let Some(v) = value else { continue };
        if preset != Some(Preset::OpenRouter) {
            problems.push(format!("{at}.{key}: only for preset openrouter"));
        } else if !p.headers.keys().any(|h| h.eq_ignore_ascii_case(header)) {
            // A header set under `headers` wins.
            headers.push(((*header).to_owned(), v.clone()));
        }
    }
    Resolved {
        base_url,
        preset,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_preset_fills_the_base_url_and_an_explicit_one_wins() {
        let c = Config::from_yaml(
            "providers:\n  - { id: g, kind: openai, preset: groq, api_keys: [k], models: [m] }\n  - { id: o, kind: openai, preset: ollama, base_url: 'http://127.0.0.1:9/v1', models: [m] }\n",
            &|_| None,
        )
        .unwrap();
        let g = &c.providers[0].base;
        assert_eq!(
            (g.host.as_str(), g.port, g.tls),
            ("api.groq.com", 443, true)
        );
        assert_eq!(g.path, "/openai/v1");
        let o = &c.providers[1].base;
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 9));
        assert!(c.providers[1].api_keys.is_empty());
    }

    #[test]
    fn every_preset_url_parses() {
        for (name, _) in <super::Preset as super::Named>::ALL {
            let yaml = format!(
                "providers: [{{id: p, kind: openai, preset: {name}, api_keys: [k], models: [m]}}]"
            );
            assert!(Config::from_yaml(&yaml, &|_| None).is_ok(), "{name}");
        }
    }
}
