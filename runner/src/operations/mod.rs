//! What an operator can ask of the runner: deploy a commit or branch again, roll back,
//! promote, replay a delivery, cancel a job, answer an approval; and what a forge asks on
//! a person's behalf: run a job again. The JSON API and the dashboard's forms both call
//! these (the CLI through the API), the webhook route the last; each checks its
//! preconditions, queues at most one job per environment, and wakes what must know.

mod control;
pub mod previews;
mod redeliver;
mod redeploy;
mod replay;
mod rerun;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::adapters::forge::Forges;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::JobId;
use crate::joblog::LogEvents;
use crate::pipeline::Cancellations;
use crate::pipeline::plan::JobPlan;
use crate::store::jobs::{self, NewJob};
use crate::store::{Store, StoreError};

pub use redeploy::Revision;

/// Why an operation queued or changed nothing. The messages are written for the operator
/// who asked: what is wrong and, where there is one, what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The request itself is malformed (a SHA that is not one, the same environment twice).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the runner's state does not allow it now.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(#[source] anyhow::Error),
}

/// What the operations read and whom they wake. Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct Operations {
    config: Arc<Config>,
    store: Store,
    forges: Arc<dyn Forges>,
    cancellations: Arc<Cancellations>,
    job_queued: Arc<Notify>,
    log_events: LogEvents,
    clock: Arc<dyn Clock>,
    /// Wakes the [`previews::PreviewKeeper`] when a preview is asked to go.
    previews_changed: Arc<Notify>,
}

impl Operations {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        forges: Arc<dyn Forges>,
        cancellations: Arc<Cancellations>,
        job_queued: Arc<Notify>,
        log_events: LogEvents,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            store,
            forges,
            cancellations,
            job_queued,
            log_events,
            clock,
            previews_changed: Arc::default(),
        }
    }

    /// What wakes the preview keeper: given to it at start-up.
    pub fn previews_changed(&self) -> Arc<Notify> {
        Arc::clone(&self.previews_changed)
    }

    /// Records the job as queued now and wakes a worker for it; refuses a job whose plan
    /// cannot be made (the project lacks a setting it needs), naming what to configure.
    async fn enqueue(&self, job: &NewJob) -> Result<JobId, OperationError> {
        let project = self.config.project(job.project.as_str());
        let environment = project.and_then(|p| p.environment(job.environment.as_str()));
        let (Some(project), Some(environment)) = (project, environment) else {
            return Err(OperationError::Conflict(format!(
                "{}/{} is no longer configured",
                job.project, job.environment
            )));
        };
        JobPlan::new(project, environment, job.kind, job.trigger)
            .map_err(|missing| OperationError::Conflict(missing.to_string()))?;
        let job_id = jobs::enqueue_now(&self.store, job, self.clock.now_ms()).await?;
        self.job_queued.notify_one();
        Ok(job_id)
    }
}
