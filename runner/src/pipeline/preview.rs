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
use crate::adapters::engine::EngineError;
use crate::adapters::target::{DeployTarget, Release, TargetError};
use crate::config::{BuildSettings, PreviewSettings, Project};
use crate::job::PreviewState;
use crate::joblog::JobLog;
use crate::store::Store;
use crate::store::previews::{self, Opened, Preview};

/// The tag a preview's images carry: `pr-<number>-<sha>`, apart from the deploys' commit
/// tags, so the preview's removal finds exactly its own.
pub fn image_tag_prefix(number: i64) -> String {
    format!("pr-{number}-")
}

/// Takes the pull request's seat, pushes the verified image `tag` and puts it live as the
/// pull request's preview.
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
    // One rollout at a time into a pull request's preview: a later push waits for an
    // earlier one (the lock map is keyed by what it serialises).
    let lock = ctx
        .terraform_lock(&format!("preview\0{}\0{number}", project.name))
        .await;
    let _one_at_a_time = tokio::select! {
        held = lock.lock() => held,
        () = steps.cancel.cancelled() => return Err(JobFailure::Cancelled),
    };
    let pushed_tag = format!("{}{}", image_tag_prefix(number), job.sha);
    // The seat first: a closed pull request, or one a newer push already serves, gets
    // nothing pushed.
    let claimed = steps
        .run(Step::Push, ctx.push_timeout, async {
            let Some(preview) = claim(ctx, project, plan, engine, job, number, log).await? else {
                return Ok(None);
            };
            let registry = ctx.connector.registry(plan.registry).await;
            let destination = registry.destination(&build.image, log).await?;
            engine.tag(tag, &destination.repository, &pushed_tag).await?;
            let digest = engine
                .push(&destination.repository, &pushed_tag, destination.auth, log)
                .await?;
            log.system(format!("pushed {}:{pushed_tag} ({digest})", destination.repository));
            Ok(Some((preview, format!("{}@{digest}", destination.repository))))
        })
        .await?;
    let Some((preview, image)) = claimed else { return Ok(()) };
    let target = target_of(ctx.connector.as_ref(), project, plan.settings, &preview, engine)
        .await
        .map_err(|error| JobFailure::NotConfigured(error.to_string()))?;
    let release = Release {
        job_id: job.id.get(),
        // A preview keeps no deployment history: its containers are named by the job.
        deployment_id: job.id.get(),
        sha: &job.sha,
        image: &image,
        previous: None,
        replaces: preview.job_id,
    };
    let went = steps
        .run(Step::Preview, target.timeout() + STEP_MARGIN, async {
            target
                .go_live(&release, log)
                .await
                .map_err(|error| StepError::Failed(error.message))
        })
        .await;
    // Also after a timeout or a cancel.
    target.clean_up(&release, log).await;
    if let Err(failure) = went {
        if preview.state == PreviewState::Deploying
            && let Err(error) = previews::never_served(&ctx.pool, preview.id, ctx.clock.now_ms()).await
        {
            log.system(format!("could not record that the preview never served: {error}"));
        }
        return Err(failure);
    }
    let recorded = previews::went_live(
        &ctx.pool,
        preview.id,
        &job.sha,
        &image,
        job.id.get(),
        ctx.clock.now_ms(),
    )
    .await
    .map_err(|error| JobFailure::Step {
        step: Step::Preview,
        error: StepError::caused_by(&error),
    })?;
    if !recorded {
        log.system("the preview was closed or removed meanwhile: what this job started goes");
        if let Err(error) = target.tear_down(log).await {
            log.system(format!("could not remove it: {error}"));
        }
        return Ok(());
    }
    log.system(format!(
        "the preview of #{number} serves {} at {}",
        job.sha,
        target.url(None)
    ));
    target.retire(&release, log).await;
    Ok(())
}

