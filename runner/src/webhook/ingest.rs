//! The ingest transaction, with group commit.
//!
//! One task owns a dedicated write connection. Handlers verify, parse and compress a
//! delivery, send it here and wait; the task takes every delivery that is waiting (up to
//! a cap) and records them all in one transaction (see `Recorder::record_batch`: three
//! round trips, one multi-row insert per table) that commits with one fsync. Only after
//! that commit does any handler get its answer, so a 2xx still means "committed"
//! (invariant 1), while the cost of the fsync is shared by every delivery that arrived
//! during the previous one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::deliveries::{Action, NewDelivery, Recorded, Recorder};
use crate::store::{Store, StoreError};

/// Most deliveries committed together; bounds the time one batch holds the write lock.
const MAX_BATCH: usize = 512;

/// Longest pause between attempts to reconnect to a database that went away.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest writer has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Pending {
    delivery: NewDelivery,
    action: Action,
    reply: oneshot::Sender<Result<Recorded, IngestError>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct IngestWriter {
    sender: mpsc::Sender<Pending>,
}

impl IngestWriter {
    /// Opens the write connection and starts the task. `job_queued` is notified once per
    /// job after the commit that made it visible.
    pub async fn start(store: &Store, job_queued: Arc<Notify>) -> Result<Self, StoreError> {
        let recorder = store.recorder().await?;
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        let writer = Writer {
            store: store.clone(),
            recorder: Some(recorder),
        };
        tokio::spawn(writer.run(receiver, job_queued));
        Ok(Self { sender })
    }

    /// Records the delivery and its action durably; returns once committed.
    pub async fn record(&self, delivery: NewDelivery, action: Action) -> Result<Recorded, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending {
                delivery,
                action,
                reply,
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

struct Writer {
    store: Store,
    /// `None` after the database went away, until a reconnect succeeds.
    recorder: Option<Recorder>,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Pending>, job_queued: Arc<Notify>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut reconnect_pause = Duration::from_millis(50);
        while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let started = tokio::time::Instant::now();
            let results = match self.recorder().await {
                Ok(recorder) => commit_batch(recorder, &batch).await,
                Err(error) => {
                    tracing::warn!(%error, "ingest writer cannot reach the database");
                    tokio::time::sleep(reconnect_pause).await;
                    reconnect_pause = (reconnect_pause * 2).min(MAX_RECONNECT_PAUSE);
                    batch.iter().map(|_| Err(unavailable())).collect()
                }
            };
            tracing::trace!(
                deliveries = batch.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "ingest batch committed"
            );
            if results
                .iter()
                .any(|r| matches!(r, Err(IngestError::Store(e)) if e.is_unavailable()))
            {
                // The connection may be broken for good: open a fresh one next time.
                self.recorder = None;
            } else {
                reconnect_pause = Duration::from_millis(50);
            }
            let queued = results
                .iter()
                .filter(|r| matches!(r, Ok(Recorded::Queued { .. })))
                .count();
            for (pending, result) in batch.drain(..).zip(results) {
                // A handler that gave up (client went away) no longer listens; the row stays.
                let _ = pending.reply.send(result);
            }
            // Where the database wakes every replica's workers, this one's included, it does
            // so for these jobs too.
            if !self.store.wakes_workers() {
                for _ in 0..queued {
                    job_queued.notify_one();
                }
            }
        }
        tracing::debug!("ingest writer stopped");
    }

    async fn recorder(&mut self) -> Result<&mut Recorder, StoreError> {
        if self.recorder.is_none() {
            self.recorder = Some(self.store.recorder().await?);
            tracing::info!("ingest writer connected to the database again");
        }
        Ok(self.recorder.as_mut().expect("connected above"))
    }
}

fn unavailable() -> IngestError {
    IngestError::Store(StoreError::Query(sqlx::Error::PoolTimedOut))
}

