//! Same-format traffic: the body goes through as the provider wrote it, but
//! the gateway still reads its usage and shows the logical model name.

use apiproxy_translate::{Format, Usage};
use serde::Deserialize;
use serde_json::{Map, Value};

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// Usage in a response body or stream event of format `fmt`, if it has one.
pub fn usage_of(fmt: Format, v: &Value) -> Option<Usage> {
    match fmt {
        Format::OpenAiChat => {
            let u = v.get("usage").filter(|u| u.is_object())?;
            Some(Usage {
                input_tokens: u64_at(u, &["prompt_tokens"]).unwrap_or(0),
                output_tokens: u64_at(u, &["completion_tokens"]).unwrap_or(0),
                cached_input_tokens: u64_at(u, &["prompt_tokens_details", "cached_tokens"]),
                cache_creation_input_tokens: None,
                reasoning_tokens: u64_at(u, &["completion_tokens_details", "reasoning_tokens"]),
            })
        }
        Format::OpenAiResponses => {
            // A response body, or a stream event carrying the response.
            let r = v.get("response").unwrap_or(v);
            let u = r.get("usage").filter(|u| u.is_object())?;
            Some(Usage {
                input_tokens: u64_at(u, &["input_tokens"]).unwrap_or(0),
                output_tokens: u64_at(u, &["output_tokens"]).unwrap_or(0),
                cached_input_tokens: u64_at(u, &["input_tokens_details", "cached_tokens"]),
                cache_creation_input_tokens: None,
                reasoning_tokens: u64_at(u, &["output_tokens_details", "reasoning_tokens"]),
            })
        }
        Format::Anthropic => {
            // A message body, `message_start` (message.usage) or `message_delta` (usage).
            let u = v
                .get("usage")
                .or_else(|| v.get("message").and_then(|m| m.get("usage")))
                .filter(|u| u.is_object())?;
            let read = u64_at(u, &["cache_read_input_tokens"]);
            let created = u64_at(u, &["cache_creation_input_tokens"]);
            Some(Usage {
                input_tokens: u64_at(u, &["input_tokens"]).unwrap_or(0)
                    + read.unwrap_or(0)
                    + created.unwrap_or(0),
                output_tokens: u64_at(u, &["output_tokens"]).unwrap_or(0),
                cached_input_tokens: read,
                cache_creation_input_tokens: created,
                reasoning_tokens: None,
            })
        }
        Format::Gemini => {
            let u = v.get("usageMetadata").filter(|u| u.is_object())?;
            let thoughts = u64_at(u, &["thoughtsTokenCount"]);
            Some(Usage {
                input_tokens: u64_at(u, &["promptTokenCount"]).unwrap_or(0),
                output_tokens: u64_at(u, &["candidatesTokenCount"]).unwrap_or(0)
                    + thoughts.unwrap_or(0),
                cached_input_tokens: u64_at(u, &["cachedContentTokenCount"]),
                cache_creation_input_tokens: None,
                reasoning_tokens: thoughts,
            })
        }
    }
}

/// The top-level keys [`usage_of`] reads; everything else in the document is
/// checked for validity and skipped without being built.
#[derive(Deserialize)]
struct UsageKeys {
    usage: Option<Value>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<Value>,
    message: Option<Value>,
    response: Option<Value>,
}

/// [`usage_of`] for a whole JSON body, without building a `Value` of the
/// whole answer (the common passthrough case reads nothing else of it).
/// `Err` when `body` is not valid JSON.
pub fn usage_of_json(fmt: Format, body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    match serde_json::from_slice::<UsageKeys>(body) {
        Ok(k) => {
            let mut m = Map::new();
            let keys = [
                ("usage", k.usage),
                ("usageMetadata", k.usage_metadata),
                ("message", k.message),
                ("response", k.response),
            ];
            for (key, v) in keys {
                if let Some(v) = v {
                    m.insert(key.to_owned(), v);
                }
            }
            Ok(usage_of(fmt, &Value::Object(m)))
        }
        // Not an object, a key of another type than expected, a duplicate
        // key...: the general path decides, exactly as before.
        Err(_) => serde_json::from_slice::<Value>(body).map(|v| usage_of(fmt, &v)),
    }
}

/// Merges a usage report into what a stream reported before: Anthropic
/// splits it over `message_start` (input) and `message_delta` (output).
pub fn merge_usage(old: Option<Usage>, new: Usage) -> Usage {
    match old {
        Some(o) => Usage {
            input_tokens: if new.input_tokens > 0 {
                new.input_tokens
            } else {
                o.input_tokens
            },
            output_tokens: new.output_tokens.max(o.output_tokens),
            cached_input_tokens: new.cached_input_tokens.or(o.cached_input_tokens),
            cache_creation_input_tokens: new
                .cache_creation_input_tokens
                .or(o.cache_creation_input_tokens),
            reasoning_tokens: new.reasoning_tokens.or(o.reasoning_tokens),
        },
        None => new,
    }
}

