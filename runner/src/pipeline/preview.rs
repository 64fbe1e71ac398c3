//! A verified pull request's image, served as the pull request's preview (`pr-<number>`):
//! pushed under a tag of its own, put live in the preview's seat with the same switch as an
//! environment's, and removed (containers, route, network, pushed images) when the pull
//! request closes, expires or is evicted.

use std::sync::Arc;

use super::plan::{PreviewDelivery, Step};
use super::steps::Steps;
use super::{JobFailure, STEP_MARGIN, StepError};
use crate::adapters::connect::Connector;
use crate::adapters::engine::ContainerEngine;
use crate::adapters::target::{DeployTarget, Release};
use crate::config::{BuildSettings, Environment, PreviewSettings, Project, Target};
use crate::job::PreviewState;
use crate::joblog::JobLog;
use crate::store::Store;
use crate::store::previews::{self, Opened, Preview};

/// The tag a preview's images carry: `pr-<number>-<sha>`, apart from the deploys' commit
/// tags, so the preview's removal finds exactly its own.
pub fn image_tag_prefix(number: i64) -> String {
    format!("pr-{number}-")
}

/// The environment a preview of pull request `number` in `seat` is.
pub fn environment(settings: &PreviewSettings, seat: u32, number: i64) -> Environment {
    let name = PreviewSettings::environment_name(number);
    Environment {
        name: crate::domain::Name::parse(&name).unwrap_or_else(|_| unreachable!("pr-<number> is a name")),
        branches: Vec::new(),
        tags: false,
        target: Some(Target::Local(settings.rollout(seat, number))),
    }
}

/// Pushes the verified image `tag` and puts it live as the pull request's preview.
pub(super) async fn serve(
    steps: &Steps<'_>,
    project: &Project,
    build: &BuildSettings,
    plan: PreviewDelivery<'_>,
    engine: &Arc<dyn ContainerEngine>,
    tag: &str,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let number = job
        .pull_request
        .ok_or_else(|| JobFailure::NotConfigured("a pull request's job without its number".into()))?;
    let pushed_tag = format!("{}{}", image_tag_prefix(number), job.sha);
    let (repository, digest) = steps
        .run(Step::Push, ctx.push_timeout, async {
            let registry = ctx.connector.registry(plan.registry).await;
            let destination = registry.destination(&build.image, log).await?;
            engine.tag(tag, &destination.repository, &pushed_tag).await?;
            let digest = engine
                .push(&destination.repository, &pushed_tag, destination.auth, log)
                .await?;
            log.system(format!("pushed {}:{pushed_tag} ({digest})", destination.repository));
            Ok((destination.repository, digest))
        })
        .await?;
    let image = format!("{repository}@{digest}");
    let timeout = plan.settings.timeout + plan.settings.drain + STEP_MARGIN * 2;
    steps
        .run(Step::Preview, timeout, async {
            go_live(ctx, project, plan, engine, job, number, &image, log).await
        })
        .await
}

