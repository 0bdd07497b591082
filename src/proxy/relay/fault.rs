//! Why relaying an answer failed: typed, so what follows (a timeout's 504,
//! failing over) is decided on its kind, and its cause kept for the log.

use std::fmt;

use apiproxy_translate::sse::SseTooLarge;
use apiproxy_translate::TranslateError;

use crate::proxy::upstream_error;
use crate::upstream::http::SendError;

/// A good answer's head came, then its body failed.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayFault {
    /// The connection broke or stalled while the body was read.
    Upstream(SendError),
    /// The answer came compressed (`content-encoding`), which the gateway
    /// never asks for.
    Compressed(String),
    /// A streaming request was answered without an event stream.
    NotAStream,
    /// A whole answer grew past the gateway's bound.
    TooLarge { limit: usize },
    /// A whole answer relayed as it came is not JSON.
    InvalidJson(String),
    /// A whole answer to translate could not be read.
    Unreadable(TranslateError),
    /// One event of a stream grew past the SSE parser's bound.
    EventTooLarge(SseTooLarge),
    /// A stream's event could not be read (not JSON, or not what the
    /// format says); the words are the upstream's, keys scrubbed.
    StreamUnreadable(String),
    /// The upstream closed the stream without sending an event.
    NoEvent,
}

impl RelayFault {
    /// The status an error event carries: 504 for a stalled upstream.
    pub fn status(&self) -> Option<u16> {
        self.timed_out().then_some(504)
    }

    /// The upstream stalled past its read timeout.
    pub fn timed_out(&self) -> bool {
        matches!(self, RelayFault::Upstream(e) if e.is_timeout())
    }

    /// The fault with every provider key in its words replaced: an
    /// upstream may echo one in the text it sends.
    pub fn scrubbed(self, keys: &[String]) -> Self {
        let scrub = |s: String| upstream_error::scrub(&s, keys);
        match self {
            RelayFault::StreamUnreadable(s) => RelayFault::StreamUnreadable(scrub(s)),
            RelayFault::InvalidJson(s) => RelayFault::InvalidJson(scrub(s)),
            RelayFault::Unreadable(e) => {
                RelayFault::Unreadable(TranslateError::new(scrub(e.message)))
            }
            other => other,
        }
    }
}

impl fmt::Display for RelayFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayFault::Upstream(e) => e.fmt(f),
            RelayFault::Compressed(enc) => write!(
                f,
                "upstream answered with content-encoding `{enc}`, which was not asked for"
            ),
            RelayFault::NotAStream => {
                f.write_str("upstream answered a streaming request without an event stream")
            }
            RelayFault::TooLarge { limit } => write!(f, "response body larger than {limit} bytes"),
            RelayFault::InvalidJson(e) => write!(f, "upstream answered invalid JSON: {e}"),
            RelayFault::Unreadable(e) => write!(f, "upstream answer could not be read: {e}"),
            RelayFault::EventTooLarge(e) => e.fmt(f),
            RelayFault::StreamUnreadable(e) => write!(f, "upstream stream could not be read: {e}"),
            RelayFault::NoEvent => f.write_str("upstream closed the stream without an event"),
        }
    }
}

impl std::error::Error for RelayFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RelayFault::Upstream(e) => Some(e),
            _ => None,
        }
    }
}
