//! JSON over HTTPS for the forges without a client crate of their own (Gitea, Forgejo,
//! GitLab), on octocrab's transport (its TLS, timeouts and retries): one request, its
//! answer read as JSON, and its failure classified the way the reporter retries (a 5xx or
//! a dropped connection is transient, a 429 waits, the rest is refused for good).

use std::time::Duration;

use axum::http::{self, HeaderName, Method, StatusCode};
use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::ForgeError;

/// How the token goes with each request.
#[derive(Clone, Copy, Debug)]
pub enum TokenHeader {
    /// `Authorization: token <token>` (Gitea, Forgejo).
    AuthorizationToken,
    /// `PRIVATE-TOKEN: <token>` (GitLab).
    PrivateToken,
}

pub struct RestClient {
    client: Octocrab,
}

impl RestClient {
    /// A client of the API at `api` (its root, `https://gitea.example.com/api/v1`); every
    /// request is sent there only, with `token`.
    pub fn new(api: &str, token: Option<SecretString>, header: TokenHeader) -> Result<Self, ForgeError> {
        let refused = |message: String| ForgeError::Rejected { status: 0, message };
        let mut builder = Octocrab::builder()
            .base_uri(api)
            .map_err(|e| refused(format!("invalid API URL {api:?}: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            .add_header(http::header::ACCEPT, "application/json".to_owned());
        if let Some(token) = token {
            builder = match header {
                TokenHeader::AuthorizationToken => {
                    builder.add_header(http::header::AUTHORIZATION, format!("token {}", token.expose_secret()))
                }
                TokenHeader::PrivateToken => builder.add_header(
                    HeaderName::from_static("private-token"),
                    token.expose_secret().to_owned(),
                ),
            };
        }
        let client = builder
            .build()
            .map_err(|e| refused(format!("cannot make an HTTPS client: {e}")))?;
        Ok(Self { client })
    }

    /// Sends `body` (if any) to `path` below the API's root; the answer's JSON (`null`
    /// when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ForgeError> {
        let sent = match method {
            Method::POST => self.client._post(path, body).await,
            Method::PATCH => self.client._patch(path, body).await,
            Method::PUT => self.client._put(path, body).await,
            _ => self.client._get(path).await,
        };
        let response = sent.map_err(|e| ForgeError::Transient(format!("{method} {path}: {e}")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = self
            .client
            .body_to_string(response)
            .await
            .map_err(|e| ForgeError::Transient(format!("{method} {path}: reading the answer: {e}")))?;
        if status.is_success() {
            return if text.trim().is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_str(&text)
                    .map_err(|_| ForgeError::Transient(format!("{method} {path}: the answer is not JSON")))
            };
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|json| {
                ["message", "error"].iter().find_map(|key| {
                    json.get(key)
                        .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
                })
            })
            .unwrap_or_else(|| text.chars().take(200).collect());
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ForgeError::RateLimited {
                wait: Duration::from_secs(retry_after.unwrap_or(60).max(1)),
                message,
            });
        }
        if status.is_server_error() {
            return Err(ForgeError::Transient(format!("{method} {path}: {status}: {message}")));
        }
        Err(ForgeError::Rejected {
            status: status.as_u16(),
            message: format!("{method} {path}: {message}"),
        })
    }
}

/// A path segment with every byte outside the unreserved set percent-encoded (a branch
/// name's `/`, a GitLab project path's `/` as `%2F`).
pub fn segment(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The commit a branch's answer names (`commit.id`, on Gitea and GitLab alike).
pub fn head_of(answer: &Value, branch: &str) -> Result<String, ForgeError> {
    answer["commit"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ForgeError::Transient(format!("branch {branch}: the answer names no commit")))
}

/// The id a forge gave what it created.
pub fn id_of(answer: &Value, what: &str) -> Result<i64, ForgeError> {
    answer["id"]
        .as_i64()
        .ok_or_else(|| ForgeError::Transient(format!("the forge created {what} but named no id")))
}
