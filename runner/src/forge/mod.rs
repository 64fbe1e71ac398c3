//! The forge boundary (GitHub first): tell it what the runner did with a commit, and ask
//! it what the runner may have missed.

pub mod github;
pub mod reconcile;
pub mod reporter;

use std::time::Duration;

use serde::Deserialize;

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
