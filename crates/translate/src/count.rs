//! Token counting: a client's count request read into the neutral request,
//! the count request each provider kind takes (Anthropic
//! `/v1/messages/count_tokens`, Gemini `:countTokens`), the number read
//! from a provider's answer and written in the client's shape, and a local
//! count with OpenAI's own tokenizers for providers without a count
//! endpoint (OpenAI chat models).

use serde_json::{json, Map, Value};

use crate::{body, ChatRequest, Format, Limits, TranslateError};

/// The members an Anthropic count request may have: the endpoint refuses
/// any other (`max_tokens: Extra inputs are not permitted`), so the
/// Messages body the encoder makes is cut down to these.
const ANTHROPIC_COUNT_FIELDS: [&str; 6] = [
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
];

/// Decodes a client's count request of format `client` from its bytes. Its
/// shape is the client's generation request (Anthropic: a Messages body
/// without `max_tokens`; OpenAI: a Responses body), except Gemini's, which
/// is `{"contents": [...]}` or `{"generateContentRequest": {...}}` (the
/// latter with the system instruction and tools, which count too).
pub fn decode_count_request(
    client: Format,
    bytes: &[u8],
    limits: &Limits,
) -> Result<ChatRequest, TranslateError> {
    if client != Format::Gemini {
        return crate::decode_request_bytes(client, client, bytes, limits);
    }
    let mut outer = body::Body::from_slice(bytes)?;
    match outer.obj.remove("generateContentRequest") {
        Some(inner @ Value::Object(_)) => {
            crate::decode_request_limited(Format::Gemini, inner, limits)
        }
        Some(_) => Err(TranslateError::new(
            "generateContentRequest: must be an object",
        )),
        None => crate::gemini::request_decode::decode_body(outer, limits),
    }
}

/// The count request a `target`-format provider takes for `req` (its
/// `model` is the upstream's): Anthropic's Messages body without
/// `max_tokens` and the other generation settings, Gemini's
/// `{"generateContentRequest": {"model": "models/M", ...}}` (the
/// `contents`-only form would leave out the system instruction and the
/// tools; `stream` is not part of either). OpenAI kinds are counted
/// locally ([`count_locally`]): Chat Completions has no count endpoint.
pub fn encode_count_request(
    target: Format,
    req: &ChatRequest,
    limits: &Limits,
) -> Result<Vec<u8>, TranslateError> {
    let encoded = crate::encode_request_limited(target, req, limits)?;
    let mut obj = match serde_json::from_slice::<Value>(&encoded) {
        Ok(Value::Object(o)) => o,
        _ => return Err(TranslateError::new("the encoded request is not an object")),
    };
    let out = match target {
        Format::Anthropic => {
            obj.retain(|k, _| ANTHROPIC_COUNT_FIELDS.contains(&k.as_str()));
            Value::Object(obj)
        }
        Format::Gemini => {
            let mut inner = Map::new();
            inner.insert(
                "model".into(),
                Value::String(format!("models/{}", req.model)),
            );
            inner.extend(obj);
            json!({ "generateContentRequest": inner })
        }
        Format::OpenAiChat | Format::OpenAiResponses | Format::Bedrock => {
            return Err(TranslateError::new(
                "OpenAI-kind and Bedrock providers are counted locally (count_locally)",
            ))
        }
    };
    serde_json::to_vec(&out).map_err(|e| TranslateError::new(e.to_string()))
}

/// The input tokens a `upstream`-format provider's count answer gives:
/// Anthropic's and OpenAI's `input_tokens`, Gemini's `totalTokens`.
/// `None` when the answer holds no such number (never taken as 0).
pub fn count_of_answer(upstream: Format, body: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let field = match upstream {
        Format::Gemini => "totalTokens",
        Format::Bedrock => "inputTokens",
        _ => "input_tokens",
    };
    v.get(field)?.as_u64()
}

/// The count answer a `client`-format client expects: Anthropic
/// `{"input_tokens": N}`, Gemini `{"totalTokens": N}`, OpenAI
/// `{"object": "response.input_tokens", "input_tokens": N}`.
pub fn count_answer(client: Format, tokens: u64) -> Vec<u8> {
    let v = match client {
        Format::Anthropic => json!({ "input_tokens": tokens }),
        Format::Gemini => json!({ "totalTokens": tokens }),
        // Bedrock's CountTokens answer.
        Format::Bedrock => json!({ "inputTokens": tokens }),
        Format::OpenAiChat | Format::OpenAiResponses => {
            json!({ "object": "response.input_tokens", "input_tokens": tokens })
        }
    };
    v.to_string().into_bytes()
}

