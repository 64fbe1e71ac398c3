//! A job's log: lines are buffered and written in small batches by a background task,
//! so a chatty step never waits on the database, and every secret the runner knows is
//! masked before a line is stored. A line is at most 64 KiB and a log at most its cap
//! (50 MB by default); what is cut is said in the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::store::Store;
use tokio::sync::{broadcast, mpsc};

use crate::domain::JobId;
use crate::store::logs::{self, Stream};
use crate::store::now_ms;

pub use crate::secrets::SecretMask;

/// Longest line kept; the rest of a longer line is cut, and the cut said.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// A job's log stops growing past this, unless the runner is configured otherwise.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 50 * 1024 * 1024;

/// Tells live log readers which job just stored new lines.
#[derive(Clone)]
pub struct LogEvents(broadcast::Sender<JobId>);

impl Default for LogEvents {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl LogEvents {
    pub fn subscribe(&self) -> broadcast::Receiver<JobId> {
        self.0.subscribe()
    }

    pub fn stored(&self, job: JobId) {
        // Nobody listening is the normal case.
        let _ = self.0.send(job);
    }
}

#[derive(Clone)]
pub struct JobLog {
    sender: mpsc::UnboundedSender<(i64, Stream, String)>,
    mask: SecretMask,
    budget: Arc<LogBudget>,
}

/// How much more a job's log may hold.
struct LogBudget {
    left: AtomicU64,
    max: u64,
    exhausted: AtomicBool,
}

pub struct JobLogWriter(tokio::task::JoinHandle<()>);

impl JobLogWriter {
    /// Waits until every line sent so far is stored.
    pub async fn flush(self) {
        let _ = self.0.await;
    }
}

impl JobLog {
    pub fn start(pool: Store, job: JobId, mask: SecretMask, events: LogEvents) -> (Self, JobLogWriter) {
        Self::start_capped(pool, job, mask, events, DEFAULT_MAX_LOG_BYTES)
    }

    /// A log that stops storing lines once `max_bytes` are stored.
    pub fn start_capped(
        pool: Store,
        job: JobId,
        mask: SecretMask,
        events: LogEvents,
        max_bytes: u64,
    ) -> (Self, JobLogWriter) {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(i64, Stream, String)>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while receiver.recv_many(&mut batch, 1024).await > 0 {
                // Give a burst a moment to gather, so it becomes one transaction.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while let Ok(line) = receiver.try_recv() {
                    batch.push(line);
                }
                match logs::append(&pool, job, &batch).await {
                    Ok(()) => events.stored(job),
                    Err(error) => {
                        tracing::error!(job_id = %job, %error, lines = batch.len(), "could not store job log lines");
                    }
                }
                batch.clear();
            }
        });
        let budget = Arc::new(LogBudget {
            left: AtomicU64::new(max_bytes),
            max: max_bytes,
            exhausted: AtomicBool::new(false),
        });
        (Self { sender, mask, budget }, JobLogWriter(task))
    }

    /// A log of work done outside any job (removing a preview in the background): its
    /// lines go to the runner's own log under `what`, masked as a job's are.
    pub fn to_tracing(what: String, mask: SecretMask) -> Self {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(i64, Stream, String)>();
        tokio::spawn(async move {
            while let Some((_, _, line)) = receiver.recv().await {
                tracing::info!(what = %what, "{line}");
            }
        });
        let budget = Arc::new(LogBudget {
            left: AtomicU64::new(DEFAULT_MAX_LOG_BYTES),
            max: DEFAULT_MAX_LOG_BYTES,
            exhausted: AtomicBool::new(false),
        });
        Self { sender, mask, budget }
    }

    /// What this log masks, for other text of the job kept elsewhere.
    pub fn mask(&self) -> &SecretMask {
        &self.mask
    }

    pub fn system(&self, line: impl AsRef<str>) {
        self.write(Stream::System, line.as_ref());
    }

    pub fn stdout(&self, line: &str) {
        self.write(Stream::Stdout, line);
    }

    pub fn stderr(&self, line: &str) {
        self.write(Stream::Stderr, line);
    }

    fn write(&self, stream: Stream, text: &str) {
        for line in text.lines() {
            // Masked whole first: a cut must not leave half a secret showing.
            let masked = self.mask.apply(line);
            let line = cut_line(&masked);
            let cost = line.len() as u64 + 1;
            // Once a line did not fit, nothing later is kept either: a log with holes
            // would read as if the later lines came right after the earlier ones.
            let fits = !self.budget.exhausted.load(Ordering::Relaxed)
                && self
                    .budget
                    .left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(cost))
                    .is_ok();
            if fits {
                let _ = self.sender.send((now_ms(), stream, line.into_owned()));
            } else if !self.budget.exhausted.swap(true, Ordering::Relaxed) {
                let notice = format!(
                    "the log reached its cap of {} bytes (queue.job_log_max_bytes); later lines are not kept",
                    self.budget.max
                );
                let _ = self.sender.send((now_ms(), Stream::System, notice));
            }
        }
    }
}

/// At most [`MAX_LINE_BYTES`] of a line, on a character boundary, and the cut said.
fn cut_line(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE_BYTES {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{} [line cut: {} more bytes]", &line[..end], line.len() - end))
}

/// Turns output that arrives in arbitrary chunks (a build's stream, a container's log
/// frames) into whole lines, so a secret split across two chunks is still masked whole.
#[derive(Default)]
pub struct LineBuffer {
    pending: String,
}

impl LineBuffer {
    /// The complete lines `chunk` finishes; a partial last line waits for the next chunk
    /// (or is given up as a line once it is longer than any line kept).
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.pending.push_str(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.find('\n') {
            let rest = self.pending.split_off(end + 1);
            let mut line = std::mem::replace(&mut self.pending, rest);
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
            lines.push(line);
        }
        if self.pending.len() > MAX_LINE_BYTES * 2 {
            lines.push(std::mem::take(&mut self.pending));
        }
        lines
    }

    /// What is left once the output ends.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_split_across_two_chunks_comes_out_whole_and_is_masked() {
        let mask = SecretMask::new(["hunter2-token-0123"]);
        let mut buffer = LineBuffer::default();
        let mut lines = buffer.push("Step 3/4 : RUN echo hunter2-to");
        assert!(lines.is_empty());
        lines.extend(buffer.push("ken-0123\r\nnext line\npartial"));
        lines.extend(buffer.finish());
        let masked: Vec<String> = lines.iter().map(|l| mask.apply(l).into_owned()).collect();
        assert_eq!(masked, ["Step 3/4 : RUN echo ***", "next line", "partial"]);
    }

    #[test]
    fn long_lines_are_cut_and_the_cut_is_said() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let cut = cut_line(&long);
        assert!(cut.starts_with(&"x".repeat(MAX_LINE_BYTES)));
        assert!(cut.ends_with("[line cut: 10 more bytes]"), "{}", &cut[cut.len() - 40..]);
        assert_eq!(cut_line("short"), "short");
    }
}
