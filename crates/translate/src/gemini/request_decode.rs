//! Client side: a `generateContent` request body (camelCase or snake_case)
//! → IR.

use serde_json::{json, Map, Value};

use super::parts::{decode_parts, CallIds, IdMode};
use super::schema::{schema_from_gemini, SchemaBudget};
use super::{err, take_any, type_name, want_object, want_string, Path};
use crate::body::{Body, Items, Member};
use crate::{
    ChatRequest, ContentPart, Message, Reasoning, ResponseFormat, Role, Tool, ToolChoice,
    TranslateError,
};

fn want_f64(v: &Value, path: impl std::fmt::Display) -> Result<f64, TranslateError> {
    v.as_f64()
        .ok_or_else(|| err(format!("{path}: expected a number, got {}", type_name(v))))
}

fn want_u64(v: &Value, path: impl std::fmt::Display) -> Result<u64, TranslateError> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    // 1024.0 is a fine token count.
    match v.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
        _ => Err(err(format!(
            "{path}: expected a non-negative integer, got {}",
            type_name(v)
        ))),
    }
}

fn role_of(m: &mut Map<String, Value>, path: Path<'_>) -> Result<Role, TranslateError> {
    match m.remove("role") {
        None | Some(Value::Null) => Ok(Role::User),
        Some(Value::String(r)) => match r.as_str() {
            "user" | "function" | "tool" | "" => Ok(Role::User),
            "model" | "assistant" => Ok(Role::Assistant),
            other => Err(err(format!(
                "{path}.role: unknown role {other:?} (expected \"user\" or \"model\")"
            ))),
        },
        Some(other) => Err(err(format!(
            "{path}.role: expected a string, got {}",
            type_name(&other)
        ))),
    }
}

fn decode_system(v: Value, path: Path<'_>) -> Result<Vec<ContentPart>, TranslateError> {
    let mut ids = CallIds::default();
    let mut mode = IdMode::Request(&mut ids);
    match v {
        Value::String(text) => Ok(vec![ContentPart::Text { text }]),
        Value::Object(mut m) => match m.remove("parts") {
            Some(parts) => decode_parts(parts, Path::Field(&path, "parts"), &mut mode),
            // A lone part object (`{"text": "..."}`).
            None => decode_parts(Value::Object(m), path, &mut mode),
        },
        Value::Array(_) => decode_parts(v, path, &mut mode),
        other => Err(err(format!(
            "{path}: expected a string or a content object, got {}",
            type_name(&other)
        ))),
    }
}

pub fn decode_request(body: Value) -> Result<ChatRequest, TranslateError> {
    decode_request_limited(body, &crate::Limits::default())
}

/// [`decode_request`] under `limits` (the schema rewrite budget).
pub fn decode_request_limited(
    body: Value,
    limits: &crate::Limits,
) -> Result<ChatRequest, TranslateError> {
    let obj = want_object(body, "request body")?;
    decode_body(Body::decoded(Value::Object(obj))?, limits)
}

/// [`decode_request_limited`] of a body whose contents may still be raw text.
pub(crate) fn decode_body(
    mut body: Body<'_>,
    limits: &crate::Limits,
) -> Result<ChatRequest, TranslateError> {
    let contents = match body.take("contents").filter(|v| !v.is_null()) {
        Some(c) => Some((c, "contents")),
        None => body
            .take("input")
            .filter(|v| !v.is_null())
            .map(|c| (c, "input")),
    };
    let obj = &mut body.obj;
    let mut req = ChatRequest::default();
    let mut ids = CallIds::default();
    let mut budget = SchemaBudget::of(limits.schema_rewrite_bytes);

    if let Some(si) = take_any(obj, "systemInstruction", "system_instruction") {
        req.system = decode_system(si, Path::Name("systemInstruction"))?;
    }

    let Some((contents, field)) = contents else {
        return Err(err("contents: required"));
    };
    let items = match contents {
        Member::Value(Value::String(text)) => Items::Decoded(vec![Value::String(text)]),
        Member::Value(v @ Value::Object(_)) => Items::Decoded(vec![v]),
        Member::Array(items) => items,
        Member::Value(other) => {
            return Err(err(format!(
                "{field}: expected an array of contents, got {}",
                type_name(&other)
            )))
        }
    };
    req.messages.reserve(items.len());
    let root = Path::Name(field);
    for (i, item) in items.values().enumerate() {
        let path = Path::Index(&root, i);
        match item? {
            Value::String(text) => req.messages.push(Message {
                role: Role::User,
                content: vec![ContentPart::Text { text }],
            }),
            Value::Object(mut m) => {
                let role = role_of(&mut m, path)?;
                let parts = match m.remove("parts").filter(|v| !v.is_null()) {
                    Some(p) => p,
                    None => return Err(err(format!("{path}.parts: required"))),
                };
                let content = decode_parts(
                    parts,
                    Path::Field(&path, "parts"),
                    &mut IdMode::Request(&mut ids),
                )?;
                req.messages.push(Message { role, content });
            }
            other => {
                return Err(err(format!(
                    "{path}: expected a content object or a string, got {}",
                    type_name(&other)
                )))
            }
        }
    }

    if let Some(tools) = obj.remove("tools").filter(|v| !v.is_null()) {
        decode_tools(tools, &mut req, &mut budget)?;
    }
    if let Some(tc) = take_any(obj, "toolConfig", "tool_config") {
        decode_tool_config(tc, &mut req)?;
    }
    if let Some(gc) = take_any(obj, "generationConfig", "generation_config") {
        decode_generation_config(gc, &mut req, &mut budget)?;
    }
    Ok(req)
}

