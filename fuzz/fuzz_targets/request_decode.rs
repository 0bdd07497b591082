//! Every request decoder, then every request encoder on what it decoded
//! (Gemini's schema rewrite included): no panic, bounded work. Decoding
//! from the bytes (the gateway's path: one turn at a time) gives what
//! decoding the whole tree gives.
#![no_main]

use apiproxy_translate::{
    decode_request, decode_request_bytes, detect_chat_adapter, encode_request, Format, Limits,
};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((fmt, _, rest)) = common::format_and_rest(data) else {
        return;
    };
    let limits = Limits::default();
    let body = match serde_json::from_slice::<serde_json::Value>(rest) {
        Ok(body) => body,
        // Each turn is its own document to the parser's depth limit, so
        // the bytes path takes a turn two levels deeper than a whole tree.
        Err(e) if e.to_string().contains("recursion limit") => return,
        Err(_) => {
            assert!(decode_request_bytes(fmt, fmt, rest, &limits).is_err());
            return;
        }
    };
    let shape = match fmt {
        Format::OpenAiChat => detect_chat_adapter(&body).unwrap_or(fmt),
        _ => fmt,
    };
    let from_bytes = decode_request_bytes(fmt, shape, rest, &limits);
    let from_tree = decode_request(fmt, body);
    match (&from_tree, &from_bytes) {
        (Ok(a), Ok(b)) => assert_eq!(
            common::without_made_up_ids(a),
            common::without_made_up_ids(b),
            "bytes and tree decode differently"
        ),
        (Err(_), Err(_)) => {}
        _ => panic!("bytes {from_bytes:?} vs tree {from_tree:?}"),
    }
    if let Ok(req) = from_tree {
        for target in common::FORMATS {
            let _ = encode_request(target, &req);
        }
    }
});
