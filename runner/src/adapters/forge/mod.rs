//! The forge boundary (GitHub first): tell it what the runner did with a commit, and ask
//! it what the runner may have missed. The reporter, the reconciler and the operator
//! actions speak to a [`Forge`], made by the application's [`Forges`]:
//! [`ConfiguredForges`] makes the one a project's config names, tests give fakes.
//!
//! Adding a forge is a file here (its API client implementing [`Forge`]), a variant in
//! the config, and one arm in [`connect`]. Its webhook deliveries arrive at a route of
//! their own (`web::webhook` for GitHub's), read by `webhook`; `crate::forge` reports to it.

pub mod github;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, Project};

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
    /// Creates a deployment of `sha` to `environment`; returns its id on the forge.
    async fn create_deployment(&self, sha: &str, environment: &str, text: &str) -> Result<i64, ForgeError>;
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
    ) -> Result<Vec<HookDelivery>, ForgeError>;
    /// Asks the forge to send a delivery again.
    async fn redeliver(&self, hook_id: i64, delivery: i64) -> Result<(), ForgeError>;
    /// The commit a branch points at now.
    async fn branch_head(&self, branch: &str) -> Result<String, ForgeError>;
}

/// The forge client of `project`, or `None` when it has no forge credentials (nothing is
/// reported, nothing reconciled).
pub async fn connect(config: &Config, project: &Project) -> Option<Result<Arc<dyn Forge>, ForgeError>> {
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
