//! Hostile input to a controller's DNS listener, UDP and TCP: garbage, truncated and oversized
//! messages, responses sent as queries, names outside the zone, floods. Each case ends with a
//! clear outcome (FORMERR or REFUSED, logged by the server with the client's address, or a
//! silent drop where answering would make the listener a reflector), and the listener still
//! answers the import's name afterwards. Called from the matrix in `hostile.rs`, which measures
//! the controller's memory over all of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use crate::probe::IO_TIMEOUT;

/// The import the serving check resolves (the echo service imported from cluster b).
const IMPORT: &str = "echo.default.svc.clusterset.local";
const A: u16 = 1;
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const REFUSED: u8 = 5;

/// A standard query for `name`/`qtype` with message id `id`.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(u8::try_from(label.len()).expect("short label"));
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

fn id_of(reply: &[u8]) -> u16 {
    u16::from_be_bytes([reply[0], reply[1]])
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

fn answers(reply: &[u8]) -> u16 {
    u16::from_be_bytes([reply[6], reply[7]])
}

/// Sends `bytes` in one datagram, then valid queries from the same socket, one after the
/// other; returns the replies that are not theirs. The server handles each datagram in a task
/// of its own, so an answer to `bytes` may overtake the first valid answer; two full round
/// trips after it is the bound on waiting for an answer that may never come.
fn udp(dns: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // An oversized datagram may be refused by the kernel; that is part of the case.
    let _ = sock.send_to(bytes, dns);
    let mut others = Vec::new();
    let mut buf = vec![0u8; 65_536];
    for id in [0xbeef, 0xbef0] {
        sock.send_to(&query(id, IMPORT, A), dns).expect("send");
        loop {
            let n = sock.recv(&mut buf).unwrap_or_else(|e| {
                panic!("DNS {dns}: no answer to a valid query after a hostile one: {e}")
            });
            let reply = buf[..n].to_vec();
            if reply.len() >= 12 && id_of(&reply) == id {
                assert_eq!(
                    rcode(&reply),
                    NOERROR,
                    "the valid query after the hostile one"
                );
                break;
            }
            others.push(reply);
        }
    }
    others
}

/// How long a listener may take to work through a flood before it answers again.
const FLOOD_RECOVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Retries a valid query (fresh socket, 1 s per try, as a resolver would) until one is answered
/// with NOERROR; panics naming the listener after `within`.
fn udp_answered_within(dns: SocketAddr, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    let mut buf = vec![0u8; 65_536];
    for id in 0x1000u16.. {
        assert!(
            std::time::Instant::now() < deadline,
            "DNS {dns}: no answer over UDP within {within:?} of a flood"
        );
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .expect("timeout");
        sock.send_to(&query(id, IMPORT, A), dns).expect("send");
        if let Ok(n) = sock.recv(&mut buf)
            && n >= 12
            && id_of(&buf[..n]) == id
            && rcode(&buf[..n]) == NOERROR
        {
            return;
        }
    }
}

/// Sends `bytes` on a fresh TCP connection, half-closes, reads until the server closes.
fn tcp(dns: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(dns).expect("connect");
    conn.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = conn.write_all(bytes);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    if let Err(e) = conn.read_to_end(&mut out) {
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "DNS {dns} over TCP: no close within {IO_TIMEOUT:?}: {e}"
        );
    }
    out
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(message.len())
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(message);
    out
}

/// The listener answers the import by name over UDP and TCP.
fn assert_serving(dns: SocketAddr, case: &str) {
    // `udp` asserts NOERROR for its own valid query.
    assert!(udp(dns, &[]).is_empty(), "after {case}: stray UDP replies");
    let reply = tcp(dns, &framed(&query(7, IMPORT, A)));
    assert!(reply.len() >= 14, "after {case}: no TCP answer ({reply:?})");
    let msg = &reply[2..];
    assert_eq!(
        (rcode(msg), answers(msg)),
        (NOERROR, 1),
        "after {case}: TCP answer"
    );
}

/// (case, message, the outcomes allowed: `Some(rcode)` answered, `None` dropped).
type Case = (&'static str, Vec<u8>, &'static [Option<u8>]);

