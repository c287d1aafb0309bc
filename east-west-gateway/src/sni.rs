//! TLS ClientHello detection over a byte prefix.
//!
//! The ingress listener buffers the first bytes of a connection and calls
//! [`parse_client_hello`] after every read. The parser is sans-IO and total: it never panics and
//! never allocates more than the hello it returns. It understands TLS 1.0–1.3 record framing,
//! including a ClientHello fragmented over several records (RFC 8446 §5.1 allows it) and a buffer
//! cut at any byte.
//!
//! It deliberately does *not* validate cipher suites, key shares or anything a TLS stack checks:
//! the endpoint (passthrough) or rustls (terminate) does that. It extracts only what routing needs:
//! the SNI host name, the ALPN list and the offered protocol versions.

use std::fmt;

/// Default cap on the bytes the gateway buffers while looking for a ClientHello.
pub const DEFAULT_MAX_HELLO_BYTES: usize = 16 * 1024;

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// RFC 8446 §5.1: a record's plaintext fragment is at most 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const SERVER_NAME_TYPE_HOST: u8 = 0;
/// RFC 6066 caps HostName at 2^16-1 bytes, but DNS names are at most 253 (255 on the wire).
const MAX_SERVER_NAME_LEN: usize = 255;

/// What a byte prefix tells about the ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The prefix is a valid start of a ClientHello; read more bytes.
    Incomplete,
    /// A whole ClientHello was found.
    Complete(ClientHello),
}

/// Why a byte prefix can never become a usable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first bytes are not a TLS handshake record.
    #[error("not a tls handshake")]
    NotTls,
    /// The bytes are TLS-framed but violate the record or ClientHello grammar.
    #[error("malformed client hello: {0}")]
    Malformed(&'static str),
    /// The hello (with its record framing) does not fit in the configured cap.
    #[error("client hello larger than {max} bytes")]
    TooLarge {
        /// The cap that was exceeded.
        max: usize,
    },
}

/// The routing-relevant content of a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` entry of the server_name extension, exactly as sent (DNS is
    /// case-insensitive; callers normalise case).
    pub server_name: Option<String>,
    /// ALPN protocol names in the client's preference order.
    pub alpn: Vec<Vec<u8>>,
    /// `legacy_version` of the ClientHello body (0x0303 for both TLS 1.2 and 1.3 clients).
    pub legacy_version: u16,
    /// The supported_versions extension, if present.
    pub supported_versions: Vec<u16>,
    /// Bytes of the buffer the hello occupies, record headers included.
    pub len: usize,
}

/// The highest TLS version a client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    /// TLS 1.0 (0x0301).
    Tls10,
    /// TLS 1.1 (0x0302).
    Tls11,
    /// TLS 1.2 (0x0303).
    Tls12,
    /// TLS 1.3 (0x0304, only via supported_versions).
    Tls13,
    /// Anything else, e.g. SSL 3.0 or a GREASE-only list.
    Other(u16),
}

/// Parses a ClientHello from the start of `buf`, buffering at most `max` bytes.
///
/// Only the first `max` bytes of `buf` are looked at. The result is monotonic in the prefix: if a
/// prefix yields [`Parsed::Complete`] or an error, every longer buffer yields the same. Strict
/// prefixes of a hello that fits in `max` yield [`Parsed::Incomplete`].
pub fn parse_client_hello(buf: &[u8], max: usize) -> Result<Parsed, Error> {
    let window = &buf[..buf.len().min(max)];
    match parse_window(window, max)? {
        Parsed::Incomplete if buf.len() >= max => Err(Error::TooLarge { max }),
        parsed => Ok(parsed),
    }
}

// === impl ClientHello ===

impl ClientHello {
    /// The highest version offered: supported_versions when present (RFC 8446 §4.2.1), else
    /// `legacy_version`.
    pub fn max_version(&self) -> TlsVersion {
        let offered = self
            .supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.legacy_version);
        TlsVersion::from_wire(offered)
    }
}

