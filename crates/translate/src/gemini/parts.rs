//! Gemini parts (`text`, `inlineData`, `fileData`, `functionCall`,
//! `functionResponse`, thought signatures) ↔ IR content, shared by requests
//! and responses, and the ids given to calls that carry none.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{err, get_any, take_any, type_name, want_object, want_string, Path};
use crate::{ContentPart, ImageSource, TranslateError};

/// A function name made safe for every format's id pattern (`[A-Za-z0-9_-]`).
fn id_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Deterministic id of the k-th call named `name` in a request.
fn request_call_id(k: usize, name: &str) -> String {
    format!("call_{k}_{}", id_safe(name))
}

/// Pairs calls and responses that carry no id.
#[derive(Default)]
pub(super) struct CallIds {
    /// Ids of the calls seen so far, by function name, in order.
    calls: HashMap<String, Vec<String>>,
    /// How many responses were seen so far, by function name.
    responses: HashMap<String, usize>,
}

impl CallIds {
    fn call(&mut self, name: &str, id: Option<String>) -> String {
        let list = self.calls.entry(name.to_owned()).or_default();
        let id = id.unwrap_or_else(|| request_call_id(list.len(), name));
        list.push(id.clone());
        id
    }

    fn response(&mut self, name: &str, id: Option<String>) -> String {
        let k = self.responses.entry(name.to_owned()).or_insert(0);
        let idx = *k;
        *k += 1;
        id.or_else(|| self.calls.get(name).and_then(|l| l.get(idx)).cloned())
            .unwrap_or_else(|| request_call_id(idx, name))
    }
}

/// An id string, treating an empty one as absent.
fn opt_id(v: Option<Value>, path: Path<'_>) -> Result<Option<String>, TranslateError> {
    match v {
        None => Ok(None),
        Some(v) => {
            let s = want_string(v, path)?;
            Ok((!s.is_empty()).then_some(s))
        }
    }
}

/// How function calls without an id get one.
pub(super) enum IdMode<'a> {
    /// Request history: deterministic, paired with responses.
    Request(&'a mut CallIds),
    /// A fresh answer: `call_<token>_<k>`, unique across answers.
    Answer { token: &'a str, next: &'a mut u32 },
}

impl IdMode<'_> {
    fn call(&mut self, name: &str, id: Option<String>) -> String {
        match self {
            IdMode::Request(ids) => ids.call(name, id),
            IdMode::Answer { token, next } => {
                let k = **next;
                **next += 1;
                id.unwrap_or_else(|| format!("call_{token}_{k}"))
            }
        }
    }

    fn response(&mut self, name: &str, id: Option<String>) -> String {
        match self {
            IdMode::Request(ids) => ids.response(name, id),
            IdMode::Answer { .. } => id.unwrap_or_else(|| request_call_id(0, name)),
        }
    }
}

