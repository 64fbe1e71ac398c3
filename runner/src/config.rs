//! Typed configuration: a TOML file, then `RUNNER_*` environment overrides, validated
//! once at start-up into [`Config`]. Secrets are read from the environment or files
//! named in the config and held in `secrecy` types, never printed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{GitRef, Name, ParseError, RepoName};

/// GitHub never sends a body larger than this.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/runner.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

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

/// The file as written. Every field is documented in `runner.example.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    dashboard: RawDashboard,
    #[serde(default)]
    github: RawGitHub,
    #[serde(default)]
    projects: Vec<RawProject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitHub {
    api_url: Option<String>,
    status_context: Option<String>,
    reconcile_interval_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProjectGitHub {
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    app_id: Option<u64>,
    installation_id: Option<u64>,
    private_key_env: Option<String>,
    private_key_file: Option<PathBuf>,
    hook_id: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDashboard {
    read_access: Option<String>,
    public_url: Option<String>,
    session_hours: Option<u32>,
    login_attempts_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    database_url: Option<String>,
    max_body_bytes: Option<usize>,
    delivery_body_retention_days: Option<u32>,
    log_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    workers: Option<usize>,
    lease_secs: Option<u64>,
    max_attempts: Option<u32>,
    job_log_max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: String,
    repository: String,
    deploy_branches: Vec<String>,
    webhook_secret_env: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    #[serde(default)]
    deploy_tags: bool,
    environment: Option<String>,
    clone_url: Option<String>,
    pull_requests: Option<String>,
    containers: Option<RawContainers>,
    build: Option<RawBuild>,
    smoke: Option<RawSmoke>,
    registry: Option<RawRegistry>,
    terraform: Option<RawTerraform>,
    rollout: Option<RawRollout>,
    github: Option<RawProjectGitHub>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTerraform {
    dir: String,
    image_var: Option<String>,
    #[serde(default)]
    vars: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    backend_config: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    secret_env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    secret_vars: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    plan_pull_requests: bool,
    #[serde(default)]
    pull_request_env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pull_request_secret_env: std::collections::BTreeMap<String, String>,
    workspace: Option<String>,
    #[serde(default)]
    require_approval: bool,
    lock_timeout_secs: Option<u64>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    image: String,
    context: Option<String>,
    dockerfile: Option<String>,
    #[serde(default)]
    build_args: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    secrets: std::collections::BTreeMap<String, String>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainers {
    memory_mb: Option<u64>,
    cpus: Option<f64>,
    pids_limit: Option<i64>,
    capabilities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmoke {
    container_port: u16,
    path: Option<String>,
    expect_status: Option<u16>,
    expect_body: Option<String>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    kind: Option<String>,
    url: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    username_env: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    target: String,
    host_port: Option<u16>,
    bind: Option<String>,
    timeout_secs: Option<u64>,
    cluster: Option<String>,
    service: Option<String>,
    container: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    rollback_on_failure: Option<bool>,
    url: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub queue: QueueConfig,
    pub dashboard: DashboardConfig,
    pub github: GitHubConfig,
    pub projects: Vec<Project>,
    /// Bearer token for the action endpoints; `None` disables them (every action is 401).
    pub admin_token: Option<SecretString>,
    /// The terraform executable (`TERRAFORM_BIN`, else `terraform` on `PATH`), resolved
    /// only when a project has a terraform step.
    pub terraform_bin: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub max_body_bytes: usize,
    /// Raw bodies of accepted deliveries are kept this long, for inspection and replay.
    pub delivery_body_retention: Duration,
    pub log_format: LogFormat,
}

/// Reporting to GitHub and recovering missed deliveries (for projects with credentials).
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// `https://api.github.com`, or a GitHub Enterprise `https://HOST/api/v3`.
    pub api_url: String,
    /// Commit statuses are named `<context>/<kind> (<environment>)`.
    pub status_context: String,
    pub reconcile_interval: Duration,
}

/// How the runner authenticates to GitHub for one project.
#[derive(Clone)]
pub enum GitHubAuth {
    Token(SecretString),
    App {
        app_id: u64,
        /// Looked up from the repository when not given.
        installation_id: Option<u64>,
        private_key: SecretString,
    },
}

impl std::fmt::Debug for GitHubAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token([redacted])"),
            Self::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .field("private_key", &"[redacted]")
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProjectGitHub {
    pub auth: GitHubAuth,
    /// The repository webhook whose deliveries are reconciled.
    pub hook_id: Option<i64>,
}

/// Who may read the dashboard's pages and the read endpoints of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAccess {
    /// Anyone who can reach the runner.
    Public,
    /// Only a logged-in admin (session cookie) or a caller with the admin token.
    Login,
}

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub read_access: ReadAccess,
    /// Where people reach the dashboard (`https://ci.example.com`), for links the runner
    /// hands out; an `https` URL also marks the session cookie `Secure`.
    pub public_url: Option<String>,
    pub session_lifetime: Duration,
    /// Login attempts one client address may make per minute.
    pub login_attempts_per_minute: u32,
}

impl DashboardConfig {
    pub fn secure_cookies(&self) -> bool {
        self.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
    }
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Jobs that may run at once (deploys to one environment still run one at a time).
    pub workers: usize,
    /// A claimed job whose worker stops renewing it for this long is claimed again.
    pub lease: Duration,
    /// Claims per job before it is failed as abandoned.
    pub max_attempts: u32,
    /// A job's log stops growing at this many bytes (the cut is said in the log).
    pub job_log_max_bytes: u64,
}

#[derive(Clone)]
pub struct Project {
    pub name: Name,
    pub repository: RepoName,
    pub deploy_branches: Vec<GitRef>,
    pub deploy_tags: bool,
    pub environment: Name,
    /// Where checkout fetches from; defaults to the repository's GitHub URL. May hold
    /// credentials, so it is masked wherever text is shown.
    pub clone_url: Option<SecretString>,
    pub webhook_secret: SecretString,
    /// Which pull requests run verify jobs.
    pub pull_requests: PullRequestPolicy,
    /// Limits of the containers that run the project's code (smoke test and rollout).
    pub containers: ContainerLimits,
    pub build: Option<BuildSettings>,
    pub smoke: Option<SmokeSettings>,
    pub registry: Option<RegistrySettings>,
    pub terraform: Option<TerraformSettings>,
    /// Where deploys go live (`[projects.rollout] target = ...`).
    pub target: Option<Target>,
    /// Credentials for reporting to GitHub; `None`: nothing is reported.
    pub github: Option<ProjectGitHub>,
    /// The repository's pages on its forge, linked from the dashboard and the image labels.
    pub links: RepoLinks,
}

/// Where people (and git) find a repository on GitHub or GitHub Enterprise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoLinks {
    /// `https://github.com/<owner>/<name>`.
    repository: String,
}

impl RepoLinks {
    pub fn new(web_url: &str, repository: &RepoName) -> Self {
        Self {
            repository: format!("{}/{repository}", web_url.trim_end_matches('/')),
        }
    }

    /// The web address of the GitHub whose API is at `api_url`: `https://github.com` for
    /// `https://api.github.com`, `https://HOST` for an Enterprise `https://HOST/api/v3`.
    pub fn web_url_of_api(api_url: &str) -> String {
        let api_url = api_url.trim_end_matches('/');
        if let Some(rest) = api_url.strip_prefix("https://api.") {
            return format!("https://{rest}");
        }
        api_url.strip_suffix("/api/v3").unwrap_or(api_url).to_owned()
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn commit(&self, sha: &str) -> String {
        format!("{}/commit/{sha}", self.repository)
    }

    pub fn pull_request(&self, number: i64) -> String {
        format!("{}/pull/{number}", self.repository)
    }

    /// Where checkout fetches from when the project names no `clone_url`.
    pub fn clone_url(&self) -> String {
        format!("{}.git", self.repository)
    }
}

/// How the image is built from the checked-out commit.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Repository part of the image name; tagged `<image>:<sha>`.
    pub image: String,
    /// Build context, relative to the repository root.
    pub context: String,
    /// Dockerfile, relative to the context.
    pub dockerfile: String,
    pub build_args: std::collections::BTreeMap<String, String>,
    /// Build secrets by name: given only to builds of trusted code (never to a pull
    /// request's build), and masked everywhere.
    pub secrets: std::collections::BTreeMap<String, SecretString>,
    pub timeout: Duration,
}

/// Which pull requests run verify jobs (code from a fork is a stranger's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRequestPolicy {
    /// No pull request runs anything.
    Off,
    /// Pull requests from branches of the repository itself; a fork's are ignored.
    SameRepository,
    /// As `SameRepository`, and a fork's pull request is queued held until an admin
    /// approves it; nothing of it runs before.
    ApproveForks,
}

