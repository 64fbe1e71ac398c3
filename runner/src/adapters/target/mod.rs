//! The deploy target boundary: the place a pushed image goes live. The pipeline records
//! the deployment (once, whatever the target) and asks the target to put the release
//! live, wait until it serves, and give the previous version back when it does not.
//!
//! Adding a target is a file here, a [`crate::config::Target`] variant in the config, and
//! one arm in the pipeline's connector.

pub mod ecs;
pub mod ecs_api;
pub mod local;

use std::time::Duration;

use serde_json::Value;

use crate::adapters::engine::EngineError;
use crate::joblog::JobLog;
use crate::proxy::ProxyError;

/// What a deploy puts live.
pub struct Release<'a> {
    pub job_id: i64,
    pub deployment_id: i64,
    pub sha: &'a str,
    /// The image, pinned by digest.
    pub image: &'a str,
    /// What ran before terraform touched anything ([`DeployTarget::current`]).
    pub previous: Option<String>,
    /// The deployment live when this one started.
    pub replaces: Option<i64>,
}

/// A rollout that did not end with the release live.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RolloutError {
    pub message: String,
    /// The previous version was put back (the deployment is then `rolled_back`, not `failed`).
    pub rolled_back: bool,
}

impl RolloutError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            rolled_back: false,
        }
    }
}

/// What a target could not do outside a rollout: be made, put an environment back at
/// start-up, or remove one.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The project lacks a setting this target needs; the text names it.
    #[error("{0}")]
    Unconfigured(&'static str),
    #[error("this target cannot remove an environment")]
    CannotTearDown,
    #[error("live deployment {0} has no pushed image to start again")]
    NoImage(i64),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

#[async_trait::async_trait]
pub trait DeployTarget: Send + Sync {
    /// How long going live may take (the step gets a margin on top).
    fn timeout(&self) -> Duration;
    /// Where the release answers; `outputs` are terraform's, when it ran.
    fn url(&self, outputs: Option<&Value>) -> String;
    /// What runs now, read before terraform may change it; `None` when the target keeps
    /// the previous version itself.
    async fn current(&self, _log: &JobLog) -> Option<String> {
        None
    }
    /// Puts `release` live and waits until it serves. On failure the previous version
    /// keeps (or again) serves when the target can manage it.
    async fn go_live(&self, release: &Release<'_>, log: &JobLog) -> Result<(), RolloutError>;
    /// Removes what `go_live` started and no longer needs, also when it was cut off by a
    /// timeout or a cancel.
    async fn clean_up(&self, _release: &Release<'_>, _log: &JobLog) {}
    /// Removes the environment and everything it runs (its containers, its route): for
    /// environments that end, like a pull request's preview.
    async fn tear_down(&self, _log: &JobLog) -> Result<(), TargetError> {
        Err(TargetError::CannotTearDown)
    }
    /// Once the release is recorded live: lets the version it replaced finish its open
    /// requests, then stops it (a target whose platform does this itself does nothing).
    async fn retire(&self, _release: &Release<'_>, _log: &JobLog) {}
}
