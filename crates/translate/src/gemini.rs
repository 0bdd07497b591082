//! Gemini `generateContent` / `streamGenerateContent?alt=sse` wire format.
//!
//! Client side: what the Google GenAI SDKs send (camelCase or snake_case
//! field names, both accepted) and expect back. Provider side: what the
//! Gemini API accepts (camelCase) and returns. The model lives in the URL
//! path, never in the body.
//!
//! Conventions worth knowing:
//! - Usage: the IR's `output_tokens` includes reasoning; Gemini's
//!   `candidatesTokenCount` excludes `thoughtsTokenCount`.
//! - Tool call ids: Gemini calls often carry none. Ids are synthesized so a
//!   `functionCall` and its later `functionResponse` get the same id (the k-th
//!   response named X pairs with the k-th call named X).
//! - Thought signatures: a `thought` part's own signature stays on its
//!   [`ContentPart::Thinking`]; a signature on any other part becomes an
//!   empty `Thinking { text: "", signature }` placed right before that part,
//!   and the encoders put it back on the part that follows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::{
    sse, ChatRequest, ChatResponse, ContentPart, FinishReason, Format, ImageSource, Message,
    Reasoning, ResponseFormat, Role, SseEvent, StreamDecode, StreamEncode, StreamEvent,
    StreamOptions, Tool, ToolChoice, TranslateError, Usage,
};

/// Dummy signature Google documents for function calls whose real signature
/// is unknown (history from another model); Gemini 3 rejects unsigned calls.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn err(msg: impl Into<String>) -> TranslateError {
    TranslateError::new(msg)
}

/// Removes `camel` and `snake` from `obj`; the first non-null one wins.
fn take_any(obj: &mut Map<String, Value>, camel: &str, snake: &str) -> Option<Value> {
    let a = obj.remove(camel).filter(|v| !v.is_null());
    let b = obj.remove(snake).filter(|v| !v.is_null());
    a.or(b)
}

fn get_any<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel)
        .filter(|v| !v.is_null())
        .or_else(|| obj.get(snake).filter(|v| !v.is_null()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON path built on the stack, formatted only when an error names it.
#[derive(Clone, Copy)]
enum Path<'a> {
    Name(&'a str),
    Index(&'a Path<'a>, usize),
    Field(&'a Path<'a>, &'a str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Name(s) => f.write_str(s),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
            Path::Field(p, n) => write!(f, "{p}.{n}"),
        }
    }
}

fn want_string(v: Value, path: impl std::fmt::Display) -> Result<String, TranslateError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(err(format!(
            "{path}: expected a string, got {}",
            type_name(&other)
        ))),
    }
}

fn want_object(
    v: Value,
    path: impl std::fmt::Display,
) -> Result<Map<String, Value>, TranslateError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(err(format!(
            "{path}: expected an object, got {}",
            type_name(&other)
        ))),
    }
}

fn want_f64(v: &Value, path: impl std::fmt::Display) -> Result<f64, TranslateError> {
    v.as_f64()
        .ok_or_else(|| err(format!("{path}: expected a number, got {}", type_name(v))))
}

fn want_u64(v: &Value, path: impl std::fmt::Display) -> Result<u64, TranslateError> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    // 1024.0 is a fine token count.
    match v.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
        _ => Err(err(format!(
            "{path}: expected a non-negative integer, got {}",
            type_name(v)
        ))),
    }
}

/// A fresh, process-unique token (no rand crate: time and a counter).
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 over time and counter: distinct for distinct inputs.
    let mut z = nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{z:016x}{:04x}", n & 0xffff)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
