//! Editing the config file from the console: `GET /admin/config/file`
//! (its text as written, `${VAR}` references unexpanded, and a version),
//! `PUT /admin/config/file` (`{text, version}`: refused with 409 when the
//! file changed since that version; checked by the function `apiproxy -t`
//! uses, problems named by key path (400); written atomically with the
//! previous file kept as `<name>.bak`; then reloaded as the reload button
//! does).
//!
//! The text may hold literal provider keys: it is answered only behind the
//! admin gate, with `Cache-Control: no-store` like every admin answer.

use std::io::Write;
use std::path::{Path, PathBuf};

use once_cell::sync::Lazy;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::system::{unavailable, System, RELOAD_WAIT};
use crate::config::Config;
use crate::error::GatewayError;

/// Largest config text a PUT may carry.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// One edit at a time in this process: the version check, the write and
/// the reload are one step.
static EDIT: Lazy<tokio::sync::Mutex<()>> = Lazy::new(|| tokio::sync::Mutex::new(()));

/// Why there is no file to edit in environment mode.
const NO_FILE: &str = "the gateway runs from the environment configuration (LLM_PROVIDERS, no -c): there is no config file to edit";

/// A file's version: the SHA-256 of its bytes, in hex.
pub fn version_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The file beside `path` that keeps the previous text.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

fn read_error(path: &Path, e: std::io::Error) -> GatewayError {
    GatewayError::internal(format!("cannot read {}: {e}", path.display()))
}

/// `GET /admin/config/file`.
pub fn get(sys: &System) -> Result<Value, GatewayError> {
    let Some(path) = sys.config_file() else {
        return Ok(json!({"file": null, "editable": false, "reason": NO_FILE}));
    };
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| GatewayError::internal(format!("{} is not UTF-8 text", path.display())))?;
    Ok(json!({
        "file": path.display().to_string(),
        "editable": true,
        "text": text,
        "version": version_of(&bytes),
        "bytes": bytes.len(),
        "backup": backup_path(path).display().to_string(),
        "note": "shown as written: ${VAR} references are not expanded; a key written literally in the file is shown",
    }))
}

/// A problem line of the config check split into its key path and message
/// (`providers[0].base_url: must be ...`); `path` is null when the line
/// names none.
fn problem_json(line: &str) -> Value {
    match line.split_once(": ") {
        Some((path, message)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            json!({"path": path, "message": message})
        }
        _ => json!({"path": null, "message": line}),
    }
}

fn conflict(message: String, extra: Value) -> (u16, Value) {
    let mut v = json!({"error": {"message": message, "type": "invalid_request_error"}});
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    (409, v)
}

/// `PUT /admin/config/file` with the body's `text` and `version`.
pub async fn put(sys: &System, body: &Value) -> Result<(u16, Value), GatewayError> {
    let Some(path) = sys.config_file() else {
        return Ok(conflict(NO_FILE.to_owned(), json!({})));
    };
    let text = body
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::bad_request("missing string field `text`"))?;
    let version = body.get("version").and_then(Value::as_str).ok_or_else(|| {
        GatewayError::bad_request("missing string field `version` (from GET /admin/config/file)")
    })?;
    let _one = EDIT.lock().await;
    let current = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let now = version_of(&current);
    if now != version {
        return Ok(conflict(
            format!(
                "{} changed since it was read: load it again and redo the edit",
                path.display()
            ),
            json!({"version": now}),
        ));
    }
    let temp = temp_path(path);
    write_file(&temp, text.as_bytes(), path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        GatewayError::internal(format!("cannot write {}: {e}", temp.display()))
    })?;
    // The check `apiproxy -t` makes, on the new text where it will live
    // (its directory: filter files and relative paths resolve the same).
    let checked = Config::load(&temp);
    if let Err(problems) = &checked {
        let _ = std::fs::remove_file(&temp);
        let (t, p) = (temp.display().to_string(), path.display().to_string());
        let problems: Vec<String> = problems.iter().map(|l| l.replace(&t, &p)).collect();
        log::warn!(
            "config edit from the console refused, {} unchanged: {}",
            path.display(),
            problems.join("; ")
        );
        return Ok((
            400,
            json!({
                "error": {
                    "message": format!("the new config is refused: {}", problems.join("; ")),
                    "type": "invalid_request_error",
                },
                "problems": problems.iter().map(|l| problem_json(l)).collect::<Vec<_>>(),
            }),
        ));
    }
    // What `-t` prints as warnings goes back too (the edit is taken).
    let warnings = checked.map(|c| c.warnings()).unwrap_or_default();
    let backup = backup_path(path);
    replace(&temp, path, &backup).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        GatewayError::internal(format!("cannot replace {}: {e}", path.display()))
    })?;
    log::info!(
        "config file {} written from the console (previous kept as {})",
        path.display(),
        backup.display()
    );
    let written = json!({
        "written": true,
        "version": version_of(text.as_bytes()),
        "backup": backup.display().to_string(),
        "warnings": warnings,
    });
    match sys.reload.reload(RELOAD_WAIT).await {
        Ok(o) if o.ok => {
            let mut v = written;
            v["reload"] = json!({"number": o.number, "at_ms": o.at_ms, "result": "ok"});
            Ok((200, v))
        }
        // Checked just before, so only the environment (a `${VAR}` unset
        // since) can make the reload refuse it.
        Ok(o) => Err(GatewayError::internal(format!(
            "{} was written but its reload was refused: {}",
            path.display(),
            o.problems.join("; ")
        ))),
        Err(e) => Err(unavailable(e)),
    }
}

/// A scratch file beside `path` (same directory: the rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".console-{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to a new `temp`, flushed to disk, with `like`'s
/// permissions (a config holding keys stays private).
fn write_file(temp: &Path, bytes: &[u8], like: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    f.write_all(bytes)?;
    if let Ok(m) = std::fs::metadata(like) {
        f.set_permissions(m.permissions())?;
    }
    f.sync_all()
}

/// The previous file copied to `backup`, then `temp` renamed over `path`.
fn replace(temp: &Path, path: &Path, backup: &Path) -> std::io::Result<()> {
    std::fs::copy(path, backup)?;
    std::fs::rename(temp, path)?;
    if let Some(dir) = path.parent() {
        // The rename itself on disk (best effort: not every filesystem can).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_split_at_their_key_path() {
        assert_eq!(
            problem_json("providers[0].base_url: must be an http(s) URL"),
            json!({"path": "providers[0].base_url", "message": "must be an http(s) URL"})
        );
        assert_eq!(
            problem_json("did not parse: bad indent"),
            json!({"path": null, "message": "did not parse: bad indent"})
        );
    }

    #[test]
    fn backups_and_scratch_files_sit_beside_the_file() {
        let p = Path::new("/etc/apiproxy/apiproxy.yaml");
        assert_eq!(backup_path(p), Path::new("/etc/apiproxy/apiproxy.yaml.bak"));
        assert!(temp_path(p)
            .to_string_lossy()
            .starts_with("/etc/apiproxy/.apiproxy.yaml.console-"));
    }
}
