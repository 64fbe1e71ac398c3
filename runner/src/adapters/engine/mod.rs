//! The container engine boundary in the runner's words: build, run, inspect, push.
//!
//! Everything the runner creates carries the label `io.runner.managed=<instance>` and a
//! role, so what a crash leaves behind can be found and removed at the next start, and
//! several runners can share one engine without touching each other's containers.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use bytes::Bytes;
use secrecy::SecretString;

use super::probe::Answer;
use crate::config::Builder;
use crate::joblog::JobLog;

mod docker;

pub use docker::DockerEngine;

pub const MANAGED_LABEL: &str = "io.runner.managed";
pub const ROLE_LABEL: &str = "io.runner.role";
pub const JOB_LABEL: &str = "io.runner.job";

/// The runner's network for code from pull requests, and the name of its bridge on the
/// engine's host (at most 15 characters, the kernel's limit).
pub const CLOSED_NETWORK: &str = "runner-verify";

/// Which network a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// The engine's default bridge, the container's port published on the host.
    Default,
    /// [`CLOSED_NETWORK`]: `internal` (no route off the bridge), no traffic between its
    /// containers, and (on this host's engine) none to the host itself; nothing is
    /// published, the runner reaches the container at its address there.
    Closed,
    /// A bridge of one environment's own, named so: its containers' unpublished ports are
    /// out of other environments' reach, while their published ports work as before.
    Own(String),
    /// As `Own`, for a pull request's code (a preview): no traffic between its containers,
    /// and (on this host's engine) the host takes no new connection from it, so the code
    /// reaches none of the host's services; its published ports still serve.
    Guarded(String),
}

/// What a container is for; smoke and candidate containers never outlive their job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Smoke,
    Candidate,
    Live,
    /// A pipeline step's container (a repository's own check).
    Task,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        [Self::Smoke, Self::Candidate, Self::Live, Self::Task]
            .into_iter()
            .find(|r| r.as_str() == text)
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Smoke => "smoke",
            Self::Candidate => "candidate",
            Self::Live => "live",
            Self::Task => "task",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine ({0}); start it, or point engine.host (or DOCKER_HOST) at one")]
    Unreachable(String),
    #[error("{0}")]
    Engine(String),
}

impl From<bollard::errors::Error> for EngineError {
    fn from(error: bollard::errors::Error) -> Self {
        Self::Engine(error.to_string())
    }
}

/// A container to start.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub container_port: u16,
    /// Publish on this address and port; `None` picks a free port on 127.0.0.1.
    pub publish: Option<(IpAddr, u16)>,
    pub role: Role,
    pub job_id: i64,
    pub labels: HashMap<String, String>,
    /// Memory, CPU and process limits and the capabilities kept; the container also runs
    /// with `no-new-privileges`.
    pub limits: crate::config::ContainerLimits,
    pub network: Network,
    /// Its environment variables (`NAME`, value); the image's own stay unless named here.
    pub env: Vec<(String, String)>,
}

/// A container this runner made, as the engine lists it.
#[derive(Debug, Clone)]
pub struct ManagedContainer {
    pub id: String,
    pub role: Option<Role>,
    pub running: bool,
    pub labels: HashMap<String, String>,
    /// The host ports it publishes.
    pub published: Vec<u16>,
}

/// An image in the engine, as listed.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub id: String,
    /// `repository:tag` names.
    pub tags: Vec<String>,
    /// `repository@sha256:…` names.
    pub digests: Vec<String>,
    pub bytes: u64,
}

/// A started container and where its service answers.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    pub endpoint: Endpoint,
}

/// How the runner reaches a started container's service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A port the runner connects to.
    Published { ip: IpAddr, port: u16 },
    /// `port` inside the container's own network namespace, and only there: a closed
    /// network's container may live where no route from the runner leads (another host,
    /// a rootless engine's namespace), and the runner never connects into that network.
    /// It is asked from a prober beside it ([`ContainerEngine::start_prober`]).
    Inside { port: u16 },
}

