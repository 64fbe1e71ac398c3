//! What a claimed job does, step by step. Each step talks to the outside world through
//! a boundary of its own (git, the container engine, the registry); this module orders
//! the steps, records their states, and makes sure what a step creates is removed
//! whatever happens (success, failure, timeout or cancel).

pub mod checkout;
pub mod child;
pub mod context;
pub mod ecr;
pub mod ecs;
mod ecs_rollout;
pub mod engine;
mod infra;
pub mod joblog;
mod probe;
pub mod rollout;
pub mod terraform;

pub use rollout::{live_name, recover_interrupted_swaps};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use secrecy::ExposeSecret;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use crate::config::{Project, RegistryKind};
use crate::job::{JobKind, Trigger};
use crate::store::jobs::Job;
use crate::store::{deployments, now_ms, steps};
use checkout::{Checkout, GitCheckout};
use engine::{BuildRequest, ContainerEngine, ContainerSpec, DockerEngine, RegistryAuth, Role};
use joblog::JobLog;

/// Why a job did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("cancelled")]
    Cancelled,
    #[error("{step} failed: {message}")]
    Step { step: &'static str, message: String },
    #[error("{step} timed out after {after:?}")]
    Timeout { step: &'static str, after: Duration },
    #[error("{0}")]
    NotConfigured(String),
}

/// An AWS client's region and endpoint.
type AwsKey = (Option<String>, Option<String>);

/// What every job needs from the runner.
#[derive(Clone)]
pub struct PipelineContext {
    pub pool: SqlitePool,
    /// Work directories of running jobs live here; emptied at start-up.
    pub work_root: PathBuf,
    pub checkout_timeout: Duration,
    pub push_timeout: Duration,
    /// `None` when no Docker engine answered at start; jobs that need one fail saying so.
    pub engine: Option<DockerEngine>,
    pub http: reqwest::Client,
    /// ECR clients by region, created on first use so their token caches are shared by jobs.
    pub ecr: Arc<tokio::sync::Mutex<HashMap<AwsKey, Arc<ecr::Ecr>>>>,
    /// ECS clients by region and endpoint, created on first use.
    pub ecs: Arc<tokio::sync::Mutex<HashMap<AwsKey, Arc<ecs::Ecs>>>>,
    pub terraform_bin: Option<PathBuf>,
    /// One terraform operation at a time per project and workspace.
    pub terraform_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// How long a plan waits for a person's answer before the job fails.
    pub approval_timeout: Duration,
    /// This process's lease owner name (an approval wait renews the same lease).
    pub owner: String,
    pub log_events: joblog::LogEvents,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl PipelineContext {
    async fn ecr(&self, region: Option<String>, endpoint_url: Option<String>) -> Arc<ecr::Ecr> {
        cached(&self.ecr, (region, endpoint_url), |(r, e)| ecr::Ecr::new(r, e)).await
    }

    async fn ecs(&self, region: Option<String>, endpoint_url: Option<String>) -> Arc<ecs::Ecs> {
        cached(&self.ecs, (region, endpoint_url), |(r, e)| ecs::Ecs::new(r, e)).await
    }

    async fn terraform_lock(&self, state: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .terraform_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(state.to_owned()).or_default())
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

/// Beyond the time an app gets to become healthy, what starting, inspecting and removing
/// its container may take on a loaded engine before the step is cut off.
const STEP_MARGIN: Duration = Duration::from_secs(30);

const CHECKOUT: &str = "checkout";
const BUILD: &str = "build";
const SMOKE: &str = "smoke";
const PUSH: &str = "push";
const PLAN: &str = "plan";
const APPROVAL: &str = "approval";
const APPLY: &str = "apply";
const ROLLOUT: &str = "rollout";
const RECORD: &str = "record";

/// Runs `job` for `project`, writing its log and step states, until it ends or `cancel` fires.
pub async fn run(
    ctx: &PipelineContext,
    project: &Project,
    job: &Job,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<(), JobFailure> {
    log.system(format!(
        "{} job ({}) for {} at {} ({}), attempt {}",
        job.kind, job.trigger, project.name, job.sha, job.git_ref, job.attempts
    ));
    let plan = step_plan(project, job);
    let plan = plan.as_slice();
    let missing = missing_settings(project, plan);
    if !missing.is_empty() {
        return Err(JobFailure::NotConfigured(format!(
            "project {} cannot {} yet: configure {} in its [[projects]] entry",
            project.name,
            if job.kind == JobKind::Verify {
                "verify pull requests"
            } else {
                "deploy"
            },
            missing.join(", ")
        )));
    }
    let Some(engine) = ctx.engine.clone() else {
        return Err(JobFailure::NotConfigured(
            "no Docker engine answered when the runner started; start it (or set DOCKER_HOST) and restart the runner"
                .into(),
        ));
    };
    record_steps(ctx, job.id.get(), plan).await;
    let steps = Steps { ctx, job, log, cancel };
    let result = match (job.kind, job.trigger) {
        (JobKind::Deploy, Trigger::Rollback) => run_rollback(&steps, project, &engine).await,
        (kind, _) => run_build(&steps, project, &engine, kind).await,
    };
    // A checkout kept for the terraform steps goes now, whatever happened.
    remove_workdir(&workdir_of(ctx, job).root, log).await;
    let _ = steps::skip_pending(&ctx.pool, job.id.get(), now_ms()).await;
    result
}

/// The steps a job runs, in order.
fn step_plan(project: &Project, job: &Job) -> Vec<&'static str> {
    let infra: Vec<&'static str> = match &project.terraform {
        Some(terraform) if terraform.require_approval => vec![PLAN, APPROVAL, APPLY],
        Some(_) => vec![PLAN, APPLY],
        None => vec![],
    };
    let mut plan = Vec::new();
    match (job.kind, job.trigger) {
        (JobKind::Verify, _) => {
            plan.extend([CHECKOUT, BUILD, SMOKE]);
            if project.terraform.as_ref().is_some_and(|t| t.plan_pull_requests) {
                plan.push(PLAN);
            }
        }
        (JobKind::Deploy, Trigger::Rollback) => {
            if !infra.is_empty() {
                plan.push(CHECKOUT);
            }
            plan.extend(infra);
            plan.extend([ROLLOUT, RECORD]);
        }
        (JobKind::Deploy, _) => {
            plan.extend([CHECKOUT, BUILD, SMOKE, PUSH]);
            plan.extend(infra);
            plan.extend([ROLLOUT, RECORD]);
        }
    }
    plan
}

/// A job's directories: all under one root private to the runner's user (0700), removed
/// whatever happens to the job.
pub struct JobDirs {
    pub root: PathBuf,
    /// The commit's tree.
    pub checkout: PathBuf,
    /// `HOME` and `TMPDIR` of the job's child processes, its var file and plan file:
    /// outside the checkout, so nothing in the repository can stand in for them.
    pub home: PathBuf,
}

fn workdir_of(ctx: &PipelineContext, job: &Job) -> JobDirs {
    let root = ctx.work_root.join(format!("job-{}-{}", job.id, job.attempts));
    JobDirs {
        checkout: root.join("checkout"),
        home: root.join("home"),
        root,
    }
}

/// Creates the job's private directories (0700 from the start).
async fn create_dirs(dirs: &JobDirs) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let (root, home) = (dirs.root.clone(), dirs.home.clone());
    tokio::task::spawn_blocking(move || {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(&root)?;
        builder.create(&home)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot create the job's directories: {e}"))
}

async fn remove_workdir(workdir: &std::path::Path, log: &JobLog) {
    if let Err(error) = tokio::fs::remove_dir_all(workdir).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        log.system(format!("could not remove the work directory: {error}"));
    }
}

fn missing_settings(project: &Project, plan: &[&str]) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if plan.contains(&BUILD) && project.build.is_none() {
        missing.push("[projects.build] (image, context, dockerfile)");
    }
    if plan.contains(&SMOKE) && project.smoke.is_none() {
        missing.push("[projects.smoke] (container_port, path)");
    }
    if plan.contains(&PUSH) && project.registry.is_none() {
        missing.push("[projects.registry] (kind, url)");
    }
    if plan.contains(&ROLLOUT) && project.rollout.is_none() && project.ecs.is_none() {
        missing.push("[projects.rollout] (target, host_port)");
    }
    missing
}

async fn record_steps(ctx: &PipelineContext, job_id: i64, plan: &[&str]) {
    if let Err(error) = steps::plan(&ctx.pool, job_id, plan).await {
        tracing::warn!(%error, "cannot record the job's steps");
    }
}

/// Runs steps with their timeouts, cancellation and recorded states.
struct Steps<'a> {
    ctx: &'a PipelineContext,
    job: &'a Job,
    log: &'a JobLog,
    cancel: &'a CancellationToken,
}

