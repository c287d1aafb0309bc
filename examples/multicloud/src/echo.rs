//! An HTTP/1.0 endpoint that answers every request with a fixed body (its cluster's name, so a
//! call shows which cluster served it; curl works), and the clients that call it.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::process::Process;
use crate::shell::Shell;
use crate::{Error, Result};

/// A running echo endpoint: served on threads of this process until it ends, or, inside a
/// network namespace, by a child process stopped on drop.
pub struct Echo {
    pub addr: SocketAddr,
    pub process: Option<Process>,
}

impl Echo {
    /// Listens on `host`, any free port, and answers `body`.
    pub fn start(host: IpAddr, body: &str) -> Result<Self> {
        let listener =
            TcpListener::bind((host, 0)).map_err(Error::io(format!("bind echo on {host}")))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("echo listener address"))?;
        let body = body.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let body = body.clone();
                std::thread::spawn(move || answer(conn, &body));
            }
        });
        Ok(Self {
            addr,
            process: None,
        })
    }

    /// Serves `body` on `host`, any free port, inside network namespace `netns`: Python's
    /// `http.server` (as in the README's walkthrough) serving `<dir>/www/index.html`, started
    /// with `ip netns exec`. `dir` is relative to the shell's work directory.
    pub fn spawn_in(
        shell: &Shell,
        netns: &str,
        host: IpAddr,
        body: &str,
        dir: &Path,
    ) -> Result<Self> {
        let www = shell.work().join(dir).join("www");
        std::fs::create_dir_all(&www)
            .and_then(|()| std::fs::write(www.join("index.html"), format!("{body}\n")))
            .map_err(Error::io(format!("write {}/index.html", www.display())))?;
        let mut cmd = crate::netns::exec(netns, "python3");
        cmd.current_dir(shell.work())
            .args(["-u", "-m", "http.server", "0", "--bind"])
            .arg(host.to_string())
            .arg("--directory")
            .arg(&www);
        let process = shell.spawn(&format!("{body}-echo"), dir, "echo", &mut cmd)?;
        // "Serving HTTP on 10.213.2.10 port 41234 (http://10.213.2.10:41234/) ..."
        let line = process.wait_line("`Serving HTTP on`", |l| l.starts_with("Serving HTTP on"))?;
        let port = line
            .split_once(" port ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| process.fail(&format!("no port in {line:?}")))?;
        Ok(Self {
            addr: SocketAddr::new(host, port),
            process: Some(process),
        })
    }
}

/// Reads one request head and answers `body`; a client that goes away is not our problem.
fn answer(mut conn: TcpStream, body: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let resp = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}\n",
        body.len() + 1
    );
    let _ = conn.write_all(resp.as_bytes());
}

/// One HTTP call over plain TCP to `addr`; the response body, trimmed, or why it failed.
pub fn call(addr: SocketAddr) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_owned()),
        _ => Err(format!("unexpected response {resp:?}")),
    }
}

/// One HTTP call to `addr` with curl run inside network namespace `netns`; the response body,
/// trimmed, or why it failed. Connecting gives up after 2 s, the whole call after 5 s.
pub fn call_in(netns: &str, addr: SocketAddr) -> Result<String, String> {
    let mut cmd = crate::netns::exec(netns, "curl");
    cmd.args(["-sS", "--fail", "--connect-timeout", "2", "--max-time", "5"])
        .arg(format!("http://{addr}/"));
    match crate::run_ok(&mut cmd) {
        Ok(body) => Ok(body.trim().to_owned()),
        Err(Error::Failed { stderr, .. }) => Err(format!("{addr}: {}", stderr.trim())),
        Err(e) => Err(e.to_string()),
    }
}
