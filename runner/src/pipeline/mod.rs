//! What a claimed job does, step by step. Each step talks to the outside world through
//! a boundary of its own (git, the container engine, the registry, terraform, the deploy
//! target), made by a [`Connector`] from [`crate::adapters`]; this module orders the
//! steps, records their states, and makes sure what a step creates is removed whatever
//! happens (success, failure, timeout or cancel). The unit tests give it fakes.

mod build;
mod cancel;
mod checks;
mod deliver;
mod infra;
pub mod plan;
pub mod preview;
mod retention;
mod steps;
#[cfg(test)]
pub(crate) mod tests;

pub use cancel::Cancellations;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::Store;
use tokio_util::sync::CancellationToken;

use crate::adapters::connect::Connector;
use crate::adapters::engine::{self, ContainerEngine};
use crate::adapters::terraform;
use crate::clock;
use crate::config::Project;
use crate::job::JobKind;
use crate::joblog::{self, JobLog};
use crate::store::jobs::Job;
use crate::store::steps as step_store;
use plan::{JobPlan, Step};
use steps::Steps;

/// Why a job did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("cancelled")]
    Cancelled,
    #[error("{step} {error}")]
    Step { step: Step, error: StepError },
    #[error("{0}")]
    NotConfigured(String),
}

/// How a step ended, when not well.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The whole cause, in one sentence.
    #[error("failed: {0}")]
    Failed(String),
    /// Failed, and the target put the previous version back.
    #[error("failed: {0}")]
    RolledBack(String),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

impl StepError {
    /// A failure with `error`'s whole cause chain.
    pub fn caused_by(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let words = cause.to_string();
            // Many errors already quote their cause.
            if !text.contains(&words) {
                text = format!("{text}: {words}");
            }
            source = cause.source();
        }
        Self::Failed(text)
    }
}

/// The errors of the boundaries a step talks to, as step failures with their causes.
macro_rules! step_errors_from {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for StepError {
            fn from(error: $error) -> Self {
                Self::caused_by(&error)
            }
        }
    )*};
}

step_errors_from!(
    engine::EngineError,
    terraform::TerraformError,
    crate::store::StoreError,
    crate::adapters::checkout::CheckoutError,
    crate::adapters::registry::RegistryError,
    crate::adapters::target::TargetError,
    std::io::Error,
);

impl From<String> for StepError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        Self::Failed(message.to_owned())
    }
}

/// What every job needs from the runner.
#[derive(Clone)]
pub struct PipelineContext {
    pub pool: Store,
    /// Work directories of running jobs live here; emptied at start-up.
    pub work_root: PathBuf,
    pub checkout_timeout: Duration,
    pub push_timeout: Duration,
    /// `None` when no Docker engine answered at start; jobs that need one fail saying so.
    pub engine: Option<Arc<dyn ContainerEngine>>,
    /// `[engine] untrusted_host`: where verify jobs build and run, if not on `engine`.
    /// `None` when none is configured; jobs that need it fail saying so when it is
    /// configured but did not answer (they never fall back to `engine`).
    pub untrusted_engine: Option<Result<Arc<dyn ContainerEngine>, String>>,
    /// Makes the other boundaries: checkout, registries, deploy targets, terraform.
    pub connector: Arc<dyn Connector>,
    /// What step timeouts and step times are measured with.
    pub clock: Arc<dyn clock::Clock>,
    pub http: reqwest::Client,
    /// `[engine] probe_image`: what asks a closed network's container from inside.
    pub probe_image: String,
    pub terraform_bin: Option<PathBuf>,
    /// One terraform operation at a time per project and workspace.
    pub terraform_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// How long a plan waits for a person's answer before the job fails.
    pub approval_timeout: Duration,
    /// This process's lease owner name (an approval wait renews the same lease).
    pub owner: String,
    pub log_events: joblog::LogEvents,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl PipelineContext {
    async fn terraform_lock(&self, state: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .terraform_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(state.to_owned()).or_default())
    }
}

