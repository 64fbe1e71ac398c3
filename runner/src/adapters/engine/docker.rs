//! [`ContainerEngine`] over the Docker Engine API (bollard), on a local socket, TCP, TLS or
//! an SSH tunnel; builds with BuildKit's session API where the engine has it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    PushImageOptions, RemoveContainerOptions, RenameContainerOptions, StartContainerOptions, StopContainerOptions,
    TagImageOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::super::buildkit::{self, BuildKitRequest};
use super::super::probe::{self, Answer};
use super::super::ssh_tunnel::SshTunnel;
use crate::config::{Builder, EngineHost};
use crate::joblog::{JobLog, LineBuffer};

use super::{
    BuildRequest, CLOSED_NETWORK, ContainerEngine, ContainerSpec, Endpoint, EngineError, JOB_LABEL, MANAGED_LABEL,
    ManagedContainer, Network, PodSpec, ROLE_LABEL, RegistryAuth, Role, Started, StoredImage, TaskNetwork, TaskSpec,
};

#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    host: EngineHost,
    /// The Engine API version both sides speak.
    api_version: String,
    /// Why the engine cannot build with BuildKit, if it cannot.
    no_buildkit: Option<String>,
    /// Where containers on a remote engine publish their ports and are reached.
    remote_ip: Option<IpAddr>,
    /// This runner's identity on the engine (stable across its restarts).
    instance: String,
    /// One network made at a time: the engine (before API 1.44) lets two share a name.
    networks: Arc<tokio::sync::Mutex<()>>,
    /// The forward to an engine reached over SSH, open as long as the engine is used.
    _tunnel: Option<Arc<SshTunnel>>,
}

/// BuildKit came with Engine API 1.39 (Docker 18.09), on Linux engines.
const BUILDKIT_API: (u32, u32) = (1, 39);

impl DockerEngine {
    /// Connects to the engine at `host` and checks it answers.
    pub async fn connect(configured: &EngineHost, instance: String) -> Result<Self, EngineError> {
        let unreachable =
            |e: &dyn std::fmt::Display| EngineError::Unreachable(format!("{}: {e}", describe(configured)));
        // Over SSH, the engine is a local socket the tunnel forwards.
        let (host, tunnel) = match configured {
            EngineHost::Ssh(destination) => {
                let tunnel = SshTunnel::open(destination).await.map_err(|e| unreachable(&e))?;
                let local = EngineHost::Unix {
                    path: tunnel.socket().to_owned(),
                };
                (local, Some(Arc::new(tunnel)))
            }
            other => (other.clone(), None),
        };
        let host = &host;
        let docker = match host {
            EngineHost::Unix { path } => {
                Docker::connect_with_unix(&path.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)
            }
            EngineHost::Tcp { host, port } => {
                Docker::connect_with_http(&format!("tcp://{host}:{port}"), 120, bollard::API_DEFAULT_VERSION)
            }
            EngineHost::Tls { host, port, cert_dir } => Docker::connect_with_ssl(
                &format!("https://{host}:{port}"),
                &cert_dir.join("key.pem"),
                &cert_dir.join("cert.pem"),
                &cert_dir.join("ca.pem"),
                120,
                bollard::API_DEFAULT_VERSION,
            ),
            EngineHost::Ssh(_) => unreachable!("an SSH engine is reached through its tunnel's socket"),
        }
        .map_err(|e| unreachable(&e))?;
        let docker = docker.negotiate_version().await.map_err(|e| unreachable(&e))?;
        let version = docker.version().await.map_err(|e| unreachable(&e))?;
        let api_version = version.api_version.unwrap_or_else(|| "1.41".to_owned());
        let no_buildkit = buildkit_missing(&api_version, version.os.as_deref());
        let remote_ip = match configured.remote_host() {
            None => None,
            Some(name) => Some(
                tokio::net::lookup_host((name, 0))
                    .await
                    .ok()
                    .and_then(|mut addresses| addresses.next())
                    .map(|address| address.ip())
                    .ok_or_else(|| EngineError::Unreachable(format!("cannot resolve the engine's host {name}")))?,
            ),
        };
        Ok(Self {
            docker,
            host: host.clone(),
            api_version,
            no_buildkit,
            remote_ip,
            instance,
            networks: Arc::default(),
            _tunnel: tunnel,
        })
    }

