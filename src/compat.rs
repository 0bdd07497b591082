//! Request shapes of the gateways apiproxy replaces, accepted on the
//! OpenAI chat endpoint: the APIProxy seed's `input` list, whose items
//! carry either Gemini-style `parts` or OpenAI-style `content` (a string or
//! a list of parts). A list of `parts` items alone is a Gemini body, read by
//! the translate crate's chat adapter; a list with `content` items becomes
//! `messages` here, before anything else reads the body.

use serde_json::{json, Map, Value};

use crate::body::RawBody;
use crate::error::GatewayError;

/// [`input_to_messages`] on a parsed request body; the body is re-encoded
/// only when it holds an `input` list that needs it (never on the usual
/// path, where `input` is absent).
pub fn rewrite_input(body: &mut RawBody) -> Result<(), GatewayError> {
    let Some(input) = body.member("input") else {
        return Ok(());
    };
    let has_content_items = input
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i.get("content").is_some()));
    if !has_content_items {
        return Ok(());
    }
    let mut v = body
        .to_value()
        .map_err(|_| GatewayError::bad_request("request body is not a JSON object"))?;
    input_to_messages(&mut v)?;
    let bytes = serde_json::to_vec(&v)
        .map_err(|e| GatewayError::internal(format!("re-encoding the request: {e}")))?;
    *body = RawBody::parse(bytes::Bytes::from(bytes))
        .map_err(|_| GatewayError::internal("re-reading the rewritten request"))?;
    Ok(())
}

/// Rewrites `input` into `messages` when the body has `input` and no
/// `messages`; other bodies are left alone. 400 for an item it cannot read.
pub fn input_to_messages(body: &mut Value) -> Result<(), GatewayError> {
    let Some(obj) = body.as_object_mut() else {
        return Ok(());
    };
    let has_content_items = obj
        .get("input")
        .and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(|i| i.get("content").is_some()));
    if obj.contains_key("messages") || !has_content_items {
        return Ok(());
    }
    let Some(Value::Array(items)) = obj.remove("input") else {
        return Ok(());
    };
    let mut messages = Vec::with_capacity(items.len() + 1);
    // A Gemini-style system instruction beside the list.
    let system = obj
        .remove("systemInstruction")
        .or_else(|| obj.remove("system_instruction"));
    if let Some(sys) = system {
        let text: Vec<&str> = sys["parts"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["text"].as_str()).collect())
            .unwrap_or_default();
        messages.push(json!({"role": "system", "content": text.join("\n")}));
    }
    for (i, item) in items.into_iter().enumerate() {
        messages.push(message(i, item)?);
    }
    obj.insert("messages".into(), Value::Array(messages));
    Ok(())
}

fn bad(i: usize, what: &str) -> GatewayError {
    GatewayError::bad_request(format!("`input[{i}]`: {what}"))
}

fn message(i: usize, item: Value) -> Result<Value, GatewayError> {
    let Value::Object(mut m) = item else {
        return Err(bad(
            i,
            "must be an object with `role` and `parts` or `content`",
        ));
    };
    let role = match m.get("role").and_then(Value::as_str).unwrap_or("user") {
        "model" | "assistant" => "assistant",
        "system" | "developer" => "system",
        "user" => "user",
        "tool" => "tool",
        other => return Err(bad(i, &format!("unknown role `{other}`"))),
    };
    let content = match (m.remove("content"), m.remove("parts")) {
        (Some(Value::String(s)), _) => Value::String(s),
        (Some(Value::Array(parts)), _) | (None, Some(Value::Array(parts))) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                out.push(part(i, p)?);
            }
            Value::Array(out)
        }
        (Some(Value::Null), None) | (None, None) => {
            return Err(bad(i, "needs `parts` or `content`"))
        }
        _ => {
            return Err(bad(
                i,
                "`content` must be a string or a list, `parts` a list",
            ))
        }
    };
    let mut out = Map::new();
    out.insert("role".into(), json!(role));
    out.insert("content".into(), content);
    // Fields a chat message may carry as they are (a tool result's id...).
    for k in ["name", "tool_call_id", "tool_calls"] {
        if let Some(v) = m.remove(k) {
            out.insert(k.into(), v);
        }
    }
    Ok(Value::Object(out))
}

/// One part as an OpenAI content part: text (Gemini `{text}`, OpenAI
/// `{type: text}`, Responses `{type: input_text | output_text}`) or an image
/// (Gemini `inline_data` / `inlineData`, OpenAI `image_url`).
fn part(i: usize, p: Value) -> Result<Value, GatewayError> {
    if let Value::String(s) = p {
        return Ok(json!({"type": "text", "text": s}));
    }
    let Value::Object(o) = p else {
        return Err(bad(i, "a part must be an object or a string"));
    };
    if let Some(t) = o.get("text").and_then(Value::as_str) {
        return Ok(json!({"type": "text", "text": t}));
    }
    if o.get("type").and_then(Value::as_str) == Some("image_url") {
        return Ok(Value::Object(o));
    }
    if let Some(d) = o.get("inline_data").or_else(|| o.get("inlineData")) {
        let mime = d
            .get("mime_type")
            .or_else(|| d.get("mimeType"))
            .and_then(Value::as_str);
        let data = d.get("data").and_then(Value::as_str);
        if let (Some(mime), Some(data)) = (mime, data) {
            return Ok(
                json!({"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{data}")}}),
            );
        }
    }
    Err(bad(i, "a part must carry `text` or an image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_input_shapes_become_messages() {
        let mut body = json!({"model": "m", "systemInstruction": {"parts": [{"text": "sys"}]}, "input": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "parts": [{"text": "hi"}, {"inline_data": {"mime_type": "image/png", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "again"}]}
        ]});
        input_to_messages(&mut body).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [
                {"role": "system", "content": "sys"},
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                {"role": "user", "content": [{"type": "text", "text": "again"}]}
            ]})
        );
    }

    #[test]
    fn messages_win_and_bad_items_are_400() {
        let mut body = json!({"messages": [], "input": [{"role": "user", "content": "x"}]});
        input_to_messages(&mut body).unwrap();
        assert!(body.get("input").is_some());
        // Parts only: the Gemini adapter's, left as it is.
        let mut body = json!({"input": [{"role": "user", "parts": [{"text": "x"}]}]});
        input_to_messages(&mut body).unwrap();
        assert!(body.get("input").is_some());
        let mut body = json!({"input": [{"role": "user", "content": "a"}, {"role": "user", "parts": [{"nothing": 1}]}]});
        assert_eq!(input_to_messages(&mut body).unwrap_err().status, 400);
        let mut body = json!({"input": [{"role": "wizard", "content": "x"}]});
        assert_eq!(input_to_messages(&mut body).unwrap_err().status, 400);
    }
}
