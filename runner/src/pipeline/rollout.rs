//! Rollout to the local Docker target: the new version is started beside the old one and
//! health-checked; only when healthy does it take over the environment's published port.
//! If it never becomes healthy, the old container keeps serving and the job fails.

use std::collections::HashMap;

use super::engine::{ContainerEngine, ContainerSpec, DockerEngine, Role};
use super::{JobFailure, Leftover, RECORD, ROLLOUT, STEP_MARGIN, Steps, copy_container_logs, probe};
use crate::config::Project;
use crate::store::deployments::{self, NewDeployment};
use crate::store::now_ms;

/// The name of an environment's live container.
pub fn live_name(project: &str, environment: &str) -> String {
    format!("runner-{project}-{environment}")
}

/// Puts `run_ref` (an image pinned by digest) live and records the deployment.
pub(super) async fn go_live(
    steps: &Steps<'_>,
    project: &Project,
    engine: &DockerEngine,
    image_ref: &str,
    run_ref: &str,
    digest: Option<&str>,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let (Some(rollout), Some(smoke)) = (&project.rollout, &project.smoke) else {
        unreachable!("settings were checked before the job started");
    };
    let url = rollout.url();
    let deployment = deployments::start(
        &ctx.pool,
        &NewDeployment {
            job_id: job.id.get(),
            project: project.name.as_str(),
            environment: project.environment.as_str(),
            sha: &job.sha,
            image_ref,
            image_digest: digest,
            trigger: job.trigger.as_str(),
            url: &url,
        },
        now_ms(),
    )
    .await
    .map_err(|e| JobFailure::Step {
        step: ROLLOUT,
        message: format!("cannot record the deployment: {e}"),
    })?;
    if let Some(replaced) = deployment.replaced_id {
        log.system(format!("deployment {} replaces deployment {replaced}", deployment.id));
    }

    let live = live_name(project.name.as_str(), project.environment.as_str());
    let labels = HashMap::from([
        ("io.runner.project".to_owned(), project.name.to_string()),
        ("io.runner.environment".to_owned(), project.environment.to_string()),
        ("io.runner.deployment".to_owned(), deployment.id.to_string()),
        ("org.opencontainers.image.revision".to_owned(), job.sha.clone()),
    ]);
    let candidate = Leftover::default();
    let result = steps
        .run(ROLLOUT, rollout.timeout + STEP_MARGIN, async {
            // 1. The candidate runs beside the live container, on a port of its own.
            let spec = ContainerSpec {
                name: format!("{live}-candidate-{}", job.id),
                image: run_ref.to_owned(),
                container_port: smoke.container_port,
                publish: None,
                role: Role::Candidate,
                job_id: job.id.get(),
                labels: labels.clone(),
                limits: project.containers.clone(),
            };
            engine.remove(&spec.name).await.map_err(|e| e.to_string())?;
            let started = engine.start(&spec).await.map_err(|e| e.to_string())?;
            candidate.set(Some(started.id.clone()));
            let probe_url = format!("http://{}:{}{}", started.host_ip, started.host_port, smoke.path);
            log.system(format!("candidate started; waiting for {probe_url}"));
            if let Err(last) = probe::until_healthy(&ctx.http, &probe_url, smoke, rollout.timeout / 2).await {
                copy_container_logs(engine, &started.id, log).await;
                return Err(format!(
                    "the new version never became healthy ({} answered {last}); the live version keeps serving",
                    smoke.path
                ));
            }
            candidate.remove(engine, log).await;

            // 2. Swap: the old container steps aside (kept until the new one is healthy).
            let previous_name = format!("{live}-previous-{}", job.id);
            let previous = engine.find(&live).await.map_err(|e| e.to_string())?;
            if let Some(old) = &previous {
                engine.rename(old, &previous_name).await.map_err(|e| e.to_string())?;
                engine.stop(old).await.map_err(|e| e.to_string())?;
            }
            let spec = ContainerSpec {
                name: live.clone(),
                publish: Some((rollout.bind, rollout.host_port)),
                role: Role::Live,
                ..spec
            };
            let swapped = async {
                let started = engine.start(&spec).await.map_err(|e| e.to_string())?;
                let live_url = format!("{url}{}", smoke.path);
                probe::until_healthy(&ctx.http, &live_url, smoke, rollout.timeout / 2)
                    .await
                    .map_err(|last| {
                        format!(
                            "the new container on {url} never became healthy ({} answered {last})",
                            smoke.path
                        )
                    })?;
                Ok::<_, String>(started)
            }
            .await;
            match (swapped, previous) {
                (Ok(_), Some(old)) => {
                    engine.remove(&old).await.map_err(|e| e.to_string())?;
                    Ok(())
                }
                (Ok(_), None) => Ok(()),
                (Err(error), previous) => {
                    let _ = engine.remove(&live).await;
                    if let Some(old) = previous {
                        engine
                            .rename(&old, &live)
                            .await
                            .map_err(|e| format!("{error}; restoring the previous container failed: {e}"))?;
                        engine
                            .restart(&old)
                            .await
                            .map_err(|e| format!("{error}; restarting the previous container failed: {e}"))?;
                        return Err(format!("{error}; the previous container was restored"));
                    }
                    Err(error)
                }
            }
        })
        .await;
    candidate.remove(engine, log).await;

    match result {
        Ok(()) => {
            let recorded = steps
                .run(RECORD, std::time::Duration::from_secs(30), async {
                    deployments::finish(&ctx.pool, deployment.id, "live", None, now_ms())
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
            recorded?;
            log.system(format!("deployment {} is live at {url}", deployment.id));
            Ok(())
        }
        Err(failure) => {
            let _ = deployments::finish(
                &ctx.pool,
                deployment.id,
                "failed",
                Some(&log.mask().masked(failure.to_string())),
                now_ms(),
            )
            .await;
            Err(failure)
        }
    }
}

/// After a crash in the middle of a swap: a `-previous-` container whose environment has
/// no live container any more is put back; otherwise it is removed.
pub async fn recover_interrupted_swaps(engine: &DockerEngine) -> Result<(), super::engine::EngineError> {
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
