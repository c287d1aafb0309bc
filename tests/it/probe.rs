//! What the security scenarios poke the processes with: raw TCP, TLS clients holding chosen
//! identities (issued here from a cluster's CA directory, with chosen validity), plain HTTP to
//! the admin endpoint, and the resident memory of a process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use trust_bundle::ca::LeafParams;
use trust_bundle::tls::{self, Authorizer, IdentityHandle, TrustHandle};
use trust_bundle::{Authority, BundleMap, Credential, KeyAlgorithm, PrivateKey, SpiffeId};
use trust_bundle::{TrustStore, X509Bundle};

/// How long a probe waits for an answer before calling it a hang.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// Sends `bytes` on a fresh connection, then reads until the peer closes (or `IO_TIMEOUT`);
/// returns what came back. A reset counts as a close.
pub(crate) fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // The server may close before reading everything; a failed write is part of the case.
    let _ = tcp.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("{addr}: no close within {IO_TIMEOUT:?} after a hostile input: {e}"),
        }
    }
}

/// `GET path` on the admin endpoint; the status line and body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> String {
    let reply = send_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    String::from_utf8_lossy(&reply).into_owned()
}

/// A minimal TLS 1.2/1.3 ClientHello record naming `sni`.
pub(crate) fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    let list_len = name.len() + 3;
    sni_ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = Vec::new();
    exts.extend_from_slice(&0u16.to_be_bytes());
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sni_ext);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// The authority in a CA directory written by `trust-bundle intermediate create`.
pub(crate) fn load_ca(dir: &Path) -> Authority {
    let read = |f: &str| {
        std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
    };
    let certs = |f: &str| trust_bundle::bundle::parse_pem_certs(&read(f)).expect("PEM certs");
    let key = PrivateKey::from_pem(&String::from_utf8(read("key.pem")).expect("utf-8 key"))
        .expect("CA key");
    let cert = certs("cert.pem").remove(0);
    let above = certs("chain.pem").into_iter().skip(1).collect();
    let root = certs("root.pem").remove(0);
    Authority::load(cert, key, above, root).expect("CA directory")
}

/// A leaf for `id` issued by `ca` as if the clock read `now`, valid for `validity`.
pub(crate) fn leaf_at(ca: &Authority, id: &str, now: SystemTime, validity: Duration) -> Credential {
    let params = LeafParams {
        spiffe_id: SpiffeId::parse(id).expect("SPIFFE ID"),
        dns_names: vec![],
        validity,
        algorithm: KeyAlgorithm::EcdsaP256,
    };
    ca.issue_leaf(&params, now.into())
        .unwrap_or_else(|e| panic!("issue {id}: {e}"))
}

/// A mutual-TLS client holding `cred`, trusting `ca`'s root for its trust domain, accepting any
/// server identity in it (the server's refusal is what the scenarios look at).
pub(crate) fn mtls_client(cred: &Credential, ca: &Authority) -> Arc<rustls::ClientConfig> {
    let mut map = BundleMap::new();
    map.insert(
        ca.trust_domain().clone(),
        X509Bundle::new([ca_root(ca)]).expect("bundle"),
    );
    let trust = TrustHandle::new(TrustStore::new(&map).expect("trust store"));
    let identity = IdentityHandle::from_credential(cred).expect("identity");
    let mut config = tls::client_config(identity, trust, Authorizer::any()).expect("client config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

fn ca_root(ca: &Authority) -> rustls_pki_types::CertificateDer<'static> {
    ca.credential.root.clone()
}

/// One HTTP/1.0 GET over mutual TLS to `addr` with `sni`: the response, or why it failed
/// (a refused handshake shows as the alert the server sent).
pub(crate) fn mtls_get(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> Result<String, String> {
    tls_exchange(config, addr, sni, b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
        .map(|resp| String::from_utf8_lossy(&resp).into_owned())
}

/// Handshakes with `config` (ALPN as configured), sends `request` and reads until the server
/// closes: what came back, or the error (a TLS 1.3 server refuses a client certificate after
/// the client's handshake is done, so its alert arrives on the first read).
pub(crate) fn tls_exchange(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    let mut config = (**config).clone();
    if request.starts_with(b"GET ") {
        config.alpn_protocols.clear();
    }
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    match tls.read_to_end(&mut resp) {
        Ok(_) => Ok(resp),
        Err(e) if !resp.is_empty() => Err(format!("{e} after {} bytes", resp.len())),
        Err(e) => Err(e.to_string()),
    }
}
