//! ConverseStream's framing: AWS's binary event stream
//! (`application/vnd.amazon.eventstream`), decoded with the AWS crate as
//! bytes arrive (a frame may be split across reads, a read may hold many).
//!
//! Each frame becomes one [`SseEvent`] named by its `:event-type` with the
//! JSON payload as data, so the [`StreamDecoder`](super::StreamDecoder)
//! reads it like any other format's events. An exception or error frame
//! becomes an event named [`EXCEPTION_EVENT`] whose data is
//! `{"type": <exception type>, "message": <message>}`.
//!
//! Memory is bounded: a frame announcing more than the limit is refused
//! before its bytes are buffered.

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::Message;
use bytes::{Buf, BytesMut};
use serde_json::json;

use crate::sse::SseTooLarge;
use crate::SseEvent;

/// The name of the event an exception frame becomes.
pub const EXCEPTION_EVENT: &str = "exception";

/// Default bound on one frame (AWS caps event-stream messages at 16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Why a stream of frames cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announced more bytes than the limit.
    TooLarge(SseTooLarge),
    /// Not an event stream: a bad length, checksum or header.
    Corrupt(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(e) => write!(f, "event-stream frame: {e}"),
            FrameError::Corrupt(e) => write!(f, "event-stream frame unreadable: {e}"),
        }
    }
}

/// Incremental event-stream parser.
#[derive(Debug)]
pub struct EventStreamParser {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl Default for EventStreamParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl EventStreamParser {
    /// A parser that refuses frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// Feeds bytes; pushes an event for every frame they complete.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), FrameError> {
        self.buf.extend_from_slice(chunk);
        loop {
            // The prelude's first field: the frame's total length.
            let Some(len) = self.buf.get(..4) else {
                return Ok(());
            };
            let total = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if total > self.max_frame_bytes {
                return Err(FrameError::TooLarge(SseTooLarge {
                    limit: self.max_frame_bytes,
                }));
            }
            if self.buf.len() < total {
                self.buf.reserve(total - self.buf.len());
                return Ok(());
            }
            let mut frame = self.buf.split_to(total).freeze();
            let message =
                read_message_from(&mut frame).map_err(|e| FrameError::Corrupt(e.to_string()))?;
            if frame.has_remaining() {
                return Err(FrameError::Corrupt("frame length mismatch".to_owned()));
            }
            out.push(event_of(&message));
        }
    }

    /// The stream ended: bytes of an unfinished frame are an error.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Corrupt(format!(
                "stream ended inside a frame ({} bytes left)",
                self.buf.len()
            )))
        }
    }
}

fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

/// One frame as an event.
fn event_of(m: &Message) -> SseEvent {
    let payload = String::from_utf8_lossy(m.payload());
    match header(m, ":message-type") {
        Some("exception") => {
            let kind = header(m, ":exception-type").unwrap_or("exception");
            let message = super::error_message(m.payload()).unwrap_or_else(|| kind.to_owned());
            exception(kind, &message)
        }
        Some("error") => {
            let kind = header(m, ":error-code").unwrap_or("error");
            exception(kind, header(m, ":error-message").unwrap_or(kind))
        }
        _ => SseEvent {
            event: header(m, ":event-type").map(str::to_owned),
            data: payload.into_owned(),
        },
    }
}

fn exception(kind: &str, message: &str) -> SseEvent {
    SseEvent {
        event: Some(EXCEPTION_EVENT.to_owned()),
        data: json!({"type": kind, "message": message}).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue};

    fn frame(headers: &[(&str, &str)], payload: &str) -> Vec<u8> {
        let mut m = Message::new(payload.as_bytes().to_vec());
        for (k, v) in headers {
            m = m.add_header(Header::new(
                k.to_string(),
                HeaderValue::String(v.to_string().into()),
            ));
        }
        let mut out = Vec::new();
        write_message_to(&m, &mut out).unwrap();
        out
    }

    #[test]
    fn frames_split_anywhere_decode_whole() {
        let mut bytes = frame(
            &[
                (":message-type", "event"),
                (":event-type", "contentBlockDelta"),
            ],
            r#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#,
        );
        bytes.extend(frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            r#"{"message":"Too many tokens"}"#,
        ));
        for split in 0..bytes.len() {
            let mut p = EventStreamParser::default();
            let mut out = Vec::new();
            p.feed(&bytes[..split], &mut out).unwrap();
            p.feed(&bytes[split..], &mut out).unwrap();
            p.finish().unwrap();
            assert_eq!(out.len(), 2, "split at {split}");
            assert_eq!(out[0].event.as_deref(), Some("contentBlockDelta"));
            assert_eq!(out[1].event.as_deref(), Some(EXCEPTION_EVENT));
            assert_eq!(
                out[1].data,
                r#"{"message":"Too many tokens","type":"throttlingException"}"#
            );
        }
    }

    #[test]
    fn oversized_and_corrupt_frames_are_errors() {
        let bytes = frame(
            &[(":event-type", "messageStart")],
            r#"{"role":"assistant"}"#,
        );
        let mut p = EventStreamParser::new(bytes.len() - 1);
        assert!(matches!(
            p.feed(&bytes, &mut Vec::new()),
            Err(FrameError::TooLarge(_))
        ));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // the message checksum
        let mut p = EventStreamParser::default();
        assert!(matches!(
            p.feed(&bad, &mut Vec::new()),
            Err(FrameError::Corrupt(_))
        ));
        let mut p = EventStreamParser::default();
        p.feed(&bytes[..10], &mut Vec::new()).unwrap();
        assert!(p.finish().is_err());
    }
}
