//! Logging setup and the stdout event stream.
//!
//! Logs (tracing) go to **stderr**: JSON by default, `EWG_LOG_FORMAT=plain` for humans, level
//! filter from `EWG_LOG` (env-filter syntax, default `info`). Access logs are ordinary events
//! on target `access`, one per connection.
//!
//! **stdout** carries one JSON object per line for lifecycle events that tools and tests wait on
//! (`ready` with the bound addresses, `reload`, and in controller mode `controller` and
//! `config`, then `draining`, `stopped`), so nothing has to poll.

use std::io::Write as _;

use tracing_subscriber::EnvFilter;

/// Env var holding the log filter.
pub const LOG_ENV: &str = "EWG_LOG";
/// Env var choosing `json` (default) or `plain` logs.
pub const LOG_FORMAT_ENV: &str = "EWG_LOG_FORMAT";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Plain,
}

impl Format {
    /// Parses the `EWG_LOG_FORMAT` value; anything but `plain` means JSON.
    pub fn from_env_value(value: Option<&str>) -> Self {
        match value {
            Some("plain") => Self::Plain,
            _ => Self::Json,
        }
    }
}

/// Installs the global subscriber. `filter` is the `EWG_LOG` value, if set.
pub fn init(filter: Option<&str>, format: Format) {
    let filter =
        EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (e.g. in tests) keeps the first subscriber.
    let _ = match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        Format::Plain => builder.try_init(),
    };
}

/// Writes one lifecycle event line to stdout and flushes it.
pub fn event(event: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the gateway down.
    let _ = writeln!(out, "{event}");
    let _ = out.flush();
}
