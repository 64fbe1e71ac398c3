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
    pub builder: Builder,
    /// The stage of a multi-stage Dockerfile to build (default: the last).
    pub target: Option<String>,
    /// The platform to build for, like `linux/amd64` (default: the engine's own).
    pub platform: Option<String>,
    /// Images whose build cache the build may reuse (pushed with `cache_to = "inline"`,
    /// by this runner or another one): how several runners share one cache.
    pub cache_from: Vec<String>,
    /// Whether the pushed image carries its build cache (BuildKit's inline cache), for
    /// `cache_from` of later builds elsewhere.
    pub inline_cache: bool,
    /// The network of a pull request's `RUN` steps.
    pub pull_request_build_network: BuildNetwork,
}

/// The network `RUN` steps of a build get (BuildKit's network mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildNetwork {
    /// None at all: a step that downloads (a package manager, `go mod download`) fails.
    None,
    /// The engine's default bridge: the internet, and whatever the engine's host and its
    /// default bridge answer on.
    Default,
}

/// Which of the engine's builders builds the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// BuildKit when the engine has it, else the legacy builder (the reason is logged).
    Auto,
    /// BuildKit, or a failed build when the engine has none.
    BuildKit,
    /// The engine's legacy builder: no `RUN --mount`, no secret mounts.
    Legacy,
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
    /// An init process runs as PID 1 and passes signals on: an app without a SIGTERM
    /// handler still stops when asked.
    pub init: bool,
    /// How long a stopping container has after SIGTERM before SIGKILL.
    #[serde(rename = "stop_grace_secs", serialize_with = "secs")]
    pub stop_grace: Duration,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids_limit: 256,
            capabilities: vec!["NET_BIND_SERVICE".to_owned()],
            init: true,
            stop_grace: Duration::from_secs(10),
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
    let builder = match raw.builder.as_deref() {
        None | Some("auto") => Builder::Auto,
        Some("buildkit") => Builder::BuildKit,
        Some("legacy") => Builder::Legacy,
        Some(other) => {
            return Err(invalid(
                format!("{field}.build.builder"),
                format!("{other:?} is not one of \"auto\", \"buildkit\", \"legacy\""),
            ));
        }
    };
    if builder == Builder::Legacy && !build_secrets.is_empty() {
        return Err(invalid(
            format!("{field}.build.secrets"),
            "the legacy builder has no secret mounts and would write secrets into the image's history; \
             use builder = \"auto\" or \"buildkit\"",
        ));
    }
    if let Some(target) = &raw.target
        && (target.is_empty() || !target.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        return Err(invalid(
            format!("{field}.build.target"),
            format!("{target:?} is not a stage name (letters, digits, '-', '_', '.')"),
        ));
    }
    if let Some(platform) = &raw.platform {
        let parts: Vec<&str> = platform.split('/').collect();
        let well_formed = (2..=3).contains(&parts.len())
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !well_formed {
            return Err(invalid(
                format!("{field}.build.platform"),
                format!("{platform:?} is not a platform like \"linux/amd64\" or \"linux/arm64/v8\""),
            ));
        }
    }
    for reference in &raw.cache_from {
        crate::domain::ImageRef::parse(reference).map_err(|e| invalid(format!("{field}.build.cache_from"), e))?;
    }
    let inline_cache = match raw.cache_to.as_deref() {
        None => false,
        Some("inline" | "type=inline") => true,
        Some(other) => {
            return Err(invalid(
                format!("{field}.build.cache_to"),
                format!(
                    "{other:?}: the engine's BuildKit exports cache only inline, into the pushed image; \
                     use cache_to = \"inline\" and name that image in cache_from"
                ),
            ));
        }
    };
    if (inline_cache || !raw.cache_from.is_empty()) && builder == Builder::Legacy {
        return Err(invalid(
            format!("{field}.build.cache_to"),
            "a shared build cache needs BuildKit; use builder = \"auto\" or \"buildkit\"",
        ));
    }
    let pull_request_build_network = match raw.pull_request_build_network.as_deref() {
        None | Some("none") => BuildNetwork::None,
        Some("default") => BuildNetwork::Default,
        Some(other) => {
            return Err(invalid(
                format!("{field}.build.pull_request_build_network"),
                format!("{other:?} is not one of \"none\", \"default\""),
            ));
        }
    };
    Ok(BuildSettings {
        image: raw.image,
        context,
        dockerfile,
        build_args: raw.build_args,
        secrets: build_secrets,
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(1800)),
        builder,
        target: raw.target,
        platform: raw.platform,
        cache_from: raw.cache_from,
        inline_cache,
        pull_request_build_network,
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
    let stop_grace_secs = c.stop_grace_secs.unwrap_or(10);
    if stop_grace_secs > 600 {
        return Err(invalid(field("stop_grace_secs"), "must be at most 600"));
    }
    Ok(ContainerLimits {
        init: c.init.unwrap_or(defaults.init),
        stop_grace: Duration::from_secs(stop_grace_secs),
        memory_bytes: i64::try_from(memory_mb * 1024 * 1024).unwrap_or(i64::MAX),
        // Whole billionths of a CPU: the rounding is below anything measurable.
        nano_cpus: (cpus * 1e9).round() as i64,
        pids_limit,
        capabilities,
    })
}
