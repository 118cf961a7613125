//! Logging setup.
//!
//! Logs go to standard error through `tracing`. `RUST_LOG` filters them (default `info`), and
//! `LOG_FORMAT=json` switches to one JSON object per line for log collectors.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};

use tracing_subscriber::EnvFilter;

/// Progress bars on standard error, if a command shows any; log lines are written around them.
static PROGRESS_BARS: Mutex<Option<indicatif::MultiProgress>> = Mutex::new(None);

/// Routes log lines around `bars` while they are shown, so that neither overwrites the other;
/// `None` ends that.
pub fn set_progress_bars(bars: Option<indicatif::MultiProgress>) {
    *PROGRESS_BARS.lock().unwrap_or_else(PoisonError::into_inner) = bars;
}

/// Standard error for log lines, which hides the progress bars while it writes.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes each event with one `write_all`, so one event is one call.
        let bars = PROGRESS_BARS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match bars {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Displays an error followed by each of its causes, `outer: inner: innermost`. Use it only
/// for errors whose causes cannot quote row values, such as connection and file errors.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }

        Ok(())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Call once, before the runtime starts.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal; journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(std::io::stderr().is_terminal());
    // systemd sets JOURNAL_STREAM when standard error goes to journald, which stamps each
    // line itself, so text lines leave the time out there.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, under_journald) {
        (LogFormat::Text, false) => builder.with_target(false).init(),
        (LogFormat::Text, true) => builder.with_target(false).without_time().init(),
        (LogFormat::Json, _) => builder.json().init(),
    }
}

/// Writes a count with its noun in the right number: `1 change`, `2 changes`.
pub fn count_of(count: impl Into<u64>, singular: &str, plural: &str) -> String {
    let count = count.into();
    format!("{count} {}", if count == 1 { singular } else { plural })
}
