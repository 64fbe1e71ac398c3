//! `[engine]`: the Docker engine that builds images and runs containers, on this host or
//! another one.

use std::path::PathBuf;

use serde::Serialize;

use super::raw::RawEngine;
use super::{ConfigError, Env, invalid};

pub const DEFAULT_ENGINE_HOST: &str = "unix:///var/run/docker.sock";

/// Where the engine listens, parsed from a `DOCKER_HOST`-style address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EngineHost {
    /// The engine's socket on this host.
    Unix { path: PathBuf },
    /// The engine on `host:port`, over plain HTTP (a trusted network or a tunnel only).
    Tcp { host: String, port: u16 },
    /// The engine on `host:port` over TLS, with `ca.pem`, `cert.pem` and `key.pem` from
    /// `cert_dir` (the engine checks our certificate, we check its).
    Tls { host: String, port: u16, cert_dir: PathBuf },
    /// The engine's socket on another host, forwarded over SSH by the system's `ssh`.
    Ssh(SshDestination),
}

/// `ssh://[user@]host[:port]`, and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshDestination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The private key to log in with (else ssh's own defaults and agent).
    pub identity_file: Option<PathBuf>,
    /// The host keys to trust (else ssh's own `known_hosts`); unknown hosts are refused.
    pub known_hosts_file: Option<PathBuf>,
}

impl EngineHost {
    /// Whether containers started there are reached through the network rather than this
    /// host's loopback.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Self::Unix { .. })
    }

    /// The host name or address of a remote engine.
    pub fn remote_host(&self) -> Option<&str> {
        match self {
            Self::Unix { .. } => None,
            Self::Tcp { host, .. } | Self::Tls { host, .. } => Some(host),
            Self::Ssh(destination) => Some(&destination.host),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineConfig {
    pub host: EngineHost,
    /// The engine that builds and runs pull requests' code (verify jobs), apart from the
    /// one that builds deploys: its build cache and containers are a trust domain of
    /// their own. `None`: verify jobs use `host`, with builds that share no cache with
    /// deploy builds.
    pub untrusted_host: Option<EngineHost>,
    /// busybox, or an image with its `nc`, `wget` and `timeout`: the prober that asks a
    /// verify job's smoke container from inside its network (pulled if the engine lacks
    /// it), and the start-up check of the cloud metadata address (never pulled for that:
    /// a missing image skips the check).
    pub probe_image: String,
    /// The cloud metadata address a container must not reach (`host:port`).
    pub metadata_address: String,
}

pub const DEFAULT_PROBE_IMAGE: &str = "busybox:latest";
pub const DEFAULT_METADATA_ADDRESS: &str = "169.254.169.254:80";

/// `RUNNER_ENGINE_HOST`, else the file's `engine.host`, else `DOCKER_HOST`, else the local
/// socket. TLS is used for `tcp://` when `DOCKER_TLS_VERIFY` is set or `engine.tls_cert_dir`
/// is given, with the certificates from there (or `DOCKER_CERT_PATH`, or `~/.docker`).
pub(super) fn resolve(raw: RawEngine, env: &Env<'_>) -> Result<EngineConfig, ConfigError> {
    let (field, address) = match (env.get("RUNNER_ENGINE_HOST"), raw.host, env.get("DOCKER_HOST")) {
        (Some(value), _, _) => ("RUNNER_ENGINE_HOST", value),
        (None, Some(value), _) => ("engine.host", value),
        (None, None, Some(value)) => ("DOCKER_HOST", value),
        (None, None, None) => ("engine.host", DEFAULT_ENGINE_HOST.to_owned()),
    };
    let cert_dir = raw
        .tls_cert_dir
        .or_else(|| env.get("DOCKER_TLS_VERIFY").map(|_| cert_path(env)));
    let mut host = parse_host(&address, cert_dir.clone()).map_err(|reason| invalid(field, reason))?;
    let untrusted_address = env.get("RUNNER_ENGINE_UNTRUSTED_HOST").or(raw.untrusted_host);
    let mut untrusted_host = untrusted_address
        .map(|address| parse_host(&address, cert_dir).map_err(|reason| invalid("engine.untrusted_host", reason)))
        .transpose()?;
    let ssh_options = raw.ssh_identity_file.is_some() || raw.ssh_known_hosts_file.is_some();
    let mut over_ssh = false;
    for engine in std::iter::once(&mut host).chain(untrusted_host.as_mut()) {
        if let EngineHost::Ssh(destination) = engine {
            destination.identity_file.clone_from(&raw.ssh_identity_file);
            destination.known_hosts_file.clone_from(&raw.ssh_known_hosts_file);
            over_ssh = true;
        }
    }
    if ssh_options && !over_ssh {
        return Err(invalid(
            "engine.ssh_identity_file",
            "is for an engine reached over SSH (host = \"ssh://user@host\")",
        ));
    }
    if untrusted_host.as_ref() == Some(&host) {
        return Err(invalid(
            "engine.untrusted_host",
            "names the same engine as engine.host; name a second engine, or leave it out",
        ));
    }
    let metadata_address = raw
        .metadata_address
        .unwrap_or_else(|| DEFAULT_METADATA_ADDRESS.to_owned());
    if metadata_address.rsplit_once(':').is_none_or(|(host, port)| {
        host.is_empty()
            || port.parse::<u16>().is_err()
            || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    }) {
        return Err(invalid(
            "engine.metadata_address",
            format!("{metadata_address:?} is not an address like 169.254.169.254:80"),
        ));
    }
    let probe_image = raw.probe_image.unwrap_or_else(|| DEFAULT_PROBE_IMAGE.to_owned());
    crate::domain::ImageRef::parse(&probe_image).map_err(|e| invalid("engine.probe_image", e))?;
    Ok(EngineConfig {
        host,
        untrusted_host,
        probe_image,
        metadata_address,
    })
}

fn cert_path(env: &Env<'_>) -> PathBuf {
    env.get("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env.get("HOME").unwrap_or_else(|| "/root".to_owned())).join(".docker"))
}

fn parse_host(address: &str, cert_dir: Option<PathBuf>) -> Result<EngineHost, String> {
    if let Some(path) = address.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!(
                "{address:?}: the socket path must be absolute, like unix:///var/run/docker.sock"
            ));
        }
        return Ok(EngineHost::Unix {
            path: PathBuf::from(path),
        });
    }
    if let Some(rest) = address.strip_prefix("ssh://") {
        return parse_ssh(address, rest.trim_end_matches('/')).map(EngineHost::Ssh);
    }
    let rest = address
        .strip_prefix("tcp://")
        .or_else(|| address.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "{address:?} is not an engine address like unix:///var/run/docker.sock, tcp://HOST:2376 or ssh://USER@HOST"
            )
        })?;
    let authority = rest.trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse::<u16>()
                .map_err(|_| format!("{address:?}: {port:?} is not a port"))?,
        ),
        _ => return Err(format!("{address:?}: give the port, like tcp://{authority}:2376")),
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(format!("{address:?}: {host:?} is not a host name or address"));
    }
    let host = host.to_owned();
    Ok(match (cert_dir, address.starts_with("https://")) {
        (Some(cert_dir), _) => EngineHost::Tls { host, port, cert_dir },
        (None, true) => {
            return Err(format!(
                "{address:?}: TLS needs certificates: set engine.tls_cert_dir or DOCKER_CERT_PATH"
            ));
        }
        (None, false) => EngineHost::Tcp { host, port },
    })
}

