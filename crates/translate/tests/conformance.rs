//! The conformance table (`docs/conformance.md`), computed from the
//! translator itself: each row is one request field of one client format,
//! sent in a minimal request, decoded with `decode_request` and encoded for
//! each other provider format with `encode_request`. A cell is read off the
//! encoded body, compared with the same request without the field:
//! - **mapped**: the provider's own field for it changed;
//! - **emulated**: another field changed in its stead (a system instruction,
//!   a forced tool), or the gateway acts on it outside the body (the IR
//!   carries it to the endpoint or URL);
//! - **dropped**: the body came out exactly as if the field had not been
//!   sent (any other change no check names fails the test);
//! - **refused**: decoding or encoding failed (the gateway answers 400 with
//!   the error, which names the field; the messages are listed in the doc).
//!
//! The test renders the doc and fails when `docs/conformance.md` differs,
//! printing the new text; `UPDATE_CONFORMANCE=1` writes it instead.

use apiproxy_translate::{decode_request, encode_request, ChatRequest, Format};
use serde_json::{json, Value};

const TARGETS: [Format; 5] = [
    Format::OpenAiChat,
    Format::OpenAiResponses,
    Format::Anthropic,
    Format::Gemini,
    Format::Bedrock,
];

/// Where one concept lives in each provider format's body, in [`TARGETS`]
/// order. A check is a JSON pointer (its value changed), `ptr=json` (its
/// value is that JSON), `has:text` (the body's text contains it) or
/// `ir:name` (the decoded request carries it to the endpoint or URL).
type Checks = [&'static [&'static str]; 5];

