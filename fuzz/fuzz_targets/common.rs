//! Shared by the fuzz targets: the first input byte picks a format.

use apiproxy_translate::Format;

/// Every wire format, indexed by a byte of the input.
pub const FORMATS: [Format; 4] = [
    Format::OpenAiChat,
    Format::OpenAiResponses,
    Format::Anthropic,
    Format::Gemini,
];

/// Splits the input into a format (from its first byte) and the rest.
pub fn format_and_rest(data: &[u8]) -> Option<(Format, u8, &[u8])> {
    let (&b, rest) = data.split_first()?;
    Some((FORMATS[(b & 3) as usize], b >> 2, rest))
}

#[path = "../../crates/translate/tests/counting/ids.rs"]
mod ids;
#[allow(unused_imports)] // only request_decode compares decodes
pub use ids::without_made_up_ids;