impl PullRequestPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::SameRepository => "same-repository",
            Self::ApproveForks => "approve-forks",
        }
    }
}

/// Resource limits and privileges of the containers that run a project's image.
#[derive(Debug, Clone, PartialEq)]
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

/// How a built image proves it works: run it and ask its health endpoint.
#[derive(Debug, Clone)]
pub struct SmokeSettings {
    pub container_port: u16,
    pub path: String,
    pub expect_status: u16,
    /// When set, the body (trimmed) must equal it.
    pub expect_body: Option<String>,
    /// How long the app gets, once its container runs, to answer as expected.
    pub timeout: Duration,
}

/// Which kind of registry images are pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryKind {
    /// Any Docker Registry v2, with optional basic auth.
    V2,
    /// Amazon ECR: repository created when missing, login from `GetAuthorizationToken`.
    Ecr {
        region: Option<String>,
        /// The ECR API endpoint, when not AWS's own (a VPC endpoint, or a local emulator).
        endpoint_url: Option<String>,
    },
}

/// The registry the image is pushed to.
#[derive(Clone)]
pub struct RegistrySettings {
    pub kind: RegistryKind,
    /// `host[:port][/path]`, without a scheme. Required for v2; for ECR it overrides the
    /// registry host the token names (a mirror or proxy in front of ECR).
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Infrastructure as code run for each deploy: plan, optional approval, apply.
#[derive(Debug, Clone)]
pub struct TerraformSettings {
    /// The module's directory in the repository, relative to its root.
    pub dir: String,
    /// The variable that receives the pushed image (`image_url`).
    pub image_var: String,
    pub vars: std::collections::BTreeMap<String, String>,
    /// `-backend-config` key/value pairs for `init`.
    pub backend_config: std::collections::BTreeMap<String, String>,
    /// Extra environment of the terraform commands of deploys (e.g. `AWS_PROFILE`).
    pub env: std::collections::BTreeMap<String, String>,
    /// Secret environment of deploys' terraform commands (credentials), masked everywhere.
    pub secret_env: std::collections::BTreeMap<String, SecretString>,
    /// Secret variables of deploys, masked everywhere.
    pub secret_vars: std::collections::BTreeMap<String, SecretString>,
    /// Whether verify jobs of pull requests plan at all.
    pub plan_pull_requests: bool,
    /// The environment of a pull request's plan (read-only credentials), never `env`.
    pub pull_request_env: std::collections::BTreeMap<String, String>,
    pub pull_request_secret_env: std::collections::BTreeMap<String, SecretString>,
    pub workspace: String,
    /// Deploys wait for `POST /api/jobs/{id}/approve` before applying a plan with changes.
    pub require_approval: bool,
    pub lock_timeout: Duration,
    /// Per terraform command.
    pub timeout: Duration,
}

/// Where a deploy goes live on ECS.
#[derive(Debug, Clone)]
pub struct EcsSettings {
    pub cluster: String,
    pub service: String,
    /// The container whose image a deploy replaces (when terraform does not).
    pub container: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// How long the service gets to become stable on the new revision.
    pub timeout: Duration,
    /// On failure or timeout, put the previous task definition back.
    pub rollback_on_failure: bool,
    /// The app's URL, recorded on each deployment (else terraform's `app_url` output).
    pub url: Option<String>,
}

/// Where a project's deploys go live.
#[derive(Debug, Clone)]
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

/// Where a deploy goes live: a container on this machine's Docker engine.
#[derive(Debug, Clone)]
pub struct RolloutSettings {
    pub host_port: u16,
    pub bind: std::net::IpAddr,
    /// Split between the candidate's and the new live container's health checks.
    pub timeout: Duration,
}

impl RolloutSettings {
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.bind, self.host_port)
    }
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project")
            .field("name", &self.name)
            .field("repository", &self.repository)
            .field("deploy_branches", &self.deploy_branches)
            .field("deploy_tags", &self.deploy_tags)
            .field("environment", &self.environment)
            .field("webhook_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Project {
    pub fn deploys_ref(&self, git_ref: &GitRef) -> bool {
        match git_ref.kind() {
            crate::domain::RefKind::Branch => self.deploy_branches.contains(git_ref),
            crate::domain::RefKind::Tag => self.deploy_tags,
            crate::domain::RefKind::Other => false,
        }
    }
}

