//! Logs go to stderr through a background writer, so a slow terminal or pipe never
//! holds up a request: handlers only format a line and hand it to a channel.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event (the default).
    Human,
    /// One JSON object per line (`LOG_FORMAT=json`), for CloudWatch and log shippers.
    Json,
}

impl LogFormat {
    pub fn from_env() -> Self {
        match std::env::var("LOG_FORMAT") {
            Ok(value) if value.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Human,
        }
    }
}

/// Installs the global subscriber. Keep the guard alive until exit: dropping it
/// flushes the lines still queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    // Under overload, dropping log lines is better than slowing every request down.
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(256 * 1024)
        .lossy(true)
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.with_ansi(false).init(),
    }
    guard
}
