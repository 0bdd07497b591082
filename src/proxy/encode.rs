//! The request body each attempt sends: the client's own JSON with the
//! model replaced when the provider speaks the client's format, else a
//! translation through the neutral representation.

use apiproxy_translate::{self as translate, ChatRequest, Format};
use bytes::Bytes;
use serde_json::Value;

use super::request::Parsed;
use crate::error::GatewayError;
use crate::routing::Candidate;

/// Encodes the request for each attempt's provider: the client's own JSON
/// when the provider speaks the client's format, else a translation through
/// the neutral representation (decoded once, on first need).
pub struct BodyEncoder {
    client: Format,
    /// The client body is in another shape than its endpoint's (a Claude-
    /// or Gemini-style body on /v1/chat/completions).
    adapted: Option<bool>,
    ir: Option<ChatRequest>,
    /// The last body encoded was the client's own (same format).
    pub last_was_passthrough: bool,
}

impl BodyEncoder {
    /// An encoder for requests from a `client`-format client.
    pub fn new(client: Format) -> Self {
        BodyEncoder {
            client,
            adapted: None,
            ir: None,
            last_was_passthrough: false,
        }
    }

    /// The body for candidate `c` of a `target`-format provider.
    pub fn encode(
        &mut self,
        target: Format,
        c: &Candidate,
        parsed: &mut Parsed,
    ) -> Result<Bytes, GatewayError> {
        let adapted = *self.adapted.get_or_insert_with(|| {
            self.client == Format::OpenAiChat
                && translate::detect_chat_adapter(&parsed.body).is_some()
        });
        self.last_was_passthrough = target == self.client && !adapted;
        if self.last_was_passthrough {
            let obj = parsed
                .body
                .as_object_mut()
                .ok_or_else(|| GatewayError::bad_request("request body must be a JSON object"))?;
            if target != Format::Gemini {
                obj.insert("model".into(), Value::String(c.model.clone()));
            }
            if target == Format::OpenAiChat && parsed.stream {
                // The gateway needs usage to count tokens; the relay drops the
                // usage chunk again when the client did not ask for it.
                let opts = obj
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(o) = opts.as_object_mut() {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
            }
            return serde_json::to_vec(&parsed.body)
                .map(Bytes::from)
                .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")));
        }
        if self.ir.is_none() {
            let mut ir = translate::decode_request(self.client, parsed.body.clone())
                .map_err(|e| GatewayError::bad_request(e.message))?;
            ir.stream = parsed.stream;
            ir.stream_include_usage = parsed.include_usage;
            self.ir = Some(ir);
        }
        let ir = self
            .ir
            .as_mut()
            .ok_or_else(|| GatewayError::internal("request not decoded"))?;
        ir.model.clone_from(&c.model);
        translate::encode_request(target, ir)
            .map(Bytes::from)
            .map_err(|e| GatewayError::bad_request(e.message))
    }
}
