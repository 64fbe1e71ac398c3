//! The ECS boundary: point a service at a task definition revision and wait, bounded,
//! until it is stable on it; or notice that it never will be.

use std::time::Duration;

use aws_sdk_ecs::error::DisplayErrorContext;
use aws_sdk_ecs::types::{Deployment, Service};

use crate::joblog::JobLog;

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error("ECS {operation}: {message}")]
    Api { operation: &'static str, message: String },
    #[error("service {service} does not exist in cluster {cluster}")]
    NoService { cluster: String, service: String },
    #[error("task definition {0} has no container named {1:?}")]
    NoContainer(String, String),
    #[error("the deployment failed: {0}")]
    Failed(String),
    #[error("the service did not become stable on {task_definition} within {after:?} ({state})")]
    Timeout {
        task_definition: String,
        after: Duration,
        state: String,
    },
}

fn api<E: std::error::Error + 'static>(operation: &'static str) -> impl FnOnce(E) -> EcsError {
    move |error| EcsError::Api {
        operation,
        message: DisplayErrorContext(&error).to_string(),
    }
}

/// Puts a task definition revision on a service and says when it runs there.
#[async_trait::async_trait]
pub trait Deployer: Send + Sync {
    /// The task definition the service runs now.
    async fn current(&self, cluster: &str, service: &str) -> Result<String, EcsError>;
    /// A new revision of `task_definition`'s family, identical but for `container`'s image.
    async fn revision_with_image(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
    ) -> Result<String, EcsError>;
    async fn image_of(&self, task_definition: &str, container: &str) -> Result<Option<String>, EcsError>;
    async fn point(&self, cluster: &str, service: &str, task_definition: &str) -> Result<(), EcsError>;
    /// Waits, at most `timeout`, until the service runs only `task_definition`.
    async fn wait_stable(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        timeout: Duration,
        log: &JobLog,
    ) -> Result<(), EcsError>;
}

pub struct Ecs {
    client: aws_sdk_ecs::Client,
    poll: Duration,
}

impl Ecs {
    /// The standard AWS configuration chain; `endpoint_url` (or `AWS_ENDPOINT_URL`) points
    /// it at another endpoint.
    pub async fn new(region: Option<String>, endpoint_url: Option<String>) -> Self {
        let config = crate::adapters::registry::ecr::aws_sdk_config(region, endpoint_url).await;
        Self {
            client: aws_sdk_ecs::Client::new(&config),
            poll: Duration::from_secs(2),
        }
    }

    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    async fn service(&self, cluster: &str, service: &str) -> Result<Service, EcsError> {
        let described = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await
            .map_err(api("DescribeServices"))?;
        described
            .services
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.status.as_deref() != Some("INACTIVE"))
            .ok_or_else(|| EcsError::NoService {
                cluster: cluster.to_owned(),
                service: service.to_owned(),
            })
    }
}

/// Where a rollout stands, from one DescribeServices answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Stable,
    InProgress(String),
    Failed(String),
}

/// Stable means: the service names the revision, a single deployment remains, it is not
/// rolling out or failed, and as many tasks run as are wanted with none pending. (An ECS
/// circuit breaker that rolled back leaves the service on another revision: failed.)
pub fn progress(service: &Service, task_definition: &str) -> Progress {
    let deployments: &[Deployment] = service.deployments.as_deref().unwrap_or_default();
    let primary = deployments.iter().find(|d| d.status.as_deref() == Some("PRIMARY"));
    let rollout = primary
        .and_then(|d| d.rollout_state.as_ref())
        .map(|s| s.as_str().to_owned());
    let (desired, running, pending) = (service.desired_count, service.running_count, service.pending_count);
    let state = format!(
        "{running}/{desired} running, {pending} pending, {} deployment(s), rollout {}",
        deployments.len(),
        rollout.as_deref().unwrap_or("unknown")
    );
    if rollout.as_deref() == Some("FAILED") {
        let reason = primary
            .and_then(|d| d.rollout_state_reason.clone())
            .unwrap_or_else(|| "rollout failed".into());
        return Progress::Failed(reason);
    }
    if service.task_definition.as_deref() != Some(task_definition) {
        return Progress::Failed(format!(
            "the service runs {} instead (rolled back by ECS?)",
            service.task_definition.as_deref().unwrap_or("no task definition")
        ));
    }
    let settled = deployments.len() == 1 && rollout.as_deref().is_none_or(|r| r == "COMPLETED");
    if settled && running == desired && pending == 0 {
        Progress::Stable
    } else {
        Progress::InProgress(state)
    }
}

