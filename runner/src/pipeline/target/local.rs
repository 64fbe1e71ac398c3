//! Rollout to a container on the runner's Docker engine: the new version is started
//! beside the old one and health-checked; only when healthy does it take over the
//! environment's published port. If it never becomes healthy, the old container keeps
//! serving and the job fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{DeployTarget, Release, RolloutError};
use crate::config::{ContainerLimits, RolloutSettings, SmokeSettings};
use crate::pipeline::engine::{ContainerEngine, ContainerSpec, DockerEngine, EngineError, Role, copy_logs};
use crate::pipeline::joblog::JobLog;
use crate::pipeline::probe;

/// The name of an environment's live container.
pub fn live_name(project: &str, environment: &str) -> String {
    format!("runner-{project}-{environment}")
}

pub struct LocalTarget {
    pub engine: Arc<dyn ContainerEngine>,
    pub http: reqwest::Client,
    pub project: String,
    pub environment: String,
    pub smoke: SmokeSettings,
    pub rollout: RolloutSettings,
    pub limits: ContainerLimits,
}

impl LocalTarget {
    /// The local target of `project`, which probes the app as its smoke settings say.
    pub fn for_project(
        project: &crate::config::Project,
        rollout: &RolloutSettings,
        engine: Arc<dyn ContainerEngine>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        Ok(Self {
            engine,
            http,
            project: project.name.to_string(),
            environment: project.environment.to_string(),
            smoke: project
                .smoke
                .clone()
                .ok_or("the local target probes the app: configure [projects.smoke]")?,
            rollout: rollout.clone(),
            limits: project.containers.clone(),
        })
    }

    fn live(&self) -> String {
        live_name(&self.project, &self.environment)
    }

    fn candidate(&self, release: &Release<'_>) -> String {
        format!("{}-candidate-{}", self.live(), release.job_id)
    }

    /// Stops the live container, starts `spec` on the environment's port and waits for
    /// it; if it does not answer, the previous container is put back.
    async fn swap(&self, spec: ContainerSpec, release: &Release<'_>) -> Result<(), String> {
        let (engine, live) = (&self.engine, self.live());
        let url = self.rollout.url();
        // The old container steps aside (kept until the new one is healthy).
        let previous_name = format!("{live}-previous-{}", release.job_id);
        let previous = engine.find(&live).await.map_err(|e| e.to_string())?;
        if let Some(old) = &previous {
            engine.rename(old, &previous_name).await.map_err(|e| e.to_string())?;
            engine.stop(old).await.map_err(|e| e.to_string())?;
        }
        let swapped = async {
            engine.start(&spec).await.map_err(|e| e.to_string())?;
            let live_url = format!("{url}{}", self.smoke.path);
            probe::until_healthy(&self.http, &live_url, &self.smoke, self.rollout.timeout / 2)
                .await
                .map_err(|last| {
                    format!(
                        "the new container on {url} never became healthy ({} answered {last})",
                        self.smoke.path
                    )
                })
        }
        .await;
        match (swapped, previous) {
            (Ok(()), Some(old)) => engine.remove(&old).await.map_err(|e| e.to_string()),
            (Ok(()), None) => Ok(()),
            (Err(error), previous) => {
                if let Err(remove_error) = engine.remove(&live).await {
                    // The rename below then fails and says so; nothing more to do here.
                    tracing::warn!(%remove_error, "cannot remove the unhealthy new container");
                }
                let Some(old) = previous else {
                    return Err(error);
                };
                engine
                    .rename(&old, &live)
                    .await
                    .map_err(|e| format!("{error}; restoring the previous container failed: {e}"))?;
                engine
                    .restart(&old)
                    .await
                    .map_err(|e| format!("{error}; restarting the previous container failed: {e}"))?;
                Err(format!("{error}; the previous container was restored"))
            }
        }
    }
}

#[async_trait::async_trait]
impl DeployTarget for LocalTarget {
    fn timeout(&self) -> Duration {
        self.rollout.timeout
    }

    fn url(&self, _outputs: Option<&Value>) -> String {
        self.rollout.url()
    }

    async fn go_live(&self, release: &Release<'_>, log: &JobLog) -> Result<(), RolloutError> {
        let engine = &self.engine;
        let labels = HashMap::from([
            ("io.runner.project".to_owned(), self.project.clone()),
            ("io.runner.environment".to_owned(), self.environment.clone()),
            ("io.runner.deployment".to_owned(), release.deployment_id.to_string()),
            ("org.opencontainers.image.revision".to_owned(), release.sha.to_owned()),
        ]);
        // 1. The candidate runs beside the live container, on a port of its own.
        let spec = ContainerSpec {
            name: self.candidate(release),
            image: release.image.to_owned(),
            container_port: self.smoke.container_port,
            publish: None,
            role: Role::Candidate,
            job_id: release.job_id,
            labels,
            limits: self.limits.clone(),
        };
        engine.remove(&spec.name).await.map_err(failed)?;
        let started = engine.start(&spec).await.map_err(failed)?;
        let probe_url = format!("http://{}:{}{}", started.host_ip, started.host_port, self.smoke.path);
        log.system(format!("candidate started; waiting for {probe_url}"));
        if let Err(last) = probe::until_healthy(&self.http, &probe_url, &self.smoke, self.rollout.timeout / 2).await {
            copy_logs(engine.as_ref(), &started.id, log).await;
            return Err(RolloutError::failed(format!(
                "the new version never became healthy ({} answered {last}); the live version keeps serving",
                self.smoke.path
            )));
        }
        self.clean_up(release, log).await;

        // 2. Swap: the candidate's image takes the environment's port.
        let spec = ContainerSpec {
            name: self.live(),
            publish: Some((self.rollout.bind, self.rollout.host_port)),
            role: Role::Live,
            ..spec
        };
        self.swap(spec, release).await.map_err(RolloutError::failed)
    }

    async fn clean_up(&self, release: &Release<'_>, log: &JobLog) {
        let name = self.candidate(release);
        if let Err(error) = self.engine.remove(&name).await {
            log.system(format!("could not remove container {name}: {error}"));
        }
    }
}

fn failed(error: EngineError) -> RolloutError {
    RolloutError::failed(error.to_string())
}

/// After a crash in the middle of a swap: a `-previous-` container whose environment has
/// no live container any more is put back; otherwise it is removed.
pub async fn recover_interrupted_swaps(engine: &DockerEngine) -> Result<(), EngineError> {
    for (id, names, _) in engine.managed(Some(Role::Live)).await? {
        let Some(name) = names.first().map(|n| n.trim_start_matches('/').to_owned()) else {
            continue;
        };
        let Some((live, _job)) = name.split_once("-previous-") else {
            continue;
        };
        match engine.find(live).await? {
            Some(_) => {
                tracing::info!(container = %name, "removing the previous container of a finished swap");
                engine.remove(&id).await?;
            }
            None => {
                tracing::warn!(container = %name, live, "restoring the live container of an interrupted swap");
                engine.rename(&id, live).await?;
                engine.restart(&id).await?;
            }
        }
    }
    Ok(())
}
