//! What an operator can ask for, whether through the JSON API or a dashboard form.
//! Each operation checks its preconditions and queues at most one job.

use crate::config::{Environment, Project};
use crate::domain::{CommitSha, DeliveryId, GitRef, JobId};
use crate::job::Trigger;
use crate::store::deliveries::Action;
use crate::store::deployments::Deployment;
use crate::store::jobs::approval::Answer;
use crate::store::jobs::{self, CancelOutcome, NewJob};
use crate::store::{self, deliveries, now_ms};
use crate::web::AppState;
use crate::webhook::event;

use super::error::ApiError;

/// Queues a job that puts exactly this deployment's image digest live again.
pub async fn rollback(state: &AppState, deployment_id: i64) -> Result<JobId, ApiError> {
    let target = store::deployments::get(&state.pool, deployment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {deployment_id} does not exist")))?;
    if !matches!(target.status.as_str(), "live" | "replaced") || target.image_digest.is_none() {
        return Err(ApiError::Conflict(format!(
            "deployment {deployment_id} never went live (status {}); only a deployment that was live can be rolled back to",
            target.status
        )));
    }
    let project = state
        .config
        .project(&target.project)
        .ok_or_else(|| ApiError::Conflict(format!("project {} is no longer configured", target.project)))?;
    if !store::deployments::within_kept(&state.pool, &target, project.keep_deployments).await? {
        return Err(ApiError::Conflict(format!(
            "deployment {deployment_id}'s image is no longer kept: each environment keeps the images of its last {} deployments ([projects.retention] keep_deployments)",
            project.keep_deployments
        )));
    }
    let environment = project.environment(&target.environment).ok_or_else(|| {
        ApiError::Conflict(format!(
            "environment {} of project {} is no longer configured",
            target.environment, target.project
        ))
    })?;
    let job = redelivery(state, project, environment, &target, Trigger::Rollback).await?;
    let job_id = enqueue(state, &job).await?;
    tracing::info!(deployment = deployment_id, job_id = %job_id, "rollback queued");
    Ok(job_id)
}

/// Queues a job that puts exactly the image digest live in `from` live in `to` as well,
/// without rebuilding it (trigger `promote`).
pub async fn promote(state: &AppState, project_name: &str, from: &str, to: &str) -> Result<(JobId, i64), ApiError> {
    let project = state
        .config
        .project(project_name)
        .ok_or_else(|| ApiError::NotFound(format!("project {project_name:?} is not configured")))?;
    let environment = |name: &str| {
        project
            .environment(name)
            .ok_or_else(|| ApiError::NotFound(format!("project {project_name} has no environment {name:?}")))
    };
    let (source_environment, target_environment) = (environment(from)?, environment(to)?);
    if source_environment.name == target_environment.name {
        return Err(ApiError::BadRequest(format!(
            "promote from one environment to another: both are {from:?}"
        )));
    }
    let source = store::deployments::live(&state.pool, project.name.as_str(), from)
        .await?
        .filter(|d| d.image_digest.is_some())
        .ok_or_else(|| ApiError::Conflict(format!("nothing is live in {project_name}/{from} to promote")))?;
    let job = redelivery(state, project, target_environment, &source, Trigger::Promote).await?;
    let job_id = enqueue(state, &job).await?;
    tracing::info!(deployment = source.id, from, to, job_id = %job_id, "promotion queued");
    Ok((job_id, source.id))
}

/// A deploy job (`trigger`: rollback or promote) that puts exactly `source`'s image live in
/// `environment`, under the commit, branch and message of the job that built it.
async fn redelivery(
    state: &AppState,
    project: &Project,
    environment: &Environment,
    source: &Deployment,
    trigger: Trigger,
) -> Result<NewJob, ApiError> {
    let original = jobs::get(
        &state.pool,
        JobId::new(source.job_id).map_err(|e| ApiError::Internal(e.into()))?,
    )
    .await?;
    let git_ref = original
        .as_ref()
        .and_then(|j| GitRef::parse(&j.git_ref).ok())
        .unwrap_or_else(|| project.default_branch());
    let sha = CommitSha::parse(&source.sha).map_err(|e| ApiError::Internal(e.into()))?;
    let (message, author) = original.map_or((None, None), |j| (j.commit_message, j.commit_author));
    Ok(NewJob::redelivery(
        project.name.clone(),
        environment.name.clone(),
        trigger,
        git_ref,
        sha,
        source.id,
    )
    .described(message, author))
}

/// What to deploy again: a branch (resolved to its head now) or an exact commit.
pub enum Revision {
    Ref(String),
    Sha(String),
}

/// Deploys a branch head or a commit again (trigger `redeploy`) to `environment`; without
/// one, to the first environment the branch feeds (a bare commit: the first environment).
pub async fn redeploy(
    state: &AppState,
    project_name: &str,
    target: Revision,
    environment: Option<&str>,
) -> Result<(JobId, CommitSha), ApiError> {
    let project = state
        .config
        .project(project_name)
        .ok_or_else(|| ApiError::NotFound(format!("project {project_name:?} is not configured")))?;
    let named = environment
        .map(|name| {
            project
                .environment(name)
                .ok_or_else(|| ApiError::NotFound(format!("project {project_name} has no environment {name:?}")))
        })
        .transpose()?;
    let (git_ref, sha) = match target {
        Revision::Sha(sha) => {
            let sha = CommitSha::parse(&sha).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let branch = named.unwrap_or(project.default_environment()).default_branch().cloned();
            (branch.unwrap_or_else(|| project.default_branch()), sha)
        }
        Revision::Ref(raw) => {
            let git_ref = if raw.starts_with("refs/") {
                GitRef::parse(&raw)
            } else {
                GitRef::branch(&raw)
            }
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let sha = resolve(state, project, &git_ref)
                .await
                .map_err(|e| ApiError::Conflict(format!("cannot resolve {git_ref}: {e}")))?;
            (git_ref, sha)
        }
    };
    let environment = named
        .or_else(|| project.environments_for(&git_ref).next())
        .unwrap_or(project.default_environment());
    // Keep what a push told us about this commit, when we have seen it.
    let known = jobs::latest_for_sha(&state.pool, project.name.as_str(), sha.as_str()).await?;
    let (message, author) = known.map_or((None, None), |j| (j.commit_message, j.commit_author));
    let job = NewJob::deploy(
        project.name.clone(),
        environment.name.clone(),
        Trigger::Redeploy,
        git_ref,
        sha,
        now_ms(),
    )
    .described(message, author);
    let job_id = enqueue(state, &job).await?;
    Ok((job_id, job.sha))
}

/// The commit `git_ref` points at now. A branch's is asked of the project's forge (an API
/// call) when the project has one and clones from it; a tag, a project that clones from a
/// `clone_url` of its own (which the checkout then reads), and a forge that does not
/// answer are asked of the repository itself (`git ls-remote`).
async fn resolve(state: &AppState, project: &Project, git_ref: &GitRef) -> Result<CommitSha, String> {
    if let Some(branch) = git_ref.as_str().strip_prefix("refs/heads/")
        && project.clone_url.is_none()
        && let Some(Ok(forge)) = state.forges.connect(project).await
    {
        match forge.branch_head(branch).await {
            Ok(head) => return CommitSha::parse(&head).map_err(|e| e.to_string()),
            Err(error) => {
                tracing::info!(%error, %git_ref, "the forge did not name the branch's head; asking the repository");
            }
        }
    }
    let url = crate::adapters::checkout::clone_url(project);
    crate::adapters::checkout::resolve_ref(&url, git_ref)
        .await
        .map_err(|e| e.to_string())
}

/// Queues again what a stored delivery asks for, decided under today's configuration
/// (trigger `replay`).
pub async fn replay(state: &AppState, delivery_id: &str) -> Result<JobId, ApiError> {
    let delivery_id = DeliveryId::parse(delivery_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let delivery = deliveries::get(&state.pool, delivery_id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("delivery {delivery_id} does not exist")))?;
    let (content_type, body) = deliveries::body(&state.pool, delivery_id.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "the body of delivery {delivery_id} is no longer kept (see server.delivery_body_retention_days)"
            ))
        })?;
    let json_text = if content_type == "application/x-www-form-urlencoded" {
        crate::webhook::github::form_payload(&body)
            .map_err(ApiError::BadRequest)?
            .into_bytes()
    } else {
        body
    };
    let parsed = crate::webhook::github::parse(&delivery.event, &json_text)
        .map_err(|e| ApiError::Conflict(format!("stored body: {e}")))?;
    let project = parsed
        .repository
        .as_ref()
        .and_then(|r| state.config.project_by_repository(r))
        .ok_or_else(|| ApiError::Conflict(format!("delivery {delivery_id} names no configured repository")))?;
    let now = now_ms();
    let (action, _) = event::decide(&parsed, project, delivery_id.as_str(), now)
        .map_err(|e| ApiError::Conflict(format!("stored body: {e}")))?;
    let queued = match action {
        Action::Queue(jobs) if !jobs.is_empty() => jobs,
        _ => {
            return Err(ApiError::Conflict(format!(
                "delivery {delivery_id} ({} event) queues nothing under the current configuration",
                delivery.event
            )));
        }
    };
    // One job per environment the delivery feeds; the answer names the first.
    let mut first = None;
    for mut job in queued {
        job.trigger = Trigger::Replay;
        job.ordering_key = now;
        let job_id = enqueue(state, &job).await?;
        tracing::info!(delivery_id = %delivery_id, job_id = %job_id, environment = %job.environment, "delivery replayed");
        first.get_or_insert(job_id);
    }
    first.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a replay queued no job")))
}

