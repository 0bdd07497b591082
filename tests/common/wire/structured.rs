//! Structured output on both sides: how each client format asks for a JSON
//! schema, and mock providers that check it arrived in their own native
//! form (refusing, as the real APIs do, fields they do not know or a form
//! the model lacks) and answer JSON text only when the schema reached them.

use serde_json::{json, Value};

use super::*;
use crate::common::{Recorded, Reply};

/// The schema clients ask for.
pub fn structured_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
        "required": ["city", "temp_c"],
        "additionalProperties": false
    })
}

/// The JSON answer the mocks give when the schema reached them, and the
/// pieces their streams split it in.
pub const STRUCTURED_ANSWER: &str = r#"{"city":"Paris","temp_c":18}"#;
pub const STRUCTURED_PIECES: [&str; 3] = [r#"{"city":"#, r#""Paris","#, r#""temp_c":18}"#];

/// The tool the gateway forces on Anthropic models without native
/// structured outputs.
pub const STRUCTURED_TOOL: &str = "apiproxy_structured_output";

/// How a client of `wire` asks for [`structured_schema`]; `schemaless`
/// asks for JSON mode without a schema instead.
pub fn structured_request(
    wire: Wire,
    model: &str,
    stream: bool,
    key: &str,
    schemaless: bool,
) -> ClientRequest {
    let mut r = client_request(wire, model, Scenario::Text, stream, key);
    let schema = structured_schema();
    match (wire, schemaless) {
        (Wire::Chat, false) => {
            r.body["response_format"] = json!({"type": "json_schema",
                "json_schema": {"name": "weather", "schema": schema, "strict": true}});
        }
        (Wire::Chat, true) => r.body["response_format"] = json!({"type": "json_object"}),
        (Wire::Responses, false) => {
            r.body["text"] = json!({"format": {"type": "json_schema", "name": "weather",
                "schema": schema, "strict": true}});
        }
        (Wire::Responses, true) => r.body["text"] = json!({"format": {"type": "json_object"}}),
        (Wire::Anthropic, _) => {
            r.body["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
        }
        (Wire::Gemini, false) => {
            r.body["generationConfig"] =
                json!({"responseMimeType": "application/json", "responseJsonSchema": schema});
        }
        (Wire::Gemini, true) => {
            r.body["generationConfig"] = json!({"responseMimeType": "application/json"});
        }
    }
    r
}

/// Top-level request fields each Anthropic Messages request may carry.
const ANTHROPIC_FIELDS: [&str; 17] = [
    "model",
    "max_tokens",
    "system",
    "messages",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
    "output_config",
    "service_tier",
    "container",
    "mcp_servers",
];

fn refuse(kind: Wire, message: &str) -> Reply {
    Reply::json(400, provider_error(kind, 400, message).to_string())
}

/// Whether the request asks, in `kind`'s own native form, for the schema;
/// `Err` is the 400 message the real API would give.
fn asked_schema(kind: Wire, model: &str, v: &Value) -> Result<bool, String> {
    let want = structured_schema();
    match kind {
        Wire::Anthropic => {
            if let Some(k) = v
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .find(|k| !ANTHROPIC_FIELDS.contains(&k.as_str()))
            {
                return Err(format!("{k}: Extra inputs are not permitted"));
            }
            let Some(f) = v.get("output_config").and_then(|o| o.get("format")) else {
                return Ok(false);
            };
            if model.starts_with("claude-3") {
                return Err(format!(
                    "output_config.format: structured outputs are not supported by {model}"
                ));
            }
            Ok(*f == json!({"type": "json_schema", "schema": want}))
        }
        Wire::Chat => match v.get("response_format") {
            None => Ok(false),
            Some(f) if f["type"] == "json_schema" => {
                if !f["json_schema"]["name"].is_string() {
                    return Err(
                        "Missing required parameter: 'response_format.json_schema.name'.".into(),
                    );
                }
                Ok(f["json_schema"]["schema"] == want)
            }
            Some(_) => Ok(false),
        },
        Wire::Responses => match v.get("text").and_then(|t| t.get("format")) {
            None => Ok(false),
            Some(f) if f["type"] == "json_schema" => {
                if !f["name"].is_string() {
                    return Err("Missing required parameter: 'text.format.name'.".into());
                }
                Ok(f["schema"] == want)
            }
            Some(_) => Ok(false),
        },
        Wire::Gemini => {
            let gc = &v["generationConfig"];
            let schema = gc.get("responseJsonSchema").or(gc.get("responseSchema"));
            if schema.is_some() && gc["responseMimeType"] != "application/json" {
                return Err("responseSchema requires responseMimeType application/json".into());
            }
            Ok(gc.get("responseJsonSchema") == Some(&want))
        }
    }
}

/// JSON-escapes `s` for use inside a JSON string.
fn escaped(s: &str) -> String {
    let q = Value::String(s.to_owned()).to_string();
    q[1..q.len() - 1].to_owned()
}

/// A mock provider of `kind` for structured output: a JSON answer when
/// the schema arrived natively (or, on an Anthropic model without native
/// structured outputs, as the forced tool), free text otherwise.
pub fn structured_reply(kind: Wire, rec: &Recorded) -> Reply {
    if let Some(missing) = no_responses_api(kind, rec) {
        return missing;
    }
    let model = requested_model(kind, rec);
    let stream = requested_stream(kind, rec);
    let v: Value = serde_json::from_slice(&rec.body).unwrap_or_default();
    let native = match asked_schema(kind, &model, &v) {
        Ok(b) => b,
        Err(m) => return refuse(kind, &m),
    };
    let forced = kind == Wire::Anthropic
        && v["tool_choice"] == json!({"type": "tool", "name": STRUCTURED_TOOL})
        && v["tools"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["name"] == STRUCTURED_TOOL && t["input_schema"] == structured_schema())
        });
    if forced {
        return anthropic_forced_tool(&model, stream);
    }
    if !native {
        // Free text: the test sees the schema was lost.
        return provider_reply(kind, rec);
    }
    if !stream {
        let body = provider_json(kind, &model, Shape::Text)
            .to_string()
            .replace(ANSWER, &escaped(STRUCTURED_ANSWER));
        return Reply::json(200, body);
    }
    let events: Vec<String> = provider_sse(kind, &model, Shape::Text)
        .into_iter()
        .map(|e| {
            let mut e = e.replace(ANSWER, &escaped(STRUCTURED_ANSWER));
            for (a, b) in ANSWER_PIECES.iter().zip(STRUCTURED_PIECES) {
                e = e.replace(&escaped(a), &escaped(b));
            }
            e
        })
        .collect();
    Reply::sse(&events)
}

