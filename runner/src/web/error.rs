//! API errors: a status and a JSON `{"error": ...}` body that says what is wrong.
//! Internal failures are logged with their cause chain and hidden from the client.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// It existed, and retention has since dropped it.
    #[error("{0}")]
    Gone(String),
    #[error("body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    /// Too many attempts: try again after this many seconds.
    #[error("too many attempts; try again in {0} s")]
    TooManyRequests(u64),
    /// The database cannot be reached; nothing was recorded. A sender that retries (GitHub
    /// redelivers) is told when.
    #[error("the runner's database is unavailable; nothing was recorded, try again in {0} s")]
    Unavailable(u64),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "database unavailable");
            return Self::Unavailable(RETRY_WHILE_UNAVAILABLE_S);
        }
        Self::Internal(anyhow::Error::new(error))
    }
}

impl From<crate::operations::OperationError> for ApiError {
    fn from(error: crate::operations::OperationError) -> Self {
        use crate::operations::OperationError;
        match error {
            OperationError::Invalid(message) => Self::BadRequest(message),
            OperationError::NotFound(message) => Self::NotFound(message),
            OperationError::Conflict(message) => Self::Conflict(message),
            OperationError::Store(error) => error.into(),
            OperationError::Internal(error) => Self::Internal(error),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // Parameters that do not fit their route's extractor are the runner's fault.
        if rejection.status().is_server_error() {
            return Self::Internal(anyhow::anyhow!(rejection.body_text()));
        }
        Self::BadRequest(path_problem(&rejection))
    }
}

/// What is wrong with a URL's path parameters: the value's own parse error where it has
/// one (a job id's [`crate::domain::ParseError`]), else axum's description.
pub fn path_problem(rejection: &PathRejection) -> String {
    if let PathRejection::FailedToDeserializePathParams(error) = rejection
        && let ErrorKind::DeserializeError { message, .. } | ErrorKind::Message(message) = error.kind()
    {
        return message.clone();
    }
    rejection.body_text()
}

/// What `Retry-After` says while the database is away.
pub const RETRY_WHILE_UNAVAILABLE_S: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::TooManyRequests(wait) | Self::Unavailable(wait) = &self
            && let Ok(value) = HeaderValue::from_str(&wait.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was not read; the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
