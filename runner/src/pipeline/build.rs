//! From a commit to a pushed image: checkout, build, smoke test, push; then a deploy job
//! goes on to [`super::deliver`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::checks;
use super::plan::{Deploy, Step, Verify};
use super::steps::Steps;
use super::{JobDirs, JobFailure, STEP_MARGIN, StepError, create_dirs, deliver, infra, remove_workdir, workdir_of};
use crate::adapters::engine::{
    BuildRequest, ContainerEngine, ContainerSpec, Endpoint, Network, Role, UntrustedBuild, copy_logs,
};
use crate::adapters::{context, probe};
use crate::config::{BuildNetwork, BuildSettings, Environment, Project, SmokeSettings};
use crate::job::JobKind;
use crate::joblog::JobLog;
use crate::runfile::ChangedPaths;

/// A deploy job up to its pushed image, then its delivery.
pub(super) async fn deploy(
    steps: &Steps<'_>,
    project: &Project,
    environment: &Environment,
    plan: Deploy<'_>,
    engine: &Arc<dyn ContainerEngine>,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let dirs = workdir_of(ctx, job);
    let built = build_and_check(steps, project, plan.build, engine.as_ref(), &dirs, JobKind::Deploy).await;
    // Without terraform steps, the checkout is no longer needed once the image exists.
    if plan.delivery.terraform.is_none() {
        remove_workdir(&dirs.root, log).await;
    }
    let Some(tag) = built? else {
        return Ok(());
    };
    smoke_test(steps, project, plan.smoke, engine.as_ref(), &tag, Network::Default).await?;

    let (repository, digest) = steps
        .run(Step::Push, ctx.push_timeout, async {
            let registry = ctx.connector.registry(plan.registry).await;
            let destination = registry.destination(&plan.build.image, log).await?;
            let repository = destination.repository;
            engine.tag(&tag, &repository, &job.sha).await?;
            let digest = engine.push(&repository, &job.sha, destination.auth, log).await?;
            log.system(format!("pushed {repository}:{} ({digest})", job.sha));
            Ok((repository, digest))
        })
        .await?;

    let pushed = deliver::Pushed {
        repository,
        sha: job.sha.to_string(),
        digest,
    };
    deliver::deliver(steps, project, environment, plan.delivery, engine, &dirs, &pushed).await
}

