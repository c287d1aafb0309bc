//! The registry file from untrusted text: parsing never panics, every error names the file,
//! each parsed service is filed under its own key, and parsing is deterministic.

#![no_main]

use std::path::Path;

use federation_ctl::registry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/var/lib/isthmus/registry.yaml");
    match registry::parse(text, file) {
        Ok(doc) => {
            for (key, service) in &doc.services {
                assert_eq!(&service.key, key, "a service filed under another key");
            }
            let again = registry::parse(text, file).expect("the same text parses twice");
            assert_eq!(again, doc);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("registry.yaml"),
                "the error does not name the file: {message}"
            );
        }
    }
});
