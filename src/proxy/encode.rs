//! The request body each attempt sends: the client's own JSON with the
//! model replaced when the provider speaks the client's format, else a
//! translation through the neutral representation.

use apiproxy_translate::{self as translate, ChatRequest, Format};
use bytes::Bytes;
use serde_json::Value;

use super::request::Parsed;
use crate::body::{Edit, Field};
use crate::error::GatewayError;
use crate::routing::Candidate;

/// Bodies larger than this are decoded again for each translated attempt
/// instead of being held decoded for the request's life (the neutral form
/// of short turns takes ~3× their bytes; a failover is rare, a big body
/// held three times over by every request is not).
const KEEP_DECODED_MAX_BYTES: usize = 1 << 20;

/// Encodes the request for each attempt's provider: the client's own JSON
/// when the provider speaks the client's format, else a translation through
/// the neutral representation, decoded from the client's bytes one turn at
/// a time (kept for the next attempt when the body is small).
pub struct BodyEncoder {
    client: Format,
    /// The shape of the client's body: its endpoint's format, or another
    /// one (a Claude- or Gemini-style body on /v1/chat/completions).
    shape: Option<Format>,
    ir: Option<ChatRequest>,
    limits: translate::Limits,
    /// The last body encoded was the client's own (same format).
    pub last_was_passthrough: bool,
    /// Top-level fields the last translation filled with its own default
    /// (absent to `default` payload rules).
    pub last_defaulted: &'static [&'static str],
}

impl BodyEncoder {
    /// An encoder for requests from a `client`-format client, translating
    /// under `limits`.
    pub fn new(client: Format, limits: translate::Limits) -> Self {
        BodyEncoder {
            client,
            shape: None,
            ir: None,
            limits,
            last_was_passthrough: false,
            last_defaulted: &[],
        }
    }

    /// The body for candidate `c` of a `target`-format provider.
    pub fn encode(
        &mut self,
        target: Format,
        c: &Candidate,
        parsed: &Parsed,
    ) -> Result<Bytes, GatewayError> {
        let client = self.client;
        let shape = *self.shape.get_or_insert_with(|| match client {
            Format::OpenAiChat => parsed.body.chat_adapter().unwrap_or(client),
            _ => client,
        });
        self.last_was_passthrough = target == client && shape == client;
        self.last_defaulted = &[];
        if self.last_was_passthrough {
            return Ok(Bytes::from(passthrough_body(target, &c.model, parsed)));
        }
        let mut ir = match self.ir.take() {
            Some(ir) => ir,
            None => {
                let bytes = parsed.body.bytes();
                let mut ir = translate::decode_request_bytes(client, shape, bytes, &self.limits)
                    .map_err(|e| GatewayError::bad_request(e.message))?;
                ir.stream = parsed.stream;
                ir.stream_include_usage = parsed.include_usage;
                ir
            }
        };
        ir.model.clone_from(&c.model);
        self.last_defaulted = translate::defaulted_fields(target, &ir);
        let body = translate::encode_request_limited(target, &ir, &self.limits)
            .map(Bytes::from)
            .map_err(|e| GatewayError::bad_request(e.message));
        if parsed.body.bytes().len() <= KEEP_DECODED_MAX_BYTES {
            self.ir = Some(ir);
        }
        body
    }
}

impl BodyEncoder {
    /// The token-count request for candidate `c` of a `target`-format
    /// provider (`translate::count`): always through the neutral form, so
    /// the provider gets only what its count endpoint takes (Anthropic
    /// refuses `max_tokens` there; Gemini needs the model in the body to
    /// count the system instruction and tools).
    pub fn encode_count(
        &mut self,
        target: Format,
        c: &Candidate,
        parsed: &Parsed,
    ) -> Result<Bytes, GatewayError> {
        self.last_was_passthrough = false;
        self.last_defaulted = &[];
        let mut ir = match self.ir.take() {
            Some(ir) => ir,
            None => translate::count::decode_count_request(
                self.client,
                parsed.body.bytes(),
                &self.limits,
            )
            .map_err(|e| GatewayError::bad_request(e.message))?,
        };
        ir.model.clone_from(&c.model);
        let body = translate::count::encode_count_request(target, &ir, &self.limits)
            .map(Bytes::from)
            .map_err(|e| GatewayError::bad_request(e.message));
        if parsed.body.bytes().len() <= KEEP_DECODED_MAX_BYTES {
            self.ir = Some(ir);
        }
        body
    }
}

