//! The config loader on any text: errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |name: &str| (name == "SET").then(|| "value".to_owned());
    let _ = apiproxy::config::Config::from_yaml(text, &lookup);
});