/// The preview the job deploys into: the pull request's own, or a new one in a free seat
/// (removing a preview on its way out, or the one pushed longest ago, to free one).
/// `None`: nothing to deploy (the pull request closed, or a newer push serves).
async fn claim(
    ctx: &super::PipelineContext,
    project: &Project,
    plan: PreviewDelivery<'_>,
    engine: &Arc<dyn ContainerEngine>,
    job: &crate::store::jobs::Job,
    number: i64,
    log: &JobLog,
) -> Result<Option<Preview>, StepError> {
    let settings = plan.settings;
    let url_of = |seat: u32| settings.rollout(seat, number).url();
    for _ in 0..=settings.max_previews {
        let opened = previews::open(
            &ctx.pool,
            project.name.as_str(),
            number,
            job.created_at,
            settings.max_previews,
            url_of,
            ctx.clock.now_ms(),
        )
        .await?;
        match opened {
            Opened::Ready(preview) if preview.job_id.is_some_and(|live| live > job.id.get()) => {
                log.system(format!(
                    "a newer push of #{number} already serves its preview: nothing to deploy"
                ));
                return Ok(None);
            }
            Opened::Ready(preview) => return Ok(Some(preview)),
            Opened::Closed(why) => {
                log.system(format!("no preview: {}", why.describe()));
                return Ok(None);
            }
            Opened::Busy => {
                // Other pull requests' activity is no failure of this one's.
                log.system(format!(
                    "no preview: all {} preview seats are held by pull requests whose jobs are deploying them; the next push tries again",
                    settings.max_previews
                ));
                return Ok(None);
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
                .map_err(|error| StepError::caused_by(&error))?;
            }
        }
    }
    Err(StepError::Failed("no seat for the preview came free".into()))
}

/// The deploy target of `preview`'s environment (its seat's).
async fn target_of(
    connector: &dyn Connector,
    project: &Project,
    settings: &PreviewSettings,
    preview: &Preview,
    engine: &Arc<dyn ContainerEngine>,
) -> Result<Arc<dyn DeployTarget>, TargetError> {
    let environment = settings.environment(preview.seat(), preview.number);
    let Some(target) = &environment.target else {
        return Err(TargetError::Unconfigured(
            "a preview's environment has no deploy target",
        ));
    };
    connector
        .target(project, &environment, target, Arc::clone(engine))
        .await
}

/// Why a preview could not be removed (yet).
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    #[error("project {0} has no previews configured any more")]
    NoPreviews(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
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
) -> Result<(), RemovalError> {
    let Some(settings) = &project.previews else {
        return Err(RemovalError::NoPreviews(project.name.to_string()));
    };
    let target = target_of(connector, project, settings, preview, engine).await?;
    target.tear_down(log).await?;
    if let (Some(build), Some(registry)) = (&project.build, &project.registry) {
        // Best effort: a registry that refuses keeps the tags, and the seat is freed anyway.
        let kept =
            crate::store::deployments::kept_images(pool, project.name.as_str(), project.keep_deployments).await?;
        let registry = connector.registry(registry).await;
        match registry
            .delete_tags(&build.image, &image_tag_prefix(preview.number), &kept, log)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => log.system(format!("deleted {deleted} pushed image(s) of the preview")),
            Err(error) => log.system(format!("could not delete the preview's pushed images: {error}")),
        }
        // The engine's copies of the images it pushed, by each of their names.
        if let Some((repository, _)) = preview.image.as_deref().and_then(|image| image.split_once('@')) {
            let ours = format!("{repository}:{}", image_tag_prefix(preview.number));
            let images = engine.images(&[repository.to_owned()]).await?;
            for image in images.iter().filter(|i| i.tags.iter().any(|t| t.starts_with(&ours))) {
                for name in image.tags.iter().chain(&image.digests) {
                    if let Err(error) = engine.remove_image(name).await {
                        log.system(format!("could not remove the image {name} from the engine: {error}"));
                    }
                }
            }
        }
    }
    previews::removed(pool, preview.id, now).await?;
    Ok(())
}
