//! Gitea's and Forgejo's REST API (`/api/v1`, `Authorization: token ...`): commit
//! statuses, branch heads, pull requests and their comments. They keep no deployments,
//! and their API lists no hook deliveries (a delivery is replayed only from the web UI),
//! so the runner reconciles nothing there: a missed push is found by a redeploy of the
//! branch, which asks the branch's head.

use axum::http::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::rest::{RestClient, TokenHeader, head_of, id_of, segment};
use super::{CommitState, DeploymentState, Forge, ForgeError};
use crate::domain::RepoName;

pub struct Gitea {
    client: RestClient,
    /// `/repos/<owner>/<name>`.
    repo_path: String,
}

impl Gitea {
    /// The API of the server at `url` (its web address), for `repository`.
    pub fn connect(url: &str, token: Option<SecretString>, repository: &RepoName) -> Result<Self, ForgeError> {
        let (owner, name) = repository.as_str().split_once('/').unwrap_or((repository.as_str(), ""));
        Ok(Self {
            client: RestClient::new(
                &format!("{}/api/v1", url.trim_end_matches('/')),
                token,
                TokenHeader::AuthorizationToken,
            )?,
            repo_path: format!("/repos/{}/{}", segment(owner), segment(name)),
        })
    }
}

fn no_deployments() -> ForgeError {
    ForgeError::Rejected {
        status: 0,
        message: "Gitea and Forgejo keep no deployments".into(),
    }
}

#[async_trait::async_trait]
impl Forge for Gitea {
    async fn commit_status(
        &self,
        sha: &str,
        state: CommitState,
        context: &str,
        text: &str,
        target_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let mut body = json!({
            "state": state.as_str(),
            "context": context,
            "description": text,
        });
        if let Some(url) = target_url {
            body["target_url"] = Value::from(url);
        }
        self.client
            .call(
                Method::POST,
                &format!("{}/statuses/{}", self.repo_path, segment(sha)),
                Some(&body),
            )
            .await
            .map(drop)
    }

    fn offers_deployments(&self, _git_ref: &str) -> bool {
        false
    }

    async fn create_deployment(
        &self,
        _sha: &str,
        _git_ref: &str,
        _environment: &str,
        _text: &str,
    ) -> Result<i64, ForgeError> {
        Err(no_deployments())
    }

    async fn deployment_status(
        &self,
        _deployment: i64,
        _state: DeploymentState,
        _text: &str,
        _environment_url: Option<&str>,
        _log_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        Err(no_deployments())
    }

    async fn branch_head(&self, branch: &str) -> Result<String, ForgeError> {
        let answer = self
            .client
            .call(
                Method::GET,
                &format!("{}/branches/{}", self.repo_path, segment(branch)),
                None,
            )
            .await?;
        head_of(&answer, branch)
    }

    async fn pull_request_open(&self, number: i64) -> Result<bool, ForgeError> {
        let answer = self
            .client
            .call(Method::GET, &format!("{}/pulls/{number}", self.repo_path), None)
            .await?;
        Ok(answer["state"].as_str() == Some("open"))
    }

    async fn create_comment(&self, number: i64, body: &str) -> Result<i64, ForgeError> {
        let answer = self
            .client
            .call(
                Method::POST,
                &format!("{}/issues/{number}/comments", self.repo_path),
                Some(&json!({ "body": body })),
            )
            .await?;
        id_of(&answer, "a comment")
    }

    async fn edit_comment(&self, _number: i64, id: i64, body: &str) -> Result<(), ForgeError> {
        self.client
            .call(
                Method::PATCH,
                &format!("{}/issues/comments/{id}", self.repo_path),
                Some(&json!({ "body": body })),
            )
            .await
            .map(drop)
    }
}
