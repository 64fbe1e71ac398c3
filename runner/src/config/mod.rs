//! Typed configuration: a TOML file, then `RUNNER_*` environment overrides, validated
//! once at start-up into [`Config`]. Each section has its own file and resolver; secrets
//! are read by one reader ([`secret`]) from the environment or files named in the config
//! and held in `secrecy` types. Every type prints its own redacted form (`Serialize`),
//! which is what `runner check-config` shows.

mod build;
mod dashboard;
mod engine;
mod forges;
mod github;
mod previews;
mod project;
mod proxy;
mod queue;
pub mod raw;
#[cfg(test)]
mod reference_tests;
mod registry;
mod secret;
mod server;
mod target;
mod terraform;
#[cfg(test)]
mod tests;

pub use build::{BuildNetwork, BuildSettings, Builder, ContainerLimits, SmokeSettings};
pub use dashboard::{DashboardConfig, ReadAccess};
pub use engine::{DEFAULT_ENGINE_HOST, EngineConfig, EngineHost, SshDestination};
pub use forges::{ForgeInstance, ForgeKind};
pub use github::{GitHubAuth, GitHubConfig, ProjectGitHub, RepoLinks};
pub use previews::{NUMBER_PLACEHOLDER, PortRange, PreviewSettings};
pub use project::{Environment, Project, PullRequestPolicy};
pub use proxy::{DEFAULT_ADMIN_URL, ProxyConfig};
pub use queue::QueueConfig;
pub use registry::{RegistryKind, RegistrySettings};
pub use server::{DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, LogFormat, ServerConfig};
pub use target::{EcsSettings, RolloutSettings, Target};
pub use terraform::{SandboxNetwork, TerraformSettings, is_credential_key};

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::domain::RepoName;
use raw::RawConfig;
use secret::{SecretReader, redacted_option};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.to_string(),
    }
}

/// The process environment, or what a test gives instead.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// An override: set and not blank.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub queue: QueueConfig,
    pub engine: EngineConfig,
    pub proxy: ProxyConfig,
    pub dashboard: DashboardConfig,
    pub github: GitHubConfig,
    /// `[forges.<name>]`: the Gitea, Forgejo and GitLab servers projects name.
    pub forges: std::collections::BTreeMap<String, ForgeInstance>,
    pub projects: Vec<Project>,
    /// Bearer token for the action endpoints; `None` disables them (every action is 401).
    #[serde(serialize_with = "redacted_option")]
    pub admin_token: Option<SecretString>,
    /// The terraform executable (`TERRAFORM_BIN`, else `terraform` on `PATH`), resolved
    /// only when a project has a terraform step.
    pub terraform_bin: Option<PathBuf>,
    /// AWS credentials in the runner's environment (`AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`): the SDK's chain reads them for ECR and ECS, and they are masked
    /// like every configured secret. What the chain resolves from elsewhere (a profile, an
    /// instance role) is masked once resolved (`secrets::hold`).
    #[serde(skip)]
    pub aws_env_credentials: Vec<SecretString>,
}

impl Config {
    /// The projects whose jobs this runner may claim: those whose `runs_on` labels are all
    /// among its `[queue] labels`. `None`: every project (no project asks for a label).
    pub fn runnable_projects(&self) -> Option<Vec<String>> {
        if self.projects.iter().all(|p| p.runs_on.is_empty()) {
            return None;
        }
        Some(
            self.projects
                .iter()
                .filter(|p| p.runs_on.iter().all(|label| self.queue.labels.contains(label)))
                .map(|p| p.name.to_string())
                .collect(),
        )
    }

