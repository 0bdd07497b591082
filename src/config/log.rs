//! The `log` section: the level and the access line's format.

use super::choices::{AccessFormat, Choice};
use super::raw::RawLog;

/// `log.timezone`: the zone of the log's timestamps; `None` for UTC.
pub fn timezone(l: &RawLog, problems: &mut Vec<String>) -> Option<jiff::tz::TimeZone> {
    let name = l.timezone.as_deref()?;
    match jiff::tz::TimeZone::get(name) {
        Ok(tz) => Some(tz),
        Err(_) => {
            problems.push(format!(
                "log.timezone: {name:?} is not a time zone (an IANA name such as Europe/Berlin)"
            ));
            None
        }
    }
}

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
