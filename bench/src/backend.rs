//! The backend every contender forwards to, run as its own process (`bench serve`) on one
//! thread, like a one-worker server. The application protocol is the same on every listener:
//! the client sends a request (a little-endian u64: how many bytes it wants back) and reads
//! that many bytes; [`STREAM`] asks for an endless stream. Listeners:
//!
//! - `plain`: plain TCP (behind the mTLS chains);
//! - `plain_hello`: plain TCP that first discards one TLS record, the ClientHello the plaintext
//!   bulk client sends so that SNI routers route it;
//! - `tls`: TLS 1.3 (the SNI passthrough target);
//! - `mtls`: TLS 1.3 requiring a client certificate (the direct mTLS baseline).

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::pki::Pki;

/// A request for an endless response.
pub(crate) const STREAM: u64 = u64::MAX;
/// Largest write the backend makes.
const CHUNK: usize = 256 * 1024;

/// The backend's bound addresses, printed as one JSON line on stdout once listening.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Addrs {
    pub(crate) plain: SocketAddr,
    pub(crate) plain_hello: SocketAddr,
    pub(crate) tls: SocketAddr,
    pub(crate) mtls: SocketAddr,
}

/// `bench serve`: binds every listener on 127.0.0.1, prints [`Addrs`], serves until killed.
pub(crate) fn serve(pki_dir: &Path) -> anyhow::Result<()> {
    let pki = Pki::load(pki_dir)?;
    let tls = TlsAcceptor::from(pki.backend_config(false)?);
    let mtls = TlsAcceptor::from(pki.backend_config(true)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let bind = || TcpListener::bind("127.0.0.1:0");
        let (plain, plain_hello, tls_l, mtls_l) =
            (bind().await?, bind().await?, bind().await?, bind().await?);
        let addrs = Addrs {
            plain: plain.local_addr()?,
            plain_hello: plain_hello.local_addr()?,
            tls: tls_l.local_addr()?,
            mtls: mtls_l.local_addr()?,
        };
        println!("{}", serde_json::to_string(&addrs)?);
        tokio::spawn(accept(plain, Kind::Plain));
        tokio::spawn(accept(plain_hello, Kind::PlainHello));
        tokio::spawn(accept(tls_l, Kind::Tls(tls)));
        accept(mtls_l, Kind::Tls(mtls)).await;
        anyhow::Ok(())
    })
}

#[derive(Clone)]
enum Kind {
    Plain,
    PlainHello,
    Tls(TlsAcceptor),
}

async fn accept(listener: TcpListener, kind: Kind) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: the run that caused it reports its own
            // failures; keep accepting.
            tokio::task::yield_now().await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let kind = kind.clone();
        tokio::spawn(async move {
            // A connection's failure (a client closing mid-response) ends that connection only.
            let _ = connection(stream, kind).await;
        });
    }
}

async fn connection(mut stream: TcpStream, kind: Kind) -> anyhow::Result<()> {
    match kind {
        Kind::Plain => respond(stream).await,
        Kind::PlainHello => {
            skip_record(&mut stream).await?;
            respond(stream).await
        }
        Kind::Tls(acceptor) => respond(acceptor.accept(stream).await?).await,
    }
}

/// Reads and discards one TLS record (5-byte header, then its length).
async fn skip_record(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    anyhow::ensure!(header[0] == 0x16, "expected a TLS handshake record first");
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut record = vec![0u8; len];
    stream.read_exact(&mut record).await?;
    Ok(())
}

/// Serves requests until the client closes.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> anyhow::Result<()> {
    let chunk = vec![0u8; CHUNK];
    loop {
        let mut request = [0u8; 8];
        match stream.read_exact(&mut request).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let mut left = u64::from_le_bytes(request);
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            stream.write_all(&chunk[..n]).await?;
            if left != STREAM {
                left -= n as u64;
            }
        }
        stream.flush().await?;
    }
}

/// Starts `bench serve` from this executable and reads its addresses.
pub(crate) fn spawn(pki_dir: &Path, log: &Path) -> anyhow::Result<(crate::procs::Child, Addrs)> {
    let args = [
        "serve".to_owned(),
        "--pki".to_owned(),
        pki_dir.display().to_string(),
    ];
    crate::procs::Child::spawn_self("backend", &args, log)
}
