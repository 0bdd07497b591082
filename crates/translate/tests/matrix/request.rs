//! One realistic agent request written in every client format, and the
//! provider body read back with the provider's own field names.

use apiproxy_translate::Format;
use serde_json::{json, Value};

pub const SYSTEM: &str = "You are a careful assistant.";
pub const ASK: &str = "What is in this image?";
pub const IMAGE_URL: &str = "https://example.com/cat.png";
pub const IMAGE_B64: &str = "iVBORw0KGgoAAAANSUhEUg==";
pub const SAID: &str = "Let me check the weather.";
pub const CALL_ID: &str = "call_abc123";
pub const THANKS: &str = "Thanks. And tomorrow?";

/// Which tool choice the request makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Required,
    Function,
    Never,
}

impl Choice {
    /// The normalized name the provider view reports.
    pub fn name(self) -> &'static str {
        match self {
            Choice::Auto => "auto",
            Choice::Required => "required",
            Choice::Function => "function:get_weather",
            Choice::Never => "none",
        }
    }
}

/// Request knobs that vary between test cases.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub reasoning: bool,
    pub choice: Choice,
    pub stream: bool,
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"]})
}

fn time_schema() -> Value {
    json!({"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]})
}

/// The request as a client speaking `client` sends it.
pub fn client_request(client: Format, v: Variant) -> Value {
    let args = json!({"city": "Paris"}).to_string();
    let result = json!({"temp": 21}).to_string();
    match client {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => {
            let mut b = json!({
                "model": "client-model",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": [
                        {"type": "text", "text": ASK},
                        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
                        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{IMAGE_B64}")}}]},
                    {"role": "assistant", "content": SAID, "tool_calls": [
                        {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
                    {"role": "tool", "tool_call_id": CALL_ID, "content": result},
                    {"role": "user", "content": THANKS}],
                "tools": [
                    {"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": weather_schema()}},
                    {"type": "function", "function": {"name": "get_time", "parameters": time_schema()}}],
                "tool_choice": match v.choice {
                    Choice::Auto => json!("auto"),
                    Choice::Required => json!("required"),
                    Choice::Never => json!("none"),
                    Choice::Function => json!({"type": "function", "function": {"name": "get_weather"}}),
                },
                "max_tokens": 20000, "temperature": 0.5, "stop": ["END"],
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "answer", "schema": answer_schema(), "strict": true}},
            });
            if v.reasoning {
                b["reasoning_effort"] = json!("high");
            }
            if v.stream {
                b["stream"] = json!(true);
                b["stream_options"] = json!({"include_usage": true});
            }
            b
        }
        Format::OpenAiResponses => {
            let mut b = json!({
                "model": "client-model",
                "instructions": SYSTEM,
                "input": [
                    {"role": "user", "content": [
                        {"type": "input_text", "text": ASK},
                        {"type": "input_image", "image_url": IMAGE_URL},
                        {"type": "input_image", "image_url": format!("data:image/png;base64,{IMAGE_B64}")}]},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": SAID}]},
                    {"type": "function_call", "call_id": CALL_ID, "name": "get_weather", "arguments": args},
                    {"type": "function_call_output", "call_id": CALL_ID, "output": result},
                    {"role": "user", "content": THANKS}],
                "tools": [
                    {"type": "function", "name": "get_weather", "description": "Current weather", "parameters": weather_schema()},
                    {"type": "function", "name": "get_time", "parameters": time_schema()}],
                "tool_choice": match v.choice {
                    Choice::Auto => json!("auto"),
                    Choice::Required => json!("required"),
                    Choice::Never => json!("none"),
                    Choice::Function => json!({"type": "function", "name": "get_weather"}),
                },
                "max_output_tokens": 20000, "temperature": 0.5,
                "text": {"format": {"type": "json_schema", "name": "answer",
                    "schema": answer_schema(), "strict": true}},
            });
            if v.reasoning {
                b["reasoning"] = json!({"effort": "high", "summary": "auto"});
            }
            if v.stream {
                b["stream"] = json!(true);
            }
            b
        }
        Format::Anthropic => {
            let mut b = json!({
                "model": "client-model",
                "system": SYSTEM,
                "max_tokens": 20000, "temperature": 0.5, "stop_sequences": ["END"],
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": ASK},
                        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_B64}}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": SAID},
                        {"type": "tool_use", "id": CALL_ID, "name": "get_weather", "input": {"city": "Paris"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": CALL_ID, "content": result},
                        {"type": "text", "text": THANKS}]}],
                "tools": [
                    {"name": "get_weather", "description": "Current weather", "input_schema": weather_schema()},
                    {"name": "get_time", "input_schema": time_schema()}],
                "tool_choice": match v.choice {
                    Choice::Auto => json!({"type": "auto"}),
                    Choice::Required => json!({"type": "any"}),
                    Choice::Never => json!({"type": "none"}),
                    Choice::Function => json!({"type": "tool", "name": "get_weather"}),
                },
                "output_config": {"format": {"type": "json_schema", "schema": answer_schema()}},
            });
            if v.reasoning {
                b["thinking"] = json!({"type": "enabled", "budget_tokens": 8000});
            }
            if v.stream {
                b["stream"] = json!(true);
            }
            b
        }
        Format::Gemini => {
            let mut b = json!({
                "systemInstruction": {"parts": [{"text": SYSTEM}]},
                "contents": [
                    {"role": "user", "parts": [
                        {"text": ASK},
                        {"fileData": {"mimeType": "image/png", "fileUri": IMAGE_URL}},
                        {"inlineData": {"mimeType": "image/png", "data": IMAGE_B64}}]},
                    {"role": "model", "parts": [
                        {"text": SAID},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                        {"text": THANKS}]}],
                "tools": [{"functionDeclarations": [
                    {"name": "get_weather", "description": "Current weather", "parameters": {
                        "type": "OBJECT", "properties": {"city": {"type": "STRING", "description": "City name"}},
                        "required": ["city"]}},
                    {"name": "get_time", "parametersJsonSchema": time_schema()}]}],
                "toolConfig": {"functionCallingConfig": match v.choice {
                    Choice::Auto => json!({"mode": "AUTO"}),
                    Choice::Required => json!({"mode": "ANY"}),
                    Choice::Never => json!({"mode": "NONE"}),
                    Choice::Function => json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
                }},
                "generationConfig": {"maxOutputTokens": 20000, "temperature": 0.5,
                    "stopSequences": ["END"], "responseMimeType": "application/json",
                    "responseJsonSchema": answer_schema()},
            });
            if v.reasoning {
                b["generationConfig"]["thinkingConfig"] =
                    json!({"thinkingBudget": 8000, "includeThoughts": true});
            }
            b
        }
    }
}

