//! `[projects.rollout]`: where a project's deploys go live. Each target is a variant
//! here and a file in `pipeline::target`.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::raw::RawRollout;
use super::secret::secs;
use super::{ConfigError, invalid};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "target", rename_all = "lowercase")]
pub enum Target {
    /// A container on the runner's Docker engine (`target = "local"`).
    Local(RolloutSettings),
    /// An ECS service (`target = "ecs"`).
    Ecs(EcsSettings),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Ecs(_) => "ecs",
        }
    }
}

/// A container on this machine's Docker engine, published on `bind:host_port`.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutSettings {
    pub host_port: u16,
    pub bind: IpAddr,
    /// Split between the candidate's and the new live container's health checks.
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
}

impl RolloutSettings {
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.bind, self.host_port)
    }
}

/// An ECS service.
#[derive(Debug, Clone, Serialize)]
pub struct EcsSettings {
    pub cluster: String,
    pub service: String,
    /// The container whose image a deploy replaces (when terraform does not).
    pub container: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// How long the service gets to become stable on the new revision.
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
    /// On failure or timeout, put the previous task definition back.
    pub rollback_on_failure: bool,
    /// The app's URL, recorded on each deployment (else terraform's `app_url` output).
    pub url: Option<String>,
}

/// `field` names the project (`projects[N]`).
pub(super) fn resolve(raw: RawRollout, field: &str) -> Result<Target, ConfigError> {
    let field = |name: &str| format!("{field}.rollout.{name}");
    match raw.target.as_str() {
        "local" => {
            let host_port = raw
                .host_port
                .ok_or_else(|| invalid(field("host_port"), "is required for target \"local\""))?;
            let bind_raw = raw.bind.unwrap_or_else(|| "127.0.0.1".to_owned());
            Ok(Target::Local(RolloutSettings {
                host_port,
                bind: bind_raw
                    .parse()
                    .map_err(|_| invalid(field("bind"), format!("{bind_raw:?} is not an IP address")))?,
                timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60)),
            }))
        }
        "ecs" => {
            let required = |value: Option<String>, key: &str| {
                value
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| invalid(field(key), "is required for target \"ecs\""))
            };
            Ok(Target::Ecs(EcsSettings {
                cluster: required(raw.cluster, "cluster")?,
                service: required(raw.service, "service")?,
                container: raw.container.unwrap_or_else(|| "app".to_owned()),
                region: raw.region,
                endpoint_url: raw.endpoint_url,
                timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(600)),
                rollback_on_failure: raw.rollback_on_failure.unwrap_or(true),
                url: raw.url,
            }))
        }
        other => Err(invalid(
            field("target"),
            format!("{other:?} is not a supported target (\"local\" or \"ecs\")"),
        )),
    }
}
