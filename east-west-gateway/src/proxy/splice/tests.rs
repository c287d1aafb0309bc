//! Both engines over real loopback sockets: app ⇄ (client, upstream) pump ⇄ app.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::pipe::{self, Engine, Ops, Pumped, SYSTEM};
use super::*;

/// The longest any of these tests may take; they finish in well under a second.
const BOUND: Duration = Duration::from_secs(60);

/// A connected loopback pair.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.expect("connect"), b.expect("accept").0)
}

/// Deterministic pseudo-random bytes.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Which engine a test drives.
#[derive(Clone, Copy)]
enum Via {
    Splice(&'static Ops),
    Copy,
}

/// The apps' ends and the gateway's two sockets (client side, upstream side).
struct Sockets {
    client: TcpStream,
    server: TcpStream,
    gateway: (TcpStream, TcpStream),
}

async fn sockets() -> Sockets {
    let (client, gateway_client) = pair().await;
    let (gateway_upstream, server) = pair().await;
    Sockets {
        client,
        server,
        gateway: (gateway_client, gateway_upstream),
    }
}

/// Each direction's total and metric.
#[derive(Default)]
struct Counts {
    received: AtomicU64,
    sent: AtomicU64,
    metrics: (Counter, Counter),
}

impl Counts {
    /// (client → upstream, upstream → client), checked against the metrics.
    fn get(&self) -> (u64, u64) {
        let totals = (
            self.received.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        );
        assert_eq!((self.metrics.0.get(), self.metrics.1.get()), totals);
        totals
    }
}

fn limits(idle_timeout: Duration) -> Limits {
    Limits {
        buffer_bytes: 256 * 1024,
        idle_timeout,
        splice: Splice::Auto,
    }
}

/// Runs the pump on the gateway's sockets, dropping them when it ends as callers do, while
/// `apps` drives the apps' ends; both within [`BOUND`].
async fn run<T>(
    via: Via,
    gateway: (TcpStream, TcpStream),
    counts: &Counts,
    limits: Limits,
    drain: &mut drain::Watch,
    apps: impl Future<Output = T>,
) -> (Pumped, T) {
    let up = Tally {
        total: &counts.received,
        counter: &counts.metrics.0,
    };
    let down = Tally {
        total: &counts.sent,
        counter: &counts.metrics.1,
    };
    let pumped = async move {
        let (mut client, mut upstream) = gateway;
        match via {
            Via::Splice(ops) => {
                pipe::pump(&mut client, &mut upstream, up, down, limits, drain, ops).await
            }
            Via::Copy => Pumped {
                outcome: pump(client.split(), upstream.split(), up, down, limits, drain).await,
                engines: None,
            },
        }
    };
    tokio::time::timeout(BOUND, async { tokio::join!(pumped, apps) })
        .await
        .expect("pump and apps finish in time")
}

/// What the apps saw of a bulk exchange.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    at_server: Vec<u8>,
    at_client: Vec<u8>,
}

/// The client sends `up` then half-closes while reading to EOF; the server reads to EOF while
/// sending `early`, then sends `late` (after the client's FIN: half-close must keep the
/// server → client direction open) and closes.
async fn bulk(via: Via, up: &[u8], early: &[u8], late: &[u8]) -> (Pumped, Seen, (u64, u64)) {
    let Sockets {
        mut client,
        mut server,
        gateway,
    } = sockets().await;
    let counts = Counts::default();
    let (_trigger, mut watch) = drain::channel();
    let client_app = async {
        let (mut r, mut w) = client.split();
        let mut got = Vec::new();
        let send = async {
            w.write_all(up).await?;
            w.shutdown().await
        };
        tokio::try_join!(send, r.read_to_end(&mut got))?;
        io::Result::Ok(got)
    };
    let server_app = async {
        let (mut r, mut w) = server.split();
        let mut got = Vec::new();
        tokio::try_join!(r.read_to_end(&mut got), w.write_all(early))?;
        w.write_all(late).await?;
        w.shutdown().await?;
        io::Result::Ok(got)
    };
    let apps = async { tokio::join!(client_app, server_app) };
    let (pumped, (at_client, at_server)) =
        run(via, gateway, &counts, limits(BOUND), &mut watch, apps).await;
    let seen = Seen {
        at_server: at_server.expect("server app"),
        at_client: at_client.expect("client app"),
    };
    (pumped, seen, counts.get())
}

