//! Config text → validated model must never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = vipgate::config::parse(text, "fuzz.toml") {
            // Rendering diagnostics (line/column maths) must not panic either.
            let _ = e.to_string();
        }
    }
});
