//! Waiting in the open: a spinner line on stderr while a verb waits (only when both stdout and
//! stderr are terminals and the output is a table, so scripts and `-o json` never see it), and
//! the bounded wait of `link join` until the new link is healthy.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Output;
use crate::api::control as pb;
use crate::api::control::control_client::ControlClient;

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const POLL: Duration = Duration::from_millis(200);

/// Whether a spinner may be drawn for output `out`.
pub(super) fn spinner_enabled(out: Output) -> bool {
    out == Output::Table && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A spinner line with a message and the seconds waited; cleared when finished.
pub(super) struct Spinner {
    stop: watch::Sender<String>,
    task: Option<JoinHandle<()>>,
}

impl Spinner {
    pub(super) fn start(message: &str, enabled: bool) -> Self {
        let (stop, mut rx) = watch::channel(message.to_owned());
        let task = enabled.then(|| {
            let started = Instant::now();
            // The first frame at once, so even a short wait says what it waits for.
            draw(FRAMES[0], message, started);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                tick.tick().await;
                for frame in FRAMES.iter().cycle().skip(1) {
                    tick.tick().await;
                    if rx.has_changed().is_err() {
                        break;
                    }
                    let text = rx.borrow_and_update().clone();
                    draw(*frame, &text, started);
                }
            })
        });
        Self { stop, task }
    }

    /// Changes the message.
    pub(super) fn set(&self, message: String) {
        self.stop.send_replace(message);
    }

    pub(super) async fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

fn draw(frame: char, text: &str, started: Instant) {
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r\x1b[2K{frame} {text} ({}s)",
        started.elapsed().as_secs()
    );
    let _ = err.flush();
}

/// Polls the links until `peer`'s is connected and has heard a heartbeat, or `timeout` passes.
pub(super) async fn link_healthy(
    client: &mut ControlClient<tonic::transport::Channel>,
    peer: &str,
    timeout: Duration,
    out: Output,
) -> anyhow::Result<pb::Link> {
    let spinner = Spinner::start(
        &format!("waiting for the link with {peer} to be healthy"),
        spinner_enabled(out),
    );
    let deadline = Instant::now() + timeout;
    let result = loop {
        let links = client
            .list_links(pb::ListLinksRequest {})
            .await
            .map_err(super::refused)?
            .into_inner()
            .links;
        let link = links.into_iter().find(|l| l.peer == peer);
        match link {
            Some(l) if l.state == "connected" && l.last_heartbeat_ms > 0 => break Ok(l),
            Some(l) if Instant::now() >= deadline => {
                break Err(super::Exit {
                    code: 1,
                    message: format!(
                        "linked with {peer}, but the link is not healthy after {}: it is {}{}; `federation-ctl check` says why (wait longer with --timeout)",
                        humantime::format_duration(timeout),
                        l.state,
                        if l.last_error.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", l.last_error)
                        }
                    ),
                });
            }
            None => {
                break Err(super::Exit {
                    code: 1,
                    message: format!(
                        "the link with {peer} disappeared while waiting (unlinked on either side?)"
                    ),
                });
            }
            Some(l) => spinner.set(format!("waiting for the link with {peer} ({})", l.state)),
        }
        tokio::time::sleep(POLL).await;
    };
    spinner.finish().await;
    Ok(result?)
}