const NONE: Checks = [&[], &[], &[], &[], &[]];
const MODEL: Checks = [
    &["/model"],
    &["/model"],
    &["/model"],
    &["ir:model"],
    &["ir:model"],
];
const SYSTEM: Checks = [
    &["/messages/0/role=\"system\""],
    &["/instructions"],
    &["/system"],
    &["/systemInstruction"],
    &["/system"],
];
const MESSAGES: Checks = [
    &["/messages"],
    &["/input"],
    &["/messages"],
    &["/contents"],
    &["/messages"],
];
const TEMPERATURE: Checks = [
    &["/temperature"],
    &["/temperature"],
    &["/temperature"],
    &["/generationConfig/temperature"],
    &["/inferenceConfig/temperature"],
];
const TOP_P: Checks = [
    &["/top_p"],
    &["/top_p"],
    &["/top_p"],
    &["/generationConfig/topP"],
    &["/inferenceConfig/topP"],
];
const TOP_K: Checks = [
    &["/top_k"],
    &["/top_k"],
    &["/top_k"],
    &["/generationConfig/topK"],
    &[],
];
const MAX_TOKENS: Checks = [
    &["/max_completion_tokens", "/max_tokens"],
    &["/max_output_tokens"],
    &["/max_tokens"],
    &["/generationConfig/maxOutputTokens"],
    &["/inferenceConfig/maxTokens"],
];
const STOP: Checks = [
    &["/stop"],
    &["/stop"],
    &["/stop_sequences"],
    &["/generationConfig/stopSequences"],
    &["/inferenceConfig/stopSequences"],
];
const TOOLS: Checks = [
    &["/tools"],
    &["/tools"],
    &["/tools"],
    &["/tools"],
    &["/toolConfig"],
];
const TOOL_CHOICE: Checks = [
    &["/tool_choice"],
    &["/tool_choice"],
    &["/tool_choice"],
    &["/toolConfig"],
    &["/toolConfig/toolChoice"],
];
const PARALLEL: Checks = [
    &["/parallel_tool_calls"],
    &["/parallel_tool_calls"],
    &["/tool_choice/disable_parallel_tool_use"],
    &[],
    &[],
];
const SCHEMA: Checks = [
    &["/response_format"],
    &["/text/format"],
    &["/output_config", "/output_format"],
    &[
        "/generationConfig/responseJsonSchema",
        "/generationConfig/responseSchema",
    ],
    &[],
];
const JSON_MODE: Checks = [
    &["/response_format"],
    &["/text/format"],
    &[],
    &["/generationConfig/responseMimeType"],
    &[],
];
/// Structured output as a forced tool (older Claude models).
const SCHEMA_TOOL: Checks = [&[], &[], &["/tool_choice"], &[], &[]];
const REASONING: Checks = [
    &["/reasoning_effort"],
    &["/reasoning"],
    &["/thinking"],
    &["/generationConfig/thinkingConfig"],
    &["/additionalModelRequestFields"],
];
const STREAM: Checks = [
    &["/stream"],
    &["/stream"],
    &["/stream"],
    &["ir:stream"],
    &["ir:stream"],
];
/// The gateway always asks a provider for usage and shows it to the client
/// when asked.
const INCLUDE_USAGE: Checks = [
    &["ir:include_usage"],
    &["ir:include_usage"],
    &["ir:include_usage"],
    &["ir:include_usage"],
    &["ir:include_usage"],
];
const USER: Checks = [&["/user"], &["/user"], &["/metadata/user_id"], &[], &[]];
const METADATA: Checks = [&["/metadata"], &["/metadata"], &["/metadata"], &[], &[]];
const SEED: Checks = [
    &["/seed"],
    &["/seed"],
    &[],
    &["/generationConfig/seed"],
    &[],
];
const PRESENCE: Checks = [
    &["/presence_penalty"],
    &[],
    &[],
    &["/generationConfig/presencePenalty"],
    &[],
];
const FREQUENCY: Checks = [
    &["/frequency_penalty"],
    &[],
    &[],
    &["/generationConfig/frequencyPenalty"],
    &[],
];
const LOGPROBS: Checks = [
    &["/logprobs"],
    &["/top_logprobs"],
    &[],
    &["/generationConfig/responseLogprobs"],
    &[],
];
const CANDIDATES: Checks = [
    &["/n"],
    &[],
    &[],
    &["/generationConfig/candidateCount"],
    &[],
];
const IMAGES: Checks = [
    &["has:\"image_url\""],
    &["has:\"input_image\""],
    &["has:\"type\":\"image\""],
    &["has:\"fileData\"", "has:\"inlineData\""],
    &["has:\"image\":"],
];
const CACHE: Checks = [
    &[],
    &[],
    &["has:\"cache_control\""],
    &[],
    &["has:\"cachePoint\""],
];
const PREVIOUS: Checks = [&[], &["/previous_response_id"], &[], &[], &[]];
/// An assistant's tool call and its result in the history.
const TOOL_TURNS: Checks = [
    &["has:\"tool_calls\""],
    &["has:\"function_call_output\""],
    &["has:\"tool_result\""],
    &["has:\"functionResponse\""],
    &["has:\"toolResult\""],
];
const SUMMARY: Checks = [&[], &["/reasoning/summary"], &[], &[], &[]];
const SERVICE_TIER: Checks = [
    &["/service_tier"],
    &["/service_tier"],
    &["/service_tier"],
    &[],
    &[],
];
const CACHE_KEY: Checks = [
    &["/prompt_cache_key"],
    &["/prompt_cache_key"],
    &[],
    &[],
    &[],
];
const STORE: Checks = [&["/store"], &["/store"], &[], &[], &[]];
const SAFETY: Checks = [&[], &[], &[], &["/safetySettings"], &[]];

/// One request field of one client format.
struct Row {
    client: Format,
    field: &'static str,
    /// Top-level keys set in the base request for both sides of the
    /// comparison (tools for `tool_choice`, an older model).
    base: Value,
    /// Top-level keys the row's request sets on top of `base`.
    with: Value,
    native: Checks,
    emulated: Checks,
    note: &'static str,
}

