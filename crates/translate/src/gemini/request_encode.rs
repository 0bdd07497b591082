//! Provider side: IR → the body for Gemini `generateContent` (the model goes
//! in the URL path, not here).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::err;
use super::parts::encode_parts;
use super::schema::{schema_to_gemini, SchemaBudget};
use crate::{ChatRequest, ContentPart, ResponseFormat, Role, ToolChoice, TranslateError};

/// Dummy signature Google documents for function calls whose real signature
/// is unknown (history from another model); Gemini 3 rejects unsigned calls.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// The thinking budget for an effort name.
fn effort_budget(effort: &str) -> Option<u64> {
    match effort {
        "minimal" => Some(512),
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        "xhigh" | "max" => Some(32768),
        _ => None,
    }
}

pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    encode_request_limited(req, &crate::Limits::default())
}

/// [`encode_request`] under `limits` (the schema rewrite budget).
pub fn encode_request_limited(
    req: &ChatRequest,
    limits: &crate::Limits,
) -> Result<Vec<u8>, TranslateError> {
    let mut body = Map::new();

    // Function names by call id, for tool results that carry none.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        for p in &m.content {
            if let ContentPart::ToolCall { id, name, .. } = p {
                names.insert(id.as_str(), name.as_str());
            }
        }
    }

    let mut contents: Vec<(Role, Vec<Value>)> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let mut parts = Vec::with_capacity(m.content.len());
        encode_parts(&m.content, &names, true, &mut parts);
        if parts.is_empty() {
            continue;
        }
        // Gemini wants alternating turns: merge neighbours of one role.
        match contents.last_mut() {
            Some((role, prev)) if *role == m.role => prev.append(&mut parts),
            _ => contents.push((m.role, parts)),
        }
    }
    let gemini3 = req.model.contains("gemini-3");
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, mut parts)| {
            if role == Role::Assistant && gemini3 {
                // Gemini 3 rejects a model turn whose first call is unsigned
                // (history from another model): Google's documented bypass.
                if let Some(Value::Object(first)) =
                    parts.iter_mut().find(|p| p.get("functionCall").is_some())
                {
                    first
                        .entry("thoughtSignature")
                        .or_insert_with(|| json!(SKIP_SIGNATURE));
                }
            }
            let role = if role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            json!({"role": role, "parts": parts})
        })
        .collect();
    body.insert("contents".into(), Value::Array(contents));

    let system: Vec<Value> = req
        .system
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text { text } if !text.is_empty() => Some(json!({ "text": text })),
            _ => None,
        })
        .collect();
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    if !req.tools.is_empty() {
        let mut budget = SchemaBudget::of(limits.schema_rewrite_bytes);
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), json!(t.name));
                if let Some(desc) = &t.description {
                    d.insert("description".into(), json!(desc));
                }
                let params = schema_to_gemini(&t.parameters, &t.parameters, 0, &mut budget)?;
                // Gemini rejects an OBJECT schema with empty properties: a
                // function without parameters just has none.
                let empty_object = params.get("properties").is_none()
                    && params.get("type").and_then(Value::as_str) == Some("object");
                if !params.is_empty() && !empty_object {
                    d.insert("parameters".into(), Value::Object(params));
                }
                Ok(Value::Object(d))
            })
            .collect::<Result<_, TranslateError>>()?;
        body.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
        if let Some(tc) = &req.tool_choice {
            let fc = match tc {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Function(name) => {
                    json!({"mode": "ANY", "allowedFunctionNames": [name]})
                }
            };
            body.insert("toolConfig".into(), json!({ "functionCallingConfig": fc }));
        }
    }

    let mut gc = Map::new();
    if let Some(v) = req.temperature {
        gc.insert("temperature".into(), json!(v));
    }
    if let Some(v) = req.top_p {
        gc.insert("topP".into(), json!(v));
    }
    if let Some(v) = req.top_k {
        gc.insert("topK".into(), json!(v));
    }
    if let Some(v) = req.max_tokens {
        gc.insert("maxOutputTokens".into(), json!(v));
    }
    if !req.stop.is_empty() {
        gc.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(v) = req.n {
        gc.insert("candidateCount".into(), json!(v));
    }
    if let Some(v) = req.seed {
        gc.insert("seed".into(), json!(v));
    }
    if let Some(v) = req.presence_penalty {
        gc.insert("presencePenalty".into(), json!(v));
    }
    if let Some(v) = req.frequency_penalty {
        gc.insert("frequencyPenalty".into(), json!(v));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            gc.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            gc.insert("responseMimeType".into(), json!("application/json"));
            gc.insert("responseJsonSchema".into(), schema.clone());
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(r) = &req.reasoning {
        let pro = req.model.contains("pro");
        let max = if pro { 32768 } else { 24576 };
        let mut tc = Map::new();
        if r.disabled || r.effort.as_deref() == Some("none") {
            // Pro models cannot switch thinking off: leave their default.
            if !pro {
                tc.insert("thinkingBudget".into(), json!(0));
            }
        } else {
            let budget = r
                .budget_tokens
                .or_else(|| r.effort.as_deref().and_then(effort_budget));
            match (r.budget_tokens, r.effort.as_deref()) {
                // Gemini 3 takes a level (a budget still works; both at
                // once are refused): the two every Gemini 3 model knows.
                (None, Some(effort)) if req.model.contains("gemini-3") => {
                    let level = match effort {
                        "minimal" | "low" => "low",
                        _ => "high",
                    };
                    tc.insert("thinkingLevel".into(), json!(level));
                }
                _ => {
                    if let Some(b) = budget {
                        tc.insert("thinkingBudget".into(), json!(b.min(max)));
                    }
                }
            }
            tc.insert("includeThoughts".into(), json!(true));
        }
        if !tc.is_empty() {
            gc.insert("thinkingConfig".into(), Value::Object(tc));
        }
    }
    if !gc.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gc));
    }
    serde_json::to_vec(&Value::Object(body)).map_err(|e| err(e.to_string()))
}