impl Steps<'_> {
    async fn run<T>(
        &self,
        name: &'static str,
        timeout: Duration,
        work: impl Future<Output = Result<T, String>>,
    ) -> Result<T, JobFailure> {
        let started = std::time::Instant::now();
        let job_id = self.job.id.get();
        let _ = steps::set_state(&self.ctx.pool, job_id, name, "running", None, now_ms()).await;
        self.log.system(format!("step {name}: started"));
        let outcome = tokio::select! {
            () = self.cancel.cancelled() => Err(JobFailure::Cancelled),
            result = tokio::time::timeout(timeout, work) => match result {
                Err(_) => Err(JobFailure::Timeout { step: name, after: timeout }),
                Ok(Err(message)) => Err(JobFailure::Step { step: name, message }),
                Ok(Ok(value)) => Ok(value),
            },
        };
        let elapsed = started.elapsed();
        self.ctx.metrics.step_duration.observe(name, elapsed);
        // What a step says may quote its tools' output: no secret leaves in it.
        let outcome = outcome.map_err(|failure| match failure {
            JobFailure::Step { step, message } => JobFailure::Step {
                step,
                message: self.log.mask().masked(message),
            },
            JobFailure::NotConfigured(message) => JobFailure::NotConfigured(self.log.mask().masked(message)),
            other => other,
        });
        let (state, error) = match &outcome {
            Ok(_) => ("succeeded", None),
            Err(JobFailure::Cancelled) => ("cancelled", Some("cancelled".to_owned())),
            Err(failure) => ("failed", Some(failure.to_string())),
        };
        let _ = steps::set_state(&self.ctx.pool, job_id, name, state, error.as_deref(), now_ms()).await;
        match &outcome {
            Ok(_) => self.log.system(format!("step {name}: succeeded in {elapsed:.1?}")),
            Err(error) => self.log.system(format!("step {name}: {error} after {elapsed:.1?}")),
        }
        outcome
    }
}

