//! The integration suite, one test binary: every file here is a module of it, so
//! the shared helpers (`common`, `cdp`) are compiled and the binary linked once
//! rather than once per file (`autotests = false` in Cargo.toml). Each module
//! starts the real `apiproxy` binary against providers, collectors and Redis
//! servers on loopback; run one file's tests with
//! `cargo test --test integration <module>::`.

#[path = "console/cdp.rs"]
mod cdp;
mod common;

mod azure;
mod bedrock;
mod behaviours;
mod cli;
mod config_logs_deploy;
mod console;
mod console_pages;
mod cost;
mod count_tokens;
mod edge_listener;
mod fail_closed;
mod filters;
#[path = "core.rs"]
mod gateway_core;
mod h2_streams;
mod hedging;
mod keepalive;
mod keys;
mod otlp_traces;
mod outbound_proxy;
mod presets;
mod prompt_cache;
mod reasoning;
mod response_cache;
mod responses_state;
mod routing;
mod schema_budget;
mod seed_parity;
mod shared_state;
mod state_isolation;
mod stream_relay;
mod structured_output;
mod tls_listener;
mod translation;
mod upgrade_and_reload;
mod usage_reports;
mod vertex;
mod wire_api_auto;
