//! The `minimal` contender (`bench forward`): the least any L4 proxy can do, as a reference for
//! what the SNI routers leave on the table. One thread and one epoll set (mio, edge-triggered);
//! each listener has its upstream fixed, so nothing is parsed or routed and the upstream connect
//! starts the moment a client is accepted; bytes are copied through one 32 KiB buffer per
//! direction, with one read and one write per message (a short read ends a readiness, as nginx
//! does, unless the peer has closed) and half-close passed on. No TLS, no timeouts, no metrics,
//! no logs: it serves the passthrough and plaintext scenarios only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use anyhow::Context as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// Largest read per direction, as the gateway's default `upstream.buffer_bytes`.
const BUFFER: usize = 32 * 1024;

/// One direction's state.
struct Way {
    /// Allocated once and never cleared: a read fills its front (no zeroing per read).
    buf: Box<[u8]>,
    /// Bytes of `buf` read and not yet all written.
    len: usize,
    /// Bytes of `buf` already written.
    sent: usize,
    /// The source said EOF; the half-close is passed on once `buf` is out.
    eof: bool,
    shut: bool,
}

impl Way {
    /// A direction with a buffer from `spare` (contents irrelevant), or a new one.
    fn new(spare: &mut Vec<Box<[u8]>>) -> Self {
        Self {
            buf: spare
                .pop()
                .unwrap_or_else(|| vec![0; BUFFER].into_boxed_slice()),
            len: 0,
            sent: 0,
            eof: false,
            shut: false,
        }
    }
}

/// A client and its upstream; `ways[0]` is client → upstream.
struct Pair {
    socks: [TcpStream; 2],
    /// Whether a readiness edge is unconsumed, per socket.
    readable: [bool; 2],
    writable: [bool; 2],
    /// The peer's FIN has been seen (it may come in the same edge as the last bytes).
    read_closed: [bool; 2],
    ways: [Way; 2],
}

enum Step {
    Open,
    Closed,
}

impl Pair {
    /// Moves what it can both ways; `Closed` once both ways are done or a socket failed.
    fn pump(&mut self) -> Step {
        for (from, to) in [(0, 1), (1, 0)] {
            if self.direction(from, to).is_err() {
                return Step::Closed;
            }
        }
        if self.ways.iter().all(|w| w.shut) {
            Step::Closed
        } else {
            Step::Open
        }
    }

