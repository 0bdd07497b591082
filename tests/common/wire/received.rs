//! Provider side: what a provider of each kind must have received, in its
//! own shape.

use serde_json::Value;

use super::*;
use crate::common::Recorded;

/// The text inside a content value of any shape (a string, a list of parts
/// or blocks, or one part), concatenated.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text_of).collect(),
        Value::Object(o) => o
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| o.get("parts").map(text_of))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Checks a request a provider of `kind` received: path, provider key,
/// model, stream flag, and the conversation in the provider's own shape.
pub fn check_upstream(
    kind: Wire,
    rec: &Recorded,
    model: &str,
    key: &str,
    scenario: Scenario,
    stream: bool,
) -> Result<(), String> {
    let v: Value =
        serde_json::from_slice(&rec.body).map_err(|e| format!("upstream body is not JSON: {e}"))?;
    let want_path = match kind {
        Wire::Chat => "/v1/chat/completions".to_owned(),
        Wire::Responses => "/v1/responses".to_owned(),
        Wire::Anthropic => "/v1/messages".to_owned(),
        Wire::Gemini if stream => format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
        Wire::Gemini => format!("/v1beta/models/{model}:generateContent"),
    };
    ensure(rec.method == "POST", format!("method {}", rec.method))?;
    ensure(
        rec.path == want_path,
        format!("path {} (want {want_path})", rec.path),
    )?;
    ensure(
        rec.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        format!("content-type {:?}", rec.header("content-type")),
    )?;
    // Auth in the provider's own convention, and nothing else.
    let (auth, xkey, goog) = (
        rec.header("authorization"),
        rec.header("x-api-key"),
        rec.header("x-goog-api-key"),
    );
    match kind {
        Wire::Chat | Wire::Responses => ensure(
            auth == Some(&format!("Bearer {key}")) && xkey.is_none() && goog.is_none(),
            format!("auth headers {auth:?} {xkey:?} {goog:?}"),
        )?,
        Wire::Anthropic => {
            ensure(
                xkey == Some(key) && auth.is_none() && goog.is_none(),
                format!("auth headers {auth:?} {xkey:?} {goog:?}"),
            )?;
            let versions: Vec<_> = rec
                .headers
                .iter()
                .filter(|(k, _)| k == "anthropic-version")
                .collect();
            ensure(
                versions.len() == 1,
                format!("anthropic-version headers: {versions:?}"),
            )?;
        }
        Wire::Gemini => ensure(
            goog == Some(key) && auth.is_none() && xkey.is_none(),
            format!("auth headers {auth:?} {xkey:?} {goog:?}"),
        )?,
    }
    if kind != Wire::Gemini {
        ensure(
            v["model"] == model,
            format!("body model {} (want {model})", v["model"]),
        )?;
        ensure(
            v["stream"].as_bool().unwrap_or(false) == stream,
            format!("body stream {} (want {stream})", v["stream"]),
        )?;
    } else {
        ensure(
            v.get("stream").is_none(),
            "a `stream` field in a Gemini body".into(),
        )?;
        ensure(
            v.get("model").is_none(),
            "a `model` field in a Gemini body".into(),
        )?;
    }
    match kind {
        Wire::Chat => check_chat_request(&v, scenario, stream),
        Wire::Responses => check_responses_request(&v, scenario),
        Wire::Anthropic => check_anthropic_request(&v, scenario),
        Wire::Gemini => check_gemini_request(&v, scenario),
    }
    .map_err(|e| format!("{e}; upstream body: {v}"))
}

