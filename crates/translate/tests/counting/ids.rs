//! Tool-call ids made up by the OpenAI chat decoder, compared as one. Used
//! by the property tests here and, through `#[path]`, by the fuzz targets
//! (`fuzz/fuzz_targets/common.rs`).

use apiproxy_translate::{ChatRequest, ContentPart};

/// `req` with the tool-call ids the OpenAI chat decoder makes up for calls
/// sent without one (`call_` and 24 random hex digits, new on every decode)
/// replaced by one fixed id, so two decodes of a body compare equal.
#[allow(dead_code)] // not every test binary uses it
pub fn without_made_up_ids(req: &ChatRequest) -> ChatRequest {
    let mut req = req.clone();
    let made_up = |id: &str| {
        id.strip_prefix("call_")
            .is_some_and(|t| t.len() == 24 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    for m in &mut req.messages {
        for part in &mut m.content {
            if let ContentPart::ToolCall { id, .. } = part {
                if made_up(id) {
                    *id = "call_made_up".into();
                }
            }
        }
    }
    req
}
