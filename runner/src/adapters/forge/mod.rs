//! The forge boundary (GitHub first): tell it what the runner did with a commit, and ask
//! it what the runner may have missed. The reporter, the reconciler and the operator
//! actions speak to a [`Forge`], made by the application's [`Forges`]:
//! [`ConfiguredForges`] makes the one a project's config names, tests give fakes.
//!
//! Adding a forge is a file here (its API client implementing [`Forge`]), a variant in
//! the config, and one arm in [`connect`]. Its webhook deliveries arrive at a route of
//! their own (`web::webhook` for GitHub's), read by `webhook`; `crate::forge` reports to it.

pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod rest;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, ForgeKind, Project};

/// What the runner asks of the forge that hosts a project's repository.
#[async_trait::async_trait]
pub trait Forge: Send + Sync {
    /// Sets the commit status `context` on `sha`.
    async fn commit_status(
        &self,
        sha: &str,
        state: CommitState,
        context: &str,
        text: &str,
        target_url: Option<&str>,
    ) -> Result<(), ForgeError>;
    /// Whether the forge keeps deployments of commits from `git_ref` (GitHub's and
    /// GitLab's deployments; Gitea has none, and GitLab's name a branch or tag).
    fn offers_deployments(&self, git_ref: &str) -> bool {
        let _ = git_ref;
        true
    }
    /// Creates a deployment of `sha` (from `git_ref`) to `environment`; returns its id on
    /// the forge.
    async fn create_deployment(
        &self,
        sha: &str,
        git_ref: &str,
        environment: &str,
        text: &str,
    ) -> Result<i64, ForgeError>;
    async fn deployment_status(
        &self,
        deployment: i64,
        state: DeploymentState,
        text: &str,
        environment_url: Option<&str>,
        log_url: Option<&str>,
    ) -> Result<(), ForgeError>;
    /// The hook's deliveries newer than `seen_up_to`, newest first, at most `max_pages` pages.
    async fn hook_deliveries(
        &self,
        hook_id: i64,
        seen_up_to: Option<i64>,
        max_pages: usize,
    ) -> Result<Vec<HookDelivery>, ForgeError> {
        let _ = (hook_id, seen_up_to, max_pages);
        Err(not_offered("listing hook deliveries"))
    }
    /// Asks the forge to send a delivery again.
    async fn redeliver(&self, hook_id: i64, delivery: i64) -> Result<(), ForgeError> {
        let _ = (hook_id, delivery);
        Err(not_offered("redelivering"))
    }
    /// The commit a branch points at now.
    async fn branch_head(&self, branch: &str) -> Result<String, ForgeError>;
    /// Whether pull request `number` is open.
    async fn pull_request_open(&self, number: i64) -> Result<bool, ForgeError> {
        let _ = number;
        Err(not_offered("reading pull requests"))
    }
    /// Comments on pull request `number`; returns the comment's id.
    async fn create_comment(&self, number: i64, body: &str) -> Result<i64, ForgeError> {
        let _ = (number, body);
        Err(not_offered("commenting"))
    }
    /// Replaces the text of comment `id` on pull request `number`.
    async fn edit_comment(&self, number: i64, id: i64, body: &str) -> Result<(), ForgeError> {
        let _ = (number, id, body);
        Err(not_offered("commenting"))
    }
    /// Whether this client may write check runs (GitHub lets only an App do so).
    fn writes_check_runs(&self) -> bool {
        false
    }
    /// Creates a check run with `run`'s status and output (at most
    /// [`MAX_ANNOTATIONS_PER_REQUEST`] annotations); returns its id on the forge.
    async fn create_check_run(&self, run: &CheckRun) -> Result<i64, ForgeError> {
        let _ = run;
        Err(no_check_runs())
    }
    /// The check run of `run`'s commit with its name and external id, if one exists.
    async fn find_check_run(&self, run: &CheckRun) -> Result<Option<i64>, ForgeError> {
        let _ = run;
        Ok(None)
    }
    /// Sets the check run's status and output; the annotations given (at most
    /// [`MAX_ANNOTATIONS_PER_REQUEST`]) are added to those it has.
    async fn update_check_run(&self, id: i64, run: &CheckRun) -> Result<(), ForgeError> {
        let _ = (id, run);
        Err(no_check_runs())
    }
}

fn not_offered(what: &str) -> ForgeError {
    ForgeError::Rejected {
        status: 0,
        message: format!("this forge client does not offer {what}"),
    }
}

fn no_check_runs() -> ForgeError {
    ForgeError::Rejected {
        status: 0,
        message: "this forge client cannot write check runs".into(),
    }
}