fn check_chat_request(v: &Value, scenario: Scenario, stream: bool) -> Result<(), String> {
    if stream {
        ensure(
            v["stream_options"]["include_usage"] == true,
            "stream without stream_options.include_usage".into(),
        )?;
    }
    let msgs = v["messages"].as_array().ok_or("no messages")?;
    let sys: String = msgs
        .iter()
        .filter(|m| m["role"] == "system" || m["role"] == "developer")
        .map(|m| text_of(&m["content"]))
        .collect();
    ensure(sys == SYSTEM, format!("system text {sys:?}"))?;
    let user = msgs
        .iter()
        .find(|m| m["role"] == "user")
        .ok_or("no user message")?;
    ensure(
        text_of(&user["content"]) == QUESTION,
        format!("user text {}", user["content"]),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let tool = &v["tools"][0];
    ensure(
        tool["type"] == "function"
            && tool["function"]["name"] == TOOL_NAME
            && tool["function"]["parameters"]["properties"]["city"]["type"] == "string",
        format!("tool declaration {tool}"),
    )?;
    if scenario == Scenario::ToolResult {
        let asst = msgs
            .iter()
            .find(|m| m["role"] == "assistant")
            .ok_or("no assistant message")?;
        let call = &asst["tool_calls"][0];
        ensure(
            call["type"] == "function" && call["function"]["name"] == TOOL_NAME,
            format!("assistant tool call {asst}"),
        )?;
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("null"))
                .map_err(|e| format!("call arguments: {e}"))?;
        ensure(args["city"] == "Paris", format!("call arguments {args}"))?;
        let result = msgs
            .iter()
            .find(|m| m["role"] == "tool")
            .ok_or("no tool message")?;
        ensure(
            result["tool_call_id"] == call["id"]
                && call["id"].as_str().is_some_and(|s| !s.is_empty()),
            format!("tool result {result} for call {call}"),
        )?;
        ensure(
            text_of(&result["content"]).contains(TOOL_OUTPUT),
            format!("tool result {result}"),
        )?;
    }
    Ok(())
}

fn check_responses_request(v: &Value, scenario: Scenario) -> Result<(), String> {
    let items: Vec<Value> = match &v["input"] {
        Value::String(s) => vec![json!({"role": "user", "content": s})],
        Value::Array(a) => a.clone(),
        other => return Err(format!("input {other}")),
    };
    let sys = text_of(&v["instructions"])
        + &items
            .iter()
            .filter(|m| m["role"] == "system" || m["role"] == "developer")
            .map(|m| text_of(&m["content"]))
            .collect::<String>();
    ensure(sys == SYSTEM, format!("system text {sys:?}"))?;
    let user = items
        .iter()
        .find(|m| m["role"] == "user")
        .ok_or("no user item")?;
    ensure(
        text_of(&user["content"]) == QUESTION,
        format!("user item {user}"),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let tool = &v["tools"][0];
    ensure(
        tool["type"] == "function"
            && tool["name"] == TOOL_NAME
            && tool["parameters"]["properties"]["city"].is_object(),
        format!("tool declaration {tool}"),
    )?;
    if scenario == Scenario::ToolResult {
        let call = items
            .iter()
            .find(|m| m["type"] == "function_call")
            .ok_or("no function_call item")?;
        ensure(call["name"] == TOOL_NAME, format!("function_call {call}"))?;
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap_or("null"))
            .map_err(|e| format!("call arguments: {e}"))?;
        ensure(args["city"] == "Paris", format!("call arguments {args}"))?;
        let out = items
            .iter()
            .find(|m| m["type"] == "function_call_output")
            .ok_or("no function_call_output item")?;
        ensure(
            out["call_id"] == call["call_id"]
                && call["call_id"].as_str().is_some_and(|s| !s.is_empty()),
            format!("output {out} for call {call}"),
        )?;
        ensure(
            text_of(&out["output"]).contains(TOOL_OUTPUT),
            format!("output {out}"),
        )?;
    }
    Ok(())
}

