//! HTTP surface: webhook, JSON API, dashboard, health and metrics.

pub mod api;
pub mod dashboard;
pub mod error;
pub mod live;
pub mod operations;
mod state;
mod webhook;

pub use state::AppState;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Request, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// Every route but the webhook takes at most this much body: a login form or an action
/// is a few hundred bytes, and nobody gets to make the runner read more before it even
/// knows who is asking.
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let small_bodies = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics))
        .route("/api/deliveries", get(api::list_deliveries))
        .route("/api/deliveries/{id}/body", get(api::delivery_body))
        .route("/api/deliveries/{id}/replay", post(api::replay_delivery))
        .route("/api/jobs", get(api::list_jobs))
        .route("/api/jobs/{id}", get(api::get_job))
        .route("/api/jobs/{id}/logs", get(api::job_logs))
        .route("/api/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/jobs/{id}/approve", post(api::approve_job))
        .route("/api/jobs/{id}/reject", post(api::reject_job))
        .route("/api/jobs/{id}/plan", get(api::job_plan))
        .route("/api/deployments", get(api::list_deployments))
        .route("/api/deployments/{id}/rollback", post(api::rollback_deployment))
        .route("/api/projects/{name}/deploy", post(api::deploy_project))
        .route("/api/projects/{name}/promote", post(api::promote_project))
        .merge(dashboard::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(limit_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            dashboard::auth::limit_bearer_guesses,
        ));
    Router::new()
        .route("/webhooks/github", post(webhook::receive))
        .merge(small_bodies)
        // The webhook reads its body itself, with its own limit and error; every other
        // route is held to SMALL_BODY_LIMIT by `limit_body`.
        .layer(DefaultBodyLimit::disable())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
                    tracing::info_span!("request", method = %request.method(), route = %route)
                })
                .on_request(())
                .on_response(
                    |response: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                        tracing::debug!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1e3,
                            "answered"
                        );
                    },
                ),
        )
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            error::ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .with_state(state)
}

/// Refuses a body declared larger than [`SMALL_BODY_LIMIT`] before any handler runs (so
/// before any authentication), and cuts off one that turns out larger while it is read.
async fn limit_body(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > SMALL_BODY_LIMIT as u64) {
        return error::ApiError::PayloadTooLarge(SMALL_BODY_LIMIT).into_response();
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, SMALL_BODY_LIMIT));
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let queued = crate::store::jobs::queued_count(&state.pool).await.unwrap_or(-1);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(queued),
    )
}

/// Browsers get a page, everything else the JSON error.
async fn not_found(headers: axum::http::HeaderMap) -> axum::response::Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        dashboard::PageError::NotFound("There is no page at this address.".into()).into_response()
    } else {
        error::ApiError::NotFound("no such endpoint".into()).into_response()
    }
}