/// Anthropic's answer calling the forced structured-output tool.
fn anthropic_forced_tool(model: &str, stream: bool) -> Reply {
    let served = served_model(Wire::Anthropic, model);
    let input: Value = serde_json::from_str(STRUCTURED_ANSWER).unwrap_or_default();
    if !stream {
        return Reply::json(
            200,
            json!({"id": "msg_01Forced", "type": "message", "role": "assistant", "model": served,
                "content": [{"type": "tool_use", "id": "toolu_01Forced", "name": STRUCTURED_TOOL,
                    "input": input}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 5}})
            .to_string(),
        );
    }
    let named = |v: Value| format!("event: {}\ndata: {v}", v["type"].as_str().unwrap_or(""));
    let mut ev = vec![
        named(
            json!({"type": "message_start", "message": {"id": "msg_01Forced", "type": "message",
            "role": "assistant", "model": served, "content": [], "stop_reason": null,
            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        named(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use",
            "id": "toolu_01Forced", "name": STRUCTURED_TOOL, "input": {}}}),
        ),
    ];
    for p in STRUCTURED_PIECES {
        ev.push(named(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": p}})));
    }
    ev.push(named(json!({"type": "content_block_stop", "index": 0})));
    ev.push(named(
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
        "usage": {"output_tokens": 5}}),
    ));
    ev.push(named(json!({"type": "message_stop"})));
    Reply::sse(&ev)
}
