//! The ingest transaction, with group commit.
//!
//! One task owns a dedicated write connection. Handlers verify, parse and compress a
//! delivery, send it here and wait; the task takes every delivery that is waiting (up to
//! a cap) and records them all in one transaction (see `deliveries::record_batch`: three
//! round trips, one multi-row insert per table) that commits with one fsync. Only after
//! that commit does any handler get its answer, so a 2xx still means "committed"
//! (invariant 1), while the cost of the fsync is shared by every delivery that arrived
//! during the previous one.

use std::sync::Arc;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::deliveries::{self, Action, NewDelivery, Recorded};
use crate::store::{StoreError, connect_options};

/// Most deliveries committed together; bounds the time one batch holds the write lock.
const MAX_BATCH: usize = 512;

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
    pub async fn start(database_url: &str, job_queued: Arc<Notify>) -> Result<Self, StoreError> {
        let conn = SqliteConnection::connect_with(&connect_options(database_url)?).await?;
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(conn, receiver, job_queued));
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

async fn run(mut conn: SqliteConnection, mut receiver: mpsc::Receiver<Pending>, job_queued: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = std::time::Instant::now();
        let results = commit_batch(&mut conn, &batch).await;
        tracing::trace!(
            deliveries = batch.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "ingest batch committed"
        );
        let queued = results
            .iter()
            .filter(|r| matches!(r, Ok(Recorded::Queued { .. })))
            .count();
        for (pending, result) in batch.drain(..).zip(results) {
            // A handler that gave up (client went away) no longer listens; the row stays.
            let _ = pending.reply.send(result);
        }
        for _ in 0..queued {
            job_queued.notify_one();
        }
    }
    tracing::debug!("ingest writer stopped");
}

async fn commit_batch(conn: &mut SqliteConnection, batch: &[Pending]) -> Vec<Result<Recorded, IngestError>> {
    let items: Vec<_> = batch.iter().map(|p| (&p.delivery, &p.action)).collect();
    match deliveries::record_batch(conn, &items).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(error) => {
            // Nothing of the batch is committed. Redo it one delivery per transaction, so
            // one bad delivery cannot fail the others; each still gets its own answer.
            tracing::warn!(%error, deliveries = batch.len(), "ingest batch failed; committing its deliveries one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in &items {
                let result = deliveries::record_batch(conn, std::slice::from_ref(item)).await;
                results.push(result.map(|mut one| one.remove(0)).map_err(IngestError::Store));
            }
            results
        }
    }
}
