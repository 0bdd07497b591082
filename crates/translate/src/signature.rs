//! Where a thinking signature came from, so that a conversation moving
//! between provider kinds never replays one provider's signature to
//! another (Anthropic and Gemini refuse a signature they did not issue).
//!
//! Convention at the dispatch functions of this crate (`lib.rs`): every
//! signature in the neutral form is *wrapped* with the kind that issued it,
//! `base64("apxsig" + kind letter + raw signature)`.
//! - A provider's answer: its signatures are wrapped with its kind.
//! - A client's request: a wrapped signature stays as it is (the gateway
//!   gave it out earlier); a raw one is its own format's (it came straight
//!   from a provider of that kind, by passthrough or directly).
//! - Encoding for a client: a signature of the client's own kind goes out
//!   raw (as the provider issued it); any other stays wrapped, base64 so
//!   that every SDK takes it (Gemini's types its signatures as bytes).
//! - Encoding for a provider: a signature of its own kind goes out raw; any
//!   other is removed, which drops the thinking block (no provider takes
//!   unsigned thinking back); the answer and tool calls stay.
//!
//! The format modules themselves see raw signatures only.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::BytesMut;

use crate::{
    ChatRequest, ChatResponse, ContentPart, Format, SseEvent, StreamDecode, StreamEncode,
    StreamEvent, TranslateError,
};

const MAGIC: &[u8] = b"apxsig";
/// How every wrapped signature begins (`base64("apxsig")`): a body with it
/// carries a signature the gateway wrapped, so it is never passed through.
pub const WRAPPED_PREFIX: &str = "YXB4c2ln";

fn letter(kind: Format) -> u8 {
    match kind {
        Format::Anthropic => b'a',
        Format::Gemini => b'g',
        Format::OpenAiResponses => b'r',
        Format::OpenAiChat => b'c',
        Format::Bedrock => b'b',
    }
}

fn kind_of(letter: u8) -> Option<Format> {
    Some(match letter {
        b'a' => Format::Anthropic,
        b'g' => Format::Gemini,
        b'r' => Format::OpenAiResponses,
        b'c' => Format::OpenAiChat,
        b'b' => Format::Bedrock,
        _ => return None,
    })
}

/// `raw` issued by a provider of `kind`, wrapped.
pub fn wrap(kind: Format, raw: &str) -> String {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 1 + raw.len());
    bytes.extend_from_slice(MAGIC);
    bytes.push(letter(kind));
    bytes.extend_from_slice(raw.as_bytes());
    STANDARD.encode(bytes)
}

/// The kind and raw signature of a wrapped signature; `None` for any other
/// string (a provider's raw signature).
pub fn unwrap(sig: &str) -> Option<(Format, String)> {
    if !sig.starts_with(WRAPPED_PREFIX) {
        return None;
    }
    let bytes = STANDARD.decode(sig).ok()?;
    let rest = bytes.strip_prefix(MAGIC)?;
    let (&l, raw) = rest.split_first()?;
    Some((kind_of(l)?, String::from_utf8(raw.to_vec()).ok()?))
}

/// A signature as a client's request carried it → wrapped.
fn from_client(sig: &mut String, client: Format) {
    if !sig.is_empty() && unwrap(sig).is_none() {
        *sig = wrap(client, sig);
    }
}

/// A wrapped signature → what a `target` provider is sent: raw when it
/// issued it, else nothing.
fn for_provider(sig: &str, target: Format) -> Option<String> {
    match unwrap(sig) {
        Some((k, raw)) if k == target => Some(raw),
        Some(_) => None,
        // Not wrapped: only the format modules' own tests get here.
        None => Some(sig.to_owned()),
    }
}

/// A wrapped signature → what a `client` is sent.
fn for_client(sig: &str, client: Format) -> Option<String> {
    match unwrap(sig) {
        Some((k, raw)) if k == client => Some(raw),
        _ => None,
    }
}

fn thinking_signatures(content: &mut [ContentPart]) -> impl Iterator<Item = &mut String> {
    content.iter_mut().filter_map(|p| match p {
        ContentPart::Thinking {
            signature: Some(s), ..
        } => Some(s),
        _ => None,
    })
}

/// Wraps the raw signatures of a `client`-format request.
pub(crate) fn tag_request(req: &mut ChatRequest, client: Format) {
    for m in &mut req.messages {
        for s in thinking_signatures(&mut m.content) {
            from_client(s, client);
        }
    }
}

