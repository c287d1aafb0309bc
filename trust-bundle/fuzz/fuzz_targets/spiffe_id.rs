//! SPIFFE IDs from untrusted text: parsing never panics, and a parsed ID prints to a string that
//! parses back to the same ID, with a trust domain that parses on its own.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundle::spiffe::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(s) {
        let printed = id.to_string();
        let again = SpiffeId::parse(&printed)
            .unwrap_or_else(|e| panic!("{printed:?} printed from {s:?} does not parse: {e}"));
        assert_eq!(again, id);
        let td = TrustDomain::parse(id.trust_domain_str())
            .unwrap_or_else(|e| panic!("trust domain of {printed:?} does not parse: {e}"));
        assert_eq!(td, id.trust_domain());
        assert_eq!(
            SpiffeId::parse_workload(s).is_ok(),
            !id.is_authority(),
            "parse_workload disagrees with is_authority for {s:?}"
        );
    }
    let _ = TrustDomain::parse(s);
});
