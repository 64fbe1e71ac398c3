//! GitHub's REST API through octocrab: a token or a GitHub App installation (its token
//! minted and refreshed by octocrab), bounded timeouts, and every answer sorted into
//! done, try again, wait, or refused.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use octocrab::Octocrab;
use percent_encoding::{percent_decode_str, utf8_percent_encode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{
    CheckRun, CommitState, DeploymentState, Forge, ForgeError, HookDelivery, MAX_ANNOTATIONS_PER_REQUEST,
    MAX_CHECK_SUMMARY_BYTES,
};
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

/// `text` cut to at most `max` characters, ending with `cut` when it had to be cut.
fn at_most(text: &str, max: usize, cut: &str) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(cut.chars().count());
    let mut short: String = text.chars().take(keep).collect();
    short.push_str(cut);
    short
}

/// `text` cut to at most `max` bytes at a character boundary, ending with `cut` when it
/// had to be cut.
fn at_most_bytes(text: &str, max: usize, cut: &str) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(cut.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{cut}", &text[..end])
}

/// A check run as the Checks API takes it, for a create (`with_identity`) or an update.
fn check_run_body(run: &CheckRun, with_identity: bool) -> Value {
    let (status, conclusion) = run.status.as_strs();
    let annotations: Vec<Value> = run
        .annotations
        .iter()
        .take(MAX_ANNOTATIONS_PER_REQUEST)
        .map(|a| {
            json!({
                "start_line": a.line,
                "end_line": a.line,
                "annotation_level": "failure",
                "title": at_most(&a.title, 255, "…"),
                "path": at_most_bytes(&a.path, 1_024, ""),
                "message": at_most(&a.message, 4_000, "…"),
            })
        })
        .collect();
    let mut body = json!({
        "status": status,
        "output": {
            "title": at_most(&run.title, 255, "…"),
            "summary": at_most_bytes(&run.summary, MAX_CHECK_SUMMARY_BYTES, "\n\n… (cut: the job page has the rest)"),
            "annotations": annotations,
        },
    });
    if let Some(conclusion) = conclusion {
        body["conclusion"] = conclusion.into();
    }
    if let Some(url) = &run.details_url {
        body["details_url"] = url.as_str().into();
    }
    if with_identity {
        body["name"] = run.name.as_str().into();
        body["head_sha"] = run.head_sha.as_str().into();
        body["external_id"] = run.external_id.as_str().into();
    }
    body
}

/// GitHub allows 140 characters of description.
pub fn description(text: &str) -> String {
    at_most(text.lines().next().unwrap_or(""), 140, "…")
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

    async fn create_deployment(
        &self,
        sha: &str,
        _git_ref: &str,
        environment: &str,
        text: &str,
    ) -> Result<i64, ForgeError> {
        let body = json!({
            "ref": sha,
            "environment": environment,
            "description": description(text),
            // The runner already verified the commit; GitHub must not merge or re-check it.
            "auto_merge": false,
            "required_contexts": [],
            "production_environment": environment == "production",
            // A preview goes when its pull request closes.
            "transient_environment": crate::config::PreviewSettings::is_preview_name(environment),
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

    fn writes_check_runs(&self) -> bool {
        self.installation
    }

    async fn create_check_run(&self, run: &CheckRun) -> Result<i64, ForgeError> {
        let created = self
            .call(
                Method::POST,
                &format!("/repos/{}/check-runs", self.repository),
                Some(&check_run_body(run, true)),
            )
            .await?;
        created["id"].as_i64().ok_or_else(|| ForgeError::Rejected {
            status: 0,
            message: "creating a check run: no id returned".into(),
        })
    }

    async fn find_check_run(&self, run: &CheckRun) -> Result<Option<i64>, ForgeError> {
        let name: String = utf8_percent_encode(&run.name, crate::percent::NON_UNRESERVED).collect();
        let found = self
            .call(
                Method::GET,
                &format!(
                    "/repos/{}/commits/{}/check-runs?check_name={name}&filter=all&per_page=100",
                    self.repository, run.head_sha
                ),
                None,
            )
            .await?;
        Ok(found["check_runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|existing| existing["external_id"].as_str() == Some(run.external_id.as_str()))
            .and_then(|existing| existing["id"].as_i64()))
    }

    async fn update_check_run(&self, id: i64, run: &CheckRun) -> Result<(), ForgeError> {
        self.call(
            Method::PATCH,
            &format!("/repos/{}/check-runs/{id}", self.repository),
            Some(&check_run_body(run, false)),
        )
        .await
        .map(drop)
    }

    async fn pull_request_open(&self, number: i64) -> Result<bool, ForgeError> {
        let found = self
            .call(Method::GET, &format!("/repos/{}/pulls/{number}", self.repository), None)
            .await?;
        match found["state"].as_str() {
            Some(state) => Ok(state == "open"),
            None => Err(ForgeError::Rejected {
                status: 0,
                message: format!("pull request #{number} has no state"),
            }),
        }
    }

    async fn create_comment(&self, number: i64, body: &str) -> Result<i64, ForgeError> {
        let created = self
            .call(
                Method::POST,
                &format!("/repos/{}/issues/{number}/comments", self.repository),
                Some(&json!({ "body": body })),
            )
            .await?;
        created["id"].as_i64().ok_or_else(|| ForgeError::Rejected {
            status: 0,
            message: "creating a comment: no id returned".into(),
        })
    }

    async fn edit_comment(&self, _number: i64, id: i64, body: &str) -> Result<(), ForgeError> {
        self.call(
            Method::PATCH,
            &format!("/repos/{}/issues/comments/{id}", self.repository),
            Some(&json!({ "body": body })),
        )
        .await
        .map(|_| ())
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
mod tests {
    use super::*;

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

    #[test]
    fn a_check_run_stays_within_githubs_limits() {
        let annotation = super::super::Annotation {
            path: "src/lib.rs".into(),
            line: 7,
            title: "t".repeat(300),
            message: "boom".into(),
        };
        let run = CheckRun {
            name: "runner/deploy (production)".into(),
            head_sha: "a".repeat(40),
            external_id: "12".into(),
            details_url: Some("https://ci.example.test/jobs/12".into()),
            status: super::super::CheckStatus::Completed(super::super::CheckConclusion::Failure),
            title: "2 failed".into(),
            summary: "é".repeat(70_000),
            annotations: vec![annotation; 60],
        };
        let created = check_run_body(&run, true);
        let summary = created["output"]["summary"].as_str().expect("summary");
        assert!(summary.len() <= MAX_CHECK_SUMMARY_BYTES && summary.len() > MAX_CHECK_SUMMARY_BYTES - 8);
        assert!(summary.ends_with("(cut: the job page has the rest)"), "{summary:.40}");
        let annotations = created["output"]["annotations"].as_array().expect("annotations");
        assert_eq!(annotations.len(), MAX_ANNOTATIONS_PER_REQUEST);
        assert_eq!(annotations[0]["start_line"], 7);
        assert_eq!(annotations[0]["title"].as_str().expect("title").chars().count(), 255);
        assert_eq!(
            (created["status"].as_str(), created["conclusion"].as_str()),
            (Some("completed"), Some("failure"))
        );
        assert_eq!(created["external_id"], "12");
        let updated = check_run_body(&run, false);
        assert!(
            updated.get("name").is_none() && updated.get("head_sha").is_none(),
            "{updated}"
        );
    }
}