fn check_anthropic_request(v: &Value, scenario: Scenario) -> Result<(), String> {
    ensure(
        v["max_tokens"].as_u64().is_some_and(|n| n > 0),
        format!(
            "max_tokens {} (required by the Messages API)",
            v["max_tokens"]
        ),
    )?;
    ensure(
        text_of(&v["system"]) == SYSTEM,
        format!("system {}", v["system"]),
    )?;
    let msgs = v["messages"].as_array().ok_or("no messages")?;
    ensure(
        msgs.iter()
            .all(|m| m["role"] == "user" || m["role"] == "assistant"),
        "a role other than user/assistant".into(),
    )?;
    ensure(
        msgs[0]["role"] == "user",
        "first message is not the user's".into(),
    )?;
    ensure(
        text_of(&msgs[0]["content"]) == QUESTION,
        format!("user message {}", msgs[0]),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let tool = &v["tools"][0];
    ensure(
        tool["name"] == TOOL_NAME && tool["input_schema"]["properties"]["city"].is_object(),
        format!("tool declaration {tool}"),
    )?;
    if scenario == Scenario::ToolResult {
        let blocks = |role: &str| -> Vec<Value> {
            msgs.iter()
                .filter(|m| m["role"] == role)
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .cloned()
                .collect()
        };
        let call = blocks("assistant")
            .into_iter()
            .find(|b| b["type"] == "tool_use")
            .ok_or("no tool_use block")?;
        ensure(
            call["name"] == TOOL_NAME && call["input"]["city"] == "Paris",
            format!("tool_use {call}"),
        )?;
        let res = blocks("user")
            .into_iter()
            .find(|b| b["type"] == "tool_result")
            .ok_or("no tool_result block")?;
        ensure(
            res["tool_use_id"] == call["id"] && call["id"].as_str().is_some_and(|s| !s.is_empty()),
            format!("tool_result {res} for {call}"),
        )?;
        ensure(
            text_of(&res["content"]).contains(TOOL_OUTPUT),
            format!("tool_result {res}"),
        )?;
    }
    Ok(())
}

fn check_gemini_request(v: &Value, scenario: Scenario) -> Result<(), String> {
    let sys = v
        .get("systemInstruction")
        .or_else(|| v.get("system_instruction"));
    ensure(
        sys.is_some_and(|s| text_of(s) == SYSTEM),
        format!("systemInstruction {sys:?}"),
    )?;
    let contents = v["contents"].as_array().ok_or("no contents")?;
    ensure(
        contents
            .iter()
            .all(|c| c["role"] == "user" || c["role"] == "model"),
        "a role other than user/model".into(),
    )?;
    ensure(
        contents[0]["role"] == "user" && text_of(&contents[0]["parts"]) == QUESTION,
        format!("first content {}", contents[0]),
    )?;
    if scenario == Scenario::Text {
        return ensure(
            v.get("tools")
                .is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)),
            "tools sent".into(),
        );
    }
    let decl = v["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            t.get("functionDeclarations")
                .or_else(|| t.get("function_declarations"))
        })
        .filter_map(Value::as_array)
        .flatten()
        .next()
        .ok_or("no functionDeclarations")?;
    ensure(
        decl["name"] == TOOL_NAME && decl["parameters"]["properties"]["city"].is_object(),
        format!("function declaration {decl}"),
    )?;
    if scenario == Scenario::ToolResult {
        let parts: Vec<&Value> = contents
            .iter()
            .filter_map(|c| c["parts"].as_array())
            .flatten()
            .collect();
        let call = parts
            .iter()
            .find_map(|p| p.get("functionCall"))
            .ok_or("no functionCall part")?;
        ensure(
            call["name"] == TOOL_NAME && call["args"]["city"] == "Paris",
            format!("functionCall {call}"),
        )?;
        let resp = parts
            .iter()
            .find_map(|p| p.get("functionResponse"))
            .ok_or("no functionResponse part")?;
        ensure(
            resp["name"] == TOOL_NAME,
            format!("functionResponse {resp}"),
        )?;
        ensure(
            resp["response"].to_string().contains(TOOL_OUTPUT),
            format!("functionResponse {resp}"),
        )?;
    }
    Ok(())
}
