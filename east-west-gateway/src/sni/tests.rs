use std::sync::Arc;

use proptest::prelude::*;

use super::*;

// === builders ===

/// A ClientHello described by the fields the parser extracts.
#[derive(Debug, Clone)]
struct Spec {
    sni: Option<String>,
    alpn: Vec<Vec<u8>>,
    versions: Vec<u16>,
    padding: usize,
}

impl Spec {
    fn sni(name: &str) -> Self {
        Self {
            sni: Some(name.to_owned()),
            alpn: Vec::new(),
            versions: vec![0x0304, 0x0303],
            padding: 0,
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut b = vec![0x03, 0x03];
        b.extend([7u8; 32]);
        b.push(32);
        b.extend([9u8; 32]);
        b.extend(vec16(&[0x13, 0x01, 0x13, 0x02]));
        b.extend([1, 0]);
        let mut exts = Vec::new();
        if let Some(name) = &self.sni {
            let mut entry = vec![SERVER_NAME_TYPE_HOST];
            entry.extend(vec16(name.as_bytes()));
            exts.extend(ext(EXT_SERVER_NAME, &vec16(&entry)));
        }
        if !self.alpn.is_empty() {
            let list: Vec<u8> = self.alpn.iter().flat_map(|p| vec8(p)).collect();
            exts.extend(ext(EXT_ALPN, &vec16(&list)));
        }
        if !self.versions.is_empty() {
            let list: Vec<u8> = self.versions.iter().flat_map(|v| v.to_be_bytes()).collect();
            exts.extend(ext(EXT_SUPPORTED_VERSIONS, &vec8(&list)));
        }
        if self.padding > 0 {
            exts.extend(ext(21, &vec![0; self.padding]));
        }
        b.extend(vec16(&exts));
        b
    }

    fn message(&self) -> Vec<u8> {
        handshake(&self.body())
    }

    fn expected(&self, len: usize) -> ClientHello {
        ClientHello {
            server_name: self.sni.clone(),
            alpn: self.alpn.clone(),
            legacy_version: 0x0303,
            supported_versions: self.versions.clone(),
            len,
        }
    }
}

fn vec8(data: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::try_from(data.len()).expect("test vec8 fits")];
    v.extend(data);
    v
}

fn vec16(data: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(data.len())
        .expect("test vec16 fits")
        .to_be_bytes()
        .to_vec();
    v.extend(data);
    v
}

fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut v = ty.to_be_bytes().to_vec();
    v.extend(vec16(data));
    v
}

fn handshake(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len())
        .expect("test body fits")
        .to_be_bytes();
    let mut v = vec![HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]];
    v.extend(body);
    v
}

/// Frames `message` into handshake records of at most `chunk` payload bytes.
fn records(message: &[u8], chunk: usize) -> Vec<u8> {
    message
        .chunks(chunk.max(1))
        .flat_map(|c| {
            let mut r = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
            r.extend(vec16(c));
            r
        })
        .collect()
}

/// Frames `message` into two records split at `at`.
fn split_records(message: &[u8], at: usize) -> Vec<u8> {
    let (a, b) = message.split_at(at);
    [a, b]
        .iter()
        .filter(|part| !part.is_empty())
        .flat_map(|part| records(part, MAX_RECORD_PAYLOAD))
        .collect()
}

