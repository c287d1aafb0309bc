//! PEM certificates from untrusted input: PEM framing, X.509 parsing and the facts and lint
//! findings `trust-bundle inspect` derives from them never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundle::bundle::parse_pem_certs;
use trust_bundle::cert::ParsedCert;
use trust_bundle::inspect::CertInfo;

/// A fixed clock (2027-01-15T08:00:00Z) keeps every run deterministic.
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(certs) = parse_pem_certs(data) else {
        return;
    };
    for der in &certs {
        if let Ok(cert) = ParsedCert::parse(der) {
            let info = CertInfo::new(&cert, NOW);
            // Touch the derived strings so nothing is optimised away.
            std::hint::black_box((&info.subject, &info.findings, cert.label()));
        }
    }
});
