//! `[projects.registry]`: where images are pushed.

use secrecy::SecretString;
use serde::Serialize;

use super::raw::RawRegistry;
use super::secret::{SecretReader, redacted_option};
use super::{ConfigError, invalid};

/// Which kind of registry images are pushed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
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
#[derive(Clone, Serialize)]
pub struct RegistrySettings {
    #[serde(flatten)]
    pub kind: RegistryKind,
    /// `host[:port][/path]`, without a scheme. Required for v2; for ECR it overrides the
    /// registry host the token names (a mirror or proxy in front of ECR).
    pub url: Option<String>,
    pub username: Option<String>,
    #[serde(serialize_with = "redacted_option")]
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

/// `field` names the project (`projects[N]`).
pub(super) fn resolve(
    raw: RawRegistry,
    field: &str,
    secrets: SecretReader<'_>,
) -> Result<RegistrySettings, ConfigError> {
    let field = |name: &str| format!("{field}.registry.{name}");
    let kind = match raw.kind.as_deref().unwrap_or("v2") {
        "v2" => RegistryKind::V2,
        "ecr" => RegistryKind::Ecr {
            region: raw.region.clone(),
            endpoint_url: raw.endpoint_url.clone(),
        },
        other => return Err(invalid(field("kind"), format!("{other:?} is not \"v2\" or \"ecr\""))),
    };
    if (raw.region.is_some() || raw.endpoint_url.is_some()) && kind == RegistryKind::V2 {
        return Err(invalid(
            field("region"),
            "region and endpoint_url only apply to kind = \"ecr\"",
        ));
    }
    match &raw.url {
        None if kind == RegistryKind::V2 => {
            return Err(invalid(
                field("url"),
                "required for a v2 registry, e.g. \"127.0.0.1:5000\"",
            ));
        }
        Some(url) if url.contains("://") || url.is_empty() || url.ends_with('/') => {
            return Err(invalid(
                field("url"),
                "give host[:port][/path] without a scheme, e.g. 127.0.0.1:5000",
            ));
        }
        _ => {}
    }
    let username = raw
        .username_env
        .as_deref()
        .map(|var| {
            (secrets.env)(var)
                .ok_or_else(|| invalid(field("username_env"), format!("environment variable {var} is not set")))
        })
        .transpose()?;
    let password = raw
        .password_env
        .as_deref()
        .map(|var| secrets.env_var(var, &field("password_env")))
        .transpose()?;
    Ok(RegistrySettings {
        kind,
        url: raw.url,
        username,
        password,
    })
}