struct CallIds {
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

// ---------------------------------------------------------------------------
// Parts (shared by requests and responses)
// ---------------------------------------------------------------------------

/// How function calls without an id get one.
enum IdMode<'a> {
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

fn decode_parts(
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
fn encode_parts(
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
fn args_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({ "value": other }),
        Err(_) => json!({}),
    }
}

// ---------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------

/// A Gemini (OpenAPI-subset) schema made plain JSON Schema: lowercase types,
/// `nullable` folded into the type, `propertyOrdering` dropped.
fn schema_from_gemini(v: Value, depth: u32) -> Value {
    let Value::Object(mut m) = v else { return v };
    if depth > 64 {
        return Value::Object(m);
    }
    m.remove("propertyOrdering");
    let nullable = matches!(m.remove("nullable"), Some(Value::Bool(true)));
    if let Some(Value::String(t)) = m.get_mut("type") {
        t.make_ascii_lowercase();
    }
    if nullable {
        if let Some(Value::String(t)) = m.remove("type") {
            m.insert("type".into(), json!([t, "null"]));
        }
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        for (_, p) in props.iter_mut() {
            *p = schema_from_gemini(p.take(), depth + 1);
        }
    }
    if let Some(items) = m.get_mut("items") {
        *items = schema_from_gemini(items.take(), depth + 1);
    }
    if let Some(Value::Array(list)) = m.get_mut("anyOf") {
        for s in list.iter_mut() {
            *s = schema_from_gemini(s.take(), depth + 1);
        }
    }
    Value::Object(m)
}

/// Keys of a Gemini `Schema` that are copied as they are.
const GEMINI_SCHEMA_PLAIN_KEYS: &[&str] = &[
    "title",
    "description",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "pattern",
    "example",
    "default",
    "propertyOrdering",
];

/// A JSON Schema made a Gemini `parameters` schema (OpenAPI subset). Kept:
/// type (a type list becomes one type + `nullable`), nullable, enum (strings
/// only), format (date-time/enum for strings, float/double/int32/int64 for
/// numbers), properties, required (only names in properties), items, anyOf
/// (oneOf is read as anyOf, a lone allOf is inlined), `$ref` to `#/$defs` or
/// `#/definitions` (inlined), const (as a one-value enum) and the keys in
/// [`GEMINI_SCHEMA_PLAIN_KEYS`]. Dropped: everything else, notably
/// `$schema`, `$id`, `$defs`, `additionalProperties`, `strict`,
/// `exclusiveMinimum`/`exclusiveMaximum`, `examples`, `not`,
/// `patternProperties`.
fn schema_to_gemini(s: &Value, root: &Value, depth: u32) -> Map<String, Value> {
    let mut out = Map::new();
    let Value::Object(m) = s else { return out };
    if depth > 32 {
        return out;
    }
    if let Some(Value::String(r)) = m.get("$ref") {
        let target = r
            .strip_prefix("#/$defs/")
            .map(|n| root.get("$defs").and_then(|d| d.get(n)))
            .or_else(|| {
                r.strip_prefix("#/definitions/")
                    .map(|n| root.get("definitions").and_then(|d| d.get(n)))
            })
            .flatten();
        if let Some(t) = target {
            out = schema_to_gemini(t, root, depth + 1);
        }
    }
    let mut nullable = matches!(m.get("nullable"), Some(Value::Bool(true)));
    match m.get("type") {
        Some(Value::String(t)) if t == "null" => nullable = true,
        Some(Value::String(t)) => {
            out.insert("type".into(), Value::String(t.to_ascii_lowercase()));
        }
        Some(Value::Array(ts)) => {
            let mut first = None;
            for t in ts.iter().filter_map(Value::as_str) {
                if t == "null" {
                    nullable = true;
                } else if first.is_none() {
                    first = Some(t.to_ascii_lowercase());
                }
            }
            if let Some(t) = first {
                out.insert("type".into(), Value::String(t));
            }
        }
        _ => {}
    }
    // anyOf / oneOf, with a {"type":"null"} branch folded into nullable.
    let any = m
        .get("anyOf")
        .or_else(|| m.get("oneOf"))
        .and_then(Value::as_array);
    if let Some(list) = any {
        let mut branches: Vec<Map<String, Value>> = Vec::new();
        for b in list {
            if b.get("type").and_then(Value::as_str) == Some("null") {
                nullable = true;
            } else {
                branches.push(schema_to_gemini(b, root, depth + 1));
            }
        }
        if branches.len() == 1 {
            for (k, v) in branches.pop().unwrap_or_default() {
                out.entry(k).or_insert(v);
            }
        } else if !branches.is_empty() {
            out.insert(
                "anyOf".into(),
                Value::Array(branches.into_iter().map(Value::Object).collect()),
            );
        }
    }
    if let Some(Value::Array(all)) = m.get("allOf") {
        for b in all {
            for (k, v) in schema_to_gemini(b, root, depth + 1) {
                out.entry(k).or_insert(v);
            }
        }
    }
    for key in GEMINI_SCHEMA_PLAIN_KEYS {
        if let Some(v) = m.get(*key) {
            out.insert((*key).into(), v.clone());
        }
    }
    let ty = out.get("type").and_then(Value::as_str).map(str::to_owned);
    let enum_values = m
        .get("enum")
        .cloned()
        .or_else(|| m.get("const").map(|c| Value::Array(vec![c.clone()])));
    if let Some(Value::Array(vals)) = enum_values {
        if !vals.is_empty() && vals.iter().all(Value::is_string) {
            out.insert("enum".into(), Value::Array(vals));
            out.entry("type").or_insert_with(|| json!("string"));
        }
    }
    if let Some(Value::String(f)) = m.get("format") {
        let ok = match ty.as_deref() {
            Some("string") => matches!(f.as_str(), "date-time" | "enum"),
            Some("number" | "integer") => {
                matches!(f.as_str(), "float" | "double" | "int32" | "int64")
            }
            _ => false,
        };
        if ok {
            out.insert("format".into(), Value::String(f.clone()));
        }
    }
    if let Some(Value::Object(props)) = m.get("properties") {
        let mut gp = Map::new();
        for (k, v) in props {
            gp.insert(
                k.clone(),
                Value::Object(schema_to_gemini(v, root, depth + 1)),
            );
        }
        if let Some(Value::Array(req)) = m.get("required") {
            let req: Vec<Value> = req
                .iter()
                .filter(|r| r.as_str().is_some_and(|r| gp.contains_key(r)))
                .cloned()
                .collect();
            if !req.is_empty() {
                out.insert("required".into(), Value::Array(req));
            }
        }
        if !gp.is_empty() {
            out.insert("properties".into(), Value::Object(gp));
        }
    }
    if let Some(items) = m.get("items") {
        let items = match items {
            Value::Array(list) => list.first().unwrap_or(&Value::Null),
            other => other,
        };
        out.insert(
            "items".into(),
            Value::Object(schema_to_gemini(items, root, depth + 1)),
        );
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    out
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

fn role_of(m: &mut Map<String, Value>, path: Path<'_>) -> Result<Role, TranslateError> {
    match m.remove("role") {
        None | Some(Value::Null) => Ok(Role::User),
        Some(Value::String(r)) => match r.as_str() {
            "user" | "function" | "tool" | "" => Ok(Role::User),
            "model" | "assistant" => Ok(Role::Assistant),
            other => Err(err(format!(
                "{path}.role: unknown role {other:?} (expected \"user\" or \"model\")"
            ))),
        },
        Some(other) => Err(err(format!(
            "{path}.role: expected a string, got {}",
            type_name(&other)
        ))),
    }
}

fn decode_system(v: Value, path: Path<'_>) -> Result<Vec<ContentPart>, TranslateError> {
    let mut ids = CallIds::default();
    let mut mode = IdMode::Request(&mut ids);
    match v {
        Value::String(text) => Ok(vec![ContentPart::Text { text }]),
        Value::Object(mut m) => match m.remove("parts") {
            Some(parts) => decode_parts(parts, Path::Field(&path, "parts"), &mut mode),
            // A lone part object (`{"text": "..."}`).
            None => decode_parts(Value::Object(m), path, &mut mode),
        },
        Value::Array(_) => decode_parts(v, path, &mut mode),
        other => Err(err(format!(
            "{path}: expected a string or a content object, got {}",
            type_name(&other)
        ))),
    }
}

pub fn decode_request(body: Value) -> Result<ChatRequest, TranslateError> {
    let mut obj = want_object(body, "request body")?;
    let mut req = ChatRequest::default();
    let mut ids = CallIds::default();

    if let Some(si) = take_any(&mut obj, "systemInstruction", "system_instruction") {
        req.system = decode_system(si, Path::Name("systemInstruction"))?;
    }

    let (contents, field) = match obj.remove("contents").filter(|v| !v.is_null()) {
        Some(c) => (c, "contents"),
        None => match obj.remove("input").filter(|v| !v.is_null()) {
            Some(c) => (c, "input"),
            None => return Err(err("contents: required")),
        },
    };
    let items = match contents {
        Value::String(text) => vec![Value::String(text)],
        v @ Value::Object(_) => vec![v],
        Value::Array(items) => items,
        other => {
            return Err(err(format!(
                "{field}: expected an array of contents, got {}",
                type_name(&other)
            )))
        }
    };
    req.messages.reserve(items.len());
    let root = Path::Name(field);
    for (i, item) in items.into_iter().enumerate() {
        let path = Path::Index(&root, i);
        match item {
            Value::String(text) => req.messages.push(Message {
                role: Role::User,
                content: vec![ContentPart::Text { text }],
            }),
            Value::Object(mut m) => {
                let role = role_of(&mut m, path)?;
                let parts = match m.remove("parts").filter(|v| !v.is_null()) {
                    Some(p) => p,
                    None => return Err(err(format!("{path}.parts: required"))),
                };
                let content = decode_parts(
                    parts,
                    Path::Field(&path, "parts"),
                    &mut IdMode::Request(&mut ids),
                )?;
                req.messages.push(Message { role, content });
            }
            other => {
                return Err(err(format!(
                    "{path}: expected a content object or a string, got {}",
                    type_name(&other)
                )))
            }
        }
    }

    if let Some(tools) = obj.remove("tools").filter(|v| !v.is_null()) {
        decode_tools(tools, &mut req)?;
    }
    if let Some(tc) = take_any(&mut obj, "toolConfig", "tool_config") {
        decode_tool_config(tc, &mut req)?;
    }
    if let Some(gc) = take_any(&mut obj, "generationConfig", "generation_config") {
        decode_generation_config(gc, &mut req)?;
    }
    Ok(req)
}

fn decode_tools(tools: Value, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let Value::Array(tools) = tools else {
        return Err(err(format!(
            "tools: expected an array, got {}",
            type_name(&tools)
        )));
    };
    for (i, tool) in tools.into_iter().enumerate() {
        let path = format!("tools[{i}]");
        let mut t = want_object(tool, &path)?;
        let decls = take_any(&mut t, "functionDeclarations", "function_declarations");
        if let Some((k, _)) = t.iter().find(|(_, v)| !v.is_null()) {
            return Err(err(format!(
                "{path}.{k}: tool not supported by this gateway (only functionDeclarations)"
            )));
        }
        let Some(decls) = decls else { continue };
        let Value::Array(decls) = decls else {
            return Err(err(format!(
                "{path}.functionDeclarations: expected an array, got {}",
                type_name(&decls)
            )));
        };
        for (j, d) in decls.into_iter().enumerate() {
            let dpath = format!("{path}.functionDeclarations[{j}]");
            let mut d = want_object(d, &dpath)?;
            let name = match d.remove("name") {
                Some(v) => want_string(v, format_args!("{dpath}.name"))?,
                None => return Err(err(format!("{dpath}.name: required"))),
            };
            let description = match d.remove("description").filter(|v| !v.is_null()) {
                Some(v) => Some(want_string(v, format_args!("{dpath}.description"))?),
                None => None,
            };
            let parameters = if let Some(p) =
                take_any(&mut d, "parametersJsonSchema", "parameters_json_schema")
            {
                p
            } else if let Some(p) = d.remove("parameters").filter(|v| !v.is_null()) {
                if !p.is_object() {
                    return Err(err(format!(
                        "{dpath}.parameters: expected an object, got {}",
                        type_name(&p)
                    )));
                }
                schema_from_gemini(p, 0)
            } else {
                json!({"type": "object", "properties": {}})
            };
            req.tools.push(Tool {
                name,
                description,
                parameters,
                strict: None,
            });
        }
    }
    Ok(())
}

fn decode_tool_config(tc: Value, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let mut tc = want_object(tc, "toolConfig")?;
    let Some(fc) = take_any(&mut tc, "functionCallingConfig", "function_calling_config") else {
        return Ok(());
    };
    let path = "toolConfig.functionCallingConfig";
    let mut fc = want_object(fc, path)?;
    let mode = match fc.remove("mode").filter(|v| !v.is_null()) {
        Some(v) => want_string(v, format_args!("{path}.mode"))?,
        None => "AUTO".to_owned(),
    };
    let allowed: Vec<String> =
        match take_any(&mut fc, "allowedFunctionNames", "allowed_function_names") {
            Some(Value::Array(a)) => a
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            Some(other) => {
                return Err(err(format!(
                    "{path}.allowedFunctionNames: expected an array of strings, got {}",
                    type_name(&other)
                )))
            }
            None => Vec::new(),
        };
    req.tool_choice = match mode.to_ascii_uppercase().as_str() {
        "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" => Some(ToolChoice::Auto),
        "NONE" => Some(ToolChoice::None),
        "ANY" => match <[String; 1]>::try_from(allowed) {
            Ok([one]) => Some(ToolChoice::Function(one)),
            Err(_) => Some(ToolChoice::Required),
        },
        other => {
            return Err(err(format!(
                "{path}.mode: unknown mode {other:?} (expected AUTO, ANY or NONE)"
            )))
        }
    };
    Ok(())
}

fn decode_generation_config(gc: Value, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let mut gc = want_object(gc, "generationConfig")?;
    let p = "generationConfig";
    let mut f = |camel: &str, snake: &str| take_any(&mut gc, camel, snake);
    if let Some(v) = f("temperature", "temperature") {
        req.temperature = Some(want_f64(&v, format_args!("{p}.temperature"))?);
    }
    if let Some(v) = f("topP", "top_p") {
        req.top_p = Some(want_f64(&v, format_args!("{p}.topP"))?);
    }
    if let Some(v) = f("topK", "top_k") {
        req.top_k = Some(want_u64(&v, format_args!("{p}.topK"))?);
    }
    if let Some(v) = f("maxOutputTokens", "max_output_tokens") {
        req.max_tokens = Some(want_u64(&v, format_args!("{p}.maxOutputTokens"))?);
    }
    if let Some(v) = f("candidateCount", "candidate_count") {
        req.n = Some(want_u64(&v, format_args!("{p}.candidateCount"))?);
    }
    if let Some(v) = f("seed", "seed") {
        req.seed = Some(v.as_i64().ok_or_else(|| {
            err(format!(
                "{p}.seed: expected an integer, got {}",
                type_name(&v)
            ))
        })?);
    }
    if let Some(v) = f("presencePenalty", "presence_penalty") {
        req.presence_penalty = Some(want_f64(&v, format_args!("{p}.presencePenalty"))?);
    }
    if let Some(v) = f("frequencyPenalty", "frequency_penalty") {
        req.frequency_penalty = Some(want_f64(&v, format_args!("{p}.frequencyPenalty"))?);
    }
    if let Some(v) = f("stopSequences", "stop_sequences") {
        let path = format!("{p}.stopSequences");
        req.stop = match v {
            Value::String(s) => vec![s],
            Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, s)| want_string(s, format_args!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
            other => {
                return Err(err(format!(
                    "{path}: expected an array of strings, got {}",
                    type_name(&other)
                )))
            }
        };
    }
    let mime = f("responseMimeType", "response_mime_type");
    let json_schema = f("responseJsonSchema", "response_json_schema");
    let schema = f("responseSchema", "response_schema");
    let mime = match mime {
        Some(v) => Some(want_string(v, format_args!("{p}.responseMimeType"))?),
        None => None,
    };
    let schema = json_schema.or_else(|| schema.map(|s| schema_from_gemini(s, 0)));
    req.response_format = match (mime.as_deref(), schema) {
        (_, Some(schema)) => Some(ResponseFormat::JsonSchema {
            name: "response".to_owned(),
            schema,
            strict: None,
        }),
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        (Some("text/plain"), None) => Some(ResponseFormat::Text),
        _ => None,
    };
    if let Some(tc) = f("thinkingConfig", "thinking_config") {
        let path = format!("{p}.thinkingConfig");
        let mut tc = want_object(tc, &path)?;
        let mut r = Reasoning::default();
        if let Some(b) = take_any(&mut tc, "thinkingBudget", "thinking_budget") {
            match b.as_i64() {
                Some(0) => r.disabled = true,
                Some(n) if n > 0 => r.budget_tokens = Some(n as u64),
                Some(_) => {} // -1: dynamic
                None => {
                    return Err(err(format!(
                        "{path}.thinkingBudget: expected an integer, got {}",
                        type_name(&b)
                    )))
                }
            }
        }
        if let Some(l) = take_any(&mut tc, "thinkingLevel", "thinking_level") {
            let l = want_string(l, format_args!("{path}.thinkingLevel"))?;
            let l = l.to_ascii_lowercase();
            if l != "thinking_level_unspecified" {
                r.effort = Some(l);
            }
        }
        req.reasoning = Some(r);
    }
    Ok(())
}

/// The thinking budget for an effort name.
fn effort_budget(effort: &str) -> Option<u64> {
    match effort {
        "minimal" => Some(512),
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        "xhigh" | "max" => Some(32768),
        _ => None,
    }
}

pub fn encode_request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let mut body = Map::new();

    // Function names by call id, for tool results that carry none.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        for p in &m.content {
            if let ContentPart::ToolCall { id, name, .. } = p {
                names.insert(id.as_str(), name.as_str());
            }
        }
    }

