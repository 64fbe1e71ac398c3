//! `[projects.previews]`: a pull request whose verify job passes gets an environment of
//! its own, `pr-<number>`, on this machine's engine behind the proxy, removed when the
//! pull request closes. Each preview holds a *seat*: its route's port (or host name) and
//! its two slots, taken from the ranges here.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::raw::RawPreviews;
use super::secret::secs;
use super::target::{RolloutSettings, parse_hostname};
use super::{ConfigError, invalid};

/// Where `{number}` goes in a preview's host name template.
pub const NUMBER_PLACEHOLDER: &str = "{number}";

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn count(self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn overlaps(self, other: Self) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    fn nth(self, index: u32) -> u16 {
        u16::try_from(u32::from(self.first) + index).unwrap_or(self.last)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PreviewSettings {
    /// The host name template (`pr-{number}.preview.example.com`), when previews are
    /// served by name.
    pub hostname: Option<String>,
    /// With a host name: Caddy obtains and renews each preview's certificate.
    pub tls: bool,
    /// The route ports, one per seat, when previews are served by port.
    pub host_ports: Option<PortRange>,
    /// The address the proxy serves a preview's port on.
    pub bind: IpAddr,
    /// The loopback ports of the previews' slots, two per seat.
    pub slot_ports: PortRange,
    /// At most this many previews at once: a new one removes the oldest.
    pub max_previews: u32,
    /// A preview without a push for this long is removed.
    #[serde(rename = "ttl_hours", serialize_with = "hours")]
    pub ttl: Duration,
    /// The variables a preview's container gets, and the only ones: never the project's
    /// deploy secrets.
    pub env: Vec<(String, String)>,
    #[serde(rename = "drain_secs", serialize_with = "secs")]
    pub drain: Duration,
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
}

fn hours<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(value.as_secs() / 3600)
}

impl PreviewSettings {
    /// The environment name of pull request `number`'s preview.
    pub fn environment_name(number: i64) -> String {
        format!("pr-{number}")
    }

    /// Whether `name` has the form of a preview's environment name (`pr-<digits>`).
    pub fn is_preview_name(name: &str) -> bool {
        name.strip_prefix("pr-")
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The rollout of the preview of pull request `number` in seat `seat`.
    pub fn rollout(&self, seat: u32, number: i64) -> RolloutSettings {
        RolloutSettings {
            host_port: self.host_ports.map(|ports| ports.nth(seat)),
            bind: self.bind,
            hostname: self
                .hostname
                .as_ref()
                .map(|template| template.replace(NUMBER_PLACEHOLDER, &number.to_string())),
            tls: self.tls,
            slot_ports: [self.slot_ports.nth(seat * 2), self.slot_ports.nth(seat * 2 + 1)],
            drain: self.drain,
            timeout: self.timeout,
            env: self.env.clone(),
            strangers_code: true,
            // A seat's port route outlives its previews: a preview's coming and going then
            // changes nothing in the proxy's configuration (each change costs requests in
            // flight on every route). A host name route is the preview's own.
            route: self.host_ports.map(|_| Self::seat_route(seat)),
        }
    }

    /// The environment the preview of pull request `number` in `seat` is.
    pub fn environment(&self, seat: u32, number: i64) -> super::Environment {
        super::Environment {
            name: crate::domain::Name::parse(&Self::environment_name(number))
                .unwrap_or_else(|_| unreachable!("pr-<number> is a name")),
            branches: Vec::new(),
            tags: false,
            target: Some(super::Target::Local(self.rollout(seat, number))),
        }
    }

    /// The route name of seat `seat` (with `host_ports`).
    pub fn seat_route(seat: u32) -> String {
        format!("preview-seat-{seat}")
    }

    /// Whether `hostname` is one this template makes.
    pub fn makes_hostname(&self, hostname: &str) -> bool {
        let Some((prefix, suffix)) = self.hostname.as_deref().and_then(|t| t.split_once(NUMBER_PLACEHOLDER)) else {
            return false;
        };
        hostname.len() > prefix.len() + suffix.len()
            && hostname.starts_with(prefix)
            && hostname.ends_with(suffix)
            && hostname[prefix.len()..hostname.len() - suffix.len()]
                .bytes()
                .all(|b| b.is_ascii_digit())
    }

    /// The port ranges the previews take on this machine.
    pub fn port_ranges(&self) -> Vec<PortRange> {
        self.host_ports.into_iter().chain([self.slot_ports]).collect()
    }
}

/// `at` names the project (`projects[N]`).
pub(super) fn resolve(raw: RawPreviews, at: &str) -> Result<PreviewSettings, ConfigError> {
    let field = |name: &str| format!("{at}.previews.{name}");
    let range = |value: Option<Vec<u16>>, key: &str| -> Result<Option<PortRange>, ConfigError> {
        match value.as_deref() {
            None => Ok(None),
            Some(&[first, last]) if first != 0 && first <= last => Ok(Some(PortRange { first, last })),
            Some(_) => Err(invalid(
                field(key),
                "must be the first and the last port of a range, e.g. [20100, 20199]",
            )),
        }
    };
    let hostname = match raw.hostname {
        None => None,
        Some(template) => {
            if template.matches(NUMBER_PLACEHOLDER).count() != 1 {
                return Err(invalid(
                    field("hostname"),
                    format!(
                        "{:?} must hold {NUMBER_PLACEHOLDER} once, where the pull request's number goes (e.g. \"pr-{{number}}.preview.example.com\")",
                        template.chars().take(80).collect::<String>()
                    ),
                ));
            }
            parse_hostname(&template.replace(NUMBER_PLACEHOLDER, "12345"))
                .map_err(|e| invalid(field("hostname"), e))?;
            Some(template.trim_end_matches('.').to_owned())
        }
    };
    let tls = match raw.tls.as_deref() {
        None | Some("auto") => hostname.is_some(),
        Some("off") => false,
        Some(other) => return Err(invalid(field("tls"), format!("{other:?} is not \"auto\" or \"off\""))),
    };
    let host_ports = range(raw.host_ports, "host_ports")?;
    match (&hostname, host_ports) {
        (None, None) => {
            return Err(invalid(
                field("hostname"),
                "is required (e.g. \"pr-{number}.preview.example.com\"), or host_ports (a port range, one port per preview)",
            ));
        }
        (Some(_), Some(_)) => return Err(invalid(field("host_ports"), "set hostname or host_ports, not both")),
        _ => {}
    }
    let slot_ports = range(raw.slot_ports, "slot_ports")?.ok_or_else(|| {
        invalid(
            field("slot_ports"),
            "is required: a range of free loopback ports, two per preview, e.g. [20200, 20219]",
        )
    })?;
    let max_previews = raw.max_previews.unwrap_or(5);
    if !(1..=500).contains(&max_previews) {
        return Err(invalid(field("max_previews"), "must be between 1 and 500"));
    }
    if slot_ports.count() < max_previews * 2 {
        return Err(invalid(
            field("slot_ports"),
            format!(
                "{slot_ports} holds {} ports: {max_previews} previews need {} (two each)",
                slot_ports.count(),
                max_previews * 2
            ),
        ));
    }
    if let Some(ports) = host_ports {
        if ports.count() < max_previews {
            return Err(invalid(
                field("host_ports"),
                format!(
                    "{ports} holds {} ports: {max_previews} previews need one each",
                    ports.count()
                ),
            ));
        }
        if ports.overlaps(slot_ports) {
            return Err(invalid(field("slot_ports"), "must not overlap host_ports"));
        }
    }
    let ttl_hours = raw.ttl_hours.unwrap_or(72);
    if !(1..=24 * 365).contains(&ttl_hours) {
        return Err(invalid(field("ttl_hours"), "must be between 1 and 8760 (a year)"));
    }
    for key in raw.env.keys() {
        let valid = key.bytes().enumerate().all(|(i, b)| {
            b == b'_' || b.is_ascii_uppercase() || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit())
        });
        if key.is_empty() || !valid {
            return Err(invalid(
                field("env"),
                format!("{key:?} is not a variable name (letters, digits and _)"),
            ));
        }
    }
    let bind_raw = raw.bind.unwrap_or_else(|| "127.0.0.1".to_owned());
    Ok(PreviewSettings {
        hostname,
        tls,
        host_ports,
        bind: bind_raw
            .parse()
            .map_err(|_| invalid(field("bind"), format!("{bind_raw:?} is not an IP address")))?,
        slot_ports,
        max_previews,
        ttl: Duration::from_secs(ttl_hours * 3600),
        env: raw.env.into_iter().collect(),
        drain: Duration::from_secs(raw.drain_secs.unwrap_or(2)),
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60)),
    })
}
