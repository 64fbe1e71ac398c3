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
    /// Where pushes go live, each fed by its own branches (at least one).
    pub environments: Vec<Environment>,
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
    /// Credentials for reporting to GitHub; `None`: nothing is reported.
    pub github: Option<ProjectGitHub>,
    /// The Gitea, Forgejo or GitLab server the repository lives on (`forge`); `None`:
    /// GitHub.
    pub forge: Option<super::ForgeInstance>,
    /// Per environment, the images of this many latest deployments (the live one and the
    /// ones a rollback can go back to) are kept; older images the runner built are removed.
    pub keep_deployments: u32,
    /// Pull requests' own environments (`pr-<number>`); `None`: no previews.
    pub previews: Option<super::previews::PreviewSettings>,
    /// Labels a runner must offer (`[queue] labels`) to run this project's jobs.
    pub runs_on: Vec<String>,
    /// The repository's pages on its forge, linked from the dashboard and the image labels.
    #[serde(skip)]
    pub links: RepoLinks,
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project")
            .field("name", &self.name)
            .field("repository", &self.repository)
            .field("environments", &self.environments)
            .field("webhook_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// One place a project's pushes go live: its branches, its rollout, its own history and
/// its own one-deploy-at-a-time.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub name: Name,
    pub branches: Vec<GitRef>,
    /// Tag pushes deploy here too.
    pub tags: bool,
    /// Where its deploys go live (`rollout`, else the project's).
    #[serde(rename = "rollout")]
    pub target: Option<Target>,
}

impl Environment {
    pub fn deploys_ref(&self, git_ref: &GitRef) -> bool {
        match git_ref.kind() {
            crate::domain::RefKind::Branch => self.branches.contains(git_ref),
            crate::domain::RefKind::Tag => self.tags,
            crate::domain::RefKind::Other => false,
        }
    }

    /// The branch a deploy without one (a redeploy of a bare commit) is recorded under.
    pub fn default_branch(&self) -> Option<&GitRef> {
        self.branches.first()
    }
}

impl Project {
    /// Whether the runner may tell the project's forge what it did: GitHub credentials,
    /// or a token for its `[forges.<name>]` server.
    pub fn reports_to_forge(&self) -> bool {
        match &self.forge {
            Some(instance) => instance.token.is_some(),
            None => self.github.is_some(),
        }
    }

    /// The environments a push of `git_ref` deploys to, in the config's order.
    pub fn environments_for<'a>(&'a self, git_ref: &'a GitRef) -> impl Iterator<Item = &'a Environment> + 'a {
        self.environments.iter().filter(move |e| e.deploys_ref(git_ref))
    }

    pub fn deploys_ref(&self, git_ref: &GitRef) -> bool {
        self.environments_for(git_ref).next().is_some()
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name.as_str() == name)
    }

    /// The first environment: where actions that name none go.
    pub fn default_environment(&self) -> &Environment {
        &self.environments[0]
    }

    /// The branch a deploy of a bare commit is recorded under.
    pub fn default_branch(&self) -> GitRef {
        self.environments
            .iter()
            .find_map(Environment::default_branch)
            .cloned()
            .unwrap_or_else(|| GitRef::branch("main").unwrap_or_else(|_| unreachable!("\"main\" is a branch name")))
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
    github_web_url: &str,
    forges: &std::collections::BTreeMap<String, super::ForgeInstance>,
) -> Result<Project, ConfigError> {
    let at = format!("projects[{index}]");
    let field = |name: &str| format!("{at}.{name}");
    fn parse<T>(field: String, result: Result<T, ParseError>) -> Result<T, ConfigError> {
        result.map_err(|e| invalid(field, e))
    }

    let name = parse(field("name"), Name::parse(&raw.name))?;
    let forge = super::forges::of_project(raw.forge.as_deref(), forges, &at)?;
    let kind = forge.as_ref().map_or(super::ForgeKind::GitHub, |f| f.kind);
    // GitLab's projects may sit in nested groups (`group/subgroup/project`).
    let repository = match kind {
        super::ForgeKind::GitLab => parse(field("repository"), RepoName::parse_path(&raw.repository)),
        _ => parse(field("repository"), RepoName::parse(&raw.repository)),
    }?;
    if raw.github.is_some() && kind != super::ForgeKind::GitHub {
        return Err(invalid(
            field("github"),
            format!(
                "{} is on {kind} ([forges.{}]): its token goes in that section's token_env",
                raw.repository,
                forge.as_ref().map_or("", |f| f.name.as_str())
            ),
        ));
    }
    let environments = resolve_environments(&raw, &at)?;
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
    let links = match &forge {
        Some(instance) => RepoLinks::on(instance.kind, &instance.url, &repository),
        None => RepoLinks::new(github_web_url, &repository),
    };
    let keep_deployments = raw.retention.as_ref().and_then(|r| r.keep_deployments).unwrap_or(10);
    if !(1..=1000).contains(&keep_deployments) {
        return Err(invalid(
            field("retention.keep_deployments"),
            "must be between 1 and 1000 (the live deployment counts)",
        ));
    }
    let previews = raw
        .previews
        .clone()
        .map(|p| super::previews::resolve(p, &at))
        .transpose()?;
    if previews.is_some() {
        check_previews_can_run(&raw, pull_requests, &environments, &at)?;
    }
    for label in &raw.runs_on {
        super::queue::check_label(label).map_err(|why| invalid(field("runs_on"), why))?;
    }
    Ok(Project {
        runs_on: raw.runs_on.clone(),
        name,
        repository,
        environments,
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
        github: raw
            .github
            .map(|g| super::github::resolve_project(g, &field("github"), secrets))
            .transpose()?,
        keep_deployments,
        previews,
        links,
        forge,
    })
}

