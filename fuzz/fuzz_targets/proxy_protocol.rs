//! PROXY header parsing must never panic on any bytes, never claim more bytes than it was
//! given, and agree with itself on the bytes of a header it accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vipgate::proxy::proxy_protocol::parse;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some((addresses, consumed))) => {
            assert!(consumed <= data.len());
            // The header alone parses the same; what follows it must not matter.
            let again = parse(&data[..consumed]).ok().flatten();
            assert_eq!(again, Some((addresses, consumed)));
            // Every shorter prefix of an accepted header is a wait, never an error, or a
            // reader would reject a header that merely arrived in pieces.
            for end in 0..consumed {
                assert!(matches!(parse(&data[..end]), Ok(None)), "prefix {end} of {consumed}");
            }
        }
        Ok(None) => {}
        // Messages quote input: rendering them must not panic either.
        Err(e) => drop(e.to_string()),
    }
});
