//! IR → the Converse request body. The model is in the URL path, never in
//! the body; the stream flag is the path too (`/converse-stream`).

use serde_json::{json, Map, Value};

use crate::{
    CacheAt, CacheMark, ChatRequest, ContentPart, ImageSource, Message, ResponseFormat, Role,
    ToolChoice, TranslateError,
};

fn err(msg: impl Into<String>) -> TranslateError {
    TranslateError::new(msg)
}

/// A cache breakpoint as Converse writes it: a block of its own after the
/// cached one.
fn cache_point() -> Value {
    json!({"cachePoint": {"type": "default"}})
}

fn marked(marks: &[CacheMark], at: CacheAt) -> bool {
    marks.iter().any(|m| m.at == at)
}

/// Encodes the body of `POST /model/{modelId}/converse` (or
/// `/converse-stream`: the same body).
pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let mut body = Map::new();
    let mut system = Vec::with_capacity(req.system.len());
    for (i, part) in req.system.iter().enumerate() {
        match part {
            ContentPart::Text { text } if text.is_empty() => {}
            ContentPart::Text { text } => system.push(json!({ "text": text })),
            _ => {
                return Err(err(format!(
                    "system[{i}]: Bedrock accepts only text in the system prompt"
                )))
            }
        }
        if marked(&req.cache, CacheAt::System(i)) && !system.is_empty() {
            system.push(cache_point());
        }
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), encode_messages(req)?);
    let budget = claude_thinking(req);
    let mut inference = inference_config(req);
    if let Some(b) = budget {
        // As on Anthropic's API: thinking counts inside the limit, and
        // Claude refuses temperature changes while thinking.
        let max = crate::anthropic::max_tokens_of(req, Some(b));
        inference.insert("maxTokens".into(), json!(max));
        inference.remove("temperature");
        if req.top_p.is_some_and(|p| p < 0.95) {
            inference.remove("topP");
        }
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tools) = tool_config(req) {
        body.insert("toolConfig".into(), tools);
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(_) => {
            return Err(err(
                "response_format: structured output is not supported on Bedrock's Converse API \
                 through this gateway; ask for JSON in the prompt instead",
            ))
        }
    }
    if let Some(budget) = budget {
        body.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        );
    }
    serde_json::to_vec(&Value::Object(body)).map_err(|e| err(format!("encoding request: {e}")))
}

/// The thinking budget for Claude's extended thinking, mapped as for
/// Anthropic's API (effort levels to budgets). It is a model-specific field
/// on Converse (`additionalModelRequestFields`), which other models refuse:
/// sent only to Anthropic models (ids and inference profiles containing
/// `anthropic.`), and never with a forced tool (Claude refuses that).
fn claude_thinking(req: &ChatRequest) -> Option<u64> {
    if !req.model.contains("anthropic.") {
        return None;
    }
    if matches!(
        req.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Function(_))
    ) {
        return None;
    }
    crate::anthropic::thinking_budget(req.reasoning.as_ref()?).flatten()
}

fn inference_config(req: &ChatRequest) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(n) = req.max_tokens {
        m.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        // Converse takes 0..=1 (the models on it do).
        m.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        m.insert("topP".into(), json!(p));
    }
    let stops: Vec<&str> = req
        .stop
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !stops.is_empty() {
        m.insert("stopSequences".into(), json!(stops));
    }
    m
}

/// True when some turn carries a tool call or result: Converse then
/// requires a `toolConfig` even when the client declared no tools.
fn history_has_tools(req: &ChatRequest) -> bool {
    req.messages.iter().any(|m| {
        m.content.iter().any(|p| {
            matches!(
                p,
                ContentPart::ToolCall { .. } | ContentPart::ToolResult { .. }
            )
        })
    })
}

/// `toolConfig`: the tools and the choice. Converse has no "none": the
/// tools are then left out, unless the history needs them declared.
fn tool_config(req: &ChatRequest) -> Option<Value> {
    if req.tools.is_empty() {
        return None;
    }
    let none = req.tool_choice == Some(ToolChoice::None);
    if none && !history_has_tools(req) {
        return None;
    }
    let mut tools: Vec<Value> = Vec::with_capacity(req.tools.len() + 1);
    for (i, t) in req.tools.iter().enumerate() {
        let mut spec = Map::new();
        spec.insert("name".into(), json!(t.name));
        if let Some(d) = t.description.as_deref().filter(|d| !d.is_empty()) {
            spec.insert("description".into(), json!(d));
        }
        let schema = if t.parameters.is_object() {
            t.parameters.clone()
        } else {
            json!({"type": "object", "properties": {}})
        };
        spec.insert("inputSchema".into(), json!({ "json": schema }));
        tools.push(json!({ "toolSpec": spec }));
        if marked(&req.cache, CacheAt::Tool(i)) {
            tools.push(cache_point());
        }
    }
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    let choice = match &req.tool_choice {
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Function(name)) => Some(json!({"tool": {"name": name}})),
        Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
        Some(ToolChoice::None) | None => None,
    };
    if let Some(c) = choice {
        config.insert("toolChoice".into(), c);
    }
    Some(Value::Object(config))
}