    fn direction(&mut self, from: usize, to: usize) -> io::Result<()> {
        loop {
            let way = &mut self.ways[from];
            // Write out what is pending first.
            while way.sent < way.len {
                if !self.writable[to] {
                    return Ok(());
                }
                match self.socks[to].write(&way.buf[way.sent..way.len]) {
                    Ok(n) => way.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.writable[to] = false;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            way.len = 0;
            way.sent = 0;
            if way.eof {
                if !way.shut {
                    way.shut = true;
                    let _ = self.socks[to].shutdown(Shutdown::Write);
                }
                return Ok(());
            }
            if !self.readable[from] {
                return Ok(());
            }
            match self.socks[from].read(&mut way.buf) {
                Ok(0) => way.eof = true,
                Ok(n) => {
                    way.len = n;
                    if n < BUFFER && !self.read_closed[from] {
                        // Short: the receive queue is empty; the next arrival raises an edge.
                        // Not after a FIN, which raises none: the next read finds the EOF.
                        self.readable[from] = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable[from] = false;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// `bench forward --upstream ADDR ...`: one listener on 127.0.0.1 per upstream, their addresses
/// printed as one JSON line (the order of the upstreams), then serves until killed.
pub(crate) fn serve(upstreams: &[SocketAddr]) -> anyhow::Result<()> {
    let (bound, forwarder) = bind(upstreams)?;
    println!("{}", serde_json::to_string(&bound)?);
    forwarder()
}

/// Binds one listener per upstream; returns their addresses and the loop serving them.
fn bind(
    upstreams: &[SocketAddr],
) -> anyhow::Result<(Vec<SocketAddr>, impl FnOnce() -> anyhow::Result<()> + use<>)> {
    let poll = Poll::new()?;
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("binding a listener on 127.0.0.1")?;
        bound.push(listener.local_addr()?);
        poll.registry()
            .register(&mut listener, Token(i), Interest::READABLE)?;
        listeners.push((listener, *upstream));
    }
    Ok((bound, move || run(poll, &listeners)))
}

/// Accepts and forwards until an error of the poll itself.
fn run(mut poll: Poll, listeners: &[(TcpListener, SocketAddr)]) -> anyhow::Result<()> {
    let first_pair = listeners.len();
    // Pair `p` has tokens first_pair + 2p (client) and + 2p + 1 (upstream).
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    // Buffers of closed pairs, reused as they are: a new connection allocates and zeroes none.
    let mut spare: Vec<Box<[u8]>> = Vec::new();
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in &events {
            let token = event.token().0;
            if let Some((listener, upstream)) = listeners.get(token) {
                loop {
                    let (mut client, _) = match listener.accept() {
                        Ok(accepted) => accepted,
                        // A connection reset while queued: take the next one.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // WouldBlock, or out of descriptors: wait for the next edge.
                        Err(_) => break,
                    };
                    let Ok(mut up) = TcpStream::connect(*upstream) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let slot = free.pop().unwrap_or_else(|| {
                        pairs.push(None);
                        pairs.len() - 1
                    });
                    let both = Interest::READABLE | Interest::WRITABLE;
                    let base = first_pair + 2 * slot;
                    poll.registry().register(&mut client, Token(base), both)?;
                    poll.registry().register(&mut up, Token(base + 1), both)?;
                    pairs[slot] = Some(Pair {
                        socks: [client, up],
                        readable: [false; 2],
                        writable: [false; 2],
                        read_closed: [false; 2],
                        ways: [Way::new(&mut spare), Way::new(&mut spare)],
                    });
                }
                continue;
            }
            let slot = (token - first_pair) / 2;
            let side = (token - first_pair) % 2;
            let Some(pair) = pairs.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                pair.readable[side] = true;
            }
            if event.is_read_closed() {
                pair.read_closed[side] = true;
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                pair.writable[side] = true;
            }
            if let Step::Closed = pair.pump() {
                // Closing the sockets takes them out of the epoll set: no deregistration.
                if let Some(pair) = pairs[slot].take() {
                    spare.extend(pair.ways.map(|w| w.buf));
                }
                free.push(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::Duration;

    /// A client whose request and FIN are both queued before the forwarder looks (one
    /// readiness edge) gets the upstream's answer, which the upstream sends only after the FIN.
    #[test]
    fn a_request_and_its_fin_in_one_edge_reach_the_upstream_and_the_answer_comes_back() {
        let upstream = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let (bound, forwarder) =
            super::bind(&[upstream.local_addr().expect("addr")]).expect("bind forwarder");
        // The kernel completes the connection from the listen queue and queues the bytes and
        // the FIN; the forwarder starts only then, so it sees them in one edge.
        let mut client = TcpStream::connect(bound[0]).expect("connect");
        client.write_all(b"hello").expect("write");
        client.shutdown(Shutdown::Write).expect("FIN");
        std::thread::spawn(forwarder);
        let server = std::thread::spawn(move || {
            let (mut conn, _) = upstream.accept().expect("accept");
            let mut request = Vec::new();
            conn.read_to_end(&mut request).expect("request until FIN");
            conn.write_all(format!("{} bytes", request.len()).as_bytes())
                .expect("answer");
        });
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = String::new();
        client
            .read_to_string(&mut answer)
            .expect("the answer, then EOF, within 10 s (the FIN was not passed on?)");
        assert_eq!(answer, "5 bytes");
        server.join().expect("upstream");
    }
}
