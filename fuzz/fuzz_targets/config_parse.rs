//! Config text → validated model must never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Pure: the validation without I/O (no name resolved, no file read), as fast as
        // the text allows.
        if let Err(e) = vipgate::config::validate_pure(text, "fuzz.toml") {
            // Rendering diagnostics (line/column maths) must not panic either.
            let _ = e.to_string();
        }
    }
});
