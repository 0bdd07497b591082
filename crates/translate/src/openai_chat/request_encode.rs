//! Provider side: IR → the body for an OpenAI(-compatible) Chat Completions
//! upstream, borrowing from the IR (no copies of images or long texts).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::join_texts;
use super::wire::{tool_call_out, ToolCallOut};
use crate::{
    ChatRequest, ContentPart, ImageSource, Message, ResponseFormat, Role, ToolChoice,
    TranslateError,
};

#[derive(Serialize)]
struct ReqOut<'a> {
    model: &'a str,
    messages: Vec<MsgOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<RespFmtOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptsOut>,
}

#[derive(Serialize)]
struct StreamOptsOut {
    include_usage: bool,
}

#[derive(Serialize)]
struct MsgOut<'a> {
    role: &'static str,
    content: Option<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ContentOut<'a> {
    Str(Cow<'a, str>),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrlOut<'a> },
}

#[derive(Serialize)]
struct ImageUrlOut<'a> {
    url: UrlOut<'a>,
}

/// An image URL, written without building the data URL in memory first.
struct UrlOut<'a>(&'a ImageSource);

impl Serialize for UrlOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ImageSource::Url { url } => s.serialize_str(url),
            ImageSource::Base64 { media_type, data } => {
                s.collect_str(&format_args!("data:{media_type};base64,{data}"))
            }
        }
    }
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FnDefOut<'a>,
}

#[derive(Serialize)]
struct FnDefOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RespFmtOut<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaOut<'a> },
}

#[derive(Serialize)]
struct JsonSchemaOut<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// Thresholds for `Reasoning::budget_tokens` → `reasoning_effort`:
/// up to 4096 → low, up to 16384 → medium, above → high; 0 → omitted.
/// (Claude Code's think / think hard / ultrathink budgets are 4000 / 10000 /
/// 31999, which land on low / medium / high.)
pub fn effort_for_budget(budget: u64) -> Option<&'static str> {
    match budget {
        0 => None,
        1..=4096 => Some("low"),
        4097..=16384 => Some("medium"),
        _ => Some("high"),
    }
}

/// A tool result as the text of a `tool` message. Images become a short
/// note (`[image: <url>]` / `[image: <media type>, not shown]`): OpenAI tool
/// messages carry text only. An error result is prefixed with `Error: `.
fn tool_result_text<'a>(content: &'a [ContentPart], is_error: bool) -> Cow<'a, str> {
    let pieces = content.iter().filter_map(|p| match p {
        ContentPart::Text { text } => Some(Cow::Borrowed(text.as_str())),
        ContentPart::Image {
            source: ImageSource::Url { url },
        } => Some(Cow::Owned(format!("[image: {url}]"))),
        ContentPart::Image {
            source: ImageSource::Base64 { media_type, .. },
        } => Some(Cow::Owned(format!("[image: {media_type}, not shown]"))),
        _ => None,
    });
    let mut out: Cow<'a, str> = if is_error {
        Cow::Owned("Error: ".to_owned())
    } else {
        Cow::Borrowed("")
    };
    let mut first = true;
    for piece in pieces {
        if first && !is_error {
            out = piece;
        } else {
            let s = out.to_mut();
            if !first {
                s.push('\n');
            }
            s.push_str(&piece);
        }
        first = false;
    }
    out
}

/// Encodes a request for an OpenAI(-compatible) Chat Completions upstream.
pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = join_texts(
        req.system.iter().filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        }),
        "\n\n",
    ) {
        messages.push(MsgOut {
            role: "system",
            content: Some(ContentOut::Str(system)),
            tool_calls: None,
            tool_call_id: None,
        });
    }
    for m in &req.messages {
        match m.role {
            Role::User => encode_user(m, &mut messages),
            Role::Assistant => encode_assistant(m, &mut messages),
        }
    }

    let tools: Vec<ToolOut> = req
        .tools
        .iter()
        .map(|t| ToolOut {
            kind: "function",
            function: FnDefOut {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
                strict: t.strict,
            },
        })
        .collect();
    let has_tools = !tools.is_empty();
    // OpenAI rejects tool_choice / parallel_tool_calls without tools.
    let tool_choice = req
        .tool_choice
        .as_ref()
        .filter(|_| has_tools)
        .map(|c| match c {
            ToolChoice::Auto => Value::from("auto"),
            ToolChoice::None => Value::from("none"),
            ToolChoice::Required => Value::from("required"),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        });
    let response_format = req.response_format.as_ref().map(|f| match f {
        ResponseFormat::Text => RespFmtOut::Text,
        ResponseFormat::JsonObject => RespFmtOut::JsonObject,
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => RespFmtOut::JsonSchema {
            json_schema: JsonSchemaOut {
                name,
                schema,
                strict: *strict,
            },
        },
    });
    let reasoning_effort = req.reasoning.as_ref().and_then(|r| match &r.effort {
        // Anthropic's top level; OpenAI's is xhigh.
        Some(e) if e == "max" => Some("xhigh"),
        Some(e) => Some(e.as_str()),
        None if r.disabled => None,
        None => r.budget_tokens.and_then(effort_for_budget),
    });

    let out = ReqOut {
        model: &req.model,
        messages,
        max_completion_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        seed: req.seed,
        n: req.n,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        user: req.user.as_deref(),
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| has_tools),
        response_format,
        reasoning_effort,
        stream: req.stream.then_some(true),
        stream_options: req.stream.then_some(StreamOptsOut {
            include_usage: true,
        }),
    };
    serde_json::to_vec(&out).map_err(|e| TranslateError::new(format!("encoding request: {e}")))
}

fn encode_user<'a>(m: &'a Message, out: &mut Vec<MsgOut<'a>>) {
    // Tool results first: OpenAI wants the `tool` messages right after the
    // assistant message that made the calls.
    for p in &m.content {
        if let ContentPart::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } = p
        {
            out.push(MsgOut {
                role: "tool",
                content: Some(ContentOut::Str(tool_result_text(content, *is_error))),
                tool_calls: None,
                tool_call_id: Some(call_id),
            });
        }
    }
    let mut parts: Vec<PartOut<'a>> = m
        .content
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text { text } => Some(PartOut::Text { text }),
            ContentPart::Image { source } => Some(PartOut::ImageUrl {
                image_url: ImageUrlOut {
                    url: UrlOut(source),
                },
            }),
            _ => None,
        })
        .collect();
    let content = match parts.pop() {
        None => return,
        Some(PartOut::Text { text }) if parts.is_empty() => ContentOut::Str(Cow::Borrowed(text)),
        Some(p) => {
            parts.push(p);
            ContentOut::Parts(parts)
        }
    };
    out.push(MsgOut {
        role: "user",
        content: Some(content),
        tool_calls: None,
        tool_call_id: None,
    });
}

fn encode_assistant<'a>(m: &'a Message, out: &mut Vec<MsgOut<'a>>) {
    // Thinking / RedactedThinking are dropped (OpenAI does not take them
    // back); images and tool results cannot appear in an assistant turn.
    let text = join_texts(
        m.content.iter().filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        }),
        "\n\n",
    );
    let calls: Vec<ToolCallOut<'a>> = m
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
    let content = match (text, calls.is_empty()) {
        (Some(t), _) => Some(ContentOut::Str(t)),
        (None, false) => None,
        (None, true) => Some(ContentOut::Str(Cow::Borrowed(""))),
    };
    out.push(MsgOut {
        role: "assistant",
        content,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
    });
}
