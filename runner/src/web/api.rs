//! JSON API under `/api/`.

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::auth::{AdminToken, Reader};
use super::error::ApiError;
use crate::domain::JobId;
use crate::job::{JobKind, JobState};
use crate::operations::Revision;
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

/// axum's `Path`, refused with the API's JSON error: a value that does not parse (a job id
/// that is not one) is a bad request that says why.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

pub async fn list_deliveries(
    State(state): State<AppState>,
    _: Reader,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = deliveries::list(&state.pool, query.before, query.limit()?).await?;
    let mut listed = json!(page);
    // Which forge sent each: the kind of the project it was recorded for, as configured now.
    for item in listed["items"].as_array_mut().into_iter().flatten() {
        let forge = item["project"]
            .as_str()
            .and_then(|name| state.config.project(name))
            .map(|project| project.links.kind().as_str());
        item["forge"] = json!(forge);
    }
    Ok(Json(listed))
}

pub async fn list_jobs(
    State(state): State<AppState>,
    _: Reader,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
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

pub async fn get_job(State(state): State<AppState>, _: Reader, Path(id): Path<JobId>) -> Result<Json<Value>, ApiError> {
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
    _: Reader,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = store::deployments::list(&state.pool, query.project.as_deref(), query.before, query.limit()?).await?;
    Ok(Json(json!(page)))
}

/// Every open preview, then the latest removed ones.
pub async fn list_previews(State(state): State<AppState>, _: Reader) -> Result<Json<Value>, ApiError> {
    let previews = state.operations.previews().await?;
    Ok(Json(json!({ "previews": previews })))
}

/// Removes pull request `number`'s preview of project `name` (its containers, route and
/// images go in the background).
pub async fn remove_preview(
    State(state): State<AppState>,
    _: AdminToken,
    Path((name, number)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let number = parse_positive_id(&number, "pull request")?;
    state.operations.remove_preview(&name, number).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "project": name, "pull_request": number, "state": "removing" })),
    ))
}

/// Queues a job that puts exactly this deployment's image digest live again.
pub async fn rollback_deployment(
    State(state): State<AppState>,
    _: AdminToken,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_positive_id(&id, "deployment")?;
    let job_id = state.operations.rollback(id).await?;
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
    _: AdminToken,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let (job_id, sha) = state
        .operations
        .redeploy(&name, target, request.environment.as_deref())
        .await?;
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
    _: AdminToken,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: PromoteRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"from\": \"staging\", \"to\": \"production\"}}: {e}"
        ))
    })?;
    let (job_id, deployment) = state.operations.promote(&name, &request.from, &request.to).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "promotes": deployment })),
    ))
}

/// Queues again what a stored delivery asks for.
pub async fn replay_delivery(
    State(state): State<AppState>,
    _: AdminToken,
    Path(delivery_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job_id = state.operations.replay(&delivery_id).await?;
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
    _: AdminToken,
    Path(delivery_id): Path<String>,
) -> Result<Response, ApiError> {
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
    _: Reader,
    headers: HeaderMap,
    Path(id): Path<JobId>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
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

pub async fn cancel_job(
    State(state): State<AppState>,
    _: AdminToken,
    Path(id): Path<JobId>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match state.operations.cancel(id).await? {
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
    _: AdminToken,
    Path(id): Path<JobId>,
    Query(query): Query<ApproveRequest>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
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
    state
        .operations
        .decide(
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
    _: AdminToken,
    Path(id): Path<JobId>,
) -> Result<Json<Value>, ApiError> {
    state.operations.decide(id, Answer::Reject).await?;
    Ok(Json(json!({ "job_id": id, "approval": "rejected" })))
}

/// The readable text of the job's terraform plan, its digest in `X-Plan-Digest` (what an
/// approval of this plan names).
pub async fn job_plan(State(state): State<AppState>, _: Reader, Path(id): Path<JobId>) -> Result<Response, ApiError> {
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::Path;
    use crate::domain::JobId;

    #[tokio::test]
    async fn a_job_id_that_is_not_one_is_a_bad_request_that_says_why() {
        let router = axum::Router::new().route(
            "/jobs/{id}",
            axum::routing::get(|Path(id): Path<JobId>| async move { id.to_string() }),
        );
        for (path, status, body) in [
            ("/jobs/7", StatusCode::OK, "7".to_owned()),
            (
                "/jobs/abc",
                StatusCode::BAD_REQUEST,
                r#"{"error":"job id must be a positive integer, got \"abc\""}"#.to_owned(),
            ),
            (
                "/jobs/0",
                StatusCode::BAD_REQUEST,
                r#"{"error":"job id must be a positive integer, got \"0\""}"#.to_owned(),
            ),
        ] {
            let request = Request::get(path).body(Body::empty()).expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), status, "{path}");
            let text = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            assert_eq!(String::from_utf8_lossy(&text), body, "{path}");
        }
    }
}
