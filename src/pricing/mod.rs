//! What a request cost: prices per model (the built-in table of `table.rs`,
//! overridden per provider by `providers[].pricing`) applied to the usage
//! the provider reported.

pub mod budget;
mod table;

pub use table::TABLE_DATE;

use apiproxy_translate::Usage;

use crate::config::{Price, ProviderConfig};

/// The price of `model` at `provider`: the provider's own `pricing` first,
/// then the built-in table, each matched exactly and then by the name after
/// the last `/` (`openrouter`-style `openai/gpt-4o` is priced as `gpt-4o`).
/// An Azure deployment is priced as the model it serves when its own name
/// has no price.
pub fn price_of(provider: &ProviderConfig, model: &str) -> Option<Price> {
    let by_name = |model: &str| {
        let short = model.rsplit('/').next().unwrap_or(model);
        let configured = |m: &str| provider.pricing.get(m).copied();
        configured(model)
            .or_else(|| configured(short))
            .or_else(|| built_in(model))
            .or_else(|| built_in(short))
    };
    by_name(model).or_else(|| provider.deployed.get(model).and_then(|m| by_name(m)))
}

/// The built-in price of `model`, matched exactly.
pub fn built_in(model: &str) -> Option<Price> {
    table::BUILT_IN
        .iter()
        .find(|(m, _)| *m == model)
        .map(|(_, p)| *p)
}

/// Cost in USD of `usage` at `price`. Input tokens include cached ones and
/// cache writes (the IR's convention): reads are charged at the cached price
/// when the provider has one, writes at the cache-write price of their class
/// (5 minutes: `cache_write`, default 1.25 × input; one hour:
/// `cache_write_1h`, default 2 × input, as Anthropic bills them).
pub fn cost_usd(price: &Price, usage: &Usage) -> f64 {
    let cached = usage
        .cached_input_tokens
        .unwrap_or(0)
        .min(usage.input_tokens);
    let written = usage
        .cache_creation_input_tokens
        .unwrap_or(0)
        .min(usage.input_tokens - cached);
    let written_1h = usage
        .cache_creation_1h_input_tokens
        .unwrap_or(0)
        .min(written);
    let written_5m = written - written_1h;
    let fresh = usage.input_tokens - cached - written;
    let read_cost = cached as f64 * price.cached_input.unwrap_or(price.input);
    let write_cost = written_5m as f64 * price.cache_write.unwrap_or(price.input * 1.25)
        + written_1h as f64 * price.cache_write_1h.unwrap_or(price.input * 2.0);
    (fresh as f64 * price.input
        + read_cost
        + write_cost
        + usage.output_tokens as f64 * price.output)
        / 1e6
}

/// A cost as written in headers and logs: dollars with 8 decimals (enough
/// for one token of the cheapest model) and no exponent.
pub fn format_usd(cost: f64) -> String {
    Usd(cost).to_string()
}

/// A cost in USD as the gateway writes it everywhere (eight decimals),
/// written where it is formatted: no `String` of its own.
pub struct Usd(pub f64);

impl std::fmt::Display for Usd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.8}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(pricing: &str) -> ProviderConfig {
        let yaml = format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"http://127.0.0.1:1\", pricing: {pricing} }}\n"
        );
        let mut c = Config::from_yaml(&yaml, &|_| None).unwrap();
        c.providers.remove(0)
    }

    #[test]
    fn an_azure_deployment_is_priced_as_its_model() {
        let yaml = "providers:\n  - { id: az, kind: azure, base_url: \"https://r.openai.azure.com\", api_version: v1, api_keys: [k], models: [{name: gpt-4o-mini, deployment: prod-mini}, {name: gpt-4o, deployment: priced}], pricing: { priced: { input: 9, output: 9 } } }\n";
        let c = Config::from_yaml(yaml, &|_| None).unwrap();
        let p = &c.providers[0];
        assert_eq!(price_of(p, "prod-mini").unwrap().input, 0.15);
        assert_eq!(price_of(p, "priced").unwrap().input, 9.0);
        assert!(price_of(p, "unknown-deployment").is_none());
    }

    #[test]
    fn configured_price_wins_then_table_exact_then_after_last_slash() {
        let p = provider("{ gpt-4o: { input: 1, output: 2 } }");
        assert_eq!(price_of(&p, "gpt-4o").unwrap().input, 1.0);
        assert_eq!(price_of(&p, "openai/gpt-4o").unwrap().input, 1.0);
        assert_eq!(price_of(&p, "gpt-4o-mini").unwrap().input, 0.15);
        assert_eq!(price_of(&p, "openai/gpt-4o-mini").unwrap().output, 0.60);
        assert_eq!(
            price_of(&p, "anthropic/claude-sonnet-4-5").unwrap().output,
            15.0
        );
        assert!(price_of(&p, "my-finetune").is_none());
    }

    #[test]
    fn cached_tokens_cost_the_cached_price() {
        let price = built_in("gpt-4o").unwrap();
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cached_input_tokens: Some(400_000),
            ..Usage::default()
        };
        // 600k fresh at 2.50, 400k cached at 1.25, 1M out at 10.
        let c = cost_usd(&price, &u);
        assert!((c - (1.5 + 0.5 + 10.0)).abs() < 1e-9, "{c}");
        // Without a cached price every input token is charged as input.
        let plain = Price {
            input: 2.0,
            output: 0.0,
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
        };
        assert!((cost_usd(&plain, &u) - 2.0).abs() < 1e-9);
        assert_eq!(format_usd(0.000_012_5), "0.00001250");
    }

    #[test]
    fn cache_writes_cost_their_class_price() {
        // claude-sonnet-4-5: 3 in, 0.30 cached, 15 out.
        let price = built_in("claude-sonnet-4-5").unwrap();
        let u = Usage {
            // 100k fresh + 200k read + 300k written (100k of them for 1h).
            input_tokens: 600_000,
            output_tokens: 0,
            cached_input_tokens: Some(200_000),
            cache_creation_input_tokens: Some(300_000),
            cache_creation_1h_input_tokens: Some(100_000),
            ..Usage::default()
        };
        // 0.1M × 3 + 0.2M × 0.30 + 0.2M × 3.75 + 0.1M × 6.
        let want = 0.3 + 0.06 + 0.75 + 0.6;
        let c = cost_usd(&price, &u);
        assert!((c - want).abs() < 1e-9, "{c} vs {want}");
        // Configured write prices win.
        let p = provider(
            "{ m: { input: 3, output: 15, cached_input: 0.3, cache_write: 4, cache_write_1h: 5 } }",
        );
        let c = cost_usd(&price_of(&p, "m").unwrap(), &u);
        let want = 0.3 + 0.06 + 0.8 + 0.5;
        assert!((c - want).abs() < 1e-9, "{c} vs {want}");
    }
}
