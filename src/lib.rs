//! apiproxy: an AI gateway on Pingora. One stable endpoint (OpenAI,
//! Anthropic and Gemini APIs) in front of many LLM providers.
//!
//! Where things live:
//! Layers (each imports only those below it; docs/architecture.md):
//! `config` and the leaves `error`, `header_name`, `body`, `redact`, `model_name`,
//! `drain`, `control`, `applog` → `upstream`, `auth`, `pricing`, `tls`, `context`, `compat` →
//! `routing` → `metrics`, `telemetry`, `service`, `access_log`, `limits` → `proxy` →
//! `console`, `listener` → `main`.
//!
//! - `config`: the YAML file → validated runtime types.
//! - `proxy`: the Pingora service; `proxy::llm` is one request's life,
//!   `proxy::relay` carries answers (SSE translated there).
//! - `routing`: model names → scored candidate upstreams.
//! - `upstream`: providers' keys, health, catalogs, and the HTTP exchange.
//! - `body`: a client's JSON body kept as its bytes; `redact`: secrets taken
//!   out of a captured body.
//! - `listener`: client connections before Pingora's HTTP session (limits,
//!   timeouts); `drain`: finishing them on upgrade and shutdown.
//! - `service`: background work (catalog refresh, reload on SIGHUP or
//!   from the console).
//! - `telemetry`: request traces over OTLP (GenAI conventions), made and
//!   exported on a thread of their own.
//! - `applog`: this process's warn/error log lines kept for the console.
//! - `console`: the web console (`/ui/`), its JSON admin API and the
//!   in-process data it shows (traffic aggregates, recent requests, run-time keys).
//! - `limits`: rate limits (admission in one store call, token
//!   reservations, 429 and `x-ratelimit-*` headers); `context`: the
//!   snippets kept per session and who may read them. The stores themselves
//!   (embedded, Redis, Redis Cluster, Sentinel) are the `apiproxy-store` crate.
//! - The format translation itself is the `apiproxy-translate` crate.

pub mod access_log;
pub mod applog;
pub mod auth;
pub mod body;
pub mod compat;
pub mod config;
pub mod console;
pub mod context;
pub mod control;
pub mod drain;
pub mod error;
pub mod header_name;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod model_name;
pub mod pricing;
pub mod proxy;
pub mod redact;
pub mod routing;
pub mod service;
pub mod telemetry;
pub mod timer;
pub mod tls;
pub mod upstream;