async fn commit_batch(recorder: &mut Recorder, batch: &[Pending]) -> Vec<Result<Recorded, IngestError>> {
    let items: Vec<_> = batch.iter().map(|p| (&p.delivery, &p.action)).collect();
    match recorder.record_batch(&items).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(error) if error.is_unavailable() => {
            // Nothing was committed, and nothing can be until the database is back.
            tracing::warn!(%error, deliveries = batch.len(), "ingest batch failed: database unavailable");
            items.iter().map(|_| Err(unavailable())).collect()
        }
        Err(error) => {
            // Nothing of the batch is committed. Redo it one delivery per transaction, so
            // one bad delivery cannot fail the others; each still gets its own answer.
            tracing::warn!(%error, deliveries = batch.len(), "ingest batch failed; committing its deliveries one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in &items {
                let result = recorder.record_batch(std::slice::from_ref(item)).await;
                results.push(result.map(|mut one| one.remove(0)).map_err(IngestError::Store));
            }
            results
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CommitSha, GitRef, JobId, Name};
    use crate::job::Trigger;
    use crate::store::jobs::{self, NewJob};

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery::push_for_test(id, "app")
    }

    fn deploy(delivery_id: &str, environment: &str, sha: char) -> Action {
        Action::Queue(vec![
            NewJob::deploy(
                Name::parse("app").expect("name"),
                Name::parse(environment).expect("name"),
                Trigger::Push,
                GitRef::parse("refs/heads/main").expect("ref"),
                CommitSha::parse(&sha.to_string().repeat(40)).expect("sha"),
                crate::store::now_ms(),
            )
            .from_delivery(delivery_id),
        ])
    }

    async fn writer() -> (tempfile::TempDir, Store, IngestWriter, Arc<Notify>) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("runner.db").display());
        let store = crate::store::open(&url).await.expect("database");
        let job_queued = Arc::new(Notify::new());
        let writer = IngestWriter::start(&store, Arc::clone(&job_queued))
            .await
            .expect("writer");
        (dir, store, writer, job_queued)
    }

    #[tokio::test]
    async fn deliveries_sent_together_are_each_answered_only_once_committed() {
        let (_dir, store, writer, job_queued) = writer().await;
        // Different environments, so no deploy supersedes another.
        let sent = (0..20).map(|n| {
            let writer = writer.clone();
            async move {
                let id = format!("delivery-{n}");
                let recorded = writer.record(delivery(&id), deploy(&id, &format!("env{n}"), 'a')).await;
                (id, recorded)
            }
        });
        let answers = futures_util::future::join_all(sent).await;
        for (id, recorded) in answers {
            let Ok(Recorded::Queued { job_id }) = recorded else {
                panic!("{id}: {recorded:?}");
            };
            // Answered means committed: another connection reads the delivery and its job.
            assert!(
                crate::store::deliveries::get(&store, &id)
                    .await
                    .expect("read")
                    .is_some(),
                "{id}"
            );
            let job = jobs::get(&store, JobId::new(job_id).expect("id")).await.expect("read");
            assert_eq!(job.expect("the job").state.to_string(), "queued");
        }
        // A worker that starts waiting only now is still woken: the jobs are not missed.
        tokio::time::timeout(std::time::Duration::from_secs(1), job_queued.notified())
            .await
            .expect("a wake-up for the queued jobs");
    }

    #[tokio::test]
    async fn a_delivery_sent_again_changes_nothing_and_names_its_first_job() {
        let (_dir, store, writer, _) = writer().await;
        let first = writer.record(delivery("once"), deploy("once", "production", 'b')).await;
        let Ok(Recorded::Queued { job_id }) = first else {
            panic!("{first:?}");
        };
        let again = writer.record(delivery("once"), deploy("once", "production", 'c')).await;
        assert!(
            matches!(again, Ok(Recorded::Duplicate { job_id: Some(id) }) if id == job_id),
            "{again:?}"
        );
        let next = jobs::get(&store, JobId::new(job_id + 1).expect("id"))
            .await
            .expect("read");
        assert!(next.is_none(), "a second job was queued");
    }
}
