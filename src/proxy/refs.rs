//! Provider-side references: ids of objects a provider keeps under the
//! shared provider key (stored responses, conversations, vector stores,
//! containers, uploaded files, cached contents). One client key must not
//! use what another stored there, so a request may reference only the
//! response ids the gateway relayed to its own key (remembered in the store,
//! `Deferred::Reference`, or kept by the gateway: `proxy/responses.rs`);
//! every other kind of reference never came through
//! the gateway and is refused. `auth.keys[].provider_refs: any` opts a key
//! out.
//!
//! The body is not parsed into a tree: a quick search for the names of the
//! fields that can reference something (or for a `\u` escape, which could
//! spell one) decides whether the body is walked at all, and the walk reads
//! keys only, skipping every value it does not need.

use std::fmt;
use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::GatewayError;

/// What a body references at the provider.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    /// `previous_response_id` (top level).
    pub response_id: Option<String>,
    /// The first field naming an object the gateway never relays
    /// (`conversation`, `vector_store_ids`, `container`, `file_id`,
    /// `file_ids`, `cachedContent`, a Files API `fileUri`).
    pub foreign: Option<&'static str>,
}

/// Field names that may reference a provider object, and `\u` (an escaped
/// key could spell one of them).
pub const NEEDLE_NAMES: [&str; 10] = [
    "previous_response_id",
    "conversation",
    "vector_store_ids",
    "container",
    "file_id",
    "cachedContent",
    "cached_content",
    "fileUri",
    "file_uri",
    "\\u",
];

