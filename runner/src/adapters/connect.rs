//! Where a job's boundaries come from. [`Connections`] makes the real ones and shares
//! what is worth sharing between jobs (AWS clients and their token caches); the unit
//! tests make fakes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::checkout::{Checkout, GitCheckout};
use super::engine::ContainerEngine;
use super::registry::Registry;
use super::registry::ecr::{Ecr, EcrRegistry};
use super::registry::v2::V2Registry;
use super::target::ecs::EcsTarget;
use super::target::ecs_api::Ecs;
use super::target::local::LocalTarget;
use super::target::{DeployTarget, TargetError};
use super::terraform::{Module, Terraform};
use crate::config::{Environment, Project, RegistryKind, RegistrySettings, Target};
use crate::proxy::Proxy;

#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// Fetches the project's commits; `home` is the job's private directory.
    fn checkout(&self, project: &Project, home: &Path) -> Box<dyn Checkout>;
    async fn registry(&self, settings: &RegistrySettings) -> Arc<dyn Registry>;
    /// Runs terraform on `module` (its directory, variables and environment).
    fn terraform(&self, module: Module) -> Box<dyn Terraform>;
    async fn target(
        &self,
        project: &Project,
        environment: &Environment,
        target: &Target,
        engine: Arc<dyn ContainerEngine>,
    ) -> Result<Arc<dyn DeployTarget>, TargetError>;
}

/// An AWS client's region and endpoint.
type AwsKey = (Option<String>, Option<String>);

/// The real boundaries.
#[derive(Clone, Default)]
pub struct Connections {
    http: reqwest::Client,
    /// The proxy in front of local environments, and how often it checks their slots.
    proxy: Option<(Arc<dyn Proxy>, std::time::Duration)>,
    /// ECR clients by region and endpoint, created on first use so their token caches are
    /// shared by jobs.
    ecr: Arc<tokio::sync::Mutex<HashMap<AwsKey, Arc<Ecr>>>>,
    /// ECS clients by region and endpoint, created on first use.
    ecs: Arc<tokio::sync::Mutex<HashMap<AwsKey, Arc<Ecs>>>>,
}

impl Connections {
    /// `http` probes the local target's containers; `proxy` routes to them.
    pub fn new(http: reqwest::Client, proxy: Arc<dyn Proxy>, health_interval: std::time::Duration) -> Self {
        Self {
            http,
            proxy: Some((proxy, health_interval)),
            ..Self::default()
        }
    }
}

#[async_trait::async_trait]
impl Connector for Connections {
    fn checkout(&self, project: &Project, home: &Path) -> Box<dyn Checkout> {
        Box::new(GitCheckout::new(super::checkout::clone_url(project), home.to_owned()))
    }

    fn terraform(&self, module: Module) -> Box<dyn Terraform> {
        Box::new(super::terraform::TerraformCli::from(module))
    }

    async fn registry(&self, settings: &RegistrySettings) -> Arc<dyn Registry> {
        match &settings.kind {
            RegistryKind::V2 => Arc::new(V2Registry::new(
                settings.url.clone().unwrap_or_default(),
                settings.username.clone(),
                settings.password.clone(),
            )),
            RegistryKind::Ecr { region, endpoint_url } => Arc::new(EcrRegistry {
                client: cached(&self.ecr, (region.clone(), endpoint_url.clone()), |(r, e)| {
                    Ecr::new(r, e)
                })
                .await,
                url: settings.url.clone(),
            }),
        }
    }

    async fn target(
        &self,
        project: &Project,
        environment: &Environment,
        target: &Target,
        engine: Arc<dyn ContainerEngine>,
    ) -> Result<Arc<dyn DeployTarget>, TargetError> {
        Ok(match target {
            Target::Local(rollout) => {
                let (proxy, interval) = self.proxy.clone().ok_or(TargetError::Unconfigured(
                    "the local target needs the proxy ([proxy] admin_url)",
                ))?;
                Arc::new(LocalTarget::for_environment(
                    project,
                    environment,
                    rollout,
                    engine,
                    proxy,
                    self.http.clone(),
                    interval,
                )?)
            }
            Target::Ecs(settings) => {
                let key = (settings.region.clone(), settings.endpoint_url.clone());
                Arc::new(EcsTarget {
                    ecs: cached(&self.ecs, key, |(r, e)| Ecs::new(r, e)).await,
                    settings: settings.clone(),
                })
            }
        })
    }
}

/// The client for `key`, made on first use and shared by every job after.
async fn cached<T, F: Future<Output = T>>(
    clients: &tokio::sync::Mutex<HashMap<AwsKey, Arc<T>>>,
    key: AwsKey,
    make: impl FnOnce(AwsKey) -> F,
) -> Arc<T> {
    let mut clients = clients.lock().await;
    if let Some(client) = clients.get(&key) {
        return Arc::clone(client);
    }
    let client = Arc::new(make(key.clone()).await);
    clients.insert(key, Arc::clone(&client));
    client
}