fn is_grease(v: u16) -> bool {
    // RFC 8701: 0x0A0A, 0x1A1A, ..., 0xFAFA.
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

// === impl TlsVersion ===

impl TlsVersion {
    fn from_wire(v: u16) -> Self {
        match v {
            0x0301 => Self::Tls10,
            0x0302 => Self::Tls11,
            0x0303 => Self::Tls12,
            0x0304 => Self::Tls13,
            other => Self::Other(other),
        }
    }

    /// A short, bounded name usable as a log field or metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Tls10 => "tls1.0",
            Self::Tls11 => "tls1.1",
            Self::Tls12 => "tls1.2",
            Self::Tls13 => "tls1.3",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === record layer ===

/// Walks the records in `window`, reassembling the handshake message.
fn parse_window(window: &[u8], max: usize) -> Result<Parsed, Error> {
    // Reassembly buffer; capacity bounded by `max` because every payload byte came from `window`.
    let mut message: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = window.get(pos..pos + RECORD_HEADER_LEN) else {
            return check_partial_header(&window[pos..], pos == 0).map(|()| Parsed::Incomplete);
        };
        let (content_type, major, len) = (
            header[0],
            header[1],
            u16::from_be_bytes([header[3], header[4]]),
        );
        if pos == 0 && (content_type != CONTENT_TYPE_HANDSHAKE || major != 3) {
            return Err(Error::NotTls);
        }
        if content_type != CONTENT_TYPE_HANDSHAKE {
            return Err(Error::Malformed("non-handshake record inside client hello"));
        }
        if major != 3 {
            return Err(Error::Malformed("record version is not tls"));
        }
        let len = usize::from(len);
        if len == 0 {
            return Err(Error::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(Error::Malformed("record longer than 2^14 bytes"));
        }
        let start = pos + RECORD_HEADER_LEN;
        let available = &window[start..window.len().min(start + len)];
        let before = message.len();
        message.extend_from_slice(available);
        pos = start + available.len();

        if let Some((hello, message_len)) = check_message(&message, pos, max)? {
            // The hello may end before this record does (a coalesced next message).
            let len = start + (message_len - before);
            return Ok(Parsed::Complete(ClientHello { len, ..hello }));
        }
        if available.len() < len {
            return Ok(Parsed::Incomplete);
        }
    }
}

/// Validates the bytes of a record header that has not fully arrived yet.
fn check_partial_header(partial: &[u8], first: bool) -> Result<(), Error> {
    match partial {
        [] => Ok(()),
        [ct, ..] if *ct != CONTENT_TYPE_HANDSHAKE => Err(if first {
            Error::NotTls
        } else {
            Error::Malformed("non-handshake record inside client hello")
        }),
        [_, major, ..] if *major != 3 => Err(if first {
            Error::NotTls
        } else {
            Error::Malformed("record version is not tls")
        }),
        _ => Ok(()),
    }
}

/// Inspects the reassembled handshake bytes. `buffered_to` is the window offset the message's
/// bytes reach, used to decide early whether the hello can ever fit in `max`. On success returns
/// the hello and its length in message bytes.
fn check_message(
    message: &[u8],
    buffered_to: usize,
    max: usize,
) -> Result<Option<(ClientHello, usize)>, Error> {
    let Some(&msg_type) = message.first() else {
        return Ok(None);
    };
    if msg_type != HANDSHAKE_CLIENT_HELLO {
        return Err(Error::Malformed(
            "first handshake message is not a client hello",
        ));
    }
    let Some(len_bytes) = message.get(1..HANDSHAKE_HEADER_LEN) else {
        return Ok(None);
    };
    let body_len = usize::from(len_bytes[0]) << 16
        | usize::from(len_bytes[1]) << 8
        | usize::from(len_bytes[2]);
    let have = message.len() - HANDSHAKE_HEADER_LEN;
    // Early rejection: the remaining body needs at least its own bytes beyond what is buffered.
    if buffered_to.saturating_add(body_len.saturating_sub(have)) > max {
        return Err(Error::TooLarge { max });
    }
    let Some(body) = message.get(HANDSHAKE_HEADER_LEN..HANDSHAKE_HEADER_LEN + body_len) else {
        return Ok(None);
    };
    parse_body(body).map(|hello| Some((hello, HANDSHAKE_HEADER_LEN + body_len)))
}

// === ClientHello body ===

/// A bounds-checked cursor; every read returns `Malformed` instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if n > self.buf.len() {
            return Err(Error::Malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn parse_body(body: &[u8]) -> Result<ClientHello, Error> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("truncated legacy_version")?;
    r.take(32, "truncated random")?;
    let session_id = r.vec8("truncated session id")?;
    if session_id.len() > 32 {
        return Err(Error::Malformed("session id longer than 32 bytes"));
    }
    let suites = r.vec16("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Error::Malformed("invalid cipher suite list"));
    }
    if r.vec8("truncated compression methods")?.is_empty() {
        return Err(Error::Malformed("empty compression method list"));
    }
    let mut hello = ClientHello {
        server_name: None,
        alpn: Vec::new(),
        legacy_version,
        supported_versions: Vec::new(),
        len: 0,
    };
    // Pre-TLS-1.2 hellos may omit the extensions block entirely.
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = Reader::new(r.vec16("truncated extensions")?);
    if !r.is_empty() {
        return Err(Error::Malformed("trailing bytes after extensions"));
    }
    let mut seen: Vec<u16> = Vec::new();
    while !exts.is_empty() {
        let ext_type = exts.u16("truncated extension type")?;
        let data = exts.vec16("truncated extension")?;
        // RFC 8446 §4.2: no extension type may appear twice.
        if seen.contains(&ext_type) {
            return Err(Error::Malformed("duplicate extension"));
        }
        seen.push(ext_type);
        match ext_type {
            EXT_SERVER_NAME => hello.server_name = parse_server_name(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => hello.supported_versions = parse_supported_versions(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

fn parse_server_name(data: &[u8]) -> Result<Option<String>, Error> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.vec16("truncated server name list")?);
    if !outer.is_empty() {
        return Err(Error::Malformed("trailing bytes after server name list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8("truncated server name type")?;
        let name = list.vec16("truncated server name")?;
        if name_type != SERVER_NAME_TYPE_HOST {
            continue;
        }
        // RFC 6066 §3: at most one name of each type.
        if host.is_some() {
            return Err(Error::Malformed("more than one host name"));
        }
        host = Some(parse_host_name(name)?);
    }
    Ok(host)
}

fn parse_host_name(name: &[u8]) -> Result<String, Error> {
    if name.is_empty() || name.len() > MAX_SERVER_NAME_LEN {
        return Err(Error::Malformed("host name length out of range"));
    }
    // Underscore is not a DNS host character but Istio's `outbound_.` names use it.
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*');
    if !name.iter().all(valid) {
        return Err(Error::Malformed("host name has invalid characters"));
    }
    // Every byte is ASCII, so this conversion is lossless.
    Ok(name.iter().map(|b| char::from(*b)).collect())
}

fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.vec16("truncated alpn list")?);
    if !outer.is_empty() {
        return Err(Error::Malformed("trailing bytes after alpn list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let proto = list.vec8("truncated alpn protocol")?;
        if proto.is_empty() {
            return Err(Error::Malformed("empty alpn protocol"));
        }
        protocols.push(proto.to_vec());
    }
    if protocols.is_empty() {
        return Err(Error::Malformed("empty alpn list"));
    }
    Ok(protocols)
}

fn parse_supported_versions(data: &[u8]) -> Result<Vec<u16>, Error> {
    let mut outer = Reader::new(data);
    let list = outer.vec8("truncated supported versions")?;
    if !outer.is_empty() {
        return Err(Error::Malformed("trailing bytes after supported versions"));
    }
    if list.is_empty() || list.len() % 2 != 0 {
        return Err(Error::Malformed("invalid supported versions list"));
    }
    Ok(list
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

#[cfg(test)]
mod tests;