/// The client's own body for a same-format upstream: its bytes with
/// `model` set to the upstream's name (Gemini names it in the path),
/// `models` left out, `stream: true` when only `Accept` asked for a stream,
/// and, for an OpenAI chat stream, `stream_options.include_usage: true`
/// (the gateway counts tokens; the relay drops the usage chunk again when
/// the client did not ask for it). Every other byte is the client's.
pub fn passthrough_body(target: Format, model: &str, parsed: &Parsed) -> Vec<u8> {
    let set_model = target != Format::Gemini;
    let model_json = Value::String(model.to_owned()).to_string();
    let want_usage = target == Format::OpenAiChat && parsed.stream;
    let stream_options = |raw: &str| -> Edit {
        // Only an object gets the flag; any other value goes as it came.
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(mut o)) => {
                o.insert("include_usage".into(), Value::Bool(true));
                Edit::Set(Value::Object(o).to_string())
            }
            _ => Edit::Keep,
        }
    };
    let body = &parsed.body;
    let out = body.splice(
        |field, raw| match field {
            Field::Model if set_model => Edit::Set(model_json.clone()),
            Field::Models => Edit::Drop,
            Field::Stream if parsed.stream_added => Edit::Set("true".into()),
            Field::StreamOptions if want_usage => stream_options(raw),
            _ => Edit::Keep,
        },
        &[
            ("model", model_json.as_str()),
            ("stream", "true"),
            ("stream_options", r#"{"include_usage":true}"#),
        ]
        .into_iter()
        .filter(|(k, _)| match *k {
            "model" => set_model && !body.has(Field::Model),
            "stream" => parsed.stream_added && !body.has(Field::Stream),
            _ => want_usage && !body.has(Field::StreamOptions),
        })
        .collect::<Vec<_>>(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request::{parse_body, LlmRoute};

    /// What the gateway sent before the body was kept as bytes: the decoded
    /// tree with the same fields changed, re-encoded.
    fn through_value(fmt: Format, model: &str, body: &str, accepts_sse: bool) -> Value {
        let mut v: Value = serde_json::from_str(body).expect("json");
        let obj = v.as_object_mut().expect("object");
        obj.remove("models");
        let asked = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let stream = if fmt == Format::Gemini {
            false
        } else {
            asked || accepts_sse
        };
        if fmt != Format::Gemini && accepts_sse && !asked {
            obj.insert("stream".into(), Value::Bool(true));
        }
        if fmt != Format::Gemini {
            obj.insert("model".into(), Value::String(model.into()));
        }
        if fmt == Format::OpenAiChat && stream {
            let opts = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        v
    }

    #[test]
    fn passthrough_bodies_match_the_decoded_rewrite() {
        let bodies = [
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"models":["a","b"],"messages":[]}"#,
            r#"{"model":"a","models":["b"],"stream":true,"messages":[]}"#,
            r#"{"model":"a","stream":false,"messages":[]}"#,
            r#"{"model":"a","stream":null,"stream_options":{"include_usage":false,"x":1}}"#,
            r#"{"model":"a","stream":true,"stream_options":null}"#,
            r#"{"model":"a","stream":true,"stream_options":"odd"}"#,
            r#"{"model":"a","model":"b","stream":true,"stream":false,"n":[1,{"k":"\u00e9\n"}]}"#,
            r#"  {"model" : "a" ,  "contents" : [ ] }  "#,
        ];
        for fmt in [
            Format::OpenAiChat,
            Format::OpenAiResponses,
            Format::Anthropic,
            Format::Gemini,
        ] {
            for body in bodies {
                for accepts_sse in [false, true] {
                    let route = LlmRoute {
                        format: fmt,
                        path_model: (fmt == Format::Gemini).then(|| "g".to_owned()),
                        path_stream: false,
                    };
                    let parsed = parse_body(fmt, Bytes::from(body.to_owned()), &route, accepts_sse)
                        .expect("parsed");
                    let out = passthrough_body(fmt, "up-model", &parsed);
                    let got: Value = serde_json::from_slice(&out).expect("json out");
                    assert_eq!(
                        got,
                        through_value(fmt, "up-model", body, accepts_sse),
                        "{fmt:?} sse={accepts_sse} {body}"
                    );
                    // The translation sees the body the same way.
                    let mut want = serde_json::from_str::<Value>(body).expect("json");
                    let o = want.as_object_mut().expect("object");
                    o.remove("models");
                    if parsed.stream_added {
                        o.insert("stream".into(), Value::Bool(true));
                    }
                    assert_eq!(parsed.to_value().expect("value"), want);
                }
            }
        }
    }
}