fn row(client: Format, field: &'static str, with: Value, native: Checks) -> Row {
    Row {
        client,
        field,
        base: json!({}),
        with,
        native,
        emulated: NONE,
        note: "",
    }
}

impl Row {
    fn base(mut self, base: Value) -> Row {
        self.base = base;
        self
    }
    fn emulated(mut self, emulated: Checks) -> Row {
        self.emulated = emulated;
        self
    }
    fn note(mut self, note: &'static str) -> Row {
        self.note = note;
        self
    }
}

/// The smallest valid request of each client format.
fn minimal(client: Format) -> Value {
    match client {
        Format::OpenAiChat => {
            json!({"model": "base", "messages": [{"role": "user", "content": "hi"}]})
        }
        Format::OpenAiResponses => json!({"model": "base", "input": "hi"}),
        Format::Anthropic => json!({"model": "base", "max_tokens": 1000,
            "messages": [{"role": "user", "content": "hi"}]}),
        Format::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
        Format::Bedrock => unreachable!("no client speaks Bedrock's Converse"),
    }
}

fn merged(client: Format, layers: &[&Value]) -> Value {
    let mut body = minimal(client);
    for layer in layers {
        for (k, v) in layer.as_object().into_iter().flatten() {
            body[k.as_str()] = v.clone();
        }
    }
    body
}

const URL: &str = "https://example.com/cat.png";
/// A 1×1 PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
const DATA_URL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

