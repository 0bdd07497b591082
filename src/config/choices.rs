//! The keys whose value is one of a fixed set of names (`kind`, `wire_api`,
//! `key_strategy`, `access_format`, `budget_period`, `routing.scoring.mode`,
//! the filters' `client` and `provider`). Each set is written once, as its
//! type's `Named::ALL`: `apiproxy schema` lists it, `-t` checks against it
//! and names the key of a value outside it, and the admin API prints it.

use std::borrow::Cow;
use std::marker::PhantomData;

use apiproxy_translate::Format;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// A type whose values are written in the config as names.
pub trait Named: Copy + PartialEq + 'static {
    /// Every value with its name in the config.
    const ALL: &'static [(&'static str, Self)];
    /// What the schema calls the set.
    const SCHEMA_NAME: &'static str;

    /// Its name in the config.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }

    /// The value named `text`, or what is wrong with it (`"x" is not a or
    /// b`, `"x" is not one of a, b, c`); the caller adds the key path.
    fn named(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                match names.as_slice() {
                    [a, b] => format!("{text:?} is not {a} or {b}"),
                    _ => format!("{text:?} is not one of {}", names.join(", ")),
                }
            })
    }
}

/// A config value naming one of `E`'s values. It is read as any string, so
/// that `-t` reports every wrong value with its key path, all at once; the
/// schema lists the names.
pub struct Choice<E> {
    text: String,
    of: PhantomData<E>,
}

impl<E: Named> Choice<E> {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value named, or the problem (see [`Named::named`]).
    pub fn value(&self) -> Result<E, String> {
        E::named(&self.text)
    }
}

impl<E> std::fmt::Debug for Choice<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

impl<E> Clone for Choice<E> {
    fn clone(&self) -> Self {
        Choice {
            text: self.text.clone(),
            of: PhantomData,
        }
    }
}

impl<'de, E> Deserialize<'de> for Choice<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Choice {
            text: String::deserialize(d)?,
            of: PhantomData,
        })
    }
}

impl<E: Named> JsonSchema for Choice<E> {
    fn schema_name() -> Cow<'static, str> {
        E::SCHEMA_NAME.into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = E::ALL.iter().map(|(n, _)| *n).collect();
        json_schema!({ "type": "string", "enum": names })
    }
}

/// `providers[].kind`: the kind of API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Gemini,
    /// Azure OpenAI: OpenAI's wire format on Azure's paths and auth.
    Azure,
    /// AWS Bedrock's Converse API, signed with SigV4.
    Bedrock,
    /// Google Vertex AI: Gemini and Claude, each in its own wire format.
    Vertex,
}

impl Named for ProviderKind {
    const ALL: &'static [(&'static str, Self)] = &[
        ("openai", ProviderKind::OpenAi),
        ("anthropic", ProviderKind::Anthropic),
        ("gemini", ProviderKind::Gemini),
        ("azure", ProviderKind::Azure),
        ("bedrock", ProviderKind::Bedrock),
        ("vertex", ProviderKind::Vertex),
    ];
    const SCHEMA_NAME: &'static str = "ProviderKind";
}

/// What the config needs to know of each kind; the rest of a kind's API
/// is its file under `upstream/kind/`.
impl ProviderKind {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        self.name()
    }

    /// The wire format its requests are encoded in, given `wire_api`
    /// (`None`: not set); `Err` names what is wrong with `wire_api`.
    pub fn format(self, wire_api: Option<WireApi>) -> Result<Format, &'static str> {
        use ProviderKind::{Anthropic, Azure, Bedrock, Gemini, OpenAi};
        match (self, wire_api) {
            (OpenAi | Azure, None | Some(WireApi::Chat | WireApi::Auto)) => Ok(Format::OpenAiChat),
            (OpenAi | Azure, Some(WireApi::Responses)) => Ok(Format::OpenAiResponses),
            (Anthropic, None) => Ok(Format::Anthropic),
            (Gemini, None) => Ok(Format::Gemini),
            (Bedrock, None) => Ok(Format::Bedrock),
            // Gemini's unless the model is Claude (`upstream/kind/vertex.rs`).
            (ProviderKind::Vertex, None) => Ok(Format::Gemini),
            (_, Some(_)) => Err("only for kinds openai and azure"),
        }
    }

    /// Whether Responses clients go to the provider's own Responses API
    /// first (`wire_api: auto`, the default of `kind: openai`), falling
    /// back to chat translation after a 404/405 from it.
    pub fn responses_auto(self, wire_api: Option<WireApi>) -> bool {
        use ProviderKind::{Azure, OpenAi};
        matches!(
            (self, wire_api),
            (OpenAi, None) | (OpenAi | Azure, Some(WireApi::Auto))
        )
    }

    /// Statuses retried by default besides 429, 500 and 502-504: the
    /// kind's own "overloaded" answers.
    pub fn extra_retryable(self) -> &'static [u16] {
        match self {
            // Anthropic's "overloaded".
            ProviderKind::Anthropic => &[529],
            // Bedrock's throttling is a 429, its ServiceUnavailable a 503:
            // both retried by default.
            ProviderKind::OpenAi
            | ProviderKind::Gemini
            | ProviderKind::Azure
            | ProviderKind::Bedrock => &[],
            // Claude on Vertex is overloaded in Anthropic's words.
            ProviderKind::Vertex => &[529],
        }
    }
}

/// `providers[].wire_api`: which OpenAI API an `openai` or `azure`
/// provider is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireApi {
    /// Chat Completions.
    Chat,
    /// The Responses API.
    Responses,
    /// Chat Completions, but Responses clients natively to the Responses
    /// API while the provider has it (the default of `kind: openai`).
    Auto,
}