    /// Whether builds can use BuildKit here; if not, why.
    pub fn buildkit_support(&self) -> Result<(), &str> {
        match &self.no_buildkit {
            None => Ok(()),
            Some(reason) => Err(reason),
        }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Containers this runner instance created, optionally only those with `role`.
    pub async fn managed(
        &self,
        role: Option<Role>,
    ) -> Result<Vec<(String, Vec<String>, HashMap<String, String>)>, EngineError> {
        let mut labels = vec![format!("{MANAGED_LABEL}={}", self.instance)];
        if let Some(role) = role {
            labels.push(format!("{ROLE_LABEL}={}", role.as_str()));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), labels)])),
            ..Default::default()
        };
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| Some((c.id?, c.names.unwrap_or_default(), c.labels.unwrap_or_default())))
            .collect())
    }

    /// Removes smoke, candidate and task containers a killed runner left behind.
    pub async fn reap_leftovers(&self) -> Result<usize, EngineError> {
        let mut removed = 0;
        for role in [Role::Smoke, Role::Candidate, Role::Task] {
            for (id, names, _) in self.managed(Some(role)).await? {
                tracing::info!(container = %id, names = ?names, "removing a container left by an earlier run");
                // One that will not go does not keep the others.
                match self.remove(&id).await {
                    Ok(()) => removed += 1,
                    Err(error) => {
                        tracing::warn!(container = %id, %error, "cannot remove a container left by an earlier run")
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Creates a container (named, or named by the engine), copies `files` (a tar) into its
    /// root, and starts it; one that fails any of these goes again. Answers its id.
    async fn create_started(
        &self,
        name: Option<String>,
        body: ContainerCreateBody,
        files: Option<Bytes>,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptions {
            name,
            ..Default::default()
        };
        let created = self.docker.create_container(Some(options), body).await?;
        let started = async {
            if let Some(files) = files {
                let upload = bollard::query_parameters::UploadToContainerOptions {
                    path: "/".to_owned(),
                    ..Default::default()
                };
                self.docker
                    .upload_to_container(&created.id, Some(upload), bollard::body_full(files))
                    .await?;
            }
            self.docker
                .start_container(&created.id, None::<StartContainerOptions>)
                .await
        };
        if let Err(error) = started.await {
            self.discard(&created.id).await;
            return Err(error.into());
        }
        Ok(created.id)
    }

    /// Removes a container that failed to start. If that fails too, the start's error is
    /// still what the caller reports; the container keeps the runner's labels, by which it
    /// can be found.
    async fn discard(&self, id: &str) {
        if let Err(error) = self.remove(id).await {
            tracing::warn!(container = id, %error, "cannot remove a container that failed to start");
        }
    }

    /// The labels of a container this runner instance makes for `job_id`.
    fn labels(&self, role: Role, job_id: i64) -> HashMap<String, String> {
        HashMap::from([
            (MANAGED_LABEL.to_owned(), self.instance.clone()),
            (ROLE_LABEL.to_owned(), role.as_str().to_owned()),
            (JOB_LABEL.to_owned(), job_id.to_string()),
        ])
    }

    /// The engine's network mode for `network`, made first if it is one of the runner's.
    async fn network_mode(&self, network: &Network) -> Result<Option<String>, EngineError> {
        Ok(match network {
            Network::Default => None,
            Network::Closed => {
                self.ensure_closed_network().await?;
                Some(CLOSED_NETWORK.to_owned())
            }
            Network::Own(name) => {
                self.ensure_network(name, false, None).await?;
                Some(name.clone())
            }
            Network::Guarded(name) => {
                let bridge = guarded_bridge(name);
                self.ensure_network(name, false, Some(&bridge)).await?;
                if self.remote_ip.is_none() {
                    guard_bridge(&bridge, Guard::NewConnections)
                        .await
                        .map_err(EngineError::Engine)?;
                }
                Some(name.clone())
            }
        })
    }

    /// Where a running container publishes `container_port`.
    async fn published_port(&self, id: &str, container_port: u16) -> Result<(IpAddr, u16), EngineError> {
        let details = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await?;
        let key = format!("{container_port}/tcp");
        let binding = details
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(&key))
            .flatten()
            .and_then(|bindings| bindings.into_iter().next())
            .ok_or_else(|| EngineError::Engine(format!("container {id} publishes no port for {key}")))?;
        let ip = binding
            .host_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "0.0.0.0")
            .and_then(|ip| ip.parse().ok())
            .or(self.remote_ip)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let port = binding
            .host_port
            .as_deref()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| EngineError::Engine(format!("container {id} has no host port for {key}")))?;
        Ok((ip, port))
    }
}

impl DockerEngine {
    /// Pulls `image` unless the engine has it.
    async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => return Err(error.into()),
        }
        tracing::info!(image, "pulling an image the runner needs");
        self.pull(image).await
    }

    /// Pulls `image` from its registry, without credentials.
    async fn pull(&self, image: &str) -> Result<(), EngineError> {
        let options = bollard::query_parameters::CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            if let Some(error) = progress?.error_detail.and_then(|detail| detail.message) {
                return Err(EngineError::Engine(error));
            }
        }
        Ok(())
    }

    /// Makes the bridge network `name` unless it exists. It stays for later jobs and runs:
    /// it holds no state, and removing it by hand once its containers went is harmless.
    /// `bridge`: the host interface's name, for a network the host guards itself against
    /// (see [`guard_bridge`]).
    async fn ensure_network(&self, name: &str, closed: bool, bridge: Option<&str>) -> Result<(), EngineError> {
        let _one_at_a_time = self.networks.lock().await;
        match self.docker.inspect_network(name, None).await {
            Ok(network)
                if bridge.is_some()
                    && network
                        .options
                        .as_ref()
                        .and_then(|options| options.get("com.docker.network.bridge.name"))
                        .map(String::as_str)
                        != bridge =>
            {
                return Err(EngineError::Engine(format!(
                    "the engine's network {name} is not on the bridge the runner guards; remove it (docker network rm {name}) and the runner makes it again"
                )));
            }
            Ok(network) if closed && network.internal != Some(true) => {
                return Err(EngineError::Engine(format!(
                    "the engine's network {name} is not internal; remove it (docker network rm {name}) and the runner makes it again"
                )));
            }
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let mut options = HashMap::new();
        if let Some(bridge) = bridge {
            options.insert("com.docker.network.bridge.name".to_owned(), bridge.to_owned());
            options.insert("com.docker.network.bridge.enable_icc".to_owned(), "false".to_owned());
        }
        let request = bollard::models::NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            internal: Some(closed),
            options: Some(options),
            labels: Some(HashMap::from([(MANAGED_LABEL.to_owned(), self.instance.clone())])),
            ..Default::default()
        };
        tracing::info!(network = name, internal = closed, "creating a network");
        self.docker.create_network(request).await?;
        Ok(())
    }

    /// The closed network, and on this host's engine the rule that keeps its containers
    /// from the host: Docker's `internal` cuts the bridge off from other interfaces, but
    /// the host answers on the bridge's own address (and so does every service of the
    /// host listening on all addresses). Without the rule, no container joins it.
    async fn ensure_closed_network(&self) -> Result<(), EngineError> {
        self.ensure_network(CLOSED_NETWORK, true, Some(CLOSED_NETWORK)).await?;
        if self.remote_ip.is_some() {
            // The rule belongs on that host (README: engines and networks).
            return Ok(());
        }
        guard_bridge(CLOSED_NETWORK, Guard::Everything)
            .await
            .map_err(EngineError::Engine)
    }

    /// Whether a container on the engine's default bridge reaches `address` (`host:port`)
    /// within two seconds; `None` when `image` (which needs `nc`) is not on the engine: it
    /// is never pulled for this.
    pub async fn reaches(&self, image: &str, address: &str) -> Result<Option<bool>, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| EngineError::Engine(format!("{address} is not host:port")))?;
        let labels = HashMap::from([
            (MANAGED_LABEL.to_owned(), self.instance.clone()),
            // Reaped at the next start like a smoke container, if it is left.
            (ROLE_LABEL.to_owned(), Role::Smoke.as_str().to_owned()),
            (JOB_LABEL.to_owned(), "0".to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            labels: Some(labels),
            entrypoint: Some(vec!["nc".to_owned()]),
            // Connected is enough: `-e true` ends nc as soon as it connects, where a plain nc
            // would wait for a metadata service that waits for a request first.
            cmd: Some(vec![
                "-w".to_owned(),
                "2".to_owned(),
                host.to_owned(),
                port.to_owned(),
                "-e".to_owned(),
                "true".to_owned(),
            ]),
            host_config: Some(HostConfig {
                memory: Some(32 * 1024 * 1024),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await?;
        let outcome = async {
            self.docker
                .start_container(&created.id, None::<StartContainerOptions>)
                .await?;
            let mut wait = self.docker.wait_container(&created.id, None);
            let waited = tokio::time::timeout(std::time::Duration::from_secs(5), wait.next()).await;
            Ok::<_, EngineError>(match waited {
                Ok(Some(Ok(exit))) => exit.status_code == 0,
                Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code == 0,
                Ok(Some(Err(error))) => return Err(error.into()),
                Ok(None) | Err(_) => false,
            })
        }
        .await;
        self.discard(&created.id).await;
        outcome.map(Some)
    }
}

/// Has the host drop whatever the closed network's bridge sends it: the runner never
/// connects into that network (its smoke probe asks from inside), so nothing from there is
/// an answer the host waits for. Added once; `iptables -C` finds it on later calls and after
/// the runner restarts.
/// What the host drops of what a bridge sends it.
#[derive(Clone, Copy)]
enum Guard {
    /// Everything (the closed network: the runner never connects into it from the host).
    Everything,
    /// New connections only: the answers of a container whose published port the host
    /// (the proxy) connects to still come back.
    NewConnections,
}

/// Where a guarded bridge's new connections may not go beyond the host: private,
/// shared and link-local addresses (the LAN, other containers' published ports, the cloud
/// metadata service). The internet stays reachable.
const GUARDED_DESTINATIONS: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];

/// The iptables rules (chain first) by which the host drops what `bridge` sends it, in
/// the order they are inserted (each on top: the last one is matched first).
fn guard_rules(bridge: &str, guard: Guard) -> Vec<Vec<String>> {
    let words = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<String>>();
    match guard {
        Guard::Everything => vec![words(&["INPUT", "-i", bridge, "-j", "DROP"])],
        Guard::NewConnections => {
            let new = ["-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"];
            let mut rules = vec![words(&[&["INPUT", "-i", bridge][..], &new[..]].concat())];
            // Forwarded traffic (to other bridges and hosts) passes DOCKER-USER first.
            rules.extend(
                GUARDED_DESTINATIONS
                    .iter()
                    .map(|range| words(&[&["DOCKER-USER", "-i", bridge, "-d", range][..], &new[..]].concat())),
            );
            // Name lookups still reach the host's resolvers (often on a private address,
            // or the host itself): the engine's DNS asks them from the container's network.
            for chain in ["INPUT", "DOCKER-USER"] {
                for protocol in ["udp", "tcp"] {
                    rules.push(words(&[
                        chain, "-i", bridge, "-p", protocol, "--dport", "53", "-j", "ACCEPT",
                    ]));
                }
            }
            rules
        }
    }
}

async fn iptables(action: &str, rule: &[String]) -> std::io::Result<std::process::Output> {
    tokio::process::Command::new("iptables")
        .args(["-w", action])
        .args(rule)
        .stdin(std::process::Stdio::null())
        .output()
        .await
}

/// The host interface of a guarded network `name`: at most 15 characters (the kernel's
/// limit), the same for the same name.
fn guarded_bridge(name: &str) -> String {
    use sha2::Digest as _;
    format!("rg-{}", &hex::encode(sha2::Sha256::digest(name.as_bytes()))[..12])
}

/// Adds the rules by which the host drops what `bridge` sends it (see [`Guard`]), unless
/// they are there.
async fn guard_bridge(bridge: &str, guard: Guard) -> Result<(), String> {
    for rule in guard_rules(bridge, guard) {
        guard_with(bridge, &rule).await?;
    }
    Ok(())
}

async fn guard_with(bridge: &str, rule: &[String]) -> Result<(), String> {
    if iptables("-C", rule).await.is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    match iptables("-I", rule).await {
        Ok(output) if output.status.success() => {
            tracing::info!(bridge, rule = %rule.join(" "), "the host now drops what the bridge sends it");
            Ok(())
        }
        outcome => {
            let why = match outcome {
                Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                Err(error) => format!("iptables: {error}"),
            };
            Err(format!(
                "a pull request's container would reach this host's services through the bridge {bridge}, \
                 and the rule against it cannot be added ({why}); run the runner as root, or add it: iptables -I {}",
                rule.join(" ")
            ))
        }
    }
}

fn describe(host: &EngineHost) -> String {
    match host {
        EngineHost::Unix { path } => format!("unix://{}", path.display()),
        EngineHost::Tcp { host, port } => format!("tcp://{host}:{port}"),
        EngineHost::Tls { host, port, .. } => format!("tcp://{host}:{port} (TLS)"),
        EngineHost::Ssh(destination) => format!("ssh://{}", destination.host),
    }
}

/// The builder to use and why, or why none can build: `requested` is the project's
/// setting, `no_buildkit` why the engine cannot use BuildKit (if it cannot).
fn choose_builder(
    requested: Builder,
    no_buildkit: Option<&str>,
    needs_buildkit: bool,
) -> Result<(Builder, String), String> {
    match (requested, no_buildkit) {
        (Builder::Legacy, _) => Ok((
            Builder::Legacy,
            "the engine's legacy builder (builder = \"legacy\")".to_owned(),
        )),
        (Builder::Auto | Builder::BuildKit, None) => Ok((Builder::BuildKit, "BuildKit (Engine API {api})".to_owned())),
        (Builder::BuildKit, Some(reason)) => Err(format!(
            "builder = \"buildkit\" is set, but {reason}; upgrade the engine or set builder = \"auto\""
        )),
        (Builder::Auto, Some(reason)) if needs_buildkit => Err(format!(
            "this build needs BuildKit (secret mounts or a shared cache), but {reason}"
        )),
        (Builder::Auto, Some(reason)) => Ok((
            Builder::Legacy,
            format!("the engine's legacy builder, because {reason}"),
        )),
    }
}

fn buildkit_missing(api_version: &str, os: Option<&str>) -> Option<String> {
    let parsed = api_version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some(version) if version < BUILDKIT_API => Some(format!(
            "the engine speaks Engine API {api_version}; BuildKit needs 1.39 (Docker 18.09) or later"
        )),
        None => Some(format!(
            "the engine reports an Engine API version {api_version:?} the runner cannot read"
        )),
        Some(_) if os.is_some_and(|os| os != "linux") => Some(format!(
            "the engine runs on {}; BuildKit builds through the Engine API need a Linux engine",
            os.unwrap_or_default()
        )),
        Some(_) => None,
    }
}

impl DockerEngine {
    /// Chooses the builder `request` asks for, as this engine allows, and says why.
    fn choose_builder(&self, request: &BuildRequest, log: &JobLog) -> Result<Builder, EngineError> {
        if request.untrusted.is_some() {
            if let Some(reason) = &self.no_buildkit {
                return Err(EngineError::Engine(format!(
                    "a pull request's build runs only with BuildKit (its cache is what keeps the build apart from deploy builds), but {reason}; name another engine in [engine] untrusted_host"
                )));
            }
            log.system("builder: BuildKit, reading no cache and leaving none a deploy build can use");
            return Ok(Builder::BuildKit);
        }
        let needs_buildkit = !request.secrets.is_empty() || !request.cache_from.is_empty();
        let (builder, reason) = choose_builder(request.builder, self.no_buildkit.as_deref(), needs_buildkit)
            .map_err(EngineError::Engine)?;
        let reason = reason.replace("{api}", &self.api_version);
        log.system(format!("builder: {reason}"));
        tracing::info!(builder = ?builder, %reason, "building");
        Ok(builder)
    }

    async fn build_with_buildkit(
        &self,
        context_tar: Bytes,
        request: &BuildRequest,
        log: &JobLog,
    ) -> Result<String, EngineError> {
        let buildkit_request = BuildKitRequest {
            tag: &request.tag,
            dockerfile: &request.dockerfile,
            build_args: &request.build_args,
            labels: &request.labels,
            target: request.target.as_deref(),
            platform: request.platform.as_deref(),
            cache_from: &request.cache_from,
            secrets: &request.secrets,
            credentials: &request.credentials,
            untrusted: request.untrusted.as_ref(),
        };
        buildkit::build(&self.host, &self.api_version, context_tar, &buildkit_request, log)
            .await
            .map_err(|e| EngineError::Engine(e.to_string()))
    }

    async fn build_with_legacy_builder(
        &self,
        context_tar: Bytes,
        request: &BuildRequest,
        log: &JobLog,
    ) -> Result<String, EngineError> {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile.clone(),
            t: Some(request.tag.clone()),
            rm: true,
            forcerm: true,
            buildargs: Some(request.build_args.clone()),
            labels: Some(request.labels.clone()),
            target: request.target.clone().unwrap_or_default(),
            platform: request.platform.clone().unwrap_or_default(),
            ..Default::default()
        };
        let mut stream = self
            .docker
            .build_image(options, None, Some(bollard::body_full(context_tar)));
        let mut image_id = None;
        // The builder streams output in chunks that need not end at a line's end.
        let mut lines = LineBuffer::default();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| EngineError::Engine(format!("build failed: {e}")))?;
            if let Some(detail) = info.error_detail {
                if let Some(rest) = lines.finish() {
                    log.stdout(&rest);
                }
                return Err(EngineError::Engine(
                    detail.message.unwrap_or_else(|| "build failed".to_owned()),
                ));
            }
            if let Some(text) = info.stream.as_deref() {
                for line in lines.push(text) {
                    log.stdout(&line);
                }
            }
            if let Some(status) = info.status.as_deref() {
                log.stdout(status);
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        if let Some(rest) = lines.finish() {
            log.stdout(&rest);
        }
        match image_id {
            Some(id) => Ok(id),
            None => {
                // The classic builder reports the id in the stream only; ask for the tag.
                let image = self.docker.inspect_image(&request.tag).await?;
                image
                    .id
                    .ok_or_else(|| EngineError::Engine("the engine did not report an image id".into()))
            }
        }
    }
}

