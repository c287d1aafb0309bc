//! The splice(2) engine of [`pump_tcp`](super::pump_tcp): socket → pipe → socket per direction,
//! driven by tokio readiness.
//!
//! Each direction alternates: fill its pipe from the reader (only when the pipe is empty, so an
//! EAGAIN can only mean "the socket has nothing", never "the pipe is full", and tokio's readiness
//! stays truthful), then drain the pipe into the writer completely. EOF is therefore only ever
//! seen with an empty pipe, and becomes a write shutdown toward the other side; no byte is left
//! behind in a pipe.
//!
//! A splice that returns 0 is not always EOF: at a TCP urgent mark (MSG_OOB) the kernel's
//! `tcp_splice_read` returns 0 with data still queued, where read(2) would skip the urgent byte
//! and go on. So a 0 is confirmed with a one-byte peek; if data is there, copying takes over
//! that direction (the pipe is empty, so nothing is lost) and behaves as read(2) does.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::{Clock, Half, Limits, Tally, drive};
use crate::drain;
use crate::proxy::Outcome;

/// One splice(2) call: move up to `len` bytes from the first fd to the second.
pub(super) type SpliceFn = fn(BorrowedFd<'_>, BorrowedFd<'_>, usize) -> rustix::io::Result<usize>;

/// The system calls a spliced direction makes; tests substitute refusals.
#[derive(Debug)]
pub(super) struct Ops {
    /// Socket → pipe.
    pub(super) fill: SpliceFn,
    /// Pipe → socket.
    pub(super) drain: SpliceFn,
}

/// The real splice(2).
pub(super) static SYSTEM: Ops = Ops {
    fill: splice,
    drain: splice,
};

fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> rustix::io::Result<usize> {
    // No SPLICE_F_MORE: it would hold back small writes the way TCP_CORK does.
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    rustix::pipe::splice(from, None, to, None, len, flags)
}

/// How a direction ended up moving its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    Splice,
    /// Fell back to [`Half::copy`](super::Half::copy).
    Copy,
}

/// What [`pump`] did.
#[derive(Debug)]
pub(super) struct Pumped {
    pub(super) outcome: Outcome,
    /// Each direction's engine (up, down), when both finished cleanly.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only tests ask which engine ran")
    )]
    pub(super) engines: Option<(Engine, Engine)>,
}

/// [`pump_tcp`](super::pump_tcp) with splice(2).
pub(super) async fn pump(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    up: Tally<'_>,
    down: Tally<'_>,
    limits: Limits,
    drain: &mut drain::Watch,
    ops: &Ops,
) -> Pumped {
    let clock = Clock::new();
    let (up, down) = (Half::new(up, &clock), Half::new(down, &clock));
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let both = std::pin::pin!(async {
        tokio::try_join!(
            up.direction(client_read, upstream_write, limits.buffer_bytes, ops),
            down.direction(upstream_read, client_write, limits.buffer_bytes, ops),
        )
    });
    match drive(both, &clock, limits.idle_timeout, drain).await {
        Ok(engines) => Pumped {
            outcome: Outcome::Forwarded,
            engines: Some(engines),
        },
        Err(outcome) => Pumped {
            outcome,
            engines: None,
        },
    }
}

/// A pipe, created non-blocking and close-on-exec.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity in bytes (F_GETPIPE_SZ).
    capacity: usize,
    /// Growing was refused (`fs.pipe-max-size`, `fs.pipe-user-pages-soft`): stop asking.
    fixed: bool,
}

impl Pipe {
    pub(super) fn new(max: usize) -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let mut capacity = rustix::pipe::fcntl_getpipe_size(&write)?;
        if capacity > max {
            // A configured buffer below the kernel default also caps the pipe (one page at least).
            capacity = rustix::pipe::fcntl_setpipe_size(&write, max).unwrap_or(capacity);
        }
        Ok(Self {
            read,
            write,
            capacity,
            fixed: false,
        })
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Called after a splice filled the pipe: ×4, up to `max`.
    pub(super) fn grow(&mut self, max: usize) {
        if self.fixed || self.capacity >= max {
            return;
        }
        let wanted = self.capacity.saturating_mul(4).min(max);
        match rustix::pipe::fcntl_setpipe_size(&self.write, wanted) {
            Ok(size) => self.capacity = size,
            Err(error) => {
                tracing::debug!(%error, wanted, "pipe stays at {} bytes", self.capacity);
                self.fixed = true;
            }
        }
    }