pub async fn cancel(state: &AppState, id: JobId) -> Result<CancelOutcome, ApiError> {
    let outcome = jobs::cancel(&state.pool, id, now_ms()).await?;
    match outcome {
        CancelOutcome::NotFound => Err(ApiError::NotFound(format!("job {id} does not exist"))),
        CancelOutcome::AlreadyFinished => Err(ApiError::Conflict(format!("job {id} has already finished"))),
        CancelOutcome::Cancelled => {
            // A job waiting for approval is held by a worker, which stops waiting now.
            state.cancellations.cancel(id);
            state.log_events.stored(id);
            Ok(outcome)
        }
        CancelOutcome::Requested => {
            state.cancellations.cancel(id);
            Ok(outcome)
        }
    }
}

async fn enqueue(state: &AppState, job: &NewJob) -> Result<JobId, ApiError> {
    let job_id = jobs::enqueue_now(&state.pool, job, now_ms()).await?;
    state.job_queued.notify_one();
    Ok(job_id)
}

/// Approves or rejects what a job waits for: running at all (a fork's pull request), or
/// applying its plan. Approving a plan takes the digest of the plan the approver read.
pub async fn decide(state: &AppState, id: JobId, answer: Answer<'_>) -> Result<(), ApiError> {
    use crate::store::jobs::approval::{self, Decision};
    let approved = matches!(answer, Answer::Approve { .. });
    match approval::decide(&state.pool, id, answer, now_ms()).await? {
        Decision::Released => {
            tracing::info!(job_id = %id, approved, "held pull request job answered");
            if approved {
                state.job_queued.notify_one();
            }
            state.log_events.stored(id);
            Ok(())
        }
        Decision::Recorded => {
            tracing::info!(job_id = %id, approved, "plan decision recorded");
            state.log_events.stored(id);
            Ok(())
        }
        Decision::NotWaiting => Err(ApiError::Conflict(format!(
            "job {id} is not waiting for approval (or was already answered)"
        ))),
        Decision::NotFound => Err(ApiError::NotFound(format!("job {id} does not exist"))),
        Decision::PlanDigestMissing => Err(ApiError::BadRequest(format!(
            "plan_digest is required to approve job {id}'s plan: send the plan_digest of the plan you read \
             (GET /api/jobs/{id} shows it, GET /api/jobs/{id}/plan sends it as X-Plan-Digest)"
        ))),
        Decision::PlanChanged => {
            tracing::warn!(job_id = %id, "approval of a plan that was planned again since it was read");
            Err(ApiError::Conflict("the plan changed, read it again".into()))
        }
        Decision::NoPlan => Err(ApiError::Conflict(format!(
            "job {id} waits on a plan whose text was not kept, so nobody can have read it: reject or cancel it"
        ))),
    }
}
