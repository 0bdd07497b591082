//! Every response decoder and the same-format body relay. Invariant: when
//! the decoder reads a body, the relay reads the same usage from it.
#![no_main]

use apiproxy_translate::passthrough::passthrough_body;
use apiproxy_translate::{decode_response, encode_response};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((fmt, _, body)) = common::format_and_rest(data) else {
        return;
    };
    let relayed = passthrough_body(fmt, body, Some("logical-model"));
    if let Ok(resp) = decode_response(fmt, body) {
        let relayed = relayed.expect("a body the decoder reads is JSON");
        assert_eq!(resp.usage, relayed.usage, "usage differs between paths");
        // Renaming keeps a valid document valid. (serde skips the strings
        // it ignores without checking their UTF-8: a body can decode and
        // still not be a valid `Value`; the rename must not change that.)
        if let Some(renamed) = relayed.renamed {
            if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
                serde_json::from_slice::<serde_json::Value>(&renamed)
                    .expect("renaming the model keeps the body JSON");
            }
        }
        for client in common::FORMATS {
            let _ = encode_response(client, &resp);
        }
    }
});