/// The request as a `target` provider may see it: its own signatures raw,
/// the thinking that carries another kind's signature unsigned (so the
/// encoder drops it). Borrowed when there is nothing to change.
pub(crate) fn request_for(req: &ChatRequest, target: Format) -> Cow<'_, ChatRequest> {
    let signed = req.messages.iter().any(|m| {
        m.content.iter().any(|p| {
            matches!(p, ContentPart::Thinking { signature: Some(s), .. } if unwrap(s).is_some())
        })
    });
    if !signed {
        return Cow::Borrowed(req);
    }
    let mut req = req.clone();
    for m in &mut req.messages {
        for p in &mut m.content {
            if let ContentPart::Thinking { signature, .. } = p {
                *signature = signature.as_deref().and_then(|s| for_provider(s, target));
            }
        }
    }
    Cow::Owned(req)
}

/// Wraps the signatures of a `kind` provider's answer.
pub(crate) fn tag_response(resp: &mut ChatResponse, kind: Format) {
    for s in thinking_signatures(&mut resp.content) {
        if !s.is_empty() {
            *s = wrap(kind, s);
        }
    }
}

/// The answer as a `client` sees it: signatures of its own kind raw.
pub(crate) fn response_for(resp: &ChatResponse, client: Format) -> Cow<'_, ChatResponse> {
    let wrapped = resp.content.iter().any(
        |p| matches!(p, ContentPart::Thinking { signature: Some(s), .. } if unwrap(s).is_some()),
    );
    if !wrapped {
        return Cow::Borrowed(resp);
    }
    let mut resp = resp.clone();
    for s in thinking_signatures(&mut resp.content) {
        if let Some(raw) = for_client(s, client) {
            *s = raw;
        }
    }
    Cow::Owned(resp)
}

/// A stream decoder whose signatures come out wrapped with its kind.
pub(crate) struct TaggingDecoder {
    pub inner: Box<dyn StreamDecode>,
    pub kind: Format,
}

impl StreamDecode for TaggingDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let from = out.len();
        self.inner.decode(ev, out)?;
        for e in &mut out[from..] {
            if let StreamEvent::ThinkingSignature { signature } = e {
                if !signature.is_empty() {
                    *signature = wrap(self.kind, signature);
                }
            }
        }
        Ok(())
    }
}

/// A stream encoder that sends the client's own kind of signature raw.
pub(crate) struct UntaggingEncoder {
    pub inner: Box<dyn StreamEncode>,
    pub kind: Format,
}

impl StreamEncode for UntaggingEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        if let StreamEvent::ThinkingSignature { signature } = ev {
            if let Some(raw) = for_client(signature, self.kind) {
                let ev = StreamEvent::ThinkingSignature { signature: raw };
                return self.inner.encode(&ev, out);
            }
        }
        self.inner.encode(ev, out)
    }
    fn finish(&mut self, out: &mut BytesMut) {
        self.inner.finish(out)
    }
    fn fail(&mut self, status: Option<u16>, message: &str, out: &mut BytesMut) {
        self.inner.fail(status, message, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trips_and_is_base64() {
        for kind in [Format::Anthropic, Format::Gemini, Format::OpenAiResponses] {
            let w = wrap(kind, "EqQBCkgIARAB/+=");
            assert!(w.starts_with(WRAPPED_PREFIX), "{w}");
            assert!(STANDARD.decode(&w).is_ok());
            assert_eq!(unwrap(&w), Some((kind, "EqQBCkgIARAB/+=".to_owned())));
        }
        assert_eq!(unwrap("EqQBCkgIARAB"), None);
        assert_eq!(unwrap("YXB4c2lu!!"), None);
    }

    #[test]
    fn providers_get_only_their_own_signatures() {
        let a = wrap(Format::Anthropic, "sig-a");
        assert_eq!(
            for_provider(&a, Format::Anthropic).as_deref(),
            Some("sig-a")
        );
        assert_eq!(for_provider(&a, Format::Gemini), None);
        assert_eq!(for_client(&a, Format::Anthropic).as_deref(), Some("sig-a"));
        assert_eq!(for_client(&a, Format::Gemini), None);
        let mut raw = "sig-g".to_owned();
        from_client(&mut raw, Format::Gemini);
        assert_eq!(unwrap(&raw), Some((Format::Gemini, "sig-g".to_owned())));
        let mut again = raw.clone();
        from_client(&mut again, Format::Anthropic);
        assert_eq!(again, raw, "a wrapped signature keeps its kind");
    }
}