fn chat_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}
fn responses_tools() -> Value {
    json!([{"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])
}
fn anthropic_tools() -> Value {
    json!([{"name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
}
fn gemini_tools() -> Value {
    json!([{"functionDeclarations": [{"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}])
}
fn schema() -> Value {
    json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})
}

const OLD_CLAUDE: &str = "claude-3-5-sonnet-20241022";
/// Claude on Bedrock: thinking is sent to Anthropic models only.
const BEDROCK_CLAUDE: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const BEDROCK_NOTE: &str = "with `model` a Claude on Bedrock (`us.anthropic.…`): Bedrock sends thinking to Anthropic models only";
const FORCED_TOOL: &str = "with `model` an older Claude (3.x, 4.0, 4.1): a forced tool";
const STATE_NOTE: &str = "the gateway expands it from the responses it kept before translating \
     (README \"Responses state\"); only an unknown id reaches the translator";

fn chat_rows() -> Vec<Row> {
    use Format::OpenAiChat as C;
    let tools = json!({"tools": chat_tools()});
    let json_schema = json!({"response_format": {"type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema(), "strict": true}}});
    vec![
        row(C, "model", json!({"model": "m2"}), MODEL),
        row(
            C,
            "messages (system role)",
            json!({"messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
            SYSTEM,
        ),
        row(
            C,
            "messages",
            json!({"messages": [{"role": "user", "content": "hello"}]}),
            MESSAGES,
        ),
        row(C, "temperature", json!({"temperature": 0.3}), TEMPERATURE),
        row(C, "top_p", json!({"top_p": 0.5}), TOP_P),
        row(C, "max_tokens", json!({"max_tokens": 777}), MAX_TOKENS),
        row(
            C,
            "max_completion_tokens",
            json!({"max_completion_tokens": 777}),
            MAX_TOKENS,
        ),
        row(C, "stop", json!({"stop": ["END"]}), STOP),
        row(C, "tools", tools.clone(), TOOLS),
        row(
            C,
            "tool_choice",
            json!({"tool_choice": "required"}),
            TOOL_CHOICE,
        )
        .base(tools.clone()),
        row(
            C,
            "parallel_tool_calls",
            json!({"parallel_tool_calls": false}),
            PARALLEL,
        )
        .base(tools.clone()),
        row(
            C,
            "response_format json_schema",
            json_schema.clone(),
            SCHEMA,
        ),
        row(C, "response_format json_schema", json_schema, SCHEMA)
            .base(json!({"model": OLD_CLAUDE}))
            .emulated(SCHEMA_TOOL)
            .note(FORCED_TOOL),
        row(
            C,
            "response_format json_object",
            json!({"response_format": {"type": "json_object"}}),
            JSON_MODE,
        ),
        row(
            C,
            "reasoning_effort",
            json!({"reasoning_effort": "high"}),
            REASONING,
        ),
        row(
            C,
            "reasoning_effort",
            json!({"reasoning_effort": "high"}),
            REASONING,
        )
        .base(json!({"model": BEDROCK_CLAUDE}))
        .note(BEDROCK_NOTE),
        row(C, "stream", json!({"stream": true}), STREAM),
        row(
            C,
            "stream_options.include_usage",
            json!({"stream_options": {"include_usage": true}}),
            NONE,
        )
        .base(json!({"stream": true}))
        .emulated(INCLUDE_USAGE)
        .note("the gateway always asks a provider for usage and shows it only when asked"),
        row(C, "user", json!({"user": "u-1"}), USER),
        row(C, "metadata", json!({"metadata": {"k": "v"}}), METADATA),
        row(C, "seed", json!({"seed": 7}), SEED),
        row(
            C,
            "presence_penalty",
            json!({"presence_penalty": 0.5}),
            PRESENCE,
        ),
        row(
            C,
            "frequency_penalty",
            json!({"frequency_penalty": 0.5}),
            FREQUENCY,
        ),
        row(
            C,
            "logprobs",
            json!({"logprobs": true, "top_logprobs": 2}),
            LOGPROBS,
        ),
        row(C, "n", json!({"n": 2}), CANDIDATES),
        row(
            C,
            "image_url part",
            json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": URL}}]}]}),
            IMAGES,
        ),
        row(
            C,
            "cache_control on a part",
            json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]}),
            CACHE,
        ),
        row(
            C,
            "reasoning_effort: none",
            json!({"reasoning_effort": "none"}),
            REASONING,
        ),
        row(
            C,
            "image_url part (data URL)",
            json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": DATA_URL}}]}]}),
            IMAGES,
        ),
        row(
            C,
            "service_tier",
            json!({"service_tier": "flex"}),
            SERVICE_TIER,
        ),
        row(
            C,
            "prompt_cache_key",
            json!({"prompt_cache_key": "k"}),
            CACHE_KEY,
        ),
        row(C, "tool_calls + tool message", json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}), TOOL_TURNS)
            .base(tools.clone()),
        row(C, "messages (developer role)", json!({"messages": [
            {"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
            SYSTEM),
    ]
}

fn responses_rows() -> Vec<Row> {
    use Format::OpenAiResponses as R;
    let tools = json!({"tools": responses_tools()});
    let json_schema = json!({"text": {"format": {"type": "json_schema", "name": "answer",
        "schema": schema(), "strict": true}}});
    vec![
        row(R, "model", json!({"model": "m2"}), MODEL),
        row(
            R,
            "instructions",
            json!({"instructions": "be brief"}),
            SYSTEM,
        ),
        row(R, "input", json!({"input": "hello"}), MESSAGES),
        row(R, "temperature", json!({"temperature": 0.3}), TEMPERATURE),
        row(R, "top_p", json!({"top_p": 0.5}), TOP_P),
        row(
            R,
            "max_output_tokens",
            json!({"max_output_tokens": 777}),
            MAX_TOKENS,
        ),
        row(R, "tools", tools.clone(), TOOLS),
        row(
            R,
            "tool_choice",
            json!({"tool_choice": "required"}),
            TOOL_CHOICE,
        )
        .base(tools.clone()),
        row(
            R,
            "parallel_tool_calls",
            json!({"parallel_tool_calls": false}),
            PARALLEL,
        )
        .base(tools.clone()),
        row(R, "text.format json_schema", json_schema.clone(), SCHEMA),
        row(R, "text.format json_schema", json_schema, SCHEMA)
            .base(json!({"model": OLD_CLAUDE}))
            .emulated(SCHEMA_TOOL)
            .note(FORCED_TOOL),
        row(
            R,
            "text.format json_object",
            json!({"text": {"format": {"type": "json_object"}}}),
            JSON_MODE,
        ),
        row(
            R,
            "reasoning.effort",
            json!({"reasoning": {"effort": "high"}}),
            REASONING,
        ),
        row(R, "stream", json!({"stream": true}), STREAM),
        row(R, "user", json!({"user": "u-1"}), USER),
        row(
            R,
            "safety_identifier",
            json!({"safety_identifier": "u-1"}),
            USER,
        ),
        row(R, "metadata", json!({"metadata": {"k": "v"}}), METADATA),
        row(R, "top_logprobs", json!({"top_logprobs": 2}), LOGPROBS),
        row(
            R,
            "input_image",
            json!({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this"},
            {"type": "input_image", "image_url": URL}]}]}),
            IMAGES,
        ),
        row(
            R,
            "previous_response_id",
            json!({"previous_response_id": "resp_1"}),
            PREVIOUS,
        )
        .note(STATE_NOTE),
        row(
            R,
            "reasoning.summary",
            json!({"reasoning": {"effort": "high", "summary": "auto"}}),
            SUMMARY,
        )
        .base(json!({"reasoning": {"effort": "high"}})),
        row(
            R,
            "service_tier",
            json!({"service_tier": "flex"}),
            SERVICE_TIER,
        ),
        row(
            R,
            "prompt_cache_key",
            json!({"prompt_cache_key": "k"}),
            CACHE_KEY,
        ),
        row(R, "store: false", json!({"store": false}), STORE),
        row(
            R,
            "function_call + function_call_output",
            json!({"input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                "arguments": "{\"city\":\"Oslo\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]}),
            TOOL_TURNS,
        )
        .base(tools.clone()),
    ]
}

fn anthropic_rows() -> Vec<Row> {
    use Format::Anthropic as A;
    let tools = json!({"tools": anthropic_tools()});
    let json_schema = json!({"output_config": {"format": {"type": "json_schema",
        "schema": schema()}}});
    vec![
        row(A, "model", json!({"model": "m2"}), MODEL),
        row(A, "system", json!({"system": "be brief"}), SYSTEM),
        row(
            A,
            "messages",
            json!({"messages": [{"role": "user", "content": "hello"}]}),
            MESSAGES,
        ),
        row(A, "temperature", json!({"temperature": 0.3}), TEMPERATURE),
        row(A, "top_p", json!({"top_p": 0.5}), TOP_P),
        row(A, "top_k", json!({"top_k": 5}), TOP_K),
        row(A, "max_tokens", json!({"max_tokens": 777}), MAX_TOKENS),
        row(
            A,
            "stop_sequences",
            json!({"stop_sequences": ["END"]}),
            STOP,
        ),
        row(A, "tools", tools.clone(), TOOLS),
        row(
            A,
            "tool_choice",
            json!({"tool_choice": {"type": "any"}}),
            TOOL_CHOICE,
        )
        .base(tools.clone()),
        row(
            A,
            "tool_choice.disable_parallel_tool_use",
            json!({"tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
            PARALLEL,
        )
        .base(json!({"tools": anthropic_tools(), "tool_choice": {"type": "auto"}})),
        row(A, "output_config.format", json_schema, SCHEMA),
        row(
            A,
            "thinking.budget_tokens",
            json!({"thinking": {"type": "enabled", "budget_tokens": 2048}}),
            REASONING,
        ),
        row(
            A,
            "thinking.budget_tokens",
            json!({"thinking": {"type": "enabled", "budget_tokens": 2048}}),
            REASONING,
        )
        .base(json!({"model": BEDROCK_CLAUDE}))
        .note(BEDROCK_NOTE),
        row(A, "stream", json!({"stream": true}), STREAM),
        row(
            A,
            "metadata.user_id",
            json!({"metadata": {"user_id": "u-1"}}),
            USER,
        ),
        row(
            A,
            "image block",
            json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "url", "url": URL}}]}]}),
            IMAGES,
        ),
        row(
            A,
            "cache_control",
            json!({"system": [
            {"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]}),
            CACHE,
        )
        .base(json!({"system": "be brief"})),
        row(
            A,
            "thinking: adaptive",
            json!({"thinking": {"type": "adaptive"}}),
            REASONING,
        ),
        row(
            A,
            "thinking: disabled",
            json!({"thinking": {"type": "disabled"}}),
            REASONING,
        ),
        row(
            A,
            "output_config.effort",
            json!({"output_config": {"effort": "high"}}),
            REASONING,
        ),
        row(
            A,
            "image block (base64)",
            json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                "data": PNG_B64}}]}]}),
            IMAGES,
        ),
        row(
            A,
            "service_tier",
            json!({"service_tier": "auto"}),
            SERVICE_TIER,
        ),
        row(
            A,
            "tool_use + tool_result",
            json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "content": "sunny"}]}]}),
            TOOL_TURNS,
        )
        .base(tools.clone()),
    ]
}

