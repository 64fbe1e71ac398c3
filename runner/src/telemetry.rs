//! Logging set-up: readable lines by default, JSON lines on demand, to stderr. Every line
//! passes through the secret mask on its way out, whatever a log call put in it.

use std::io::Write;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::secrets::SecretMask;

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat, mask: SecretMask) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MaskedStderr(mask))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// A log destination (standard error), through the mask: each event is formatted into a
/// buffer, masked whole and written at once.
struct MaskedStderr(SecretMask);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedEvent<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedEvent::new(self.0.clone(), std::io::stderr())
    }
}

/// One event's text, written to `out` masked when the formatter is done with it.
pub struct MaskedEvent<W: Write> {
    text: Vec<u8>,
    mask: SecretMask,
    out: W,
}

impl<W: Write> MaskedEvent<W> {
    pub fn new(mask: SecretMask, out: W) -> Self {
        Self {
            text: Vec::with_capacity(256),
            mask,
            out,
        }
    }
}

impl<W: Write> Write for MaskedEvent<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for MaskedEvent<W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        let _ = self.out.write_all(self.mask.apply(&text).as_bytes());
    }
}

pub use crate::domain::format_ms;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_runners_own_log_lines_are_masked_whatever_a_log_call_put_in_them() {
        let captured = Captured::default();
        let sink = captured.clone();
        let mask = SecretMask::new(["admin-token-in-a-log-line-0123"]);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || MaskedEvent::new(mask.clone(), sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(url = "https://x:admin-token-in-a-log-line-0123@host", "request failed");
            tracing::error!("split across fields: {}", "admin-token-in-a-log-line-0123");
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains("admin-token-in-a-log-line"), "{text}");
        assert_eq!(text.matches("***").count(), 2, "{text}");
    }
}
