//! W3C trace context (`traceparent`, `tracestate`) read and written, and
//! the sampling decision: pure.

use opentelemetry::trace::{SpanId, TraceId};

/// A `traceparent` header's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The caller's span: the parent of the gateway's.
    pub span_id: SpanId,
    pub sampled: bool,
}

/// The longest `tracestate` passed on (W3C: a vendor may cut it past 512).
const MAX_TRACESTATE: usize = 512;

/// Reads a `traceparent` (`00-{32 hex}-{16 hex}-{2 hex}`). A later version
/// is read by the same first fields (W3C: "parse as version 00"); anything
/// else, an all-zero id or version `ff` is none (a new trace starts).
pub fn parse_traceparent(v: &str) -> Option<TraceParent> {
    let b = v.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = &v[..2];
    if !lower_hex(version) || version == "ff" || (version == "00" && b.len() != 55) {
        return None;
    }
    if b.len() > 55 && b[55] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The `traceparent` of span `span_id` in trace `trace_id`. Written into
/// an array: made for every attempt of every traced request, where
/// `format!`'s hex formatting was a tenth of tracing's cost.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    let mut out = *b"00-................................-................-00";
    // Each id's hex fills its place exactly (16 and 8 bytes).
    let written = hex::encode_to_slice(trace_id.to_bytes(), &mut out[3..35])
        .and(hex::encode_to_slice(span_id.to_bytes(), &mut out[36..52]));
    if sampled {
        out[54] = b'1';
    }
    // Only ASCII digits, letters and dashes were written.
    written
        .ok()
        .and_then(|()| String::from_utf8(out.to_vec()).ok())
        .unwrap_or_default()
}

/// A client's `tracestate` when it is fit to pass on: printable ASCII,
/// at most 512 bytes.
pub fn tracestate(v: &str) -> Option<&str> {
    let fit =
        !v.is_empty() && v.len() <= MAX_TRACESTATE && v.bytes().all(|c| (0x20..0x7f).contains(&c));
    fit.then_some(v)
}

/// Whether a trace is sampled: a parent's flag decides (as a
/// parent-based sampler does); without one, the trace id against the ratio,
/// as OpenTelemetry's `TraceIdRatioBased` reads it (its low 63 bits), so
/// every service with that ratio samples the same traces.
pub fn sampled(parent: Option<&TraceParent>, trace_id: TraceId, ratio: f64) -> bool {
    if let Some(p) = parent {
        return p.sampled;
    }
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

/// A new random trace id (never the invalid all-zero one).
pub fn new_trace_id() -> TraceId {
    loop {
        let id = TraceId::from(rand::random::<u128>());
        if id != TraceId::INVALID {
            return id;
        }
    }
}

/// A new random span id (never the invalid all-zero one).
pub fn new_span_id() -> SpanId {
    loop {
        let id = SpanId::from(rand::random::<u64>());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_a_traceparent() {
        let p = parse_traceparent(GOOD).unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled = GOOD.replace("-01", "-00");
        assert!(!parse_traceparent(&unsampled).unwrap().sampled);
        // A later version: its first fields, what follows ignored.
        let later = GOOD.replacen("00-", "01-", 1) + "-what-follows";
        assert!(parse_traceparent(&later).is_some());
        assert_eq!(traceparent(p.trace_id, p.span_id, true), GOOD);
        let unsampled = traceparent(p.trace_id, p.span_id, false);
        assert_eq!(unsampled, format!("{}-00", &GOOD[..52]));
    }

    #[test]
    fn refuses_what_is_not_one() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn tracestate_passed_on_only_when_fit() {
        assert_eq!(tracestate("congo=t61rcWkgMzE"), Some("congo=t61rcWkgMzE"));
        assert_eq!(tracestate(""), None);
        assert_eq!(tracestate("a=\u{7f}"), None);
        assert_eq!(tracestate(&"a".repeat(513)), None);
    }

    #[test]
    fn sampling_follows_the_parent_then_the_ratio() {
        let parent = parse_traceparent(GOOD).unwrap();
        let id = parent.trace_id;
        assert!(sampled(Some(&parent), id, 0.0));
        let unsampled = TraceParent {
            sampled: false,
            ..parent
        };
        assert!(!sampled(Some(&unsampled), id, 1.0));
        assert!(sampled(None, id, 1.0));
        assert!(!sampled(None, id, 0.0));
        // The low 63 bits against the ratio.
        let low = TraceId::from(0x1u128);
        let high = TraceId::from(u64::MAX as u128);
        assert!(sampled(None, low, 0.5));
        assert!(!sampled(None, high, 0.5));
        // About the ratio over many random ids.
        let n = (0..10_000)
            .filter(|_| sampled(None, new_trace_id(), 0.25))
            .count();
        assert!((2000..3000).contains(&n), "{n}");
    }
}