    /// Reads `path` (if given) and applies overrides from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, &|name| std::env::var(name).ok())
    }

    pub fn load_with(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text, path, env)
            }
            None => Self::resolve(RawConfig::default(), env, Path::new(".")),
        }
    }

    /// Reads `text` as the config file at `path` (relative paths in it are relative to
    /// the file's directory), with `env` standing for the process environment.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw = toml::from_str::<RawConfig>(text).map_err(|error| ConfigError::Syntax {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        Self::resolve(raw, env, path.parent().unwrap_or(Path::new(".")))
    }

    fn resolve(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>, base_dir: &Path) -> Result<Self, ConfigError> {
        let overrides = Env(env);
        let secrets = SecretReader { env, base_dir };
        let server = server::resolve(raw.server, &overrides)?;
        let queue = queue::resolve(raw.queue, &overrides)?;
        let engine = engine::resolve(raw.engine, &overrides)?;
        let proxy = proxy::resolve(raw.proxy, &overrides)?;
        let dashboard = dashboard::resolve(raw.dashboard, &overrides)?;
        let github = github::resolve(raw.github, &overrides)?;
        let web_url = RepoLinks::web_url_of_api(&github.api_url);
        let forges = forges::resolve(raw.forges, secrets)?;

        let mut projects = Vec::with_capacity(raw.projects.len());
        let mut names = HashSet::new();
        let mut repositories = HashSet::new();
        for (index, project) in raw.projects.into_iter().enumerate() {
            let resolved = project::resolve(index, project, secrets, &web_url, &forges)?;
            if !names.insert(resolved.name.clone()) {
                return Err(invalid(
                    format!("projects[{index}].name"),
                    format!("{:?} is used twice", resolved.name.as_str()),
                ));
            }
            if !repositories.insert(resolved.repository.key()) {
                return Err(invalid(
                    format!("projects[{index}].repository"),
                    format!("{:?} is configured twice", resolved.repository.as_str()),
                ));
            }
            projects.push(resolved);
        }
        check_local_addresses(&projects)?;
        check_gitlab_secrets(&projects)?;
        if engine.untrusted_host.is_some()
            && let Some(index) = projects.iter().position(|p| p.previews.is_some())
        {
            return Err(invalid(
                format!("projects[{index}].previews"),
                "a preview runs a pull request's code as a service on this machine's engine, and [engine] untrusted_host keeps pull requests' code off it: use one or the other",
            ));
        }

        let admin_token = env("RUNNER_ADMIN_TOKEN")
            .filter(|t| !t.is_empty())
            .map(SecretString::from);
        if let Some(token) = &admin_token
            && token.expose_secret().len() < 16
        {
            return Err(invalid("RUNNER_ADMIN_TOKEN", "must be at least 16 characters"));
        }

        let terraform_bin = match projects.iter().find(|p| p.terraform.is_some()) {
            None => None,
            Some(project) => Some(find_terraform(env).ok_or_else(|| {
                invalid(
                    "TERRAFORM_BIN",
                    format!(
                        "project {} has a terraform step, but no terraform executable was found: install Terraform or set TERRAFORM_BIN to its path",
                        project.name
                    ),
                )
            })?),
        };

        let aws_env_credentials = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
            .into_iter()
            .filter_map(env)
            .filter(|value| !value.trim().is_empty())
            .map(SecretString::from)
            .collect();

        Ok(Self {
            server,
            queue,
            engine,
            proxy,
            dashboard,
            github,
            forges,
            projects,
            admin_token,
            terraform_bin,
            aws_env_credentials,
        })
    }

    pub fn project_by_repository(&self, repository: &RepoName) -> Option<&Project> {
        let key = repository.key();
        self.projects.iter().find(|p| p.repository.key() == key)
    }

    pub fn project(&self, name: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.name.as_str() == name)
    }

    /// Every secret value this configuration holds: what the runner masks everywhere.
    pub fn secrets(&self) -> crate::secrets::SecretSet {
        let mut set = crate::secrets::SecretSet::default();
        if let Some(token) = &self.admin_token {
            set.add(token.expose_secret());
        }
        for credential in &self.aws_env_credentials {
            set.add_credential(credential.expose_secret());
        }
        // The database's password, if its URL holds one.
        for credential in crate::secrets::url_credentials(&self.server.database_url) {
            set.add(credential);
        }
        for token in self.forges.values().filter_map(|f| f.token.as_ref()) {
            set.add(token.expose_secret());
        }
        for project in &self.projects {
            set.add(project.webhook_secret.expose_secret());
            if let Some(url) = &project.clone_url {
                for credential in crate::secrets::url_credentials(url.expose_secret()) {
                    set.add(credential);
                }
            }
            if let Some(password) = project.registry.as_ref().and_then(|r| r.password.as_ref()) {
                set.add(password.expose_secret());
            }
            match project.github.as_ref().map(|g| &g.auth) {
                Some(GitHubAuth::Token(token)) => set.add(token.expose_secret()),
                Some(GitHubAuth::App { private_key, .. }) => set.add(private_key.expose_secret()),
                None => {}
            }
            if let Some(build) = &project.build {
                for value in build.secrets.values() {
                    set.add(value.expose_secret());
                }
            }
            if let Some(terraform) = &project.terraform {
                for value in terraform
                    .secret_env
                    .values()
                    .chain(terraform.secret_vars.values())
                    .chain(terraform.pull_request_secret_env.values())
                {
                    set.add(value.expose_secret());
                }
            }
        }
        set
    }
}

