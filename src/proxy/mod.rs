//! The Pingora service. Every request is answered in `request_filter`: it
//! drives each upstream attempt itself through Pingora's connector (see
//! `docs/architecture.md` for why), so `upstream_peer` is never reached.

pub mod admin;
mod attempt;
pub mod cache;
pub mod count;
pub mod ctx;
pub mod encode;
pub mod failover;
mod hedge;
pub mod llm;
pub mod refs;
mod refusal;
pub mod relay;
pub mod request;
pub mod respond;
pub mod responses;
pub mod routes;
pub mod session;
mod trace;
mod upstream_error;
mod usage_count;

use std::sync::{Arc, OnceLock};

use apiproxy_translate::Format;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use serde_json::json;

use crate::auth;
use crate::context;
use crate::error::GatewayError;
use crate::metrics;
use crate::routing::Runtime;
use apiproxy_store::Deferred;
use apiproxy_store::LazyStore;
use ctx::{RequestCtx, ServedBy};
use respond::Headers;
use routes::Route;

/// What the layer above the proxy (the web console, `crate::console`)
/// offers it: the routes under `/ui/` and `/admin/`, and a look at each
/// finished request. Handed down to the gateway at start, so the proxy
/// never imports the console.
#[async_trait]
pub trait Console: Send + Sync {
    /// Answers a request under `/ui/` or `/admin/` (the console checks the
    /// admin key itself).
    async fn handle(
        &self,
        gw: &Gateway,
        rt: &Arc<Runtime>,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError>;

    /// Called once per generation request from the logging phase.
    fn record(&self, rt: &Runtime, ctx: &mut RequestCtx, elapsed: std::time::Duration);
}

/// The gateway: live config, shared state and the connector its attempts share.
pub struct Gateway {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub state: Arc<LazyStore>,
    /// Client keys made at run time (shared by the process's listeners).
    pub keys: Arc<auth::StoredKeys>,
    /// Failed admin authentications per address (shared likewise).
    pub admin_failures: Arc<auth::AdminFailures>,
    /// Which routes this listener serves.
    pub surface: Surface,
    /// Made by the first call of [`Gateway::connector`]: each one loads the
    /// system's CA store (1.4 MB), and a gateway that is only copied into
    /// listeners, or an admin listener that rarely reaches a provider,
    /// need not hold one.
    connector: OnceLock<Connector>,
    /// The console's routes and request records.
    pub console: Arc<dyn Console>,
    /// Request traces (`telemetry.otlp`); `None`: no tracing, no work.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

/// Which routes a listener serves: all of them, or (with
/// `server.admin_listen`) the client routes on the client listeners and the
/// admin routes on the admin listener. `/health` and `/context/{id}` are
/// served on every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    All,
    Clients,
    Admin,
}

impl Surface {
    fn serves(self, route: &Route) -> bool {
        match self {
            Surface::All => true,
            Surface::Clients => route.is_client(),
            Surface::Admin => {
                route.is_admin() || matches!(route, Route::Health | Route::Context(_))
            }
        }
    }
}

impl Gateway {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        state: Arc<LazyStore>,
        keys: Arc<auth::StoredKeys>,
        console: Arc<dyn Console>,
    ) -> Self {
        Gateway {
            runtime,
            state,
            keys,
            admin_failures: Arc::default(),
            surface: Surface::All,
            connector: OnceLock::new(),
            console,
            telemetry: None,
        }
    }

    /// The same gateway state, serving `surface` (another listener of the
    /// same process).
    pub fn serving(&self, surface: Surface) -> Gateway {
        let gw = Gateway {
            runtime: self.runtime.clone(),
            state: self.state.clone(),
            keys: self.keys.clone(),
            admin_failures: self.admin_failures.clone(),
            surface,
            connector: OnceLock::new(),
            console: self.console.clone(),
            telemetry: self.telemetry.clone(),
        };
        if surface != Surface::Admin {
            // Made now: the first client request should not wait for it.
            gw.connector();
        }
        gw
    }

    /// The connector this listener's attempts share (its connection pool).
    pub fn connector(&self) -> &Connector {
        self.connector.get_or_init(|| Connector::new(None))
    }

