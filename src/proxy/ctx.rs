//! The per-request state carried between Pingora's phases.

use std::time::{Duration, Instant};

use std::sync::Arc;

use apiproxy_store::Store;
use apiproxy_translate::{Format, Usage};
use serde_json::Value;

/// The upstream that answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBy {
    pub provider: String,
    pub model: String,
    /// Index of the provider key used (`None`: a keyless provider).
    pub api_key_index: Option<usize>,
}

/// Everything one request learns on its way, read by the logging phase.
#[derive(Debug)]
pub struct RequestCtx {
    pub start: Instant,
    /// Client format of a generation request.
    pub format: Option<Format>,
    /// The name of the client key used (a label: logs, metrics, console).
    pub client_key_name: Option<String>,
    /// The id of the client key used: what its state (session bindings,
    /// context) is owned by.
    pub client_key_id: Option<String>,
    /// The provider's id of a Responses answer relayed to the client: the
    /// key may continue it (`previous_response_id`; proxy/refs.rs).
    pub response_id: Option<String>,
    /// A Responses request with `store` not false: how its answer is kept
    /// when a non-Responses upstream serves it (`proxy/responses.rs`).
    pub keep_response: Option<Box<Keep>>,
    /// The client key when it was made at run time (the console's store).
    pub stored_client_key: Option<std::sync::Arc<crate::config::ClientKey>>,
    /// The model the client asked for.
    pub requested_model: String,
    /// The upstream that answered (or was tried last).
    pub provider: String,
    pub upstream_model: String,
    pub status: u16,
    pub stream: bool,
    pub attempts: u32,
    /// Time spent waiting on upstreams (header and body reads).
    pub upstream_wait: Duration,
    /// When the first byte of the answer was written to the client.
    pub first_byte: Option<Duration>,
    pub usage: Option<Usage>,
    /// Counted in the in-flight gauges (undone in logging).
    pub inflight: bool,
    pub inflight_stream: bool,
    /// When the client was last written to (keep-alives count): a quiet
    /// stream gets a keep-alive `server.sse_keepalive_s` after it.
    pub last_write: Option<Instant>,
    /// The client left before the answer was complete.
    pub client_gone: bool,
    /// `X-Session-Id`, when given.
    pub session_id: Option<String>,
    /// The upstream that answered, for the session binding.
    pub served_by: Option<ServedBy>,
    /// The session's binding as this request knows it: read at admission
    /// (when its client key owns it), then what a claim left (`session.rs`).
    pub binding: Option<apiproxy_store::SessionBinding>,
    /// This request claimed the binding before its answer (nothing is left
    /// to write after it).
    pub binding_claimed: bool,
    /// With a session: the request snippet to keep as context.
    pub context_request: Option<serde_json::Value>,
    /// With a session: the answer's text, captured up to `capture_limit` characters.
    pub answer: Option<String>,
    pub capture_limit: usize,
    /// The price of the upstream model tried last (for the cost).
    pub price: Option<crate::config::Price>,
    /// Tokens and cost reserved at admission, settled with what the answer
    /// used.
    pub reserved: crate::limits::Reserved,
    /// The request's input tokens as estimated at admission (for
    /// [`crate::limits::estimated_usage`]).
    pub input_estimate: u64,
    /// Bytes of generated output (text, reasoning, tool calls) relayed to
    /// the client, for the usage estimate when the provider reports none.
    pub relayed_output_bytes: u64,
    /// `usage` was estimated, not reported by the provider.
    pub usage_estimated: bool,
    /// The attempt a hedged race gave up after sending it: charged too
    /// (boxed: rare, and every request's context would carry its size).
    pub abandoned: Option<Box<super::hedge::Abandoned>>,
    /// With `log.capture_bodies`: the request body, redacted and bounded,
    /// for the console's request record.
    pub captured_body: Option<String>,
    /// Each candidate tried or passed over, in order, for the console's
    /// request detail (bounded by `routing.max_attempts` and the candidates).
    pub attempt_log: Vec<AttemptLog>,
    /// Whether `attempt_log` is kept (the console collects).
    pub keep_attempt_log: bool,
    /// How the response cache served the request (a model with
    /// `cache_ttl_seconds` only).
    pub cache: Option<super::cache::CacheResult>,
    /// Records the answer for the response cache while it is relayed.
    pub cache_fill: Option<Box<super::cache::Fill>>,
    /// Its place in a trace (`telemetry.otlp`; a generation or a count).
    pub trace: Option<Box<crate::telemetry::RequestTrace>>,
    /// The output cap the client asked for (`max_tokens` or its format's
    /// name for it).
    pub max_tokens: Option<u64>,
    /// The routing score of each candidate, in routing order, with its
    /// `provider/model` (a traced request only).
    pub routing: Vec<(String, f64)>,
    /// Why the answer ended, one reason per choice, as the client was told
    /// (a traced request only; empty when unknown: an error, a stream cut
    /// short, a client that left).
    pub finish_reasons: Vec<String>,
}

