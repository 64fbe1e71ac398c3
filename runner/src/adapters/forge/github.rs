//! GitHub's REST API through octocrab: a token or a GitHub App installation (its token
//! minted and refreshed by octocrab), bounded timeouts, and every answer sorted into
//! done, try again, wait, or refused.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use octocrab::Octocrab;
use percent_encoding::{percent_decode_str, utf8_percent_encode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{CommitState, DeploymentState, Forge, ForgeError, HookDelivery};
use crate::config::GitHubAuth;
use crate::domain::RepoName;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A GitHub that does not answer holds up only the reporter, and only this long per call.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct GitHub {
    client: Octocrab,
    repository: RepoName,
    /// Authenticated as a GitHub App's installation: its tokens are minted as needed.
    installation: bool,
}

/// GitHub allows 140 characters of description.
pub fn description(text: &str) -> String {
    let text = text.lines().next().unwrap_or("");
    if text.chars().count() <= 140 {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(139).collect();
    short.push('…');
    short
}

impl GitHub {
    pub async fn connect(api_url: &str, auth: &GitHubAuth, repository: RepoName) -> Result<Self, ForgeError> {
        let builder = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| ForgeError::Rejected {
                status: 0,
                message: format!("invalid API URL {api_url:?}: {e}"),
            })?
            .set_connect_timeout(Some(CONNECT_TIMEOUT))
            .set_read_timeout(Some(READ_TIMEOUT));
        let client =
            match auth {
                GitHubAuth::Token(token) => builder
                    .personal_token(token.expose_secret().to_owned())
                    .build()
                    .map_err(|e| ForgeError::Transient(e.to_string()))?,
                GitHubAuth::App {
                    app_id,
                    installation_id,
                    private_key,
                } => {
                    let key = octocrab::auth::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes())
                        .map_err(|e| ForgeError::Rejected {
                            status: 0,
                            message: format!("the GitHub App private key is not a valid RSA PEM key: {e}"),
                        })?;
                    let app = builder
                        .app(octocrab::models::AppId(*app_id), key)
                        .build()
                        .map_err(|e| ForgeError::Transient(e.to_string()))?;
                    let installation = match installation_id {
                        Some(id) => *id,
                        None => {
                            let as_app = Self {
                                client: app.clone(),
                                repository: repository.clone(),
                                installation: false,
                            };
                            let found = as_app
                                .call(Method::GET, &format!("/repos/{}/installation", repository), None)
                                .await?;
                            found["id"].as_u64().ok_or_else(|| ForgeError::Rejected {
                                status: 0,
                                message: format!("the GitHub App is not installed on {repository}"),
                            })?
                        }
                    };
                    app.installation(octocrab::models::InstallationId(installation))
                        .map_err(|e| ForgeError::Transient(e.to_string()))?
                }
            };
        let installation = matches!(auth, GitHubAuth::App { .. });
        Ok(Self {
            client,
            repository,
            installation,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ForgeError> {
        self.call_paged(method, path, body).await.map(|(json, _)| json)
    }

    /// Like `call`, with the cursor of the next page when GitHub's `Link` header names one.
    async fn call_paged(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, Option<String>), ForgeError> {
        if self.installation {
            // The installation token this request is sent with (minted now, or the cached
            // one): masked everywhere from before it is used.
            let token = self
                .client
                .installation_token()
                .await
                .map_err(|e| ForgeError::Transient(format!("minting an installation token: {e}")))?;
            crate::secrets::hold(token.expose_secret());
        }
        // A relative path: octocrab adds the base URI (GitHub Enterprise included) and only
        // then sends an App's credentials, which it never sends to a host named in a URL.
        let sent = match method {
            Method::POST => self.client._post(path, body).await,
            Method::PATCH => self.client._patch(path, body).await,
            _ => self.client._get(path).await,
        };
        let response = sent.map_err(|e| ForgeError::Transient(format!("{method} {path}: {e}")))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (remaining, reset, retry_after) = (
            header("x-ratelimit-remaining"),
            header("x-ratelimit-reset"),
            header("retry-after"),
        );
        let next_cursor = header("link").as_deref().and_then(next_page_cursor);
        let text = self
            .client
            .body_to_string(response)
            .await
            .map_err(|e| ForgeError::Transient(format!("{method} {path}: reading the answer: {e}")))?;
        let json: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        if status.is_success() {
            return Ok((json, next_cursor));
        }
        let message = json["message"]
            .as_str()
            .map_or_else(|| text.chars().take(200).collect(), str::to_owned);
        let limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN && (remaining.as_deref() == Some("0") || retry_after.is_some()));
        if limited {
            let wait = retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .or_else(|| {
                    let reset: u64 = reset?.trim().parse().ok()?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()?
                        .as_secs();
                    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
                })
                .unwrap_or(Duration::from_secs(60));
            return Err(ForgeError::RateLimited { wait, message });
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

/// The `cursor` of the `rel="next"` link of a `Link` header (GitHub's cursor paging).
fn next_page_cursor(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let url = target.trim().trim_start_matches('<').trim_end_matches('>');
        let query = url.split_once('?')?.1;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("cursor="))
            .map(|cursor| percent_decode_str(cursor).decode_utf8_lossy().into_owned())
    })
}

#[async_trait::async_trait]
impl Forge for GitHub {
    async fn commit_status(
        &self,
        sha: &str,
        state: CommitState,
        context: &str,
        text: &str,
        target_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let mut body = json!({ "state": state.as_str(), "context": context, "description": description(text) });
        if let Some(url) = target_url {
            body["target_url"] = url.into();
        }
        self.call(
            Method::POST,
            &format!("/repos/{}/statuses/{sha}", self.repository),
            Some(&body),
        )
        .await
        .map(drop)
    }

    async fn create_deployment(&self, sha: &str, environment: &str, text: &str) -> Result<i64, ForgeError> {
        let body = json!({
            "ref": sha,
            "environment": environment,
            "description": description(text),
            // The runner already verified the commit; GitHub must not merge or re-check it.
            "auto_merge": false,
            "required_contexts": [],
            "production_environment": environment == "production",
        });
        let created = self
            .call(
                Method::POST,
                &format!("/repos/{}/deployments", self.repository),
                Some(&body),
            )
            .await?;
        created["id"].as_i64().ok_or_else(|| ForgeError::Rejected {
            status: 0,
            message: format!(
                "creating a deployment: {}",
                created["message"].as_str().unwrap_or("no id returned")
            ),
        })
    }

    async fn deployment_status(
        &self,
        deployment: i64,
        state: DeploymentState,
        text: &str,
        environment_url: Option<&str>,
        log_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let mut body = json!({ "state": state.as_str(), "description": description(text) });
        if let Some(url) = environment_url.filter(|u| !u.is_empty()) {
            body["environment_url"] = url.into();
        }
        if let Some(url) = log_url {
            body["log_url"] = url.into();
        }
        self.call(
            Method::POST,
            &format!("/repos/{}/deployments/{deployment}/statuses", self.repository),
            Some(&body),
        )
        .await
        .map(drop)
    }

    async fn hook_deliveries(
        &self,
        hook_id: i64,
        seen_up_to: Option<i64>,
        max_pages: usize,
    ) -> Result<Vec<HookDelivery>, ForgeError> {
        let mut all: Vec<HookDelivery> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages {
            let mut path = format!("/repos/{}/hooks/{hook_id}/deliveries?per_page=100", self.repository);
            if let Some(cursor) = &cursor {
                path.push_str("&cursor=");
                path.extend(utf8_percent_encode(cursor, crate::percent::NON_UNRESERVED));
            }
            let (listed, next) = self.call_paged(Method::GET, &path, None).await?;
            let page: Vec<HookDelivery> = serde_json::from_value(listed).map_err(|e| ForgeError::Rejected {
                status: 0,
                message: format!("unexpected hook deliveries: {e}"),
            })?;
            let reached_seen = seen_up_to.is_some_and(|seen| page.iter().any(|d| d.id <= seen));
            all.extend(page);
            match next {
                Some(next) if !reached_seen => cursor = Some(next),
                _ => break,
            }
        }
        Ok(all)
    }

    async fn redeliver(&self, hook_id: i64, delivery: i64) -> Result<(), ForgeError> {
        self.call(
            Method::POST,
            &format!(
                "/repos/{}/hooks/{hook_id}/deliveries/{delivery}/attempts",
                self.repository
            ),
            None,
        )
        .await
        .map(drop)
    }

    async fn branch_head(&self, branch: &str) -> Result<String, ForgeError> {
        let found = self
            .call(
                Method::GET,
                &format!("/repos/{}/branches/{branch}", self.repository),
                None,
            )
            .await?;
        found["commit"]["sha"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ForgeError::Rejected {
                status: 0,
                message: format!("branch {branch} has no commit"),
            })
    }
}

#[cfg(test)]
mod paging_tests {
    use super::next_page_cursor;

    #[test]
    fn the_next_cursor_is_read_from_githubs_link_header() {
        let link = "<https://api.github.com/repositories/1/hooks/2/deliveries?per_page=100&cursor=v1_12%3D3>; rel=\"next\", \
                    <https://api.github.com/repositories/1/hooks/2/deliveries?per_page=100>; rel=\"first\"";
        assert_eq!(next_page_cursor(link).as_deref(), Some("v1_12=3"));
        assert_eq!(
            next_page_cursor("<https://api.github.com/x?per_page=100>; rel=\"first\""),
            None
        );
    }
}
