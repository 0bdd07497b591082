//! Reading an upstream's error answer: its message, safe to show a client
//! (a refused provider key is never described, and no provider key appears).

use bytes::BytesMut;
use serde_json::Value;

/// `": <message>"` from an upstream error body in any of the formats, safe
/// to show a client: a refused provider key is not described (providers echo
/// parts of it), and no provider key appears in it.
pub fn upstream_message(body: &[u8], status: u16, keys: &[String]) -> String {
    if matches!(status, 401 | 403) {
        return ": the provider refused the gateway's credentials".to_owned();
    }
    let msg = scrub(&raw_upstream_message(body), keys);
    if msg.is_empty() {
        msg
    } else {
        format!(": {msg}")
    }
}

/// Keys shorter than this are never searched for: too short to be a
/// secret, and they would match ordinary text.
const MIN_KEY_LEN: usize = 4;

/// The provider keys worth searching for.
fn searched(keys: &[String]) -> impl Iterator<Item = &[u8]> {
    keys.iter()
        .map(String::as_bytes)
        .filter(|k| k.len() >= MIN_KEY_LEN)
}

/// `s` with every provider key replaced by `***`.
pub fn scrub(s: &str, keys: &[String]) -> String {
    keys.iter()
        .filter(|k| k.len() >= MIN_KEY_LEN)
        .fold(s.to_owned(), |acc, k| acc.replace(k.as_str(), "***"))
}

/// Replaces every provider key in `out` (whole SSE events, so a key is
/// never split across two calls) with `***`.
pub fn scrub_bytes(out: &mut BytesMut, keys: &[String]) {
    for key in searched(keys) {
        if memchr::memmem::find(out, key).is_none() {
            continue;
        }
        let mut clean = BytesMut::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(i) = memchr::memmem::find(rest, key) {
            clean.extend_from_slice(&rest[..i]);
            clean.extend_from_slice(b"***");
            rest = &rest[i + key.len()..];
        }
        clean.extend_from_slice(rest);
        *out = clean;
    }
}

/// Whether `body` holds a provider key.
pub fn contains_key(body: &[u8], keys: &[String]) -> bool {
    searched(keys).any(|k| memchr::memmem::find(body, k).is_some())
}

fn raw_upstream_message(body: &[u8]) -> String {
    let msg = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error").unwrap_or(&v);
        e.get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .map(str::to_owned)
    });
    match msg {
        Some(m) if !m.is_empty() => truncate(&m, 300).to_owned(),
        _ => truncate(&String::from_utf8_lossy(body), 300).to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_messages() {
        let keys = vec!["sk-secret-123".to_owned()];
        assert_eq!(
            upstream_message(
                br#"{"error":{"message":"Incorrect API key provided: sk-se****123"}}"#,
                401,
                &keys
            ),
            ": the provider refused the gateway's credentials"
        );
        assert_eq!(
            upstream_message(br#"{"error":"key sk-secret-123 is bad"}"#, 400, &keys),
            ": key *** is bad"
        );
        assert!(contains_key(b"xx sk-secret-123 yy", &keys));
        assert!(!contains_key(b"xx sk-secret yy", &keys));
        assert_eq!(
            upstream_message(br#"{"error":{"message":"bad model"}}"#, 400, &[]),
            ": bad model"
        );
        assert_eq!(upstream_message(b"oops", 500, &[]), ": oops");
        assert_eq!(upstream_message(b"", 500, &[]), "");
    }
}