/// The engine operations the pipeline uses, in our words.
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync {
    /// Whether the engine answers now: a runner whose engine is away claims no job.
    async fn ping(&self) -> Result<(), EngineError> {
        Ok(())
    }
    /// Builds `context_tar` as `request` says; returns the image id.
    async fn build(&self, context_tar: Bytes, request: &BuildRequest, log: &JobLog) -> Result<String, EngineError>;
    async fn start(&self, spec: &ContainerSpec) -> Result<Started, EngineError>;
    /// The container's last output lines.
    async fn logs(&self, container: &str) -> Result<Vec<String>, EngineError>;
    /// Removes the container, running or not; a missing one is not an error.
    async fn remove(&self, container: &str) -> Result<(), EngineError>;
    /// Pushes `image:tag`; returns the digest the registry reported.
    async fn push(
        &self,
        image: &str,
        tag: &str,
        auth: Option<RegistryAuth>,
        log: &JobLog,
    ) -> Result<String, EngineError>;
    /// Gives the image `source` the name `repo:tag`.
    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), EngineError>;
    /// The id of the container named `name`, if it exists.
    async fn find(&self, name: &str) -> Result<Option<String>, EngineError>;
    /// Stops the container with its stop signal and grace period; a stopped one is fine.
    async fn stop(&self, container: &str) -> Result<(), EngineError>;
    /// Asks the container to stop (its stop signal, SIGTERM) and returns without waiting
    /// for it to exit.
    async fn ask_to_stop(&self, container: &str) -> Result<(), EngineError> {
        self.stop(container).await
    }
    /// Stops the container at once (no grace period) and waits until it has exited, by
    /// which time the engine holds everything it printed.
    async fn kill(&self, container: &str) -> Result<(), EngineError> {
        self.stop(container).await
    }
    /// Starts a stopped container again.
    async fn restart(&self, container: &str) -> Result<(), EngineError>;
    /// The images named in any of `repositories` (without tag or digest).
    async fn images(&self, repositories: &[String]) -> Result<Vec<StoredImage>, EngineError>;
    /// Removes one name of an image (`repo:tag` or `repo@digest`); the image goes with
    /// its last name. One a container still uses is refused by the engine.
    async fn remove_image(&self, name: &str) -> Result<(), EngineError>;
    /// This runner's containers that carry every one of `labels`, running or not.
    async fn containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ManagedContainer>, EngineError>;
    async fn rename(&self, container: &str, name: &str) -> Result<(), EngineError>;
    /// Removes the network `name` the runner made; a missing one is not an error.
    async fn remove_network(&self, _name: &str) -> Result<(), EngineError> {
        Ok(())
    }
    /// Starts a prober: a small container of `image` (busybox: `wget` and `timeout`) that
    /// shares `beside`'s network namespace and nothing else, from which
    /// [`ask_inside`](Self::ask_inside) asks. `image` is pulled if the engine lacks it.
    /// The prober is removed like any container; it also ends by itself after `lifetime`.
    async fn start_prober(
        &self,
        beside: &str,
        image: &str,
        job_id: i64,
        lifetime: std::time::Duration,
    ) -> Result<String, EngineError>;
    /// One GET of `http://127.0.0.1:{port}{path}` from `prober`.
    async fn ask_inside(&self, prober: &str, port: u16, path: &str) -> Result<Answer, EngineError>;
    /// Creates a task's container, copies `task.files` into it and starts it; returns its
    /// id. The caller removes it, whatever happens next.
    async fn start_task(&self, task: &TaskSpec) -> Result<String, EngineError>;
    /// Starts a pod ([`PodSpec`]); returns its id. Removed like any container.
    async fn start_pod(&self, pod: &PodSpec) -> Result<String, EngineError>;
    /// Copies the task's output into `log` as it comes and waits for it to exit; answers
    /// its exit code.
    async fn follow_task(&self, container: &str, log: &JobLog) -> Result<i64, EngineError>;
    /// The file at `path` in the container (stopped or not), if it exists and is at most
    /// `max_bytes`.
    async fn read_file(&self, container: &str, path: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, EngineError>;
}

