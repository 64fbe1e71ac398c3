//! A job's log: lines are buffered and written in small batches by a background task,
//! so a chatty step never waits on the database, and every secret the runner knows is
//! masked before a line is stored.

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{broadcast, mpsc};

use crate::domain::JobId;
use crate::store::logs::{self, Stream};
use crate::store::now_ms;

/// Values that must never appear in a job log.
#[derive(Clone, Default)]
pub struct SecretMask(Arc<Vec<String>>);

impl SecretMask {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        // Each line of a multi-line secret is masked on its own, since logs are written line by line.
        let mut values: Vec<String> = secrets
            .into_iter()
            .flat_map(|s| {
                let mut parts: Vec<String> = s.lines().map(str::to_owned).collect();
                parts.push(s);
                parts
            })
            .filter(|s| s.trim().len() >= 4)
            .collect();
        values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        values.dedup();
        Self(Arc::new(values))
    }

    pub fn apply(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for secret in self.0.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

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
}

pub struct JobLogWriter(tokio::task::JoinHandle<()>);

impl JobLogWriter {
    /// Waits until every line sent so far is stored.
    pub async fn flush(self) {
        let _ = self.0.await;
    }
}

impl JobLog {
    pub fn start(pool: SqlitePool, job: JobId, mask: SecretMask, events: LogEvents) -> (Self, JobLogWriter) {
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
        (Self { sender, mask }, JobLogWriter(task))
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
            let _ = self.sender.send((now_ms(), stream, self.mask.apply(line)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SecretMask;

    #[test]
    fn masks_secrets_including_each_line_of_multi_line_ones() {
        let mask = SecretMask::new([
            "hunter2-token".to_owned(),
            "-----BEGIN KEY-----\nabcdefgh\n-----END KEY-----".to_owned(),
        ]);
        assert_eq!(mask.apply("token=hunter2-token ok"), "token=*** ok");
        assert_eq!(mask.apply("abcdefgh"), "***");
        assert_eq!(mask.apply("nothing here"), "nothing here");
    }
}
