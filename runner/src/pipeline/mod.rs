//! What a claimed job does, step by step. Each step talks to the outside world through
//! a small boundary of its own; this module only orders them and reports.

pub mod checkout;
pub mod joblog;

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Project;
use crate::job::JobKind;
use crate::store::jobs::Job;
use checkout::{Checkout, GitCheckout};
use joblog::JobLog;

/// Why a job did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("cancelled")]
    Cancelled,
    #[error("{step} failed: {message}")]
    Step { step: &'static str, message: String },
    #[error("{step} timed out after {after:?}")]
    Timeout { step: &'static str, after: Duration },
    #[error("{0}")]
    NotConfigured(String),
}

/// What every job needs from the runner.
#[derive(Clone)]
pub struct PipelineContext {
    /// Work directories of running jobs live here; emptied at start-up.
    pub work_root: PathBuf,
    pub checkout_timeout: Duration,
}

/// Runs `job` for `project`, writing its log, until it ends or `cancel` fires.
pub async fn run(
    ctx: &PipelineContext,
    project: &Project,
    job: &Job,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<(), JobFailure> {
    log.system(format!(
        "{} job for {} at {} ({}), attempt {}",
        job.kind, project.name, job.sha, job.git_ref, job.attempts
    ));
    let workdir = ctx
        .work_root
        .join(format!("job-{}-{}", job.id, job.attempts));
    let checkout = GitCheckout::new(clone_url(project));
    let result = step(
        log,
        cancel,
        "checkout",
        ctx.checkout_timeout,
        checkout.fetch(job, &workdir, log),
    )
    .await;
    // The work directory goes whatever happened (also on cancel or timeout).
    if let Err(error) = tokio::fs::remove_dir_all(&workdir).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        log.system(format!("could not remove the work directory: {error}"));
    }
    result?;

    let missing = match job.kind {
        JobKind::Deploy => {
            "build (image, dockerfile, context), smoke check, registry and rollout target"
        }
        JobKind::Verify => "build (image, dockerfile, context) and smoke check",
    };
    Err(JobFailure::NotConfigured(format!(
        "project {} has no pipeline settings after checkout: configure its {missing} to {} it",
        project.name,
        match job.kind {
            JobKind::Deploy => "deploy",
            JobKind::Verify => "verify",
        }
    )))
}

fn clone_url(project: &Project) -> String {
    project
        .clone_url
        .clone()
        .unwrap_or_else(|| format!("https://github.com/{}.git", project.repository))
}

/// Runs one step with its timeout and the job's cancellation, logging start and end.
async fn step<T>(
    log: &JobLog,
    cancel: &CancellationToken,
    name: &'static str,
    timeout: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, JobFailure> {
    let started = std::time::Instant::now();
    log.system(format!("step {name}: started"));
    let outcome = tokio::select! {
        () = cancel.cancelled() => Err(JobFailure::Cancelled),
        result = tokio::time::timeout(timeout, work) => match result {
            Err(_) => Err(JobFailure::Timeout { step: name, after: timeout }),
            Ok(Err(message)) => Err(JobFailure::Step { step: name, message }),
            Ok(Ok(value)) => Ok(value),
        },
    };
    let elapsed = started.elapsed();
    match &outcome {
        Ok(_) => log.system(format!("step {name}: succeeded in {elapsed:.1?}")),
        Err(error) => log.system(format!("step {name}: {error} after {elapsed:.1?}")),
    }
    outcome
}
