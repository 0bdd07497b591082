//! The `context` section: what the context store keeps per session.

use super::raw::RawContext;

/// The smallest `context.max_entry_bytes`: an entry's skeleton (model,
/// provider, usage, timestamp) takes about 200 bytes.
const MIN_CONTEXT_ENTRY_BYTES: usize = 512;

/// What the context store keeps per session.
#[derive(Debug, Clone)]
pub struct ContextSettings {
    pub max_entries: usize,
    pub max_chars: usize,
    /// Bytes of JSON one snippet may take (keys and numbers count too).
    pub max_entry_bytes: usize,
    /// Bytes of snippets kept per session.
    pub max_session_bytes: usize,
}

/// Resolves `context`; every problem is pushed naming its key path.
pub fn resolve(c: RawContext, problems: &mut Vec<String>) -> ContextSettings {
    let context = ContextSettings {
        max_entries: c.max_entries.unwrap_or(50),
        max_chars: c.max_chars.unwrap_or(4000),
        max_entry_bytes: c.max_entry_bytes.unwrap_or(32 * 1024),
        max_session_bytes: c.max_session_bytes.unwrap_or(256 * 1024),
    };
    if context.max_entry_bytes < MIN_CONTEXT_ENTRY_BYTES {
        problems.push(format!(
            "context.max_entry_bytes: {} is too small to hold an entry (at least {MIN_CONTEXT_ENTRY_BYTES})",
            context.max_entry_bytes
        ));
    }
    if context.max_session_bytes < context.max_entry_bytes {
        problems.push(format!(
            "context.max_session_bytes: {} is smaller than context.max_entry_bytes ({})",
            context.max_session_bytes, context.max_entry_bytes
        ));
    }
    context
}
