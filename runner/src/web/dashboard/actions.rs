//! Form actions. Each one needs a logged-in session and its CSRF token, then does what
//! the matching API action does and sends the browser to the job it queued.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Redirect;
use serde::Deserialize;

use super::PageError;
use super::auth::{CsrfForm, Viewer};
use crate::store::deployments;
use crate::store::jobs::approval::Answer;
use crate::web::AppState;
use crate::web::api::parse_positive_id;
use crate::web::operations::{self, Revision};

pub async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    viewer.authorize(&headers, form.csrf.as_deref())?;
    let id = super::job_id(&id)?;
    operations::cancel(&state, id).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")))
}

pub async fn rollback(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    viewer.authorize(&headers, form.csrf.as_deref())?;
    let id = parse_positive_id(&id, "deployment")?;
    let job = operations::rollback(&state, id).await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

/// Puts a live deployment's image live in another environment of its project.
pub async fn promote(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path((id, to)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    viewer.authorize(&headers, form.csrf.as_deref())?;
    let id = parse_positive_id(&id, "deployment")?;
    let deployment = deployments::get(&state.pool, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no deployment {id}.")))?;
    let (job, _) = operations::promote(&state, &deployment.project, &deployment.environment, &to).await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

pub async fn redeploy(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    viewer.authorize(&headers, form.csrf.as_deref())?;
    let id = parse_positive_id(&id, "deployment")?;
    let deployment = deployments::get(&state.pool, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no deployment {id}.")))?;
    let (job, _) = operations::redeploy(
        &state,
        &deployment.project,
        Revision::Sha(deployment.sha.to_string()),
        Some(deployment.environment.as_str()),
    )
    .await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

pub async fn replay(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(delivery_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    viewer.authorize(&headers, form.csrf.as_deref())?;
    let job = operations::replay(&state, &delivery_id).await?;
    Ok(Redirect::to(&format!("/jobs/{job}")))
}

async fn decide(
    state: &AppState,
    viewer: &Viewer,
    headers: &HeaderMap,
    id: &str,
    csrf: Option<&str>,
    answer: Answer<'_>,
) -> Result<Redirect, PageError> {
    viewer.authorize(headers, csrf)?;
    let id = super::job_id(id)?;
    operations::decide(state, id, answer).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")))
}

/// The page's Approve button names the plan it showed (`?plan_digest=`).
#[derive(Deserialize)]
pub struct ApproveQuery {
    plan_digest: Option<String>,
}

pub async fn approve(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ApproveQuery>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    let answer = Answer::Approve {
        plan_digest: query.plan_digest.as_deref(),
    };
    decide(&state, &viewer, &headers, &id, form.csrf.as_deref(), answer).await
}

pub async fn reject(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    decide(&state, &viewer, &headers, &id, form.csrf.as_deref(), Answer::Reject).await
}