/// The structured-output schema every client asks for.
pub fn answer_schema() -> Value {
    json!({"type": "object", "properties": {"answer": {"type": "string"}},
        "required": ["answer"], "additionalProperties": false})
}

/// One piece of a turn, provider-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Text(String),
    ImageUrl(String),
    ImageData(String, String),
    Call {
        id: String,
        name: String,
        args: Value,
    },
    Result {
        id: String,
        name: Option<String>,
        output: Value,
    },
}

/// A provider request body, read with the provider's own field names.
#[derive(Debug, Clone, PartialEq)]
pub struct ReqView {
    pub system: String,
    /// (role, item) in order; tool results count as the user's.
    pub items: Vec<(&'static str, Item)>,
    /// (name, parameters schema).
    pub tools: Vec<(String, Value)>,
    pub tool_choice: Option<String>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub stop: Vec<String>,
    pub json_mode: bool,
    /// `effort:<level>`, `budget:<n>` or `off`.
    pub reasoning: Option<String>,
    pub stream: bool,
}

fn out_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn image_from_url(url: &str) -> Item {
    match url
        .strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
    {
        Some((mime, data)) => Item::ImageData(mime.to_owned(), data.to_owned()),
        None => Item::ImageUrl(url.to_owned()),
    }
}

/// Reads the body `provider` receives.
pub fn provider_view(provider: Format, body: &[u8]) -> ReqView {
    let b: Value = serde_json::from_slice(body).expect("provider body is JSON");
    let mut view = ReqView {
        system: String::new(),
        items: Vec::new(),
        tools: Vec::new(),
        tool_choice: None,
        max_tokens: None,
        temperature: b["temperature"].as_f64(),
        stop: Vec::new(),
        json_mode: false,
        reasoning: None,
        stream: b["stream"] == true,
    };
    match provider {
        // Bedrock is a provider format only, tested in its module and tests/bedrock.rs.
        Format::Bedrock => unreachable!("Bedrock is not in this matrix"),
        Format::OpenAiChat => {
            for m in b["messages"].as_array().into_iter().flatten() {
                let role = m["role"].as_str().unwrap_or_default();
                match role {
                    "system" => view
                        .system
                        .push_str(m["content"].as_str().unwrap_or_default()),
                    "tool" => view.items.push((
                        "user",
                        Item::Result {
                            id: m["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                            name: None,
                            output: out_value(m["content"].as_str().unwrap_or_default()),
                        },
                    )),
                    "user" | "assistant" => {
                        let role = if role == "user" { "user" } else { "assistant" };
                        match &m["content"] {
                            Value::String(t) => view.items.push((role, Item::Text(t.clone()))),
                            Value::Array(parts) => {
                                for p in parts {
                                    let it = match p["type"].as_str() {
                                        Some("text") => Item::Text(
                                            p["text"].as_str().unwrap_or_default().into(),
                                        ),
                                        Some("image_url") => image_from_url(
                                            p["image_url"]["url"].as_str().unwrap_or_default(),
                                        ),
                                        other => panic!("chat part {other:?}"),
                                    };
                                    view.items.push((role, it));
                                }
                            }
                            _ => {}
                        }
                        for c in m["tool_calls"].as_array().into_iter().flatten() {
                            assert_eq!(c["type"], "function");
                            view.items.push((
                                "assistant",
                                Item::Call {
                                    id: c["id"].as_str().unwrap_or_default().into(),
                                    name: c["function"]["name"].as_str().unwrap_or_default().into(),
                                    args: out_value(
                                        c["function"]["arguments"].as_str().unwrap_or("!"),
                                    ),
                                },
                            ));
                        }
                    }
                    other => panic!("chat role {other}"),
                }
            }
            for t in b["tools"].as_array().into_iter().flatten() {
                assert_eq!(t["type"], "function");
                view.tools.push((
                    t["function"]["name"].as_str().unwrap_or_default().into(),
                    t["function"]["parameters"].clone(),
                ));
            }
            view.tool_choice = match &b["tool_choice"] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => Some(format!(
                    "function:{}",
                    o.get("function")
                        .and_then(|f| f["name"].as_str())
                        .unwrap_or_default()
                )),
                _ => None,
            };
            view.max_tokens = b["max_completion_tokens"].as_u64();
            view.stop = strs(&b["stop"]);
            view.json_mode = b["response_format"]["json_schema"]["schema"] == answer_schema();
            view.reasoning = b["reasoning_effort"]
                .as_str()
                .map(|e| format!("effort:{e}"));
            if view.stream {
                assert_eq!(
                    b["stream_options"]["include_usage"], true,
                    "usage asked for"
                );
            }
        }
        Format::OpenAiResponses => {
            view.system = b["instructions"].as_str().unwrap_or_default().into();
            for it in b["input"].as_array().into_iter().flatten() {
                match it["type"].as_str() {
                    Some("message") => {
                        let role = if it["role"] == "assistant" {
                            "assistant"
                        } else {
                            "user"
                        };
                        for p in it["content"].as_array().into_iter().flatten() {
                            let item = match p["type"].as_str() {
                                Some("input_text") if role == "user" => {
                                    Item::Text(p["text"].as_str().unwrap_or_default().into())
                                }
                                Some("output_text") if role == "assistant" => {
                                    Item::Text(p["text"].as_str().unwrap_or_default().into())
                                }
                                Some("input_image") => {
                                    image_from_url(p["image_url"].as_str().unwrap_or_default())
                                }
                                other => panic!("responses part {other:?} in a {role} message"),
                            };
                            view.items.push((role, item));
                        }
                    }
                    Some("function_call") => view.items.push((
                        "assistant",
                        Item::Call {
                            id: it["call_id"].as_str().unwrap_or_default().into(),
                            name: it["name"].as_str().unwrap_or_default().into(),
                            args: out_value(it["arguments"].as_str().unwrap_or("!")),
                        },
                    )),
                    Some("function_call_output") => view.items.push((
                        "user",
                        Item::Result {
                            id: it["call_id"].as_str().unwrap_or_default().into(),
                            name: None,
                            output: out_value(it["output"].as_str().unwrap_or_default()),
                        },
                    )),
                    other => panic!("responses input item {other:?}"),
                }
            }
            for t in b["tools"].as_array().into_iter().flatten() {
                assert_eq!(t["type"], "function");
                view.tools.push((
                    t["name"].as_str().unwrap_or_default().into(),
                    t["parameters"].clone(),
                ));
            }
            view.tool_choice = match &b["tool_choice"] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => Some(format!(
                    "function:{}",
                    o["name"].as_str().unwrap_or_default()
                )),
                _ => None,
            };
            view.max_tokens = b["max_output_tokens"].as_u64();
            view.json_mode = b["text"]["format"]["schema"] == answer_schema();
            view.reasoning = b["reasoning"]["effort"]
                .as_str()
                .map(|e| format!("effort:{e}"));
            assert_eq!(b["store"], false, "nothing stored upstream");
        }
        Format::Anthropic => {
            let system: Vec<String> = match &b["system"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(blocks) => blocks
                    .iter()
                    .map(|x| {
                        assert_eq!(x["type"], "text");
                        x["text"].as_str().unwrap_or_default().to_owned()
                    })
                    .collect(),
                _ => Vec::new(),
            };
            view.system = system.join("\n");
            for m in b["messages"].as_array().into_iter().flatten() {
                let role = if m["role"] == "assistant" {
                    "assistant"
                } else {
                    "user"
                };
                let blocks = match &m["content"] {
                    Value::String(s) => vec![json!({"type": "text", "text": s})],
                    Value::Array(a) => a.clone(),
                    _ => Vec::new(),
                };
                for x in blocks {
                    let item = match x["type"].as_str() {
                        Some("text") => Item::Text(x["text"].as_str().unwrap_or_default().into()),
                        Some("image") => match x["source"]["type"].as_str() {
                            Some("url") => Item::ImageUrl(
                                x["source"]["url"].as_str().unwrap_or_default().into(),
                            ),
                            _ => Item::ImageData(
                                x["source"]["media_type"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .into(),
                                x["source"]["data"].as_str().unwrap_or_default().into(),
                            ),
                        },
                        Some("tool_use") => Item::Call {
                            id: x["id"].as_str().unwrap_or_default().into(),
                            name: x["name"].as_str().unwrap_or_default().into(),
                            args: x["input"].clone(),
                        },
                        Some("tool_result") => {
                            let text = match &x["content"] {
                                Value::String(s) => s.clone(),
                                Value::Array(a) => {
                                    a.iter().filter_map(|c| c["text"].as_str()).collect()
                                }
                                _ => String::new(),
                            };
                            Item::Result {
                                id: x["tool_use_id"].as_str().unwrap_or_default().into(),
                                name: None,
                                output: out_value(&text),
                            }
                        }
                        other => panic!("anthropic block {other:?}"),
                    };
                    view.items.push((role, item));
                }
            }
            for t in b["tools"].as_array().into_iter().flatten() {
                view.tools.push((
                    t["name"].as_str().unwrap_or_default().into(),
                    t["input_schema"].clone(),
                ));
            }
            view.tool_choice = b["tool_choice"]["type"].as_str().map(|t| match t {
                "any" => "required".to_owned(),
                "tool" => format!(
                    "function:{}",
                    b["tool_choice"]["name"].as_str().unwrap_or_default()
                ),
                other => other.to_owned(),
            });
            view.max_tokens = b["max_tokens"].as_u64();
            view.stop = strs(&b["stop_sequences"]);
            view.json_mode = b["output_config"]["format"]
                == json!({"type": "json_schema", "schema": answer_schema()})
                && b.get("response_format").is_none();
            view.reasoning = match b["thinking"]["type"].as_str() {
                Some("enabled") => Some(format!("budget:{}", b["thinking"]["budget_tokens"])),
                Some(other) => Some(other.to_owned()),
                None => None,
            };
        }
        Format::Gemini => {
            assert!(
                b.get("model").is_none(),
                "Gemini takes the model in the path"
            );
            let sys: Vec<&str> = b["systemInstruction"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["text"].as_str())
                .collect();
            view.system = sys.join("\n");
            let mut last_role = "";
            for c in b["contents"].as_array().into_iter().flatten() {
                let role = match c["role"].as_str() {
                    Some("model") => "assistant",
                    Some("user") => "user",
                    other => panic!("gemini role {other:?}"),
                };
                assert_ne!(role, last_role, "Gemini turns alternate");
                last_role = role;
                for p in c["parts"].as_array().into_iter().flatten() {
                    let item = if let Some(t) = p["text"].as_str() {
                        Item::Text(t.into())
                    } else if p["fileData"].is_object() {
                        Item::ImageUrl(p["fileData"]["fileUri"].as_str().unwrap_or_default().into())
                    } else if p["inlineData"].is_object() {
                        Item::ImageData(
                            p["inlineData"]["mimeType"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                            p["inlineData"]["data"].as_str().unwrap_or_default().into(),
                        )
                    } else if p["functionCall"].is_object() {
                        let f = &p["functionCall"];
                        Item::Call {
                            id: f["id"].as_str().unwrap_or_default().into(),
                            name: f["name"].as_str().unwrap_or_default().into(),
                            args: f["args"].clone(),
                        }
                    } else if p["functionResponse"].is_object() {
                        let f = &p["functionResponse"];
                        Item::Result {
                            id: f["id"].as_str().unwrap_or_default().into(),
                            name: f["name"].as_str().map(str::to_owned),
                            output: f["response"].clone(),
                        }
                    } else {
                        panic!("gemini part {p}")
                    };
                    view.items.push((role, item));
                }
            }
            for t in b["tools"].as_array().into_iter().flatten() {
                for d in t["functionDeclarations"].as_array().into_iter().flatten() {
                    let params = if d["parameters"].is_object() {
                        d["parameters"].clone()
                    } else {
                        d["parametersJsonSchema"].clone()
                    };
                    view.tools
                        .push((d["name"].as_str().unwrap_or_default().into(), params));
                }
            }
            let fc = &b["toolConfig"]["functionCallingConfig"];
            view.tool_choice = fc["mode"].as_str().map(|m| match m {
                "ANY" => match fc["allowedFunctionNames"].as_array().map(Vec::as_slice) {
                    Some([one]) => format!("function:{}", one.as_str().unwrap_or_default()),
                    _ => "required".to_owned(),
                },
                other => other.to_ascii_lowercase(),
            });
            let gc = &b["generationConfig"];
            view.max_tokens = gc["maxOutputTokens"].as_u64();
            view.temperature = gc["temperature"].as_f64();
            view.stop = strs(&gc["stopSequences"]);
            view.json_mode = gc["responseMimeType"] == "application/json"
                && gc["responseJsonSchema"] == answer_schema();
            view.reasoning = match gc["thinkingConfig"]["thinkingBudget"].as_u64() {
                Some(0) => Some("off".to_owned()),
                Some(n) => Some(format!("budget:{n}")),
                None => None,
            };
        }
    }
    view
}