/// A verify job: its build and smoke test on the closed network, then the plan if the
/// project plans pull requests. Its image is tagged apart and goes with the job: nothing
/// else starts from it, and its layers leave the engine with it.
pub(super) async fn verify(
    steps: &Steps<'_>,
    project: &Project,
    plan: Verify<'_>,
    engine: &Arc<dyn ContainerEngine>,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let dirs = workdir_of(ctx, job);
    let built = build_and_check(steps, project, plan.build, engine.as_ref(), &dirs, JobKind::Verify).await;
    if plan.terraform.is_none() {
        remove_workdir(&dirs.root, log).await;
    }
    let Some(tag) = built? else {
        return Ok(());
    };
    let verified = async {
        smoke_test(steps, project, plan.smoke, engine.as_ref(), &tag, Network::Closed).await?;
        log.system("verify job: the image builds and answers its health check");
        if let Some(terraform) = plan.terraform {
            infra::run(steps, project, terraform, &dirs, &tag, true).await?;
        }
        if let Some(preview) = plan.preview {
            super::preview::serve(steps, project, plan.build, preview, engine, &tag).await?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = engine.remove_image(&tag).await {
        log.system(format!("could not remove the image {tag}: {error}"));
    }
    verified
}

/// The checkout, the repository's `.runner.yml` read, the build (with the stages its
/// checks use), then its checks; returns the local tag, or `None` when every changed file
/// is one the file's `paths_ignore` names (nothing to build or deploy).
async fn build_and_check(
    steps: &Steps<'_>,
    project: &Project,
    build: &BuildSettings,
    engine: &dyn ContainerEngine,
    dirs: &JobDirs,
    kind: JobKind,
) -> Result<Option<String>, JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let checkout = ctx.connector.checkout(project, &dirs.home);
    let fetched = steps
        .run(Step::Checkout, ctx.checkout_timeout, async {
            create_dirs(dirs).await?;
            Ok(checkout.fetch(job, &dirs.checkout, log).await?)
        })
        .await?;
    let changed = fetched.changed.map_or(ChangedPaths::All, ChangedPaths::Paths);
    let file = checks::read(steps, build, dirs).await?;
    if let Some(file) = &file
        && file.only_ignored(&changed)
    {
        checks::nothing_to_do(steps).await?;
        return Ok(None);
    }
    let stages = checks::stages(file.as_ref());
    let tag = image_tag(build, job, kind);
    let checked = match build_image(steps, project, build, engine, dirs, kind, &stages).await {
        Ok(built) => match &file {
            Some(file) => checks::run(steps, project, build, engine, dirs, file, &built, kind, changed).await,
            None => Ok(()),
        },
        Err(failure) => Err(failure),
    };
    // The stages' images served the checks only (a build that failed part-way may have
    // made some).
    for stage in &stages {
        let image = checks::stage_tag(&tag, stage);
        if let Err(error) = engine.remove_image(&image).await {
            log.system(format!("could not remove the image {image}: {error}"));
        }
    }
    if checked.is_err() && kind == JobKind::Verify {
        // A verify job's image goes with the job; its caller removes it only once built
        // and checked.
        if let Err(error) = engine.remove_image(&tag).await {
            log.system(format!("could not remove the image {tag}: {error}"));
        }
    }
    checked.map(|()| Some(tag))
}

/// Runs the image and asks its health endpoint, on `network`; the container goes after.
async fn smoke_test(
    steps: &Steps<'_>,
    project: &Project,
    smoke: &SmokeSettings,
    engine: &dyn ContainerEngine,
    tag: &str,
    network: Network,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let smoke_container = Leftover::default();
    let prober_container = Leftover::default();
    let smoked = steps
        .run(Step::Smoke, smoke.timeout + STEP_MARGIN, async {
            let spec = ContainerSpec {
                name: format!("runner-{}-smoke-{}-{}", project.name, job.id, job.attempts),
                image: tag.to_owned(),
                container_port: smoke.container_port,
                publish: None,
                role: Role::Smoke,
                job_id: job.id.get(),
                labels: HashMap::new(),
                limits: project.containers.clone(),
                network,
                env: Vec::new(),
            };
            let started = engine.start(&spec).await?;
            smoke_container.set(Some(started.id.clone()));
            let verdict = match started.endpoint {
                Endpoint::Published { ip, port } => {
                    let url = format!("http://{ip}:{port}{}", smoke.path);
                    log.system(format!("waiting for {url} to answer {}", smoke.expect_status));
                    probe::until_healthy(|| probe::ask_over_http(&ctx.http, &url), smoke, smoke.timeout).await
                }
                Endpoint::Inside { port } => {
                    let prober = match engine
                        .start_prober(&started.id, &ctx.probe_image, job.id.get(), smoke.timeout + STEP_MARGIN)
                        .await
                    {
                        Ok(prober) => prober,
                        Err(error) => {
                            // Most often the app already exited, and nothing can join its
                            // network: what it printed says why.
                            copy_logs(engine, &started.id, log).await;
                            return Err(StepError::Failed(format!(
                                "the health probe could not start beside the app (did it exit?): {error}"
                            )));
                        }
                    };
                    prober_container.set(Some(prober.clone()));
                    log.system(format!(
                        "waiting for port {port}{} to answer {}, asked from inside the container's own network",
                        smoke.path, smoke.expect_status
                    ));
                    probe::until_healthy(
                        || async {
                            engine
                                .ask_inside(&prober, port, &smoke.path)
                                .await
                                .unwrap_or_else(|error| probe::Answer::Failed(error.to_string()))
                        },
                        smoke,
                        smoke.timeout,
                    )
                    .await
                }
            };
            // The engine copies a container's output into its log a little after the
            // container prints it; once it has exited, the log is whole.
            if let Err(error) = engine.kill(&started.id).await {
                log.system(format!("could not stop the smoke container: {error}"));
            }
            copy_logs(engine, &started.id, log).await;
            verdict.map_err(|last| StepError::Failed(format!("{} answered {last}", smoke.path)))
        })
        .await;
    // The prober lives in the smoke container's network namespace: it goes first.
    prober_container.remove(engine, log).await;
    smoke_container.remove(engine, log).await;
    smoked
}

/// Packs the checkout's build context and builds it; returns the local tag.
async fn build_image(
    steps: &Steps<'_>,
    project: &Project,
    build: &BuildSettings,
    engine: &dyn ContainerEngine,
    dirs: &JobDirs,
    kind: JobKind,
    stages: &[String],
) -> Result<String, JobFailure> {
    let (job, log) = (steps.job, steps.log);
    let untrusted = kind == JobKind::Verify;
    let tag = image_tag(build, job, kind);
    let context_dir = dirs.checkout.join(&build.context);
    let mut build_args: HashMap<String, String> = build
        .build_args
        .iter()
        .map(|(key, value)| (key.clone(), value.replace("{{sha}}", &job.sha)))
        .collect();
    if kind == JobKind::Verify {
        // A stranger's Dockerfile could fill a cache mount (a package cache, say) with what
        // a deploy build would then use, or read what deploy builds left there: a pull
        // request's cache mounts live in a namespace of their own, per pull request.
        let scope = job
            .pull_request
            .map_or_else(|| format!("job-{}", job.id), |number| format!("pr-{number}"));
        build_args.insert(
            "BUILDKIT_CACHE_MOUNT_NS".to_owned(),
            format!("runner-{}-{scope}", project.name),
        );
    }
    if build.inline_cache && !untrusted {
        // BuildKit writes the build cache's metadata into the image, for `cache_from`.
        build_args.insert("BUILDKIT_INLINE_CACHE".to_owned(), "1".to_owned());
    }
    let secrets = if build.secrets.is_empty() {
        build.secrets.clone()
    } else {
        let names: Vec<&str> = build.secrets.keys().map(String::as_str).collect();
        if kind == JobKind::Verify {
            log.system(format!(
                "build secrets withheld from this pull request's build: {}",
                names.join(", ")
            ));
            Default::default()
        } else {
            log.system(format!("build secrets offered as secret mounts: {}", names.join(", ")));
            build.secrets.clone()
        }
    };
    let request = BuildRequest {
        tag: tag.clone(),
        dockerfile: build.dockerfile.clone(),
        build_args,
        labels: HashMap::from([
            ("org.opencontainers.image.revision".to_owned(), job.sha.to_string()),
            (
                "org.opencontainers.image.source".to_owned(),
                project.links.repository().to_owned(),
            ),
            (
                "org.opencontainers.image.created".to_owned(),
                crate::telemetry::format_ms(steps.ctx.clock.now_ms()),
            ),
        ]),
        builder: build.builder,
        target: build.target.clone(),
        platform: build.platform.clone(),
        // A pull request's build reads no cache: not the registry's, not the engine's.
        cache_from: if untrusted {
            Vec::new()
        } else {
            build.cache_from.clone()
        },
        secrets,
        // The registry login pulls cache images for deploy builds only: with it, a pull
        // request's Dockerfile could pull any private image of that registry.
        credentials: if kind == JobKind::Verify {
            HashMap::new()
        } else {
            cache_credentials(project, build)
        },
        untrusted: untrusted.then(|| UntrustedBuild {
            key: format!("runner-verify-{}-{}-{}", job.id, job.attempts, random_hex()),
            network: build.pull_request_build_network,
        }),
    };
    if untrusted {
        log.system(match build.pull_request_build_network {
            BuildNetwork::None => {
                "the pull request's RUN steps have no network (pull_request_build_network = \"none\")"
            }
            BuildNetwork::Default => "the pull request's RUN steps use the engine's default network",
        });
    }
    let image_id = steps
        .run(Step::Build, build.timeout, async {
            let dockerfile = build.dockerfile.clone();
            let checkout_root = dirs.checkout.clone();
            let tar = tokio::task::spawn_blocking(move || {
                let dropped = if untrusted {
                    context::drop_frontend_choice(&checkout_root, &context_dir, &dockerfile)?
                } else {
                    None
                };
                Ok::<_, String>((dropped, context::pack(&checkout_root, &context_dir, &dockerfile)?))
            })
            .await
            .map_err(|e| format!("packing the build context: {e}"))?;
            let (dropped, tar) = tar?;
            if let Some(line) = dropped {
                log.system(format!(
                    "the pull request's Dockerfile chooses its frontend ({line}); it is built with the engine's own instead"
                ));
            }
            log.system(format!("build context: {} KiB", tar.len() / 1024));
            let tar = Bytes::from(tar);
            let image_id = engine.build(tar.clone(), &request, log).await?;
            for stage in stages {
                let mut stage_request = request.clone();
                stage_request.tag = checks::stage_tag(&tag, stage);
                stage_request.target = Some(stage.clone());
                log.system(format!("building stage {stage} for the repository's steps"));
                engine.build(tar.clone(), &stage_request, log).await?;
            }
            Ok(image_id)
        })
        .await?;
    log.system(format!("built {tag} ({image_id})"));
    Ok(tag)
}

/// The job's image name. A pull request's never carries the name a deploy of that commit
/// would.
fn image_tag(build: &BuildSettings, job: &crate::store::jobs::Job, kind: JobKind) -> String {
    if kind == JobKind::Verify {
        format!("{}:verify-{}-{}", build.image, job.id, job.attempts)
    } else {
        format!("{}:{}", build.image, job.sha)
    }
}

/// Sixteen random hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    hex::encode(bytes)
}

/// The project's own registry login, for pulling `cache_from` images from it.
fn cache_credentials(project: &Project, build: &BuildSettings) -> HashMap<String, (String, secrecy::SecretString)> {
    let Some(registry) = project.registry.as_ref().filter(|_| !build.cache_from.is_empty()) else {
        return HashMap::new();
    };
    match (&registry.url, &registry.username, &registry.password) {
        (Some(url), Some(username), Some(password)) => {
            let host = url.split('/').next().unwrap_or(url).to_owned();
            HashMap::from([(host, (username.clone(), password.clone()))])
        }
        _ => HashMap::new(),
    }
}

/// A container a step started, removed by the step's owner after the step ends, so it
/// goes also when the step future is dropped on timeout or cancel.
#[derive(Clone, Default)]
pub(super) struct Leftover(Arc<Mutex<Option<String>>>);

impl Leftover {
    pub(super) fn set(&self, id: Option<String>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = id;
    }

    pub(super) async fn remove(&self, engine: &dyn ContainerEngine, log: &JobLog) {
        let id = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(id) = id
            && let Err(error) = engine.remove(&id).await
        {
            log.system(format!("could not remove container {id}: {error}"));
        }
    }
}