fn gemini_rows() -> Vec<Row> {
    use Format::Gemini as G;
    let gen = |v: Value| json!({"generationConfig": v});
    vec![
        row(
            G,
            "systemInstruction",
            json!({"systemInstruction": {"parts": [{"text": "be brief"}]}}),
            SYSTEM,
        ),
        row(
            G,
            "contents",
            json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}),
            MESSAGES,
        ),
        row(
            G,
            "generationConfig.temperature",
            gen(json!({"temperature": 0.3})),
            TEMPERATURE,
        ),
        row(G, "generationConfig.topP", gen(json!({"topP": 0.5})), TOP_P),
        row(G, "generationConfig.topK", gen(json!({"topK": 5})), TOP_K),
        row(
            G,
            "generationConfig.maxOutputTokens",
            gen(json!({"maxOutputTokens": 777})),
            MAX_TOKENS,
        ),
        row(
            G,
            "generationConfig.stopSequences",
            gen(json!({"stopSequences": ["END"]})),
            STOP,
        ),
        row(
            G,
            "tools.functionDeclarations",
            json!({"tools": gemini_tools()}),
            TOOLS,
        ),
        row(
            G,
            "toolConfig.functionCallingConfig",
            json!({"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
            TOOL_CHOICE,
        )
        .base(json!({"tools": gemini_tools()})),
        row(
            G,
            "generationConfig.responseSchema",
            gen(json!({
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"answer": {"type": "STRING"}}}})),
            SCHEMA,
        ),
        row(
            G,
            "generationConfig.responseJsonSchema",
            gen(json!({
            "responseMimeType": "application/json", "responseJsonSchema": schema()})),
            SCHEMA,
        ),
        row(
            G,
            "generationConfig.responseMimeType (JSON, no schema)",
            gen(json!({"responseMimeType": "application/json"})),
            JSON_MODE,
        ),
        row(
            G,
            "generationConfig.thinkingConfig.thinkingBudget",
            gen(json!({"thinkingConfig": {"thinkingBudget": 2048}})),
            REASONING,
        ),
        row(G, "generationConfig.seed", gen(json!({"seed": 7})), SEED),
        row(
            G,
            "generationConfig.presencePenalty",
            gen(json!({"presencePenalty": 0.5})),
            PRESENCE,
        ),
        row(
            G,
            "generationConfig.frequencyPenalty",
            gen(json!({"frequencyPenalty": 0.5})),
            FREQUENCY,
        ),
        row(
            G,
            "generationConfig.responseLogprobs",
            gen(json!({"responseLogprobs": true, "logprobs": 2})),
            LOGPROBS,
        ),
        row(
            G,
            "generationConfig.candidateCount",
            gen(json!({"candidateCount": 2})),
            CANDIDATES,
        ),
        row(
            G,
            "fileData part",
            json!({"contents": [{"role": "user", "parts": [
            {"text": "what is this"}, {"fileData": {"mimeType": "image/png", "fileUri": URL}}]}]}),
            IMAGES,
        ),
        row(
            G,
            "generationConfig.thinkingConfig.thinkingLevel",
            gen(json!({"thinkingConfig": {"thinkingLevel": "high"}})),
            REASONING,
        ),
        row(
            G,
            "inlineData part",
            json!({"contents": [{"role": "user", "parts": [
            {"text": "what is this"},
            {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]}]}),
            IMAGES,
        ),
        row(
            G,
            "safetySettings",
            json!({"safetySettings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]}),
            SAFETY,
        ),
        row(
            G,
            "functionCall + functionResponse",
            json!({"contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                "args": {"city": "Oslo"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                "response": {"result": "sunny"}}}]}]}),
            TOOL_TURNS,
        )
        .base(json!({"tools": gemini_tools()})),
    ]
}

/// One cell: the word, and the refusal message when refused.
fn classify(row: &Row, target: Format) -> (&'static str, Option<String>) {
    let idx = TARGETS.iter().position(|t| *t == target).unwrap_or(0);
    let base_body = merged(row.client, &[&row.base]);
    let body = merged(row.client, &[&row.base, &row.with]);
    let base_req = decode_request(row.client, base_body).expect("the base request decodes");
    let base_out = encode_request(target, &base_req).expect("the base request encodes");
    let req = match decode_request(row.client, body) {
        Ok(r) => r,
        Err(e) => return ("refused", Some(e.to_string())),
    };
    let out = match encode_request(target, &req) {
        Ok(o) => o,
        Err(e) => return ("refused", Some(e.to_string())),
    };
    if passes(row.native[idx], &out, &base_out, &req, &base_req) {
        ("mapped", None)
    } else if passes(row.emulated[idx], &out, &base_out, &req, &base_req) {
        ("emulated", None)
    } else if same_json(&out, &base_out) {
        ("dropped", None)
    } else {
        // The body changed where no check of the row looks: a check is
        // missing or wrong, and "dropped" would be a false claim.
        panic!(
            "{:?} `{}` → {target:?}: the body changed, but no check names how:\n{}\nwithout the field:\n{}",
            row.client,
            row.field,
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&base_out)
        )
    }
}

fn same_json(a: &[u8], b: &[u8]) -> bool {
    serde_json::from_slice::<Value>(a).ok() == serde_json::from_slice::<Value>(b).ok()
}

/// Whether any of `checks` holds of `out` against `base`.
fn passes(
    checks: &[&str],
    out: &[u8],
    base: &[u8],
    req: &ChatRequest,
    base_req: &ChatRequest,
) -> bool {
    let v: Value = serde_json::from_slice(out).expect("encoded JSON");
    let b: Value = serde_json::from_slice(base).expect("encoded JSON");
    let text = String::from_utf8_lossy(out);
    let base_text = String::from_utf8_lossy(base);
    checks.iter().any(|check| {
        if let Some(s) = check.strip_prefix("has:") {
            text.contains(s) && !base_text.contains(s)
        } else if let Some(name) = check.strip_prefix("ir:") {
            match name {
                "model" => req.model != base_req.model,
                "stream" => req.stream && !base_req.stream,
                "include_usage" => req.stream_include_usage && !base_req.stream_include_usage,
                other => panic!("unknown IR check {other}"),
            }
        } else if let Some((ptr, want)) = check.split_once('=') {
            let want: Value = serde_json::from_str(want).expect("check JSON");
            v.pointer(ptr) == Some(&want) && b.pointer(ptr) != Some(&want)
        } else {
            v.pointer(check).is_some() && v.pointer(check) != b.pointer(check)
        }
    })
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::OpenAiChat => "OpenAI Chat",
        Format::OpenAiResponses => "OpenAI Responses",
        Format::Anthropic => "Anthropic Messages",
        Format::Gemini => "Gemini",
        Format::Bedrock => "Bedrock Converse",
    }
}

const HEADER: &str = "# Request conformance

What becomes of each request field a client sends, for each provider wire
format the gateway may translate it to. Generated by
`crates/translate/tests/conformance.rs` from the translator itself (each
field in a minimal request, decoded and encoded for each provider format,
the encoded body compared with the same request without the field); the
test fails when this file differs. To regenerate:

    UPDATE_CONFORMANCE=1 cargo test -p apiproxy-translate --test integration conformance::

- **mapped**: reaches the provider in its own field for it (for Gemini the
  model is in the URL and streaming is the endpoint).
- **emulated**: reaches it in another form (a forced tool), or the gateway
  acts on it itself.
- **dropped**: silently not sent (the provider format has no such field,
  or the translator does not carry it).
- **refused**: the request is answered 400 with the message listed under
  *Refusals*, which names the field.
- **as sent**: same format on both sides: the gateway relays the client's
  own body, the model name replaced (src/proxy/encode.rs; docs/translation.md,
  *Same format*), so no field is lost.

Rows use a model name the translator treats as current (for Anthropic:
native structured outputs); a row whose note says so uses an older Claude.
Field mappings in detail: docs/translation.md.
";

fn render() -> String {
    let mut doc = String::from(HEADER);
    let mut refusals = Vec::new();
    for (client, rows) in [
        (Format::OpenAiChat, chat_rows()),
        (Format::OpenAiResponses, responses_rows()),
        (Format::Anthropic, anthropic_rows()),
        (Format::Gemini, gemini_rows()),
    ] {
        doc.push_str(&format!(
            "\n## {} clients\n\n| field |",
            format_name(client)
        ));
        for t in TARGETS {
            doc.push_str(&format!(" → {} |", format_name(t)));
        }
        doc.push_str(" note |\n|---|---|---|---|---|---|---|\n");
        for row in &rows {
            doc.push_str(&format!("| `{}` |", row.field));
            // Targets refusing this row, grouped by message.
            let mut refused: Vec<(String, Vec<&str>)> = Vec::new();
            for t in TARGETS {
                if t == client {
                    doc.push_str(" as sent |");
                    continue;
                }
                let (word, why) = classify(row, t);
                doc.push_str(&format!(" {word} |"));
                if let Some(why) = why {
                    match refused.iter_mut().find(|(m, _)| *m == why) {
                        Some((_, targets)) => targets.push(format_name(t)),
                        None => refused.push((why, vec![format_name(t)])),
                    }
                }
            }
            for (why, targets) in refused {
                refusals.push(format!(
                    "- {} `{}` → {}: {why}",
                    format_name(client),
                    row.field,
                    targets.join(", ")
                ));
            }
            doc.push_str(&format!(" {} |\n", row.note));
        }
    }
    doc.push_str("\n## Refusals\n\n");
    if refusals.is_empty() {
        doc.push_str("None.\n");
    }
    for r in refusals {
        doc.push_str(&r);
        doc.push('\n');
    }
    doc
}

#[test]
fn conformance_doc_matches_the_translator() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/conformance.md");
    let new = render();
    if std::env::var_os("UPDATE_CONFORMANCE").is_some() {
        std::fs::write(path, &new).expect("write docs/conformance.md");
        return;
    }
    let old = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        old == new,
        "docs/conformance.md is out of date; regenerate it with \
         UPDATE_CONFORMANCE=1 cargo test -p apiproxy-translate --test integration conformance::\n\
         The new text:\n{new}"
    );
}
