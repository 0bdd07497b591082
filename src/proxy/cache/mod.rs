//! The response cache (exact match). A logical model with
//! `cache_ttl_seconds` answers a request it has answered before, within the
//! TTL, from the store instead of an upstream: the same answer, in the
//! client's format, streamed or whole whichever way the client asks now.
//!
//! Where it sits: after the caller is decided (auth), its models allowed
//! and the request admitted (rate limits and budget), so a hit passes every
//! check a request passes; the lookup goes to the store beside the
//! admission (one round trip for both) and is used only once admitted. A
//! hit sends nothing upstream; its token and cost reservations are released
//! (no tpm, no budget), its rpm stays counted.
//!
//! What is stored is the answer in a form any client format can be given:
//! a whole answer as the upstream's body with its format (decoded only when
//! it is a hit, so a miss costs a copy of the bytes, not a decode and an
//! encode), a streamed one gathered from the stream's events into the
//! neutral `ChatResponse` ([`Fill`]); and only when complete: a 200 answer
//! relayed to its end, whose stream said how the model stopped. The entry's key is
//! [`key::entry_key`]: with `cache.scope: key` the client key's id is part
//! of it, so one key never reads another's answer.

mod key;

use std::time::Duration;

use apiproxy_store::{Deferred, Store};
use apiproxy_translate::whole::AnswerBuilder;
use apiproxy_translate::{
    self as translate, ChatResponse, Format, SseEvent, SseParser, StreamEvent,
};
use pingora::http::RequestHeader;

use super::request::Parsed;
use crate::body::Field;
use crate::config::{CacheScope, ClientKey};
use crate::routing::Runtime;
pub use key::{entry_key, Reader};

/// How the response cache served a request (`x-apiproxy-cache`, the
/// access log, the console, `apiproxy_cache_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Answered from the cache.
    Hit,
    /// Looked up, not found: answered upstream (and stored, when complete).
    Miss,
    /// Not looked up: `Cache-Control: no-cache`/`no-store`, or a request
    /// for several choices (`n`, `candidateCount` over 1).
    Bypass,
}

impl CacheResult {
    /// The header's and the metric's value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }
}

/// What a request to a caching model does with the cache.
#[derive(Debug)]
pub struct Plan {
    /// The entry's key.
    key: String,
    ttl: Duration,
    /// Look it up (no `Cache-Control: no-cache`/`no-store`, one choice).
    read: bool,
    /// Store the answer (no `no-store`, one choice).
    write: bool,
}

/// An entry read back: the answer and the upstream that gave it (for the
/// cost a hit saves).
#[derive(Debug)]
pub struct CachedAnswer {
    pub provider: String,
    pub model: String,
    pub answer: ChatResponse,
}

