//! Wake-ups: a worker idle for want of a claimable job is woken when one may have become
//! claimable, and a live log when its job wrote lines or changed state. With replicas
//! sharing one database the database itself sends them to every replica, this one
//! included; with one process they are calls within it, made by whoever queued the job.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Backend, Store, postgres};
use crate::domain::JobId;

impl Store {
    /// Whether the database wakes this runner's workers (and every replica's) when a job
    /// was queued or ended, and its live logs when a job wrote lines; see [`listen`]. When
    /// it does not, whoever queues a job wakes the workers, and an idle worker looks for
    /// lapsed leases often, as nobody tells it of them.
    pub fn wakes_workers(&self) -> bool {
        self.backend == Backend::Postgres
    }
}

/// Passes the database's wake-ups on to `job_queued` and `on_log` until `stop`; returns
/// at once when the database sends none (see [`Store::wakes_workers`]).
pub async fn listen(
    store: Store,
    job_queued: Arc<Notify>,
    on_log: impl Fn(JobId) + Send + 'static,
    stop: CancellationToken,
) {
    match store.backend {
        Backend::Sqlite => {}
        Backend::Postgres => postgres::notify::listen(&store.url, job_queued, on_log, stop).await,
    }
}