fn decode_part(
    part: Value,
    path: Path<'_>,
    ids: &mut IdMode<'_>,
    out: &mut Vec<ContentPart>,
) -> Result<(), TranslateError> {
    let mut p = want_object(part, path)?;
    let signature = match take_any(&mut p, "thoughtSignature", "thought_signature") {
        Some(v) => Some(want_string(v, Path::Field(&path, "thoughtSignature"))?),
        None => None,
    }
    .filter(|s| !s.is_empty());
    let thought = match p.remove("thought") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(err(format!(
                "{path}.thought: expected a boolean, got {}",
                type_name(&other)
            )))
        }
    };
    let push_signature = |out: &mut Vec<ContentPart>, signature: Option<String>| {
        if signature.is_some() {
            push_thinking(out, String::new(), signature);
        }
    };

    if let Some(t) = p.remove("text").filter(|v| !v.is_null()) {
        let text = want_string(t, Path::Field(&path, "text"))?;
        if thought {
            push_thinking(out, text, signature);
        } else {
            push_signature(out, signature);
            // Empty text (Gemini's closing part that only holds a
            // signature) is no content: other formats reject empty blocks.
            if !text.is_empty() {
                out.push(ContentPart::Text { text });
            }
        }
        return Ok(());
    }
    if let Some(d) = take_any(&mut p, "inlineData", "inline_data") {
        let dpath = Path::Field(&path, "inlineData");
        let mut d = want_object(d, dpath)?;
        let media_type = match take_any(&mut d, "mimeType", "mime_type") {
            Some(v) => want_string(v, Path::Field(&dpath, "mimeType"))?,
            None => return Err(err(format!("{dpath}.mimeType: required"))),
        };
        if !media_type.starts_with("image/") {
            return Err(err(format!(
                "{dpath}.mimeType: unsupported mime type {media_type:?} (only images are supported)"
            )));
        }
        let data = match d.remove("data") {
            Some(v) => want_string(v, Path::Field(&dpath, "data"))?,
            None => return Err(err(format!("{dpath}.data: required"))),
        };
        push_signature(out, signature);
        out.push(ContentPart::Image {
            source: ImageSource::Base64 { media_type, data },
        });
        return Ok(());
    }
    if let Some(d) = take_any(&mut p, "fileData", "file_data") {
        let dpath = Path::Field(&path, "fileData");
        let mut d = want_object(d, dpath)?;
        if let Some(v) = take_any(&mut d, "mimeType", "mime_type") {
            let mime = want_string(v, Path::Field(&dpath, "mimeType"))?;
            if !mime.starts_with("image/") {
                return Err(err(format!(
                    "{dpath}.mimeType: unsupported mime type {mime:?} (only images are supported)"
                )));
            }
        }
        let url = match take_any(&mut d, "fileUri", "file_uri") {
            Some(v) => want_string(v, Path::Field(&dpath, "fileUri"))?,
            None => return Err(err(format!("{dpath}.fileUri: required"))),
        };
        push_signature(out, signature);
        out.push(ContentPart::Image {
            source: ImageSource::Url { url },
        });
        return Ok(());
    }
    if let Some(c) = take_any(&mut p, "functionCall", "function_call") {
        let cpath = Path::Field(&path, "functionCall");
        let mut c = want_object(c, cpath)?;
        let name = match c.remove("name") {
            Some(v) => want_string(v, Path::Field(&cpath, "name"))?,
            None => return Err(err(format!("{cpath}.name: required"))),
        };
        let arguments = match c.remove("args") {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(other) => {
                return Err(err(format!(
                    "{cpath}.args: expected an object, got {}",
                    type_name(&other)
                )))
            }
        };
        let id = opt_id(c.remove("id"), Path::Field(&cpath, "id"))?;
        let id = ids.call(&name, id);
        push_signature(out, signature);
        out.push(ContentPart::ToolCall {
            id,
            name,
            arguments,
        });
        return Ok(());
    }
    if let Some(r) = take_any(&mut p, "functionResponse", "function_response") {
        let rpath = Path::Field(&path, "functionResponse");
        let mut r = want_object(r, rpath)?;
        let name = match r.remove("name") {
            Some(v) => want_string(v, Path::Field(&rpath, "name"))?,
            None => return Err(err(format!("{rpath}.name: required"))),
        };
        let response = match r.remove("response") {
            None | Some(Value::Null) => Map::new(),
            Some(v) => want_object(v, Path::Field(&rpath, "response"))?,
        };
        // Gemini's convention for failures: `{"error": ...}` and nothing else.
        let is_error = response.len() == 1 && response.contains_key("error");
        let id = opt_id(r.remove("id"), Path::Field(&rpath, "id"))?;
        let call_id = ids.response(&name, id);
        out.push(ContentPart::ToolResult {
            call_id,
            name: Some(name),
            content: vec![ContentPart::Text {
                text: Value::Object(response).to_string(),
            }],
            is_error,
        });
        return Ok(());
    }
    for (camel, snake) in [
        ("executableCode", "executable_code"),
        ("codeExecutionResult", "code_execution_result"),
    ] {
        if get_any(&p, camel, snake).is_some() {
            return Err(err(format!(
                "{path}.{camel}: not supported by this gateway"
            )));
        }
    }
    // A part with nothing we know but a signature (Gemini sends such parts
    // at the end of a stream): keep the signature.
    push_signature(out, signature);
    Ok(())
}

/// Appends thinking, joining it to an unsigned thinking part just before:
/// a run of thought parts and the signature that closes it (on a thought
/// part or on the part that follows) make one signed block, the shape
/// Anthropic clients know.
fn push_thinking(out: &mut Vec<ContentPart>, text: String, signature: Option<String>) {
    if let Some(ContentPart::Thinking {
        text: prev,
        signature: prev_sig,
    }) = out.last_mut()
    {
        if prev_sig.is_none() {
            prev.push_str(&text);
            *prev_sig = signature;
            return;
        }
    }
    out.push(ContentPart::Thinking { text, signature });
}

