//! The `log` section: the level and the access line's format.

use super::raw::RawLog;

/// How access lines are written (`log.access_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// `key=value` pairs after the method, path, status and time.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Resolves `log`: the level and the access format.
pub fn resolve(l: &RawLog, problems: &mut Vec<String>) -> (String, AccessFormat) {
    let access_format = match l.access_format.as_deref() {
        None | Some("text") => AccessFormat::Text,
        Some("json") => AccessFormat::Json,
        Some(other) => {
            problems.push(format!(
                "log.access_format: {other:?} is not one of text, json"
            ));
            AccessFormat::Text
        }
    };
    let log_level = l.level.clone().unwrap_or_else(|| "info".to_owned());
    if !["error", "warn", "info", "debug", "trace", "off"]
        .contains(&log_level.to_ascii_lowercase().as_str())
    {
        problems.push(format!(
            "log.level: {log_level:?} is not one of error, warn, info, debug, trace, off"
        ));
    }
    (log_level, access_format)
}
