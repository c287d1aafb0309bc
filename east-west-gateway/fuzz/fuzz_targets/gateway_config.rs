//! The gateway's YAML config from untrusted text: parsing and validation never panic, parsing is
//! deterministic, and `/config_dump` of whatever parses does not depend on the private key's
//! path (the dump never shows it, whatever else the config holds).

#![no_main]

use east_west_gateway::config::{self, Tls};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = config::parse(text) else {
        return;
    };
    let again = config::parse(text).expect("the same text parses twice");
    assert_eq!(again, cfg, "parsing is not deterministic");
    let dumped = config::dump(&cfg);
    let mut other = cfg.clone();
    if let Some(Tls::Files(files)) = &mut other.tls {
        files.private_key = "/another/key.pem".into();
    }
    assert_eq!(
        config::dump(&other),
        dumped,
        "the config dump depends on the private key path"
    );
});
