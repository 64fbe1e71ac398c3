//! HTTP surface: webhook, JSON API, health and metrics.

pub mod api;
pub mod error;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Request, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::startup::AppState;
use crate::webhook;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/github", post(webhook::receive))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics))
        .route("/api/deliveries", get(api::list_deliveries))
        .route("/api/jobs", get(api::list_jobs))
        .route("/api/jobs/{id}", get(api::get_job))
        .route("/api/jobs/{id}/logs", get(api::job_logs))
        .route("/api/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/deployments", get(api::list_deployments))
        .route("/api/deployments/{id}/rollback", post(api::rollback_deployment))
        .route("/api/projects/{name}/deploy", post(api::deploy_project))
        .fallback(|| async { error::ApiError::NotFound("no such endpoint".into()) })
        // The webhook reads its body itself, with its own limit and error.
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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let queued = crate::store::jobs::queued_count(&state.pool).await.unwrap_or(-1);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(queued),
    )
}