/// A container a step started, removed by the step's owner after the step ends, so it
/// goes also when the step future is dropped on timeout or cancel.
#[derive(Clone, Default)]
struct Leftover(Arc<Mutex<Option<String>>>);

impl Leftover {
    fn set(&self, id: Option<String>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = id;
    }

    async fn remove(&self, engine: &DockerEngine, log: &JobLog) {
        let id = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(id) = id
            && let Err(error) = engine.remove(&id).await
        {
            log.system(format!("could not remove container {id}: {error}"));
        }
    }
}

async fn run_build(
    steps: &Steps<'_>,
    project: &Project,
    engine: &DockerEngine,
    kind: JobKind,
) -> Result<(), JobFailure> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let (Some(build), Some(smoke)) = (&project.build, &project.smoke) else {
        unreachable!("settings were checked before the job started");
    };
    let dirs = workdir_of(ctx, job);
    let workdir = dirs.checkout.clone();
    let checkout = GitCheckout::new(clone_url(project), dirs.home.clone());
    let checked_out = steps
        .run(CHECKOUT, ctx.checkout_timeout, async {
            create_dirs(&dirs).await?;
            checkout.fetch(job, &workdir, log).await
        })
        .await;

    let built = match checked_out {
        Ok(()) => {
            let tag = format!("{}:{}", build.image, job.sha);
            let context_dir = workdir.join(&build.context);
            let mut build_args: HashMap<String, String> = build
                .build_args
                .iter()
                .map(|(key, value)| (key.clone(), value.replace("{{sha}}", &job.sha)))
                .collect();
            if !build.secrets.is_empty() {
                let names: Vec<&str> = build.secrets.keys().map(String::as_str).collect();
                if kind == JobKind::Verify {
                    log.system(format!(
                        "build secrets withheld from this pull request's build: {}",
                        names.join(", ")
                    ));
                } else {
                    log.system(format!(
                        "build secrets {} are passed as build args (the engine's builder has no secret mounts): \
                         they are visible in the image's history, so keep the image private",
                        names.join(", ")
                    ));
                    build_args.extend(
                        build
                            .secrets
                            .iter()
                            .map(|(key, value)| (key.clone(), value.expose_secret().to_owned())),
                    );
                }
            }
            let request = BuildRequest {
                tag: tag.clone(),
                dockerfile: build.dockerfile.clone(),
                build_args,
                labels: HashMap::from([
                    ("org.opencontainers.image.revision".to_owned(), job.sha.clone()),
                    (
                        "org.opencontainers.image.source".to_owned(),
                        format!("https://github.com/{}", project.repository),
                    ),
                    (
                        "org.opencontainers.image.created".to_owned(),
                        crate::telemetry::format_ms(now_ms()),
                    ),
                ]),
            };
            steps
                .run(BUILD, build.timeout, async {
                    let dockerfile = build.dockerfile.clone();
                    let checkout_root = workdir.clone();
                    let tar =
                        tokio::task::spawn_blocking(move || context::pack(&checkout_root, &context_dir, &dockerfile))
                            .await
                            .map_err(|e| format!("packing the build context: {e}"))??;
                    log.system(format!("build context: {} KiB", tar.len() / 1024));
                    engine
                        .build(Bytes::from(tar), &request, log)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
                .map(|image_id| {
                    log.system(format!("built {tag} ({image_id})"));
                    tag
                })
        }
        Err(error) => Err(error),
    };
    // Without terraform steps, the checkout is no longer needed once the image exists.
    if project.terraform.is_none() {
        remove_workdir(&dirs.root, log).await;
    }
    let tag = built?;

    let smoke_container = Leftover::default();
    let smoked = steps
        .run(SMOKE, smoke.timeout + STEP_MARGIN, async {
            let spec = ContainerSpec {
                name: format!("runner-{}-smoke-{}-{}", project.name, job.id, job.attempts),
                image: tag.clone(),
                container_port: smoke.container_port,
                publish: None,
                role: Role::Smoke,
                job_id: job.id.get(),
                labels: HashMap::new(),
                limits: project.containers.clone(),
            };
            let started = engine.start(&spec).await.map_err(|e| e.to_string())?;
            smoke_container.set(Some(started.id.clone()));
            let url = format!("http://{}:{}{}", started.host_ip, started.host_port, smoke.path);
            log.system(format!("waiting for {url} to answer {}", smoke.expect_status));
            let verdict = probe::until_healthy(&ctx.http, &url, smoke, smoke.timeout).await;
            copy_container_logs(engine, &started.id, log).await;
            verdict.map_err(|last| format!("{} answered {last}", smoke.path))
        })
        .await;
    smoke_container.remove(engine, log).await;
    smoked?;

    if kind == JobKind::Verify {
        log.system("verify job: the image builds and answers its health check");
        if let Some(terraform) = project.terraform.as_ref().filter(|t| t.plan_pull_requests) {
            infra::run(steps, project, terraform, &dirs, &tag, true).await?;
        }
        return Ok(());
    }

    let Some(registry) = &project.registry else {
        unreachable!("settings were checked before the job started");
    };
    let (repository, digest) = steps
        .run(PUSH, ctx.push_timeout, async {
            let (host, auth) = match &registry.kind {
                RegistryKind::V2 => {
                    let url = registry.url.clone().unwrap_or_default();
                    let auth = registry.username.as_ref().map(|username| RegistryAuth {
                        username: username.clone(),
                        password: registry
                            .password
                            .as_ref()
                            .map(|p| p.expose_secret().to_owned())
                            .unwrap_or_default(),
                        server: url.split('/').next().unwrap_or_default().to_owned(),
                    });
                    (url, auth)
                }
                RegistryKind::Ecr { region, endpoint_url } => {
                    let ecr = ctx.ecr(region.clone(), endpoint_url.clone()).await;
                    let uri = ecr.ensure_repository(&build.image).await?;
                    log.system(format!("ECR repository {uri}"));
                    let login = ecr.login().await?;
                    let host = registry.url.clone().unwrap_or_else(|| login.registry_host.clone());
                    let mut auth = login.auth;
                    auth.server.clone_from(&host);
                    (host, Some(auth))
                }
            };
            let repository = format!("{host}/{}", build.image);
            engine
                .tag(&tag, &repository, &job.sha)
                .await
                .map_err(|e| e.to_string())?;
            let digest = engine
                .push(&repository, &job.sha, auth, log)
                .await
                .map_err(|e| e.to_string())?;
            log.system(format!("pushed {repository}:{} ({digest})", job.sha));
            Ok((repository, digest))
        })
        .await?;

    let image_ref = format!("{repository}:{}", job.sha);
    deliver(
        steps,
        project,
        engine,
        &dirs,
        &image_ref,
        &format!("{repository}@{digest}"),
        Some(&digest),
    )
    .await
}

/// From a pushed image to live: the terraform steps if the project has them, then the
/// rollout to its target.
async fn deliver(
    steps: &Steps<'_>,
    project: &Project,
    engine: &DockerEngine,
    dirs: &JobDirs,
    image_ref: &str,
    run_ref: &str,
    digest: Option<&str>,
) -> Result<(), JobFailure> {
    let ctx = steps.ctx;
    // What ECS runs before terraform touches it: what a failed rollout goes back to.
    let previous = match (&project.ecs, &project.terraform) {
        (Some(settings), Some(_)) => {
            let ecs = ctx.ecs(settings.region.clone(), settings.endpoint_url.clone()).await;
            match ecs::Deployer::current(&*ecs, &settings.cluster, &settings.service).await {
                Ok(current) => Some(current),
                Err(error) => {
                    steps
                        .log
                        .system(format!("the ECS service's current revision is unknown ({error})"));
                    None
                }
            }
        }
        _ => None,
    };
    let outputs = match &project.terraform {
        Some(terraform) => {
            infra::run(steps, project, terraform, dirs, run_ref, false)
                .await?
                .outputs
        }
        None => None,
    };
    if let Some(settings) = &project.ecs {
        return ecs_rollout::go_live(
            steps,
            project,
            settings,
            previous,
            run_ref,
            image_ref,
            digest,
            outputs.as_ref(),
        )
        .await;
    }
    rollout::go_live(steps, project, engine, image_ref, run_ref, digest).await?;
    if let Some(outputs) = outputs
        && let Ok(Some(deployment)) = deployments::for_job(&ctx.pool, steps.job.id.get()).await
    {
        let _ = deployments::set_outputs(&ctx.pool, deployment.id, &outputs).await;
    }
    Ok(())
}

async fn run_rollback(steps: &Steps<'_>, project: &Project, engine: &DockerEngine) -> Result<(), JobFailure> {
    let job = steps.job;
    let target = match job.rollback_of {
        Some(id) => deployments::get(&steps.ctx.pool, id).await.ok().flatten(),
        None => None,
    };
    let Some(target) = target else {
        return Err(JobFailure::NotConfigured(format!(
            "rollback job {} names no deployment that exists",
            job.id
        )));
    };
    let Some(digest) = target.image_digest.clone() else {
        return Err(JobFailure::NotConfigured(format!(
            "deployment {} has no pushed image digest",
            target.id
        )));
    };
    let repository = target
        .image_ref
        .rsplit_once(':')
        .map_or(target.image_ref.as_str(), |(repo, _)| repo);
    steps.log.system(format!(
        "rolling back to deployment {} ({} at {})",
        target.id, target.image_ref, digest
    ));
    let dirs = workdir_of(steps.ctx, job);
    if project.terraform.is_some() {
        let checkout = GitCheckout::new(clone_url(project), dirs.home.clone());
        steps
            .run(CHECKOUT, steps.ctx.checkout_timeout, async {
                create_dirs(&dirs).await?;
                checkout.fetch(job, &dirs.checkout, steps.log).await
            })
            .await?;
    }
    deliver(
        steps,
        project,
        engine,
        &dirs,
        &target.image_ref,
        &format!("{repository}@{digest}"),
        Some(&digest),
    )
    .await
}

async fn copy_container_logs(engine: &DockerEngine, container: &str, log: &JobLog) {
    match engine.logs(container).await {
        Ok(lines) => {
            for line in lines {
                log.stdout(&format!("[container] {line}"));
            }
        }
        Err(error) => log.system(format!("could not read the container's logs: {error}")),
    }
}

pub fn clone_url(project: &Project) -> String {
    project.clone_url.as_ref().map_or_else(
        || format!("https://github.com/{}.git", project.repository),
        |url| url.expose_secret().to_owned(),
    )
}