/// Converse's tool-use ids match `[a-zA-Z0-9_-]+`, at most 64 characters;
/// other providers' ids are mapped onto that (the same way on the call and
/// on its result, so they still pair).
fn tool_id(id: &str) -> String {
    let mut out: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out.is_empty() {
        out.push_str("call");
    }
    out
}

/// The turns; consecutive turns of one role are merged (Converse wants
/// them alternating), and tool results come first in their turn.
fn encode_messages(req: &ChatRequest) -> Result<Value, TranslateError> {
    let mut out: Vec<(Role, Vec<Value>)> = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let mut content = encode_turn(req, i, m)?;
        if content.is_empty() {
            // Converse refuses empty turns.
            continue;
        }
        match out.last_mut() {
            Some((role, prev)) if *role == m.role => prev.append(&mut content),
            _ => out.push((m.role, content)),
        }
    }
    for (_, content) in &mut out {
        // Stable: keeps the order within results and within the rest.
        content.sort_by_key(|b| b.get("toolResult").is_none());
    }
    Ok(Value::Array(
        out.into_iter()
            .map(|(role, content)| {
                let role = match role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({"role": role, "content": content})
            })
            .collect(),
    ))
}

fn encode_turn(req: &ChatRequest, i: usize, m: &Message) -> Result<Vec<Value>, TranslateError> {
    let mut content = Vec::with_capacity(m.content.len());
    for (j, part) in m.content.iter().enumerate() {
        if let Some(block) = encode_part(part, m.role, i)? {
            content.push(block);
        }
        let at = CacheAt::Part {
            message: i,
            part: j,
        };
        if marked(&req.cache, at) && !content.is_empty() {
            content.push(cache_point());
        }
    }
    Ok(content)
}

fn image_block(source: &ImageSource, at: &str) -> Result<Value, TranslateError> {
    match source {
        ImageSource::Base64 { media_type, data } => {
            let format = match media_type.as_str() {
                "image/png" => "png",
                "image/jpeg" | "image/jpg" => "jpeg",
                "image/gif" => "gif",
                "image/webp" => "webp",
                other => {
                    return Err(err(format!(
                        "{at}: Bedrock takes png, jpeg, gif or webp images, not {other}"
                    )))
                }
            };
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        ImageSource::Url { .. } => Err(err(format!(
            "{at}: Bedrock takes only inline (base64) images, not URLs"
        ))),
    }
}

/// Tool call arguments (JSON text) → the `input` object Converse wants.
fn tool_input(id: &str, arguments: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(Value::Null) => Ok(Value::Object(Map::new())),
        _ => Err(err(format!(
            "tool call `{id}`: arguments are not a JSON object"
        ))),
    }
}