    let mut contents: Vec<(Role, Vec<Value>)> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let mut parts = Vec::with_capacity(m.content.len());
        encode_parts(&m.content, &names, true, &mut parts);
        if parts.is_empty() {
            continue;
        }
        // Gemini wants alternating turns: merge neighbours of one role.
        match contents.last_mut() {
            Some((role, prev)) if *role == m.role => prev.append(&mut parts),
            _ => contents.push((m.role, parts)),
        }
    }
    let gemini3 = req.model.contains("gemini-3");
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, mut parts)| {
            if role == Role::Assistant && gemini3 {
                // Gemini 3 rejects a model turn whose first call is unsigned
                // (history from another model): Google's documented bypass.
                if let Some(Value::Object(first)) =
                    parts.iter_mut().find(|p| p.get("functionCall").is_some())
                {
                    first
                        .entry("thoughtSignature")
                        .or_insert_with(|| json!(SKIP_SIGNATURE));
                }
            }
            let role = if role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            json!({"role": role, "parts": parts})
        })
        .collect();
    body.insert("contents".into(), Value::Array(contents));

    let system: Vec<Value> = req
        .system
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text { text } if !text.is_empty() => Some(json!({ "text": text })),
            _ => None,
        })
        .collect();
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), json!(t.name));
                if let Some(desc) = &t.description {
                    d.insert("description".into(), json!(desc));
                }
                let params = schema_to_gemini(&t.parameters, &t.parameters, 0);
                // Gemini rejects an OBJECT schema with empty properties: a
                // function without parameters just has none.
                let empty_object = params.get("properties").is_none()
                    && params.get("type").and_then(Value::as_str) == Some("object");
                if !params.is_empty() && !empty_object {
                    d.insert("parameters".into(), Value::Object(params));
                }
                Value::Object(d)
            })
            .collect();
        body.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
        if let Some(tc) = &req.tool_choice {
            let fc = match tc {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Function(name) => {
                    json!({"mode": "ANY", "allowedFunctionNames": [name]})
                }
            };
            body.insert("toolConfig".into(), json!({ "functionCallingConfig": fc }));
        }
    }

    let mut gc = Map::new();
    if let Some(v) = req.temperature {
        gc.insert("temperature".into(), json!(v));
    }
    if let Some(v) = req.top_p {
        gc.insert("topP".into(), json!(v));
    }
    if let Some(v) = req.top_k {
        gc.insert("topK".into(), json!(v));
    }
    if let Some(v) = req.max_tokens {
        gc.insert("maxOutputTokens".into(), json!(v));
    }
    if !req.stop.is_empty() {
        gc.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(v) = req.n {
        gc.insert("candidateCount".into(), json!(v));
    }
    if let Some(v) = req.seed {
        gc.insert("seed".into(), json!(v));
    }
    if let Some(v) = req.presence_penalty {
        gc.insert("presencePenalty".into(), json!(v));
    }
    if let Some(v) = req.frequency_penalty {
        gc.insert("frequencyPenalty".into(), json!(v));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            gc.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            gc.insert("responseMimeType".into(), json!("application/json"));
            gc.insert("responseJsonSchema".into(), schema.clone());
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(r) = &req.reasoning {
        let pro = req.model.contains("pro");
        let max = if pro { 32768 } else { 24576 };
        let mut tc = Map::new();
        if r.disabled || r.effort.as_deref() == Some("none") {
            // Pro models cannot switch thinking off: leave their default.
            if !pro {
                tc.insert("thinkingBudget".into(), json!(0));
            }
        } else {
            let budget = r
                .budget_tokens
                .or_else(|| r.effort.as_deref().and_then(effort_budget));
            if let Some(b) = budget {
                tc.insert("thinkingBudget".into(), json!(b.min(max)));
            }
            tc.insert("includeThoughts".into(), json!(true));
        }
        if !tc.is_empty() {
            gc.insert("thinkingConfig".into(), Value::Object(tc));
        }
    }
    if !gc.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gc));
    }
    serde_json::to_vec(&Value::Object(body)).map_err(|e| err(e.to_string()))
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn decode_usage(u: &Value) -> Option<Usage> {
    let o = u.as_object()?;
    let n = |a: &str, b: &str| get_any(o, a, b).and_then(Value::as_u64);
    let prompt = n("promptTokenCount", "prompt_token_count")
        .unwrap_or(0)
        .saturating_add(n("toolUsePromptTokenCount", "tool_use_prompt_token_count").unwrap_or(0));
    let candidates = n("candidatesTokenCount", "candidates_token_count").unwrap_or(0);
    let thoughts = n("thoughtsTokenCount", "thoughts_token_count");
    Some(Usage {
        input_tokens: prompt,
        output_tokens: candidates.saturating_add(thoughts.unwrap_or(0)),
        cached_input_tokens: n("cachedContentTokenCount", "cached_content_token_count"),
        cache_creation_input_tokens: None,
        reasoning_tokens: thoughts,
    })
}

