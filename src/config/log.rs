//! The `log` section: the level and the access line's format.

use super::choices::{AccessFormat, Choice};
use super::raw::RawLog;

/// Resolves `log`: the level and the access format.
pub fn resolve(l: &RawLog, problems: &mut Vec<String>) -> (String, AccessFormat) {
    let access_format = match l.access_format.as_ref().map(Choice::value) {
        None => AccessFormat::Text,
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            problems.push(format!("log.access_format: {e}"));
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