fn assert_delivered(seen: &Seen, up: &[u8], down: &[u8]) {
    assert!(
        seen.at_server == up,
        "server got {} bytes of {}, intact: {}",
        seen.at_server.len(),
        up.len(),
        seen.at_server.get(..up.len()) == Some(up)
    );
    assert!(
        seen.at_client == down,
        "client got {} bytes of {}",
        seen.at_client.len(),
        down.len()
    );
}

#[tokio::test]
async fn splice_and_copy_deliver_several_mib_both_ways_with_half_close() {
    let up = data(1, 5 << 20);
    let (early, late) = (data(2, 3 << 20), data(3, 1 << 20));
    let down = [early.as_slice(), late.as_slice()].concat();
    let mut results = Vec::new();
    for via in [Via::Splice(&SYSTEM), Via::Copy] {
        let (pumped, seen, tallies) = bulk(via, &up, &early, &late).await;
        assert_eq!(pumped.outcome, Outcome::Forwarded);
        assert_delivered(&seen, &up, &down);
        assert_eq!(tallies, (5 << 20, 4 << 20));
        results.push((seen, tallies));
        if let Via::Splice(_) = via {
            assert_eq!(pumped.engines, Some((Engine::Splice, Engine::Splice)));
        }
    }
    assert_eq!(results[0], results[1], "both engines deliver the same");
}

#[tokio::test]
async fn empty_directions_close_cleanly() {
    let (pumped, seen, tallies) = bulk(Via::Splice(&SYSTEM), b"", b"", b"").await;
    assert_eq!(pumped.outcome, Outcome::Forwarded);
    assert_eq!(pumped.engines, Some((Engine::Splice, Engine::Splice)));
    assert_delivered(&seen, b"", b"");
    assert_eq!(tallies, (0, 0));
}

fn refuse(_: BorrowedFd<'_>, _: BorrowedFd<'_>, _: usize) -> rustix::io::Result<usize> {
    Err(rustix::io::Errno::INVAL)
}

