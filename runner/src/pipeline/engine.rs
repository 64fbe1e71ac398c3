//! The container engine boundary: build, run, inspect, push, over the Docker Engine API.
//!
//! Everything the runner creates carries the label `io.runner.managed=<instance>` and a
//! role, so what a crash leaves behind can be found and removed at the next start, and
//! several runners can share one engine without touching each other's containers.

use std::collections::HashMap;
use std::net::IpAddr;

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

use super::joblog::{JobLog, LineBuffer};

pub const MANAGED_LABEL: &str = "io.runner.managed";
pub const ROLE_LABEL: &str = "io.runner.role";
pub const JOB_LABEL: &str = "io.runner.job";

/// What a container is for; smoke and candidate containers never outlive their job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Smoke,
    Candidate,
    Live,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Smoke => "smoke",
            Self::Candidate => "candidate",
            Self::Live => "live",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine ({0}); start it or set DOCKER_HOST")]
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
}

/// A started container and the host port its service answers on.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    pub host_ip: IpAddr,
    pub host_port: u16,
}

/// The engine operations the pipeline uses, in our words.
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync {
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
    /// Starts a stopped container again.
    async fn restart(&self, container: &str) -> Result<(), EngineError>;
    async fn rename(&self, container: &str, name: &str) -> Result<(), EngineError>;
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub tag: String,
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
}

#[derive(Clone)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub server: String,
}

#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// This runner's identity on the engine (stable across its restarts).
    instance: String,
}

impl DockerEngine {
    /// Connects to `DOCKER_HOST` or the local socket and checks the engine answers.
    pub async fn connect(instance: String) -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults().map_err(|e| EngineError::Unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        Ok(Self { docker, instance })
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

    /// Removes smoke and candidate containers a killed runner left behind.
    pub async fn reap_leftovers(&self) -> Result<usize, EngineError> {
        let mut removed = 0;
        for role in [Role::Smoke, Role::Candidate] {
            for (id, names, _) in self.managed(Some(role)).await? {
                tracing::info!(container = %id, names = ?names, "removing a container left by an earlier run");
                self.remove(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes a container that failed to start. If that fails too, the start's error is
    /// still what the caller reports; the container keeps the runner's labels, by which it
    /// can be found.
    async fn discard(&self, id: &str) {
        if let Err(error) = self.remove(id).await {
            tracing::warn!(container = id, %error, "cannot remove a container that failed to start");
        }
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
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let port = binding
            .host_port
            .as_deref()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| EngineError::Engine(format!("container {id} has no host port for {key}")))?;
        Ok((ip, port))
    }
}

#[async_trait::async_trait]
impl ContainerEngine for DockerEngine {
    async fn build(&self, context_tar: Bytes, request: &BuildRequest, log: &JobLog) -> Result<String, EngineError> {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile.clone(),
            t: Some(request.tag.clone()),
            rm: true,
            forcerm: true,
            buildargs: Some(request.build_args.clone()),
            labels: Some(request.labels.clone()),
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

    async fn start(&self, spec: &ContainerSpec) -> Result<Started, EngineError> {
        let port_key = format!("{}/tcp", spec.container_port);
        let (host_ip, host_port) = match spec.publish {
            Some((ip, port)) => (ip.to_string(), port.to_string()),
            None => ("127.0.0.1".to_owned(), String::new()),
        };
        let mut labels = spec.labels.clone();
        labels.insert(MANAGED_LABEL.to_owned(), self.instance.clone());
        labels.insert(ROLE_LABEL.to_owned(), spec.role.as_str().to_owned());
        labels.insert(JOB_LABEL.to_owned(), spec.job_id.to_string());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some(host_ip),
                        host_port: Some(host_port),
                    }]),
                )])),
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
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self.docker.create_container(Some(options), body).await?;
        if let Err(error) = self
            .docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
        {
            self.discard(&created.id).await;
            return Err(error.into());
        }
        let (host_ip, host_port) = match self.published_port(&created.id, spec.container_port).await {
            Ok(published) => published,
            Err(error) => {
                self.discard(&created.id).await;
                return Err(error);
            }
        };
        Ok(Started {
            id: created.id,
            host_ip,
            host_port,
        })
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
        let options = StopContainerOptions {
            t: Some(10),
            ..Default::default()
        };
        match self.docker.stop_container(container, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
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
