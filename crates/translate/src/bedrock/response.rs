//! A Converse answer body → IR.

use serde_json::{Map, Value};

use super::finish_from_stop_reason;
use super::usage::{usage_object, Counts};
use crate::common::{now_secs, unique_token};
use crate::{ChatResponse, ContentPart, TranslateError};

fn err(msg: impl Into<String>) -> TranslateError {
    TranslateError::new(msg)
}

/// Decodes the body of a `POST /model/{modelId}/converse` answer. Converse
/// names neither the answer nor the model: the id is made up, the model
/// left empty (the gateway shows the client its own name for it).
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| err(format!("bedrock response: invalid JSON: {e}")))?;
    let Some(message) = v.get("output").and_then(|o| o.get("message")) else {
        let why = super::error_message(body).unwrap_or_else(|| "no output.message".to_owned());
        return Err(err(format!("bedrock response: {why}")));
    };
    let mut resp = ChatResponse {
        id: format!("msg_bdrk_{}", unique_token()),
        created: now_secs(),
        usage: usage_object(&v).map(|u| Counts::read(u).to_ir()),
        finish_reason: v
            .get("stopReason")
            .and_then(Value::as_str)
            .map(finish_from_stop_reason),
        ..ChatResponse::default()
    };
    match message.get("content") {
        Some(Value::Array(blocks)) => {
            for b in blocks {
                if let Some(b) = b.as_object() {
                    decode_block(b, &mut resp.content);
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(err("bedrock response: content: expected an array")),
    }
    Ok(resp)
}

/// One content block; blocks with no IR shape (guardrail assessments,
/// citations) are skipped.
fn decode_block(b: &Map<String, Value>, out: &mut Vec<ContentPart>) {
    if let Some(text) = b.get("text").and_then(Value::as_str) {
        out.push(ContentPart::Text {
            text: text.to_owned(),
        });
    } else if let Some(t) = b.get("toolUse") {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let input = t.get("input").cloned().unwrap_or(Value::Object(Map::new()));
        out.push(ContentPart::ToolCall {
            id: s("toolUseId"),
            name: s("name"),
            arguments: input.to_string(),
        });
    } else if let Some(r) = b.get("reasoningContent") {
        if let Some(rt) = r.get("reasoningText") {
            let text = rt.get("text").and_then(Value::as_str).unwrap_or("");
            out.push(ContentPart::Thinking {
                text: text.to_owned(),
                signature: rt
                    .get("signature")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        } else if let Some(data) = r.get("redactedContent").and_then(Value::as_str) {
            out.push(ContentPart::RedactedThinking {
                data: data.to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FinishReason;

    #[test]
    fn converse_answer_decodes() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"reasoningContent":{"reasoningText":{"text":"hmm","signature":"s1"}}},
            {"text":"Let me check."},
            {"toolUse":{"toolUseId":"tooluse_1","name":"get_weather","input":{"city":"Paris"}}}]}},
            "stopReason":"tool_use",
            "usage":{"inputTokens":10,"outputTokens":4,"totalTokens":14},
            "metrics":{"latencyMs":100}}"#;
        let r = decode_response(body).unwrap();
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            r.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((10, 4))
        );
        assert_eq!(r.content.len(), 3);
        assert_eq!(
            r.content[2],
            ContentPart::ToolCall {
                id: "tooluse_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }
        );
        let e = decode_response(
            br#"{"message":"The security token included in the request is invalid."}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("security token"), "{}", e.message);
    }
}
