//! Counts each answered request into the store's usage counters per UTC day (`/admin/usage`).
//!
//! Counted: every request on an LLM route (or a token count) that reached a provider (one was chosen and
//! tried), whatever its answer: an error, or a token count, counts as a request with the tokens it reported
//! (usually none), as the request metrics count it. Refused before any provider
//! (auth, limits, budget, bad request) it is not counted here (the metrics and access log have those).
//!
//! Bounded like the metrics: the model names are the ones the configuration or a provider's catalog knows
//! (`metrics::model_label`: anything else is `other`), providers are configured ones, and keys are the
//! configured and stored client keys; so the rows of a day are at most keys × models × providers × upstream
//! models, whatever clients send.

use apiproxy_store::usage::{day_string, today, UsageAmounts, UsageDims, UsageRecord};
use apiproxy_store::{Deferred, Store};

use crate::metrics;
use crate::pricing::budget::micros;
use crate::proxy::ctx::RequestCtx;
use crate::routing::Runtime;

/// Defers the request's usage row (written in the store's background batches).
pub fn count(store: &dyn Store, rt: &Runtime, ctx: &RequestCtx) {
    if ctx.provider.is_empty() {
        return;
    }
    let mut amounts = UsageAmounts {
        requests: 1,
        cost_micros: ctx.charged_usd().map_or(0, micros),
        ..UsageAmounts::default()
    };
    // A hedged race's abandoned attempt is part of what the key used (as its budget counts it).
    let usages = [ctx.usage.as_ref(), ctx.abandoned.as_ref().map(|a| &a.usage)];
    for u in usages.into_iter().flatten() {
        amounts.input_tokens = amounts.input_tokens.saturating_add(u.input_tokens);
        amounts.output_tokens = amounts.output_tokens.saturating_add(u.output_tokens);
        amounts.cached_input_tokens = amounts
            .cached_input_tokens
            .saturating_add(u.cached_input_tokens.unwrap_or(0));
    }
    let dash = || "-".to_owned();
    let dims = UsageDims {
        key_id: ctx.client_key_id.clone().unwrap_or_else(dash),
        key_name: ctx.client_key_name.clone().unwrap_or_else(dash),
        model: metrics::model_label(rt, &ctx.requested_model).to_owned(),
        provider: ctx.provider.clone(),
        upstream_model: metrics::upstream_model_label(rt, &ctx.provider, &ctx.upstream_model)
            .to_owned(),
    };
    store.defer(Deferred::Usage(Box::new(UsageRecord {
        day: day_string(today()),
        dims,
        amounts,
    })));
}