    /// Reads `len` bytes back out of the pipe (to rescue them when the writer cannot splice).
    fn take(&self, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match rustix::io::read(&self.read, &mut bytes[got..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(bytes)
    }
}

/// How [`Half::splice`] stopped without an error.
enum Spliced {
    /// The reader reached EOF; the pipe is empty.
    Eof,
    /// The reader has data splice(2) cannot take (an urgent mark); the pipe is empty.
    Urgent,
    /// The kernel refused to splice before this direction moved a byte; `pending` bytes were
    /// read back out of the pipe and must be written before copying takes over.
    Refused { error: io::Error, pending: Vec<u8> },
}

impl Half<'_> {
    /// One direction: splice if a pipe can be had and the kernel accepts these sockets, else
    /// copy. Ends by shutting down `to`'s write side on EOF, as the copy does.
    async fn direction(
        &self,
        mut from: ReadHalf<'_>,
        mut to: WriteHalf<'_>,
        max_buffer: usize,
        ops: &Ops,
    ) -> io::Result<Engine> {
        let pending = match Pipe::new(max_buffer) {
            Err(error) => {
                fall_back("pipe creation failed", &error);
                Vec::new()
            }
            Ok(mut pipe) => match self
                .splice(from.as_ref(), to.as_ref(), &mut pipe, max_buffer, ops)
                .await?
            {
                Spliced::Eof => {
                    // Propagate the half-close; if the peer is already gone the other
                    // direction reports the error.
                    let _ = to.shutdown().await;
                    self.clock.finish();
                    return Ok(Engine::Splice);
                }
                Spliced::Refused { error, pending } => {
                    fall_back("splice refused", &error);
                    pending
                }
                Spliced::Urgent => {
                    tracing::debug!("urgent data: copying the rest of this direction");
                    Vec::new()
                }
            },
        };
        if !pending.is_empty() {
            to.write_all(&pending).await?;
            self.record(pending.len());
        }
        self.copy(&mut from, &mut to, max_buffer).await?;
        Ok(Engine::Copy)
    }

    async fn splice(
        &self,
        from: &TcpStream,
        to: &TcpStream,
        pipe: &mut Pipe,
        max_buffer: usize,
        ops: &Ops,
    ) -> io::Result<Spliced> {
        let (mut filled_before, mut drained_before) = (false, false);
        loop {
            // The pipe is empty here: EAGAIN means the socket has nothing to read.
            let n = loop {
                from.readable().await?;
                let fill = || -> io::Result<usize> {
                    Ok((ops.fill)(from.as_fd(), pipe.write.as_fd(), pipe.capacity)?)
                };
                match from.try_io(Interest::READABLE, fill) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) if !filled_before && refused(&error) => {
                        return Ok(Spliced::Refused {
                            error,
                            pending: Vec::new(),
                        });
                    }
                    Err(error) => return Err(error),
                }
            };
            if n == 0 {
                // Once per direction: a real EOF peeks 0 at once.
                return Ok(match from.peek(&mut [0u8; 1]).await? {
                    0 => Spliced::Eof,
                    _ => Spliced::Urgent,
                });
            }
            filled_before = true;
            let mut left = n;
            while left > 0 {
                // The pipe holds `left` bytes: EAGAIN means the socket's send buffer is full.
                to.writable().await?;
                let drain = || -> io::Result<usize> {
                    Ok((ops.drain)(pipe.read.as_fd(), to.as_fd(), left)?)
                };
                match to.try_io(Interest::WRITABLE, drain) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => {
                        left = left.saturating_sub(m);
                        drained_before = true;
                        self.record(m);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) if !drained_before && refused(&error) => {
                        let pending = pipe.take(left)?;
                        return Ok(Spliced::Refused { error, pending });
                    }
                    Err(error) => return Err(error),
                }
            }
            if n >= pipe.capacity {
                pipe.grow(max_buffer);
            }
        }
    }
}

/// Errors that mean "these fds cannot be spliced here", as opposed to a failing connection.
fn refused(error: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(error),
        Some(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM)
    )
}

/// Set once the first fallback has been logged at warn.
static FELL_BACK: AtomicBool = AtomicBool::new(false);

/// Logs a fallback to copying: once per process at warn, then at debug.
fn fall_back(why: &'static str, error: &io::Error) {
    if FELL_BACK.swap(true, Ordering::Relaxed) {
        tracing::debug!(%error, why, "copying in userspace instead of splice(2)");
    } else {
        tracing::warn!(
            %error,
            why,
            "copying in userspace instead of splice(2); later fallbacks are logged at debug",
        );
    }
}
