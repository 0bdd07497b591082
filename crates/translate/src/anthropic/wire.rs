//! Serialize-only shapes of Anthropic's JSON, borrowing from the IR so big
//! strings (base64 images, long texts) are written without being copied.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

/// A content block, as requests, responses and `content_block_start` carry it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum WireBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: WireImageSource<'a>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<WireBlock<'a>>,
        #[serde(skip_serializing_if = "is_false")]
        is_error: bool,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

impl WireBlock<'_> {
    pub(super) fn is_tool_result(&self) -> bool {
        matches!(self, WireBlock::ToolResult { .. })
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum WireImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// Anthropic's usage object (input excludes the cache counts).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WireUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

pub(super) fn is_false(b: &bool) -> bool {
    !*b
}