    /// With `telemetry.otlp`: the request's place in a trace (the
    /// client's `traceparent` joined, or a new trace).
    fn start_trace(&self, session: &Session, ctx: &mut RequestCtx, operation: &'static str) {
        if let Some(t) = &self.telemetry {
            let headers = &session.req_header().headers;
            ctx.trace = Some(Box::new(t.start(headers, operation)));
        }
    }

    /// The gate of the admin endpoints for this request.
    pub fn admin_gate<'a>(&'a self, rt: &'a Runtime, session: &Session) -> auth::AdminGate<'a> {
        auth::AdminGate {
            auth: &rt.config.auth,
            stored: &self.keys,
            failures: &self.admin_failures,
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        }
    }

    /// After the answer: settle its token and cost reservations with what
    /// it used (estimated when a served answer has no usage: see
    /// `RequestCtx::estimate_missing_usage`; a hedged race's abandoned
    /// attempt added: `RequestCtx::charge`), touch the session's binding
    /// (made or moved before the first byte: `session.rs`), remember a
    /// relayed response id for its key, keep the context snippet. All
    /// deferred: the store writes them in the background.
    async fn record_state(&self, ctx: &mut RequestCtx) {
        if ctx.reserved.is_empty() && ctx.session_id.is_none() && ctx.response_id.is_none() {
            return;
        }
        let store = self.state.store().await;
        if let Some(id) = ctx.response_id.take() {
            // The key may continue this response (proxy/refs.rs), at the
            // provider that keeps it (proxy/responses.rs).
            store.defer(Deferred::Reference {
                owner: responses::owner(ctx).to_owned(),
                id,
                provider: ctx.provider.clone(),
            });
        }
        let reserved = std::mem::take(&mut ctx.reserved);
        if !reserved.is_empty() {
            reserved.settle(store.as_ref(), ctx.charge());
        }
        let (
            Some(sid),
            Some(ServedBy {
                provider,
                model,
                api_key_index,
            }),
        ) = (ctx.session_id.clone(), ctx.served_by.take())
        else {
            return;
        };
        let serving = session::Serving {
            provider_id: &provider,
            model_id: &model,
            api_key_index,
        };
        session::touch_after_answer(store.as_ref(), ctx, serving);
        let Some(request) = ctx.context_request.take() else {
            return;
        };
        let answered = context::Answered {
            provider: &provider,
            model: &model,
            text: ctx.answer.take().unwrap_or_default(),
            usage: ctx.usage,
        };
        let max_bytes = self.runtime.load().config.context.max_entry_bytes;
        if let Some(entry) = context::entry(request, answered, max_bytes) {
            store.defer(Deferred::Context {
                session: sid,
                owner: ctx.state_owner().unwrap_or("-").to_owned(),
                entry,
            });
        }
    }
}

/// Resolves when the client has gone away (it closed the connection).
pub async fn client_gone(session: &mut Session) {
    // The request body was read whole, so this only watches for the close.
    let _ = session.as_downstream_mut().read_body_or_idle(true).await;
}