#[allow(clippy::too_many_arguments)]
async fn go_live(
    ctx: &super::PipelineContext,
    project: &Project,
    plan: PreviewDelivery<'_>,
    engine: &Arc<dyn ContainerEngine>,
    job: &crate::store::jobs::Job,
    number: i64,
    image: &str,
    log: &JobLog,
) -> Result<(), StepError> {
    let settings = plan.settings;
    let url_of = |seat: u32| settings.rollout(seat, number).url();
    // Seats held by previews on their way out are freed first; at most every seat once.
    let mut preview = None;
    for _ in 0..=settings.max_previews {
        match previews::open(
            &ctx.pool,
            project.name.as_str(),
            number,
            settings.max_previews,
            url_of,
            ctx.clock.now_ms(),
        )
        .await?
        {
            Opened::Ready(ready) => {
                preview = Some(ready);
                break;
            }
            Opened::RemoveFirst(leaving) => {
                log.system(format!(
                    "removing the preview of #{} first: {}",
                    leaving.number,
                    leaving.removal.map_or("it is on its way out", |r| r.describe())
                ));
                remove(
                    &ctx.pool,
                    ctx.connector.as_ref(),
                    project,
                    engine,
                    &leaving,
                    log,
                    ctx.clock.now_ms(),
                )
                .await
                .map_err(StepError::Failed)?;
            }
        }
    }
    let preview = preview.ok_or("no seat for the preview came free")?;
    let environment = environment(settings, preview.seat(), number);
    let Some(target_settings) = &environment.target else {
        unreachable!("a preview's environment has its target")
    };
    let target = ctx
        .connector
        .target(project, &environment, target_settings, Arc::clone(engine))
        .await?;
    let release = Release {
        job_id: job.id.get(),
        // A preview keeps no deployment history: its containers are named by the job.
        deployment_id: job.id.get(),
        sha: &job.sha,
        image,
        previous: None,
        replaces: preview.job_id,
    };
    let went = target.go_live(&release, log).await;
    target.clean_up(&release, log).await;
    if let Err(error) = went {
        if preview.state == PreviewState::Deploying {
            // It never served: it goes, with its seat.
            previews::never_served(&ctx.pool, preview.id, ctx.clock.now_ms()).await?;
        }
        return Err(StepError::Failed(error.message));
    }
    let url = target.url(None);
    if !previews::went_live(&ctx.pool, preview.id, &job.sha, image, job.id.get(), ctx.clock.now_ms()).await? {
        log.system("the pull request closed meanwhile: the preview is removed");
        return Ok(());
    }
    log.system(format!("the preview of #{number} serves {} at {url}", job.sha));
    target.retire(&release, log).await;
    Ok(())
}

/// Removes `preview` (its containers, route and network, and its pushed images) and
/// records it removed. Safe to repeat: what is already gone is skipped.
pub async fn remove(
    pool: &Store,
    connector: &dyn Connector,
    project: &Project,
    engine: &Arc<dyn ContainerEngine>,
    preview: &Preview,
    log: &JobLog,
    now: i64,
) -> Result<(), String> {
    let Some(settings) = &project.previews else {
        return Err(format!("project {} has no previews configured any more", project.name));
    };
    let environment = environment(settings, preview.seat(), preview.number);
    let Some(target_settings) = &environment.target else {
        unreachable!("a preview's environment has its target")
    };
    let target: Arc<dyn DeployTarget> = connector
        .target(project, &environment, target_settings, Arc::clone(engine))
        .await?;
    target.tear_down(log).await?;
    if let (Some(build), Some(registry)) = (&project.build, &project.registry) {
        let kept = crate::store::deployments::kept_images(pool, project.name.as_str(), project.keep_deployments)
            .await
            .map_err(|e| e.to_string())?;
        let registry = connector.registry(registry).await;
        let deleted = registry
            .delete_tags(&build.image, &image_tag_prefix(preview.number), &kept, log)
            .await?;
        if deleted > 0 {
            log.system(format!("deleted {deleted} pushed image(s) of the preview"));
        }
        // The engine's copies of the images it pushed, by each of their names.
        if let Some((repository, _)) = preview.image.as_deref().and_then(|image| image.split_once('@')) {
            let ours = format!("{repository}:{}", image_tag_prefix(preview.number));
            let images = engine
                .images(&[repository.to_owned()])
                .await
                .map_err(|e| e.to_string())?;
            for image in images.iter().filter(|i| i.tags.iter().any(|t| t.starts_with(&ours))) {
                for name in image.tags.iter().chain(&image.digests) {
                    if let Err(error) = engine.remove_image(name).await {
                        log.system(format!("could not remove the image {name} from the engine: {error}"));
                    }
                }
            }
        }
    }
    previews::removed(pool, preview.id, now)
        .await
        .map_err(|e| e.to_string())
}