fn encode_part(part: &ContentPart, role: Role, i: usize) -> Result<Option<Value>, TranslateError> {
    let at = format!("messages[{i}]");
    Ok(Some(match part {
        ContentPart::Text { text } if text.is_empty() => return Ok(None),
        ContentPart::Text { text } => json!({ "text": text }),
        ContentPart::Image { source } => image_block(source, &at)?,
        ContentPart::ToolCall {
            id,
            name,
            arguments,
        } => {
            if role != Role::Assistant {
                return Err(err(format!(
                    "{at}: a tool call can only appear in an assistant message"
                )));
            }
            json!({"toolUse": {"toolUseId": tool_id(id), "name": name, "input": tool_input(id, arguments)?}})
        }
        ContentPart::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } => {
            if role != Role::User {
                return Err(err(format!(
                    "{at}: a tool result can only appear in a user message"
                )));
            }
            let mut blocks = Vec::with_capacity(content.len());
            for p in content {
                match p {
                    ContentPart::Text { text } if !text.is_empty() => {
                        blocks.push(json!({ "text": text }))
                    }
                    ContentPart::Image { source } => blocks.push(image_block(source, &at)?),
                    _ => {}
                }
            }
            if blocks.is_empty() {
                // Converse refuses a result without content.
                blocks.push(json!({"text": ""}));
            }
            let status = if *is_error { "error" } else { "success" };
            json!({"toolResult": {"toolUseId": tool_id(call_id), "content": blocks, "status": status}})
        }
        // Only Bedrock's own signed reasoning goes back (the signature
        // module leaves other kinds' unsigned).
        ContentPart::Thinking { text, signature } => match signature.as_deref() {
            Some(sig) if !sig.is_empty() && role == Role::Assistant => json!({
                "reasoningContent": {"reasoningText": {"text": text, "signature": sig}}
            }),
            _ => return Ok(None),
        },
        ContentPart::RedactedThinking { data } if role == Role::Assistant => {
            json!({"reasoningContent": {"redactedContent": data}})
        }
        ContentPart::RedactedThinking { .. } => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Reasoning, Tool};

    fn encoded(req: &ChatRequest) -> Value {
        serde_json::from_slice(&encode_request(req).unwrap()).unwrap()
    }

    #[test]
    fn converse_body_has_every_part() {
        let req = ChatRequest {
            model: "anthropic.claude-3-7-sonnet-20250219-v1:0".into(),
            system: vec![ContentPart::Text {
                text: "be brief".into(),
            }],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        ContentPart::Text {
                            text: "weather?".into(),
                        },
                        ContentPart::Image {
                            source: ImageSource::Base64 {
                                media_type: "image/png".into(),
                                data: "iVBO".into(),
                            },
                        },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![ContentPart::ToolCall {
                        id: "call.1".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentPart::ToolResult {
                        call_id: "call.1".into(),
                        name: None,
                        content: vec![ContentPart::Text {
                            text: "sunny".into(),
                        }],
                        is_error: false,
                    }],
                },
            ],
            max_tokens: Some(100),
            temperature: Some(1.5),
            top_p: Some(0.9),
            stop: vec!["END".into()],
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("weather".into()),
                parameters: json!({"type":"object","properties":{"city":{"type":"string"}}}),
                strict: None,
            }],
            tool_choice: Some(ToolChoice::Auto),
            reasoning: Some(Reasoning {
                budget_tokens: Some(2048),
                ..Reasoning::default()
            }),
            cache: vec![CacheMark {
                at: CacheAt::System(0),
                ttl: None,
            }],
            ..ChatRequest::default()
        };
        let v = encoded(&req);
        assert_eq!(
            v,
            json!({
                "system": [{"text": "be brief"}, {"cachePoint": {"type": "default"}}],
                "messages": [
                    {"role": "user", "content": [{"text": "weather?"},
                        {"image": {"format": "png", "source": {"bytes": "iVBO"}}}]},
                    {"role": "assistant", "content": [{"toolUse":
                        {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                    {"role": "user", "content": [{"toolResult":
                        {"toolUseId": "call_1", "content": [{"text": "sunny"}], "status": "success"}}]}
                ],
                // Thinking: the limit raised above the budget, no temperature,
                // top_p under 0.95 dropped.
                "inferenceConfig": {"maxTokens": 2148, "stopSequences": ["END"]},
                "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "weather",
                    "inputSchema": {"json": {"type":"object","properties":{"city":{"type":"string"}}}}}}],
                    "toolChoice": {"auto": {}}},
                "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2048}}
            })
        );
    }

    #[test]
    fn thinking_only_for_claude_and_effort_becomes_a_budget() {
        let mut req = ChatRequest {
            model: "us.anthropic.claude-sonnet-4-20250514-v1:0".into(),
            temperature: Some(0.5),
            reasoning: Some(Reasoning {
                effort: Some("high".into()),
                ..Reasoning::default()
            }),
            ..ChatRequest::default()
        };
        let v = encoded(&req);
        assert_eq!(
            v["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 16384}})
        );
        assert_eq!(v["inferenceConfig"], json!({"maxTokens": 16384 + 4096}));
        req.model = "meta.llama3-70b-instruct-v1:0".into();
        let v = encoded(&req);
        assert!(v.get("additionalModelRequestFields").is_none());
        assert_eq!(v["inferenceConfig"], json!({"temperature": 0.5}));
    }

    #[test]
    fn what_converse_cannot_carry_is_refused_clearly() {
        let mut req = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![ContentPart::Image {
                    source: ImageSource::Url {
                        url: "https://x/y.png".into(),
                    },
                }],
            }],
            ..ChatRequest::default()
        };
        let e = encode_request(&req).unwrap_err();
        assert!(e.message.contains("inline"), "{}", e.message);
        req.messages.clear();
        req.response_format = Some(ResponseFormat::JsonObject);
        assert!(encode_request(&req).is_err());
    }

    #[test]
    fn same_role_turns_merge_and_tool_choice_none_drops_tools() {
        let user = |t: &str| Message {
            role: Role::User,
            content: vec![ContentPart::Text { text: t.into() }],
        };
        let req = ChatRequest {
            messages: vec![user("a"), user("b")],
            tools: vec![Tool {
                name: "t".into(),
                description: None,
                parameters: Value::Null,
                strict: None,
            }],
            tool_choice: Some(ToolChoice::None),
            ..ChatRequest::default()
        };
        let v = encoded(&req);
        assert_eq!(
            v["messages"],
            json!([{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}])
        );
        assert!(v.get("toolConfig").is_none());
    }
}