fn encode_usage(u: &Usage) -> Value {
    let thoughts = u.reasoning_tokens.unwrap_or(0).min(u.output_tokens);
    let mut m = Map::new();
    m.insert("promptTokenCount".into(), json!(u.input_tokens));
    m.insert(
        "candidatesTokenCount".into(),
        json!(u.output_tokens - thoughts),
    );
    m.insert(
        "totalTokenCount".into(),
        json!(u.input_tokens.saturating_add(u.output_tokens)),
    );
    if let Some(c) = u.cached_input_tokens {
        m.insert("cachedContentTokenCount".into(), json!(c));
    }
    if u.reasoning_tokens.is_some() {
        m.insert("thoughtsTokenCount".into(), json!(thoughts));
    }
    Value::Object(m)
}

fn decode_finish(reason: &str, saw_tool: bool) -> FinishReason {
    match reason {
        "STOP" if saw_tool => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

fn encode_finish(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other(s) => match s.as_str() {
            "RECITATION"
            | "LANGUAGE"
            | "OTHER"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "MALFORMED_FUNCTION_CALL"
            | "IMAGE_SAFETY"
            | "UNEXPECTED_TOOL_CALL"
            | "TOO_MANY_TOOL_CALLS" => s,
            _ => "OTHER",
        },
    }
}

/// The message of a Google error object (`{"code","message","status"}`).
fn error_message(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => e.to_string(),
        },
        other => other.to_string(),
    }
}

