//! From a pushed image to live, whatever the target: the terraform steps if the project
//! has them, the deployment recorded once, the target asked to go live, and the outcome
//! recorded (`live`, `failed`, or `rolled_back` when the target put the previous version
//! back). A rollback job is the same delivery of an earlier deployment's image.

use std::sync::Arc;
use std::time::Duration;

use super::plan::{Delivery, Step};
use super::steps::Steps;
use super::{JobDirs, JobFailure, STEP_MARGIN, StepError, create_dirs, infra, workdir_of};
use crate::adapters::engine::ContainerEngine;
use crate::adapters::target::Release;
use crate::config::{Environment, Project};
use crate::job::DeploymentStatus;
use crate::store::deployments::{self, NewDeployment};

/// An image in the registry, ready to go live.
pub(super) struct Pushed {
    /// Where it was pushed: `host[:port][/path]/<image>`.
    pub repository: String,
    /// Its tag: the commit it was built from.
    pub sha: String,
    pub digest: String,
}

impl Pushed {
    /// `<repository>:<sha>`: what people read.
    fn image_ref(&self) -> String {
        format!("{}:{}", self.repository, self.sha)
    }

    /// `<repository>@<digest>`: what runs, so a moved tag cannot change it.
    fn run_ref(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

pub(super) async fn deliver(
    steps: &Steps<'_>,
    project: &Project,
    environment: &Environment,
    plan: Delivery<'_>,
    engine: &Arc<dyn ContainerEngine>,
    dirs: &JobDirs,
    pushed: &Pushed,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let target = ctx
        .connector
        .target(project, environment, plan.target, Arc::clone(engine))
        .await
        .map_err(|error| JobFailure::NotConfigured(error.to_string()))?;
    // What runs before terraform touches it: what a failed rollout goes back to.
    let previous = match plan.terraform {
        Some(_) => target.current(log).await,
        None => None,
    };
    let outputs = match plan.terraform {
        Some(terraform) => {
            infra::run(steps, project, terraform, dirs, &pushed.run_ref(), false)
                .await?
                .outputs
        }
        None => None,
    };
    let url = target.url(outputs.as_ref());
    let deployment = deployments::start(
        &ctx.pool,
        &NewDeployment {
            job_id: job.id.get(),
            project: project.name.as_str(),
            environment: environment.name.as_str(),
            sha: &job.sha,
            image_ref: &pushed.image_ref(),
            image_digest: Some(&pushed.digest),
            trigger: job.trigger,
            url: &url,
        },
        ctx.clock.now_ms(),
    )
    .await
    .map_err(|e| JobFailure::Step {
        step: Step::Rollout,
        error: StepError::Failed(format!("cannot record the deployment: {e}")),
    })?;
    if let Some(replaced) = deployment.replaced_id {
        log.system(format!("deployment {} replaces deployment {replaced}", deployment.id));
    }
    if let Some(outputs) = &outputs
        && let Err(error) = deployments::set_outputs(&ctx.pool, deployment.id, outputs).await
    {
        // The outputs are shown on the deployment's page; the deploy goes on without them.
        log.system(format!("could not keep terraform's outputs on the deployment: {error}"));
    }

    let release = Release {
        job_id: job.id.get(),
        deployment_id: deployment.id,
        sha: &job.sha,
        image: &pushed.run_ref(),
        previous,
        replaces: deployment.replaced_id,
    };
    let result = steps
        .run(Step::Rollout, target.timeout() + STEP_MARGIN, async {
            target.go_live(&release, log).await.map_err(|error| {
                if error.rolled_back {
                    StepError::RolledBack(error.message)
                } else {
                    StepError::Failed(error.message)
                }
            })
        })
        .await;
    target.clean_up(&release, log).await;

    if let Err(failure) = result {
        let status = match &failure {
            JobFailure::Step {
                error: StepError::RolledBack(_),
                ..
            } => DeploymentStatus::RolledBack,
            _ => DeploymentStatus::Failed,
        };
        record_failure(steps, deployment.id, status, &failure).await;
        return Err(failure);
    }
    // The release serves. If this write fails the job fails saying so, and the
    // deployment's row stays `in_progress` rather than claiming an end it did not record.
    steps
        .run(Step::Record, Duration::from_secs(30), async {
            Ok(deployments::finish(
                &ctx.pool,
                deployment.id,
                DeploymentStatus::Live,
                None,
                ctx.clock.now_ms(),
            )
            .await?)
        })
        .await?;
    log.system(format!("deployment {} is live at {url}", deployment.id));
    // What it replaced goes only now: a crash before this line leaves both, and the
    // runner's record says which one serves.
    target.retire(&release, log).await;
    super::retention::prune(ctx, project, engine, &pushed.repository, log).await;
    Ok(())
}

/// Ends the deployment's row with the failure. If even that write fails, the row stays
/// `in_progress` and the job's end (recorded by the worker) still says what happened.
async fn record_failure(steps: &Steps<'_>, deployment_id: i64, status: DeploymentStatus, failure: &JobFailure) {
    let message = steps.log.mask().masked(failure.to_string());
    if let Err(error) = deployments::finish(
        &steps.ctx.pool,
        deployment_id,
        status,
        Some(&message),
        steps.ctx.clock.now_ms(),
    )
    .await
    {
        steps.log.system(format!(
            "could not record deployment {deployment_id} as {status}: {error}"
        ));
    }
}

/// Puts an earlier deployment's image live: again in its own environment (a rollback),
/// or in another one (a promotion). Nothing is rebuilt: the digest is the same.
pub(super) async fn redeliver(
    steps: &Steps<'_>,
    project: &Project,
    environment: &Environment,
    plan: Delivery<'_>,
    engine: &Arc<dyn ContainerEngine>,
) -> Result<(), JobFailure> {
    let (ctx, job) = (steps.ctx, steps.job);
    let target = match job.rollback_of {
        Some(id) => deployments::get(&ctx.pool, id).await.map_err(|e| JobFailure::Step {
            step: Step::Rollout,
            error: StepError::Failed(format!("cannot read deployment {id}: {e}")),
        })?,
        None => None,
    };
    let Some(target) = target else {
        return Err(JobFailure::NotConfigured(format!(
            "{} job {} names no deployment that exists",
            job.trigger, job.id
        )));
    };
    let Some(digest) = target.image_digest.clone() else {
        return Err(JobFailure::NotConfigured(format!(
            "deployment {} has no pushed image digest",
            target.id
        )));
    };
    if target.project.as_str() != project.name.as_str() {
        return Err(JobFailure::NotConfigured(format!(
            "deployment {} belongs to project {}, not {}",
            target.id, target.project, project.name
        )));
    }
    steps.log.system(if target.environment == environment.name {
        format!(
            "rolling back to deployment {} ({} at {})",
            target.id, target.image_ref, digest
        )
    } else {
        format!(
            "promoting deployment {} of {} ({} at {}) to {}",
            target.id, target.environment, target.image_ref, digest, environment.name
        )
    });
    let dirs = workdir_of(ctx, job);
    if plan.terraform.is_some() {
        let checkout = ctx.connector.checkout(project, &dirs.home);
        steps
            .run(Step::Checkout, ctx.checkout_timeout, async {
                create_dirs(&dirs).await?;
                Ok(checkout.fetch(job, &dirs.checkout, steps.log).await?)
            })
            .await?;
    }
    let pushed = Pushed {
        repository: target.repository().to_owned(),
        sha: target.sha.to_string(),
        digest,
    };
    deliver(steps, project, environment, plan, engine, &dirs, &pushed).await
}
