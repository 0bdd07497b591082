//! Provider side: IR → the body for an upstream `POST /v1/responses`,
//! borrowing from the IR (no copies of long texts).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::err;
use crate::{
    ChatRequest, ContentPart, ImageSource, Message, ResponseFormat, Role, ToolChoice,
    TranslateError,
};

#[derive(Serialize)]
struct ReqBody<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<Cow<'a, str>>,
    input: Vec<InItem<'a>>,
    store: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<TextOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<EffortOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InItem<'a> {
    Message {
        role: &'static str,
        content: Vec<InPart<'a>>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: ToolOutput<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InPart<'a> {
    InputText { text: &'a str },
    OutputText { text: &'a str },
    InputImage { image_url: Cow<'a, str> },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolOutput<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<InPart<'a>>),
}

#[derive(Serialize)]
struct ToolDef<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: Cow<'a, Value>,
    strict: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        ty: &'static str,
        name: &'a str,
    },
}

#[derive(Serialize)]
struct TextOut<'a> {
    format: FormatOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FormatOut<'a> {
    Text,
    JsonObject,
    JsonSchema {
        name: &'a str,
        schema: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

#[derive(Serialize)]
struct EffortOut<'a> {
    effort: &'a str,
}

fn image_url(source: &ImageSource) -> Cow<'_, str> {
    match source {
        ImageSource::Url { url } => Cow::Borrowed(url),
        ImageSource::Base64 { media_type, data } => {
            Cow::Owned(format!("data:{media_type};base64,{data}"))
        }
    }
}

/// The Responses effort for a thinking budget (Anthropic `budget_tokens`,
/// Gemini `thinkingBudget`).
fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=4096 => "low",
        4097..=16384 => "medium",
        _ => "high",
    }
}

/// The Responses API refuses `max_output_tokens` below 16.
const MIN_OUTPUT_TOKENS: u64 = 16;

/// Encodes the body for an upstream `POST /v1/responses`.
pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let instructions = {
        let mut texts = req.system.iter().filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        });
        match (texts.next(), texts.next()) {
            (None, _) => None,
            (Some(one), None) => Some(Cow::Borrowed(one)),
            (Some(a), Some(b)) => {
                let mut s = format!("{a}\n\n{b}");
                for t in texts {
                    s.push_str("\n\n");
                    s.push_str(t);
                }
                Some(Cow::Owned(s))
            }
        }
    };

    let mut input = Vec::with_capacity(req.messages.len());
    for msg in &req.messages {
        encode_message(msg, &mut input);
    }

    let tools = req
        .tools
        .iter()
        .map(|t| ToolDef {
            ty: "function",
            name: &t.name,
            description: t.description.as_deref(),
            parameters: if t.parameters.is_object() {
                Cow::Borrowed(&t.parameters)
            } else {
                Cow::Owned(serde_json::json!({"type": "object", "properties": {}}))
            },
            // Responses makes function tools strict unless told otherwise;
            // schemas written for other providers rarely satisfy strict mode.
            strict: t.strict.unwrap_or(false),
        })
        .collect();
    let tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => ToolChoiceOut::Mode("auto"),
        ToolChoice::None => ToolChoiceOut::Mode("none"),
        ToolChoice::Required => ToolChoiceOut::Mode("required"),
        ToolChoice::Function(name) => ToolChoiceOut::Function {
            ty: "function",
            name,
        },
    });
    let text = req.response_format.as_ref().map(|f| TextOut {
        format: match f {
            ResponseFormat::Text => FormatOut::Text,
            ResponseFormat::JsonObject => FormatOut::JsonObject,
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => FormatOut::JsonSchema {
                name: if name.is_empty() { "response" } else { name },
                schema,
                strict: *strict,
            },
        },
    });
    let reasoning = req.reasoning.as_ref().and_then(|r| {
        let effort = match (&r.effort, r.budget_tokens) {
            // Anthropic's top level; OpenAI's is xhigh.
            (Some(e), _) if e == "max" => "xhigh",
            (Some(e), _) => e.as_str(),
            (None, _) if r.disabled => return None,
            (None, Some(0)) => return None,
            (None, Some(b)) => effort_for_budget(b),
            (None, None) => return None,
        };
        Some(EffortOut { effort })
    });

    let body = ReqBody {
        model: &req.model,
        instructions,
        input,
        store: false,
        stream: req.stream,
        max_output_tokens: req.max_tokens.map(|m| m.max(MIN_OUTPUT_TOKENS)),
        temperature: req.temperature,
        top_p: req.top_p,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        text,
        reasoning,
        user: req.user.as_deref(),
    };
    serde_json::to_vec(&body).map_err(|e| err(format!("encoding the Responses request: {e}")))
}

fn encode_message<'a>(msg: &'a Message, input: &mut Vec<InItem<'a>>) {
    let assistant = msg.role == Role::Assistant;
    let role = if assistant { "assistant" } else { "user" };
    let mut parts: Vec<InPart<'a>> = Vec::new();
    let flush = |parts: &mut Vec<InPart<'a>>, input: &mut Vec<InItem<'a>>| {
        if !parts.is_empty() {
            input.push(InItem::Message {
                role,
                content: std::mem::take(parts),
            });
        }
    };
    for part in &msg.content {
        match part {
            ContentPart::Text { text } => parts.push(if assistant {
                InPart::OutputText { text }
            } else {
                InPart::InputText { text }
            }),
            ContentPart::Image { source } => {
                // Assistant turns cannot carry images in Responses.
                if !assistant {
                    parts.push(InPart::InputImage {
                        image_url: image_url(source),
                    });
                }
            }
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => {
                flush(&mut parts, input);
                input.push(InItem::FunctionCall {
                    call_id: id,
                    name,
                    arguments: if arguments.is_empty() {
                        "{}"
                    } else {
                        arguments
                    },
                });
            }
            ContentPart::ToolResult {
                call_id, content, ..
            } => {
                flush(&mut parts, input);
                input.push(InItem::FunctionCallOutput {
                    call_id,
                    output: tool_output(content),
                });
            }
            // Reasoning items can only be replayed with their original ids /
            // encrypted content, which other formats do not carry.
            ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => {}
        }
    }
    flush(&mut parts, input);
}

fn tool_output(content: &[ContentPart]) -> ToolOutput<'_> {
    let has_image = content
        .iter()
        .any(|p| matches!(p, ContentPart::Image { .. }));
    if has_image {
        return ToolOutput::Parts(
            content
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(InPart::InputText { text }),
                    ContentPart::Image { source } => Some(InPart::InputImage {
                        image_url: image_url(source),
                    }),
                    _ => None,
                })
                .collect(),
        );
    }
    let mut texts = content.iter().filter_map(|p| match p {
        ContentPart::Text { text } => Some(text.as_str()),
        _ => None,
    });
    ToolOutput::Text(match (texts.next(), texts.next()) {
        (None, _) => Cow::Borrowed(""),
        (Some(one), None) => Cow::Borrowed(one),
        (Some(a), Some(b)) => {
            let mut s = format!("{a}\n{b}");
            for t in texts {
                s.push('\n');
                s.push_str(t);
            }
            Cow::Owned(s)
        }
    })
}
