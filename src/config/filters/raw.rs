//! A filter file as operators write it (strict: unknown keys are errors).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use apiproxy_translate::Format;

use crate::config::choices::Choice;

/// One file of `filters_dir`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilterFile {
    #[serde(default)]
    pub payload: RawPayload,
    #[serde(default)]
    pub headers: Vec<RawHeaderRule>,
    #[serde(default)]
    pub mask: Vec<RawMask>,
}

/// Payload rules, applied default → override → filter.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPayload {
    #[serde(default)]
    pub default: Vec<RawSetRule>,
    #[serde(default)]
    pub r#override: Vec<RawSetRule>,
    #[serde(default)]
    pub filter: Vec<RawFilterRule>,
}

/// Which requests a rule applies to; every list absent or empty matches all.
/// (Its fields are repeated in each rule: serde's `flatten` would lose
/// `deny_unknown_fields`.)
#[derive(Debug, Default)]
pub struct RawMatch {
    pub models: Option<Vec<String>>,
    pub client: Vec<Choice<Format>>,
    pub provider: Vec<Choice<Format>>,
    pub providers: Vec<String>,
}

macro_rules! matcher {
    ($($t:ty),*) => {$(
        impl $t {
            /// The rule's match fields.
            pub fn when(&mut self) -> RawMatch {
                RawMatch {
                    models: self.models.take(),
                    client: std::mem::take(&mut self.client),
                    provider: std::mem::take(&mut self.provider),
                    providers: std::mem::take(&mut self.providers),
                }
            }
        }
    )*};
}

matcher!(RawSetRule, RawFilterRule, RawHeaderRule);

/// `default` / `override`: dotted path → value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSetRule {
    /// Globs over the upstream model name or the name the client asked for.
    pub models: Option<Vec<String>>,
    /// Client formats: openai, responses, anthropic, gemini.
    #[serde(default)]
    pub client: Vec<Choice<Format>>,
    /// Provider formats.
    #[serde(default)]
    pub provider: Vec<Choice<Format>>,
    /// Provider ids.
    #[serde(default)]
    pub providers: Vec<String>,
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub params: BTreeMap<String, serde_yaml::Value>,
}

/// `filter`: dotted paths to remove.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilterRule {
    /// Globs over the upstream model name or the name the client asked for.
    pub models: Option<Vec<String>>,
    /// Client formats: openai, responses, anthropic, gemini.
    #[serde(default)]
    pub client: Vec<Choice<Format>>,
    /// Provider formats.
    #[serde(default)]
    pub provider: Vec<Choice<Format>>,
    /// Provider ids.
    #[serde(default)]
    pub providers: Vec<String>,
    pub params: Vec<String>,
}

/// Upstream header changes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRule {
    /// Globs over the upstream model name or the name the client asked for.
    pub models: Option<Vec<String>>,
    /// Client formats: openai, responses, anthropic, gemini.
    #[serde(default)]
    pub client: Vec<Choice<Format>>,
    /// Provider formats.
    #[serde(default)]
    pub provider: Vec<Choice<Format>>,
    /// Provider ids.
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

/// Browser masking for some providers (all when `providers` is absent).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMask {
    #[serde(default)]
    pub providers: Vec<String>,
    pub user_agent: Option<String>,
    pub origin: Option<String>,
    pub referer: Option<String>,
}
