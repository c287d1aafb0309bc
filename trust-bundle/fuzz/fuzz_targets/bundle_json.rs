//! SPIFFE bundles and bundle maps from untrusted JSON: parsing never panics, and whatever parses
//! survives a serialise/parse round trip unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundle::bundle::{BundleMap, X509Bundle};

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = X509Bundle::from_spiffe_json(data) {
        let json = bundle.to_spiffe_json();
        let again = X509Bundle::from_spiffe_json(json.as_bytes())
            .unwrap_or_else(|e| panic!("to_spiffe_json output does not parse: {e}\n{json}"));
        assert_eq!(again, bundle, "spiffe bundle round trip changed the bundle");
    }
    if let Ok(map) = BundleMap::from_json(data) {
        let json = map.to_json();
        let again = BundleMap::from_json(json.as_bytes())
            .unwrap_or_else(|e| panic!("to_json output does not parse: {e}\n{json}"));
        assert_eq!(again, map, "bundle map round trip changed the map");
    }
});