fn decode_tools(
    tools: Value,
    req: &mut ChatRequest,
    budget: &mut SchemaBudget,
) -> Result<(), TranslateError> {
    let Value::Array(tools) = tools else {
        return Err(err(format!(
            "tools: expected an array, got {}",
            type_name(&tools)
        )));
    };
    for (i, tool) in tools.into_iter().enumerate() {
        let path = format!("tools[{i}]");
        let mut t = want_object(tool, &path)?;
        let decls = take_any(&mut t, "functionDeclarations", "function_declarations");
        if let Some((k, _)) = t.iter().find(|(_, v)| !v.is_null()) {
            return Err(err(format!(
                "{path}.{k}: tool not supported by this gateway (only functionDeclarations)"
            )));
        }
        let Some(decls) = decls else { continue };
        let Value::Array(decls) = decls else {
            return Err(err(format!(
                "{path}.functionDeclarations: expected an array, got {}",
                type_name(&decls)
            )));
        };
        for (j, d) in decls.into_iter().enumerate() {
            let dpath = format!("{path}.functionDeclarations[{j}]");
            let mut d = want_object(d, &dpath)?;
            let name = match d.remove("name") {
                Some(v) => want_string(v, format_args!("{dpath}.name"))?,
                None => return Err(err(format!("{dpath}.name: required"))),
            };
            let description = match d.remove("description").filter(|v| !v.is_null()) {
                Some(v) => Some(want_string(v, format_args!("{dpath}.description"))?),
                None => None,
            };
            let parameters = if let Some(p) =
                take_any(&mut d, "parametersJsonSchema", "parameters_json_schema")
            {
                p
            } else if let Some(p) = d.remove("parameters").filter(|v| !v.is_null()) {
                if !p.is_object() {
                    return Err(err(format!(
                        "{dpath}.parameters: expected an object, got {}",
                        type_name(&p)
                    )));
                }
                schema_from_gemini(p, 0, budget)?
            } else {
                json!({"type": "object", "properties": {}})
            };
            req.tools.push(Tool {
                name,
                description,
                parameters,
                strict: None,
            });
        }
    }
    Ok(())
}

fn decode_tool_config(tc: Value, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let mut tc = want_object(tc, "toolConfig")?;
    let Some(fc) = take_any(&mut tc, "functionCallingConfig", "function_calling_config") else {
        return Ok(());
    };
    let path = "toolConfig.functionCallingConfig";
    let mut fc = want_object(fc, path)?;
    let mode = match fc.remove("mode").filter(|v| !v.is_null()) {
        Some(v) => want_string(v, format_args!("{path}.mode"))?,
        None => "AUTO".to_owned(),
    };
    let allowed: Vec<String> =
        match take_any(&mut fc, "allowedFunctionNames", "allowed_function_names") {
            Some(Value::Array(a)) => a
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            Some(other) => {
                return Err(err(format!(
                    "{path}.allowedFunctionNames: expected an array of strings, got {}",
                    type_name(&other)
                )))
            }
            None => Vec::new(),
        };
    req.tool_choice = match mode.to_ascii_uppercase().as_str() {
        "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" => Some(ToolChoice::Auto),
        "NONE" => Some(ToolChoice::None),
        "ANY" => match <[String; 1]>::try_from(allowed) {
            Ok([one]) => Some(ToolChoice::Function(one)),
            Err(_) => Some(ToolChoice::Required),
        },
        other => {
            return Err(err(format!(
                "{path}.mode: unknown mode {other:?} (expected AUTO, ANY or NONE)"
            )))
        }
    };
    Ok(())
}

