//! `[projects.terraform]`: infrastructure as code run for each deploy.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;

use super::raw::RawTerraform;
use super::secret::{SecretReader, names, secs};
use super::{ConfigError, invalid};

/// Plan, optional approval, apply.
#[derive(Debug, Clone, Serialize)]
pub struct TerraformSettings {
    /// The module's directory in the repository, relative to its root.
    pub dir: String,
    /// The variable that receives the pushed image (`image_url`).
    pub image_var: String,
    pub vars: BTreeMap<String, String>,
    /// `-backend-config` key/value pairs for `init`.
    #[serde(serialize_with = "backend_config")]
    pub backend_config: BTreeMap<String, String>,
    /// Extra environment of the terraform commands of deploys (e.g. `AWS_PROFILE`).
    #[serde(serialize_with = "keys")]
    pub env: BTreeMap<String, String>,
    /// Secret environment of deploys' terraform commands (credentials), masked everywhere.
    #[serde(serialize_with = "names")]
    pub secret_env: BTreeMap<String, SecretString>,
    /// Secret variables of deploys, masked everywhere.
    #[serde(serialize_with = "names")]
    pub secret_vars: BTreeMap<String, SecretString>,
    /// Whether verify jobs of pull requests plan at all.
    pub plan_pull_requests: bool,
    /// The environment of a pull request's plan (read-only credentials), never `env`.
    #[serde(serialize_with = "keys")]
    pub pull_request_env: BTreeMap<String, String>,
    #[serde(serialize_with = "names")]
    pub pull_request_secret_env: BTreeMap<String, SecretString>,
    pub workspace: String,
    /// Deploys wait for `POST /api/jobs/{id}/approve` before applying a plan with changes.
    pub require_approval: bool,
    #[serde(rename = "lock_timeout_secs", serialize_with = "secs")]
    pub lock_timeout: Duration,
    /// Per terraform command.
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
    /// Deploys' terraform runs in the sandbox too (pull requests' plans always do).
    pub sandbox: bool,
    /// What a pull request's plan can reach.
    pub pull_request_network: SandboxNetwork,
    /// With `egress`: networks a pull request's plan cannot reach, besides the host's own
    /// addresses, loopback and the cloud metadata address.
    pub pull_request_blocked_networks: Vec<ipnet::IpNet>,
}

/// What a sandboxed terraform run's network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxNetwork {
    /// The host's network (trusted runs: they reach the state backend and cloud APIs).
    Host,
    /// Loopback only, of the sandbox's own.
    None,
    /// Outbound connections through user-mode networking (slirp4netns); loopback, the
    /// host's own addresses, the blocked networks and 169.254.169.254 unreachable.
    Egress,
}

/// Private, shared, link-local and unique-local ranges: where a runner's neighbours live.
pub const DEFAULT_BLOCKED_NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// Environment values may hold anything: printed by name only.
fn keys<S: serde::Serializer>(map: &BTreeMap<String, String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.keys())
}

/// Backend settings are printed, but those whose key reads like a credential are not.
fn backend_config<S: serde::Serializer>(map: &BTreeMap<String, String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().map(|(key, value)| {
        (
            key,
            if is_credential_key(key) {
                "[redacted]"
            } else {
                value.as_str()
            },
        )
    }))
}

/// Whether a `-backend-config` key names a credential (a pull request's plan gets none).
pub fn is_credential_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "token",
        "access_key",
        "password",
        "key_id",
        "sas",
        "credentials",
        "conn_str",
        "client_certificate",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// `field` names the project (`projects[N]`).
pub(super) fn resolve(
    raw: RawTerraform,
    field: &str,
    secrets: SecretReader<'_>,
) -> Result<TerraformSettings, ConfigError> {
    let field = |name: &str| format!("{field}.terraform.{name}");
    if raw.dir.is_empty() || raw.dir.starts_with('/') || raw.dir.split('/').any(|part| part == "..") {
        return Err(invalid(field("dir"), "must be a relative path inside the repository"));
    }
    let secret_vars = secrets.map(raw.secret_vars, &field("secret_vars"))?;
    if let Some(name) = secret_vars.keys().find(|name| raw.vars.contains_key(*name)) {
        return Err(invalid(
            field("secret_vars"),
            format!("{name} is both a plain and a secret variable"),
        ));
    }
    let pull_request_network = match raw.pull_request_network.as_deref().unwrap_or("none") {
        "none" => SandboxNetwork::None,
        "egress" => SandboxNetwork::Egress,
        other => {
            return Err(invalid(
                field("pull_request_network"),
                format!("{other:?} is not \"none\" or \"egress\""),
            ));
        }
    };
    let blocked = match raw.pull_request_blocked_networks {
        Some(list) => list,
        None => DEFAULT_BLOCKED_NETWORKS.iter().map(|s| (*s).to_owned()).collect(),
    };
    let pull_request_blocked_networks = blocked
        .iter()
        .map(|network| {
            network.parse::<ipnet::IpNet>().map_err(|_| {
                invalid(
                    field("pull_request_blocked_networks"),
                    format!("{network:?} is not a network such as 10.0.0.0/8"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TerraformSettings {
        dir: raw.dir,
        image_var: raw.image_var.unwrap_or_else(|| "image_url".to_owned()),
        vars: raw.vars,
        backend_config: raw.backend_config,
        env: raw.env,
        secret_env: secrets.map(raw.secret_env, &field("secret_env"))?,
        secret_vars,
        plan_pull_requests: raw.plan_pull_requests,
        pull_request_env: raw.pull_request_env,
        pull_request_secret_env: secrets.map(raw.pull_request_secret_env, &field("pull_request_secret_env"))?,
        workspace: raw.workspace.unwrap_or_else(|| "default".to_owned()),
        require_approval: raw.require_approval,
        lock_timeout: Duration::from_secs(raw.lock_timeout_secs.unwrap_or(60)),
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(1800)),
        sandbox: raw.sandbox.unwrap_or(true),
        pull_request_network,
        pull_request_blocked_networks,
    })
}
