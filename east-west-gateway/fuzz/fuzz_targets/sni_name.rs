//! The SNI service-name grammar on untrusted text: never panics, and every recognised name prints
//! back to a string that parses to the same name and passes the host-name check.

#![no_main]

use east_west_gateway::names::{self, IstioName, Label, NativeName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = names::parse_service_name(s) {
        let printed = name.to_string();
        let again = names::parse_service_name(&printed)
            .unwrap_or_else(|e| panic!("{printed:?} printed from {s:?} does not parse: {e}"));
        assert_eq!(again, name);
        if let Err(e) = names::check_host_name(&printed) {
            panic!("service name {printed:?} fails the host-name check: {e}");
        }
    }
    let _ = NativeName::parse(s);
    let _ = IstioName::parse(s);
    let _ = names::check_host_name(s);
    if let Ok(label) = Label::new(s) {
        assert_eq!(label.as_str(), s);
    }
});
