//! JSON API under `/api/`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use axum::http::StatusCode;

use crate::domain::{CommitSha, GitRef, JobId};
use crate::job::{JobKind, JobState, Trigger};
use crate::startup::AppState;
use crate::store::jobs::NewJob;
use crate::store::jobs::{CancelOutcome, JobFilter};
use crate::store::{self, deliveries, jobs, logs, now_ms};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    before: Option<i64>,
    limit: Option<usize>,
    project: Option<String>,
    state: Option<String>,
    kind: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(limit @ 1..=MAX_PAGE) => Ok(limit),
            Some(other) => Err(ApiError::BadRequest(format!("limit must be 1-{MAX_PAGE}, got {other}"))),
        }
    }
}

fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|e: crate::domain::ParseError| ApiError::BadRequest(e.to_string()))
}

pub async fn list_deliveries(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = deliveries::list(&state.pool, query.before, query.limit()?).await?;
    Ok(Json(json!(page)))
}

pub async fn list_jobs(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Result<Json<Value>, ApiError> {
    let filter = JobFilter {
        project: query.project.clone(),
        state: query
            .state
            .as_deref()
            .map(|s| JobState::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown state {s:?}"))))
            .transpose()?,
        kind: query
            .kind
            .as_deref()
            .map(|k| JobKind::parse(k).ok_or_else(|| ApiError::BadRequest(format!("unknown kind {k:?}"))))
            .transpose()?,
    };
    let page = jobs::list(&state.pool, &filter, query.before, query.limit()?).await?;
    Ok(Json(json!(page)))
}

pub async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_job_id(&id)?;
    let job = jobs::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))?;
    let steps = store::steps::list(&state.pool, id.get()).await?;
    let deployment = store::deployments::for_job(&state.pool, id.get()).await?;
    let mut body = json!(job);
    body["steps"] = json!(steps);
    body["deployment"] = json!(deployment);
    Ok(Json(body))
}

pub async fn list_deployments(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = store::deployments::list(&state.pool, query.project.as_deref(), query.before, query.limit()?).await?;
    Ok(Json(json!(page)))
}

/// Queues a job that puts exactly this deployment's image digest live again.
pub async fn rollback_deployment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&state, &headers)?;
    let id: i64 = id
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadRequest(format!("deployment id must be a positive integer, got {id:?}")))?;
    let target = store::deployments::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id} does not exist")))?;
    if target.status != "live" || target.image_digest.is_none() {
        return Err(ApiError::Conflict(format!(
            "deployment {id} never went live (status {}); only a deployment that was live can be rolled back to",
            target.status
        )));
    }
    let project = state
        .config
        .project(&target.project)
        .ok_or_else(|| ApiError::Conflict(format!("project {} is no longer configured", target.project)))?;
    let original = jobs::get(
        &state.pool,
        JobId::new(target.job_id).map_err(|e| ApiError::Internal(e.into()))?,
    )
    .await?;
    let job = NewJob {
        project: project.name.clone(),
        environment: project.environment.clone(),
        kind: JobKind::Deploy,
        trigger: Trigger::Rollback,
        git_ref: original
            .as_ref()
            .and_then(|j| GitRef::parse(&j.git_ref).ok())
            .unwrap_or_else(|| project.deploy_branches[0].clone()),
        sha: CommitSha::parse(&target.sha).map_err(|e| ApiError::Internal(e.into()))?,
        pull_request: None,
        delivery_id: None,
        commit_message: original.as_ref().and_then(|j| j.commit_message.clone()),
        commit_author: original.and_then(|j| j.commit_author),
        ordering_key: now_ms(),
        rollback_of: Some(id),
    };
    let job_id = jobs::enqueue_now(&state.pool, &job, now_ms()).await?;
    state.job_queued.notify_one();
    tracing::info!(deployment = id, job_id = %job_id, "rollback queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "rollback_of": id })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A branch name (`main`) or a full ref (`refs/heads/main`), resolved to its head.
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    /// A full 40-character commit SHA, deployed as is.
    sha: Option<String>,
}

