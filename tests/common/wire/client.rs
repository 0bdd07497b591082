//! Client side: how an SDK of each format asks.

use serde_json::{json, Value};

use super::*;

/// A client request: path (with query), headers, body.
pub struct ClientRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// The request an SDK of `wire` sends for `scenario`, authenticating with
/// `key` the way that SDK does.
pub fn client_request(
    wire: Wire,
    model: &str,
    scenario: Scenario,
    stream: bool,
    key: &str,
) -> ClientRequest {
    let tools = scenario != Scenario::Text;
    let call_args = tool_args().to_string();
    let (path, headers, body) = match wire {
        Wire::Chat => {
            let mut messages = vec![
                json!({"role": "system", "content": SYSTEM}),
                json!({"role": "user", "content": QUESTION}),
            ];
            if scenario == Scenario::ToolResult {
                messages.push(
                    json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_client1", "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": call_args}}]}),
                );
                messages.push(
                    json!({"role": "tool", "tool_call_id": "call_client1", "content": TOOL_OUTPUT}),
                );
            }
            let mut b = json!({"model": model, "messages": messages});
            if tools {
                b["tools"] = json!([{"type": "function", "function": {
                    "name": TOOL_NAME, "description": "Current weather in a city", "parameters": weather_schema()}}]);
            }
            if stream {
                b["stream"] = json!(true);
                b["stream_options"] = json!({"include_usage": true});
            }
            (
                "/v1/chat/completions".to_owned(),
                vec![("authorization".to_owned(), format!("Bearer {key}"))],
                b,
            )
        }
        Wire::Responses => {
            let mut input = vec![json!({"role": "user", "content": QUESTION})];
            if scenario == Scenario::ToolResult {
                input.push(
                    json!({"type": "function_call", "call_id": "call_client1", "name": TOOL_NAME,
                    "arguments": call_args}),
                );
                input.push(json!({"type": "function_call_output", "call_id": "call_client1", "output": TOOL_OUTPUT}));
            }
            let mut b = json!({"model": model, "instructions": SYSTEM, "input": input});
            if tools {
                b["tools"] = json!([{"type": "function", "name": TOOL_NAME,
                    "description": "Current weather in a city", "parameters": weather_schema()}]);
            }
            if stream {
                b["stream"] = json!(true);
            }
            (
                "/v1/responses".to_owned(),
                vec![("authorization".to_owned(), format!("Bearer {key}"))],
                b,
            )
        }
        Wire::Anthropic => {
            let mut messages = vec![json!({"role": "user", "content": QUESTION})];
            if scenario == Scenario::ToolResult {
                messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_client1",
                    "name": TOOL_NAME, "input": tool_args()}]}));
                messages.push(json!({"role": "user", "content": [{"type": "tool_result",
                    "tool_use_id": "toolu_client1", "content": TOOL_OUTPUT}]}));
            }
            let mut b =
                json!({"model": model, "max_tokens": 1024, "system": SYSTEM, "messages": messages});
            if tools {
                b["tools"] = json!([{"name": TOOL_NAME, "description": "Current weather in a city",
                    "input_schema": weather_schema()}]);
            }
            if stream {
                b["stream"] = json!(true);
            }
            (
                "/v1/messages".to_owned(),
                vec![
                    ("x-api-key".to_owned(), key.to_owned()),
                    ("anthropic-version".to_owned(), "2023-06-01".to_owned()),
                ],
                b,
            )
        }
        Wire::Gemini => {
            let mut contents = vec![json!({"role": "user", "parts": [{"text": QUESTION}]})];
            if scenario == Scenario::ToolResult {
                contents.push(json!({"role": "model", "parts": [{"functionCall": {"name": TOOL_NAME, "args": tool_args()}}]}));
                contents.push(
                    json!({"role": "user", "parts": [{"functionResponse": {"name": TOOL_NAME,
                    "response": {"result": TOOL_OUTPUT}}}]}),
                );
            }
            let mut b =
                json!({"systemInstruction": {"parts": [{"text": SYSTEM}]}, "contents": contents});
            if tools {
                b["tools"] = json!([{"functionDeclarations": [{"name": TOOL_NAME,
                    "description": "Current weather in a city", "parameters": weather_schema()}]}]);
            }
            let path = if stream {
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("/v1beta/models/{model}:generateContent")
            };
            (path, vec![("x-goog-api-key".to_owned(), key.to_owned())], b)
        }
    };
    ClientRequest {
        path,
        headers,
        body,
    }
}

/// Sends `req` to the gateway as the client's SDK would: the answer's
/// status, content type and body.
pub async fn send_to(gw: &crate::common::Gateway, req: &ClientRequest) -> (u16, String, String) {
    let mut r = crate::common::client()
        .post(format!("{}{}", gw.url(), req.path))
        .header("content-type", "application/json");
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    let resp = r.body(req.body.to_string()).send().await.expect("request");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, resp.text().await.expect("body"))
}

/// Reads what [`send_to`] got as a 200 answer in `client`'s format (an
/// event stream when `stream`); anything else fails the test.
pub fn read_ok_answer(
    client: Wire,
    stream: bool,
    (status, ct, body): &(u16, String, String),
) -> Answer {
    assert_eq!(*status, 200, "{client:?} stream={stream}: {body}");
    if stream {
        assert!(ct.starts_with("text/event-stream"), "{ct}: {body}");
        parse_stream_answer(client, body).unwrap_or_else(|e| panic!("{e}\n{body}"))
    } else {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        parse_json_answer(client, &v).unwrap_or_else(|e| panic!("{e}\n{body}"))
    }
}
