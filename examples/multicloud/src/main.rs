//! `multicloud`: three clusters on this machine, `aws`, `gcp` and `onprem`, tell the story of
//! Isthmus in one transcript: trust, link, export, call, failover, root rotation, unlink. Each step prints the
//! commands a user would type to do it by hand, in the work directory, and how long it took.
//!
//! `cargo xtask demo` builds the workspace binaries and runs this one; it finds them next to
//! itself (`target/<profile>/`). `topology.json` in the work directory always describes what
//! runs: pids, the controllers' API sockets and peering addresses, the gateways' ingress, admin
//! and egress listeners.

mod story;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use multicloud::shell::Shell;

use crate::story::Demo;

#[derive(Parser)]
#[command(
    name = "multicloud",
    about = "Three clusters on this machine: trust, link, export, call, failover, unlink"
)]
struct Args {
    /// Work directory for certificates, configs, state and logs; emptied first
    #[arg(long, default_value = "demo-work")]
    work_dir: PathBuf,
    /// After the story, leave the topology up (links restored) until Ctrl-C
    #[arg(long)]
    keep_running: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    stop_children_on_signal();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nmulticloud: {e:#}");
            if args.work_dir.join("topology.json").exists() {
                eprintln!(
                    "multicloud: configs and logs are in {} (topology.json lists the processes)",
                    args.work_dir.display()
                );
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = prepare(&args.work_dir)?;
    let shell = Shell::new(&work)?.verbose();
    println!(
        "Isthmus multicloud demo: clusters aws, gcp and onprem on this machine, each on its own loopback address."
    );
    println!(
        "Work dir {}; topology.json there lists every process and address.",
        work.display()
    );
    println!("To type along in another shell:");
    println!("  export PATH=\"{}:$PATH\"", shell.bins().display());
    println!("  cd {}", work.display());

    let mut demo = Demo::new(shell, work.join("topology.json"));
    demo.write_topology()?;
    let mut steps = Steps::new(if args.keep_running { 9 } else { 8 });
    steps.run(
        &mut demo,
        "Trust: aws and gcp share a root; onprem has its own",
        Demo::trust,
    )?;
    steps.run(
        &mut demo,
        "Start each cluster: echo endpoint, gateway, controller",
        Demo::start,
    )?;
    steps.run(
        &mut demo,
        "Link aws with gcp and with onprem, with single-use tokens",
        Demo::link,
    )?;
    steps.run(
        &mut demo,
        "Export echo.default from gcp and onprem",
        Demo::export,
    )?;
    steps.run(&mut demo, "Call echo.default from aws", Demo::call)?;
    steps.run(
        &mut demo,
        "Kill gcp's gateway: calls fail over to onprem",
        Demo::failover,
    )?;
    steps.run(
        &mut demo,
        "Rotate the shared root under continuous traffic: no call fails",
        Demo::rotate,
    )?;
    steps.run(
        &mut demo,
        "Unlink: aws drops gcp and onprem; the imports are gone",
        Demo::unlink,
    )?;
    if args.keep_running {
        steps.run(
            &mut demo,
            "Restore for --keep-running: gcp's gateway back, links made again",
            Demo::restore,
        )?;
    }
    steps.summary(started.elapsed());
    if !args.keep_running {
        return demo.stop();
    }
    demo.usage();
    // The signal thread stops everything and exits.
    loop {
        std::thread::park();
    }
}

/// Creates the work directory, emptied first. A directory that exists, is not empty and has no
/// `topology.json` is refused: `--work-dir` pointing at something else must not wipe it.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join("topology.json").exists() {
            bail!(
                "{} is not empty and is not a demo work dir (no topology.json); remove it or pick another --work-dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// On SIGINT or SIGTERM, SIGKILL every process started and exit: the main thread may be in the
/// middle of a step (or parked under `--keep-running`), and no destructor runs on exit.
fn stop_children_on_signal() {
    std::thread::spawn(|| {
        let code = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(wait_for_signal()));
        match code {
            Ok(code) => {
                multicloud::process::kill_all();
                eprintln!("\nmulticloud: stopped every process it started");
                std::process::exit(code);
            }
            // Without handlers the default actions apply; the demo itself still works.
            Err(e) => eprintln!("multicloud: cannot watch for signals: {e:#}"),
        }
    });
}

/// Waits for SIGINT or SIGTERM; the conventional exit code for it.
async fn wait_for_signal() -> anyhow::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    })
}

/// Numbered, timed steps; a failed one names itself.
struct Steps {
    total: usize,
    done: Vec<(String, Duration)>,
}

impl Steps {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: Vec::new(),
        }
    }

    fn header(&self, title: &str) -> usize {
        let n = self.done.len() + 1;
        println!("\n[{n}/{}] {title}", self.total);
        n
    }

    fn run(
        &mut self,
        demo: &mut Demo,
        title: &str,
        step: fn(&mut Demo) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let n = self.header(title);
        let start = Instant::now();
        let result = step(demo);
        let took = start.elapsed();
        // Written even after a failure: it tells what was running.
        let written = demo.write_topology();
        result
            .and(written)
            .with_context(|| format!("step {n} ({title}) failed after {} ms", took.as_millis()))?;
        println!("    ok ({} ms)", took.as_millis());
        self.done.push((title.to_owned(), took));
        Ok(())
    }

    fn summary(&self, total: Duration) {
        println!("\nTimings");
        for (i, (title, took)) in self.done.iter().enumerate() {
            let took = format!("{} ms", took.as_millis());
            println!("  {:>2}. {title:<64} {took:>8}", i + 1);
        }
        println!(
            "      {:<64} {:>8}",
            "total, from start",
            format!("{:.1} s", total.as_secs_f64())
        );
    }
}
