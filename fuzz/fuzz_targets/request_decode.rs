//! Every request decoder, then every request encoder on what it decoded
//! (Gemini's schema rewrite included): no panic, bounded work.
#![no_main]

use apiproxy_translate::{decode_request, encode_request};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((fmt, _, rest)) = common::format_and_rest(data) else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    if let Ok(req) = decode_request(fmt, body) {
        for target in common::FORMATS {
            let _ = encode_request(target, &req);
        }
    }
});
