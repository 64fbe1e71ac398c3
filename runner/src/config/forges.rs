//! `[forges.<name>]`: the Gitea, Forgejo and GitLab servers projects live on, and each
//! project's `forge` key. GitHub needs no section: `[github]` is its instance, and a
//! project without `forge` is on it.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Serialize;

use super::raw::RawForge;
use super::secret::{SecretReader, redacted_option};
use super::{ConfigError, invalid};

/// Which API and webhook format a forge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    GitHub,
    Gitea,
    Forgejo,
    GitLab,
}

impl ForgeKind {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "github" => Some(Self::GitHub),
            "gitea" => Some(Self::Gitea),
            "forgejo" => Some(Self::Forgejo),
            "gitlab" => Some(Self::GitLab),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::Gitea => "gitea",
            Self::Forgejo => "forgejo",
            Self::GitLab => "gitlab",
        }
    }

    /// How people call it.
    pub fn title(self) -> &'static str {
        match self {
            Self::GitHub => "GitHub",
            Self::Gitea => "Gitea",
            Self::Forgejo => "Forgejo",
            Self::GitLab => "GitLab",
        }
    }

    /// The route its deliveries arrive at: Forgejo sends Gitea's format (and its own
    /// headers beside Gitea's), so both share one.
    pub fn webhook_path(self) -> &'static str {
        match self {
            Self::GitHub => "/webhooks/github",
            Self::Gitea | Self::Forgejo => "/webhooks/gitea",
            Self::GitLab => "/webhooks/gitlab",
        }
    }
}

impl std::fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.title())
    }
}

/// One Gitea, Forgejo or GitLab server.
#[derive(Clone, Serialize)]
pub struct ForgeInstance {
    /// The `<name>` of `[forges.<name>]`, which projects' `forge` keys name.
    pub name: String,
    pub kind: ForgeKind,
    /// The server's web address (`https://gitea.example.com`), without a trailing slash;
    /// its API is below it (`/api/v1` for Gitea and Forgejo, `/api/v4` for GitLab).
    pub url: String,
    /// A token that may write commit statuses (and, on GitLab, deployments and merge
    /// request notes); `None`: nothing is reported to this server.
    #[serde(serialize_with = "redacted_option")]
    pub token: Option<SecretString>,
}

impl std::fmt::Debug for ForgeInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeInstance")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

pub(super) fn resolve(
    raw: BTreeMap<String, RawForge>,
    secrets: SecretReader<'_>,
) -> Result<BTreeMap<String, ForgeInstance>, ConfigError> {
    raw.into_iter()
        .map(|(name, forge)| {
            let at = format!("forges.{name}");
            if name.is_empty()
                || name.len() > 63
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    at,
                    "a forge's name is lowercase letters, digits, '-' and '_' (at most 63)",
                ));
            }
            if name == "github" {
                return Err(invalid(
                    at,
                    "GitHub is configured in [github] (api_url) and each project's [projects.github]",
                ));
            }
            // `[forges.gitea]` is a Gitea server without saying so twice.
            let kind = match forge.kind.as_deref() {
                Some(kind) => ForgeKind::parse(kind)
                    .filter(|k| *k != ForgeKind::GitHub)
                    .ok_or_else(|| {
                        invalid(
                            format!("{at}.kind"),
                            format!("{kind:?} is not \"gitea\", \"forgejo\" or \"gitlab\""),
                        )
                    })?,
                None => ForgeKind::parse(&name)
                    .filter(|k| *k != ForgeKind::GitHub)
                    .ok_or_else(|| invalid(format!("{at}.kind"), "required: \"gitea\", \"forgejo\" or \"gitlab\""))?,
            };
            let url = forge.url.trim_end_matches('/').to_owned();
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .unwrap_or_default();
            if host.is_empty() || host.contains(['?', '#', '@', ' ']) {
                return Err(invalid(
                    format!("{at}.url"),
                    format!("{url:?} must be the server's http(s) address, without credentials"),
                ));
            }
            let token = secrets.env_or_file(
                forge.token_env.as_deref(),
                forge.token_file.as_deref(),
                &format!("{at}.token"),
            )?;
            Ok((name.clone(), ForgeInstance { name, kind, url, token }))
        })
        .collect()
}

/// The instance a project's `forge` key names; `None` for GitHub (the default).
pub(super) fn of_project(
    forge: Option<&str>,
    forges: &BTreeMap<String, ForgeInstance>,
    at: &str,
) -> Result<Option<ForgeInstance>, ConfigError> {
    match forge {
        None | Some("github") => Ok(None),
        Some(name) => forges.get(name).cloned().map(Some).ok_or_else(|| {
            invalid(
                format!("{at}.forge"),
                if forges.is_empty() {
                    format!("{name:?} names no [forges.{name}] section: add one with its url (and token_env to report)")
                } else {
                    format!(
                        "{name:?} names no [forges.<name>] section; configured: {}",
                        forges.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                    )
                },
            )
        }),
    }
}
