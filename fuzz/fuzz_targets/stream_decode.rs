//! Every stream decoder (through the SSE parser, in chunks the input
//! chooses) into every stream encoder, and the same-format stream relay.
//! Invariant: when both read the whole stream, the decoder's last usage
//! and the relay's are the same.
#![no_main]

use apiproxy_translate::passthrough::{PassthroughOptions, PassthroughStream};
use apiproxy_translate::{stream_decoder, stream_encoder, SseParser, StreamEvent, StreamOptions};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((fmt, sel, rest)) = common::format_and_rest(data) else {
        return;
    };
    let client = common::FORMATS[(sel & 3) as usize];
    let step = 1 + (sel >> 2) as usize * 7;
    let mut parser = SseParser::new(1 << 20);
    let mut decoder = stream_decoder(fmt);
    let mut encoder = stream_encoder(
        client,
        StreamOptions {
            model_override: Some("m".into()),
            include_usage: true,
        },
    );
    let mut relay = PassthroughStream::new(
        fmt,
        PassthroughOptions {
            model_override: Some("m".into()),
            drop_usage_chunk: false,
            capture_text: true,
            count_output: true,
            finish_reasons: true,
        },
    )
    .with_max_event_bytes(1 << 20);
    let (mut events, mut neutral, mut out, mut relayed) =
        (Vec::new(), Vec::new(), BytesMut::new(), BytesMut::new());
    let (mut decoded_all, mut relayed_all) = (true, true);
    let mut usage = None;
    let mut feed = |chunk: Option<&[u8]>, events: &mut Vec<_>| {
        events.clear();
        match chunk {
            Some(c) => parser.feed(c, events).is_ok(),
            None => {
                parser.finish(events);
                true
            }
        }
    };
    let chunks = rest.chunks(step).map(Some).chain([None]);
    for chunk in chunks {
        decoded_all &= feed(chunk, &mut events);
        for ev in &events {
            neutral.clear();
            if decoder.decode(ev, &mut neutral).is_err() {
                decoded_all = false;
            }
            for e in &neutral {
                if let StreamEvent::Usage(u) = e {
                    usage = Some(*u);
                }
                encoder.encode(e, &mut out);
            }
        }
        let r = match chunk {
            Some(c) => relay.feed(c, &mut relayed),
            None => relay.finish(&mut relayed),
        };
        relayed_all &= r.is_ok();
        if !relayed_all {
            break;
        }
    }
    encoder.finish(&mut out);
    relay.fail(Some(502), "fuzz", &mut relayed);
    let _ = relay.take_text();
    if decoded_all && relayed_all {
        assert_eq!(usage, relay.usage(), "usage differs between paths");
    }
});
