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
            let started = std::time::Instant::now();
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