/// `auth.inspection`: who may read the inspection endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inspection {
    /// Admin keys only.
    #[default]
    Admin,
    /// Admin keys and every client key (APIProxy's token reads them).
    Clients,
}

impl Named for Inspection {
    const ALL: &'static [(&'static str, Self)] = &[
        ("admin", Inspection::Admin),
        ("clients", Inspection::Clients),
    ];
    const SCHEMA_NAME: &'static str = "Inspection";
}

impl Named for WireApi {
    const ALL: &'static [(&'static str, Self)] = &[
        ("chat", WireApi::Chat),
        ("responses", WireApi::Responses),
        ("auto", WireApi::Auto),
    ];
    const SCHEMA_NAME: &'static str = "WireApi";
}

/// `providers[].key_strategy` (and `routing.key_strategy`, its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyStrategy {
    /// Spread over the usable keys in proportion to their `weight`.
    #[default]
    RoundRobin,
    /// The first usable key until it rests or runs low, then the next.
    FillFirst,
}

impl Named for KeyStrategy {
    const ALL: &'static [(&'static str, Self)] = &[
        ("round-robin", KeyStrategy::RoundRobin),
        ("fill-first", KeyStrategy::FillFirst),
    ];
    const SCHEMA_NAME: &'static str = "KeyStrategy";
}

impl KeyStrategy {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        self.name()
    }
}

/// How access lines are written (`log.access_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// `key=value` pairs after the method, path, status and time.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Named for AccessFormat {
    const ALL: &'static [(&'static str, Self)] =
        &[("text", AccessFormat::Text), ("json", AccessFormat::Json)];
    const SCHEMA_NAME: &'static str = "AccessFormat";
}

/// How long a budget renews after (`budget_period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl Named for BudgetPeriod {
    const ALL: &'static [(&'static str, Self)] =
        &[("day", BudgetPeriod::Day), ("month", BudgetPeriod::Month)];
    const SCHEMA_NAME: &'static str = "BudgetPeriod";
}

/// How candidates are ordered (`routing.scoring.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringMode {
    /// Weight × latency, error-rate, in-flight and rate-limit factors.
    Adaptive,
    /// The configured weights alone (plain weighted random).
    Weighted,
}

impl Named for ScoringMode {
    const ALL: &'static [(&'static str, Self)] = &[
        ("adaptive", ScoringMode::Adaptive),
        ("weighted", ScoringMode::Weighted),
    ];
    const SCHEMA_NAME: &'static str = "ScoringMode";
}

/// The filters' `client` and `provider`: a wire format by its filter name.
impl Named for Format {
    const ALL: &'static [(&'static str, Self)] = &[
        ("openai", Format::OpenAiChat),
        ("responses", Format::OpenAiResponses),
        ("anthropic", Format::Anthropic),
        ("gemini", Format::Gemini),
        ("bedrock", Format::Bedrock),
        // Also accepted: the formats' own names.
        ("openai_chat", Format::OpenAiChat),
        ("chat", Format::OpenAiChat),
        ("openai_responses", Format::OpenAiResponses),
    ];
    const SCHEMA_NAME: &'static str = "FilterFormat";
}

/// Who may be answered from an entry (`cache.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheScope {
    /// Only the client key that stored it: the key's id is part of the
    /// entry's key, so one key never reads another's answer.
    #[default]
    Key,
    /// Every caller of the model.
    Global,
}

impl Named for CacheScope {
    const ALL: &'static [(&'static str, Self)] =
        &[("key", CacheScope::Key), ("global", CacheScope::Global)];
    const SCHEMA_NAME: &'static str = "CacheScope";
}

/// A known OpenAI-compatible service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    DeepSeek,
    Groq,
    Mistral,
    OpenRouter,
    Together,
    Fireworks,
    Xai,
    Ollama,
    Vllm,
}

impl Named for Preset {
    const ALL: &'static [(&'static str, Self)] = &[
        ("deepseek", Preset::DeepSeek),
        ("groq", Preset::Groq),
        ("mistral", Preset::Mistral),
        ("openrouter", Preset::OpenRouter),
        ("together", Preset::Together),
        ("fireworks", Preset::Fireworks),
        ("xai", Preset::Xai),
        ("ollama", Preset::Ollama),
        ("vllm", Preset::Vllm),
    ];
    const SCHEMA_NAME: &'static str = "Preset";
}

/// How spans are sent to the collector (`telemetry.otlp.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`/v1/traces`).
    #[default]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies (`/v1/traces`).
    HttpJson,
    /// OTLP/gRPC (`TraceService/Export`, port 4317 by convention).
    Grpc,
}

impl Named for OtlpProtocol {
    const ALL: &'static [(&'static str, Self)] = &[
        ("http/protobuf", OtlpProtocol::HttpProtobuf),
        ("http/json", OtlpProtocol::HttpJson),
        ("grpc", OtlpProtocol::Grpc),
    ];
    const SCHEMA_NAME: &'static str = "OtlpProtocol";
}

/// Which publisher's API serves a model on Vertex AI: it decides the path
/// and the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// Gemini: `publishers/google`, Gemini's wire format.
    Google,
    /// Claude: `publishers/anthropic`, Anthropic's Messages format.
    Anthropic,
}

impl Named for Publisher {
    const ALL: &'static [(&'static str, Self)] = &[
        ("google", Publisher::Google),
        ("anthropic", Publisher::Anthropic),
    ];
    const SCHEMA_NAME: &'static str = "Publisher";
}
