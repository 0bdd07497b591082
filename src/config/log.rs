//! The `log` section's own types.

/// How access lines are written (`log.access_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// `key=value` pairs after the method, path, status and time.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
