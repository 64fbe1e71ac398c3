//! Rollout to an ECS service: the service is pointed at the new revision (registered
//! here, or applied by terraform), then watched until stable, bounded. On failure or
//! timeout the previous revision is put back when the project says so.

use serde_json::Value;

use super::ecs::{Deployer, EcsError};
use super::{JobFailure, RECORD, ROLLOUT, STEP_MARGIN, Steps};
use crate::config::{EcsSettings, Project};
use crate::store::deployments::{self, NewDeployment};
use crate::store::now_ms;

#[allow(clippy::too_many_arguments)]
pub async fn go_live(
    steps: &Steps<'_>,
    project: &Project,
    settings: &EcsSettings,
    previous: Option<String>,
    image: &str,
    image_ref: &str,
    digest: Option<&str>,
    outputs: Option<&Value>,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let url = settings
        .url
        .clone()
        .or_else(|| outputs.and_then(|o| o["app_url"].as_str()).map(str::to_owned))
        .unwrap_or_default();
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
    if let Some(outputs) = outputs {
        let _ = deployments::set_outputs(&ctx.pool, deployment.id, outputs).await;
    }
    let ecs = ctx.ecs(settings.region.clone(), settings.endpoint_url.clone()).await;
    let (cluster, service) = (settings.cluster.as_str(), settings.service.as_str());
    let rolled_back = std::sync::atomic::AtomicBool::new(false);

    let result = steps
        .run(ROLLOUT, settings.timeout + STEP_MARGIN, async {
            let previous = match previous {
                Some(previous) => previous,
                None => ecs.current(cluster, service).await.map_err(|e| e.to_string())?,
            };
            // Terraform may already have put the image on the service (a module that
            // manages the task definition); otherwise a new revision carries it.
            let current = ecs.current(cluster, service).await.map_err(|e| e.to_string())?;
            let running = ecs
                .image_of(&current, &settings.container)
                .await
                .map_err(|e| e.to_string())?;
            let target = if running.as_deref() == Some(image) && current != previous {
                log.system(format!("terraform put {image} on {current}"));
                current
            } else {
                let target = ecs
                    .revision_with_image(&current, &settings.container, image)
                    .await
                    .map_err(|e| e.to_string())?;
                log.system(format!("registered {target} with {} = {image}", settings.container));
                ecs.point(cluster, service, &target).await.map_err(|e| e.to_string())?;
                target
            };
            log.system(format!("service {service} in {cluster}: {previous} -> {target}"));
            match ecs.wait_stable(cluster, service, &target, settings.timeout, log).await {
                Ok(()) => Ok(()),
                Err(error) => Err(give_back(&*ecs, settings, &previous, &target, error, log, &rolled_back).await),
            }
        })
        .await;

    match result {
        Ok(()) => {
            steps
                .run(RECORD, std::time::Duration::from_secs(30), async {
                    deployments::finish(&ctx.pool, deployment.id, "live", None, now_ms())
                        .await
                        .map_err(|e| e.to_string())
                })
                .await?;
            log.system(format!("deployment {} is live on ECS service {service}", deployment.id));
            Ok(())
        }
        Err(failure) => {
            let status = if rolled_back.load(std::sync::atomic::Ordering::Relaxed) {
                "rolled_back"
            } else {
                "failed"
            };
            let _ = deployments::finish(
                &ctx.pool,
                deployment.id,
                status,
                Some(&steps.log.mask().masked(failure.to_string())),
                now_ms(),
            )
            .await;
            Err(failure)
        }
    }
}

/// After a failed rollout: the previous revision goes back if the project wants it.
async fn give_back(
    ecs: &impl Deployer,
    settings: &EcsSettings,
    previous: &str,
    target: &str,
    error: EcsError,
    log: &super::joblog::JobLog,
    rolled_back: &std::sync::atomic::AtomicBool,
) -> String {
    if !settings.rollback_on_failure || previous == target {
        return error.to_string();
    }
    log.system(format!("{error}; putting {previous} back"));
    match ecs.point(&settings.cluster, &settings.service, previous).await {
        Ok(()) => {
            rolled_back.store(true, std::sync::atomic::Ordering::Relaxed);
            format!("{error}; the service was rolled back to {previous}")
        }
        Err(rollback_error) => format!("{error}; rolling back to {previous} failed too: {rollback_error}"),
    }
}