impl Config {
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
        let env_nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());

        let listen_raw = env_nonempty("RUNNER_LISTEN")
            .or(raw.server.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_raw.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("{listen_raw:?} is not an address like 127.0.0.1:8080"),
            )
        })?;
        let database_url = env_nonempty("RUNNER_DATABASE_URL")
            .or(raw.server.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !database_url.starts_with("sqlite:") {
            return Err(invalid(
                "server.database_url",
                format!("{database_url:?}: only sqlite: URLs are supported by this build"),
            ));
        }
        let max_body_bytes = match env_nonempty("RUNNER_MAX_BODY_BYTES") {
            Some(v) => v
                .parse()
                .map_err(|_| invalid("RUNNER_MAX_BODY_BYTES", format!("{v:?} is not a number of bytes")))?,
            None => raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        };
        if max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        let retention_days = raw.server.delivery_body_retention_days.unwrap_or(14);
        let log_format = match env_nonempty("RUNNER_LOG_FORMAT")
            .or(raw.server.log_format)
            .as_deref()
            .unwrap_or("human")
        {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "server.log_format",
                    format!("{other:?} is not \"human\" or \"json\""),
                ));
            }
        };

        let workers = match env_nonempty("RUNNER_WORKERS") {
            Some(v) => v
                .parse()
                .map_err(|_| invalid("RUNNER_WORKERS", format!("{v:?} is not a number")))?,
            None => raw.queue.workers.unwrap_or(2),
        };
        if !(1..=64).contains(&workers) {
            return Err(invalid("queue.workers", "must be between 1 and 64"));
        }
        let lease_secs = raw.queue.lease_secs.unwrap_or(30);
        if !(2..=3600).contains(&lease_secs) {
            return Err(invalid("queue.lease_secs", "must be between 2 and 3600"));
        }
        let max_attempts = raw.queue.max_attempts.unwrap_or(3);
        if !(1..=20).contains(&max_attempts) {
            return Err(invalid("queue.max_attempts", "must be between 1 and 20"));
        }

        let read_access = match env_nonempty("RUNNER_DASHBOARD_READ_ACCESS")
            .or(raw.dashboard.read_access)
            .as_deref()
            .unwrap_or("login")
        {
            "public" => ReadAccess::Public,
            "login" => ReadAccess::Login,
            other => {
                return Err(invalid(
                    "dashboard.read_access",
                    format!("{other:?} is not \"public\" or \"login\""),
                ));
            }
        };
        let public_url = env_nonempty("RUNNER_PUBLIC_URL")
            .or(raw.dashboard.public_url)
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "dashboard.public_url",
                format!("{url:?} must start with http:// or https://"),
            ));
        }
        let login_attempts_per_minute = raw.dashboard.login_attempts_per_minute.unwrap_or(10);
        if !(1..=1000).contains(&login_attempts_per_minute) {
            return Err(invalid(
                "dashboard.login_attempts_per_minute",
                "must be between 1 and 1000",
            ));
        }
        let job_log_max_bytes = raw.queue.job_log_max_bytes.unwrap_or(50 * 1024 * 1024);
        if job_log_max_bytes < 64 * 1024 {
            return Err(invalid("queue.job_log_max_bytes", "must be at least 65536"));
        }
        let session_hours = raw.dashboard.session_hours.unwrap_or(12);
        if !(1..=24 * 30).contains(&session_hours) {
            return Err(invalid("dashboard.session_hours", "must be between 1 and 720"));
        }

        let api_url = env_nonempty("RUNNER_GITHUB_API_URL")
            .or(raw.github.api_url)
            .unwrap_or_else(|| "https://api.github.com".to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(invalid("github.api_url", format!("{api_url:?} must be an http(s) URL")));
        }
        let web_url = RepoLinks::web_url_of_api(&api_url);
        let github = GitHubConfig {
            api_url,
            status_context: raw.github.status_context.unwrap_or_else(|| "runner".to_owned()),
            reconcile_interval: Duration::from_secs(raw.github.reconcile_interval_secs.unwrap_or(300).max(10)),
        };

        let mut projects = Vec::with_capacity(raw.projects.len());
        let mut names = HashSet::new();
        let mut repositories = HashSet::new();
        for (index, project) in raw.projects.into_iter().enumerate() {
            let resolved = resolve_project(index, project, env, base_dir, &web_url)?;
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

        Ok(Self {
            server: ServerConfig {
                listen,
                database_url,
                max_body_bytes,
                delivery_body_retention: Duration::from_secs(u64::from(retention_days) * 86_400),
                log_format,
            },
            queue: QueueConfig {
                workers,
                lease: Duration::from_secs(lease_secs),
                max_attempts,
                job_log_max_bytes,
            },
            github,
            dashboard: DashboardConfig {
                read_access,
                public_url,
                session_lifetime: Duration::from_secs(u64::from(session_hours) * 3600),
                login_attempts_per_minute,
            },
            projects,
            admin_token,
            terraform_bin,
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

/// Reads `NAME = "ENV_VAR"` pairs: each value from the named environment variable.
fn read_secret_map(
    names: std::collections::BTreeMap<String, String>,
    field: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<std::collections::BTreeMap<String, SecretString>, ConfigError> {
    names
        .into_iter()
        .map(|(name, var)| {
            let value = env(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
                invalid(
                    format!("{field}.{name}"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            Ok((name, SecretString::from(value)))
        })
        .collect()
}

fn find_terraform(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let is_executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(explicit) = env("TERRAFORM_BIN").filter(|v| !v.trim().is_empty()) {
        let path = PathBuf::from(explicit);
        return is_executable(&path).then_some(path);
    }
    env("PATH")?
        .split(':')
        .map(|dir| Path::new(dir).join("terraform"))
        .find(|candidate| is_executable(candidate))
}

fn resolve_project(
    index: usize,
    raw: RawProject,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: &Path,
    web_url: &str,
) -> Result<Project, ConfigError> {
    let field = |name: &str| format!("projects[{index}].{name}");
    fn parse<T>(field: String, result: Result<T, ParseError>) -> Result<T, ConfigError> {
        result.map_err(|e| invalid(field, e))
    }

    let name = parse(field("name"), Name::parse(&raw.name))?;
    let repository = parse(field("repository"), RepoName::parse(&raw.repository))?;
    if raw.deploy_branches.is_empty() {
        return Err(invalid(
            field("deploy_branches"),
            "list at least one branch, e.g. [\"main\"]",
        ));
    }
    let deploy_branches = raw
        .deploy_branches
        .iter()
        .map(|branch| {
            let qualified = if branch.starts_with("refs/") {
                GitRef::parse(branch)
            } else {
                GitRef::branch(branch)
            };
            parse(field("deploy_branches"), qualified)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let environment = parse(
        field("environment"),
        Name::parse(raw.environment.as_deref().unwrap_or("production")),
    )?;

    let secret = match (&raw.webhook_secret_env, &raw.webhook_secret_file) {
        (Some(var), None) => env(var).ok_or_else(|| {
            invalid(
                field("webhook_secret_env"),
                format!(
                    "environment variable {var} is not set; export the webhook secret of {} in it",
                    raw.repository
                ),
            )
        })?,
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(
                    field("webhook_secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                field("webhook_secret_env"),
                "set webhook_secret_env or webhook_secret_file, not both",
            ));
        }
        (None, None) => {
            return Err(invalid(
                field("webhook_secret_env"),
                "required: the env var that holds the webhook secret",
            ));
        }
    };
    if secret.trim().is_empty() {
        return Err(invalid(
            field("webhook_secret_env"),
            "the webhook secret is empty; a project needs a secret",
        ));
    }
    let pull_requests = match raw.pull_requests.as_deref().unwrap_or("same-repository") {
        "off" => PullRequestPolicy::Off,
        "same-repository" => PullRequestPolicy::SameRepository,
        "approve-forks" => PullRequestPolicy::ApproveForks,
        other => {
            return Err(invalid(
                field("pull_requests"),
                format!("{other:?} is not \"off\", \"same-repository\" or \"approve-forks\""),
            ));
        }
    };
    let containers = match raw.containers {
        None => ContainerLimits::default(),
        Some(c) => {
            let defaults = ContainerLimits::default();
            let memory_mb = c.memory_mb.unwrap_or(512);
            if !(16..=1024 * 1024).contains(&memory_mb) {
                return Err(invalid(field("containers.memory_mb"), "must be between 16 and 1048576"));
            }
            let cpus = c.cpus.unwrap_or(1.0);
            if !(cpus.is_finite() && (0.01..=1024.0).contains(&cpus)) {
                return Err(invalid(field("containers.cpus"), "must be between 0.01 and 1024"));
            }
            let pids_limit = c.pids_limit.unwrap_or(defaults.pids_limit);
            if !(8..=1_000_000).contains(&pids_limit) {
                return Err(invalid(field("containers.pids_limit"), "must be between 8 and 1000000"));
            }
            let capabilities = c.capabilities.unwrap_or(defaults.capabilities);
            if let Some(bad) = capabilities
                .iter()
                .find(|cap| cap.is_empty() || !cap.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            {
                return Err(invalid(
                    field("containers.capabilities"),
                    format!("{bad:?} is not a capability name like \"NET_BIND_SERVICE\""),
                ));
            }
            ContainerLimits {
                memory_bytes: i64::try_from(memory_mb * 1024 * 1024).unwrap_or(i64::MAX),
                // Whole billionths of a CPU: the rounding is below anything measurable.
                nano_cpus: (cpus * 1e9).round() as i64,
                pids_limit,
                capabilities,
            }
        }
    };
    let build = raw
        .build
        .map(|b| -> Result<BuildSettings, ConfigError> {
            crate::domain::ImageRef::parse(&b.image).map_err(|e| invalid(field("build.image"), e))?;
            if b.image.contains(':') || b.image.contains('@') {
                return Err(invalid(
                    field("build.image"),
                    "give the repository name only; the runner tags it with the commit SHA",
                ));
            }
            let context = b.context.unwrap_or_else(|| ".".to_owned());
            let dockerfile = b.dockerfile.unwrap_or_else(|| "Dockerfile".to_owned());
            for (name, value) in [("build.context", &context), ("build.dockerfile", &dockerfile)] {
                if value.starts_with('/') || value.split('/').any(|part| part == "..") {
                    return Err(invalid(field(name), "must be a relative path inside the repository"));
                }
            }
            let secrets = read_secret_map(b.secrets, &field("build.secrets"), env)?;
            if let Some(name) = secrets.keys().find(|name| b.build_args.contains_key(*name)) {
                return Err(invalid(
                    field("build.secrets"),
                    format!("{name} is both a build arg and a secret; keep it in one of them"),
                ));
            }
            Ok(BuildSettings {
                image: b.image,
                context,
                dockerfile,
                build_args: b.build_args,
                secrets,
                timeout: Duration::from_secs(b.timeout_secs.unwrap_or(1800)),
            })
        })
        .transpose()?;
    let smoke = raw.smoke.map(|s| SmokeSettings {
        container_port: s.container_port,
        path: s.path.unwrap_or_else(|| "/health".to_owned()),
        expect_status: s.expect_status.unwrap_or(200),
        expect_body: s.expect_body,
        timeout: Duration::from_secs(s.timeout_secs.unwrap_or(60)),
    });
    if let Some(smoke) = &smoke
        && !smoke.path.starts_with('/')
    {
        return Err(invalid(field("smoke.path"), "must start with '/'"));
    }
    let registry = raw
        .registry
        .map(|r| -> Result<RegistrySettings, ConfigError> {
            let kind = match r.kind.as_deref().unwrap_or("v2") {
                "v2" => RegistryKind::V2,
                "ecr" => RegistryKind::Ecr {
                    region: r.region.clone(),
                    endpoint_url: r.endpoint_url.clone(),
                },
                other => {
                    return Err(invalid(
                        field("registry.kind"),
                        format!("{other:?} is not \"v2\" or \"ecr\""),
                    ));
                }
            };
            if (r.region.is_some() || r.endpoint_url.is_some()) && kind == RegistryKind::V2 {
                return Err(invalid(
                    field("registry.region"),
                    "region and endpoint_url only apply to kind = \"ecr\"",
                ));
            }
            match &r.url {
                None if kind == RegistryKind::V2 => {
                    return Err(invalid(
                        field("registry.url"),
                        "required for a v2 registry, e.g. \"127.0.0.1:5000\"",
                    ));
                }
                Some(url) if url.contains("://") || url.is_empty() || url.ends_with('/') => {
                    return Err(invalid(
                        field("registry.url"),
                        "give host[:port][/path] without a scheme, e.g. 127.0.0.1:5000",
                    ));
                }
                _ => {}
            }
            let read = |name: &Option<String>, what: &str| -> Result<Option<String>, ConfigError> {
                name.as_ref()
                    .map(|var| {
                        env(var).ok_or_else(|| invalid(field(what), format!("environment variable {var} is not set")))
                    })
                    .transpose()
            };
            Ok(RegistrySettings {
                kind,
                url: r.url.clone(),
                username: read(&r.username_env, "registry.username_env")?,
                password: read(&r.password_env, "registry.password_env")?.map(SecretString::from),
            })
        })
        .transpose()?;
    let mut target = None;
    if let Some(r) = raw.rollout {
        target = Some(match r.target.as_str() {
            "local" => {
                let host_port = r
                    .host_port
                    .ok_or_else(|| invalid(field("rollout.host_port"), "is required for target \"local\""))?;
                let bind_raw = r.bind.unwrap_or_else(|| "127.0.0.1".to_owned());
                Target::Local(RolloutSettings {
                    host_port,
                    bind: bind_raw
                        .parse()
                        .map_err(|_| invalid(field("rollout.bind"), format!("{bind_raw:?} is not an IP address")))?,
                    timeout: Duration::from_secs(r.timeout_secs.unwrap_or(60)),
                })
            }
            "ecs" => {
                let required = |value: Option<String>, key: &str| {
                    value
                        .filter(|v| !v.trim().is_empty())
                        .ok_or_else(|| invalid(field(&format!("rollout.{key}")), "is required for target \"ecs\""))
                };
                Target::Ecs(EcsSettings {
                    cluster: required(r.cluster, "cluster")?,
                    service: required(r.service, "service")?,
                    container: r.container.unwrap_or_else(|| "app".to_owned()),
                    region: r.region,
                    endpoint_url: r.endpoint_url,
                    timeout: Duration::from_secs(r.timeout_secs.unwrap_or(600)),
                    rollback_on_failure: r.rollback_on_failure.unwrap_or(true),
                    url: r.url,
                })
            }
            other => {
                return Err(invalid(
                    field("rollout.target"),
                    format!("{other:?} is not a supported target (\"local\" or \"ecs\")"),
                ));
            }
        });
    }
    let github = raw
        .github
        .map(|g| -> Result<ProjectGitHub, ConfigError> {
            let secret = |env_name: &Option<String>,
                          file: &Option<PathBuf>,
                          what: &str|
             -> Result<Option<String>, ConfigError> {
                if let Some(var) = env_name {
                    return env(var).filter(|v| !v.trim().is_empty()).map(Some).ok_or_else(|| {
                        invalid(
                            field(&format!("github.{what}_env")),
                            format!("environment variable {var} is not set"),
                        )
                    });
                }
                if let Some(path) = file {
                    let path = if path.is_absolute() {
                        path.clone()
                    } else {
                        base_dir.join(path)
                    };
                    return std::fs::read_to_string(&path)
                        .map(|v| Some(v.trim().to_owned()))
                        .map_err(|e| {
                            invalid(
                                field(&format!("github.{what}_file")),
                                format!("{}: {e}", path.display()),
                            )
                        });
                }
                Ok(None)
            };
            let token = secret(&g.token_env, &g.token_file, "token")?;
            let key = secret(&g.private_key_env, &g.private_key_file, "private_key")?;
            let auth = match (token, g.app_id, key) {
                (Some(token), None, None) => GitHubAuth::Token(SecretString::from(token)),
                (None, Some(app_id), Some(key)) => {
                    if !key.contains("PRIVATE KEY") {
                        return Err(invalid(field("github.private_key_file"), "is not a PEM private key"));
                    }
                    GitHubAuth::App {
                        app_id,
                        installation_id: g.installation_id,
                        private_key: SecretString::from(key),
                    }
                }
                _ => {
                    return Err(invalid(
                        field("github"),
                        "give either token_env/token_file, or app_id with private_key_env/private_key_file",
                    ));
                }
            };
            Ok(ProjectGitHub {
                auth,
                hook_id: g.hook_id,
            })
        })
        .transpose()?;
    let terraform = raw
        .terraform
        .map(|t| -> Result<TerraformSettings, ConfigError> {
            if t.dir.is_empty() || t.dir.starts_with('/') || t.dir.split('/').any(|part| part == "..") {
                return Err(invalid(
                    field("terraform.dir"),
                    "must be a relative path inside the repository",
                ));
            }
            let secret_vars = read_secret_map(t.secret_vars, &field("terraform.secret_vars"), env)?;
            if let Some(name) = secret_vars.keys().find(|name| t.vars.contains_key(*name)) {
                return Err(invalid(
                    field("terraform.secret_vars"),
                    format!("{name} is both a plain and a secret variable"),
                ));
            }
            Ok(TerraformSettings {
                dir: t.dir,
                image_var: t.image_var.unwrap_or_else(|| "image_url".to_owned()),
                vars: t.vars,
                backend_config: t.backend_config,
                env: t.env,
                secret_env: read_secret_map(t.secret_env, &field("terraform.secret_env"), env)?,
                secret_vars,
                plan_pull_requests: t.plan_pull_requests,
                pull_request_env: t.pull_request_env,
                pull_request_secret_env: read_secret_map(
                    t.pull_request_secret_env,
                    &field("terraform.pull_request_secret_env"),
                    env,
                )?,
                workspace: t.workspace.unwrap_or_else(|| "default".to_owned()),
                require_approval: t.require_approval,
                lock_timeout: Duration::from_secs(t.lock_timeout_secs.unwrap_or(60)),
                timeout: Duration::from_secs(t.timeout_secs.unwrap_or(1800)),
            })
        })
        .transpose()?;
    let links = RepoLinks::new(web_url, &repository);
    Ok(Project {
        name,
        repository,
        deploy_branches,
        deploy_tags: raw.deploy_tags,
        environment,
        clone_url: raw.clone_url.filter(|u| !u.is_empty()).map(SecretString::from),
        webhook_secret: SecretString::from(secret),
        pull_requests,
        containers,
        build,
        smoke,
        registry,
        terraform,
        target,
        github,
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(toml).map_err(|e| ConfigError::Syntax {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::resolve(
            raw,
            &move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            Path::new("."),
        )
    }

    const HELLO: &str = r#"
        [[projects]]
        name = "hello"
        repository = "Codertocat/Hello-World"
        deploy_branches = ["master"]
        webhook_secret_env = "HELLO_SECRET"
    "#;

    #[test]
    fn the_pinned_keys_alone_make_a_valid_project() {
        let config = load(HELLO, &[("HELLO_SECRET", "s3cret")]).expect("valid");
        let project = &config.projects[0];
        assert_eq!(project.deploy_branches[0].as_str(), "refs/heads/master");
        assert_eq!(project.environment.as_str(), "production");
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.server.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.server.max_body_bytes, 25 * 1024 * 1024);
        assert!(
            config
                .project_by_repository(&RepoName::parse("codertocat/hello-world").expect("ok"))
                .is_some()
        );
    }

    #[test]
    fn env_overrides_the_file() {
        let config = load(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("RUNNER_LISTEN", "127.0.0.1:9999"),
                ("RUNNER_DATABASE_URL", "sqlite::memory:"),
            ],
        )
        .expect("valid");
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.server.database_url, "sqlite::memory:");
    }

    #[test]
    fn a_missing_or_empty_secret_refuses_to_start_and_names_the_variable() {
        let error = load(HELLO, &[]).expect_err("unset").to_string();
        assert!(error.contains("HELLO_SECRET") && error.contains("not set"), "{error}");
        let error = load(HELLO, &[("HELLO_SECRET", "  ")]).expect_err("empty").to_string();
        assert!(error.contains("empty"), "{error}");
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let config = load(HELLO, &[("HELLO_SECRET", "very-secret-value")]).expect("valid");
        assert!(!format!("{config:?}").contains("very-secret-value"));
    }

    #[test]
    fn every_secret_the_config_holds_is_masked_in_every_encoding() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn\n/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yP\n-----END RSA PRIVATE KEY-----\n";
        std::fs::write(dir.path().join("app.pem"), key).expect("write");
        let toml = format!(
            r#"
[[projects]]
name = "hello"
repository = "o/hello"
deploy_branches = ["main"]
webhook_secret_env = "WEBHOOK"
clone_url = "https://x-access-token:clone-url-token-0001@github.com/o/hello.git"
[projects.build]
image = "hello"
secrets = {{ NPM_TOKEN = "BUILD" }}
[projects.registry]
url = "127.0.0.1:5000"
username_env = "REG_USER"
password_env = "REG_PASSWORD"
[projects.github]
token_env = "GH_TOKEN"

[[projects]]
name = "app"
repository = "o/app"
deploy_branches = ["main"]
webhook_secret_env = "WEBHOOK2"
[projects.github]
app_id = 12
private_key_file = "{pem}"
[projects.terraform]
dir = "infra"
secret_env = {{ AWS_SECRET_ACCESS_KEY = "TF_ENV" }}
secret_vars = {{ db_password = "TF_VAR" }}
pull_request_secret_env = {{ READ_ONLY = "TF_PR" }}
"#,
            pem = dir.path().join("app.pem").display()
        );
        let bin = std::env::current_exe().expect("an executable file");
        let env = [
            ("WEBHOOK", "webhook-secret-0002"),
            ("WEBHOOK2", "webhook-secret-0003"),
            ("BUILD", "build-secret-0004"),
            ("REG_USER", "deployer"),
            ("REG_PASSWORD", "registry-password-0005"),
            ("GH_TOKEN", "ghp_github-token-0006"),
            ("TF_ENV", "terraform-env-secret-0007"),
            ("TF_VAR", "terraform-var-secret-0008"),
            ("TF_PR", "pull-request-secret-0009"),
            ("RUNNER_ADMIN_TOKEN", "admin-token-secret-0010"),
            ("TERRAFORM_BIN", bin.to_str().expect("utf-8")),
        ];
        let config = load(&toml, &env).expect("valid");
        let mask = config.secrets().mask();
        let mut secrets: Vec<&str> = env
            .iter()
            .filter(|(name, _)| !matches!(*name, "REG_USER" | "TERRAFORM_BIN"))
            .map(|(_, value)| *value)
            .collect();
        secrets.push("clone-url-token-0001");
        secrets.extend(key.lines().filter(|l| !l.starts_with("-----")));
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
        ];
        for secret in secrets {
            let mut forms = vec![
                format!("x {secret} y"),
                serde_json::json!({ "v": format!("\"{secret}\"") }).to_string(),
                format!("?t={}", secret.replace('/', "%2F").replace('+', "%2B")),
            ];
            for prefix in ["", "a", "ab"] {
                for engine in engines {
                    forms.push(engine.encode(format!("{prefix}VAR={secret}\0NEXT=1")));
                }
            }
            for form in forms {
                let masked = mask.apply(&form);
                assert!(masked.contains("***"), "{secret} not masked in {form}");
            }
            assert!(!mask.apply(secret).contains(secret), "{secret}");
        }
        assert_eq!(
            mask.apply("deployer pushes"),
            "deployer pushes",
            "a user name is not a secret"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\ndatabase_url = \"postgres://x\"", "only sqlite"),
            ("[queue]\nworkers = 0", "queue.workers"),
            ("[server]\nlistn = \"x\"", "unknown field"),
            (
                "[[projects]]\nname = \"Bad Name\"\nrepository = \"a/b\"\ndeploy_branches = [\"main\"]\nwebhook_secret_env = \"S\"",
                "projects[0].name",
            ),
            (
                "[[projects]]\nname = \"a\"\nrepository = \"a/b\"\ndeploy_branches = [\"$(id)\"]\nwebhook_secret_env = \"S\"",
                "projects[0].deploy_branches",
            ),
            (
                "[[projects]]\nname = \"a\"\nrepository = \"a/b\"\ndeploy_branches = []\nwebhook_secret_env = \"S\"",
                "at least one branch",
            ),
        ];
        for (toml, expected) in cases {
            let error = load(toml, &[("S", "x")]).expect_err(toml).to_string();
            assert!(error.contains(expected), "{toml}: {error}");
        }
        let twice = format!("{HELLO}\n{}", HELLO.replace("hello\"", "other\""));
        let error = load(&twice, &[("HELLO_SECRET", "x")])
            .expect_err("dup repo")
            .to_string();
        assert!(error.contains("configured twice"), "{error}");
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let error = load("", &[("RUNNER_ADMIN_TOKEN", "short")])
            .expect_err("short")
            .to_string();
        assert!(error.contains("RUNNER_ADMIN_TOKEN"), "{error}");
    }

    const TERRAFORM_PROJECT: &str = r#"
[[projects]]
name = "app"
repository = "o/app"
deploy_branches = ["main"]
webhook_secret_env = "S"
[projects.terraform]
dir = "terraform"
require_approval = true
[projects.rollout]
target = "ecs"
cluster = "c"
service = "s"
"#;

    #[test]
    fn a_terraform_step_without_a_terraform_executable_refuses_to_start() {
        let error = load(TERRAFORM_PROJECT, &[("S", "secret-value"), ("PATH", "/nonexistent")])
            .expect_err("no terraform")
            .to_string();
        assert!(error.contains("TERRAFORM_BIN"), "{error}");
        assert!(error.contains("project app"), "{error}");
        let bad = load(
            TERRAFORM_PROJECT,
            &[("S", "secret-value"), ("TERRAFORM_BIN", "/nonexistent/terraform")],
        );
        assert!(bad.is_err());
        // A project without terraform needs none.
        assert!(load("", &[("PATH", "/nonexistent")]).is_ok());
    }

    #[test]
    fn terraform_and_ecs_settings_are_read_with_their_defaults() {
        let bin = std::env::current_exe().expect("an executable file");
        let config = load(
            TERRAFORM_PROJECT,
            &[("S", "secret-value"), ("TERRAFORM_BIN", bin.to_str().expect("utf-8"))],
        )
        .expect("valid");
        let project = &config.projects[0];
        let terraform = project.terraform.as_ref().expect("terraform");
        assert_eq!(terraform.image_var, "image_url");
        assert_eq!(terraform.workspace, "default");
        assert!(terraform.require_approval);
        let Some(Target::Ecs(ecs)) = &project.target else {
            panic!("an ECS target: {:?}", project.target);
        };
        assert_eq!((ecs.cluster.as_str(), ecs.container.as_str()), ("c", "app"));
        assert!(ecs.rollback_on_failure);
        let escape = TERRAFORM_PROJECT.replace("dir = \"terraform\"", "dir = \"../elsewhere\"");
        let error = load(
            &escape,
            &[("S", "secret-value"), ("TERRAFORM_BIN", bin.to_str().expect("utf-8"))],
        )
        .expect_err("outside the repository")
        .to_string();
        assert!(error.contains("terraform.dir"), "{error}");
        let missing = TERRAFORM_PROJECT.replace("service = \"s\"\n", "");
        let error = load(
            &missing,
            &[("S", "secret-value"), ("TERRAFORM_BIN", bin.to_str().expect("utf-8"))],
        )
        .expect_err("no service")
        .to_string();
        assert!(error.contains("rollout.service"), "{error}");
    }
}