/// Runs every case against `dns`; `controller` is the process serving it (for its log).
pub(crate) fn dns_matrix(dns: SocketAddr, controller: &multicloud::process::Process) {
    assert_serving(dns, "nothing");
    let header_only = {
        // Announces one question and carries none.
        let mut q = query(1, IMPORT, A);
        q.truncate(12);
        q
    };
    let garbage_after_header = {
        let mut q = query(2, IMPORT, A);
        q.truncate(12);
        q.extend((0..200u16).map(|i| (i * 37 % 251) as u8 | 0xc0));
        q
    };
    let oversized = {
        let mut q = garbage_after_header.clone();
        q.resize(60_000, 0xc0);
        q
    };
    let response = {
        let mut q = query(4, IMPORT, A);
        q[2] |= 0x80; // QR: a response, as a reflection attack would send
        q
    };
    let udp_cases: [Case; 6] = [
        (
            "5 bytes of garbage (shorter than a header)",
            b"\xff\x00abc".to_vec(),
            &[None],
        ),
        (
            "a header announcing a missing question",
            header_only.clone(),
            &[Some(FORMERR)],
        ),
        (
            "a header then garbage",
            garbage_after_header.clone(),
            &[Some(FORMERR)],
        ),
        (
            "a 60 000-byte datagram",
            oversized.clone(),
            &[Some(FORMERR), None],
        ),
        ("a response sent as a query", response, &[None]),
        (
            "a name outside the zone",
            query(5, "example.com", A),
            &[Some(REFUSED)],
        ),
    ];
    for (case, bytes, expected) in udp_cases {
        let replies = udp(dns, &bytes);
        let outcome = match replies.as_slice() {
            [] => None,
            [reply] if reply.len() >= 12 => Some(rcode(reply)),
            other => panic!("UDP, {case}: unexpected replies {other:?}"),
        };
        println!(
            "dns udp, {case}: {}",
            outcome.map_or("dropped".to_owned(), |c| format!("rcode {c}"))
        );
        assert!(
            expected.contains(&outcome),
            "UDP, {case}: got {outcome:?}, expected one of {expected:?}"
        );
        assert_serving(dns, case);
    }
    let line = super::hostile::wait_log(controller, &["response:FormErr", "udp://127.0.0.1"]);
    println!("  controller: {line}");
    super::hostile::wait_log(controller, &["response:Refused"]);

    // A flood: far more datagrams than the socket buffer holds, sent without waiting.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let flood = 20_000u16;
    for i in 0..flood {
        let _ = sock.send_to(&query(i, IMPORT, A), dns);
    }
    println!("dns udp, a flood of {flood} queries: sent");
    // UDP is lossy by design: while the server works through the backlog, a query may be shed
    // by the kernel, and a resolver retries. So retry as one does, bounded, before the checks.
    let started = std::time::Instant::now();
    udp_answered_within(dns, FLOOD_RECOVERY);
    println!(
        "dns udp, a flood: a fresh query answered {:.2} s after the flood",
        started.elapsed().as_secs_f64()
    );
    assert_serving(dns, "a UDP flood");

    let tcp_cases: [(&str, Vec<u8>, Option<u8>); 4] = [
        (
            "garbage after a length prefix",
            framed(&garbage_after_header),
            Some(FORMERR),
        ),
        (
            "a truncated message (length says 100, 10 bytes come)",
            {
                let mut m = 100u16.to_be_bytes().to_vec();
                m.extend_from_slice(&query(6, IMPORT, A)[..10]);
                m
            },
            None,
        ),
        ("a 60 000-byte message", framed(&oversized), Some(FORMERR)),
        (
            "a name outside the zone",
            framed(&query(8, "example.com", A)),
            Some(REFUSED),
        ),
    ];
    for (case, bytes, expected) in tcp_cases {
        let reply = tcp(dns, &bytes);
        let outcome = (reply.len() >= 14).then(|| rcode(&reply[2..]));
        println!(
            "dns tcp, {case}: {}",
            outcome.map_or_else(
                || format!("closed, {} bytes back", reply.len()),
                |c| format!("rcode {c}")
            )
        );
        assert_eq!(outcome, expected, "TCP, {case}");
        assert_serving(dns, case);
    }
    // Many idle connections (each closed by the server after its 10 s idle timeout): a new
    // connection is still served.
    let idle: Vec<_> = (0..500)
        .map(|_| TcpStream::connect(dns).expect("connect"))
        .collect();
    println!("dns tcp, 500 idle connections: open");
    assert_serving(dns, "500 idle TCP connections");
    drop(idle);
}
