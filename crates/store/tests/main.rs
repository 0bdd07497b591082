//! The store's integration suite, one test binary: every file here is a module of it
//! (`autotests = false` in Cargo.toml). The Redis tests start their own `redis-server`s
//! on loopback (`apiproxy_store::testing`).

mod admission;
mod behaviour;
mod outage;
#[path = "redis.rs"]
mod redis_server;
mod response_cache;
mod runtimes;
mod topologies;
mod usage;