fn prompt_block_reason(m: &Map<String, Value>) -> Option<&str> {
    get_any(m, "promptFeedback", "prompt_feedback")
        .and_then(|pf| pf.as_object())
        .and_then(|pf| get_any(pf, "blockReason", "block_reason"))
        .and_then(Value::as_str)
}

fn first_candidate(m: &mut Map<String, Value>) -> Option<Map<String, Value>> {
    match m.get_mut("candidates") {
        Some(Value::Array(c)) if !c.is_empty() => match c.swap_remove(0) {
            Value::Object(o) => Some(o),
            _ => None,
        },
        _ => None,
    }
}

fn take_string(m: &mut Map<String, Value>, camel: &str, snake: &str) -> Option<String> {
    match take_any(m, camel, snake) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| err(format!("gemini response: invalid JSON: {e}")))?;
    let mut m = want_object(v, "gemini response")?;
    if let Some(e) = m.get("error") {
        return Err(err(error_message(e)));
    }
    let id = take_string(&mut m, "responseId", "response_id")
        .unwrap_or_else(|| format!("resp_{}", unique_token()));
    let model = take_string(&mut m, "modelVersion", "model_version").unwrap_or_default();
    let usage = get_any(&m, "usageMetadata", "usage_metadata").and_then(decode_usage);
    let mut resp = ChatResponse {
        id,
        model,
        created: now_secs(),
        content: Vec::new(),
        finish_reason: None,
        usage,
    };
    match first_candidate(&mut m) {
        Some(mut cand) => {
            if let Some(Value::Object(mut content)) = cand.remove("content") {
                if let Some(parts) = content.remove("parts").filter(|p| !p.is_null()) {
                    let token = unique_token();
                    let mut next = 0;
                    resp.content = decode_parts(
                        parts,
                        Path::Name("candidates[0].content.parts"),
                        &mut IdMode::Answer {
                            token: &token,
                            next: &mut next,
                        },
                    )?;
                }
            }
            let saw_tool = resp
                .content
                .iter()
                .any(|p| matches!(p, ContentPart::ToolCall { .. }));
            resp.finish_reason = get_any(&cand, "finishReason", "finish_reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")
                .map(|r| decode_finish(r, saw_tool));
        }
        None => {
            if prompt_block_reason(&m).is_some() {
                resp.finish_reason = Some(FinishReason::ContentFilter);
            }
        }
    }
    Ok(resp)
}

pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let mut parts = Vec::with_capacity(resp.content.len());
    encode_parts(&resp.content, &HashMap::new(), false, &mut parts);
    let mut cand = Map::new();
    if !parts.is_empty() || resp.finish_reason != Some(FinishReason::ContentFilter) {
        cand.insert("content".into(), json!({"parts": parts, "role": "model"}));
    }
    if let Some(r) = &resp.finish_reason {
        cand.insert("finishReason".into(), json!(encode_finish(r)));
    }
    cand.insert("index".into(), json!(0));
    let mut body = Map::new();
    body.insert("candidates".into(), json!([cand]));
    if let Some(u) = &resp.usage {
        body.insert("usageMetadata".into(), encode_usage(u));
    }
    body.insert("modelVersion".into(), json!(resp.model));
    body.insert("responseId".into(), json!(resp.id));
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// Gemini SSE (`alt=sse`): every `data:` is a whole GenerateContentResponse.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    token: String,
    tool_index: u32,
    finished: bool,
    last_usage: Option<Usage>,
}

impl StreamDecoder {
    fn start(&mut self, m: &mut Map<String, Value>, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        self.token = unique_token();
        let id = take_string(m, "responseId", "response_id")
            .unwrap_or_else(|| format!("resp_{}", self.token));
        let model = take_string(m, "modelVersion", "model_version").unwrap_or_default();
        out.push(StreamEvent::Start { id, model });
    }

