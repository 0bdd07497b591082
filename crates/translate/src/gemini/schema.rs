//! Schemas: Gemini's OpenAPI subset ↔ plain JSON Schema.
//!
//! Every rewrite draws on one [`SchemaBudget`] per request: inlining
//! `$ref`s can turn a few hundred bytes into an exponential tree, so what a
//! rewrite may write is bounded by size, not only by depth.

use serde_json::{json, Map, Value};

use crate::TranslateError;

/// What the schema rewrites of one request may build in all, in bytes
/// (about: a node costs [`NODE_COST`], a copied value its JSON size): far
/// above any real tool set (a hundred tools of a few KiB each), far below
/// what hurts.
pub const MAX_SCHEMA_REWRITE_BYTES: usize = 1 << 20;

/// What one schema object costs the budget: its map and its bookkeeping.
const NODE_COST: usize = 64;

/// The bytes the schema rewrites of one request have left to write.
pub(super) struct SchemaBudget {
    left: usize,
    limit: usize,
}

impl SchemaBudget {
    #[cfg(test)]
    pub(super) fn new() -> Self {
        Self::of(MAX_SCHEMA_REWRITE_BYTES)
    }

    /// A budget of `limit` bytes (`Limits::schema_rewrite_bytes`).
    pub(super) fn of(limit: usize) -> Self {
        SchemaBudget { left: limit, limit }
    }

    /// Takes `bytes` from the budget; past it the request is refused.
    fn charge(&mut self, bytes: usize) -> Result<(), TranslateError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(TranslateError::new(format!(
                    "tools: the parameter schemas grow past {} bytes once their `$ref`s are inlined (server.max_schema_rewrite_bytes)",
                    self.limit
                )))
            }
        }
    }

    /// Charges for a copy of `v`.
    fn charge_copy(&mut self, v: &Value) -> Result<(), TranslateError> {
        self.charge(json_size(v, self.left.saturating_add(1)))
    }
}

/// About the size of `v` as JSON text, counted no further than `cap`.
fn json_size(v: &Value, cap: usize) -> usize {
    let mut size = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        size = size.saturating_add(match v {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                a.len() + 2
            }
            Value::Object(m) => {
                for (k, v) in m {
                    size = size.saturating_add(k.len() + 4);
                    stack.push(v);
                }
                2
            }
        });
        if size > cap {
            break;
        }
    }
    size
}

/// A Gemini (OpenAPI-subset) schema made plain JSON Schema: lowercase types,
/// `nullable` folded into the type, `propertyOrdering` dropped.
pub(super) fn schema_from_gemini(
    v: Value,
    depth: u32,
    budget: &mut SchemaBudget,
) -> Result<Value, TranslateError> {
    if depth == 0 {
        // Rewritten in place: what it writes is about what it read.
        budget.charge_copy(&v)?;
    }
    budget.charge(NODE_COST)?;
    let Value::Object(mut m) = v else {
        return Ok(v);
    };
    if depth > 64 {
        budget.charge_copy(&Value::Object(Map::new()))?;
        return Ok(Value::Object(m));
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
        for (k, p) in props.iter_mut() {
            budget.charge(k.len() + 32)?;
            *p = schema_from_gemini(p.take(), depth + 1, budget)?;
        }
    }
    if let Some(items) = m.get_mut("items") {
        *items = schema_from_gemini(items.take(), depth + 1, budget)?;
    }
    if let Some(Value::Array(list)) = m.get_mut("anyOf") {
        for s in list.iter_mut() {
            *s = schema_from_gemini(s.take(), depth + 1, budget)?;
        }
    }
    Ok(Value::Object(m))
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
pub(super) fn schema_to_gemini(
    s: &Value,
    root: &Value,
    depth: u32,
    budget: &mut SchemaBudget,
) -> Result<Map<String, Value>, TranslateError> {
    budget.charge(NODE_COST)?;
    let mut out = Map::new();
    let Value::Object(m) = s else { return Ok(out) };
    if depth > 32 {
        return Ok(out);
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
            out = schema_to_gemini(t, root, depth + 1, budget)?;
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
                branches.push(schema_to_gemini(b, root, depth + 1, budget)?);
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
            for (k, v) in schema_to_gemini(b, root, depth + 1, budget)? {
                out.entry(k).or_insert(v);
            }
        }
    }
    for key in GEMINI_SCHEMA_PLAIN_KEYS {
        if let Some(v) = m.get(*key) {
            budget.charge_copy(v)?;
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
            budget.charge(
                vals.iter()
                    .filter_map(Value::as_str)
                    .map(|v| v.len() + 3)
                    .sum(),
            )?;
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
            budget.charge(k.len() + 32)?;
            gp.insert(
                k.clone(),
                Value::Object(schema_to_gemini(v, root, depth + 1, budget)?),
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
            Value::Object(schema_to_gemini(items, root, depth + 1, budget)?),
        );
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ~300 bytes whose definitions refer to themselves three times each:
    /// inlined to depth 32 that is 3^32 nodes.
    fn self_referential() -> Value {
        let s = serde_json::json!({
            "type": "object",
            "properties": {"root": {"$ref": "#/$defs/n"}},
            "$defs": {"n": {"type": "object", "description": "a node", "properties": {
                "a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/n"}, "c": {"$ref": "#/$defs/n"}
            }}}
        });
        assert!(s.to_string().len() < 320);
        s
    }

    #[test]
    fn ref_inlining_is_bounded_by_size() {
        let s = self_referential();
        let err = schema_to_gemini(&s, &s, 0, &mut SchemaBudget::new()).unwrap_err();
        assert!(err.message.contains("$ref"), "{}", err.message);
        // A schema that refers to a definition a few times is inlined.
        let ok = serde_json::json!({"type": "object", "properties": {
            "from": {"$ref": "#/$defs/place"}, "to": {"$ref": "#/$defs/place"}},
            "$defs": {"place": {"type": "string", "enum": ["A", "B"]}}});
        let out = schema_to_gemini(&ok, &ok, 0, &mut SchemaBudget::new()).unwrap();
        assert_eq!(
            out["properties"]["to"]["enum"],
            serde_json::json!(["A", "B"])
        );
    }

    #[test]
    fn the_budget_is_shared_by_every_rewrite_of_a_request() {
        let mut budget = SchemaBudget::new();
        let big = serde_json::json!({"type": "STRING", "description": "x".repeat(MAX_SCHEMA_REWRITE_BYTES / 3)});
        assert!(schema_from_gemini(big, 0, &mut budget).is_ok());
        let copy = serde_json::json!({"type": "string", "description": "x".repeat(MAX_SCHEMA_REWRITE_BYTES / 3)});
        // `description` is copied: each copy costs its size; after the
        // rewrite above, the second copy in one request is one too many.
        assert!(schema_to_gemini(&copy, &copy, 0, &mut budget).is_ok());
        assert!(schema_to_gemini(&copy, &copy, 0, &mut budget).is_err());
        let mut fresh = SchemaBudget::new();
        assert!(schema_to_gemini(&copy, &copy, 0, &mut fresh).is_ok());
        assert!(schema_to_gemini(&copy, &copy, 0, &mut fresh).is_ok());
    }
}