fn real(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> rustix::io::Result<usize> {
    (SYSTEM.fill)(from, to, len)
}

#[tokio::test]
async fn a_refused_fill_falls_back_to_copying_before_any_byte_moved() {
    static REFUSING: Ops = Ops {
        fill: refuse,
        drain: real,
    };
    let up = data(4, 1 << 20);
    let (early, late) = (data(5, 300_000), data(6, 70_000));
    let (pumped, seen, tallies) = bulk(Via::Splice(&REFUSING), &up, &early, &late).await;
    assert_eq!(pumped.outcome, Outcome::Forwarded);
    assert_eq!(pumped.engines, Some((Engine::Copy, Engine::Copy)));
    assert_delivered(&seen, &up, &[early, late].concat());
    assert_eq!(tallies, (1 << 20, 370_000));
}

#[tokio::test]
async fn a_refused_drain_rescues_the_bytes_already_in_the_pipe() {
    static REFUSING: Ops = Ops {
        fill: real,
        drain: refuse,
    };
    let up = data(7, 1 << 20);
    let (early, late) = (data(8, 200_000), data(9, 5));
    let (pumped, seen, tallies) = bulk(Via::Splice(&REFUSING), &up, &early, &late).await;
    assert_eq!(pumped.outcome, Outcome::Forwarded);
    assert_eq!(pumped.engines, Some((Engine::Copy, Engine::Copy)));
    assert_delivered(&seen, &up, &[early, late].concat());
    assert_eq!(tallies, (1 << 20, 200_005));
}

#[tokio::test]
async fn a_refusal_after_bytes_moved_is_a_reset_not_a_fallback() {
    // Refuses every fill after the first that moved a byte (readiness can be spurious, so
    // counting calls would refuse before any byte moved, which rightly falls back).
    static MOVED: AtomicBool = AtomicBool::new(false);
    fn first_only(
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        len: usize,
    ) -> rustix::io::Result<usize> {
        if MOVED.load(Ordering::SeqCst) {
            return refuse(from, to, len);
        }
        let result = real(from, to, len);
        if matches!(result, Ok(n) if n > 0) {
            MOVED.store(true, Ordering::SeqCst);
        }
        result
    }
    static ONCE: Ops = Ops {
        fill: first_only,
        drain: real,
    };
    let Sockets {
        mut client,
        mut server,
        gateway,
    } = sockets().await;
    let counts = Counts::default();
    let (_trigger, mut watch) = drain::channel();
    let apps = async {
        client.write_all(b"first").await.expect("write");
        let mut buf = [0u8; 5];
        server
            .read_exact(&mut buf)
            .await
            .expect("first bytes arrive");
        assert_eq!(&buf, b"first");
        // Refused at the latest when these bytes come; the write itself may fail once the
        // gateway has closed.
        let _ = client.write_all(b"second").await;
        // The pump gives up: the server sees the connection end without the second write.
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
    };
    let (pumped, ()) = run(
        Via::Splice(&ONCE),
        gateway,
        &counts,
        limits(BOUND),
        &mut watch,
        apps,
    )
    .await;
    assert_eq!(pumped.outcome, Outcome::Reset);
    assert_eq!(counts.get(), (5, 0));
}

/// Runs `apps(client, server)` on fresh sockets through each engine in turn: each engine's
/// outcome and byte counts.
async fn through_both_engines<F, Fut>(mut apps: F) -> Vec<(Outcome, (u64, u64))>
where
    F: FnMut(TcpStream, TcpStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut results = Vec::new();
    for via in [Via::Splice(&SYSTEM), Via::Copy] {
        let Sockets {
            client,
            server,
            gateway,
        } = sockets().await;
        let counts = Counts::default();
        let (_trigger, mut watch) = drain::channel();
        let exchange = apps(client, server);
        let (pumped, ()) = run(via, gateway, &counts, limits(BOUND), &mut watch, exchange).await;
        results.push((pumped.outcome, counts.get()));
    }
    results
}

#[tokio::test]
async fn a_reset_after_the_response_is_complete_counts_as_forwarded_by_both_engines() {
    let results = through_both_engines(|mut client, mut server| async move {
        server.write_all(b"bye").await.expect("write");
        server.shutdown().await.expect("FIN");
        let mut got = Vec::new();
        client
            .read_to_end(&mut got)
            .await
            .expect("response and EOF");
        assert_eq!(got, b"bye");
        // The client has everything and goes away abruptly, as curl may.
        client.set_zero_linger().expect("linger");
        drop(client); // RST
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
    })
    .await;
    assert_eq!(results, [(Outcome::Forwarded, (0, 3)); 2]);
}

#[tokio::test]
async fn a_reset_from_the_upstream_is_reported_by_both_engines() {
    let results = through_both_engines(|mut client, mut server| async move {
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.expect("ping arrives");
        server.set_zero_linger().expect("linger");
        drop(server); // RST
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    })
    .await;
    assert_eq!(results, [(Outcome::Reset, (4, 0)); 2]);
}

#[tokio::test(start_paused = true)]
async fn spliced_connections_idle_out() {
    let Sockets {
        mut client,
        mut server,
        gateway,
    } = sockets().await;
    let counts = Counts::default();
    let (_trigger, mut watch) = drain::channel();
    // Virtual time: shorter than BOUND, which also runs on the paused clock.
    let idle = Duration::from_secs(10);
    let started = Instant::now();
    let apps = async {
        client.write_all(b"activity").await.expect("write");
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.expect("bytes arrive");
        // Then nothing: hold both apps open until the pump cuts the connection.
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    };
    let (pumped, ()) = run(
        Via::Splice(&SYSTEM),
        gateway,
        &counts,
        limits(idle),
        &mut watch,
        apps,
    )
    .await;
    assert_eq!(pumped.outcome, Outcome::IdleTimeout);
    assert!(started.elapsed() >= idle, "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_drain_deadline_cuts_spliced_connections() {
    let Sockets {
        mut client,
        mut server,
        gateway,
    } = sockets().await;
    let counts = Counts::default();
    let (trigger, mut watch) = drain::channel();
    let apps = async {
        client.write_all(b"before").await.expect("write");
        let mut buf = [0u8; 6];
        server.read_exact(&mut buf).await.expect("bytes arrive");
        let drained = trigger.drain(Duration::ZERO, Duration::ZERO);
        // The connection is cut (EOF or reset) once the deadline passes.
        let mut rest = Vec::new();
        let _ = tokio::join!(drained, client.read_to_end(&mut rest));
    };
    let (pumped, ()) = run(
        Via::Splice(&SYSTEM),
        gateway,
        &counts,
        limits(BOUND),
        &mut watch,
        apps,
    )
    .await;
    assert_eq!(pumped.outcome, Outcome::Drained);
}

#[tokio::test]
async fn urgent_data_does_not_pass_for_eof() {
    // splice(2) returns 0 at a TCP urgent mark; read(2) skips the urgent byte (SO_OOBINLINE is
    // off) and goes on. Both engines must deliver what read(2) sees, then the real EOF.
    let mut delivered = Vec::new();
    for via in [Via::Splice(&SYSTEM), Via::Copy] {
        let Sockets {
            mut client,
            mut server,
            gateway,
        } = sockets().await;
        let counts = Counts::default();
        let (_trigger, mut watch) = drain::channel();
        let apps = async {
            client.write_all(b"abc").await.expect("write");
            let oob = rustix::net::send(&client, b"!", rustix::net::SendFlags::OOB);
            assert_eq!(oob.expect("urgent byte"), 1);
            client.write_all(b"def").await.expect("write");
            client.shutdown().await.expect("half-close");
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.expect("read");
            server.shutdown().await.expect("close");
            got
        };
        let (pumped, got) = run(via, gateway, &counts, limits(BOUND), &mut watch, apps).await;
        assert_eq!(pumped.outcome, Outcome::Forwarded);
        delivered.push(got);
    }
    assert_eq!(delivered[0], b"abcdef");
    assert_eq!(delivered[1], b"abcdef");
}

#[test]
fn pipes_grow_to_the_buffer_limit_and_no_further() {
    let max = 256 * 1024;
    let mut pipe = pipe::Pipe::new(max).expect("pipe");
    let first = pipe.capacity();
    assert!(first <= max, "{first}");
    for _ in 0..4 {
        pipe.grow(max);
    }
    assert_eq!(pipe.capacity(), max);
    let small = pipe::Pipe::new(16 * 1024).expect("pipe");
    assert_eq!(small.capacity(), 16 * 1024);
}

#[tokio::test]
async fn a_copy_buffer_grows_while_reads_fill_it_and_is_released_while_waiting() {
    let (mut writer, mut reader) = tokio::io::duplex(64 * 1024);
    let mut buf = Buffer::new(4096, 16 * 1024);
    writer.write_all(&[7u8; 4096]).await.expect("write");
    let n = buf.read(&mut reader).await.expect("read");
    assert_eq!((n, buf.filled()), (4096, &[7u8; 4096][..]));
    assert_eq!(buf.size, 8192, "a full read doubles the next buffer");

    // Nothing to read: the poll waits, and an idle connection holds no buffer meanwhile.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(buf.poll_read(&mut reader, &mut cx).is_pending());
    assert_eq!(
        buf.bytes.capacity(),
        0,
        "the buffer is released while waiting"
    );

    writer.write_all(b"more").await.expect("write");
    let n = buf.read(&mut reader).await.expect("read");
    assert_eq!((n, buf.filled()), (4, &b"more"[..]));
    assert!(buf.bytes.capacity() >= 8192, "the size reached is kept");
    drop(writer);
    assert_eq!(buf.read(&mut reader).await.expect("eof"), 0);
}

#[tokio::test]
async fn a_released_copy_buffer_is_the_next_one_handed_out_and_the_pool_is_bounded() {
    let (mut writer, mut reader) = tokio::io::duplex(64 * 1024);
    let mut first = Buffer::new(4096, 4096);
    writer.write_all(b"one").await.expect("write");
    first.read(&mut reader).await.expect("read");
    let address = first.bytes.as_ptr();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(first.poll_read(&mut reader, &mut cx).is_pending());

    // Another connection's direction takes the buffer just returned: still in cache, no
    // allocation.
    let mut second = Buffer::new(4096, 4096);
    writer.write_all(b"two").await.expect("write");
    second.read(&mut reader).await.expect("read");
    assert_eq!(second.bytes.as_ptr(), address, "last in, first out");
    assert_eq!(second.filled(), b"two");

    // However many buffers come back, the pool keeps at most its bound.
    for _ in 0..2 * pool::POOL_BYTES / (64 * 1024) {
        pool::give(Vec::with_capacity(64 * 1024));
    }
    assert!(pool::pooled_bytes() <= pool::POOL_BYTES);
    assert!(pool::pooled_bytes() >= pool::POOL_BYTES - 64 * 1024);
}