/// A container that runs commands to their end (a pipeline step), or a service beside one.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    pub image: String,
    /// `Some`: run as `/bin/sh -e -c SCRIPT` in the image's working directory; `None`:
    /// the image's own entrypoint and command (a service).
    pub script: Option<String>,
    pub env: Vec<(String, SecretString)>,
    /// A tar copied into the container's root before it starts (the checkout, under
    /// [`TASK_CHECKOUT`]); empty: nothing.
    pub files: Bytes,
    pub job_id: i64,
    pub limits: crate::config::ContainerLimits,
    pub network: TaskNetwork,
    /// Named volumes (created by the engine on first use) and where they are mounted.
    pub volumes: Vec<(String, String)>,
    /// Pull the image, without credentials, even when the engine has it: a pull request's
    /// step runs only what anyone may pull, never what the engine holds of others.
    pub pull: bool,
}

/// Where a task's network comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskNetwork {
    /// A network of its own kind, as for any container.
    Joins(Network),
    /// The network namespace of a pod ([`ContainerEngine::start_pod`]): the step and its
    /// services share one, and reach each other by the names the pod's hosts file gives.
    Pod(String),
}

/// A pod: a container that only holds a network namespace for a step and its services.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    /// A small image with `sleep` (the probe image).
    pub image: String,
    pub job_id: i64,
    pub network: Network,
    /// Host names that resolve to the pod itself (the services' names).
    pub hosts: Vec<String>,
    pub lifetime: std::time::Duration,
}

/// Where a task finds the commit's checkout.
pub const TASK_CHECKOUT: &str = "/checkout";

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub tag: String,
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    pub builder: Builder,
    pub target: Option<String>,
    pub platform: Option<String>,
    pub cache_from: Vec<String>,
    /// Secret mounts (`RUN --mount=type=secret,id=NAME`); BuildKit only.
    pub secrets: BTreeMap<String, SecretString>,
    /// Registry host → (username, password), for pulling `cache_from` images.
    pub credentials: HashMap<String, (String, SecretString)>,
    /// Set for code the runner did not get from a trusted push: see [`UntrustedBuild`].
    pub untrusted: Option<UntrustedBuild>,
}

/// How a pull request's build is kept apart from deploy builds on one engine. BuildKit's
/// layer cache is keyed by what a step is, not by who ran it (a secret mount is not part
/// of the key): a deploy build's `RUN --mount=type=secret ... > file` layer would be
/// `CACHED` in a pull request's build with the same step, and a pull request's layer in
/// a later deploy's. So such a build reads no cache at all (`--no-cache`), and `key`, new
/// for every build, goes into every `RUN` step's definition (as an `/etc/hosts` entry),
/// so nothing it leaves in the cache is ever the answer to a deploy build's step. Layers
/// from `FROM` and `COPY` are addressed by their content and mean the same whoever made
/// them. Always BuildKit: the legacy builder's cache has no such key.
#[derive(Debug, Clone)]
pub struct UntrustedBuild {
    pub key: String,
    pub network: crate::config::BuildNetwork,
}

#[derive(Clone)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub server: String,
}

/// Copies a container's last output into the job's log (why a smoke test or a rollout
/// failed is usually there).
pub async fn copy_logs(engine: &dyn ContainerEngine, container: &str, log: &JobLog) {
    match engine.logs(container).await {
        Ok(lines) => {
            for line in lines {
                log.stdout(&format!("[container] {line}"));
            }
        }
        Err(error) => log.system(format!("could not read the container's logs: {error}")),
    }
}