/// One line of a request's attempt history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttemptLog {
    pub provider: String,
    pub model: String,
    /// `ok`, `client_gone`, `hedge_cancelled` (the side of a hedged race
    /// given up when the other answered), or the failure's outcome label (`5xx`,
    /// `timeout`, `circuit_open`, ...: `apiproxy_upstream_attempts_total`).
    pub outcome: &'static str,
    /// The upstream's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Whether a request went upstream (a passed-over candidate: not).
    pub sent: bool,
    /// From the attempt's start to its answer or failure.
    pub ms: f64,
    /// When it started (a traced request's attempt span).
    #[serde(skip)]
    pub started: Option<Instant>,
    /// The span id its `traceparent` carried (a traced request).
    #[serde(skip)]
    pub span_id: Option<opentelemetry::trace::SpanId>,
}

impl AttemptLog {
    /// The line of an attempt started at `started` (`None`: a candidate
    /// passed over) and ending now.
    pub fn new(
        provider: &str,
        model: &str,
        outcome: &'static str,
        status: Option<u16>,
        started: Option<Instant>,
    ) -> Self {
        AttemptLog {
            provider: provider.to_owned(),
            model: model.to_owned(),
            outcome,
            status,
            sent: started.is_some(),
            ms: started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
            started,
            span_id: None,
        }
    }
}

impl RequestCtx {
    /// Adds a line made earlier (an attempt that raced a hedge is noted
    /// when it ends, and joins the history once the race is over).
    pub fn push_attempt(&mut self, line: AttemptLog) {
        // A hard bound whatever the config says: a record must stay small.
        const MAX_LOGGED: usize = 32;
        if self.keep_attempt_log && self.attempt_log.len() < MAX_LOGGED {
            self.attempt_log.push(line);
        }
    }

    /// Appends answer text while capturing for the context store.
    pub fn capture(&mut self, text: &str) {
        if let Some(a) = &mut self.answer {
            let have = a.chars().count();
            if have < self.capture_limit {
                a.extend(text.chars().take(self.capture_limit - have));
            }
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            start: Instant::now(),
            format: None,
            client_key_name: None,
            client_key_id: None,
            response_id: None,
            keep_response: None,
            stored_client_key: None,
            requested_model: String::new(),
            provider: String::new(),
            upstream_model: String::new(),
            status: 0,
            stream: false,
            attempts: 0,
            upstream_wait: Duration::ZERO,
            first_byte: None,
            usage: None,
            inflight: false,
            inflight_stream: false,
            last_write: None,
            client_gone: false,
            session_id: None,
            served_by: None,
            binding: None,
            binding_claimed: false,
            context_request: None,
            answer: None,
            capture_limit: 0,
            price: None,
            reserved: Default::default(),
            input_estimate: 0,
            relayed_output_bytes: 0,
            usage_estimated: false,
            abandoned: None,
            captured_body: None,
            attempt_log: Vec::new(),
            keep_attempt_log: false,
            cache: None,
            cache_fill: None,
            trace: None,
            max_tokens: None,
            routing: Vec::new(),
            finish_reasons: Vec::new(),
        }
    }
}