fn decode_generation_config(
    gc: Value,
    req: &mut ChatRequest,
    budget: &mut SchemaBudget,
) -> Result<(), TranslateError> {
    let mut gc = want_object(gc, "generationConfig")?;
    let p = "generationConfig";
    let mut f = |camel: &str, snake: &str| take_any(&mut gc, camel, snake);
    if let Some(v) = f("temperature", "temperature") {
        req.temperature = Some(want_f64(&v, format_args!("{p}.temperature"))?);
    }
    if let Some(v) = f("topP", "top_p") {
        req.top_p = Some(want_f64(&v, format_args!("{p}.topP"))?);
    }
    if let Some(v) = f("topK", "top_k") {
        req.top_k = Some(want_u64(&v, format_args!("{p}.topK"))?);
    }
    if let Some(v) = f("maxOutputTokens", "max_output_tokens") {
        req.max_tokens = Some(want_u64(&v, format_args!("{p}.maxOutputTokens"))?);
    }
    if let Some(v) = f("candidateCount", "candidate_count") {
        req.n = Some(want_u64(&v, format_args!("{p}.candidateCount"))?);
    }
    if let Some(v) = f("seed", "seed") {
        req.seed = Some(v.as_i64().ok_or_else(|| {
            err(format!(
                "{p}.seed: expected an integer, got {}",
                type_name(&v)
            ))
        })?);
    }
    if let Some(v) = f("presencePenalty", "presence_penalty") {
        req.presence_penalty = Some(want_f64(&v, format_args!("{p}.presencePenalty"))?);
    }
    if let Some(v) = f("frequencyPenalty", "frequency_penalty") {
        req.frequency_penalty = Some(want_f64(&v, format_args!("{p}.frequencyPenalty"))?);
    }
    if let Some(v) = f("stopSequences", "stop_sequences") {
        let path = format!("{p}.stopSequences");
        req.stop = match v {
            Value::String(s) => vec![s],
            Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, s)| want_string(s, format_args!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
            other => {
                return Err(err(format!(
                    "{path}: expected an array of strings, got {}",
                    type_name(&other)
                )))
            }
        };
    }
    let mime = f("responseMimeType", "response_mime_type");
    let json_schema = f("responseJsonSchema", "response_json_schema");
    let schema = f("responseSchema", "response_schema");
    let mime = match mime {
        Some(v) => Some(want_string(v, format_args!("{p}.responseMimeType"))?),
        None => None,
    };
    let schema = match (json_schema, schema) {
        (Some(s), _) => Some(s),
        (None, Some(s)) => Some(schema_from_gemini(s, 0, budget)?),
        (None, None) => None,
    };
    req.response_format = match (mime.as_deref(), schema) {
        (_, Some(schema)) => Some(ResponseFormat::JsonSchema {
            name: "response".to_owned(),
            schema,
            strict: None,
        }),
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        (Some("text/plain"), None) => Some(ResponseFormat::Text),
        _ => None,
    };
    if let Some(tc) = f("thinkingConfig", "thinking_config") {
        let path = format!("{p}.thinkingConfig");
        let mut tc = want_object(tc, &path)?;
        let mut r = Reasoning::default();
        if let Some(b) = take_any(&mut tc, "thinkingBudget", "thinking_budget") {
            match b.as_i64() {
                Some(0) => r.disabled = true,
                Some(n) if n > 0 => r.budget_tokens = Some(n as u64),
                Some(_) => {} // -1: dynamic
                None => {
                    return Err(err(format!(
                        "{path}.thinkingBudget: expected an integer, got {}",
                        type_name(&b)
                    )))
                }
            }
        }
        if let Some(l) = take_any(&mut tc, "thinkingLevel", "thinking_level") {
            let l = want_string(l, format_args!("{path}.thinkingLevel"))?;
            let l = l.to_ascii_lowercase();
            if l != "thinking_level_unspecified" {
                r.effort = Some(l);
            }
        }
        req.reasoning = Some(r);
    }
    Ok(())
}
