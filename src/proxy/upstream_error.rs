//! Reading an upstream's error answer: its message, safe to show a client
//! (a refused provider key is never described, and no provider key appears).

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

/// Replaces every provider key found in `s`.
fn scrub(s: &str, keys: &[String]) -> String {
    keys.iter()
        .filter(|k| k.len() >= 4)
        .fold(s.to_owned(), |acc, k| acc.replace(k.as_str(), "***"))
}

pub fn contains_key(body: &[u8], keys: &[String]) -> bool {
    keys.iter()
        .filter(|k| k.len() >= 4)
        .any(|k| body.windows(k.len()).any(|w| w == k.as_bytes()))
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
