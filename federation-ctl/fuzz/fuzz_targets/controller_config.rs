//! The controller's YAML config from untrusted text: parsing never panics, every error names
//! the file it is about, and a config that parses is deterministic (parsing it again gives the
//! same config).

#![no_main]

use std::path::Path;

use federation_ctl::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/etc/isthmus/controller.yaml");
    match config::parse(text, file) {
        Ok(cfg) => {
            let again = config::parse(text, file).expect("the same text parses twice");
            assert_eq!(again, cfg);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("controller.yaml"),
                "the error does not name the file: {message}"
            );
        }
    }
});
