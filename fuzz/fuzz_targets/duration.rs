//! Duration strings must parse or fail cleanly, and round-trip through format.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = vipgate::config::parse_duration(text) {
            let again = vipgate::config::parse_duration(&vipgate::config::format_duration(d));
            assert!(again.is_ok());
        }
    }
});