/// OpenAI's tokenizer families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-5, the o-series (and any model not known).
    O200kBase,
    /// GPT-4 and GPT-3.5.
    Cl100kBase,
}

impl Encoding {
    /// The encoding of `model`: cl100k_base where tiktoken knows the model
    /// (or its prefix) as one of that family, o200k_base otherwise (every
    /// current OpenAI model uses it).
    pub fn of_model(model: &str) -> Encoding {
        // A provider-prefixed name (`openai/gpt-4`) is read by its last part.
        let name = model.rsplit('/').next().unwrap_or(model);
        match tiktoken_rs::tokenizer::get_tokenizer(name) {
            Some(tiktoken_rs::tokenizer::Tokenizer::Cl100kBase) => Encoding::Cl100kBase,
            _ => Encoding::O200kBase,
        }
    }

    /// The tokens of `text`, as ordinary text (a special token's spelling
    /// in a message is text, as the API treats it).
    pub fn count(self, text: &str) -> u64 {
        let bpe = match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        };
        bpe.encode_ordinary(text).len() as u64
    }
}

/// Tokens of each message's framing (`<|start|>role<|message|>...<|end|>`),
/// as OpenAI's cookbook counts them for current chat models.
const TOKENS_PER_MESSAGE: u64 = 3;
/// A message's `name` costs one token besides its own.
const TOKENS_PER_NAME: u64 = 1;
/// The reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING: u64 = 3;
/// Each tool call's framing beyond its name and arguments (the cookbook's
/// heuristic).
const TOKENS_PER_TOOL_CALL: u64 = 1;
/// An image's tokens at OpenAI's low detail (its size is not looked at:
/// high detail costs more, so this is a floor).
const TOKENS_PER_IMAGE: u64 = 85;

/// Counts `req`'s input tokens for an OpenAI chat model without asking it:
/// the Chat Completions body the gateway would send (system and tool
/// results as their own messages), each message's text with
/// [`Encoding::of_model`]'s tokenizer plus the framing OpenAI documents
/// (3 per message, 1 per name, 3 priming the reply), each tool call's name
/// and arguments, images at their low-detail cost, and the tool
/// definitions as their JSON. An estimate: OpenAI does not publish how it
/// renders tools.
pub fn count_locally(req: &ChatRequest) -> Result<u64, TranslateError> {
    let enc = Encoding::of_model(&req.model);
    let body = crate::encode_request(Format::OpenAiChat, req)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| TranslateError::new(e.to_string()))?;
    Ok(count_chat_body(enc, &body))
}

/// [`count_locally`]'s count of a Chat Completions body.
fn count_chat_body(enc: Encoding, body: &Value) -> u64 {
    let mut n = REPLY_PRIMING;
    let messages = body.get("messages").and_then(Value::as_array);
    for m in messages.into_iter().flatten() {
        n += TOKENS_PER_MESSAGE;
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            n += enc.count(role);
        }
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            n += enc.count(name) + TOKENS_PER_NAME;
        }
        n += count_content(enc, m.get("content"));
        for call in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let f = call.get("function");
            let text = |k: &str| {
                f.and_then(|f| f.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            };
            n += enc.count(text("name")) + enc.count(text("arguments")) + TOKENS_PER_TOOL_CALL;
        }
    }
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        n += enc.count(&tools.to_string());
    }
    n
}