pub(super) fn decode_parts(
    parts: Value,
    path: Path<'_>,
    ids: &mut IdMode<'_>,
) -> Result<Vec<ContentPart>, TranslateError> {
    let mut out = Vec::new();
    match parts {
        Value::Array(items) => {
            out.reserve(items.len());
            for (i, part) in items.into_iter().enumerate() {
                decode_part(part, Path::Index(&path, i), ids, &mut out)?;
            }
        }
        // Lenient: a single part object, or a bare string.
        Value::String(text) => out.push(ContentPart::Text { text }),
        v @ Value::Object(_) => decode_part(v, Path::Index(&path, 0), ids, &mut out)?,
        other => {
            return Err(err(format!(
                "{path}: expected an array of parts, got {}",
                type_name(&other)
            )))
        }
    }
    Ok(out)
}

/// Encodes IR parts as Gemini parts. `request` mode drops thinking without a
/// signature (Gemini reads nothing from unsigned thought text).
pub(super) fn encode_parts(
    content: &[ContentPart],
    names: &HashMap<&str, &str>,
    request: bool,
    out: &mut Vec<Value>,
) {
    let mut pending_sig: Option<&str> = None;
    let mut pending_text: &str = "";
    for part in content {
        let mut extra: Vec<Value> = Vec::new();
        let mut v = match part {
            ContentPart::Text { text } => {
                if text.is_empty() && pending_sig.is_none() {
                    continue;
                }
                json!({ "text": text })
            }
            ContentPart::Image { source } => image_part(source),
            ContentPart::ToolCall {
                id,
                name,
                arguments,
            } => json!({"functionCall": {"id": id, "name": name, "args": args_object(arguments)}}),
            ContentPart::ToolResult {
                call_id,
                name,
                content,
                is_error,
            } => {
                let name = name
                    .as_deref()
                    .or_else(|| names.get(call_id.as_str()).copied())
                    .unwrap_or(call_id.as_str());
                let mut text = String::new();
                for c in content {
                    match c {
                        ContentPart::Text { text: t } => {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(t);
                        }
                        ContentPart::Image { source } => extra.push(image_part(source)),
                        _ => {}
                    }
                }
                // Gemini's convention: the output object, `{"error": ...}`
                // for failures.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(m)) if !*is_error || m.contains_key("error") => {
                        Value::Object(m)
                    }
                    Ok(v @ Value::Object(_)) => json!({ "error": v }),
                    _ if *is_error => json!({ "error": text }),
                    _ => json!({ "result": text }),
                };
                json!({"functionResponse": {"id": call_id, "name": name, "response": response}})
            }
            ContentPart::Thinking { text, signature } => match signature {
                // Requests: Gemini reads nothing from thought text; the
                // signature goes on the part that follows (a function call
                // must carry it on Gemini 3).
                Some(s) if request || text.is_empty() => {
                    pending_sig = Some(s);
                    pending_text = text;
                    continue;
                }
                Some(s) => json!({"text": text, "thought": true, "thoughtSignature": s}),
                None if request || text.is_empty() => continue,
                None => json!({"text": text, "thought": true}),
            },
            ContentPart::RedactedThinking { .. } => continue,
        };
        if let (Some(s), Value::Object(m)) = (pending_sig.take(), &mut v) {
            m.insert("thoughtSignature".into(), Value::String(s.to_owned()));
        }
        out.push(v);
        out.append(&mut extra);
    }
    // A signature with no part after it: a thought part carries it.
    if let Some(s) = pending_sig {
        if pending_text.is_empty() {
            out.push(json!({"text": "", "thoughtSignature": s}));
        } else {
            out.push(json!({"text": pending_text, "thought": true, "thoughtSignature": s}));
        }
    }
}

fn image_part(source: &ImageSource) -> Value {
    match source {
        ImageSource::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        ImageSource::Url { url } => {
            // A data: URL that reached us as a URL is sent inline.
            if let Some(rest) = url.strip_prefix("data:") {
                if let Some((meta, data)) = rest.split_once(',') {
                    if let Some(mime) = meta.strip_suffix(";base64") {
                        return json!({"inlineData": {"mimeType": mime, "data": data}});
                    }
                }
            }
            json!({"fileData": {"mimeType": guess_image_mime(url), "fileUri": url}})
        }
    }
}

fn guess_image_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => "image/jpeg",
    }
}

/// The arguments JSON text as the object Gemini wants.
pub(super) fn args_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({ "value": other }),
        Err(_) => json!({}),
    }
}