#[async_trait::async_trait]
impl ContainerEngine for DockerEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| EngineError::Unreachable(e.to_string()))
    }

    async fn build(&self, context_tar: Bytes, request: &BuildRequest, log: &JobLog) -> Result<String, EngineError> {
        match self.choose_builder(request, log)? {
            Builder::BuildKit => self.build_with_buildkit(context_tar, request, log).await,
            Builder::Legacy | Builder::Auto => self.build_with_legacy_builder(context_tar, request, log).await,
        }
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Started, EngineError> {
        let port_key = format!("{}/tcp", spec.container_port);
        // A remote engine's containers are reached on its address, not on our loopback.
        let (host_ip, host_port) = match spec.publish {
            Some((ip, port)) => (ip.to_string(), port.to_string()),
            None => (
                self.remote_ip
                    .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string()),
                String::new(),
            ),
        };
        let network_mode = self.network_mode(&spec.network).await?;
        // An internal network publishes nothing.
        let port_bindings = (spec.network != Network::Closed).then(|| {
            HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(host_ip),
                    host_port: Some(host_port),
                }]),
            )])
        });
        let mut labels = spec.labels.clone();
        labels.insert(MANAGED_LABEL.to_owned(), self.instance.clone());
        labels.insert(ROLE_LABEL.to_owned(), spec.role.as_str().to_owned());
        labels.insert(JOB_LABEL.to_owned(), spec.job_id.to_string());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            labels: Some(labels),
            env: (!spec.env.is_empty())
                .then(|| spec.env.iter().map(|(name, value)| format!("{name}={value}")).collect()),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(HostConfig {
                port_bindings,
                network_mode,
                restart_policy: (spec.role == Role::Live).then_some(bollard::models::RestartPolicy {
                    name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                memory: Some(spec.limits.memory_bytes),
                // No swap beyond the memory limit.
                memory_swap: Some(spec.limits.memory_bytes),
                nano_cpus: Some(spec.limits.nano_cpus),
                pids_limit: Some(spec.limits.pids_limit),
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(spec.limits.capabilities.clone()),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                init: Some(spec.limits.init),
                ..Default::default()
            }),
            stop_timeout: Some(i64::try_from(spec.limits.stop_grace.as_secs()).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        let id = self.create_started(Some(spec.name.clone()), body, None).await?;
        let endpoint = match spec.network {
            Network::Closed => Endpoint::Inside {
                port: spec.container_port,
            },
            _ => match self.published_port(&id, spec.container_port).await {
                Ok((ip, port)) => Endpoint::Published { ip, port },
                Err(error) => {
                    self.discard(&id).await;
                    return Err(error);
                }
            },
        };
        Ok(Started { id, endpoint })
    }

    async fn logs(&self, container: &str) -> Result<Vec<String>, EngineError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "500".to_owned(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(container, Some(options));
        let mut buffer = LineBuffer::default();
        let mut lines = Vec::new();
        while let Some(item) = stream.next().await {
            let output = item?;
            lines.extend(buffer.push(&output.to_string()));
        }
        lines.extend(buffer.finish());
        Ok(lines)
    }

    async fn remove(&self, container: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        let _one_at_a_time = self.networks.lock().await;
        match self.docker.remove_network(name).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => return Err(error.into()),
        }
        // A guarded network's rule goes with it (it names an interface that is gone).
        if self.remote_ip.is_none() {
            for rule in guard_rules(&guarded_bridge(name), Guard::NewConnections) {
                while iptables("-C", &rule).await.is_ok_and(|o| o.status.success()) {
                    if !iptables("-D", &rule).await.is_ok_and(|o| o.status.success()) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn push(
        &self,
        image: &str,
        tag: &str,
        auth: Option<RegistryAuth>,
        log: &JobLog,
    ) -> Result<String, EngineError> {
        let credentials = auth.map(|auth| DockerCredentials {
            username: Some(auth.username),
            password: Some(auth.password),
            serveraddress: Some(auth.server),
            ..Default::default()
        });
        let options = PushImageOptions {
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let mut stream = self.docker.push_image(image, Some(options), credentials);
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| EngineError::Engine(format!("push failed: {e}")))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Engine(
                    detail.message.unwrap_or_else(|| "push failed".to_owned()),
                ));
            }
            if let Some(status) = info.status.as_deref() {
                // The last status line reads "<tag>: digest: sha256:<hex> size: <n>".
                if let Some(rest) = status.split("digest: ").nth(1) {
                    digest = rest.split_whitespace().next().map(str::to_owned);
                }
                if !status.starts_with("Pushing") && !status.starts_with("Waiting") && !status.starts_with("Preparing")
                {
                    log.stdout(status);
                }
            }
        }
        digest.ok_or_else(|| EngineError::Engine("the registry did not report a digest for the pushed image".into()))
    }

    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        let options = TagImageOptions {
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
        };
        self.docker.tag_image(source, Some(options)).await?;
        Ok(())
    }

    async fn find(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(details) => Ok(details.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn stop(&self, container: &str) -> Result<(), EngineError> {
        // The container's own grace period (`stop_grace_secs`, given at its creation).
        let options = StopContainerOptions::default();
        match self.docker.stop_container(container, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn ask_to_stop(&self, container: &str) -> Result<(), EngineError> {
        let options = bollard::query_parameters::KillContainerOptions {
            signal: "SIGTERM".to_owned(),
        };
        match self.docker.kill_container(container, Some(options)).await {
            // Not running (404 gone, 409 stopped): nothing to ask.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409, ..
            }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn kill(&self, container: &str) -> Result<(), EngineError> {
        // A stop with no grace period: the engine answers once the container has exited
        // and its output has been copied into its log.
        let options = StopContainerOptions {
            t: Some(0),
            ..Default::default()
        };
        match self.docker.stop_container(container, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn images(&self, repositories: &[String]) -> Result<Vec<StoredImage>, EngineError> {
        let options = bollard::query_parameters::ListImagesOptions {
            all: false,
            filters: Some(HashMap::from([("reference".to_owned(), repositories.to_vec())])),
            ..Default::default()
        };
        let listed = self.docker.list_images(Some(options)).await?;
        Ok(listed
            .into_iter()
            .map(|image| StoredImage {
                id: image.id,
                tags: image.repo_tags,
                digests: image.repo_digests,
                bytes: u64::try_from(image.size).unwrap_or_default(),
            })
            .collect())
    }

    async fn remove_image(&self, name: &str) -> Result<(), EngineError> {
        let options = bollard::query_parameters::RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match self.docker.remove_image(name, Some(options), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ManagedContainer>, EngineError> {
        let mut filters = vec![format!("{MANAGED_LABEL}={}", self.instance)];
        filters.extend(labels.iter().map(|(key, value)| format!("{key}={value}")));
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), filters)])),
            ..Default::default()
        };
        let listed = self.docker.list_containers(Some(options)).await?;
        Ok(listed
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(ManagedContainer {
                    role: labels.get(ROLE_LABEL).and_then(|r| Role::parse(r)),
                    running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                    published: c
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|p| p.public_port)
                        .collect(),
                    id: c.id?,
                    labels,
                })
            })
            .collect())
    }

    async fn restart(&self, container: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(container, None::<StartContainerOptions>)
            .await?;
        Ok(())
    }

    async fn rename(&self, container: &str, name: &str) -> Result<(), EngineError> {
        self.docker
            .rename_container(container, RenameContainerOptions { name: name.to_owned() })
            .await?;
        Ok(())
    }

    async fn start_prober(
        &self,
        beside: &str,
        image: &str,
        job_id: i64,
        lifetime: std::time::Duration,
    ) -> Result<String, EngineError> {
        self.ensure_image(image).await.map_err(|error| {
            EngineError::Engine(format!(
                "the health probe from inside the closed network needs {image} ([engine] probe_image, an image with busybox's wget and timeout) on the engine, and it is not there ({error})"
            ))
        })?;
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            // Reaped with the smoke container it probes, and at the next start if left.
            labels: Some(self.labels(Role::Smoke, job_id)),
            entrypoint: Some(vec!["sleep".to_owned()]),
            cmd: Some(vec![lifetime.as_secs().max(1).to_string()]),
            // Nobody, in the probed container's network namespace and no other of its.
            user: Some("65534:65534".to_owned()),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{beside}")),
                // `timeout` leaves a watcher process behind each request; the engine's init
                // reaps them, where `sleep` as PID 1 would not and the pids limit would fill.
                init: Some(true),
                memory: Some(32 * 1024 * 1024),
                memory_swap: Some(32 * 1024 * 1024),
                pids_limit: Some(16),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_started(None, body, None).await
    }

    async fn ask_inside(&self, prober: &str, port: u16, path: &str) -> Result<Answer, EngineError> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let seconds = probe::REQUEST_TIMEOUT.as_secs().to_string();
        // busybox's own `wget -T` crashes on a refused connection; `timeout` bounds it instead.
        let command = ["timeout", &seconds, "wget", "-q", "-S", "-O", "-", &url];
        let exec = self
            .docker
            .create_exec(
                prober,
                bollard::exec::CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(command.to_vec()),
                    ..Default::default()
                },
            )
            .await?;
        let bollard::exec::StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await?
        else {
            return Err(EngineError::Engine("the probe's exec started detached".into()));
        };
        let (mut body, mut report) = (Vec::new(), Vec::new());
        let read = async {
            while let Some(chunk) = output.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdOut { message } => {
                        let room = probe::MAX_BODY_BYTES.saturating_sub(body.len());
                        body.extend_from_slice(&message[..message.len().min(room)]);
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        let room = PROBE_REPORT_BYTES.saturating_sub(report.len());
                        report.extend_from_slice(&message[..message.len().min(room)]);
                    }
                    _ => {}
                }
                // The app is the code under test: once either limit is reached nothing more
                // of its answer is read (the prober's `timeout` ends the request).
                if body.len() >= probe::MAX_BODY_BYTES || report.len() >= PROBE_REPORT_BYTES {
                    break;
                }
            }
            Ok::<_, EngineError>(())
        };
        // The prober's `timeout` ends the request; this bounds an engine that stops answering.
        let budget = probe::REQUEST_TIMEOUT + std::time::Duration::from_secs(3);
        if tokio::time::timeout(budget, read).await.is_err() {
            return Ok(Answer::Silent);
        }
        let exit_code = self.docker.inspect_exec(&exec.id).await?.exit_code;
        Ok(read_wget_answer(
            exit_code,
            &String::from_utf8_lossy(&report),
            &String::from_utf8_lossy(&body),
        ))
    }

    async fn start_task(&self, task: &TaskSpec) -> Result<String, EngineError> {
        use secrecy::ExposeSecret;
        if task.pull {
            self.pull(&task.image).await?;
        } else {
            self.ensure_image(&task.image).await?;
        }
        let network_mode = match &task.network {
            TaskNetwork::Joins(network) => self.network_mode(network).await?,
            TaskNetwork::Pod(pod) => Some(format!("container:{pod}")),
        };
        let env = task
            .env
            .iter()
            .map(|(name, value)| format!("{name}={}", value.expose_secret()))
            .collect();
        let mounts = task
            .volumes
            .iter()
            .map(|(volume, target)| bollard::models::Mount {
                typ: Some(bollard::models::MountType::VOLUME),
                source: Some(volume.clone()),
                target: Some(target.clone()),
                ..Default::default()
            })
            .collect();
        let (entrypoint, cmd) = match &task.script {
            Some(script) => (
                Some(vec!["/bin/sh".to_owned(), "-e".to_owned(), "-c".to_owned()]),
                Some(vec![script.clone()]),
            ),
            None => (None, None),
        };
        let body = ContainerCreateBody {
            image: Some(task.image.clone()),
            labels: Some(self.labels(Role::Task, task.job_id)),
            entrypoint,
            cmd,
            env: Some(env),
            host_config: Some(HostConfig {
                network_mode,
                mounts: Some(mounts),
                // The runner keeps what it reads of the output; the engine's own copy of a
                // chatty step stays small.
                log_config: Some(bollard::models::HostConfigLogConfig {
                    typ: Some("json-file".to_owned()),
                    config: Some(HashMap::from([
                        ("max-size".to_owned(), "10m".to_owned()),
                        ("max-file".to_owned(), "1".to_owned()),
                    ])),
                }),
                // Commands that start children (a test runner's workers) get them reaped.
                init: Some(true),
                memory: Some(task.limits.memory_bytes),
                memory_swap: Some(task.limits.memory_bytes),
                nano_cpus: Some(task.limits.nano_cpus),
                pids_limit: Some(task.limits.pids_limit),
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(task.limits.capabilities.clone()),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let files = (!task.files.is_empty()).then(|| task.files.clone());
        self.create_started(Some(task.name.clone()), body, files).await
    }

    async fn start_pod(&self, pod: &PodSpec) -> Result<String, EngineError> {
        self.ensure_image(&pod.image).await.map_err(|error| {
            EngineError::Engine(format!(
                "a step's services share a pod made of {} ([engine] probe_image, an image with sleep), and it is not on the engine ({error})",
                pod.image
            ))
        })?;
        let network_mode = self.network_mode(&pod.network).await?;
        let body = ContainerCreateBody {
            image: Some(pod.image.clone()),
            labels: Some(self.labels(Role::Task, pod.job_id)),
            entrypoint: Some(vec!["sleep".to_owned()]),
            cmd: Some(vec![pod.lifetime.as_secs().max(1).to_string()]),
            user: Some("65534:65534".to_owned()),
            host_config: Some(HostConfig {
                network_mode,
                extra_hosts: Some(pod.hosts.iter().map(|host| format!("{host}:127.0.0.1")).collect()),
                init: Some(true),
                memory: Some(16 * 1024 * 1024),
                memory_swap: Some(16 * 1024 * 1024),
                pids_limit: Some(8),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_started(Some(pod.name.clone()), body, None).await
    }

    async fn follow_task(&self, container: &str, log: &JobLog) -> Result<i64, EngineError> {
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut stream = self.docker.logs(container, Some(options));
        let (mut out, mut err) = (LineBuffer::default(), LineBuffer::default());
        while let Some(item) = stream.next().await {
            match item? {
                bollard::container::LogOutput::StdErr { message } => {
                    for line in err.push(&String::from_utf8_lossy(&message)) {
                        log.stderr(&line);
                    }
                }
                output => {
                    for line in out.push(&output.to_string()) {
                        log.stdout(&line);
                    }
                }
            }
        }
        if let Some(line) = out.finish() {
            log.stdout(&line);
        }
        if let Some(line) = err.finish() {
            log.stderr(&line);
        }
        let mut waited = self
            .docker
            .wait_container(container, None::<bollard::query_parameters::WaitContainerOptions>);
        match waited.next().await {
            Some(Ok(exit)) => Ok(exit.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(error)) => Err(error.into()),
            None => Err(EngineError::Engine("the engine said nothing of the step's end".into())),
        }
    }

    async fn read_file(&self, container: &str, path: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, EngineError> {
        let options = bollard::query_parameters::DownloadFromContainerOptions { path: path.to_owned() };
        let mut stream = self.docker.download_from_container(container, Some(options));
        // The archive holds one file; its header and padding are a little over its size.
        let limit = max_bytes.saturating_add(64 * 1024);
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if archive.len() as u64 + bytes.len() as u64 > limit {
                        return Ok(None);
                    }
                    archive.extend_from_slice(&bytes);
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
                Err(error) => return Err(error.into()),
            }
        }
        let mut entries = tar::Archive::new(archive.as_slice());
        let entries = entries.entries().map_err(|e| EngineError::Engine(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| EngineError::Engine(e.to_string()))?;
            if entry.header().entry_type().is_file() && entry.size() <= max_bytes {
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut content).map_err(|e| EngineError::Engine(e.to_string()))?;
                return Ok(Some(content));
            }
        }
        Ok(None)
    }
}

/// The most of a probe's error output that is read.
const PROBE_REPORT_BYTES: usize = 16 * 1024;

/// What `wget -q -S` said, as an [`Answer`]: `-S` writes the response's status line to
/// stderr (indented), the body goes to stdout; it follows redirects, so the first status
/// line is the endpoint's own answer.
fn read_wget_answer(exit_code: Option<i64>, report: &str, body: &str) -> Answer {
    let status = report.lines().find_map(|line| {
        let line = line.trim();
        let rest = line
            .strip_prefix("HTTP/")
            .or_else(|| line.strip_prefix("wget: server returned error: HTTP/"))?;
        rest.split_whitespace().nth(1)?.parse::<u16>().ok()
    });
    if let Some(status) = status {
        return Answer::Http {
            status,
            body: body.to_owned(),
        };
    }
    let last = report.lines().map(str::trim).rfind(|line| !line.is_empty());
    match (exit_code, last) {
        (_, Some(line)) if line.contains("Connection refused") => Answer::Refused,
        // `timeout` ends wget with SIGTERM.
        (Some(143 | 124 | 137), _) => Answer::Silent,
        // The line may be the app's own words (a header wget could not read): short and quoted.
        (_, Some(line)) => Answer::Failed(format!(
            "{:?}",
            line.trim_start_matches("wget: ").chars().take(80).collect::<String>()
        )),
        (code, None) => Answer::Failed(format!("the probe ended with {code:?} and said nothing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What busybox 1.35's `wget -q -S -O -` printed for each case.
    #[test]
    fn a_probers_wget_output_reads_as_the_answer_it_got() {
        let ok = "  HTTP/1.1 200 OK\n  Content-Length: 8\n  Connection: close\n  \n";
        assert_eq!(
            read_wget_answer(Some(0), ok, "healthy\n"),
            Answer::Http {
                status: 200,
                body: "healthy\n".into()
            }
        );
        let error =
            "  HTTP/1.1 503 Service Unavailable\nwget: server returned error: HTTP/1.1 503 Service Unavailable\n";
        assert_eq!(
            read_wget_answer(Some(1), error, ""),
            Answer::Http {
                status: 503,
                body: String::new()
            }
        );
        // A redirect is followed by wget; the endpoint's own answer is the first.
        let redirect = "  HTTP/1.1 302 Found\n  Location: /elsewhere\n  \n  HTTP/1.1 200 OK\n  \n";
        assert!(matches!(
            read_wget_answer(Some(0), redirect, "x"),
            Answer::Http { status: 302, .. }
        ));
        let refused = "wget: can't connect to remote host (127.0.0.1): Connection refused\n";
        assert_eq!(read_wget_answer(Some(1), refused, ""), Answer::Refused);
        assert_eq!(read_wget_answer(Some(143), "", ""), Answer::Silent);
        assert_eq!(
            read_wget_answer(Some(1), "wget: error getting response\n", ""),
            Answer::Failed("\"error getting response\"".into())
        );
    }

    #[test]
    fn buildkit_is_used_where_the_engine_has_it_and_its_absence_is_explained() {
        assert_eq!(buildkit_missing("1.41", Some("linux")), None);
        let old = buildkit_missing("1.38", Some("linux")).expect("too old");
        assert!(old.contains("1.39"), "{old}");
        assert!(buildkit_missing("1.41", Some("windows")).is_some());

        assert_eq!(
            choose_builder(Builder::Auto, None, false).map(|c| c.0),
            Ok(Builder::BuildKit)
        );
        assert_eq!(
            choose_builder(Builder::Legacy, None, false).map(|c| c.0),
            Ok(Builder::Legacy)
        );
        let (builder, why) = choose_builder(Builder::Auto, Some(&old), false).expect("falls back");
        assert_eq!(builder, Builder::Legacy);
        assert!(why.contains("1.39"), "the fallback says why: {why}");
        let demanded = choose_builder(Builder::BuildKit, Some(&old), false).expect_err("refused");
        assert!(
            demanded.contains("builder = \"buildkit\"") && demanded.contains("1.39"),
            "{demanded}"
        );
        let needed = choose_builder(Builder::Auto, Some(&old), true).expect_err("refused");
        assert!(needed.contains("secret mounts"), "{needed}");
    }
}
