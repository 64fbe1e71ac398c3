//! `[projects.rollout]`: where a project's deploys go live. Each target is a variant
//! here and a file in `adapters::target`.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::raw::RawRollout;
use super::secret::secs;
use super::{ConfigError, invalid};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "target", rename_all = "lowercase")]
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

/// A container on this machine's Docker engine behind the proxy: the environment's route
/// (`bind:host_port`, or `hostname`) leads to whichever of two slots holds the live
/// version, so a new version starts beside the old one and takes over without a gap.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutSettings {
    /// The proxy's port for this environment (when it has no hostname).
    pub host_port: Option<u16>,
    /// The address the proxy serves `host_port` on.
    pub bind: IpAddr,
    /// The name the proxy serves this environment under (instead of a port).
    pub hostname: Option<String>,
    /// With a hostname: Caddy obtains and renews its certificate.
    pub tls: bool,
    /// The loopback ports of the two slots; the version on the first takes traffic when
    /// both are healthy.
    pub slot_ports: [u16; 2],
    /// How long the replaced version keeps its open requests before it is stopped.
    #[serde(rename = "drain_secs", serialize_with = "secs")]
    pub drain: Duration,
    /// How long a new version gets to become healthy.
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
    /// Variables the app's containers get (a preview's `env`; none for an environment).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// The containers run a pull request's code (a preview's): on a network from which
    /// the host takes no connection.
    #[serde(skip)]
    pub strangers_code: bool,
    /// The route's name in the proxy when it is not the environment's: a preview seat's
    /// route, which stays in the proxy whichever pull request holds the seat.
    #[serde(skip)]
    pub route: Option<String>,
}

impl RolloutSettings {
    pub fn url(&self) -> String {
        match (&self.hostname, self.host_port) {
            (Some(hostname), _) => format!("{}://{hostname}", if self.tls { "https" } else { "http" }),
            (None, Some(port)) => format!("http://{}:{port}", self.bind),
            (None, None) => String::new(),
        }
    }

    /// The addresses this environment takes on this machine: its route's port and its slots.
    pub fn ports(&self) -> Vec<u16> {
        self.host_port.into_iter().chain(self.slot_ports).collect()
    }
}

/// An ECS service.
#[derive(Debug, Clone, Serialize)]
pub struct EcsSettings {
    pub cluster: String,
    pub service: String,
    /// The container whose image a deploy replaces (when terraform does not).
    pub container: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// How long the service gets to become stable on the new revision.
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
    /// On failure or timeout, put the previous task definition back.
    pub rollback_on_failure: bool,
    /// The app's URL, recorded on each deployment (else terraform's `app_url` output).
    pub url: Option<String>,
}

/// `field` names the project (`projects[N]`).
pub(super) fn resolve(raw: RawRollout, field: &str) -> Result<Target, ConfigError> {
    let field = |name: &str| format!("{field}.rollout.{name}");
    match raw.target.as_str() {
        "local" => resolve_local(raw, &field).map(Target::Local),
        "ecs" => {
            let required = |value: Option<String>, key: &str| {
                value
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| invalid(field(key), "is required for target \"ecs\""))
            };
            Ok(Target::Ecs(EcsSettings {
                cluster: required(raw.cluster, "cluster")?,
                service: required(raw.service, "service")?,
                container: raw.container.unwrap_or_else(|| "app".to_owned()),
                region: raw.region,
                endpoint_url: raw.endpoint_url,
                timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(600)),
                rollback_on_failure: raw.rollback_on_failure.unwrap_or(true),
                url: raw.url,
            }))
        }
        other => Err(invalid(
            field("target"),
            format!("{other:?} is not a supported target (\"local\" or \"ecs\")"),
        )),
    }
}

fn resolve_local(raw: RawRollout, field: &dyn Fn(&str) -> String) -> Result<RolloutSettings, ConfigError> {
    let hostname = raw
        .hostname
        .map(|h| parse_hostname(&h).map_err(|e| invalid(field("hostname"), e)))
        .transpose()?;
    let tls = match raw.tls.as_deref() {
        None | Some("auto") => hostname.is_some(),
        Some("off") => false,
        Some(other) => return Err(invalid(field("tls"), format!("{other:?} is not \"auto\" or \"off\""))),
    };
    match (&hostname, raw.host_port) {
        (None, None) => {
            return Err(invalid(
                field("host_port"),
                "is required for target \"local\" (or set hostname)",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(invalid(field("host_port"), "set host_port or hostname, not both"));
        }
        _ => {}
    }
    let slot_ports = match raw.slot_ports.as_deref() {
        Some(&[first, second]) if first != second && first != 0 && second != 0 => [first, second],
        Some(_) => {
            return Err(invalid(
                field("slot_ports"),
                "must be two different ports, e.g. [18081, 18082]",
            ));
        }
        None => {
            return Err(invalid(
                field("slot_ports"),
                "is required for target \"local\": two free loopback ports for the old and the new version, e.g. [18081, 18082]",
            ));
        }
    };
    if raw.host_port.is_some_and(|port| slot_ports.contains(&port)) {
        return Err(invalid(field("slot_ports"), "must differ from host_port"));
    }
    let bind_raw = raw.bind.unwrap_or_else(|| "127.0.0.1".to_owned());
    Ok(RolloutSettings {
        host_port: raw.host_port,
        bind: bind_raw
            .parse()
            .map_err(|_| invalid(field("bind"), format!("{bind_raw:?} is not an IP address")))?,
        hostname,
        tls,
        slot_ports,
        drain: Duration::from_secs(raw.drain_secs.unwrap_or(2)),
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60)),
        env: Vec::new(),
        strangers_code: false,
        route: None,
    })
}

/// A DNS name Caddy can route and certify: lower-case letters, digits and hyphens in
/// dot-separated labels.
pub(super) fn parse_hostname(raw: &str) -> Result<String, String> {
    let name = raw.trim_end_matches('.');
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.len() <= 253 && name.contains('.') && name.split('.').all(label_ok) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{:?} is not a host name (lower-case labels of letters, digits and hyphens, e.g. \"staging.example.com\")",
            raw.chars().take(80).collect::<String>()
        ))
    }
}