/// GitHub takes at most this many annotations per check run request; more are sent in
/// further updates, which add to the ones it has.
pub const MAX_ANNOTATIONS_PER_REQUEST: usize = 50;
/// GitHub's limit on a check run's summary, in bytes.
pub const MAX_CHECK_SUMMARY_BYTES: usize = 65_535;

/// A job as a check run: its state, and its steps and test results as the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    pub name: String,
    pub head_sha: String,
    /// The runner's job id, which GitHub hands back when someone asks for a re-run.
    pub external_id: String,
    pub details_url: Option<String>,
    pub status: CheckStatus,
    pub title: String,
    /// Markdown; cut to [`MAX_CHECK_SUMMARY_BYTES`] on the way out.
    pub summary: String,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Queued,
    InProgress,
    Completed(CheckConclusion),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckConclusion {
    Success,
    Failure,
    Cancelled,
    Neutral,
    TimedOut,
    ActionRequired,
}

impl CheckStatus {
    /// GitHub's `status` and `conclusion`.
    pub fn as_strs(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Queued => ("queued", None),
            Self::InProgress => ("in_progress", None),
            Self::Completed(conclusion) => (
                "completed",
                Some(match conclusion {
                    CheckConclusion::Success => "success",
                    CheckConclusion::Failure => "failure",
                    CheckConclusion::Cancelled => "cancelled",
                    CheckConclusion::Neutral => "neutral",
                    CheckConclusion::TimedOut => "timed_out",
                    CheckConclusion::ActionRequired => "action_required",
                }),
            ),
        }
    }
}

/// A failing test pinned to a line of the repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Annotation {
    /// Relative to the repository's root.
    pub path: String,
    pub line: u32,
    pub title: String,
    pub message: String,
}

/// The forge client of `project`, or `None` when it has no forge credentials (nothing is
/// reported, nothing reconciled).
pub async fn connect(config: &Config, project: &Project) -> Option<Result<Arc<dyn Forge>, ForgeError>> {
    if let Some(instance) = &project.forge {
        let token = instance.token.clone()?;
        let client: Result<Arc<dyn Forge>, ForgeError> = match instance.kind {
            ForgeKind::Gitea | ForgeKind::Forgejo => {
                gitea::Gitea::connect(&instance.url, Some(token), &project.repository).map(|c| Arc::new(c) as _)
            }
            ForgeKind::GitLab => {
                gitlab::GitLab::connect(&instance.url, Some(token), &project.repository).map(|c| Arc::new(c) as _)
            }
            // The config refuses a `[forges.<name>]` of kind github.
            ForgeKind::GitHub => Err(ForgeError::Rejected {
                status: 0,
                message: format!("[forges.{}]: GitHub is configured in [github]", instance.name),
            }),
        };
        return Some(client);
    }
    let settings = project.github.as_ref()?;
    Some(
        github::GitHub::connect(&config.github.api_url, &settings.auth, project.repository.clone())
            .await
            .map(|client| Arc::new(client) as Arc<dyn Forge>),
    )
}

/// Makes the forge client of a project.
#[async_trait::async_trait]
pub trait Forges: Send + Sync {
    /// `None` when the project has no forge credentials (nothing is reported, nothing
    /// reconciled).
    async fn connect(&self, project: &Project) -> Option<Result<Arc<dyn Forge>, ForgeError>>;
}

/// The forges the config names, over their real APIs.
pub struct ConfiguredForges {
    config: Arc<Config>,
}

impl ConfiguredForges {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Forges for ConfiguredForges {
    async fn connect(&self, project: &Project) -> Option<Result<Arc<dyn Forge>, ForgeError>> {
        connect(&self.config, project).await
    }
}

/// Why a call to the forge did not work, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// Worth trying again soon (a 5xx, a timeout, a dropped connection).
    #[error("{0}")]
    Transient(String),
    /// Asked to wait (rate limit, secondary rate limit).
    #[error("rate limited for {wait:?}: {message}")]
    RateLimited { wait: Duration, message: String },
    /// Refused for good (bad credentials, missing permission, invalid request).
    #[error("{status}: {message}")]
    Rejected { status: u16, message: String },
}

/// A commit status, as GitHub's statuses API knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitState {
    Pending,
    Success,
    Failure,
    Error,
}

impl CommitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
        }
    }
}

/// A deployment status, as GitHub's deployments API knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    InProgress,
    Success,
    Failure,
    Inactive,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Inactive => "inactive",
        }
    }
}

/// One of a hook's recent deliveries, as the forge lists them.
#[derive(Debug, Clone, Deserialize)]
pub struct HookDelivery {
    pub id: i64,
    pub guid: String,
    #[serde(default)]
    pub status_code: Option<i64>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub redelivery: bool,
}

impl HookDelivery {
    pub fn failed(&self) -> bool {
        !self.status_code.is_some_and(|code| (200..300).contains(&code))
    }
}
