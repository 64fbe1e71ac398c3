//! JSON API under `/api/`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::operations::{self, Revision};
use crate::domain::JobId;
use crate::job::{JobKind, JobState};
use crate::store::jobs::approval::Answer;
use crate::store::jobs::{CancelOutcome, JobFilter};
use crate::store::{self, deliveries, jobs, logs};
use crate::web::AppState;

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
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    super::dashboard::auth::api_may_read(&state, &headers).await?;
    let page = deliveries::list(&state.pool, query.before, query.limit()?).await?;
    Ok(Json(json!(page)))
}

pub async fn list_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    super::dashboard::auth::api_may_read(&state, &headers).await?;
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

pub async fn get_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    super::dashboard::auth::api_may_read(&state, &headers).await?;
    let id = parse_job_id(&id)?;
    let job = jobs::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))?;
    let steps = store::steps::list(&state.pool, id.get()).await?;
    let deployment = store::deployments::for_job(&state.pool, id.get()).await?;
    let plan_digest = match &job.plan_summary {
        Some(_) => store::artifacts::get(&state.pool, id.get(), store::artifacts::PLAN)
            .await?
            .map(|plan| plan.digest()),
        None => None,
    };
    let mut body = json!(job);
    body["steps"] = json!(steps);
    body["deployment"] = json!(deployment);
    // What an approval of the plan names (`POST /api/jobs/{id}/approve`).
    body["plan_digest"] = json!(plan_digest);
    Ok(Json(body))
}

pub async fn list_deployments(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    super::dashboard::auth::api_may_read(&state, &headers).await?;
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
    let id = parse_positive_id(&id, "deployment")?;
    let job_id = operations::rollback(&state, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "rollback_of": id })),
    ))
}

pub fn parse_positive_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadRequest(format!("{what} id must be a positive integer, got {raw:?}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A branch name (`main`) or a full ref (`refs/heads/main`), resolved to its head.
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    /// A full 40-character commit SHA, deployed as is.
    sha: Option<String>,
    /// The environment to deploy to (default: the first one the branch feeds).
    environment: Option<String>,
}

/// Deploys a branch head or a commit again (trigger `redeploy`).
pub async fn deploy_project(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&state, &headers)?;
    if state.config.project(&name).is_none() {
        return Err(ApiError::NotFound(format!("project {name:?} is not configured")));
    }
    let request: DeployRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"ref\": \"main\"}} or {{\"sha\": \"<40 hex>\"}}: {e}"
        ))
    })?;
    let target = match (request.git_ref, request.sha) {
        (_, Some(sha)) => Revision::Sha(sha),
        (Some(git_ref), None) => Revision::Ref(git_ref),
        (None, None) => return Err(ApiError::BadRequest("give \"ref\" (a branch) or \"sha\"".into())),
    };
    let (job_id, sha) = operations::redeploy(&state, &name, target, request.environment.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job_id, "sha": sha }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    from: String,
    to: String,
}

/// Puts the image live in `from` live in `to` (trigger `promote`), without rebuilding it.
pub async fn promote_project(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&state, &headers)?;
    let request: PromoteRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"from\": \"staging\", \"to\": \"production\"}}: {e}"
        ))
    })?;
    let (job_id, deployment) = operations::promote(&state, &name, &request.from, &request.to).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "promotes": deployment })),
    ))
}

/// Queues again what a stored delivery asks for.
pub async fn replay_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(delivery_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&state, &headers)?;
    let job_id = operations::replay(&state, &delivery_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "replay_of": delivery_id })),
    ))
}

/// The delivery's body exactly as GitHub sent it, with its content type, so it can be
/// inspected (and its signature checked again). Admin only: payloads name people and
/// their e-mail addresses.
pub async fn delivery_body(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(delivery_id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let delivery_id =
        crate::domain::DeliveryId::parse(&delivery_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Some((content_type, body)) = deliveries::body(&state.pool, delivery_id.as_str()).await? else {
        return Err(match deliveries::get(&state.pool, delivery_id.as_str()).await? {
            Some(_) => ApiError::Gone(format!(
                "the body of delivery {delivery_id} is no longer kept (see server.delivery_body_retention_days)"
            )),
            None => ApiError::NotFound(format!("delivery {delivery_id} does not exist")),
        });
    };
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    after: Option<i64>,
}

/// The job's log: plain text, one `timestamp line` per line; or, when the client asks
/// for `text/event-stream`, a live stream that resumes after `Last-Event-ID`.
pub async fn job_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    super::dashboard::auth::api_may_read(&state, &headers).await?;
    let id = parse_job_id(&id)?;
    if jobs::get(&state.pool, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job {id} does not exist")));
    }
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        let resume = match headers.get("last-event-id") {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .filter(|seq| *seq >= 0)
                    .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be a log line number".into()))?,
            ),
            None => None,
        };
        let after = resume.or(query.after).unwrap_or(0);
        return Ok(super::live::follow(state, id, after).into_response());
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
    Ok(out.into_response())
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

/// Whether two secrets are equal, in a time that says nothing about where they differ (the
/// comparison is `subtle`'s) nor about their lengths (it compares their digests).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}

pub async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let id = parse_job_id(&id)?;
    Ok(Json(match operations::cancel(&state, id).await? {
        CancelOutcome::Requested => json!({ "job_id": id, "state": "running", "cancel_requested": true }),
        _ => json!({ "job_id": id, "state": "cancelled" }),
    }))
}

/// `{"plan_digest": "..."}` (or `?plan_digest=`): the plan the approver read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    plan_digest: Option<String>,
}

pub async fn approve_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ApproveRequest>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let id = parse_job_id(&id)?;
    let request: ApproveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "body must be {{\"plan_digest\": \"<sha-256 of the plan>\"}}: {e}"
            ))
        })?
    };
    let plan_digest = request.plan_digest.or(query.plan_digest);
    operations::decide(
        &state,
        id,
        Answer::Approve {
            plan_digest: plan_digest.as_deref(),
        },
    )
    .await?;
    Ok(Json(json!({ "job_id": id, "approval": "approved" })))
}

pub async fn reject_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let id = parse_job_id(&id)?;
    operations::decide(&state, id, Answer::Reject).await?;
    Ok(Json(json!({ "job_id": id, "approval": "rejected" })))
}

/// The readable text of the job's terraform plan, its digest in `X-Plan-Digest` (what an
/// approval of this plan names).
pub async fn job_plan(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    super::dashboard::auth::api_may_read(&state, &headers).await?;
    let id = parse_job_id(&id)?;
    let plan = store::artifacts::get(&state.pool, id.get(), store::artifacts::PLAN)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} has no terraform plan")))?;
    let digest = plan.digest();
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (axum::http::HeaderName::from_static(PLAN_DIGEST_HEADER), digest.as_str()),
        ],
        plan.content,
    )
        .into_response())
}

/// The header of `GET /api/jobs/{id}/plan` that carries the plan's digest.
pub const PLAN_DIGEST_HEADER: &str = "x-plan-digest";

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let queued = store::jobs::queued_count(&state.pool).await?;
    Ok(Json(json!({ "status": "ok", "queued_jobs": queued })))
}