impl RequestCtx {
    /// The client key that owns this request's per-client state (session
    /// bindings, context, its share of the hedge budget): the key's id,
    /// `None` on an open gateway. The one place that says what state is
    /// keyed by.
    pub fn state_owner(&self) -> Option<&str> {
        self.client_key_id.as_deref()
    }

    /// The client key's metric label (`metrics::client_key_label`); `-` without one.
    pub fn client_key_label(&self) -> &str {
        match (&self.client_key_id, &self.client_key_name) {
            (Some(id), Some(name)) => crate::metrics::client_key_label(id, name),
            _ => "-",
        }
    }

    /// A served answer (its first byte reached the client) whose provider
    /// reported no usage, or a stream cut short whose report is partial,
    /// gets a usage estimated from what was relayed
    /// ([`crate::limits::charged_usage`]): it is charged like any other.
    pub fn estimate_missing_usage(&mut self) {
        if self.cache == Some(super::cache::CacheResult::Hit) {
            // Nothing was generated for it: nothing to charge.
            return;
        }
        let (usage, estimated) = crate::limits::charged_usage(
            self.usage,
            self.first_byte.is_some(),
            self.stream && self.served_by.is_none(),
            self.input_estimate,
            self.relayed_output_bytes,
        );
        self.usage = usage;
        self.usage_estimated = estimated;
    }

    /// What the request is charged: its answer, plus after a hedged race
    /// the attempt given up (its input, at its upstream's price); `None`
    /// when neither is known. The tpm, the budget and the console all
    /// count this.
    pub fn charge(&self) -> Option<crate::limits::Charge> {
        let answer = self
            .usage
            .as_ref()
            .map(|u| crate::limits::Charge::of(u, self.price.as_ref(), self.usage_estimated));
        // The abandoned attempt's input is known from the request; it does
        // not make the answer's own usage an estimate.
        let abandoned = self
            .abandoned
            .as_ref()
            .map(|a| crate::limits::Charge::of(&a.usage, a.price.as_ref(), false));
        match (answer, abandoned) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        }
    }

    /// What the answer cost, once its usage is known and its model priced.
    pub fn cost_usd(&self) -> Option<f64> {
        Some(crate::pricing::cost_usd(
            self.price.as_ref()?,
            self.usage.as_ref()?,
        ))
    }

    /// What the request is charged: its answer's cost plus, after a hedged
    /// race, the attempt given up (`hedge::Abandoned`); `None` when neither
    /// is known. The key's budget, the console and (per upstream) the cost
    /// metric all count this, from one price table (`pricing::price_of`).
    pub fn charged_usd(&self) -> Option<f64> {
        let abandoned = self.abandoned.as_ref().and_then(|a| a.cost_usd());
        match (self.cost_usd(), abandoned) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        }
    }
}

/// What an answer is kept with, made before the request goes upstream and
/// spent by the relay when a translated answer ends (`proxy::responses`
/// makes and spends it).
pub struct Keep {
    /// The id the answer is given (`resp_` and 32 hex digits): the
    /// upstream's is neither unique across providers nor a Responses id.
    pub id: String,
    pub(super) store: Arc<dyn Store>,
    pub(super) owner: String,
    /// The request's own input items (not the expanded conversation), as
    /// the JSON text of an array.
    pub(super) input: String,
    pub(super) previous: Option<String>,
    pub(super) ttl: Duration,
    /// The whole response, once the answer is complete.
    pub(super) response: Option<Value>,
}

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keep")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::RequestCtx;

    /// Every request holds one context for its whole life, an open stream
    /// included: it stays within the allocator's 1 KiB size class (rare
    /// parts, such as a hedged race's abandoned attempt, are boxed).
    #[test]
    fn a_request_context_fits_in_a_kibibyte() {
        let size = std::mem::size_of::<RequestCtx>();
        assert!(size <= 1024, "RequestCtx is {size} bytes");
    }
}
