//! ClientHello detection on untrusted bytes: never panics, and keeps the prefix contract that
//! `sni::parse_client_hello` documents (a verdict never changes as more bytes arrive, and strict
//! prefixes of a complete hello are incomplete).

#![no_main]

use east_west_gateway::names;
use east_west_gateway::sni::{self, DEFAULT_MAX_HELLO_BYTES, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max = DEFAULT_MAX_HELLO_BYTES;
    let verdict = sni::parse_client_hello(data, max);
    match &verdict {
        Ok(Parsed::Complete(hello)) => {
            assert!(
                hello.len <= data.len().min(max),
                "hello longer than its buffer"
            );
            assert_eq!(
                sni::parse_client_hello(&data[..hello.len], max),
                verdict,
                "the hello alone parses differently"
            );
            if let Some(last) = hello.len.checked_sub(1) {
                assert_eq!(
                    sni::parse_client_hello(&data[..last], max),
                    Ok(Parsed::Incomplete),
                    "a strict prefix of a complete hello is not incomplete"
                );
            }
            let _ = hello.max_version().as_str();
            if let Some(name) = &hello.server_name {
                let _ = names::parse_service_name(&name.to_ascii_lowercase());
            }
        }
        Ok(Parsed::Incomplete) => {}
        Err(_) => {
            let mut longer = data.to_vec();
            longer.push(0);
            assert_eq!(
                sni::parse_client_hello(&longer, max),
                verdict,
                "an error turned into something else when one more byte arrived"
            );
        }
    }
});
