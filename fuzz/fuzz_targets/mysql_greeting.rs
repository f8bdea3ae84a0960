//! The first packet a MySQL / MariaDB server (or anything on its port) sends, as the tcp
//! and mysql probes parse it: never a panic, and errors render.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vipgate::mysql::parse_greeting;

fuzz_target!(|data: &[u8]| {
    match parse_greeting(data) {
        Ok(g) => {
            assert_eq!(g.protocol, 10);
            assert!(g.scramble.len() <= data.len());
        }
        Err(e) => drop(e.to_string()),
    }
});
