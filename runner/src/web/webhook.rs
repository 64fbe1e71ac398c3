//! `POST /webhooks/github`: the runner's front door.
//!
//! Order matters: size limit, then the signature over the raw bytes, and only then any
//! parsing. Unsigned or oversized input is refused before it costs more than a hash.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::store::deliveries::{BodyDigest, NewDelivery, Recorded, StoredBody};
use crate::webhook::event;
use crate::webhook::github;
use crate::webhook::ingest::IngestError;
use crate::webhook::signature::SignatureError;

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The route's body limit (`server.max_body_bytes`) refused a body declared larger
    // before this ran; one that turned out larger was cut off while it was read.
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(state.config.server.max_body_bytes),
        _ => ApiError::BadRequest(format!("could not read the request body: {}", rejection.body_text())),
    })?;

    let signature = github::signature(&headers).map_err(|e| {
        state.metrics.signature_failures.inc();
        ApiError::Unauthorized(e.to_string())
    })?;
    let signed_by: Vec<usize> = state
        .signature_keys
        .iter()
        .enumerate()
        .filter(|(_, key)| key.verifies(&body, &signature))
        .map(|(index, _)| index)
        .collect();
    if signed_by.is_empty() {
        state.metrics.signature_failures.inc();
        return Err(ApiError::Unauthorized(SignatureError::Mismatch.to_string()));
    }
    // Only a signed delivery's headers and body are read.
    let (event, delivery_id) = github::envelope(&headers).map_err(ApiError::BadRequest)?;
    let event = event.as_str();
    let (content_type, json_text) = github::json_body(&headers, &body).map_err(ApiError::BadRequest)?;
    let parsed = github::parse(event, &json_text).map_err(|e| ApiError::BadRequest(e.to_string()))?;

    let now = state.clock.now_ms();
    let project = match &parsed.repository {
        Some(repository) => {
            let Some(index) = state
                .config
                .projects
                .iter()
                .position(|p| p.repository.key() == repository.key())
            else {
                return Err(ApiError::NotFound(format!(
                    "repository {repository} is not configured on this runner"
                )));
            };
            if !signed_by.contains(&index) {
                state.metrics.signature_failures.inc();
                return Err(ApiError::Unauthorized(format!(
                    "the signature does not match the webhook secret configured for {repository}"
                )));
            }
            &state.config.projects[index]
        }
        // Organisation- or app-level events name no repository: nothing to deploy.
        None => &state.config.projects[signed_by[0]],
    };

    let (mut action, facts) =
        event::decide(&parsed, project, delivery_id.as_str(), now).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let event::Event::Rerun(rerun) = &parsed.event
        && rerun.action.as_deref() == Some("rerequested")
    {
        action = state.operations.rerun(project, rerun, delivery_id.as_str()).await?;
    }
    let delivery = NewDelivery {
        delivery_id: delivery_id.to_string(),
        event: event.to_owned(),
        action: facts.action,
        project: Some(project.name.to_string()),
        repository: parsed.repository.as_ref().map(ToString::to_string),
        git_ref: facts.git_ref,
        sha: facts.sha,
        hook_id: facts.hook_id,
        content_type,
        body: StoredBody::compress(&body),
        body_digest: BodyDigest::of(&body),
        received_at: now,
    };
    let recorded = state.ingest.record(delivery, action).await.map_err(|e| match e {
        IngestError::Store(e) if e.is_unavailable() => ApiError::from(e),
        e => ApiError::Internal(anyhow::Error::new(e).context("recording a webhook delivery")),
    })?;
    state.metrics.deliveries.inc(event, outcome_label(&recorded));

    let delivery_id = delivery_id.as_str();
    Ok(match recorded {
        Recorded::Queued { job_id } => {
            tracing::info!(delivery_id, event, job_id, project = %project.name, "delivery queued a job");
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "delivery_id": delivery_id, "job_id": job_id })),
            )
                .into_response()
        }
        Recorded::Ignored { reason } => {
            tracing::info!(delivery_id, event, reason = %reason, "delivery ignored");
            axum::Json(json!({ "delivery_id": delivery_id, "ignored": reason })).into_response()
        }
        Recorded::Cancelled { jobs } => {
            tracing::info!(delivery_id, event, cancelled = ?jobs, "pull request closed");
            // Its preview, if it has one, goes now rather than at the keeper's next round.
            state.operations.previews_changed().notify_one();
            let reason = format!("pull request closed; cancelled {} queued verify job(s)", jobs.len());
            axum::Json(json!({ "delivery_id": delivery_id, "ignored": reason, "cancelled_jobs": jobs })).into_response()
        }
        Recorded::Duplicate { job_id } => {
            tracing::info!(delivery_id, event, "duplicate delivery");
            axum::Json(json!({ "delivery_id": delivery_id, "duplicate": true, "job_id": job_id })).into_response()
        }
    })
}

fn outcome_label(recorded: &Recorded) -> &'static str {
    match recorded {
        Recorded::Queued { .. } => "queued",
        Recorded::Ignored { .. } => "ignored",
        Recorded::Cancelled { .. } => "cancelled",
        Recorded::Duplicate { .. } => "duplicate",
    }
}
