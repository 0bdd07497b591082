//! The built-in price table: USD per million tokens.
//!
//! Source: the providers' public price pages (openai.com/api/pricing,
//! anthropic.com/pricing, ai.google.dev/gemini-api/docs/pricing), standard
//! (non-batch) tier, prompts up to 200k tokens where the price is tiered.
//! Checked: 2025-11-20. Prices change: `providers[].pricing` overrides any
//! entry, and a model missing here simply has no cost until it is priced.

use crate::config::Price;

/// The day the table was last checked against the price pages.
pub const TABLE_DATE: &str = "2025-11-20";

const fn p(input: f64, cached: f64, output: f64) -> Price {
    Price {
        input,
        output,
        cached_input: Some(cached),
        cache_write: None,
        cache_write_1h: None,
    }
}

const fn p2(input: f64, output: f64) -> Price {
    Price {
        input,
        output,
        cached_input: None,
        cache_write: None,
        cache_write_1h: None,
    }
}

/// `(model, price)`; `cached_input` is `None` where the provider does not
/// price cache reads separately (they are then charged as input).
pub(super) static BUILT_IN: &[(&str, Price)] = &[
    // OpenAI
    ("gpt-5", p(1.25, 0.125, 10.0)),
    ("gpt-5-mini", p(0.25, 0.025, 2.0)),
    ("gpt-5-nano", p(0.05, 0.005, 0.40)),
    ("gpt-5-chat-latest", p(1.25, 0.125, 10.0)),
    ("gpt-4.1", p(2.0, 0.50, 8.0)),
    ("gpt-4.1-mini", p(0.40, 0.10, 1.60)),
    ("gpt-4.1-nano", p(0.10, 0.025, 0.40)),
    ("gpt-4o", p(2.50, 1.25, 10.0)),
    ("gpt-4o-2024-11-20", p(2.50, 1.25, 10.0)),
    ("gpt-4o-2024-08-06", p(2.50, 1.25, 10.0)),
    ("gpt-4o-mini", p(0.15, 0.075, 0.60)),
    ("gpt-4o-mini-2024-07-18", p(0.15, 0.075, 0.60)),
    ("o3", p(2.0, 0.50, 8.0)),
    ("o3-mini", p(1.10, 0.55, 4.40)),
    ("o4-mini", p(1.10, 0.275, 4.40)),
    ("o1", p(15.0, 7.50, 60.0)),
    ("o1-mini", p(1.10, 0.55, 4.40)),
    ("gpt-4-turbo", p2(10.0, 30.0)),
    ("gpt-3.5-turbo", p2(0.50, 1.50)),
    // Anthropic (cache reads at a tenth of the input price)
    ("claude-opus-4-5", p(5.0, 0.50, 25.0)),
    ("claude-opus-4-5-20251101", p(5.0, 0.50, 25.0)),
    ("claude-opus-4-1", p(15.0, 1.50, 75.0)),
    ("claude-opus-4-1-20250805", p(15.0, 1.50, 75.0)),
    ("claude-opus-4-0", p(15.0, 1.50, 75.0)),
    ("claude-opus-4-20250514", p(15.0, 1.50, 75.0)),
    ("claude-sonnet-4-5", p(3.0, 0.30, 15.0)),
    ("claude-sonnet-4-5-20250929", p(3.0, 0.30, 15.0)),
    ("claude-sonnet-4-0", p(3.0, 0.30, 15.0)),
    ("claude-sonnet-4-20250514", p(3.0, 0.30, 15.0)),
    ("claude-3-7-sonnet-latest", p(3.0, 0.30, 15.0)),
    ("claude-3-7-sonnet-20250219", p(3.0, 0.30, 15.0)),
    ("claude-haiku-4-5", p(1.0, 0.10, 5.0)),
    ("claude-haiku-4-5-20251001", p(1.0, 0.10, 5.0)),
    ("claude-3-5-haiku-latest", p(0.80, 0.08, 4.0)),
    ("claude-3-5-haiku-20241022", p(0.80, 0.08, 4.0)),
    ("claude-3-haiku-20240307", p(0.25, 0.03, 1.25)),
    // Gemini
    ("gemini-3-pro-preview", p(2.0, 0.20, 12.0)),
    ("gemini-2.5-pro", p(1.25, 0.125, 10.0)),
    ("gemini-2.5-flash", p(0.30, 0.03, 2.50)),
    ("gemini-2.5-flash-lite", p(0.10, 0.01, 0.40)),
    ("gemini-2.0-flash", p(0.10, 0.025, 0.40)),
    ("gemini-2.0-flash-lite", p2(0.075, 0.30)),
];