    fn chunk(&mut self, v: Value, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let mut m = want_object(v, "gemini stream chunk")?;
        if let Some(e) = m.get("error") {
            let message = error_message(e);
            self.start(&mut Map::new(), out);
            out.push(StreamEvent::Error { message });
            return Ok(());
        }
        self.start(&mut m, out);
        // Usage before the chunk's content: Gemini reports the prompt size
        // on its first chunk, and an Anthropic client's `message_start`
        // (written with the first content) can only carry what came before.
        if let Some(u) = get_any(&m, "usageMetadata", "usage_metadata").and_then(decode_usage) {
            if self.last_usage != Some(u) {
                self.last_usage = Some(u);
                out.push(StreamEvent::Usage(u));
            }
        }
        let mut finish = None;
        match first_candidate(&mut m) {
            Some(mut cand) => {
                if let Some(Value::Object(mut content)) = cand.remove("content") {
                    if let Some(parts) = content.remove("parts").filter(|p| !p.is_null()) {
                        let mut next = self.tool_index;
                        let parts = decode_parts(
                            parts,
                            Path::Name("candidates[0].content.parts"),
                            &mut IdMode::Answer {
                                token: &self.token,
                                next: &mut next,
                            },
                        )?;
                        self.emit_parts(parts, out);
                    }
                }
                finish = get_any(&cand, "finishReason", "finish_reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")
                    .map(|r| decode_finish(r, self.tool_index > 0));
            }
            None => {
                if prompt_block_reason(&m).is_some() {
                    finish = Some(FinishReason::ContentFilter);
                }
            }
        }
        if let Some(reason) = finish {
            if !self.finished {
                self.finished = true;
                out.push(StreamEvent::Finish { reason });
            }
        }
        Ok(())
    }

    fn emit_parts(&mut self, parts: Vec<ContentPart>, out: &mut Vec<StreamEvent>) {
        for p in parts {
            match p {
                ContentPart::Text { text } => {
                    if !text.is_empty() {
                        out.push(StreamEvent::TextDelta { text });
                    }
                }
                ContentPart::Thinking { text, signature } => {
                    if !text.is_empty() {
                        out.push(StreamEvent::ThinkingDelta { text });
                    }
                    if let Some(signature) = signature {
                        out.push(StreamEvent::ThinkingSignature { signature });
                    }
                }
                ContentPart::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    let index = self.tool_index;
                    self.tool_index += 1;
                    out.push(StreamEvent::ToolCallStart { index, id, name });
                    out.push(StreamEvent::ToolCallDelta { index, arguments });
                }
                ContentPart::Image { source } => {
                    // No image event in the neutral stream: a data URL as text
                    // would be noise; images in streamed answers are dropped.
                    let _ = source;
                }
                ContentPart::ToolResult { .. } | ContentPart::RedactedThinking { .. } => {}
            }
        }
    }
}

