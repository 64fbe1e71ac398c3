//! Who may use the JSON API. A handler names what it needs as an argument, [`AdminToken`]
//! for actions, [`Reader`] for reads, and a request without it is refused (401) before
//! the handler runs. The dashboard's logins and sessions are `dashboard::auth`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use secrecy::ExposeSecret;

use super::AppState;
use super::error::ApiError;
use crate::config::ReadAccess;

/// The request carries `Authorization: Bearer <admin token>`, compared in constant time.
pub struct AdminToken;

impl FromRequestParts<AppState> for AdminToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.config.admin_token else {
            return Err(ApiError::Unauthorized(
                "actions are disabled: set RUNNER_ADMIN_TOKEN to enable them".into(),
            ));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <admin token>".into()))?;
        if constant_time_eq(presented.as_bytes(), expected.expose_secret().as_bytes()) {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized("wrong admin token".into()))
        }
    }
}

/// The request may read the API: reads are public (`dashboard.read_access`), or it comes
/// with a dashboard session or the admin token.
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if state.config.dashboard.read_access == ReadAccess::Public
            || super::dashboard::auth::has_session(state, &parts.headers).await?
        {
            return Ok(Self);
        }
        AdminToken::from_request_parts(parts, state)
            .await
            .map(|AdminToken| Self)
    }
}

/// Whether two secrets are equal, in a time that says nothing about where they differ (the
/// comparison is `subtle`'s) nor about their lengths (it compares their digests).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}
