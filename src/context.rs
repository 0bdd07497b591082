//! Context snippets: what is kept of a request and its answer under the
//! client's `X-Session-Id`, bounded in characters per string
//! (`context.max_chars`) and in bytes per entry (`context.max_entry_bytes`:
//! keys, numbers, arrays and punctuation count too), and who may read them.

use apiproxy_store::{json_size, Store};
use apiproxy_translate::{Format, Usage};
use serde_json::{json, Value};

use crate::body::{Field, Last, RawBody};

/// Shortens every string in `v` to at most `max` characters.
pub fn truncate_strings(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => {
            if let Some((i, _)) = s.char_indices().nth(max) {
                s.truncate(i);
                s.push('…');
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| truncate_strings(x, max)),
        Value::Object(o) => o.values_mut().for_each(|x| truncate_strings(x, max)),
        _ => {}
    }
}

/// The part of a request worth keeping as context: the newest turn (last
/// message / content / input item), strings cut to `max` characters. Only
/// that turn is decoded from the client's bytes.
pub fn request_snippet(fmt: Format, body: &RawBody, model: &str, max: usize) -> Value {
    let last = match fmt {
        Format::OpenAiChat | Format::Anthropic | Format::Bedrock => {
            body.last_element(Field::Messages)
        }
        Format::Gemini => body.last_element(Field::Contents),
        Format::OpenAiResponses => match body.last_element(Field::Input) {
            // `input` as one string (or any other single value).
            Last::NotAnArray => body
                .value(Field::Input)
                .map_or(Last::Nothing, Last::Element),
            last => last,
        },
    };
    let last = match last {
        Last::Element(v) => Some(v),
        Last::Nothing | Last::NotAnArray => None,
    };
    let mut snippet = json!({
        "model": model,
        "format": fmt.as_str(),
        "message": last.unwrap_or(Value::Null),
        "received_at": unix_seconds(),
    });
    truncate_strings(&mut snippet, max);
    snippet
}

/// The answer side of an entry.
pub struct Answered<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub text: String,
    pub usage: Option<Usage>,
}

/// One context entry (request snippet and answer), made to fit in
/// `max_bytes` of JSON; `None` when even its skeleton does not fit.
pub fn entry(request: Value, answer: Answered<'_>, max_bytes: usize) -> Option<Value> {
    let usage = answer
        .usage
        .map(|u| json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}));
    let entry = json!({
        "request": request,
        "response": {
            "provider": answer.provider,
            "model": answer.model,
            "text": answer.text,
            "usage": usage,
        },
        "timestamp": unix_seconds(),
    });
    fit(entry, max_bytes)
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Shrinks an entry until its JSON is at most `max_bytes`: strings shorter
/// and shorter, then the request's message as a cut JSON preview, then
/// without message and text at all.
fn fit(mut entry: Value, max_bytes: usize) -> Option<Value> {
    if json_size(&entry) <= max_bytes {
        return Some(entry);
    }
    let mut chars = max_bytes / 2;
    while chars >= 16 {
        for part in ["request", "response"] {
            if let Some(v) = entry.get_mut(part) {
                truncate_strings(v, chars);
            }
        }
        if json_size(&entry) <= max_bytes {
            return Some(entry);
        }
        chars /= 2;
    }
    // Many small values (keys, numbers, arrays): a preview of the message's
    // JSON text instead of the structure.
    if let Some(message) = entry.pointer_mut("/request/message") {
        let mut preview = message.to_string();
        let cut = (0..=max_bytes / 4)
            .rev()
            .find(|&i| preview.is_char_boundary(i))
            .unwrap_or(0);
        preview.truncate(cut);
        *message = json!({"truncated": true, "preview": preview});
    }
    if json_size(&entry) <= max_bytes {
        return Some(entry);
    }
    if let Some(message) = entry.pointer_mut("/request/message") {
        *message = json!({"truncated": true});
    }
    if let Some(text) = entry.pointer_mut("/response/text") {
        *text = Value::String(String::new());
    }
    (json_size(&entry) <= max_bytes).then_some(entry)
}