/// Deploys a branch head or a commit again (trigger `redeploy`).
pub async fn deploy_project(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&state, &headers)?;
    let project = state
        .config
        .project(&name)
        .ok_or_else(|| ApiError::NotFound(format!("project {name:?} is not configured")))?;
    let request: DeployRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"ref\": \"main\"}} or {{\"sha\": \"<40 hex>\"}}: {e}"
        ))
    })?;
    let (git_ref, sha) = match (request.git_ref, request.sha) {
        (_, Some(sha)) => {
            let sha = CommitSha::parse(&sha).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            (project.deploy_branches[0].clone(), sha)
        }
        (Some(raw), None) => {
            let git_ref = if raw.starts_with("refs/") {
                GitRef::parse(&raw)
            } else {
                GitRef::branch(&raw)
            }
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let url = project
                .clone_url
                .clone()
                .unwrap_or_else(|| format!("https://github.com/{}.git", project.repository));
            let sha = crate::pipeline::checkout::resolve_ref(&url, &git_ref)
                .await
                .map_err(|e| ApiError::Conflict(format!("cannot resolve {git_ref}: {e}")))?;
            (git_ref, sha)
        }
        (None, None) => {
            return Err(ApiError::BadRequest("give \"ref\" (a branch) or \"sha\"".into()));
        }
    };
    let job = NewJob {
        project: project.name.clone(),
        environment: project.environment.clone(),
        kind: JobKind::Deploy,
        trigger: Trigger::Redeploy,
        git_ref,
        sha,
        pull_request: None,
        delivery_id: None,
        commit_message: None,
        commit_author: None,
        ordering_key: now_ms(),
        rollback_of: None,
    };
    let job_id = jobs::enqueue_now(&state.pool, &job, now_ms()).await?;
    state.job_queued.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job_id, "sha": job.sha }))))
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    after: Option<i64>,
}

/// The job's log as plain text, one `timestamp stream line` per line.
pub async fn job_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<String, ApiError> {
    let id = parse_job_id(&id)?;
    if jobs::get(&state.pool, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job {id} does not exist")));
    }
    let mut out = String::new();
    let mut after = query.after.unwrap_or(0);
    loop {
        let lines = logs::read(&state.pool, id, after, 5_000).await?;
        let Some(last) = lines.last() else { break };
        after = last.seq;
        for line in &lines {
            out.push_str(&crate::telemetry::format_ms(line.at));
            out.push(' ');
            out.push_str(&line.line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Checks `Authorization: Bearer <admin token>` in constant time.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.config.admin_token else {
        return Err(ApiError::Unauthorized(
            "actions are disabled: set RUNNER_ADMIN_TOKEN to enable them".into(),
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <admin token>".into()))?;
    if constant_time_eq(presented.as_bytes(), expected.expose_secret().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong admin token".into()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    // Comparing digests keeps the time independent of where the inputs differ and of their lengths.
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.iter().zip(b.iter()).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let id = parse_job_id(&id)?;
    match jobs::cancel(&state.pool, id, now_ms()).await? {
        CancelOutcome::NotFound => Err(ApiError::NotFound(format!("job {id} does not exist"))),
        CancelOutcome::AlreadyFinished => Err(ApiError::Conflict(format!("job {id} has already finished"))),
        CancelOutcome::Cancelled => Ok(Json(json!({ "job_id": id, "state": "cancelled" }))),
        CancelOutcome::Requested => {
            state.cancellations.cancel(id);
            Ok(Json(
                json!({ "job_id": id, "state": "running", "cancel_requested": true }),
            ))
        }
    }
}

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let queued = store::jobs::queued_count(&state.pool).await?;
    Ok(Json(json!({ "status": "ok", "queued_jobs": queued })))
}