/// A preview is a pull request's image pushed and run behind the proxy: it needs what a
/// verify job needs, a registry to push to, and no environment that could be taken for one.
fn check_previews_can_run(
    raw: &RawProject,
    pull_requests: PullRequestPolicy,
    environments: &[Environment],
    at: &str,
) -> Result<(), ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    for (section, present) in [
        ("build", raw.build.is_some()),
        ("smoke", raw.smoke.is_some()),
        ("registry", raw.registry.is_some()),
    ] {
        if !present {
            return Err(invalid(
                field("previews"),
                format!(
                    "previews need [projects.{section}]: a preview is built, smoke-tested and pushed like a deploy"
                ),
            ));
        }
    }
    if pull_requests == PullRequestPolicy::Off {
        return Err(invalid(
            field("pull_requests"),
            "is \"off\", so no pull request would get a preview: set \"same-repository\" or \"approve-forks\", or remove [projects.previews]",
        ));
    }
    if let Some((index, environment)) = environments
        .iter()
        .enumerate()
        .find(|(_, e)| super::previews::PreviewSettings::is_preview_name(e.name.as_str()))
    {
        let key = if raw.environments.is_empty() {
            field("environment")
        } else {
            field(&format!("environments[{index}].name"))
        };
        return Err(invalid(
            key,
            format!(
                "{:?} is the name of a pull request's preview environment: choose another name",
                environment.name.as_str()
            ),
        ));
    }
    Ok(())
}

fn parse_branches(raw: &[String], field: &str) -> Result<Vec<GitRef>, ConfigError> {
    raw.iter()
        .map(|branch| {
            let qualified = if branch.starts_with("refs/") {
                GitRef::parse(branch)
            } else {
                GitRef::branch(branch)
            };
            qualified.map_err(|e| invalid(field, e))
        })
        .collect()
}

/// `[[projects.environments]]`, or the one environment the project-level keys describe.
fn resolve_environments(raw: &RawProject, at: &str) -> Result<Vec<Environment>, ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    let default_target = raw.rollout.clone().map(|r| super::target::resolve(r, at)).transpose()?;
    if raw.environments.is_empty() {
        if raw.deploy_branches.is_empty() {
            return Err(invalid(
                field("deploy_branches"),
                "list at least one branch, e.g. [\"main\"] (or declare [[projects.environments]])",
            ));
        }
        let name = Name::parse(raw.environment.as_deref().unwrap_or("production"))
            .map_err(|e| invalid(field("environment"), e))?;
        return Ok(vec![Environment {
            name,
            branches: parse_branches(&raw.deploy_branches, &field("deploy_branches"))?,
            tags: raw.deploy_tags,
            target: default_target,
        }]);
    }
    for (key, set) in [
        ("deploy_branches", !raw.deploy_branches.is_empty()),
        ("environment", raw.environment.is_some()),
        ("deploy_tags", raw.deploy_tags),
    ] {
        if set {
            return Err(invalid(
                field(key),
                "cannot be set beside [[projects.environments]]: give each environment its branches",
            ));
        }
    }
    let mut environments: Vec<Environment> = Vec::with_capacity(raw.environments.len());
    for (index, environment) in raw.environments.iter().enumerate() {
        let at = format!("{at}.environments[{index}]");
        let field = |name: &str| format!("{at}.{name}");
        let name = Name::parse(&environment.name).map_err(|e| invalid(field("name"), e))?;
        if environments.iter().any(|e| e.name == name) {
            return Err(invalid(field("name"), format!("{:?} is declared twice", name.as_str())));
        }
        if environment.branches.is_empty() && !environment.tags {
            return Err(invalid(
                field("branches"),
                "list at least one branch (or set tags = true), e.g. [\"main\"]",
            ));
        }
        let target = match environment.rollout.clone() {
            Some(rollout) => Some(super::target::resolve(rollout, &at)?),
            None => default_target.clone(),
        };
        environments.push(Environment {
            name,
            branches: parse_branches(&environment.branches, &field("branches"))?,
            tags: environment.tags,
            target,
        });
    }
    Ok(environments)
}
