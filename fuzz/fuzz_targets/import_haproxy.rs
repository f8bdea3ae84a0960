//! haproxy.cfg text → translation must never panic, and what it prints must be TOML that
//! vipgate's validation can read (accepting or refusing it, without panicking).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let imported = vipgate::import::import(text);
        for r in &imported.reports {
            let _ = r.to_string();
        }
        if let Err(e) = vipgate::config::parse(&imported.toml, "imported.toml") {
            let _ = e.to_string();
        }
    }
});