/// Beyond the time an app gets to become healthy, what starting, inspecting and removing
/// its container may take on a loaded engine before the step is cut off.
const STEP_MARGIN: Duration = Duration::from_secs(30);

/// Runs `job` for `project`, writing its log and step states, until it ends or `cancel` fires.
pub async fn run(
    ctx: &PipelineContext,
    project: &Project,
    job: &Job,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<(), JobFailure> {
    log.system(format!(
        "{} job ({}) for {} at {} ({}), attempt {}",
        job.kind, job.trigger, project.name, job.sha, job.git_ref, job.attempts
    ));
    let Some(environment) = project.environment(job.environment.as_str()) else {
        return Err(JobFailure::NotConfigured(format!(
            "project {} has no environment {:?} any more",
            project.name, job.environment
        )));
    };
    let plan = JobPlan::new(project, environment, job.kind, job.trigger)
        .map_err(|missing| JobFailure::NotConfigured(missing.to_string()))?;
    let engine = match (job.kind, &ctx.untrusted_engine, &ctx.engine) {
        (JobKind::Verify, Some(Ok(untrusted)), _) => Arc::clone(untrusted),
        (JobKind::Verify, Some(Err(error)), _) => {
            return Err(JobFailure::NotConfigured(format!(
                "the engine for pull requests ([engine] untrusted_host) did not answer when the runner started ({error}); start it and restart the runner"
            )));
        }
        (_, _, Some(engine)) => Arc::clone(engine),
        (_, _, None) => {
            return Err(JobFailure::NotConfigured(
                "no Docker engine answered when the runner started; start it (or point [engine] host at one) and restart the runner"
                    .into(),
            ));
        }
    };
    let planned = plan.steps();
    let names: Vec<&str> = planned.iter().map(Step::name).collect();
    if let Err(error) = step_store::plan(&ctx.pool, job.id.get(), &names).await {
        // The job still runs; its page then shows no step list.
        tracing::warn!(%error, "cannot record the job's steps");
    }
    let steps = Steps { ctx, job, log, cancel };
    let result = match plan {
        JobPlan::Redeliver(delivery) => deliver::redeliver(&steps, project, environment, delivery, &engine).await,
        JobPlan::Deploy(deploy) => build::deploy(&steps, project, environment, deploy, &engine).await,
        JobPlan::Verify(verify) => build::verify(&steps, project, verify, &engine).await,
    };
    // A checkout kept for the terraform steps goes now, whatever happened.
    remove_workdir(&workdir_of(ctx, job).root, log).await;
    if let Err(error) = step_store::skip_pending(&ctx.pool, job.id.get(), ctx.clock.now_ms()).await {
        // Steps left `pending` on a finished job read as "not reached", which they were.
        tracing::warn!(%error, "cannot mark the job's remaining steps skipped");
    }
    result
}

/// A job's directories: all under one root private to the runner's user (0700), removed
/// whatever happens to the job.
pub struct JobDirs {
    pub root: PathBuf,
    /// The commit's tree.
    pub checkout: PathBuf,
    /// `HOME` and `TMPDIR` of the job's child processes, its var file and plan file:
    /// outside the checkout, so nothing in the repository can stand in for them.
    pub home: PathBuf,
}

fn workdir_of(ctx: &PipelineContext, job: &Job) -> JobDirs {
    let root = ctx.work_root.join(format!("job-{}-{}", job.id, job.attempts));
    JobDirs {
        checkout: root.join("checkout"),
        home: root.join("home"),
        root,
    }
}

/// Creates the job's private directories (0700 from the start).
async fn create_dirs(dirs: &JobDirs) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let (root, home) = (dirs.root.clone(), dirs.home.clone());
    tokio::task::spawn_blocking(move || {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(&root)?;
        builder.create(&home)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot create the job's directories: {e}"))
}

async fn remove_workdir(workdir: &std::path::Path, log: &JobLog) {
    if let Err(error) = tokio::fs::remove_dir_all(workdir).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        log.system(format!("could not remove the work directory: {error}"));
    }
}
