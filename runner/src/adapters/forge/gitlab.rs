//! GitLab's REST API (`/api/v4`, `PRIVATE-TOKEN`): commit statuses, deployments, branch
//! heads, merge requests and their notes. A project is named by its URL-encoded path
//! (`group%2Fproject`).
//!
//! GitLab keeps a hook's deliveries for 7 days (`GET /projects/:id/hooks/:hook_id/events`,
//! GitLab 17.3 on) and resends one on request (17.4 on); the runner does not reconcile
//! with them yet: a missed push is found by a redeploy of the branch.

use axum::http::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::rest::{RestClient, TokenHeader, head_of, id_of, segment};
use super::{CommitState, DeploymentState, Forge, ForgeError};
use crate::domain::RepoName;

/// GitLab's limit on a status's description, ref and target URL, in characters.
const MAX_STATUS_TEXT: usize = 255;

pub struct GitLab {
    client: RestClient,
    /// `/projects/<url-encoded path>`.
    project_path: String,
}

impl GitLab {
    /// The API of the server at `url` (its web address), for the project at `path`.
    pub fn connect(url: &str, token: Option<SecretString>, path: &RepoName) -> Result<Self, ForgeError> {
        Ok(Self {
            client: RestClient::new(
                &format!("{}/api/v4", url.trim_end_matches('/')),
                token,
                TokenHeader::PrivateToken,
            )?,
            project_path: format!("/projects/{}", segment(path.as_str())),
        })
    }
}

/// GitLab's name of a commit state: a superseded or cancelled job is `canceled`.
fn status_name(state: CommitState) -> &'static str {
    match state {
        CommitState::Pending => "pending",
        CommitState::Success => "success",
        CommitState::Failure => "failed",
        CommitState::Error => "canceled",
    }
}

/// GitLab refuses to move a status or deployment to the state it already has, or on
/// from a finished one ("Cannot transition status via :run from :running"): what was
/// asked for is, or was, so; nothing is wrong.
fn already_so(outcome: Result<Value, ForgeError>) -> Result<(), ForgeError> {
    match outcome {
        Err(ForgeError::Rejected { status: 400, message }) if message.contains("Cannot transition status") => Ok(()),
        outcome => outcome.map(drop),
    }
}

/// At most `max` characters of `text`.
fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A branch or tag as GitLab's deployments name it: (name, is a tag).
fn deployable_ref(git_ref: &str) -> Option<(&str, bool)> {
    git_ref
        .strip_prefix("refs/heads/")
        .map(|branch| (branch, false))
        .or_else(|| git_ref.strip_prefix("refs/tags/").map(|tag| (tag, true)))
}

#[async_trait::async_trait]
impl Forge for GitLab {
    async fn commit_status(
        &self,
        sha: &str,
        state: CommitState,
        context: &str,
        text: &str,
        target_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let mut body = json!({
            "state": status_name(state),
            "name": context,
            "description": cut(text, MAX_STATUS_TEXT),
        });
        // A longer address would be refused, and with it the status.
        if let Some(url) = target_url.filter(|url| url.chars().count() <= MAX_STATUS_TEXT) {
            body["target_url"] = Value::from(url);
        }
        // The same state again (a job told twice): GitLab has it already.
        already_so(
            self.client
                .call(
                    Method::POST,
                    &format!("{}/statuses/{}", self.project_path, segment(sha)),
                    Some(&body),
                )
                .await,
        )
    }

    fn offers_deployments(&self, git_ref: &str) -> bool {
        deployable_ref(git_ref).is_some()
    }

    async fn create_deployment(
        &self,
        sha: &str,
        git_ref: &str,
        environment: &str,
        _text: &str,
    ) -> Result<i64, ForgeError> {
        let Some((name, tag)) = deployable_ref(git_ref) else {
            return Err(ForgeError::Rejected {
                status: 0,
                message: format!("GitLab deploys branches and tags, not {git_ref}"),
            });
        };
        let answer = self
            .client
            .call(
                Method::POST,
                &format!("{}/deployments", self.project_path),
                Some(&json!({
                    "environment": environment,
                    "sha": sha,
                    "ref": name,
                    "tag": tag,
                    "status": "running",
                })),
            )
            .await?;
        id_of(&answer, "a deployment")
    }

    async fn deployment_status(
        &self,
        deployment: i64,
        state: DeploymentState,
        _text: &str,
        _environment_url: Option<&str>,
        _log_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let status = match state {
            // Created running: GitLab runs a deployment only from `created`.
            DeploymentState::InProgress => return Ok(()),
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failed",
            // A cancelled or superseded deploy; one that finished stays as it ended (GitLab
            // shows a newer deployment to the environment as its current one).
            DeploymentState::Inactive => "canceled",
        };
        already_so(
            self.client
                .call(
                    Method::PUT,
                    &format!("{}/deployments/{deployment}", self.project_path),
                    Some(&json!({ "status": status })),
                )
                .await,
        )
    }

    async fn branch_head(&self, branch: &str) -> Result<String, ForgeError> {
        let answer = self
            .client
            .call(
                Method::GET,
                &format!("{}/repository/branches/{}", self.project_path, segment(branch)),
                None,
            )
            .await?;
        head_of(&answer, branch)
    }

    async fn pull_request_open(&self, number: i64) -> Result<bool, ForgeError> {
        let answer = self
            .client
            .call(
                Method::GET,
                &format!("{}/merge_requests/{number}", self.project_path),
                None,
            )
            .await?;
        // `locked`: being merged, still open.
        Ok(matches!(answer["state"].as_str(), Some("opened" | "locked")))
    }

    async fn create_comment(&self, number: i64, body: &str) -> Result<i64, ForgeError> {
        let answer = self
            .client
            .call(
                Method::POST,
                &format!("{}/merge_requests/{number}/notes", self.project_path),
                Some(&json!({ "body": body })),
            )
            .await?;
        id_of(&answer, "a note")
    }

    async fn edit_comment(&self, number: i64, id: i64, body: &str) -> Result<(), ForgeError> {
        self.client
            .call(
                Method::PUT,
                &format!("{}/merge_requests/{number}/notes/{id}", self.project_path),
                Some(&json!({ "body": body })),
            )
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_name_a_branch_or_a_tag() {
        assert_eq!(deployable_ref("refs/heads/main"), Some(("main", false)));
        assert_eq!(deployable_ref("refs/tags/v1.2"), Some(("v1.2", true)));
        assert_eq!(deployable_ref("refs/merge-requests/7/head"), None);
    }

    #[test]
    fn a_superseded_job_is_canceled_and_long_text_is_cut_to_gitlabs_limit() {
        assert_eq!(status_name(CommitState::Error), "canceled");
        assert_eq!(status_name(CommitState::Failure), "failed");
        assert_eq!(cut(&"é".repeat(300), MAX_STATUS_TEXT).chars().count(), 255);
    }
}