fn parse_ssh(address: &str, rest: &str) -> Result<SshDestination, String> {
    let (user, authority) = match rest.rsplit_once('@') {
        Some((user, authority)) => (Some(user), authority),
        None => (None, rest),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            Some(
                port.parse::<u16>()
                    .map_err(|_| format!("{address:?}: {port:?} is not a port"))?,
            ),
        ),
        None => (authority, None),
    };
    // Both end up as ssh's arguments: nothing that ssh could read as an option.
    let plain = |text: &str| {
        !text.is_empty()
            && !text.starts_with('-')
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !plain(host) || user.is_some_and(|user| !plain(user)) {
        return Err(format!(
            "{address:?} is not an address like ssh://deploy@builder.example.com:22"
        ));
    }
    Ok(SshDestination {
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
        identity_file: None,
        known_hosts_file: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_addresses_parse_as_docker_reads_them() {
        assert_eq!(
            parse_host("unix:///var/run/docker.sock", None),
            Ok(EngineHost::Unix {
                path: "/var/run/docker.sock".into()
            })
        );
        assert_eq!(
            parse_host("tcp://127.0.0.2:2375", None),
            Ok(EngineHost::Tcp {
                host: "127.0.0.2".into(),
                port: 2375
            })
        );
        assert_eq!(
            parse_host("tcp://[::1]:2376", Some("/certs".into())),
            Ok(EngineHost::Tls {
                host: "::1".into(),
                port: 2376,
                cert_dir: "/certs".into()
            })
        );
        for bad in [
            "tcp://host",
            "tcp://:2375",
            "unix://relative.sock",
            "docker.example",
            "tcp://a@b:1",
            "https://h:1",
        ] {
            assert!(parse_host(bad, None).is_err(), "{bad} was accepted");
        }
        assert_eq!(
            parse_host("ssh://deploy@builder.example.com:2222", None),
            Ok(EngineHost::Ssh(SshDestination {
                user: Some("deploy".into()),
                host: "builder.example.com".into(),
                port: Some(2222),
                identity_file: None,
                known_hosts_file: None,
            }))
        );
        // Nothing in the address may reach ssh as an option.
        for bad in [
            "ssh://-oProxyCommand=x",
            "ssh://me@",
            "ssh://a b@host",
            "ssh://host:ssh",
            "ssh://-l@host",
        ] {
            assert!(parse_host(bad, None).is_err(), "{bad} was accepted");
        }
    }
}