/// A session's owner and its entries, newest first by the time each request
/// arrived (a client that waits for one answer before its next question
/// sees them in the order it asked). Replicas write entries in the
/// background, so the store's order is the order the writes landed, which a
/// slower replica can swap.
pub async fn read(store: &dyn Store, session: &str) -> (Option<String>, Vec<Value>) {
    let (owner, mut history) = store.get_context(session).await;
    // Entries written before `received_at` existed: when their answer ended.
    let arrived = |v: &Value| {
        v["request"]["received_at"]
            .as_f64()
            .or_else(|| v["timestamp"].as_f64())
            .unwrap_or(0.0)
    };
    // Stable: entries of one instant keep the store's order.
    history.sort_by(|a, b| arrived(b).total_cmp(&arrived(a)));
    (owner, history)
}

/// Whether `reader` (a client key name; `None`: an admin key or an open
/// gateway) may read a session's context written by `owner`. A client key
/// reads only what it wrote: context with no recorded owner is never served
/// to one (an unknown session's empty history is).
pub fn may_read(reader: Option<&str>, owner: Option<&str>, history_is_empty: bool) -> bool {
    match reader {
        None => true,
        Some(reader) => history_is_empty || owner == Some(reader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(text: &str) -> Answered<'_> {
        Answered {
            provider: "p",
            model: "m",
            text: text.to_string(),
            usage: None,
        }
    }

    fn raw(v: Value) -> RawBody {
        RawBody::parse(v.to_string().into()).expect("object")
    }

    #[test]
    fn snippets_keep_the_newest_turn_cut_short() {
        let body = raw(
            json!({"messages": [{"role": "user", "content": "old"}, {"role": "user", "content": "abcdefghij"}]}),
        );
        let s = request_snippet(Format::OpenAiChat, &body, "fast", 4);
        assert_eq!(s["message"]["content"], "abcd…");
        assert_eq!(s["model"], "fast");
        let r = request_snippet(
            Format::OpenAiResponses,
            &raw(json!({"input": "hello"})),
            "m",
            100,
        );
        assert_eq!(r["message"], "hello");
        let items = raw(
            json!({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
        );
        let r = request_snippet(Format::OpenAiResponses, &items, "m", 100);
        assert_eq!(r["message"]["content"], "b");
        let g = raw(json!({"contents": [{"parts": [{"text": "x"}]}]}));
        let r = request_snippet(Format::Gemini, &g, "m", 100);
        assert_eq!(r["message"]["parts"][0]["text"], "x");
        let none = request_snippet(Format::Anthropic, &raw(json!({"messages": "x"})), "m", 9);
        assert_eq!(none["message"], Value::Null);
    }

    #[test]
    fn long_strings_are_cut_to_fit() {
        let request = json!({"model": "m", "message": {"content": "x".repeat(5000)}});
        let e = entry(request, answered(&"y".repeat(5000)), 1000).expect("fits");
        assert!(json_size(&e) <= 1000, "{}", json_size(&e));
        assert!(e["request"]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("xxx"));
    }

    #[test]
    fn keys_numbers_and_arrays_count() {
        // No long string anywhere: thousands of keys and numbers.
        let many: serde_json::Map<String, Value> = (0..2000)
            .map(|i| (format!("k{i}"), json!([i, i, i])))
            .collect();
        let request = json!({"model": "m", "message": many});
        let e = entry(request, answered("ok"), 2000).expect("fits");
        assert!(json_size(&e) <= 2000, "{}", json_size(&e));
        assert_eq!(e["request"]["message"]["truncated"], true);
        assert_eq!(e["response"]["text"], "ok");
        // A bound too small for even the skeleton keeps nothing.
        assert_eq!(entry(json!({"message": 1}), answered("ok"), 20), None);
    }

    #[test]
    fn client_keys_read_only_their_own_context() {
        assert!(may_read(Some("alice"), Some("alice"), false));
        assert!(!may_read(Some("bob"), Some("alice"), false));
        assert!(
            !may_read(Some("bob"), None, false),
            "no owner: never served to a key"
        );
        assert!(may_read(Some("bob"), None, true), "an empty history is");
        assert!(may_read(None, None, false), "admin or open gateway");
    }
}
