use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;

pub const GREETING: &str = "Hello Graylog, my name is Charles!";
pub const HEALTHY: &str = "healthy";
pub const NOT_FOUND: &str = "404 page not found";
pub const SERVER_ERROR: &str = "500 internal server error";
const METHOD_NOT_ALLOWED: &str = "405 method not allowed";

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT_PLAIN)], body).into_response()
}

/// The service's own routes. `GET` also answers `HEAD`; other methods get a 405 with `Allow`.
pub fn routes(version_info: serde_json::Value) -> Router {
    // Serialised once: the answer never changes while the process runs.
    let version_body: Arc<str> = version_info.to_string().into();
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route(
            "/version",
            get(move || {
                let body = Arc::clone(&version_body);
                async move {
                    (
                        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                        body.to_string(),
                    )
                }
            }),
        )
}

/// Wraps any router with the service's plain-text 404, 405 and 500 pages.
pub(crate) fn with_error_handling(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(internal_error))
}

async fn index() -> Response {
    tracing::info!("Hello world endpoint was accessed");
    text(StatusCode::OK, GREETING)
}

async fn health() -> Response {
    text(StatusCode::OK, HEALTHY)
}

async fn not_found(uri: Uri) -> Response {
    tracing::error!(url = %uri, "page not found: {uri}");
    text(StatusCode::NOT_FOUND, NOT_FOUND)
}

async fn method_not_allowed() -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED)
}

fn internal_error(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a non-text panic payload");
    tracing::error!(
        severity = "critical",
        panic = detail,
        "internal server error: a handler panicked"
    );
    text(StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR)
}