/// [`NEEDLE_NAMES`], each searched for on its own: SIMD substring searches,
/// one per name, read a body several times faster than one Aho-Corasick
/// automaton over all of them (whose prefilter keys on letters every JSON
/// body is full of; `benches/hot_path.rs`, group `references`).
static NEEDLES: LazyLock<[Finder<'static>; 10]> =
    LazyLock::new(|| NEEDLE_NAMES.map(|n| Finder::new(n.as_bytes())));

/// Whether `body` may name a reference: it holds one of the names or a
/// `\u` escape somewhere. (A scan of the quotes, checking the names after
/// each, runs fewer instructions but takes longer: the quotes of a JSON
/// body are too many for a branch per quote to be cheap.)
fn may_reference(body: &[u8]) -> bool {
    NEEDLES.iter().any(|n| n.find(body).is_some())
}

/// The references of a JSON body (`None` when it names none). A body that
/// does not parse as JSON here was refused earlier; it reads as none.
pub fn references(body: &[u8]) -> References {
    if !may_reference(body) {
        return References::default();
    }
    let mut found = References::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    // The depth limit of serde_json holds here too.
    let _ = Walk {
        found: &mut found,
        depth: 0,
    }
    .deserialize(&mut de);
    found
}

/// The refusal for `refs`' objects that never come through the gateway. A
/// `previous_response_id` is checked against what the key received
/// (`proxy/llm.rs`, `proxy/responses.rs`): one it did not receive is "not
/// found", like one that does not exist.
pub fn refusal(refs: &References) -> Option<GatewayError> {
    refs.foreign.map(|field| {
        GatewayError::forbidden(format!(
            "`{field}` references an object stored at the provider, which this key did not receive through the gateway (keys may reference only what they were given; an operator can allow it with provider_refs: any)"
        ))
    })
}

/// Walks a JSON value, noting reference fields by their (decoded) keys.
struct Walk<'a> {
    found: &'a mut References,
    depth: u32,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// The value of a reference field: whether it names something (a non-empty
/// string or list, an object with an `id`), and the string itself.
#[derive(Default)]
struct RefValue {
    names_something: bool,
    text: Option<String>,
}

impl<'de> de::Deserialize<'de> for RefValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RefValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RefValue, E> {
                Ok(RefValue {
                    names_something: !s.is_empty(),
                    text: Some(s.to_owned()),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<RefValue, A::Error> {
                let mut any = false;
                while a.next_element::<IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(RefValue {
                    names_something: any,
                    text: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<RefValue, A::Error> {
                // `{"id": ...}` names an object; `{"type": "auto", ...}` (a new
                // container) does not.
                let mut names = false;
                while let Some(k) = a.next_key::<String>()? {
                    a.next_value::<IgnoredAny>()?;
                    names |= k == "id";
                }
                Ok(RefValue {
                    names_something: names,
                    text: None,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<RefValue, E> {
                Ok(RefValue::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RefValue, E> {
                Ok(RefValue::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RefValue, E> {
                Ok(RefValue::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RefValue, E> {
                Ok(RefValue::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RefValue, E> {
                Ok(RefValue::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A Files API address (Gemini's uploaded files), not a public URL.
fn is_files_api(uri: &str) -> bool {
    uri.contains("generativelanguage.googleapis.com/") && uri.contains("/files/")
        || uri.starts_with("files/")
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let top = self.depth == 0;
        while let Some(k) = a.next_key::<String>()? {
            let field: Option<&'static str> = match k.as_str() {
                "previous_response_id" if top => Some("previous_response_id"),
                "conversation" if top => Some("conversation"),
                "vector_store_ids" => Some("vector_store_ids"),
                "container" => Some("container"),
                "file_id" => Some("file_id"),
                "file_ids" => Some("file_ids"),
                "cachedContent" | "cached_content" if top => Some("cachedContent"),
                "fileUri" | "file_uri" => Some("fileUri"),
                _ => None,
            };
            let Some(field) = field else {
                a.next_value_seed(Walk {
                    found: &mut *self.found,
                    depth: self.depth + 1,
                })?;
                continue;
            };
            let v: RefValue = a.next_value()?;
            if !v.names_something {
                continue;
            }
            match field {
                "previous_response_id" => self.found.response_id = v.text,
                "fileUri" if !v.text.as_deref().is_some_and(is_files_api) => {}
                f => {
                    self.found.foreign.get_or_insert(f);
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a
            .next_element_seed(Walk {
                found: &mut *self.found,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(body: &str) -> References {
        references(body.as_bytes())
    }

    #[test]
    fn plain_bodies_reference_nothing() {
        assert_eq!(
            refs(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#),
            References::default()
        );
        // Text that merely mentions a field name is not a reference.
        assert_eq!(
            refs(r#"{"messages":[{"role":"user","content":"what is a file_id or a container?"}]}"#),
            References::default()
        );
        // A new container, a public image URL, an empty list.
        assert_eq!(
            refs(
                r#"{"tools":[{"type":"code_interpreter","container":{"type":"auto"}}],"contents":[{"parts":[{"fileData":{"fileUri":"https://example.com/a.png"}}]}],"x":{"vector_store_ids":[]}}"#
            ),
            References::default()
        );
    }

    #[test]
    fn each_kind_of_reference_is_found() {
        let r = refs(r#"{"model":"m","previous_response_id":"resp_1","input":"hi"}"#);
        assert_eq!(r.response_id.as_deref(), Some("resp_1"));
        assert_eq!(r.foreign, None);
        for (body, field) in [
            (r#"{"conversation":"conv_1"}"#, "conversation"),
            (r#"{"conversation":{"id":"conv_1"}}"#, "conversation"),
            (
                r#"{"tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]}"#,
                "vector_store_ids",
            ),
            (
                r#"{"tools":[{"type":"code_interpreter","container":"cntr_1"}]}"#,
                "container",
            ),
            (r#"{"container":"cntr_1","messages":[]}"#, "container"),
            (
                r#"{"input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}"#,
                "file_id",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"file","file_id":"file_1"}}]}]}"#,
                "file_id",
            ),
            (r#"{"cachedContent":"cachedContents/abc"}"#, "cachedContent"),
            (
                r#"{"contents":[{"parts":[{"fileData":{"fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc"}}]}]}"#,
                "fileUri",
            ),
        ] {
            assert_eq!(refs(body).foreign, Some(field), "{body}");
        }
    }

    #[test]
    fn escaped_keys_are_read_as_the_provider_reads_them() {
        let r = refs(r#"{"input":[{"content":[{"type":"input_file","file\u005fid":"file-1"}]}]}"#);
        assert_eq!(r.foreign, Some("file_id"));
        let r = refs(r#"{"previous\u005fresponse_id":"resp_9"}"#);
        assert_eq!(r.response_id.as_deref(), Some("resp_9"));
    }

    /// The quick check lets through every key the walk acts on, plain or
    /// escaped, at any depth; and a body without one of them is not walked.
    #[test]
    fn the_quick_check_passes_every_key_the_walk_reads() {
        for k in [
            "previous_response_id",
            "conversation",
            "vector_store_ids",
            "container",
            "file_id",
            "file_ids",
            "cachedContent",
            "cached_content",
            "fileUri",
            "file_uri",
        ] {
            for body in [
                format!(r#"{{"{k}":"x"}}"#),
                format!(r#"{{"a":[{{"b":1,"{k}":["x"]}}]}}"#),
                format!(r#"{{ "a" : {{ "{k}" : "x" }} }}"#),
            ] {
                assert!(may_reference(body.as_bytes()), "{body}");
            }
            // Every name has an `e` to escape.
            let escaped = k.replacen('e', "\\u0065", 1);
            let body = format!(r#"{{"{escaped}":"x"}}"#);
            assert!(may_reference(body.as_bytes()), "{body}");
        }
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"f":"c","p":"v","":"","c":""}"#,
            r#"{"x":"\\"}"#,
            "",
        ] {
            assert!(!may_reference(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let r = refs(r#"{"conversation":"conv_1"}"#);
        let e = refusal(&r).unwrap();
        assert_eq!(e.status, 403);
        assert!(e.message.contains("`conversation`"));
        let r = refs(r#"{"previous_response_id":"resp_1"}"#);
        assert!(refusal(&r).is_none());
    }
}
