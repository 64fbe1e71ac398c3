//! `[[projects]]`: one repository, what deploys it, and how; each sub-section has its own
//! resolver in its own file.

use secrecy::SecretString;
use serde::Serialize;

use super::build::{BuildSettings, ContainerLimits, SmokeSettings, resolve_build, resolve_containers, resolve_smoke};
use super::github::{ProjectGitHub, RepoLinks};
use super::raw::RawProject;
use super::registry::RegistrySettings;
use super::secret::{SecretReader, redacted, redacted_url};
use super::target::Target;
use super::terraform::TerraformSettings;
use super::{ConfigError, invalid};
use crate::domain::{GitRef, Name, ParseError, RepoName};

#[derive(Clone, Serialize)]
pub struct Project {
    pub name: Name,
    pub repository: RepoName,
    pub deploy_branches: Vec<GitRef>,
    pub deploy_tags: bool,
    pub environment: Name,
    /// Where checkout fetches from; defaults to the repository's GitHub URL. May hold
    /// credentials, so it is masked wherever text is shown.
    #[serde(serialize_with = "redacted_url")]
    pub clone_url: Option<SecretString>,
    #[serde(serialize_with = "redacted")]
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
    #[serde(rename = "rollout")]
    pub target: Option<Target>,
    /// Credentials for reporting to GitHub; `None`: nothing is reported.
    pub github: Option<ProjectGitHub>,
    /// The repository's pages on its forge, linked from the dashboard and the image labels.
    #[serde(skip)]
    pub links: RepoLinks,
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

/// Which pull requests run verify jobs (code from a fork is a stranger's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
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

/// The `index`th `[[projects]]` entry; `web_url` is where its forge's pages are.
pub(super) fn resolve(
    index: usize,
    raw: RawProject,
    secrets: SecretReader<'_>,
    web_url: &str,
) -> Result<Project, ConfigError> {
    let at = format!("projects[{index}]");
    let field = |name: &str| format!("{at}.{name}");
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
    let webhook_secret = secrets
        .env_or_file(
            raw.webhook_secret_env.as_deref(),
            raw.webhook_secret_file.as_deref(),
            &field("webhook_secret"),
        )?
        .ok_or_else(|| {
            invalid(
                field("webhook_secret_env"),
                format!(
                    "required: the env var that holds the webhook secret of {}",
                    raw.repository
                ),
            )
        })?;
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
    let links = RepoLinks::new(web_url, &repository);
    Ok(Project {
        name,
        repository,
        deploy_branches,
        deploy_tags: raw.deploy_tags,
        environment,
        clone_url: raw.clone_url.filter(|u| !u.is_empty()).map(SecretString::from),
        webhook_secret,
        pull_requests,
        containers: resolve_containers(raw.containers, &at)?,
        build: raw.build.map(|b| resolve_build(b, &at, secrets)).transpose()?,
        smoke: raw.smoke.map(|s| resolve_smoke(s, &at)).transpose()?,
        registry: raw
            .registry
            .map(|r| super::registry::resolve(r, &at, secrets))
            .transpose()?,
        terraform: raw
            .terraform
            .map(|t| super::terraform::resolve(t, &at, secrets))
            .transpose()?,
        target: raw.rollout.map(|r| super::target::resolve(r, &at)).transpose()?,
        github: raw
            .github
            .map(|g| super::github::resolve_project(g, &field("github"), secrets))
            .transpose()?,
        links,
    })
}
