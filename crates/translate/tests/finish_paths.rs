//! An answer's finish reasons are read the same on the same-format paths
//! (`passthrough_body_with_finish`, `PassthroughStream` with
//! `finish_reasons`) whatever way the bytes were split into reads, and
//! found wherever the format's own decoder finds one.

use std::path::Path;

use apiproxy_translate::passthrough::{
    passthrough_body_with_finish, PassthroughOptions, PassthroughStream,
};
use apiproxy_translate::{decode_response, stream_decoder, Format, SseParser, StreamEvent};
use bytes::BytesMut;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn files(dir: &str, ext: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(Path::new(FIXTURES).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (format!("{dir}/{name}"), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

const DIRS: [(&str, Format); 4] = [
    ("openai", Format::OpenAiChat),
    ("responses", Format::OpenAiResponses),
    ("anthropic", Format::Anthropic),
    ("gemini", Format::Gemini),
];

/// Whether the format's stream decoder saw the answer end with a reason.
fn decoder_finished(fmt: Format, sse: &[u8]) -> bool {
    let mut parser = SseParser::default();
    let mut decoder = stream_decoder(fmt);
    let (mut events, mut neutral) = (Vec::new(), Vec::new());
    parser.feed(sse, &mut events).unwrap();
    parser.finish(&mut events);
    for ev in &events {
        let _ = decoder.decode(ev, &mut neutral);
    }
    neutral
        .iter()
        .any(|e| matches!(e, StreamEvent::Finish { .. }))
}

fn relayed(fmt: Format, chunks: &[&[u8]]) -> Vec<String> {
    let opts = PassthroughOptions {
        finish_reasons: true,
        ..Default::default()
    };
    let mut relay = PassthroughStream::new(fmt, opts);
    let mut out = BytesMut::new();
    for c in chunks {
        relay.feed(c, &mut out).unwrap();
    }
    relay.finish(&mut out).unwrap();
    relay
        .take_finish_reasons()
        .map(|f| f.into_vec())
        .unwrap_or_default()
}

#[test]
fn every_fixture_streams_reasons_are_read_however_it_is_split() {
    let mut seen = Vec::new();
    for (dir, fmt) in DIRS {
        for (name, sse) in files(dir, "sse") {
            let whole = relayed(fmt, &[&sse]);
            assert_eq!(
                !whole.is_empty(),
                decoder_finished(fmt, &sse),
                "{name}: {whole:?}"
            );
            let bytes: Vec<&[u8]> = sse.chunks(1).collect();
            assert_eq!(relayed(fmt, &bytes), whole, "{name} bytewise");
            for cut in (0..sse.len()).step_by(7) {
                let (a, b) = sse.split_at(cut);
                assert_eq!(relayed(fmt, &[a, b]), whole, "{name} cut {cut}");
            }
            seen.push((name, whole.join(",")));
        }
    }
    let seen: Vec<(&str, &str)> = seen.iter().map(|(n, r)| (n.as_str(), r.as_str())).collect();
    for want in [
        ("anthropic/stream-text.sse", "max_tokens"),
        ("anthropic/stream-thinking-tools.sse", "tool_use"),
        ("gemini/stream_function_calls.sse", "STOP"),
        ("openai/hand-stream-parallel-tools.sse", "tool_calls"),
        ("responses/stream-incomplete.sse", "max_output_tokens"),
        // An error told in the stream: no reason.
        ("responses/stream-failed.sse", ""),
        ("responses/stream-reasoning-text-tool.sse", "completed"),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:#?}");
    }
}

#[test]
fn every_fixture_bodys_reasons_are_read_where_the_decoder_finds_one() {
    let mut seen = Vec::new();
    for (dir, fmt) in DIRS {
        for (name, body) in files(dir, "json") {
            let Ok(resp) = decode_response(fmt, &body) else {
                continue; // requests and error bodies
            };
            let read = passthrough_body_with_finish(fmt, &body, Some("fast"))
                .unwrap()
                .finish_reasons
                .map(|f| f.into_vec().join(","));
            if read.is_some() {
                assert!(resp.finish_reason.is_some(), "{name}: {read:?}");
            }
            seen.push((name, read));
        }
    }
    let seen: Vec<(&str, Option<&str>)> = seen
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_deref()))
        .collect();
    for want in [
        ("anthropic/response-tools.json", Some("tool_use")),
        ("anthropic/response-text.json", Some("end_turn")),
        ("gemini/response_parallel_calls.json", Some("STOP")),
        // No candidate: the client is told `promptFeedback`, no reason.
        ("gemini/response_prompt_blocked.json", None),
        (
            "openai/hand-response-cached-parallel.json",
            Some("tool_calls"),
        ),
        (
            "responses/response-incomplete.json",
            Some("max_output_tokens"),
        ),
        ("responses/response-reasoning-tools.json", Some("completed")),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:#?}");
    }
}