#[async_trait::async_trait]
impl Deployer for Ecs {
    async fn current(&self, cluster: &str, service: &str) -> Result<String, EcsError> {
        let service = self.service(cluster, service).await?;
        service.task_definition.ok_or_else(|| EcsError::Api {
            operation: "DescribeServices",
            message: "the service names no task definition".into(),
        })
    }

    async fn revision_with_image(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
    ) -> Result<String, EcsError> {
        let described = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(api("DescribeTaskDefinition"))?;
        let Some(current) = described.task_definition else {
            return Err(EcsError::Api {
                operation: "DescribeTaskDefinition",
                message: format!("{task_definition} not found"),
            });
        };
        let mut containers = current.container_definitions.clone().unwrap_or_default();
        let Some(target) = containers.iter_mut().find(|c| c.name.as_deref() == Some(container)) else {
            return Err(EcsError::NoContainer(task_definition.to_owned(), container.to_owned()));
        };
        target.image = Some(image.to_owned());
        let registered = self
            .client
            .register_task_definition()
            .family(current.family.clone().unwrap_or_default())
            .set_container_definitions(Some(containers))
            .set_task_role_arn(current.task_role_arn.clone())
            .set_execution_role_arn(current.execution_role_arn.clone())
            .set_network_mode(current.network_mode.clone())
            .set_volumes(current.volumes.clone())
            .set_placement_constraints(current.placement_constraints.clone())
            .set_requires_compatibilities(current.requires_compatibilities.clone())
            .set_cpu(current.cpu.clone())
            .set_memory(current.memory.clone())
            .set_pid_mode(current.pid_mode.clone())
            .set_ipc_mode(current.ipc_mode.clone())
            .set_proxy_configuration(current.proxy_configuration.clone())
            .set_ephemeral_storage(current.ephemeral_storage.clone())
            .set_runtime_platform(current.runtime_platform.clone())
            .send()
            .await
            .map_err(api("RegisterTaskDefinition"))?;
        registered
            .task_definition
            .and_then(|t| t.task_definition_arn)
            .ok_or_else(|| EcsError::Api {
                operation: "RegisterTaskDefinition",
                message: "no ARN in the answer".into(),
            })
    }

    async fn image_of(&self, task_definition: &str, container: &str) -> Result<Option<String>, EcsError> {
        let described = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(api("DescribeTaskDefinition"))?;
        Ok(described
            .task_definition
            .and_then(|t| t.container_definitions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name.as_deref() == Some(container))
            .and_then(|c| c.image))
    }

    async fn point(&self, cluster: &str, service: &str, task_definition: &str) -> Result<(), EcsError> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(task_definition)
            .send()
            .await
            .map_err(api("UpdateService"))?;
        Ok(())
    }

    async fn wait_stable(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        timeout: Duration,
        log: &JobLog,
    ) -> Result<(), EcsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let described = self.service(cluster, service).await?;
            match progress(&described, task_definition) {
                Progress::Stable => {
                    log.system(format!("service {service} is stable on {task_definition}"));
                    return Ok(());
                }
                Progress::Failed(reason) => return Err(EcsError::Failed(reason)),
                Progress::InProgress(state) => {
                    if state != last {
                        log.system(format!("service {service}: {state}"));
                        last = state;
                    }
                }
            }
            if tokio::time::Instant::now() + self.poll > deadline {
                return Err(EcsError::Timeout {
                    task_definition: task_definition.to_owned(),
                    after: timeout,
                    state: last,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
