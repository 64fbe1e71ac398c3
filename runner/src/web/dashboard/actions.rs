//! Form actions. Each one takes a [`Session`] (a logged-in admin's form, with the session's
//! CSRF token), then does what the matching API action does and sends the browser to the
//! job it queued.

use axum::extract::{Query, State};
use axum::response::Redirect;
use serde::Deserialize;

use super::auth::Session;
use super::{PageError, Path};
use crate::domain::JobId;
use crate::operations::Revision;
use crate::store::deployments;
use crate::store::jobs::approval::Answer;
use crate::web::AppState;
use crate::web::api::parse_positive_id;

pub async fn cancel(State(state): State<AppState>, Path(id): Path<JobId>, _: Session) -> Result<Redirect, PageError> {
    state.operations.cancel(id).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")))
}

/// Removes a pull request's preview; its removal shows on the previews page.
pub async fn remove_preview(
    State(state): State<AppState>,
    Path((name, number)): Path<(String, String)>,
    _: Session,
) -> Result<Redirect, PageError> {
    let number = parse_positive_id(&number, "pull request")?;
    state.operations.remove_preview(&name, number).await?;
    Ok(Redirect::to("/previews"))
}

pub async fn rollback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _: Session,
) -> Result<Redirect, PageError> {
    let id = parse_positive_id(&id, "deployment")?;
    let job = state.operations.rollback(id).await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

/// Puts a live deployment's image live in another environment of its project.
pub async fn promote(
    State(state): State<AppState>,
    Path((id, to)): Path<(String, String)>,
    _: Session,
) -> Result<Redirect, PageError> {
    let id = parse_positive_id(&id, "deployment")?;
    let deployment = deployments::get(&state.pool, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no deployment {id}.")))?;
    let (job, _) = state
        .operations
        .promote(&deployment.project, &deployment.environment, &to)
        .await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

pub async fn redeploy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _: Session,
) -> Result<Redirect, PageError> {
    let id = parse_positive_id(&id, "deployment")?;
    let deployment = deployments::get(&state.pool, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no deployment {id}.")))?;
    let (job, _) = state
        .operations
        .redeploy(
            &deployment.project,
            Revision::Sha(deployment.sha.to_string()),
            Some(deployment.environment.as_str()),
        )
        .await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

pub async fn replay(
    State(state): State<AppState>,
    Path(delivery_id): Path<String>,
    _: Session,
) -> Result<Redirect, PageError> {
    let job = state.operations.replay(&delivery_id).await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

/// The page's Approve button names the plan it showed (`?plan_digest=`).
#[derive(Deserialize)]
pub struct ApproveQuery {
    plan_digest: Option<String>,
}

pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<JobId>,
    Query(query): Query<ApproveQuery>,
    _: Session,
) -> Result<Redirect, PageError> {
    let answer = Answer::Approve {
        plan_digest: query.plan_digest.as_deref(),
    };
    state.operations.decide(id, answer).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")))
}

pub async fn reject(State(state): State<AppState>, Path(id): Path<JobId>, _: Session) -> Result<Redirect, PageError> {
    state.operations.decide(id, Answer::Reject).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")))
}
