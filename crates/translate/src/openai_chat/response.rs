//! Non-streaming responses: the `chat.completion` object ↔ IR.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::content::decode_part;
use super::usage::Counts;
use super::wire::{tool_call_out, ToolCallOut, UsageOut};
use super::{
    error_message, expected, finish_from_str, finish_to_str, join_texts, now_secs, synth_id,
};
use crate::{ChatResponse, ContentPart, TranslateError};

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseIn {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    choices: Option<Vec<ChoiceIn>>,
    usage: Option<Value>,
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChoiceIn {
    index: Option<u64>,
    message: Option<MessageIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageIn {
    content: Option<Value>,
    reasoning_content: Option<String>,
    reasoning: Option<Value>,
    refusal: Option<String>,
    tool_calls: Option<Vec<ToolCallIn>>,
    function_call: Option<FnIn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCallIn {
    id: Option<String>,
    function: Option<FnIn>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FnIn {
    name: Option<String>,
    arguments: Option<Value>,
}

fn arguments_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
    }
}

/// Decodes an OpenAI(-compatible) non-streaming response body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let r: ResponseIn = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new(format!("upstream response is not valid JSON: {e}")))?;
    if let Some(e) = r.error.as_ref().filter(|e| !e.is_null()) {
        return Err(TranslateError::new(format!(
            "upstream error: {}",
            error_message(e)
        )));
    }
    let mut resp = ChatResponse {
        id: r.id.unwrap_or_default(),
        model: r.model.unwrap_or_default(),
        created: r.created.unwrap_or(0),
        usage: r
            .usage
            .as_ref()
            .filter(|u| u.is_object())
            .map(|u| Counts::read(u).to_ir()),
        ..ChatResponse::default()
    };
    let mut choices = r.choices.unwrap_or_default();
    let pos = choices
        .iter()
        .position(|c| c.index.unwrap_or(0) == 0)
        .unwrap_or(0);
    if pos < choices.len() {
        let choice = choices.swap_remove(pos);
        resp.finish_reason = choice.finish_reason.as_deref().map(finish_from_str);
        if let Some(msg) = choice.message {
            decode_response_message(msg, &mut resp.content)?;
        }
    }
    Ok(resp)
}

fn decode_response_message(
    msg: MessageIn,
    out: &mut Vec<ContentPart>,
) -> Result<(), TranslateError> {
    let thinking = match (msg.reasoning_content, msg.reasoning) {
        (Some(s), _) if !s.is_empty() => Some(s),
        (_, Some(Value::String(s))) if !s.is_empty() => Some(s),
        _ => None,
    };
    if let Some(text) = thinking {
        out.push(ContentPart::Thinking {
            text,
            signature: None,
        });
    }
    match msg.content {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                out.push(ContentPart::Text { text: s });
            }
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.into_iter().enumerate() {
                match decode_part(p, "choices[0].message.content", j) {
                    Ok(ContentPart::Text { text }) if text.is_empty() => {}
                    Ok(part) => out.push(part),
                    Err(_) => {} // parts we cannot carry in an answer are skipped
                }
            }
        }
        Some(v) => {
            return Err(expected(
                "choices[0].message.content",
                "a string or an array",
                &v,
            ))
        }
    }
    if let Some(s) = msg.refusal.filter(|s| !s.is_empty()) {
        out.push(ContentPart::Text { text: s });
    }
    for c in msg.tool_calls.unwrap_or_default() {
        let f = c.function.unwrap_or_default();
        out.push(ContentPart::ToolCall {
            id: c
                .id
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| synth_id("call_")),
            name: f.name.unwrap_or_default(),
            arguments: arguments_text(f.arguments),
        });
    }
    if let Some(f) = msg.function_call {
        out.push(ContentPart::ToolCall {
            id: synth_id("call_"),
            name: f.name.unwrap_or_default(),
            arguments: arguments_text(f.arguments),
        });
    }
    Ok(())
}

#[derive(Serialize)]
struct RespOut<'a> {
    id: Cow<'a, str>,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [RespChoiceOut<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct RespChoiceOut<'a> {
    index: u32,
    message: RespMsgOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct RespMsgOut<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
    refusal: Option<()>,
}

/// Encodes a `chat.completion` object for the client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let texts = |want_thinking: bool| {
        resp.content.iter().filter_map(move |p| match p {
            ContentPart::Text { text } if !want_thinking => Some(text.as_str()),
            ContentPart::Thinking { text, .. } if want_thinking => Some(text.as_str()),
            _ => None,
        })
    };
    let calls: Vec<ToolCallOut> = resp
        .content
        .iter()
        .filter_map(|p| match p {
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => Some(tool_call_out(id, name, arguments)),
            _ => None,
        })
        .collect();
    let has_calls = !calls.is_empty();
    let content = match join_texts(texts(false), "") {
        Some(t) => Some(t),
        None if has_calls => None,
        None => Some(Cow::Borrowed("")),
    };
    let out = RespOut {
        id: if resp.id.is_empty() {
            Cow::Owned(synth_id("chatcmpl-"))
        } else {
            Cow::Borrowed(&resp.id)
        },
        object: "chat.completion",
        created: if resp.created == 0 {
            now_secs()
        } else {
            resp.created
        },
        model: &resp.model,
        choices: [RespChoiceOut {
            index: 0,
            message: RespMsgOut {
                role: "assistant",
                content,
                reasoning_content: join_texts(texts(true), ""),
                tool_calls: has_calls.then_some(calls),
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_to_str(resp.finish_reason.as_ref(), has_calls),
        }],
        usage: resp.usage.as_ref().map(UsageOut::from),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}
