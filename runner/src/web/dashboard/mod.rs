//! The dashboard: server-rendered pages at `/`, a little script for local times and live
//! logs, and form actions behind a login.

mod actions;
mod assets;
pub mod auth;
pub mod html;
mod pages;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::web::AppState;
use crate::web::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::deployments_page))
        .route("/jobs", get(pages::jobs_page))
        .route("/jobs/{id}", get(pages::job_page))
        .route("/deliveries", get(pages::deliveries_page))
        .route("/previews", get(pages::previews_page))
        .route(
            "/projects/{name}/previews/{number}/remove",
            post(actions::remove_preview),
        )
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/jobs/{id}/cancel", post(actions::cancel))
        .route("/jobs/{id}/approve", post(actions::approve))
        .route("/jobs/{id}/reject", post(actions::reject))
        .route("/deployments/{id}/rollback", post(actions::rollback))
        .route("/deployments/{id}/redeploy", post(actions::redeploy))
        .route("/deployments/{id}/promote/{to}", post(actions::promote))
        .route("/deliveries/{id}/replay", post(actions::replay))
        .route("/assets/app.css", get(assets::stylesheet))
        .route("/assets/app.js", get(assets::script))
}

/// Why a page could not be shown, as an HTML page with the matching status.
#[derive(Debug)]
pub enum PageError {
    /// Reading needs a login: go to the login page, then come back here.
    LoginFirst(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    /// A form that could not be read, answered as axum answers it.
    Form(FormRejection),
    Api(ApiError),
}

/// axum's `Path`, refused with a page: there is no page at an address whose value does not
/// parse (a job id that is not one).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

impl From<PathRejection> for PageError {
    fn from(rejection: PathRejection) -> Self {
        if rejection.status().is_server_error() {
            return Self::Api(rejection.into());
        }
        Self::NotFound(format!(
            "There is no page at this address: {}.",
            crate::web::error::path_problem(&rejection)
        ))
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Api(error.into())
    }
}

impl From<crate::operations::OperationError> for PageError {
    fn from(error: crate::operations::OperationError) -> Self {
        Self::Api(error.into())
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Self::Form(rejection) => return rejection.into_response(),
            Self::LoginFirst(here) => {
                return Redirect::to(&format!("/login?next={}", html::url_value(&here))).into_response();
            }
            Self::Unauthorized(message) => (StatusCode::UNAUTHORIZED, "Login required", message),
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, "Refused", message),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, "Not found", message),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, "Bad request", message),
            Self::Api(ApiError::Internal(cause)) => {
                tracing::error!(error = format!("{cause:#}"), "dashboard page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The runner could not show this page; its log says why.".to_owned(),
                )
            }
            Self::Api(ApiError::NotFound(message)) => (StatusCode::NOT_FOUND, "Not found", message),
            Self::Api(ApiError::Conflict(message)) => (StatusCode::CONFLICT, "Not possible now", message),
            Self::Api(ApiError::Gone(message)) => (StatusCode::GONE, "No longer kept", message),
            Self::Api(ApiError::Unauthorized(message)) => (StatusCode::UNAUTHORIZED, "Login required", message),
            Self::Api(ApiError::TooManyRequests(wait)) => {
                let page = html::message_page(
                    "Too many attempts",
                    &format!("Too many login attempts from your address. Try again in {wait} s."),
                    false,
                );
                let mut response = html::respond(StatusCode::TOO_MANY_REQUESTS, page);
                if let Ok(value) = axum::http::HeaderValue::from_str(&wait.to_string()) {
                    response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
                }
                return response;
            }
            Self::Api(ApiError::PayloadTooLarge(limit)) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                format!("The request is larger than the {limit}-byte limit."),
            ),
            Self::Api(other) => (StatusCode::BAD_REQUEST, "Bad request", other.to_string()),
        };
        let page = html::message_page(title, &message, status == StatusCode::UNAUTHORIZED);
        html::respond(status, page)
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::Path;
    use crate::domain::JobId;

    #[tokio::test]
    async fn a_job_address_whose_id_is_not_one_is_a_page_not_found() {
        let router = axum::Router::new().route(
            "/jobs/{id}",
            axum::routing::get(|Path(id): Path<JobId>| async move { id.to_string() }),
        );
        let request = Request::get("/jobs/abc").body(Body::empty()).expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let page = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let page = String::from_utf8_lossy(&page);
        assert!(page.contains("job id must be a positive integer"), "{page}");
    }
}