/// The client key of a generation or model-list request, by the one
/// decision in [`auth::caller`]: `Ok(None)` for an anonymous caller of a
/// gateway that needs no key; 401/503 as that decision says; 403 for an
/// admin key (it is not a client key).
pub async fn client_key<'a>(
    gw: &Gateway,
    rt: &'a Arc<Runtime>,
    session: &Session,
    ctx: &mut RequestCtx,
) -> Result<Option<auth::KeyRef<'a>>, GatewayError> {
    let req = session.req_header();
    let presented = auth::presented_key(&req.headers, req.uri.query());
    match auth::caller(&rt.config.auth, &gw.keys, presented).await {
        Ok(auth::Caller::Client(key)) => {
            ctx.client_key_name = Some(key.name.clone());
            ctx.client_key_id = Some(key.id.clone());
            if let auth::KeyRef::Stored(k) = &key {
                ctx.stored_client_key = Some(Arc::clone(k));
            }
            Ok(Some(key))
        }
        Ok(auth::Caller::Anonymous) => Ok(None),
        Ok(auth::Caller::Admin) => Err(GatewayError::forbidden(
            "an admin key is not a client key: send a client key (auth.keys or one made in the console)",
        )),
        Err(refusal) => Err(refusal.to_error()),
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    // Boxed: Pingora keeps the context in the connection's future twice
    // (argument and local), for each open stream.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::default()
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(InternalError, "every request is answered in request_filter")
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        ctx.start = std::time::Instant::now();
        metrics::INFLIGHT_REQUESTS.inc();
        ctx.inflight = true;
        let rt = self.runtime.load_full();
        if session.as_downstream().is_http2() {
            // HTTP/1 sessions get theirs from the connection layer.
            let timeout = Some(rt.config.server.write_timeout);
            session.as_downstream_mut().set_write_timeout(timeout);
        }
        let req = session.req_header();
        let mut route = routes::route(req.method.as_str(), req.uri.path());
        if !self.surface.serves(&route) {
            route = Route::NotFound;
        }
        let err_fmt = routes::error_format(req.uri.path());
        let mut headers: Headers = Vec::new();
        if !rt.config.auth.requires_key() && !matches!(route, Route::Health) {
            // A gateway that needs no key serves local tools, not web pages.
            let host = req
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.authority().map(|a| a.as_str()));
            if let Some(e) =
                auth::origin::refusal(&rt.config.server.allowed_hosts, &req.headers, host)
            {
                ctx.status = e.status;
                respond::error(session, err_fmt, &e, &headers).await?;
                return Ok(true);
            }
        }
        let result = match route {
            Route::Health => {
                let body = json!({"status": "ok"}).to_string();
                ctx.status = 200;
                respond::json(session, 200, body, &headers).await?;
                Ok(())
            }
            Route::ListModels => match client_key(self, &rt, session, ctx).await {
                Ok(key) => {
                    let body = admin::model_list(&rt, key.as_deref());
                    ctx.status = 200;
                    respond::json(session, 200, body, &headers).await?;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Route::Llm {
                format,
                path_model,
                path_stream,
            } => {
                ctx.format = Some(format);
                self.start_trace(session, ctx, trace::operation(format));
                let route = request::LlmRoute {
                    format,
                    path_model,
                    path_stream,
                };
                llm::handle(self, &rt, session, ctx, route, &mut headers).await
            }
            Route::Response(id, action) => match client_key(self, &rt, session, ctx).await {
                Ok(_) => {
                    let store = self.state.store().await;
                    let query = session.req_header().uri.query();
                    match responses::answer(store.as_ref(), ctx, &id, action, query).await {
                        Ok(body) => {
                            ctx.status = 200;
                            respond::json(session, 200, body.to_string(), &headers).await?;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            Route::CountTokens { format, path_model } => {
                ctx.format = Some(format);
                self.start_trace(session, ctx, trace::COUNT_OPERATION);
                let route = request::LlmRoute {
                    format,
                    path_model,
                    path_stream: false,
                };
                // Boxed: a count's future stays out of every generation's.
                Box::pin(count::handle(self, &rt, session, ctx, route, &mut headers)).await
            }
            Route::Context(_) | Route::Admin(_) => {
                // Boxed: the admin and console routes' futures stay out of
                // every request's.
                Box::pin(admin::handle(self, &rt, session, ctx, route)).await
            }
            Route::Console => self.console.handle(self, &rt, session, ctx).await,
            Route::NotFound => Err(GatewayError::not_found(format!(
                "no route for {} {}",
                session.req_header().method,
                session.req_header().uri.path()
            ))),
            Route::MethodNotAllowed => Err(GatewayError::client(
                405,
                format!("method {} is not allowed here", session.req_header().method),
            )),
        };
        if let Err(e) = result {
            ctx.status = e.status;
            let fmt = ctx.format.unwrap_or(err_fmt);
            respond::strip_debug(&mut headers);
            respond::error(session, fmt, &e, &headers).await?;
        }
        // Answered before its body was read whole (an early 401, 404,
        // 413, ...): bounded, then closed.
        request::finish_unread_body(session).await;
        Ok(true)
    }

    /// Pingora's own error lines carry this summary: the query is left out
    /// because Gemini SDKs send the client key as `?key=`.
    fn request_summary(&self, session: &Session, _ctx: &Box<RequestCtx>) -> String {
        summary_without_secrets(session.req_header())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        if ctx.inflight {
            metrics::INFLIGHT_REQUESTS.dec();
        }
        if ctx.inflight_stream {
            metrics::INFLIGHT_STREAMS.dec();
        }
        let elapsed = ctx.start.elapsed();
        let rt = self.runtime.load();
        // Every token generated for the client is charged to it, reported
        // or not: the metrics, the budget and the tpm see the same usage.
        ctx.estimate_missing_usage();
        let cost = ctx.cost_usd();
        if let Some(fmt) = ctx.format {
            record_llm_metrics(&rt, ctx, fmt, elapsed, cost);
            if let Some(t) = &self.telemetry {
                trace::finish(t, &rt, ctx, fmt, elapsed, cost);
            }
            if let Some(result) = ctx.cache {
                // A logical model's name: a label the config owns.
                metrics::inc(
                    &metrics::CACHE_REQUESTS,
                    &[&ctx.requested_model, result.as_str()],
                );
            }
            // A hedged race's abandoned attempt is the key's cost too (its
            // budget and tpm: `RequestCtx::charge`; here its metrics).
            if let Some(a) = &ctx.abandoned {
                a.count(&rt, ctx.client_key_label());
            }
            self.console.record(&rt, ctx, elapsed);
            self.record_state(ctx).await;
            usage_count::count(self.state.store().await.as_ref(), &rt, ctx);
        }
        if !crate::access_log::enabled() {
            return;
        }
        let req = session.req_header();
        let usage = ctx.usage.unwrap_or_default();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        crate::access_log::AccessRecord {
            method: req.method.as_str(),
            path: req.uri.path(),
            status: ctx.status,
            key: ctx.client_key_name.as_deref(),
            format: ctx.format.map(Format::as_str),
            model: &ctx.requested_model,
            provider: &ctx.provider,
            upstream_model: &ctx.upstream_model,
            attempts: ctx.attempts,
            stream: ctx.stream,
            total_ms: ms(elapsed),
            ttft_ms: ctx.first_byte.map(ms),
            overhead_ms: ms(elapsed.saturating_sub(ctx.upstream_wait)),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_input_tokens.unwrap_or(0),
            cache_write_tokens: usage.cache_creation_input_tokens.unwrap_or(0),
            cost_usd: cost,
            usage_estimated: ctx.usage_estimated,
            client_gone: ctx.client_gone,
            cache: ctx.cache.map(cache::CacheResult::as_str),
            error: e.map(|e| e.to_string()),
        }
        .write(rt.config.access_format);
    }
}

/// `METHOD /path, Host: h` — the request as Pingora's error log tells it,
/// without the query string (it may hold `?key=`).
pub fn summary_without_secrets(req: &pingora::http::RequestHeader) -> String {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    format!(
        "{} {}, Host: {}",
        req.method,
        crate::access_log::field(req.uri.path()),
        crate::access_log::field(host)
    )
}

fn record_llm_metrics(
    rt: &Runtime,
    ctx: &RequestCtx,
    fmt: Format,
    elapsed: std::time::Duration,
    cost: Option<f64>,
) {
    // Only names the configuration or a provider's catalog knows become
    // label values: a client sending made-up model names must not grow the
    // metric without bound (they count as `other`).
    let model = if ctx.provider.is_empty() && ctx.cache != Some(cache::CacheResult::Hit) {
        "-"
    } else {
        metrics::model_label(rt, &ctx.requested_model)
    };
    let upstream_model = metrics::upstream_model_label(rt, &ctx.provider, &ctx.upstream_model);
    let labels = [
        fmt.as_str(),
        model,
        &ctx.provider,
        upstream_model,
        ctx.client_key_label(),
    ];
    metrics::with_finished(labels, ctx.status, |m| {
        m.requests.inc();
        m.seconds.observe(elapsed.as_secs_f64());
        if let Some(fb) = ctx.first_byte {
            m.ttft().observe(fb.as_secs_f64());
        }
        let overhead = elapsed.saturating_sub(ctx.upstream_wait);
        m.overhead.observe(overhead.as_secs_f64());
        if let Some(u) = ctx.usage {
            let (input, output) = m.tokens();
            metrics::add_tokens(input, u.input_tokens);
            metrics::add_tokens(output, u.output_tokens);
            match cost {
                Some(c) => m.cost().inc_by(c),
                // A budgeted key never gets here (403 at admission).
                None if !ctx.provider.is_empty() => m.unpriced().inc(),
                None => {}
            }
        }
    });
}
