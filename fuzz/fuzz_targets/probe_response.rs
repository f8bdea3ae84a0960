//! What a health-checked server answers, as the HTTP / clustercheck probe parses it: never
//! a panic, a body never longer than what arrived, and a complete response stays the same
//! when more bytes follow it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vipgate::health::http::parse_response;

fuzz_target!(|data: &[u8]| {
    for head_only in [false, true] {
        match parse_response(data, head_only) {
            Ok(r) => {
                assert!(r.body.len() <= data.len());
                assert!((100..1000).contains(&r.status));
                if r.complete && !head_only {
                    let mut more = data.to_vec();
                    more.extend_from_slice(b"trailing garbage\r\n");
                    let again = parse_response(&more, head_only).expect("a longer read of a complete response");
                    assert_eq!((again.status, again.reason), (r.status, r.reason));
                }
            }
            Err(e) => drop(e),
        }
    }
});