/// What an entry holds after its header.
enum Payload<'a> {
    /// The neutral answer as JSON (a streamed answer, gathered).
    Neutral(&'a [u8]),
    /// A whole answer as the upstream sent it, in its format.
    Upstream(Format, &'a [u8]),
}

/// An entry's bytes: `apc1`, the payload's kind (0 neutral, 1 upstream
/// body), the upstream's format (kind 1), the provider and the model
/// (each a u16 length and UTF-8), then the payload.
const MAGIC: &[u8; 4] = b"apc1";

const FORMATS: [Format; 5] = [
    Format::OpenAiChat,
    Format::OpenAiResponses,
    Format::Anthropic,
    Format::Gemini,
    Format::Bedrock,
];

fn encode_entry(provider: &str, model: &str, payload: Payload<'_>) -> Option<Vec<u8>> {
    let (kind, fmt, bytes) = match payload {
        Payload::Neutral(b) => (0u8, 0u8, b),
        Payload::Upstream(f, b) => (1, FORMATS.iter().position(|x| *x == f)? as u8, b),
    };
    let mut out = Vec::with_capacity(10 + provider.len() + model.len() + bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[kind, fmt]);
    for s in [provider, model] {
        out.extend_from_slice(&u16::try_from(s.len()).ok()?.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(bytes);
    Some(out)
}

/// An entry read back (`None`: not one this gateway wrote, or unreadable).
fn decode_entry(raw: &[u8]) -> Option<CachedAnswer> {
    let rest = raw.strip_prefix(MAGIC)?;
    let (&[kind, fmt], mut rest) = rest.split_first_chunk::<2>()?;
    let mut text = || -> Option<String> {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        let s = std::str::from_utf8(tail.get(..len)?).ok()?.to_owned();
        rest = &tail[len..];
        Some(s)
    };
    let (provider, model) = (text()?, text()?);
    let answer = match kind {
        0 => serde_json::from_slice(rest).ok()?,
        1 => translate::decode_response(*FORMATS.get(usize::from(fmt))?, rest).ok()?,
        _ => return None,
    };
    Some(CachedAnswer {
        provider,
        model,
        answer,
    })
}

impl Plan {
    /// The plan of a request whose first model name is a logical model
    /// with `cache_ttl_seconds`; `None` for every other request (no
    /// caching, no header).
    pub fn of(
        rt: &Runtime,
        key: Option<&ClientKey>,
        fmt: Format,
        parsed: &Parsed,
        req: &RequestHeader,
    ) -> Option<Plan> {
        let model = parsed.names.first()?;
        let ttl = rt.config.logical_model(model)?.cache_ttl?;
        let reader = match rt.config.cache.scope {
            CacheScope::Key => Reader::Key(key.map(|k| k.id.as_str())),
            CacheScope::Global => Reader::Global,
        };
        let single = choices(fmt, parsed) <= 1;
        let (no_cache, no_store) = directives(req);
        Some(Plan {
            key: entry_key(reader, model, fmt, parsed.body.bytes())?,
            ttl,
            read: single && !no_cache && !no_store,
            write: single && !no_store,
        })
    }

    /// Whether the entry is looked up.
    pub fn reads(&self) -> bool {
        self.read
    }

    /// The entry, when looked up and found (a store that cannot answer, or
    /// an entry that does not read back, is a miss).
    pub async fn lookup(&self, store: &dyn Store) -> Option<CachedAnswer> {
        if !self.read {
            return None;
        }
        let raw = store.get_cached(&self.key).await?;
        let entry = decode_entry(&raw);
        if entry.is_none() {
            log::debug!("response cache: an entry does not read back; a miss");
        }
        entry
    }

    /// What records the answer for the cache, when it is to be stored.
    pub fn into_fill(self, max_entry_bytes: usize) -> Option<Box<Fill>> {
        self.write.then(|| {
            Box::new(Fill {
                key: self.key,
                ttl: self.ttl,
                max_entry_bytes,
                builder: None,
                whole: None,
                tap: None,
            })
        })
    }
}

/// How many choices the request asks for (`n`, Gemini's `candidateCount`):
/// only a one-choice answer is stored whole in the neutral form.
fn choices(fmt: Format, parsed: &Parsed) -> u64 {
    let member = |k: &str| parsed.body.member(k);
    let n = match fmt {
        // A known field: found without comparing every member's name.
        Format::OpenAiChat => parsed.body.value(Field::N),
        Format::Gemini => member("generationConfig")
            .and_then(|g| g.get("candidateCount").cloned())
            .or_else(|| {
                member("generation_config").and_then(|g| g.get("candidate_count").cloned())
            }),
        Format::OpenAiResponses | Format::Anthropic | Format::Bedrock => None,
    };
    n.and_then(|v| v.as_u64()).unwrap_or(1)
}

/// `(no-cache, no-store)` of the request's `Cache-Control`.
fn directives(req: &RequestHeader) -> (bool, bool) {
    let (mut no_cache, mut no_store) = (false, false);
    for v in req.headers.get_all(http::header::CACHE_CONTROL) {
        for d in v.to_str().unwrap_or("").split(',') {
            let d = d.trim();
            no_cache |= d.eq_ignore_ascii_case("no-cache");
            no_store |= d.eq_ignore_ascii_case("no-store");
        }
    }
    (no_cache, no_store)
}

/// Records the answer being relayed, to store it once it is complete.
pub struct Fill {
    key: String,
    ttl: Duration,
    max_entry_bytes: usize,
    /// A stream's events, gathered (`None`: none yet, which is no answer;
    /// a whole answer never makes one).
    builder: Option<AnswerBuilder>,
    /// A whole answer: its upstream's format and body (`None` as well when
    /// it is larger than an entry may be).
    whole: Option<(Format, Vec<u8>)>,
    /// A stream relayed as the upstream's bytes (same format) is read by
    /// its own parser and decoder. In a mutex only so the request's state
    /// stays `Sync` (a decoder is `Send` alone); reached by `get_mut`,
    /// never locked.
    tap: Option<parking_lot::Mutex<Tap>>,
}

struct Tap {
    parser: SseParser,
    decoder: Box<dyn translate::StreamDecode>,
    events: Vec<SseEvent>,
    neutral: Vec<StreamEvent>,
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill")
            .field("ttl", &self.ttl)
            .field("tapped", &self.tap.is_some())
            .finish_non_exhaustive()
    }
}

impl Fill {
    /// A new answer begins (an attempt's, after any earlier one failed):
    /// from `upstream`, its stream read from the bytes when `tap`.
    pub fn start(&mut self, upstream: Format, tap: bool) {
        self.builder = None;
        self.whole = None;
        self.tap = tap.then(|| {
            parking_lot::Mutex::new(Tap {
                parser: SseParser::default(),
                decoder: translate::stream_decoder(upstream),
                events: Vec::new(),
                neutral: Vec::new(),
            })
        });
    }

    /// One event of a translated stream.
    pub fn event(&mut self, ev: &StreamEvent) {
        self.builder.get_or_insert_default().push(ev);
    }

    /// Upstream bytes of a stream relayed as they are (`None`: its end).
    pub fn bytes(&mut self, chunk: Option<&[u8]>) {
        let Some(tap) = self.tap.as_mut().map(parking_lot::Mutex::get_mut) else {
            return;
        };
        tap.events.clear();
        let parsed = match chunk {
            Some(c) => tap.parser.feed(c, &mut tap.events).is_ok(),
            None => {
                tap.parser.finish(&mut tap.events);
                true
            }
        };
        if !parsed {
            return self.builder.get_or_insert_default().fail();
        }
        for ev in &tap.events {
            tap.neutral.clear();
            if tap.decoder.decode(ev, &mut tap.neutral).is_err() {
                return self.builder.get_or_insert_default().fail();
            }
            let builder = self.builder.get_or_insert_default();
            for e in &tap.neutral {
                builder.push(e);
            }
        }
    }

    /// A whole answer, as the `upstream` sent it. One over
    /// `cache.max_entry_bytes` is not copied (it will not be stored).
    pub fn whole(&mut self, upstream: Format, body: &[u8]) {
        self.builder = None;
        if body.len() <= self.max_entry_bytes {
            self.whole = Some((upstream, body.to_vec()));
        }
    }

    /// The answer was relayed to its end by `provider`'s `model`: stored
    /// when it is complete and fits `cache.max_entry_bytes` (written in the
    /// background).
    pub fn store(self, store: &dyn Store, provider: &str, model: &str) {
        let neutral;
        let payload = match &self.whole {
            Some((fmt, body)) => Payload::Upstream(*fmt, body),
            // A whole answer too large to keep, or a stream cut short.
            None => match self
                .builder
                .and_then(AnswerBuilder::finish)
                .map(|a| serde_json::to_vec(&a))
            {
                Some(Ok(json)) => {
                    neutral = json;
                    Payload::Neutral(&neutral)
                }
                _ => return,
            },
        };
        let Some(value) = encode_entry(provider, model, payload) else {
            return;
        };
        if value.len() > self.max_entry_bytes {
            log::debug!(
                "response cache: an answer of {} bytes is over cache.max_entry_bytes ({}), not stored",
                value.len(),
                self.max_entry_bytes
            );
            return;
        }
        store.defer(Deferred::Cache {
            key: self.key,
            value,
            ttl: self.ttl,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiproxy_translate::{ContentPart, FinishReason};

    fn answer() -> ChatResponse {
        ChatResponse {
            id: "r1".into(),
            model: "m".into(),
            content: vec![ContentPart::Text { text: "hi".into() }],
            finish_reason: Some(FinishReason::Stop),
            ..Default::default()
        }
    }

    #[test]
    fn entries_read_back_whichever_form_they_hold() {
        let json = serde_json::to_vec(&answer()).unwrap();
        let raw = encode_entry("p", "m-1", Payload::Neutral(&json)).unwrap();
        let back = decode_entry(&raw).expect("reads back");
        assert_eq!((back.provider.as_str(), back.model.as_str()), ("p", "m-1"));
        assert_eq!(back.answer, answer());

        let body = translate::encode_response(Format::Anthropic, &answer());
        let raw =
            encode_entry("ant", "claude", Payload::Upstream(Format::Anthropic, &body)).unwrap();
        let back = decode_entry(&raw).expect("reads back");
        assert_eq!(back.provider, "ant");
        assert_eq!(back.answer.content, answer().content);
        assert_eq!(back.answer.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn what_this_gateway_did_not_write_does_not_read_back() {
        assert!(decode_entry(b"").is_none());
        assert!(decode_entry(b"{\"provider\":\"p\"}").is_none());
        assert!(
            decode_entry(b"apc1\x07\x00\x01\x00p\x01\x00m{}").is_none(),
            "unknown kind"
        );
        assert!(
            decode_entry(b"apc1\x01\x09\x01\x00p\x01\x00m{}").is_none(),
            "unknown format"
        );
        assert!(
            decode_entry(b"apc1\x00\x00\x09\x00p").is_none(),
            "cut short"
        );
        assert!(decode_entry(b"apc1\x01\x00\x01\x00p\x01\x00mnot json").is_none());
    }
}
