//! One step at a time: its timeout, the job's cancel, its recorded state and duration,
//! and its error text masked before anything keeps it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::plan::Step;
use super::{JobFailure, PipelineContext, StepError};
use crate::job::StepState;
use crate::joblog::JobLog;
use crate::store::jobs::Job;
use crate::store::steps as step_store;

pub(super) struct Steps<'a> {
    pub ctx: &'a PipelineContext,
    pub job: &'a Job,
    pub log: &'a JobLog,
    pub cancel: &'a CancellationToken,
}

impl Steps<'_> {
    pub async fn run<T>(
        &self,
        step: Step,
        timeout: Duration,
        work: impl Future<Output = Result<T, StepError>>,
    ) -> Result<T, JobFailure> {
        let name = step.name();
        let started = tokio::time::Instant::now();
        self.set_state(name, StepState::Running, None).await;
        self.log.system(format!("step {name}: started"));
        let outcome = tokio::select! {
            () = self.cancel.cancelled() => Err(JobFailure::Cancelled),
            () = self.ctx.clock.sleep(timeout) => Err(JobFailure::Step { step: step.clone(), error: StepError::TimedOut(timeout) }),
            result = work => result.map_err(|error| JobFailure::Step { step: step.clone(), error: self.masked(error) }),
        };
        let elapsed = started.elapsed();
        self.ctx.metrics.step_duration.observe(step.metric_label(), elapsed);
        let (state, error) = match &outcome {
            Ok(_) => (StepState::Succeeded, None),
            Err(JobFailure::Cancelled) => (StepState::Cancelled, Some("cancelled".to_owned())),
            Err(failure) => (StepState::Failed, Some(failure.to_string())),
        };
        self.set_state(name, state, error.as_deref()).await;
        match &outcome {
            Ok(_) => self.log.system(format!("step {name}: succeeded in {elapsed:.1?}")),
            Err(error) => self.log.system(format!("step {name}: {error} after {elapsed:.1?}")),
        }
        outcome
    }

    /// What a step says may quote its tools' output: no secret leaves in it.
    fn masked(&self, error: StepError) -> StepError {
        let mask = self.log.mask();
        match error {
            StepError::Failed(message) => StepError::Failed(mask.masked(message)),
            StepError::RolledBack(message) => StepError::RolledBack(mask.masked(message)),
            timed_out @ StepError::TimedOut(_) => timed_out,
        }
    }

    /// Records a step's state. The job's outcome does not depend on it: a write that
    /// fails (the database busy past its timeout) is logged, and the job page then shows
    /// the step's previous state.
    pub async fn set_state(&self, name: &str, state: StepState, error: Option<&str>) {
        if let Err(failure) = step_store::set_state(
            &self.ctx.pool,
            self.job.id.get(),
            name,
            state,
            error,
            self.ctx.clock.now_ms(),
        )
        .await
        {
            tracing::warn!(step = name, %state, error = %failure, "cannot record a step's state");
        }
        // A repository's step is a commit status of its own: the forge hears of each change.
        if !Step::BUILT_IN.contains(&name)
            && let Err(failure) = crate::store::reports::steps_changed(&self.ctx.pool, self.job.id.get()).await
        {
            tracing::warn!(step = name, error = %failure, "cannot mark the step's change for the forge");
        }
    }
}
