//! The same upstream answer is counted the same on every path: translated
//! (`decode_response`, the stream decoders) and same-format
//! (`passthrough_body`, `PassthroughStream`), JSON and stream, whatever
//! way the bytes were split into reads; and the answer's finish reasons
//! (for a traced request's span) are read alike.

use std::path::Path;

use apiproxy_translate::passthrough::{
    passthrough_body, passthrough_body_with_finish, PassthroughOptions, PassthroughStream,
};
use apiproxy_translate::{
    decode_response, stream_decoder, usage_of_body, Format, SseParser, StreamEvent, Usage,
};
use bytes::BytesMut;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn files(dir: &str, ext: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(Path::new(FIXTURES).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Each fixture folder and the format its answers are in.
const DIRS: [(&str, Format); 4] = [
    ("openai", Format::OpenAiChat),
    ("responses", Format::OpenAiResponses),
    ("anthropic", Format::Anthropic),
    ("gemini", Format::Gemini),
];

/// What the translating path makes of a stream: the format's decoder's
/// events, in order, the stream fed as the given reads.
fn decoded_events(fmt: Format, chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut parser = SseParser::default();
    let mut decoder = stream_decoder(fmt);
    let (mut events, mut neutral) = (Vec::new(), Vec::new());
    for c in chunks {
        parser.feed(c, &mut events).unwrap();
    }
    parser.finish(&mut events);
    for ev in &events {
        decoder.decode(ev, &mut neutral).unwrap();
    }
    neutral
}

/// The usage the translating path reads from a stream: the decoder's last
/// `Usage` event.
fn decoded_stream_usage(fmt: Format, chunks: &[&[u8]]) -> Option<Usage> {
    decoded_events(fmt, chunks)
        .iter()
        .rev()
        .find_map(|e| match e {
            StreamEvent::Usage(u) => Some(*u),
            _ => None,
        })
}

/// The usage the same-format relay reads from a stream.
fn relayed_stream_usage(fmt: Format, chunks: &[&[u8]]) -> (Option<Usage>, BytesMut) {
    let (relay, out) = relay_all(fmt, PassthroughOptions::default(), chunks);
    (relay.usage(), out)
}

#[test]
fn every_fixture_body_is_counted_the_same_on_every_path() {
    let mut checked = 0;
    for (dir, fmt) in DIRS {
        for (name, body) in files(dir, "json") {
            let Ok(resp) = decode_response(fmt, &body) else {
                continue; // requests and error bodies
            };
            let relayed = passthrough_body(fmt, &body, Some("fast")).unwrap();
            assert_eq!(resp.usage, relayed.usage, "{name}");
            assert_eq!(resp.usage, usage_of_body(fmt, &body).unwrap(), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} bodies checked");
}

#[test]
fn every_fixture_stream_is_counted_the_same_on_every_path() {
    let mut checked = 0;
    for (dir, fmt) in DIRS {
        for (name, sse) in files(dir, "sse") {
            let whole = decoded_stream_usage(fmt, &[&sse]);
            let (relayed, _) = relayed_stream_usage(fmt, &[&sse]);
            assert_eq!(whole, relayed, "{name}");
            // Byte by byte, and cut in two at every point: the same counts.
            let bytes: Vec<&[u8]> = sse.chunks(1).collect();
            assert_eq!(
                relayed_stream_usage(fmt, &bytes).0,
                whole,
                "{name} bytewise"
            );
            for cut in (0..sse.len()).step_by(7) {
                let (a, b) = sse.split_at(cut);
                assert_eq!(
                    relayed_stream_usage(fmt, &[a, b]).0,
                    whole,
                    "{name} cut {cut}"
                );
            }
            checked += usize::from(whole.is_some());
        }
    }
    assert!(checked >= 8, "only {checked} streams with usage checked");
}

/// The counts the old same-format code got wrong.
#[test]
fn gemini_tool_use_prompt_and_deepseek_cache_hits_count_everywhere() {
    let gemini = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":10,"toolUsePromptTokenCount":7,"candidatesTokenCount":3,"thoughtsTokenCount":2},"modelVersion":"gemini-2.5-pro"}"#;
    let want = Usage {
        input_tokens: 17,
        output_tokens: 5,
        reasoning_tokens: Some(2),
        ..Usage::default()
    };
    assert_eq!(
        decode_response(Format::Gemini, gemini).unwrap().usage,
        Some(want)
    );
    assert_eq!(
        passthrough_body(Format::Gemini, gemini, None)
            .unwrap()
            .usage,
        Some(want)
    );
    let mut sse = b"data: ".to_vec();
    sse.extend_from_slice(gemini);
    sse.extend_from_slice(b"\n\n");
    assert_eq!(decoded_stream_usage(Format::Gemini, &[&sse]), Some(want));
    assert_eq!(relayed_stream_usage(Format::Gemini, &[&sse]).0, Some(want));

    let deepseek = br#"{"id":"x","object":"chat.completion","model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":18,"completion_tokens":4,"prompt_cache_hit_tokens":12,"prompt_cache_miss_tokens":6}}"#;
    let want = Usage {
        input_tokens: 18,
        output_tokens: 4,
        cached_input_tokens: Some(12),
        ..Usage::default()
    };
    assert_eq!(
        decode_response(Format::OpenAiChat, deepseek).unwrap().usage,
        Some(want)
    );
    assert_eq!(
        passthrough_body(Format::OpenAiChat, deepseek, None)
            .unwrap()
            .usage,
        Some(want)
    );
    let chunk = br#"data: {"id":"x","object":"chat.completion.chunk","model":"deepseek-chat","choices":[],"usage":{"prompt_tokens":18,"completion_tokens":4,"prompt_cache_hit_tokens":12}}

data: [DONE]

"#;
    assert_eq!(
        decoded_stream_usage(Format::OpenAiChat, &[chunk]),
        Some(want)
    );
    assert_eq!(
        relayed_stream_usage(Format::OpenAiChat, &[chunk]).0,
        Some(want)
    );
}

#[test]
fn anthropic_split_usage_adds_up_the_same_way() {
    let sse = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"usage":{"input_tokens":5,"cache_read_input_tokens":100,"cache_creation_input_tokens":20,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}

event: message_stop
data: {"type":"message_stop"}

"#;
    let want = Usage {
        input_tokens: 125,
        output_tokens: 42,
        cached_input_tokens: Some(100),
        cache_creation_input_tokens: Some(20),
        cache_creation_1h_input_tokens: None,
        reasoning_tokens: None,
    };
    assert_eq!(decoded_stream_usage(Format::Anthropic, &[sse]), Some(want));
    assert_eq!(
        relayed_stream_usage(Format::Anthropic, &[sse]).0,
        Some(want)
    );
}

#[test]
fn token_counts_saturate_instead_of_wrapping() {
    let max = u64::MAX;
    let gemini = format!(
        r#"{{"candidates":[],"usageMetadata":{{"promptTokenCount":{max},"toolUsePromptTokenCount":{max},"candidatesTokenCount":{max},"thoughtsTokenCount":{max}}}}}"#
    );
    let u = passthrough_body(Format::Gemini, gemini.as_bytes(), None)
        .unwrap()
        .usage
        .unwrap();
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.total()),
        (max, max, max)
    );
    let anthropic = format!(
        r#"{{"type":"message","content":[],"usage":{{"input_tokens":{max},"cache_read_input_tokens":{max},"output_tokens":1}}}}"#
    );
    let u = decode_response(Format::Anthropic, anthropic.as_bytes())
        .unwrap()
        .usage
        .unwrap();
    assert_eq!((u.input_tokens, u.total()), (max, max));
}

/// The output bytes the translating path counts: the decoder's events.
fn decoded_output_bytes(fmt: Format, sse: &[u8]) -> u64 {
    decoded_events(fmt, &[sse])
        .iter()
        .map(apiproxy_translate::passthrough::output_bytes)
        .sum()
}

/// The output bytes the same-format relay counts (for the usage estimate of
/// an answer without a usage report), split into reads as given.
fn relayed_output_bytes(fmt: Format, chunks: &[&[u8]]) -> u64 {
    let opts = PassthroughOptions {
        count_output: true,
        ..Default::default()
    };
    relay_all(fmt, opts, chunks).0.output_bytes()
}

/// The same-format relay with `opts`, fed `chunks` as reads to the end, and
/// what it wrote.
fn relay_all(
    fmt: Format,
    opts: PassthroughOptions,
    chunks: &[&[u8]],
) -> (PassthroughStream, BytesMut) {
    let mut relay = PassthroughStream::new(fmt, opts);
    let mut out = BytesMut::new();
    for c in chunks {
        relay.feed(c, &mut out).unwrap();
    }
    relay.finish(&mut out).unwrap();
    (relay, out)
}

/// An answer cut short is charged by the output relayed: the same-format
/// relay (which reads it straight from each event) and the translating
/// path (the decoder's events) count the same bytes.
#[test]
fn every_fixture_stream_has_the_same_output_on_every_path() {
    let mut checked = 0;
    for (dir, fmt) in DIRS {
        for (name, sse) in files(dir, "sse") {
            let decoded = decoded_output_bytes(fmt, &sse);
            assert_eq!(relayed_output_bytes(fmt, &[&sse]), decoded, "{name}");
            let bytes: Vec<&[u8]> = sse.chunks(1).collect();
            assert_eq!(
                relayed_output_bytes(fmt, &bytes),
                decoded,
                "{name} bytewise"
            );
            checked += usize::from(decoded > 0);
        }
    }
    assert!(checked >= 8, "only {checked} streams with output checked");
}

// Finish reasons (gathered for a traced request's span): read the same on
// the same-format paths (`passthrough_body_with_finish`, `PassthroughStream`
// with `finish_reasons`) whatever way the bytes were split into reads, and
// found wherever the format's own decoder finds one.

/// Whether the format's stream decoder saw the answer end with a reason.
fn decoder_finished(fmt: Format, sse: &[u8]) -> bool {
    decoded_events(fmt, &[sse])
        .iter()
        .any(|e| matches!(e, StreamEvent::Finish { .. }))
}

/// `dir/file` of a fixture's path.
fn fixture_name(path: &str) -> String {
    let p = Path::new(path);
    let dir = p.parent().and_then(Path::file_name).unwrap_or_default();
    let file = p.file_name().unwrap_or_default();
    format!("{}/{}", dir.to_string_lossy(), file.to_string_lossy())
}

/// The finish reasons the same-format relay reads, split into reads as given.
fn relayed(fmt: Format, chunks: &[&[u8]]) -> Vec<String> {
    let opts = PassthroughOptions {
        finish_reasons: true,
        ..Default::default()
    };
    relay_all(fmt, opts, chunks)
        .0
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
            seen.push((fixture_name(&name), whole.join(",")));
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
            seen.push((fixture_name(&name), read));
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
