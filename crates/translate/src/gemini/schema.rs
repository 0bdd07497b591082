//! Schemas: Gemini's OpenAPI subset ↔ plain JSON Schema.

use serde_json::{json, Map, Value};

/// A Gemini (OpenAPI-subset) schema made plain JSON Schema: lowercase types,
/// `nullable` folded into the type, `propertyOrdering` dropped.
pub(super) fn schema_from_gemini(v: Value, depth: u32) -> Value {
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
pub(super) fn schema_to_gemini(s: &Value, root: &Value, depth: u32) -> Map<String, Value> {
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