/// The JSON key holding the model name in `fmt`'s responses.
pub fn model_key(fmt: Format) -> &'static str {
    match fmt {
        Format::Gemini => "modelVersion",
        _ => "model",
    }
}

/// Replaces the value of the first `"<key>": "<string>"` in a JSON text.
/// Inside JSON strings quotes are escaped, so the first raw occurrence of
/// `"key":` is a real key. `None` when there is nothing to replace.
pub fn rewrite_string_field(json: &str, key: &str, new_value: &str) -> Option<String> {
    let pat = format!("\"{key}\"");
    let mut from = 0;
    while let Some(p) = json[from..].find(&pat) {
        let after_key = from + p + pat.len();
        let rest = &json[after_key..];
        let trimmed = rest.trim_start();
        if let Some(val) = trimmed.strip_prefix(':') {
            let val_trim = val.trim_start();
            if let Some(body) = val_trim.strip_prefix('"') {
                let start = json.len() - body.len();
                // Find the closing quote, honouring escapes.
                let mut end = None;
                let mut esc = false;
                for (i, b) in body.bytes().enumerate() {
                    match (esc, b) {
                        (true, _) => esc = false,
                        (false, b'\\') => esc = true,
                        (false, b'"') => {
                            end = Some(start + i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end?;
                let escaped = serde_json::to_string(new_value).ok()?;
                let mut out = String::with_capacity(json.len() + new_value.len());
                out.push_str(&json[..start - 1]);
                out.push_str(&escaped);
                out.push_str(&json[end + 1..]);
                return Some(out);
            }
            return None;
        }
        from = after_key;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_in_each_format() {
        let o = json!({"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4}}});
        let u = usage_of(Format::OpenAiChat, &o).unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (10, 5, Some(4))
        );
        let a = json!({"type":"message_start","message":{"usage":{"input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1}}});
        let u = usage_of(Format::Anthropic, &a).unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (10, Some(7)));
        let g = json!({"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2,"thoughtsTokenCount":3}});
        assert_eq!(usage_of(Format::Gemini, &g).unwrap().output_tokens, 5);
        let r = json!({"type":"response.completed","response":{"usage":{"input_tokens":1,"output_tokens":2}}});
        assert_eq!(usage_of(Format::OpenAiResponses, &r).unwrap().total(), 3);
        assert!(usage_of(Format::OpenAiChat, &json!({"usage":null})).is_none());
        let merged = merge_usage(
            usage_of(Format::Anthropic, &a),
            Usage {
                output_tokens: 9,
                ..Default::default()
            },
        );
        assert_eq!((merged.input_tokens, merged.output_tokens), (10, 9));
    }

    #[test]
    fn usage_from_json_text_matches_usage_of() {
        let bodies = [
            r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            r#"{"type":"message","usage":{"input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1}}"#,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2,"thoughtsTokenCount":3}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":1,"output_tokens":2}},"usage":{"input_tokens":9}}"#,
            r#"{"usage":null,"response":null}"#,
            r#"{"message":"text","usage":{"prompt_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#,
            r#"[1,2]"#,
            r#"{"choices":[]}"#,
        ];
        for body in bodies {
            let v: Value = serde_json::from_str(body).unwrap();
            for fmt in [
                Format::OpenAiChat,
                Format::OpenAiResponses,
                Format::Anthropic,
                Format::Gemini,
            ] {
                assert_eq!(
                    usage_of_json(fmt, body.as_bytes()).unwrap(),
                    usage_of(fmt, &v),
                    "{fmt:?} {body}"
                );
            }
        }
        assert!(usage_of_json(Format::OpenAiChat, b"{\"usage\":").is_err());
        assert!(usage_of_json(Format::OpenAiChat, b"").is_err());
    }

    #[test]
    fn rewrites_the_model_field() {
        let s = r#"{"id":"x","model": "gpt-4o-2024","choices":[{"delta":{"content":"\"model\":\"no\""}}]}"#;
        let out = rewrite_string_field(s, "model", "fast").unwrap();
        assert_eq!(
            out,
            r#"{"id":"x","model": "fast","choices":[{"delta":{"content":"\"model\":\"no\""}}]}"#
        );
        assert!(rewrite_string_field(r#"{"a":1}"#, "model", "x").is_none());
        let esc = rewrite_string_field(r#"{"model":"a\"b","z":1}"#, "model", "n\"q").unwrap();
        assert_eq!(esc, r#"{"model":"n\"q","z":1}"#);
    }
}
