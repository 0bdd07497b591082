//! Payload rules applied to a body's bytes, the way the gateway splices a
//! same-format body: a rule's dotted path is followed through the JSON
//! text (each level scanned for the one member or element it names, as
//! borrowed spans), only the value the rule sets is written, and every
//! other byte is copied as it came. A body is never decoded into a tree:
//! a 16 MiB `[0,0,…]` costs its bytes and one copy per edit, not millions
//! of `serde_json::Value`s. The result is the one [`DottedPath`]'s tree
//! operations give (`set`, `exists`, `remove`; tested against them).
//!
//! [`DottedPath`]: super::DottedPath

use std::fmt;
use std::ops::Range;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// What a rule does at its path.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Set the value when nothing is there.
    Default(&'a Value),
    /// Set the value.
    Override(&'a Value),
    /// Remove what is there.
    Remove,
}

impl Op<'_> {
    fn value(&self) -> Option<&Value> {
        match self {
            Op::Default(v) | Op::Override(v) => Some(v),
            Op::Remove => None,
        }
    }
}

/// Applies `op` at `path` to `text` (one JSON value): the new text, or
/// `None` when nothing changes (the path meets a scalar or an index out
/// of range, a default finds a value, a removal finds none). `Err` when
/// `text` is not JSON.
pub fn apply(text: &str, path: &[String], op: Op<'_>) -> Result<Option<String>, String> {
    let Some((seg, rest)) = path.split_first() else {
        return Ok(None);
    };
    let start = text.len() - text.trim_start().len();
    let t = text.trim();
    let base = t.as_ptr() as usize;
    let edits = match t.as_bytes().first() {
        Some(b'{') => in_object(t, base, seg, rest, op)?,
        Some(b'[') => match seg.parse::<usize>() {
            Ok(i) => in_array(t, base, i, rest, op)?,
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    if edits.is_empty() {
        return Ok(None);
    }
    Ok(Some(write(text, start, edits)))
}

/// A replacement of `range` (relative to the trimmed value) by `text`.
type Splice = (Range<usize>, String);

/// `text` with `edits` (sorted, relative to the value at `start`) made;
/// overlapping cuts are merged.
fn write(text: &str, start: usize, mut edits: Vec<Splice>) -> String {
    edits.sort_by_key(|(r, _)| r.start);
    let mut merged: Vec<Splice> = Vec::with_capacity(edits.len());
    for (r, s) in edits {
        match merged.last_mut() {
            Some((last, with)) if r.start <= last.end => {
                last.end = last.end.max(r.end);
                with.push_str(&s);
            }
            _ => merged.push((r, s)),
        }
    }
    let added: usize = merged.iter().map(|(_, s)| s.len()).sum();
    let mut out = String::with_capacity(text.len() + added);
    let mut at = 0;
    for (r, s) in merged {
        out.push_str(&text[at..start + r.start]);
        out.push_str(&s);
        at = start + r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The JSON of `value` at the end of `rest`, inside new objects (what
/// `DottedPath::set` creates on its way).
fn nested(rest: &[String], value: &Value) -> String {
    let mut out = value.to_string();
    for seg in rest.iter().rev() {
        out = format!("{{{}:{out}}}", Value::String(seg.clone()));
    }
    out
}

/// The new text of a value reached on the way (not the last segment):
/// `null` becomes an object when something is set through it.
fn descend(inner: &str, rest: &[String], op: Op<'_>) -> Result<Option<String>, String> {
    if inner == "null" {
        return Ok(op.value().map(|v| nested(rest, v)));
    }
    apply(inner, rest, op)
}

/// One member of an object, as spans of the object's text.
#[derive(Debug, Clone)]
struct Member {
    key: Range<usize>,
    value: Range<usize>,
    /// The end of the member before it that is kept (not named `seg`).
    prev_kept_end: Option<usize>,
    /// The start of the key of the member after it.
    next_key: Option<usize>,
}

fn in_object(
    t: &str,
    base: usize,
    seg: &str,
    rest: &[String],
    op: Op<'_>,
) -> Result<Vec<Splice>, String> {
    let mut de = serde_json::Deserializer::from_str(t);
    let named = de::Deserializer::deserialize_map(&mut de, Named { base, seg })
        .and_then(|n| de.end().map(|()| n))
        .map_err(|e| format!("filters: body is not JSON: {e}"))?;
    // The last of the members named `seg` counts (as in a parsed tree);
    // the others go whenever the member is written.
    let Some((last, earlier)) = named.split_last() else {
        return Ok(match op.value() {
            Some(v) => vec![append(t, seg, &nested(rest, v))],
            None => Vec::new(),
        });
    };
    let replace = |new: String| -> Vec<Splice> {
        let mut edits: Vec<Splice> = earlier.iter().map(|m| (cut(m), String::new())).collect();
        edits.push((last.value.clone(), new));
        edits
    };
    if !rest.is_empty() {
        let inner = &t[last.value.clone()];
        return Ok(descend(inner, rest, op)?.map(replace).unwrap_or_default());
    }
    Ok(match op {
        Op::Default(_) => Vec::new(),
        Op::Override(v) => replace(v.to_string()),
        Op::Remove => named.iter().map(|m| (cut(m), String::new())).collect(),
    })
}

/// The span that removes member `m` and one comma beside it.
fn cut(m: &Member) -> Range<usize> {
    match (m.next_key, m.prev_kept_end) {
        (Some(next), _) => m.key.start..next,
        (None, Some(prev)) => prev..m.value.end,
        (None, None) => m.key.start..m.value.end,
    }
}

/// A new member `"seg": json` at the end of object `t`.
fn append(t: &str, seg: &str, json: &str) -> Splice {
    let close = t.len() - 1;
    let empty = t[1..close].trim().is_empty();
    let sep = if empty { "" } else { "," };
    let key = Value::String(seg.to_owned());
    (close..close, format!("{sep}{key}:{json}"))
}

fn in_array(
    t: &str,
    base: usize,
    index: usize,
    rest: &[String],
    op: Op<'_>,
) -> Result<Vec<Splice>, String> {
    let mut de = serde_json::Deserializer::from_str(t);
    let found = de::Deserializer::deserialize_seq(&mut de, Nth { base, index })
        .and_then(|n| de.end().map(|()| n))
        .map_err(|e| format!("filters: body is not JSON: {e}"))?;
    let Some(e) = found else {
        return Ok(Vec::new());
    };
    if !rest.is_empty() {
        let inner = &t[e.value.clone()];
        return Ok(descend(inner, rest, op)?
            .map(|new| vec![(e.value.clone(), new)])
            .unwrap_or_default());
    }
    Ok(match op {
        Op::Default(_) => Vec::new(),
        Op::Override(v) => vec![(e.value.clone(), v.to_string())],
        Op::Remove => {
            let span = match (e.next, e.prev_end) {
                (Some(next), _) => e.value.start..next,
                (None, Some(prev)) => prev..e.value.end,
                (None, None) => e.value.clone(),
            };
            vec![(span, String::new())]
        }
    })
}

/// Scans an object for the members whose decoded key is `seg`.
struct Named<'s> {
    base: usize,
    seg: &'s str,
}

fn span(base: usize, r: &RawValue) -> Range<usize> {
    let s = r.get();
    let start = s.as_ptr() as usize - base;
    start..start + s.len()
}

fn key_is(raw: &str, seg: &str) -> bool {
    if raw.contains('\\') {
        serde_json::from_str::<String>(raw).is_ok_and(|k| k == seg)
    } else {
        raw.len() == seg.len() + 2 && raw[1..raw.len() - 1] == *seg
    }
}

impl<'de> Visitor<'de> for Named<'_> {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Member>, A::Error> {
        let mut named: Vec<Member> = Vec::new();
        let mut prev_kept_end = None;
        let mut last_was_named = false;
        while let Some(k) = map.next_key::<&'de RawValue>()? {
            let key = span(self.base, k);
            if last_was_named {
                if let Some(m) = named.last_mut() {
                    m.next_key = Some(key.start);
                }
            }
            let value = span(self.base, map.next_value::<&'de RawValue>()?);
            last_was_named = key_is(k.get(), self.seg);
            if last_was_named {
                named.push(Member {
                    key,
                    value,
                    prev_kept_end,
                    next_key: None,
                });
            } else {
                prev_kept_end = Some(value.end);
            }
        }
        Ok(named)
    }
}

/// An array element, as spans of the array's text.
#[derive(Debug)]
struct Element {
    value: Range<usize>,
    prev_end: Option<usize>,
    next: Option<usize>,
}

/// Scans an array for element `index`, skipping the others.
struct Nth {
    base: usize,
    index: usize,
}

impl<'de> Visitor<'de> for Nth {
    type Value = Option<Element>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Element>, A::Error> {
        let mut found: Option<Element> = None;
        let mut prev_end = None;
        let mut i = 0usize;
        loop {
            if i + 1 < self.index || (found.is_some() && i > self.index + 1) {
                // Far from the element: skipped without a span.
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
            } else {
                let Some(e) = seq.next_element::<&'de RawValue>()? else {
                    break;
                };
                let s = span(self.base, e);
                if i == self.index {
                    found = Some(Element {
                        value: s.clone(),
                        prev_end,
                        next: None,
                    });
                } else if i == self.index + 1 {
                    if let Some(f) = found.as_mut() {
                        f.next = Some(s.start);
                    }
                }
                prev_end = Some(s.end);
            }
            i += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::super::DottedPath;
    use super::*;
    use serde_json::json;

    /// The splice and the tree operations agree on `body`; whether the
    /// splice changed it.
    fn agree(body: &str, path: &str, op: Op<'_>) -> bool {
        let p = DottedPath::parse(path).unwrap();
        let mut tree: Value = serde_json::from_str(body).unwrap();
        match op {
            Op::Default(v) => {
                if !p.exists(&tree) {
                    p.set(&mut tree, v.clone());
                }
            }
            Op::Override(v) => p.set(&mut tree, v.clone()),
            Op::Remove => p.remove(&mut tree),
        }
        let spliced = apply(body, p.segments(), op).unwrap();
        let got: Value = match &spliced {
            Some(s) => serde_json::from_str(s)
                .unwrap_or_else(|e| panic!("{path} {op:?} on {body}: {s:?} is not JSON: {e}")),
            None => serde_json::from_str(body).unwrap(),
        };
        assert_eq!(got, tree, "{path} {op:?} on {body}: {spliced:?}");
        spliced.is_some()
    }

    #[test]
    fn splices_agree_with_the_tree_operations() {
        let bodies = [
            r#"{"a": 1, "list": [{"x": 1}, {"x": 2}, 3], "n": null, "o": {"p": {"q": [1, 2]}}}"#,
            r#"{}"#,
            r#" { "only" : 1 } "#,
            r#"{"a":1,"a":2,"b":3}"#,
            r#"{"b":3,"a":1,"a":2}"#,
            r#"{"a":1,"b":3,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a\u0062":1,"x":[]}"#,
            r#"[1, 2, 3]"#,
            r#"{"list": []}"#,
            r#"{"list": [[0, 1], [2]]}"#,
        ];
        let paths = [
            "a",
            "b",
            "ab",
            "zz",
            "list.0",
            "list.1",
            "list.2",
            "list.5",
            "list.0.x",
            "list.1.x",
            "list.2.x",
            "n.x",
            "n.x.y",
            "o.p.q.1",
            "o.p.q",
            "o.p",
            "a.deeper",
            "new.deep.path",
            "0",
            "1",
            "2",
            "list.0.1",
            "only",
            "x.0",
        ];
        let value = json!({"set": [true]});
        let mut changed = 0;
        for body in bodies {
            for path in paths {
                for op in [Op::Default(&value), Op::Override(&value), Op::Remove] {
                    changed += usize::from(agree(body, path, op));
                }
            }
        }
        // Most combinations edit something: the comparison is not idle.
        assert!(changed > 250, "{changed}");
    }

    #[test]
    fn bytes_outside_the_edit_are_kept_as_sent() {
        let body =
            r#"{"model" : "m",  "messages":[{"role":"user","content":"h\u00e9"}], "t": 1.50}"#;
        let v = json!(0.5);
        let out = apply(body, &["t".to_owned()], Op::Override(&v))
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            r#"{"model" : "m",  "messages":[{"role":"user","content":"h\u00e9"}], "t": 0.5}"#
        );
        assert_eq!(
            apply("not json", &["a".to_owned()], Op::Remove).ok(),
            Some(None)
        );
        assert!(apply("{\"a\": ", &["a".to_owned()], Op::Remove).is_err());
    }
}
