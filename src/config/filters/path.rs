//! Dotted paths (`generationConfig.thinkingConfig.thinkingBudget`,
//! `messages.0.content`) into a JSON body: get, set and remove.

use serde_json::{Map, Value};

/// A parsed dotted path: non-empty segments; a segment of digits indexes an
/// array when the value there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DottedPath(Vec<String>);

impl DottedPath {
    /// Parses `a.b.c`; `Err` for an empty path or an empty segment.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty path".to_owned());
        }
        let segs: Vec<String> = s.split('.').map(str::to_owned).collect();
        if segs.iter().any(String::is_empty) {
            return Err(format!("{s:?} has an empty segment"));
        }
        Ok(DottedPath(segs))
    }

    /// The path's segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// Whether the body has a value at this path.
    pub fn exists(&self, v: &Value) -> bool {
        let mut cur = v;
        for seg in &self.0 {
            match step(cur, seg) {
                Some(next) => cur = next,
                None => return false,
            }
        }
        true
    }

    /// Sets the value, creating objects on the way; a segment that meets a
    /// scalar (or an array index out of range) leaves the body as it was.
    pub fn set(&self, v: &mut Value, value: Value) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        let mut cur = v;
        for seg in parents {
            cur = match cur {
                Value::Object(m) => m
                    .entry(seg.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
                Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(x) => x,
                    None => return,
                },
                _ => return,
            };
            if cur.is_null() {
                *cur = Value::Object(Map::new());
            }
        }
        match cur {
            Value::Object(m) => {
                m.insert(last.clone(), value);
            }
            Value::Array(a) => {
                if let Some(x) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *x = value;
                }
            }
            _ => {}
        }
    }

    /// Removes the value when present.
    pub fn remove(&self, v: &mut Value) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        let mut cur = v;
        for seg in parents {
            cur = match cur {
                Value::Object(m) => match m.get_mut(seg) {
                    Some(x) => x,
                    None => return,
                },
                Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(x) => x,
                    None => return,
                },
                _ => return,
            };
        }
        match cur {
            Value::Object(m) => {
                m.remove(last);
            }
            Value::Array(a) => {
                if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < a.len()) {
                    a.remove(i);
                }
            }
            _ => {}
        }
    }
}

fn step<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> DottedPath {
        DottedPath::parse(s).unwrap()
    }

    #[test]
    fn set_creates_objects_and_indexes_arrays() {
        let mut v = json!({"a": 1, "list": [{"x": 1}]});
        p("b.c.d").set(&mut v, json!(true));
        p("list.0.x").set(&mut v, json!(2));
        p("list.5.x").set(&mut v, json!(3)); // out of range: nothing
        p("a.deeper").set(&mut v, json!(3)); // a is a number: nothing
        assert_eq!(
            v,
            json!({"a": 1, "b": {"c": {"d": true}}, "list": [{"x": 2}]})
        );
        assert!(p("b.c.d").exists(&v));
        assert!(!p("b.c.e").exists(&v));
    }

    #[test]
    fn remove_drops_only_what_is_there() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "l": [1, 2, 3]});
        p("a.b").remove(&mut v);
        p("a.zz.q").remove(&mut v);
        p("l.1").remove(&mut v);
        assert_eq!(v, json!({"a": {"c": 2}, "l": [1, 3]}));
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(DottedPath::parse("").is_err());
        assert!(DottedPath::parse("a..b").is_err());
        assert!(DottedPath::parse(".a").is_err());
    }
}
