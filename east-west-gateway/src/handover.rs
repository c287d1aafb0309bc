//! Ingress listener handover, for a restart that refuses no connection.
//!
//! A gateway started with `--handover PATH` first asks whoever serves the Unix socket `PATH` (the
//! instance it replaces) for its ingress listening socket, passed as a file descriptor
//! (`SCM_RIGHTS`). Both processes then accept from the one kernel queue, so no connection is
//! refused or reset while they overlap; the old one is then drained with SIGTERM (it stops
//! accepting and its open connections finish within `drain_timeout`), and the socket lives on
//! in the new one. Then it serves `PATH` itself (mode 0600: only the same user may take the
//! socket), for its own successor. With nobody at `PATH`, it binds as usual.
//!
//! Why not `SO_REUSEPORT`: two sockets in a reuseport group have two accept queues, and the
//! connections waiting in the closing one's queue are reset when it closes (unless the host
//! sets `net.ipv4.tcp_migrate_req`). One shared socket has no such window.
//!
//! Egress listeners are not handed over: the new instance binds them from its controller's
//! config, and one whose port the old instance still holds is reported in `egress_errors`
//! until it is free (the next config retries it).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// What the one message on a handover connection says; the descriptor rides with it.
const INGRESS: &[u8] = b"isthmus-ingress-v1";
/// How long the predecessor may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("handover socket {}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error(
        "handover socket {}: the instance there sent no listening socket; is it an east-west-gateway started with --handover?",
        path.display()
    )]
    NoSocket { path: PathBuf },
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io {
        path,
        action,
        source,
    }
}

/// Takes the ingress listening socket from the instance serving `path`; `None` when nobody
/// serves it (a first start, or a stale socket file).
pub fn take(path: &Path) -> Result<Option<std::net::TcpListener>, Error> {
    let io_err = |action| io_error(path, action);
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err("connect")(e)),
    };
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err("set a timeout"))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 64];
    let received = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| io_err("receive")(e.into()))?;
    let mut fd: Option<OwnedFd> = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            fd = fd.or_else(|| fds.next());
        }
    }
    match fd {
        Some(fd) if buf.get(..received.bytes) == Some(INGRESS) => {
            let listener = std::net::TcpListener::from(fd);
            listener
                .set_nonblocking(true)
                .map_err(io_err("configure the socket received"))?;
            Ok(Some(listener))
        }
        _ => Err(Error::NoSocket {
            path: path.to_owned(),
        }),
    }
}

/// Serves `path`: hands `ingress` (a duplicate of the ingress listening socket) to each
/// successor that asks. Replaces whatever socket file was there (the predecessor's).
pub fn serve(path: &Path, ingress: OwnedFd) -> Result<JoinHandle<()>, Error> {
    let io_err = |action| io_error(path, action);
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove the old socket file")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("listen"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("make it owner-only"))?;
    let shown = path.display().to_string();
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, socket = %shown, "handover accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            let fds = [ingress.as_fd()];
            control.push(SendAncillaryMessage::ScmRights(&fds));
            match rustix::net::sendmsg(
                &stream,
                &[IoSlice::new(INGRESS)],
                &mut control,
                SendFlags::empty(),
            ) {
                Ok(_) => {
                    tracing::info!(socket = %shown, "ingress listener handed over to a new instance; drain this one with SIGTERM")
                }
                Err(error) => {
                    tracing::warn!(%error, socket = %shown, "ingress listener handover failed")
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_successor_takes_the_same_listening_socket_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.handover");
        assert!(take(&path).unwrap().is_none(), "nobody serves it yet");

        let original = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = original.local_addr().unwrap();
        let server = serve(&path, OwnedFd::from(original.try_clone().unwrap())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the same user may take the socket");

        let taken = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || take(&path))
                .await
                .unwrap()
                .unwrap()
                .expect("the running instance answers")
        };
        assert_eq!(taken.local_addr().unwrap(), address);
        // One socket: the predecessor stops accepting and the successor takes the next client.
        drop(original);
        let mut client = std::net::TcpStream::connect(address).unwrap();
        client.write_all(b"hi").unwrap();
        taken.set_nonblocking(false).unwrap();
        let (mut accepted, _) = taken.accept().unwrap();
        let mut buf = [0u8; 2];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        server.abort();
    }

    #[test]
    fn a_socket_that_sends_no_listener_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-gateway");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let answer = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"hello").unwrap();
        });
        let error = take(&path).unwrap_err();
        answer.join().unwrap();
        assert!(
            error.to_string().contains("not-a-gateway") && error.to_string().contains("--handover"),
            "{error}"
        );
    }
}