/// A real ClientHello as rustls sends it.
fn rustls_hello(sni: Option<&str>, alpn: &[&[u8]], tls12_only: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions supported")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni.is_some();
    let name = rustls_pki_types::ServerName::try_from(sni.unwrap_or("unused.example").to_owned())
        .expect("valid name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

fn check(input: &[u8], expected: Result<Parsed, Error>) {
    assert_eq!(
        parse_client_hello(input, DEFAULT_MAX_HELLO_BYTES),
        expected,
        "input {input:02x?}"
    );
}

fn complete(input: &[u8]) -> ClientHello {
    match parse_client_hello(input, DEFAULT_MAX_HELLO_BYTES) {
        Ok(Parsed::Complete(hello)) => hello,
        other => panic!("expected a complete hello, got {other:?}"),
    }
}

fn assert_prefixes_incomplete(input: &[u8], max: usize) {
    for end in 0..input.len() {
        assert_eq!(
            parse_client_hello(&input[..end], max),
            Ok(Parsed::Incomplete),
            "prefix of {end} bytes"
        );
    }
}

// === real clients ===

#[test]
fn rustls_tls13_hello_with_sni_and_alpn() {
    let bytes = rustls_hello(Some("Reviews.Example.com"), &[b"h2", b"http/1.1"], false);
    let hello = complete(&bytes);
    // rustls lowercases nothing itself; the parser reports what was sent.
    assert_eq!(
        hello.server_name.as_deref().map(str::to_ascii_lowercase),
        Some("reviews.example.com".to_owned())
    );
    assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(hello.max_version(), TlsVersion::Tls13);
    assert_eq!(hello.len, bytes.len());
    assert_prefixes_incomplete(&bytes, DEFAULT_MAX_HELLO_BYTES);
}

#[test]
fn rustls_tls12_only_hello() {
    let bytes = rustls_hello(Some("a.example"), &[], true);
    let hello = complete(&bytes);
    assert_eq!(hello.server_name.as_deref(), Some("a.example"));
    assert!(hello.alpn.is_empty());
    assert_eq!(hello.max_version(), TlsVersion::Tls12);
}

#[test]
fn rustls_hello_without_sni() {
    let bytes = rustls_hello(None, &[], false);
    assert_eq!(complete(&bytes).server_name, None);
}

#[test]
fn rustls_hello_one_byte_per_record() {
    let bytes = rustls_hello(Some("frag.example"), &[b"h2"], false);
    let message = &bytes[RECORD_HEADER_LEN..];
    let fragmented = records(message, 1);
    let hello = complete(&fragmented);
    assert_eq!(hello.server_name.as_deref(), Some("frag.example"));
    assert_eq!(hello.len, fragmented.len());
    assert_prefixes_incomplete(&fragmented, DEFAULT_MAX_HELLO_BYTES);
}

// === table ===

#[test]
fn empty_and_partial_headers_are_incomplete() {
    check(b"", Ok(Parsed::Incomplete));
    check(&[22], Ok(Parsed::Incomplete));
    check(&[22, 3], Ok(Parsed::Incomplete));
    check(&[22, 3, 1, 0], Ok(Parsed::Incomplete));
}

#[test]
fn non_tls_bytes_are_rejected_from_the_first_byte() {
    check(b"GET / HTTP/1.1\r\n", Err(Error::NotTls));
    check(b"G", Err(Error::NotTls));
    check(&[22, 2], Err(Error::NotTls));
    check(&[0x80, 0x2e, 0x01], Err(Error::NotTls)); // SSLv2-style hello
}

#[test]
fn grammar_violations_are_malformed() {
    let msg = Spec::sni("a.example").message();
    let wrong_type = {
        let mut m = msg.clone();
        m[0] = 2;
        records(&m, 1000)
    };
    check(
        &wrong_type,
        Err(Error::Malformed(
            "first handshake message is not a client hello",
        )),
    );
    check(
        &[22, 3, 1, 0, 0],
        Err(Error::Malformed("empty handshake record")),
    );
    let mut alert_inside = records(&msg[..10], 1000);
    alert_inside.extend([21, 3, 3, 0, 2, 2, 40]);
    check(
        &alert_inside,
        Err(Error::Malformed("non-handshake record inside client hello")),
    );
    check(
        &[22, 3, 1, 0x40, 0x01],
        Err(Error::Malformed("record longer than 2^14 bytes")),
    );
}

#[test]
fn duplicate_extensions_are_malformed() {
    let mut body = Spec::sni("a.example").body();
    // Append a second server_name extension and fix the extensions length.
    let dup = ext(EXT_SERVER_NAME, &vec16(&[0, 0, 1, b'b']));
    let ext_len_at = 2 + 32 + 33 + 6 + 2;
    let old = usize::from(u16::from_be_bytes([body[ext_len_at], body[ext_len_at + 1]]));
    let new = u16::try_from(old + dup.len()).expect("fits").to_be_bytes();
    body[ext_len_at..ext_len_at + 2].copy_from_slice(&new);
    body.extend(dup);
    check(
        &records(&handshake(&body), 1000),
        Err(Error::Malformed("duplicate extension")),
    );
}

#[test]
fn invalid_host_names_are_malformed() {
    for bad in ["", "a b", "caf\u{e9}.example", "x\0y"] {
        let mut spec = Spec::sni("placeholder");
        spec.sni = Some(bad.to_owned());
        let expected = if bad.is_empty() {
            "host name length out of range"
        } else {
            "host name has invalid characters"
        };
        check(
            &records(&spec.message(), 1000),
            Err(Error::Malformed(expected)),
        );
    }
}

#[test]
fn istio_alias_names_are_accepted() {
    let name = "outbound_.9080_._.reviews.default.svc.cluster.local";
    let hello = complete(&records(&Spec::sni(name).message(), 1000));
    assert_eq!(hello.server_name.as_deref(), Some(name));
}

#[test]
fn hello_without_extensions_has_no_sni() {
    let mut body = Spec::sni("x").body();
    body.truncate(2 + 32 + 33 + 6 + 2);
    let hello = complete(&records(&handshake(&body), 1000));
    assert_eq!(hello.server_name, None);
    assert_eq!(hello.max_version(), TlsVersion::Tls12);
}

#[test]
fn oversized_hellos_are_too_large() {
    let mut spec = Spec::sni("big.example");
    spec.padding = 4000;
    let bytes = records(&spec.message(), MAX_RECORD_PAYLOAD);
    assert!(matches!(
        parse_client_hello(&bytes, DEFAULT_MAX_HELLO_BYTES),
        Ok(Parsed::Complete(_))
    ));
    let max = 1024;
    // The handshake header alone proves it cannot fit.
    assert_eq!(
        parse_client_hello(&bytes[..9], max),
        Err(Error::TooLarge { max })
    );
    assert_eq!(
        parse_client_hello(&bytes, max),
        Err(Error::TooLarge { max })
    );
    // Many tiny records inflate the framing past the cap even for a small hello.
    let tiny = records(&Spec::sni("a.example").message(), 1);
    assert_eq!(
        parse_client_hello(&tiny, 200),
        Err(Error::TooLarge { max: 200 })
    );
}

#[test]
fn trailing_bytes_do_not_change_the_hello() {
    let mut bytes = records(&Spec::sni("a.example").message(), 1000);
    let hello = complete(&bytes);
    bytes.extend([23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(complete(&bytes), hello);
}

#[test]
fn coalesced_message_after_hello_sets_len_inside_record() {
    let mut message = Spec::sni("a.example").message();
    let hello_len = message.len();
    message.extend([20, 0, 0, 0]);
    let bytes = records(&message, 1000);
    assert_eq!(complete(&bytes).len, RECORD_HEADER_LEN + hello_len);
}

#[test]
fn grease_versions_are_ignored() {
    let mut spec = Spec::sni("a.example");
    spec.versions = vec![0x3a3a, 0x0303];
    let hello = complete(&records(&spec.message(), 1000));
    assert_eq!(hello.max_version(), TlsVersion::Tls12);
}

// === properties ===

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        proptest::option::of("[a-z0-9_][a-z0-9._-]{0,80}"),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..10), 0..4),
        proptest::collection::vec(any::<u16>(), 0..5),
        0usize..600,
    )
        .prop_map(|(sni, alpn, versions, padding)| Spec {
            sni,
            alpn,
            versions,
            padding,
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), max in 0usize..4096) {
        let _ = parse_client_hello(&bytes, max);
    }

    #[test]
    fn tls_framed_random_bytes_never_panic(
        len in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = vec![22, 3, 1];
        bytes.extend(len.to_be_bytes());
        bytes.push(HANDSHAKE_CLIENT_HELLO);
        bytes.extend(body);
        let _ = parse_client_hello(&bytes, DEFAULT_MAX_HELLO_BYTES);
    }

    #[test]
    fn every_prefix_is_incomplete(spec in spec_strategy(), chunk in 1usize..400) {
        let bytes = records(&spec.message(), chunk);
        assert_prefixes_incomplete(&bytes, DEFAULT_MAX_HELLO_BYTES);
        prop_assert_eq!(complete(&bytes), spec.expected(bytes.len()));
    }

    #[test]
    fn results_are_monotonic_in_the_prefix(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
        max in 1usize..400,
    ) {
        let mut input = vec![22, 3, 3, 1, 0, 1];
        input.extend(bytes);
        let short = cut.index(input.len() + 1);
        let first = parse_client_hello(&input[..short], max);
        if first != Ok(Parsed::Incomplete) {
            prop_assert_eq!(first, parse_client_hello(&input, max));
        }
    }
}

#[test]
fn fragmentation_at_every_split_point_gives_the_same_hello() {
    let spec = Spec {
        sni: Some("9080.reviews.default.aws-east.v1.isthmus.internal".to_owned()),
        alpn: vec![b"h2".to_vec()],
        versions: vec![0x0304],
        padding: 30,
    };
    let message = spec.message();
    for at in 0..message.len() {
        let bytes = split_records(&message, at);
        assert_eq!(
            complete(&bytes),
            spec.expected(bytes.len()),
            "split at {at}"
        );
    }
}
