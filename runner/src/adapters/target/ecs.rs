//! Rollout to an ECS service: the service is pointed at the new revision (registered
//! here, or applied by terraform), then watched until stable, bounded. On failure or
//! timeout the previous revision is put back when the project says so.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::ecs_api::{Deployer, EcsError};
use super::{DeployTarget, Release, RolloutError};
use crate::config::EcsSettings;
use crate::joblog::JobLog;

pub struct EcsTarget {
    pub ecs: Arc<dyn Deployer>,
    pub settings: EcsSettings,
}

impl EcsTarget {
    /// After a failed rollout: the previous revision goes back if the project wants it.
    async fn give_back(&self, previous: &str, target: &str, error: EcsError, log: &JobLog) -> RolloutError {
        let settings = &self.settings;
        if !settings.rollback_on_failure || previous == target {
            return RolloutError::failed(error.to_string());
        }
        log.system(format!("{error}; putting {previous} back"));
        match self.ecs.point(&settings.cluster, &settings.service, previous).await {
            Ok(()) => RolloutError {
                message: format!("{error}; the service was rolled back to {previous}"),
                rolled_back: true,
            },
            Err(rollback_error) => RolloutError::failed(format!(
                "{error}; rolling back to {previous} failed too: {rollback_error}"
            )),
        }
    }
}

#[async_trait::async_trait]
impl DeployTarget for EcsTarget {
    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn url(&self, outputs: Option<&Value>) -> String {
        self.settings
            .url
            .clone()
            .or_else(|| outputs.and_then(|o| o["app_url"].as_str()).map(str::to_owned))
            .unwrap_or_default()
    }

    async fn current(&self, log: &JobLog) -> Option<String> {
        match self.ecs.current(&self.settings.cluster, &self.settings.service).await {
            Ok(current) => Some(current),
            Err(error) => {
                log.system(format!("the ECS service's current revision is unknown ({error})"));
                None
            }
        }
    }

    async fn go_live(&self, release: &Release<'_>, log: &JobLog) -> Result<(), RolloutError> {
        let settings = &self.settings;
        let (cluster, service, image) = (settings.cluster.as_str(), settings.service.as_str(), release.image);
        let api = |error: EcsError| RolloutError::failed(error.to_string());
        let current = self.ecs.current(cluster, service).await.map_err(api)?;
        let previous = release.previous.clone().unwrap_or_else(|| current.clone());
        // Terraform may already have put the image on the service (a module that manages
        // the task definition); otherwise a new revision carries it.
        let running = self.ecs.image_of(&current, &settings.container).await.map_err(api)?;
        let target = if running.as_deref() == Some(image) && current != previous {
            log.system(format!("terraform put {image} on {current}"));
            current
        } else {
            let target = self
                .ecs
                .revision_with_image(&current, &settings.container, image)
                .await
                .map_err(api)?;
            log.system(format!("registered {target} with {} = {image}", settings.container));
            self.ecs.point(cluster, service, &target).await.map_err(api)?;
            target
        };
        log.system(format!("service {service} in {cluster}: {previous} -> {target}"));
        match self
            .ecs
            .wait_stable(cluster, service, &target, settings.timeout, log)
            .await
        {
            Ok(()) => {
                log.system(format!("ECS service {service} runs {target}"));
                Ok(())
            }
            Err(error) => Err(self.give_back(&previous, &target, error, log).await),
        }
    }
}
