//! The translation crate's integration suite, one test binary: every file here is a
//! module of it (`autotests = false` in Cargo.toml); `counting` is shared by the
//! property tests.

mod anthropic_proptest;
mod anthropic_translate;
mod conformance;
mod counting;
mod gemini_proptest;
mod gemini_translate;
mod matrix;
mod openai_chat_fixtures;
mod openai_chat_proptest;
mod responses_translate;
mod sse_proptest;
mod usage_paths;
