//! A request body as the decoders read it: its top-level object, with the
//! long array of turns (`messages`, `contents`, `input`) either decoded or
//! still raw JSON text. A raw array is decoded one element at a time, as the
//! decoder reaches it, so translating a body never holds a whole
//! `serde_json::Value` tree of it (about 19× the bytes for short turns):
//! only the client's bytes, one turn's tree and the neutral request. Each
//! turn is its own document to the parser's depth limit (128 levels).

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::TranslateError;

/// The top-level keys that may hold a long array of turns.
const TURN_KEYS: [&str; 3] = ["messages", "contents", "input"];

/// A request body's top-level object, its turn arrays possibly still raw.
pub(crate) struct Body<'a> {
    pub obj: Map<String, Value>,
    raw: Vec<(String, Vec<&'a RawValue>)>,
}

/// A top-level member taken out of a [`Body`].
pub(crate) enum Member<'a> {
    /// An array, as its elements.
    Array(Items<'a>),
    /// Anything else (`null` included); never an array.
    Value(Value),
}

impl<'a> Body<'a> {
    /// A body already decoded into a tree; must be an object.
    pub fn decoded(body: Value) -> Result<Body<'static>, TranslateError> {
        match body {
            Value::Object(obj) => Ok(Body {
                obj,
                raw: Vec::new(),
            }),
            _ => Err(TranslateError::new("request body must be a JSON object")),
        }
    }

    /// A JSON object body read from its bytes: every member decoded except
    /// the turn arrays, which stay raw until a decoder takes them.
    pub fn from_slice(bytes: &'a [u8]) -> Result<Body<'a>, TranslateError> {
        let members: HashMap<String, &'a RawValue> = serde_json::from_slice(bytes)
            .map_err(|e| TranslateError::new(format!("request body must be a JSON object: {e}")))?;
        let mut body = Body {
            obj: Map::new(),
            raw: Vec::new(),
        };
        for (key, raw) in members {
            let text = raw.get();
            if TURN_KEYS.contains(&key.as_str()) && text.starts_with('[') {
                let items: Vec<&'a RawValue> = serde_json::from_str(text)
                    .map_err(|e| TranslateError::new(format!("{key}: {e}")))?;
                body.raw.push((key, items));
            } else {
                let value = serde_json::from_str(text)
                    .map_err(|e| TranslateError::new(format!("{key}: {e}")))?;
                body.obj.insert(key, value);
            }
        }
        Ok(body)
    }

    /// Removes a top-level member.
    pub fn take(&mut self, key: &str) -> Option<Member<'a>> {
        if let Some(i) = self.raw.iter().position(|(k, _)| k == key) {
            let (_, items) = self.raw.swap_remove(i);
            return Some(Member::Array(Items::Raw(items)));
        }
        Some(match self.obj.remove(key)? {
            Value::Array(items) => Member::Array(Items::Decoded(items)),
            v => Member::Value(v),
        })
    }
}

impl Member<'_> {
    /// The member as a tree.
    #[cfg(test)]
    fn into_value(self) -> Result<Value, TranslateError> {
        match self {
            Member::Value(v) => Ok(v),
            Member::Array(items) => items.values().collect::<Result<_, _>>().map(Value::Array),
        }
    }

    /// Whether the member is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Member::Value(Value::Null))
    }
}

/// The elements of an array member.
pub(crate) enum Items<'a> {
    Decoded(Vec<Value>),
    Raw(Vec<&'a RawValue>),
}

impl<'a> Items<'a> {
    pub fn len(&self) -> usize {
        match self {
            Items::Decoded(v) => v.len(),
            Items::Raw(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in order, each decoded when it is reached.
    pub fn values(self) -> impl Iterator<Item = Result<Value, TranslateError>> + 'a {
        let (decoded, raw) = match self {
            Items::Decoded(v) => (Some(v.into_iter()), None),
            Items::Raw(v) => (None, Some(v.into_iter())),
        };
        decoded.into_iter().flatten().map(Ok).chain(
            raw.into_iter().flatten().map(|r| {
                serde_json::from_str(r.get()).map_err(|e| TranslateError::new(e.to_string()))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_and_decoded_bodies_yield_the_same_members() {
        let text =
            br#"{"model":"m","messages":[{"role":"user","content":"hi"},1],"input":"x","n":[2]}"#;
        let mut raw = Body::from_slice(text).expect("object");
        let tree: Value = serde_json::from_slice(text).expect("json");
        let mut dec = Body::decoded(tree).expect("object");
        for key in ["model", "messages", "input", "n", "absent"] {
            let a = raw.take(key).map(|m| m.into_value().expect("valid"));
            let b = dec.take(key).map(|m| m.into_value().expect("valid"));
            assert_eq!(a, b, "{key}");
        }
        assert!(matches!(
            Body::from_slice(b"{\"messages\":[1,2]}").expect("object").take("messages"),
            Some(Member::Array(Items::Raw(ref v))) if v.len() == 2
        ));
        assert_eq!(
            Body::from_slice(b"{\"a\":1,\"a\":[2]}")
                .expect("object")
                .take("a")
                .map(|m| m.into_value().expect("valid")),
            Some(json!([2])),
            "the last of a repeated key counts"
        );
        assert!(Body::from_slice(b"[1]").is_err());
        // Each turn is its own document to the parser: nesting past its
        // depth limit (128) is refused when the turn is reached.
        let deep = format!("{{\"messages\":[{}{}]}}", "[".repeat(200), "]".repeat(200));
        let Some(Member::Array(items)) = Body::from_slice(deep.as_bytes())
            .expect("object")
            .take("messages")
        else {
            panic!("an array");
        };
        assert!(items.values().any(|v| v.is_err()));
        assert!(Body::decoded(json!("x")).is_err());
    }
}
