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

/// `req` with the tool-call ids the OpenAI chat decoder makes up for calls
/// sent without one (`call_` and 24 random hex digits, different on every
/// decode) replaced by one fixed id, so two decodes of a body compare equal.
pub fn without_made_up_ids(
    mut req: apiproxy_translate::ChatRequest,
) -> apiproxy_translate::ChatRequest {
    let made_up = |id: &str| {
        id.strip_prefix("call_")
            .is_some_and(|t| t.len() == 24 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    for m in &mut req.messages {
        for part in &mut m.content {
            if let apiproxy_translate::ContentPart::ToolCall { id, .. } = part {
                if made_up(id) {
                    *id = "call_made_up".into();
                }
            }
        }
    }
    req
}