impl StreamDecode for StreamDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data.is_empty() || ev.is_done() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| err(format!("gemini stream chunk: invalid JSON: {e}")))?;
        match v {
            // Without alt=sse Gemini streams a JSON array of chunks.
            Value::Array(items) => {
                for item in items {
                    self.chunk(item, out)?;
                }
                Ok(())
            }
            v => self.chunk(v, out),
        }
    }
}

/// A tool call whose arguments are being collected.
struct OpenCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// Neutral events → `data: <GenerateContentResponse>` lines only.
pub struct StreamEncoder {
    opts: StreamOptions,
    id: String,
    model: String,
    started: bool,
    done: bool,
    calls: Vec<OpenCall>,
    pending_sig: Option<String>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            id: String::new(),
            model: String::new(),
            started: false,
            done: false,
            calls: Vec::new(),
            pending_sig: None,
            finish: None,
            usage: None,
        }
    }

    fn ensure_started(&mut self) {
        if !self.started {
            self.started = true;
            self.id = format!("resp_{}", unique_token());
            if let Some(m) = &self.opts.model_override {
                self.model = m.clone();
            }
        }
    }

    fn write_chunk(
        &mut self,
        parts: Vec<Value>,
        finish: Option<&str>,
        usage: Option<Value>,
        out: &mut BytesMut,
    ) {
        self.ensure_started();
        let mut cand = Map::new();
        cand.insert("content".into(), json!({"parts": parts, "role": "model"}));
        if let Some(f) = finish {
            cand.insert("finishReason".into(), json!(f));
        }
        cand.insert("index".into(), json!(0));
        let mut body = Map::new();
        body.insert("candidates".into(), json!([cand]));
        if let Some(u) = usage {
            body.insert("usageMetadata".into(), u);
        }
        body.insert("modelVersion".into(), json!(self.model));
        body.insert("responseId".into(), json!(self.id));
        if let Ok(bytes) = serde_json::to_vec(&Value::Object(body)) {
            sse::write_data(out, &bytes);
        }
    }

    fn part(&mut self, mut v: Value) -> Value {
        if let (Some(s), Value::Object(m)) = (self.pending_sig.take(), &mut v) {
            m.insert("thoughtSignature".into(), Value::String(s));
        }
        v
    }

    /// Emits every buffered tool call, in one chunk (as Gemini sends
    /// parallel calls).
    fn flush_calls(&mut self, out: &mut BytesMut) {
        if self.calls.is_empty() {
            return;
        }
        let calls = std::mem::take(&mut self.calls);
        let parts: Vec<Value> = calls
            .into_iter()
            .map(|c| {
                self.part(json!({"functionCall": {
                    "id": c.id, "name": c.name, "args": args_object(&c.arguments)
                }}))
            })
            .collect();
        self.write_chunk(parts, None, None, out);
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match ev {
            // Opaque Anthropic data: no other format can carry it.
            StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::Start { id, model } => {
                if !self.started {
                    self.started = true;
                    self.id = if id.is_empty() {
                        format!("resp_{}", unique_token())
                    } else {
                        id.clone()
                    };
                    self.model = self
                        .opts
                        .model_override
                        .clone()
                        .unwrap_or_else(|| model.clone());
                }
            }
            StreamEvent::TextDelta { text } => {
                self.flush_calls(out);
                if text.is_empty() && self.pending_sig.is_none() {
                    return;
                }
                let p = self.part(json!({ "text": text }));
                self.write_chunk(vec![p], None, None, out);
            }
            StreamEvent::ThinkingDelta { text } => {
                self.flush_calls(out);
                if text.is_empty() {
                    return;
                }
                let p = json!({"text": text, "thought": true});
                self.write_chunk(vec![p], None, None, out);
            }
            StreamEvent::ThinkingSignature { signature } => {
                self.pending_sig = Some(signature.clone());
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if !self.calls.iter().any(|c| c.index == *index) {
                    self.flush_calls(out);
                    self.calls.push(OpenCall {
                        index: *index,
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    });
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.index == *index) {
                    c.arguments.push_str(arguments);
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { reason } => {
                self.flush_calls(out);
                self.finish = Some(reason.clone());
            }
            StreamEvent::Error { message } => {
                self.flush_calls(out);
                crate::error::stream_error_event(Format::Gemini, None, message, out);
                self.done = true;
            }
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.flush_calls(out);
        self.done = true;
        let reason = self.finish.take().unwrap_or(FinishReason::Stop);
        let part = self.part(json!({ "text": "" }));
        let usage = self.usage.as_ref().map(encode_usage);
        self.write_chunk(vec![part], Some(encode_finish(&reason)), usage, out);
    }

    fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        crate::error::stream_error_event(Format::Gemini, status, message, out);
    }
}
