//! Logging set-up: readable lines by default, JSON lines on demand, to stderr. Every line
//! passes through the secret mask on its way out, whatever a log call put in it.

use std::io::Write;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
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

/// Standard error, through the mask: each event is formatted into a buffer, masked whole
/// and written at once.
struct MaskedStderr(SecretMask);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedEvent;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedEvent {
            text: Vec::with_capacity(256),
            mask: self.0.clone(),
        }
    }
}

/// One event's text, written out masked when the formatter is done with it.
pub struct MaskedEvent {
    text: Vec<u8>,
    mask: SecretMask,
}

impl Write for MaskedEvent {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedEvent {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        let _ = std::io::stderr().write_all(self.mask.apply(&text).as_bytes());
    }
}

/// RFC 3339 UTC for a Unix-millisecond timestamp.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}
