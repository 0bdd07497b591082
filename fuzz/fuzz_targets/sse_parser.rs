//! The SSE parser: whatever the split of the input into reads, the same
//! events come out, and memory stays within the bound.
#![no_main]

use apiproxy_translate::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut p = SseParser::new(1 << 16);
        let mut out = Vec::new();
        let ok = p.feed(input, &mut out).is_ok();
        p.finish(&mut out);
        ok.then_some(out)
    };
    let step = 1 + split as usize;
    let mut p = SseParser::new(1 << 16);
    let mut out = Vec::new();
    let mut ok = true;
    for c in input.chunks(step) {
        ok &= p.feed(c, &mut out).is_ok();
    }
    p.finish(&mut out);
    if let (Some(whole), true) = (whole, ok) {
        assert_eq!(whole, out, "events depend on how the bytes were split");
    }
});
