//! The four wire formats as the tests see them, on both sides of the
//! gateway: what a provider of each kind answers (mock payloads written from
//! the providers' API references), how to check what such a provider
//! received, how a client of each format asks, and how to read back what it
//! got into one neutral [`Answer`] (checking the answer is well formed on
//! the way).
//!
//! The vocabulary both sides share (formats, scenarios, what an answer
//! holds) is here; each role has its own file: `provider` (what a mock
//! provider answers), `received` (checking what a provider got), `client`
//! (how a client of each format asks), `answer` (reading back what the
//! client got).

mod answer;
mod client;
mod matrix;
mod provider;
mod reasoning;
mod received;
mod structured;

// Not every test binary uses every part.
#[allow(unused_imports)]
pub use answer::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use matrix::*;
#[allow(unused_imports)]
pub use provider::*;
#[allow(unused_imports)]
pub use reasoning::*;
#[allow(unused_imports)]
pub use received::*;
#[allow(unused_imports)]
pub use structured::*;

use serde_json::{json, Value};

/// A wire format: a client endpoint or a provider kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
}

pub const ALL: [Wire; 4] = [Wire::Chat, Wire::Responses, Wire::Anthropic, Wire::Gemini];

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::Chat => "chat",
            Wire::Responses => "responses",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
        }
    }
}

/// What a conversation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A plain question, no tools: a text answer.
    Text,
    /// Tools declared: the model answers a bit of text and one tool call.
    Tool,
    /// The tool's result sent back (the assistant's call and the result in
    /// the history): a text answer.
    ToolResult,
}

pub const SCENARIOS: [Scenario; 3] = [Scenario::Text, Scenario::Tool, Scenario::ToolResult];

pub const SYSTEM: &str = "You are terse.";
pub const QUESTION: &str = "What's the weather in Paris?";
pub const TOOL_OUTPUT: &str = "18C and sunny";
/// The text answer, and how streams split it.
pub const ANSWER: &str = "It is 18C and sunny in Paris.";
pub const ANSWER_PIECES: [&str; 3] = ["It is ", "18C and ", "sunny in Paris."];
/// The text that comes before a tool call.
pub const PREFACE: &str = "Let me check.";
pub const TOOL_NAME: &str = "get_weather";
pub const TOOL_ARGS_PIECES: [&str; 2] = [r#"{"city":"Par"#, r#"is","unit":"celsius"}"#];

pub fn tool_args() -> Value {
    json!({"city": "Paris", "unit": "celsius"})
}

impl Scenario {
    /// What the mock answers in this scenario.
    pub fn shape(self) -> Shape {
        match self {
            Scenario::Tool => Shape::Tool,
            _ => Shape::Text,
        }
    }
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city"]
    })
}

// ---------------------------------------------------------------------------
// Provider side: what each kind answers.
// ---------------------------------------------------------------------------

/// What a provider's answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The text answer, finished normally.
    Text,
    /// A bit of text and one tool call.
    Tool,
    /// A bit of text and two tool calls in one turn.
    Parallel,
    /// The text answer, cut by the output token limit.
    Length,
}

impl Shape {
    pub fn text(self) -> &'static str {
        match self {
            Shape::Text | Shape::Length => ANSWER,
            Shape::Tool | Shape::Parallel => PREFACE,
        }
    }

    fn pieces(self) -> Vec<&'static str> {
        match self {
            Shape::Text | Shape::Length => ANSWER_PIECES.to_vec(),
            Shape::Tool | Shape::Parallel => vec![PREFACE],
        }
    }

    /// The calls' arguments, in order.
    pub fn calls(self) -> Vec<Value> {
        match self {
            Shape::Text | Shape::Length => vec![],
            Shape::Tool => vec![tool_args()],
            Shape::Parallel => vec![tool_args(), json!({"city": "London", "unit": "celsius"})],
        }
    }

    /// The pieces a call's arguments are streamed in.
    fn arg_pieces(self, i: usize) -> Vec<String> {
        if i == 0 {
            TOOL_ARGS_PIECES.iter().map(|s| s.to_string()).collect()
        } else {
            let whole = self.calls()[i].to_string();
            let (a, b) = whole.split_at(7);
            vec![a.to_owned(), b.to_owned()]
        }
    }

    pub fn usage(self) -> (u64, u64) {
        match self {
            Shape::Tool | Shape::Parallel => (40, 9),
            Shape::Text => (12, 5),
            Shape::Length => (12, 7),
        }
    }

    pub fn has_calls(self) -> bool {
        matches!(self, Shape::Tool | Shape::Parallel)
    }
}

/// The model name each mock reports back (dated, as the real APIs do).
pub fn served_model(kind: Wire, asked: &str) -> String {
    match kind {
        Wire::Chat => format!("{asked}-2024-07-18"),
        Wire::Responses => format!("{asked}-2025-04-14"),
        Wire::Anthropic => format!("{asked}-20251001"),
        Wire::Gemini => asked.to_owned(),
    }
}

/// The tool call id a provider gives (Gemini gives none).
pub fn upstream_call_id(kind: Wire) -> Option<&'static str> {
    upstream_call_ids(kind).map(|c| c[0])
}

/// The ids of the first and second tool calls.
pub fn upstream_call_ids(kind: Wire) -> Option<[&'static str; 2]> {
    match kind {
        Wire::Chat => Some(["call_Zq3xV7aB9cD1eF", "call_Yp2wU6zA8bC0dE"]),
        Wire::Responses => Some(["call_R5sT6uV7wX8y", "call_Q4rS5tU6vW7x"]),
        Wire::Anthropic => Some([
            "toolu_01A09q90qw90lq917835lq9",
            "toolu_01B19r91rx91mr928946mr0",
        ]),
        Wire::Gemini => None,
    }
}

fn call_id(kind: Wire, i: usize) -> &'static str {
    upstream_call_ids(kind).map(|c| c[i]).unwrap_or_default()
}

/// `Ok` when `ok`, else the error `what` (checks read as a chain of `?`).
pub fn ensure(ok: bool, what: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}
