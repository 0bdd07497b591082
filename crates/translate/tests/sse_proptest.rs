//! The SSE parser on arbitrary input: it never panics, never holds more than
//! its limit, and how the bytes are split into reads never changes the events.

use apiproxy_translate::sse::{SseEvent, SseParser};
use proptest::prelude::*;

fn parse(chunks: &[&[u8]], limit: usize) -> Vec<SseEvent> {
    let mut p = SseParser::new(limit);
    let mut out = Vec::new();
    for c in chunks {
        let _ = p.feed(c, &mut out);
    }
    p.finish(&mut out);
    out
}

/// SSE-looking bytes: fields, comments, line endings of every kind, junk.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b": ping".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"[DONE]".to_vec()),
        "[a-z{}\":, ]{0,12}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..2048) {
        let cut = cut.min(bytes.len());
        let (a, b) = bytes.split_at(cut);
        let _ = parse(&[a, b], 256);
    }

    #[test]
    fn splitting_never_changes_the_events(bytes in sse_bytes(), cuts in proptest::collection::vec(0usize..4096, 0..8)) {
        let whole = parse(&[&bytes], usize::MAX);
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points {
            chunks.push(&bytes[from..p]);
            from = p;
        }
        chunks.push(&bytes[from..]);
        prop_assert_eq!(parse(&chunks, usize::MAX), whole);
    }

    #[test]
    fn events_over_the_limit_are_refused(len in 40usize..400) {
        let mut p = SseParser::new(32);
        let mut out = Vec::new();
        let big = format!("data: {}", "x".repeat(len));
        prop_assert!(p.feed(big.as_bytes(), &mut out).is_err());
        prop_assert!(out.is_empty());
    }
}