/// GitLab sends a project's webhook secret as it is, where proxies and its own admins may
/// see it: another project that shares it could then be sent deliveries signed with it.
fn check_gitlab_secrets(projects: &[Project]) -> Result<(), ConfigError> {
    for (index, project) in projects.iter().enumerate() {
        if project.links.kind() != ForgeKind::GitLab {
            continue;
        }
        let secret = project.webhook_secret.expose_secret();
        if let Some(other) = projects
            .iter()
            .enumerate()
            .find(|(other, p)| *other != index && p.webhook_secret.expose_secret() == secret)
        {
            return Err(invalid(
                format!("projects[{index}].webhook_secret_env"),
                format!(
                    "{} is on GitLab, which sends its webhook secret in clear; {} uses the same secret: give each its own",
                    project.name, other.1.name
                ),
            ));
        }
    }
    Ok(())
}

/// Two local environments cannot share a route or a slot: each would take the other's
/// traffic. Nor can a preview's seat hold an environment's port or host name.
fn check_local_addresses(projects: &[Project]) -> Result<(), ConfigError> {
    let mut taken: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut ranges: Vec<(PortRange, String)> = Vec::new();
    for (index, project) in projects.iter().enumerate() {
        let Some(previews) = &project.previews else { continue };
        for range in previews.port_ranges() {
            if let Some((_, other)) = ranges.iter().find(|(r, _)| r.overlaps(range)) {
                return Err(invalid(
                    format!("projects[{index}].previews"),
                    format!(
                        "ports {range} overlap the previews of {other}; give each project's previews their own ranges"
                    ),
                ));
            }
            ranges.push((range, project.name.to_string()));
        }
        if let Some(template) = &previews.hostname
            && let Some(other) = projects[..index]
                .iter()
                .find(|p| p.previews.as_ref().and_then(|p| p.hostname.as_ref()) == Some(template))
        {
            return Err(invalid(
                format!("projects[{index}].previews.hostname"),
                format!("{template:?} is also the previews' host name of {}", other.name),
            ));
        }
    }
    for (index, project) in projects.iter().enumerate() {
        for environment in &project.environments {
            let Some(Target::Local(rollout)) = &environment.target else {
                continue;
            };
            let owner = format!("{}/{}", project.name, environment.name);
            let addresses = rollout
                .ports()
                .into_iter()
                .map(|port| format!("port {port}"))
                .chain(rollout.hostname.iter().map(|h| format!("hostname {h}")));
            for port in rollout.ports() {
                if let Some((_, previews)) = ranges.iter().find(|(r, _)| r.contains(port)) {
                    return Err(invalid(
                        format!("projects[{index}] ({owner}).rollout"),
                        format!(
                            "port {port} lies in the previews' ports of {previews}; give the environment a port outside them"
                        ),
                    ));
                }
            }
            if let Some(hostname) = &rollout.hostname
                && let Some(previews) = projects
                    .iter()
                    .find(|p| p.previews.as_ref().is_some_and(|p| p.makes_hostname(hostname)))
            {
                return Err(invalid(
                    format!("projects[{index}] ({owner}).rollout.hostname"),
                    format!("{hostname:?} is a name the previews of {} take", previews.name),
                ));
            }
            for address in addresses {
                if let Some(other) = taken.insert(address.clone(), owner.clone()) {
                    return Err(invalid(
                        format!("projects[{index}] ({owner}).rollout"),
                        format!("{address} is already used by {other}; give each local environment its own"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn find_terraform(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(explicit) = env("TERRAFORM_BIN").filter(|v| !v.trim().is_empty()) {
        let path = PathBuf::from(explicit);
        return is_executable(&path).then_some(path);
    }
    find_executable("terraform", std::ffi::OsStr::new(&env("PATH")?))
}

/// The first executable file named `name` in the directories of `path` (a `PATH` value).
pub fn find_executable(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