/// A message's `content`: a string, or parts (text, images).
fn count_content(enc: Encoding, content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => enc.count(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("image_url") => TOKENS_PER_IMAGE,
                _ => p
                    .get("text")
                    .and_then(Value::as_str)
                    .map_or(0, |t| enc.count(t)),
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizers_match_published_counts() {
        // tiktoken's own examples: "hello world" is 2 tokens in both, and
        // the cookbook's "tiktoken is great!" is 6 in cl100k_base.
        assert_eq!(Encoding::O200kBase.count("hello world"), 2);
        assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
        assert_eq!(Encoding::Cl100kBase.count("tiktoken is great!"), 6);
        assert_eq!(Encoding::O200kBase.count(""), 0);
        // Special tokens in client text are text, never a panic.
        assert!(Encoding::O200kBase.count("<|endoftext|>") > 1);
    }

    #[test]
    fn models_pick_their_family() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "o3-mini",
            "gpt-5",
            "o1",
            "mystery",
            "openai/gpt-4o",
        ] {
            assert_eq!(Encoding::of_model(m), Encoding::O200kBase, "{m}");
        }
        for m in ["gpt-4", "gpt-4-0613", "gpt-3.5-turbo", "openai/gpt-4"] {
            assert_eq!(Encoding::of_model(m), Encoding::Cl100kBase, "{m}");
        }
    }

    #[test]
    fn the_cookbook_example_counts_as_published() {
        // OpenAI's cookbook ("How to count tokens with tiktoken") counts this
        // conversation at 129 prompt tokens for gpt-4-0613 (cl100k_base),
        // the number the API reported.
        let body = json!({"model": "gpt-4-0613", "messages": [
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ]});
        assert_eq!(count_chat_body(Encoding::Cl100kBase, &body), 129);
        // And at 124 for gpt-4o and gpt-4o-mini (o200k_base).
        assert_eq!(count_chat_body(Encoding::O200kBase, &body), 124);
    }

    #[test]
    fn a_count_is_framing_plus_text() {
        let req = crate::decode_request(
            Format::Anthropic,
            json!({"model": "gpt-4o", "system": "Be brief.",
                   "messages": [{"role": "user", "content": "hello world"}]}),
        )
        .expect("decoded");
        // system: 3 + "system" (1) + "Be brief." (3); user: 3 + "user" (1)
        // + "hello world" (2); priming 3.
        let sys = 3 + Encoding::O200kBase.count("system") + Encoding::O200kBase.count("Be brief.");
        let user = 3 + Encoding::O200kBase.count("user") + 2;
        assert_eq!(count_locally(&req).expect("count"), sys + user + 3);
    }

    #[test]
    fn anthropic_count_requests_carry_no_generation_settings() {
        let req = decode_count_request(
            Format::OpenAiResponses,
            br#"{"model":"m","instructions":"sys","max_output_tokens":50,"temperature":0.2,
                 "input":"hi","tools":[{"type":"function","name":"f","parameters":{"type":"object"}}]}"#,
            &Limits::default(),
        )
        .expect("decoded");
        let out: Value = serde_json::from_slice(
            &encode_count_request(Format::Anthropic, &req, &Limits::default()).expect("encoded"),
        )
        .expect("json");
        let keys: Vec<&str> = out
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            !keys.contains(&"max_tokens") && !keys.contains(&"temperature"),
            "{out}"
        );
        assert_eq!(out["model"], "m");
        assert_eq!(out["system"][0]["text"], "sys");
        assert_eq!(out["tools"][0]["name"], "f");
    }

    #[test]
    fn gemini_count_requests_name_the_model_and_keep_system_and_tools() {
        for body in [
            br#"{"generateContentRequest":{"model":"models/x","systemInstruction":{"parts":[{"text":"sys"}]},"contents":[{"role":"user","parts":[{"text":"hi"}]}]}}"#.as_slice(),
            br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#.as_slice(),
        ] {
            let mut req = decode_count_request(Format::Gemini, body, &Limits::default()).expect("decoded");
            req.model = "gemini-2.5-flash".into();
            let out: Value = serde_json::from_slice(
                &encode_count_request(Format::Gemini, &req, &Limits::default()).expect("encoded"),
            )
            .expect("json");
            let inner = &out["generateContentRequest"];
            assert_eq!(inner["model"], "models/gemini-2.5-flash");
            assert_eq!(inner["contents"][0]["parts"][0]["text"], "hi");
            assert_eq!(out.as_object().map(Map::len), Some(1));
        }
        assert!(decode_count_request(
            Format::Gemini,
            br#"{"generateContentRequest":3}"#,
            &Limits::default()
        )
        .is_err());
    }

    #[test]
    fn answers_read_and_written_in_each_shape() {
        assert_eq!(
            count_of_answer(Format::Anthropic, br#"{"input_tokens":14}"#),
            Some(14)
        );
        assert_eq!(
            count_of_answer(
                Format::Gemini,
                br#"{"totalTokens":9,"promptTokensDetails":[]}"#
            ),
            Some(9)
        );
        assert_eq!(count_of_answer(Format::Gemini, br#"{}"#), None);
        assert_eq!(count_of_answer(Format::Anthropic, b"not json"), None);
        assert_eq!(count_answer(Format::Anthropic, 5), br#"{"input_tokens":5}"#);
        assert_eq!(count_answer(Format::Gemini, 5), br#"{"totalTokens":5}"#);
        let openai: Value =
            serde_json::from_slice(&count_answer(Format::OpenAiResponses, 5)).expect("json");
        assert_eq!(
            openai,
            json!({"object": "response.input_tokens", "input_tokens": 5})
        );
    }
}
