//! Load generators, driving every contender identically: closed-loop clients on one thread
//! (like `wrk -t1`), counting operations and bytes and recording per-request latency inside
//! the measured window only, after a warm-up; the contender's CPU time is read from `/proc` at
//! both ends of that window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::backend::STREAM;
use crate::procs;

/// A byte stream to the contender: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to reach a contender's entry point.
#[derive(Clone)]
pub(crate) struct Dial {
    pub(crate) addr: SocketAddr,
    /// TLS client config and SNI; plain TCP when `None`.
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Bytes sent first (a ClientHello for the plaintext bulk scenario).
    pub(crate) preamble: Vec<u8>,
}

impl Dial {
    pub(crate) async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        let mut tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        if !self.preamble.is_empty() {
            tcp.write_all(&self.preamble).await?;
        }
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some((config, name)) => Box::new(
                TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await?,
            ),
        })
    }
}

/// The measured window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub(crate) ops: u64,
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    /// Sorted request latencies in microseconds.
    pub(crate) latencies_us: Vec<u32>,
    /// CPU seconds the contender's processes used in the window.
    pub(crate) cpu_s: f64,
    pub(crate) errors: u64,
}

impl Sample {
    pub(crate) fn percentile_us(&self, p: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let rank = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        Some(f64::from(self.latencies_us[rank]))
    }
}

#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Vec<u32>>,
}

impl Counters {
    fn done(&self, started: Instant, bytes: u64) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.measuring.load(Ordering::Relaxed) {
            let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            if let Ok(mut l) = self.latencies.lock() {
                l.push(us);
            }
        }
    }
}

/// The workload of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workload {
    /// One connection reading an endless response.
    Stream,
    /// `conns` connections, each sending requests for `size` bytes back to back.
    KeepAlive { conns: usize, size: u64 },
    /// `conns` loops of: connect (and handshake), one request for `size` bytes, close.
    NewConnection { conns: usize, size: u64 },
}

/// Runs `workload` against `dial` for `window`, measuring the CPU of `pids`.
pub(crate) async fn run(dial: &Dial, workload: Workload, window: Window, pids: &[u32]) -> Sample {
    let counters = Arc::new(Counters::default());
    let mut tasks = JoinSet::new();
    match workload {
        Workload::Stream => {
            tasks.spawn(stream(dial.clone(), counters.clone()));
        }
        Workload::KeepAlive { conns, size } => {
            for _ in 0..conns {
                tasks.spawn(keep_alive(dial.clone(), size, counters.clone()));
            }
        }
        Workload::NewConnection { conns, size } => {
            for _ in 0..conns {
                tasks.spawn(new_connections(dial.clone(), size, counters.clone()));
            }
        }
    }
    tokio::time::sleep(window.warmup).await;
    let (ops0, bytes0, cpu0) = (
        counters.ops.load(Ordering::Relaxed),
        counters.bytes.load(Ordering::Relaxed),
        procs::cpu_seconds(pids),
    );
    let start = Instant::now();
    counters.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(window.measure).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let (ops1, bytes1, cpu1) = (
        counters.ops.load(Ordering::Relaxed),
        counters.bytes.load(Ordering::Relaxed),
        procs::cpu_seconds(pids),
    );
    tasks.shutdown().await;
    let mut latencies_us = counters
        .latencies
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    latencies_us.sort_unstable();
    Sample {
        ops: ops1 - ops0,
        bytes: bytes1 - bytes0,
        secs,
        latencies_us,
        cpu_s: cpu1 - cpu0,
        errors: counters.errors.load(Ordering::Relaxed),
    }
}

async fn stream(dial: Dial, counters: Arc<Counters>) {
    let result: std::io::Result<()> = async {
        let mut io = dial.connect().await?;
        io.write_all(&STREAM.to_le_bytes()).await?;
        io.flush().await?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    .await;
    // The stream ends only when something failed (an abort at the end of the run never
    // reaches here).
    drop(result);
    counters.errors.fetch_add(1, Ordering::Relaxed);
}

/// Sends one request and reads the whole response into `buf`'s worth of chunks.
async fn request(io: &mut Box<dyn Io>, size: u64, buf: &mut [u8]) -> std::io::Result<()> {
    io.write_all(&size.to_le_bytes()).await?;
    io.flush().await?;
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(buf.len()).min(buf.len());
        let n = io.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(())
}

async fn keep_alive(dial: Dial, size: u64, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let Ok(mut io) = dial.connect().await else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        loop {
            let started = Instant::now();
            if request(&mut io, size, &mut buf).await.is_err() {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            counters.done(started, size);
        }
    }
}

async fn new_connections(dial: Dial, size: u64, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let started = Instant::now();
        let result = async {
            let mut io = dial.connect().await?;
            request(&mut io, size, &mut buf).await?;
            // A polite close, as a client ending its last request does.
            io.shutdown().await
        }
        .await;
        match result {
            Ok(()) => counters.done(started, size),
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Memory per idle connection: opens `n` connections (32 at a time), each completing one small
/// request end to end, and returns the growth of `pids`' resident memory in KiB per connection
/// and the number of connections that failed.
pub(crate) async fn idle_memory(dial: &Dial, n: usize, pids: &[u32]) -> (f64, u64) {
    // Warm-up: the first connections allocate what every later one shares.
    let (warm, _) = open(dial, 20).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = procs::rss_kib(pids);
    let (held, errors) = open(dial, n).await;
    // RSS is read once the contender has settled; this wait is measurement, not
    // synchronisation (every connection already answered).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = procs::rss_kib(pids);
    let opened = held.len().max(1) as f64;
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ((after.saturating_sub(before)) as f64 / opened, errors)
}

async fn open(dial: &Dial, n: usize) -> (Vec<Box<dyn Io>>, u64) {
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (dial, permits) = (dial.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut io = dial.connect().await?;
            request(&mut io, 16, &mut [0u8; 16]).await?;
            std::io::Result::Ok(io)
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut errors = 0;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(io)) => held.push(io),
            _ => errors += 1,
        }
    }
    (held, errors)
}
