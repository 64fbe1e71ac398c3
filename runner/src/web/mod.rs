//! HTTP surface: webhook, JSON API, dashboard, health and metrics.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod live;
mod state;
mod webhook;

pub use state::AppState;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
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
        .route("/api/previews", get(api::list_previews))
        .route(
            "/api/projects/{name}/previews/{number}/remove",
            post(api::remove_preview),
        )
        .merge(dashboard::routes())
        .fallback(not_found);
    let small_bodies = limit_bodies(small_bodies, SMALL_BODY_LIMIT).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        dashboard::auth::limit_bearer_guesses,
    ));
    let webhook = Router::new()
        .route("/webhooks/github", post(webhook::receive))
        .route("/webhooks/gitea", post(webhook::receive_gitea))
        .route("/webhooks/gitlab", post(webhook::receive_gitlab));
    limit_bodies(webhook, state.config.server.max_body_bytes)
        .merge(small_bodies)
        // Each route is held to its limit by `limit_bodies`; axum's default limit (2 MiB)
        // would cut the webhook's shorter than `server.max_body_bytes` allows.
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

/// Holds every route of `routes` to bodies of at most `limit` bytes: a body declared larger
/// is refused before any handler runs (so before any authentication), one that turns out
/// larger is cut off while it is read. tower-http's layer refuses in plain text, as axum's
/// extractors do for a body cut off; clients are answered with the API's JSON error.
fn limit_bodies<S: Clone + Send + Sync + 'static>(routes: Router<S>, limit: usize) -> Router<S> {
    routes
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::map_response_with_state(
            limit,
            payload_too_large_as_json,
        ))
}

/// A plain-text 413 becomes [`error::ApiError::PayloadTooLarge`]; a handler's own answer
/// (the login page's, in HTML) is left as it is.
async fn payload_too_large_as_json(State(limit): State<usize>, response: Response) -> Response {
    let plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && plain_text {
        error::ApiError::PayloadTooLarge(limit).into_response()
    } else {
        response
    }
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

#[cfg(test)]
mod tests {
    use axum::body::{Body, Bytes};
    use axum::http::{Request, StatusCode, header};
    use axum::response::{Html, IntoResponse};
    use axum::routing::post;
    use tower::ServiceExt as _;

    use super::limit_bodies;

    async fn answer(router: axum::Router, body: Body, length: Option<usize>) -> (StatusCode, String) {
        let mut request = Request::post("/").body(body).expect("request");
        if let Some(length) = length {
            request.headers_mut().insert(header::CONTENT_LENGTH, length.into());
        }
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn echo() -> axum::Router {
        limit_bodies(
            axum::Router::new().route("/", post(|body: Bytes| async move { body })),
            10,
        )
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_the_json_error() {
        const REFUSED: &str = r#"{"error":"body is larger than the 10-byte limit"}"#;
        // Declared too large: refused before the handler runs.
        let (status, body) = answer(echo(), Body::from("x".repeat(11)), Some(11)).await;
        assert_eq!((status, body.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, REFUSED));
        // Without a length: cut off while the handler reads it.
        let chunks = futures_util::stream::iter(["x".repeat(6), "x".repeat(6)].map(Ok::<_, std::io::Error>));
        let (status, body) = answer(echo(), Body::from_stream(chunks), None).await;
        assert_eq!((status, body.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, REFUSED));
        let (status, body) = answer(echo(), Body::from("x".repeat(10)), Some(10)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "x".repeat(10).as_str()));
    }

    #[tokio::test]
    async fn a_handlers_own_refusal_is_left_as_it_is() {
        let page = || async { (StatusCode::PAYLOAD_TOO_LARGE, Html("<p>Too large</p>")).into_response() };
        let router = limit_bodies(axum::Router::new().route("/", post(page)), 10);
        let (status, body) = answer(router, Body::from("small"), Some(5)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "<p>Too large</p>")
        );
    }
}
