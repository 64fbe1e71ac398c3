//! `[projects.build]`, `[projects.smoke]` and `[projects.containers]`: how the image is
//! built, how it proves it works, and what its containers may use.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;

use super::raw::{RawBuild, RawContainers, RawSmoke};
use super::secret::{SecretReader, names, secs};
use super::{ConfigError, invalid};

/// How the image is built from the checked-out commit.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSettings {
    /// Repository part of the image name; tagged `<image>:<sha>`.
    pub image: String,
    /// Build context, relative to the repository root.
    pub context: String,
    /// Dockerfile, relative to the context.
    pub dockerfile: String,
    pub build_args: BTreeMap<String, String>,
    /// Build secrets by name: given only to builds of trusted code (never to a pull
    /// request's build), and masked everywhere.
    #[serde(serialize_with = "names")]
    pub secrets: BTreeMap<String, SecretString>,
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
}

/// How a built image proves it works: run it and ask its health endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct SmokeSettings {
    pub container_port: u16,
    pub path: String,
    pub expect_status: u16,
    /// When set, the body (trimmed) must equal it.
    pub expect_body: Option<String>,
    /// How long the app gets, once its container runs, to answer as expected.
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
}

/// Resource limits and privileges of the containers that run a project's image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerLimits {
    pub memory_bytes: i64,
    /// CPU quota in billionths of a CPU, as the Engine API takes it.
    pub nano_cpus: i64,
    pub pids_limit: i64,
    /// Capabilities kept; every other one is dropped.
    pub capabilities: Vec<String>,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids_limit: 256,
            capabilities: vec!["NET_BIND_SERVICE".to_owned()],
        }
    }
}

/// `field` names the project (`projects[N]`).
pub(super) fn resolve_build(
    raw: RawBuild,
    field: &str,
    secrets: SecretReader<'_>,
) -> Result<BuildSettings, ConfigError> {
    crate::domain::ImageRef::parse(&raw.image).map_err(|e| invalid(format!("{field}.build.image"), e))?;
    if raw.image.contains(':') || raw.image.contains('@') {
        return Err(invalid(
            format!("{field}.build.image"),
            "give the repository name only; the runner tags it with the commit SHA",
        ));
    }
    let context = raw.context.unwrap_or_else(|| ".".to_owned());
    let dockerfile = raw.dockerfile.unwrap_or_else(|| "Dockerfile".to_owned());
    for (name, value) in [("build.context", &context), ("build.dockerfile", &dockerfile)] {
        if value.starts_with('/') || value.split('/').any(|part| part == "..") {
            return Err(invalid(
                format!("{field}.{name}"),
                "must be a relative path inside the repository",
            ));
        }
    }
    let build_secrets = secrets.map(raw.secrets, &format!("{field}.build.secrets"))?;
    if let Some(name) = build_secrets.keys().find(|name| raw.build_args.contains_key(*name)) {
        return Err(invalid(
            format!("{field}.build.secrets"),
            format!("{name} is both a build arg and a secret; keep it in one of them"),
        ));
    }
    Ok(BuildSettings {
        image: raw.image,
        context,
        dockerfile,
        build_args: raw.build_args,
        secrets: build_secrets,
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(1800)),
    })
}

pub(super) fn resolve_smoke(raw: RawSmoke, field: &str) -> Result<SmokeSettings, ConfigError> {
    let path = raw.path.unwrap_or_else(|| "/health".to_owned());
    if !path.starts_with('/') {
        return Err(invalid(format!("{field}.smoke.path"), "must start with '/'"));
    }
    Ok(SmokeSettings {
        container_port: raw.container_port,
        path,
        expect_status: raw.expect_status.unwrap_or(200),
        expect_body: raw.expect_body,
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60)),
    })
}

pub(super) fn resolve_containers(raw: Option<RawContainers>, field: &str) -> Result<ContainerLimits, ConfigError> {
    let defaults = ContainerLimits::default();
    let Some(c) = raw else {
        return Ok(defaults);
    };
    let field = |name: &str| format!("{field}.containers.{name}");
    let memory_mb = c.memory_mb.unwrap_or(512);
    if !(16..=1024 * 1024).contains(&memory_mb) {
        return Err(invalid(field("memory_mb"), "must be between 16 and 1048576"));
    }
    let cpus = c.cpus.unwrap_or(1.0);
    if !(cpus.is_finite() && (0.01..=1024.0).contains(&cpus)) {
        return Err(invalid(field("cpus"), "must be between 0.01 and 1024"));
    }
    let pids_limit = c.pids_limit.unwrap_or(defaults.pids_limit);
    if !(8..=1_000_000).contains(&pids_limit) {
        return Err(invalid(field("pids_limit"), "must be between 8 and 1000000"));
    }
    let capabilities = c.capabilities.unwrap_or(defaults.capabilities);
    if let Some(bad) = capabilities
        .iter()
        .find(|cap| cap.is_empty() || !cap.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
    {
        return Err(invalid(
            field("capabilities"),
            format!("{bad:?} is not a capability name like \"NET_BIND_SERVICE\""),
        ));
    }
    Ok(ContainerLimits {
        memory_bytes: i64::try_from(memory_mb * 1024 * 1024).unwrap_or(i64::MAX),
        // Whole billionths of a CPU: the rounding is below anything measurable.
        nano_cpus: (cpus * 1e9).round() as i64,
        pids_limit,
        capabilities,
    })
}
