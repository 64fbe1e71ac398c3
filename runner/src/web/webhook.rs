//! `POST /webhooks/github`, `/webhooks/gitea` (Gitea and Forgejo) and `/webhooks/gitlab`:
//! the runner's front doors.
//!
//! Order matters: size limit, then the signature over the raw bytes (GitLab's token), and
//! only then any parsing. Unsigned or oversized input is refused before it costs more than
//! a hash. A route finds only projects on its own forge.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::config::ForgeKind;
use crate::domain::DeliveryId;
use crate::store::deliveries::{BodyDigest, NewDelivery, Recorded, StoredBody};
use crate::webhook::event::{self, Incoming};
use crate::webhook::ingest::IngestError;
use crate::webhook::signature::{GITHUB_SIGNATURE_HEADER, SignatureError};
use crate::webhook::{gitea, github, gitlab};

/// A delivery whose origin is proven, read into the runner's terms.
struct Verified {
    /// The projects whose secret proves it, by their index in `config.projects`.
    signed_by: Vec<usize>,
    /// The event as recorded on the delivery (`push`, `pull_request`, `merge_request`).
    event: String,
    delivery_id: DeliveryId,
    content_type: String,
    parsed: Incoming,
}

/// `POST /webhooks/github`.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let verified = verify_github(&state, &headers, &body)?;
    record(&state, &[ForgeKind::GitHub], verified, &body).await
}

/// `POST /webhooks/gitea`: Gitea's and Forgejo's deliveries.
pub async fn receive_gitea(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    const KINDS: &[ForgeKind] = &[ForgeKind::Gitea, ForgeKind::Forgejo];
    let body = read_body(&state, body)?;
    // Classified by Forgejo's or Gitea's own headers, whatever GitHub-looking ones it
    // also carries: this route reads only Gitea's format.
    let names = gitea::headers_of(&headers);
    let signature = gitea::signature(&headers, names).map_err(|e| unauthorized(&state, e.to_string()))?;
    let signed_by = signers(&state, KINDS, |index| {
        state.signature_keys[index].verifies(&body, &signature)
    });
    if signed_by.is_empty() {
        return Err(unauthorized(
            &state,
            SignatureError::Mismatch(names.signature).to_string(),
        ));
    }
    let (event, delivery_id) = gitea::envelope(&headers, names).map_err(ApiError::BadRequest)?;
    let (content_type, json_text) = json_only(&headers, &body, names.forge)?;
    let parsed = gitea::parse(&event, &json_text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let verified = Verified {
        signed_by,
        event,
        delivery_id,
        content_type,
        parsed,
    };
    record(&state, KINDS, verified, &body).await
}

/// `POST /webhooks/gitlab`.
pub async fn receive_gitlab(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    const KINDS: &[ForgeKind] = &[ForgeKind::GitLab];
    let body = read_body(&state, body)?;
    let token = headers
        .get(gitlab::TOKEN_HEADER)
        .ok_or_else(|| unauthorized(&state, SignatureError::Missing(gitlab::TOKEN_HEADER).to_string()))?;
    let signed_by = signers(&state, KINDS, |index| {
        state.secret_tokens[index].matches(token.as_bytes())
    });
    if signed_by.is_empty() {
        return Err(unauthorized(
            &state,
            format!("{} matches no configured webhook secret", gitlab::TOKEN_HEADER),
        ));
    }
    let (header_event, delivery_id) = gitlab::envelope(&headers).map_err(ApiError::BadRequest)?;
    let (content_type, json_text) = json_only(&headers, &body, "GitLab")?;
    let parsed = gitlab::parse(&header_event, &json_text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let verified = Verified {
        signed_by,
        event: gitlab::event_name(&header_event),
        delivery_id,
        content_type,
        parsed,
    };
    record(&state, KINDS, verified, &body).await
}

/// The body, or why it could not be read.
fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    // The route's body limit (`server.max_body_bytes`) refused a body declared larger
    // before this ran; one that turned out larger was cut off while it was read.
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(state.config.server.max_body_bytes),
        _ => ApiError::BadRequest(format!("could not read the request body: {}", rejection.body_text())),
    })
}

fn unauthorized(state: &AppState, message: String) -> ApiError {
    state.metrics.signature_failures.inc();
    ApiError::Unauthorized(message)
}

/// The projects on a forge of `kinds` whose secret `proves` the delivery.
fn signers(state: &AppState, kinds: &[ForgeKind], proves: impl Fn(usize) -> bool) -> Vec<usize> {
    state
        .config
        .projects
        .iter()
        .enumerate()
        .filter(|(index, project)| kinds.contains(&project.links.kind()) && proves(*index))
        .map(|(index, _)| index)
        .collect()
}

fn verify_github(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Verified, ApiError> {
    let signature = github::signature(headers).map_err(|e| unauthorized(state, e.to_string()))?;
    let signed_by = signers(state, &[ForgeKind::GitHub], |index| {
        state.signature_keys[index].verifies(body, &signature)
    });
    if signed_by.is_empty() {
        return Err(unauthorized(
            state,
            SignatureError::Mismatch(GITHUB_SIGNATURE_HEADER).to_string(),
        ));
    }
    // Only a signed delivery's headers and body are read.
    let (event, delivery_id) = github::envelope(headers).map_err(ApiError::BadRequest)?;
    let (content_type, json_text) = github::json_body(headers, body).map_err(ApiError::BadRequest)?;
    let parsed = github::parse(&event, &json_text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Verified {
        signed_by,
        event,
        delivery_id,
        content_type,
        parsed,
    })
}

/// Gitea, Forgejo and GitLab send JSON only.
fn json_only(headers: &HeaderMap, body: &Bytes, forge: &str) -> Result<(String, Bytes), ApiError> {
    let (content_type, json_text) = github::json_body(headers, body).map_err(ApiError::BadRequest)?;
    if content_type != "application/json" {
        return Err(ApiError::BadRequest(format!(
            "unsupported Content-Type {content_type:?}; {forge} sends application/json"
        )));
    }
    Ok((content_type, json_text))
}

/// Finds the delivery's project among those on a forge of `kinds`, decides what it
/// triggers, and records both in one transaction.
async fn record(state: &AppState, kinds: &[ForgeKind], verified: Verified, body: &Bytes) -> Result<Response, ApiError> {
    let Verified {
        signed_by,
        event,
        delivery_id,
        content_type,
        parsed,
    } = verified;
    let event = event.as_str();
    let now = state.clock.now_ms();
    let project = match &parsed.repository {
        Some(repository) => {
            let Some(index) = state
                .config
                .projects
                .iter()
                .position(|p| kinds.contains(&p.links.kind()) && p.repository.key() == repository.key())
            else {
                return Err(ApiError::NotFound(format!(
                    "repository {repository} is not configured on this runner for {}",
                    kinds[0]
                )));
            };
            if !signed_by.contains(&index) {
                return Err(unauthorized(
                    state,
                    format!("the signature does not match the webhook secret configured for {repository}"),
                ));
            }
            &state.config.projects[index]
        }
        // A push or pull request is always about a repository: without one, it is no
        // project's, whoever's secret proves it.
        None if matches!(parsed.event, event::Event::Push(_) | event::Event::PullRequest(_)) => {
            return Err(ApiError::BadRequest(format!("the {event} payload names no repository")));
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
        body: StoredBody::compress(body),
        body_digest: BodyDigest::of(body),
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
