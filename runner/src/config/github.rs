//! `[github]` and each project's `[projects.github]`: reporting to GitHub, recovering
//! missed deliveries, and the repository's links.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Serialize, Serializer};

use super::raw::{RawGitHub, RawProjectGitHub};
use super::secret::{SecretReader, secs};
use super::{ConfigError, Env, invalid};
use crate::domain::RepoName;

/// Reporting to GitHub and recovering missed deliveries (for projects with credentials).
#[derive(Debug, Clone, Serialize)]
pub struct GitHubConfig {
    /// `https://api.github.com`, or a GitHub Enterprise `https://HOST/api/v3`.
    pub api_url: String,
    /// Commit statuses are named `<context>/<kind> (<environment>)`.
    pub status_context: String,
    #[serde(rename = "reconcile_interval_secs", serialize_with = "secs")]
    pub reconcile_interval: Duration,
}

impl GitHubConfig {
    /// A job's commit status context, also its check run's name:
    /// `<status_context>/<kind> (<environment>)`.
    pub fn job_context(&self, kind: crate::job::JobKind, environment: &str) -> String {
        format!("{}/{kind} ({environment})", self.status_context)
    }
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

impl Serialize for GitHubAuth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Self::Token(_) => map.serialize_entry("token", "[redacted]")?,
            Self::App {
                app_id,
                installation_id,
                ..
            } => {
                map.serialize_entry("app_id", app_id)?;
                map.serialize_entry("installation_id", installation_id)?;
                map.serialize_entry("private_key", "[redacted]")?;
            }
        }
        map.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectGitHub {
    pub auth: GitHubAuth,
    /// The repository webhook whose deliveries are reconciled.
    pub hook_id: Option<i64>,
}

pub(super) fn resolve(raw: RawGitHub, env: &Env<'_>) -> Result<GitHubConfig, ConfigError> {
    let api_url = env
        .get("RUNNER_GITHUB_API_URL")
        .or(raw.api_url)
        .unwrap_or_else(|| "https://api.github.com".to_owned())
        .trim_end_matches('/')
        .to_owned();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(invalid("github.api_url", format!("{api_url:?} must be an http(s) URL")));
    }
    Ok(GitHubConfig {
        api_url,
        status_context: raw.status_context.unwrap_or_else(|| "runner".to_owned()),
        reconcile_interval: Duration::from_secs(raw.reconcile_interval_secs.unwrap_or(300).max(10)),
    })
}

/// `[projects.github]`; `field` names the section (`projects[N].github`).
pub(super) fn resolve_project(
    raw: RawProjectGitHub,
    field: &str,
    secrets: SecretReader<'_>,
) -> Result<ProjectGitHub, ConfigError> {
    let token = secrets.env_or_file(
        raw.token_env.as_deref(),
        raw.token_file.as_deref(),
        &format!("{field}.token"),
    )?;
    let key = secrets.env_or_file(
        raw.private_key_env.as_deref(),
        raw.private_key_file.as_deref(),
        &format!("{field}.private_key"),
    )?;
    let auth = match (token, raw.app_id, key) {
        (Some(token), None, None) => GitHubAuth::Token(token),
        (None, Some(app_id), Some(key)) => {
            use secrecy::ExposeSecret;
            if !key.expose_secret().contains("PRIVATE KEY") {
                return Err(invalid(format!("{field}.private_key_file"), "is not a PEM private key"));
            }
            GitHubAuth::App {
                app_id,
                installation_id: raw.installation_id,
                private_key: key,
            }
        }
        _ => {
            return Err(invalid(
                field,
                "give either token_env/token_file, or app_id with private_key_env/private_key_file",
            ));
        }
    };
    Ok(ProjectGitHub {
        auth,
        hook_id: raw.hook_id,
    })
}

/// Where people (and git) find a repository on its forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoLinks {
    /// `https://github.com/<owner>/<name>`, `https://gitea.example.com/<owner>/<name>`.
    repository: String,
    kind: super::ForgeKind,
}

impl RepoLinks {
    /// A repository on GitHub (or GitHub Enterprise) at `web_url`.
    pub fn new(web_url: &str, repository: &RepoName) -> Self {
        Self::on(super::ForgeKind::GitHub, web_url, repository)
    }

    /// A repository on a forge of `kind` whose pages are at `web_url`.
    pub fn on(kind: super::ForgeKind, web_url: &str, repository: &RepoName) -> Self {
        Self {
            repository: format!("{}/{repository}", web_url.trim_end_matches('/')),
            kind,
        }
    }

    /// The forge the links lead to.
    pub fn kind(&self) -> super::ForgeKind {
        self.kind
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
        match self.kind {
            super::ForgeKind::GitLab => format!("{}/-/commit/{sha}", self.repository),
            _ => format!("{}/commit/{sha}", self.repository),
        }
    }

    /// A pull request's page (a merge request's, on GitLab).
    pub fn pull_request(&self, number: i64) -> String {
        match self.kind {
            super::ForgeKind::GitHub => format!("{}/pull/{number}", self.repository),
            super::ForgeKind::Gitea | super::ForgeKind::Forgejo => format!("{}/pulls/{number}", self.repository),
            super::ForgeKind::GitLab => format!("{}/-/merge_requests/{number}", self.repository),
        }
    }

    /// Where checkout fetches from when the project names no `clone_url`.
    pub fn clone_url(&self) -> String {
        format!("{}.git", self.repository)
    }
}
