//! Wiring: build the application from a [`Config`], serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;
use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::adapters::engine::{ContainerEngine, DockerEngine};
use crate::adapters::forge::{ConfiguredForges, Forges};
use crate::adapters::{Connections, Connector};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::job::{JobKind, Trigger};
use crate::joblog::LogEvents;
use crate::metrics::Metrics;
use crate::operations::Operations;
use crate::pipeline::Cancellations;
use crate::pipeline::PipelineContext;
use crate::pipeline::plan::JobPlan;
use crate::proxy::{Caddy, Proxy};
use crate::store::{self, deliveries};
use crate::web::AppState;
use crate::webhook::ingest::IngestWriter;
use crate::webhook::signature::{SecretToken, SignatureKey};
use crate::worker::Worker;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Worker,
    proxy: Arc<dyn Proxy>,
    forges: Arc<dyn Forges>,
    /// Woken once per job queued outside the webhook ingest (operator actions, replays
    /// of missed deliveries, another runner's notification).
    job_queued: Arc<Notify>,
    clock: Arc<dyn Clock>,
}

/// How long running jobs get to finish after a stop signal before the process exits anyway
/// (their leases then expire and a restarted runner picks them up).
const JOB_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The outside systems the application talks to. [`Adapters::connect`] makes the real
/// ones from the config; tests may give [`Application::build_with`] fakes.
pub struct Adapters {
    /// `None` when no engine answered at start: jobs that need one fail saying so.
    pub engine: Option<Arc<dyn ContainerEngine>>,
    /// `[engine] untrusted_host`: `None` when none is configured, the error when it did
    /// not answer at start (verify jobs then fail saying so; they never fall back).
    pub untrusted_engine: Option<Result<Arc<dyn ContainerEngine>, String>>,
    pub proxy: Arc<dyn Proxy>,
    /// Makes each job's checkout, registry, deploy target and terraform.
    pub connector: Arc<dyn Connector>,
    pub forges: Arc<dyn Forges>,
    pub clock: Arc<dyn Clock>,
}

impl Adapters {
    /// Connects to the engines the config names (removing what an earlier run left on
    /// them, and checking in the background what their containers reach), and makes the
    /// proxy, forge and job adapters.
    pub async fn connect(config: &Arc<Config>) -> anyhow::Result<Self> {
        let instance = instance_id(&config.server.identity_path());
        let engine = connect_engine(config, instance.clone()).await;
        let untrusted_engine = match &config.engine.untrusted_host {
            None => None,
            Some(host) => Some(match DockerEngine::connect(host, instance).await {
                Ok(engine) => {
                    if let Err(error) = engine.reap_leftovers().await {
                        tracing::warn!(%error, "cannot remove containers left by an earlier run on the engine for pull requests");
                    }
                    check_metadata_address(config, &engine, "the engine for pull requests");
                    Ok(Arc::new(engine) as Arc<dyn ContainerEngine>)
                }
                Err(error) => {
                    tracing::error!(%error, "the engine for pull requests ([engine] untrusted_host) does not answer: verify jobs fail until it does and the runner restarts");
                    Err(error.to_string())
                }
            }),
        };
        if let Some(engine) = &engine {
            check_metadata_address(config, engine, "the engine");
        }
        let proxy: Arc<dyn Proxy> = Arc::new(Caddy::new(&config.proxy));
        Ok(Self {
            engine: engine.map(|engine| Arc::new(engine) as Arc<dyn ContainerEngine>),
            untrusted_engine,
            connector: Arc::new(Connections::new(
                probe_client()?,
                Arc::clone(&proxy),
                config.proxy.health_interval,
            )),
            proxy,
            forges: Arc::new(ConfiguredForges::new(Arc::clone(config))),
            clock: Arc::new(SystemClock),
        })
    }
}

/// Other processes of the runner's user (a child gone astray, a sandbox that runs as the
/// same user) cannot read this process's memory or environment through /proc.
fn become_undumpable() {
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(%error, "cannot mark the runner non-dumpable");
    }
}

async fn listen(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))
}

/// The client that asks apps' health endpoints: it follows no redirect, as a health check
/// answers itself.
fn probe_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")
}

impl Application {
    /// The application on the real adapters. Its port is taken before any adapter touches
    /// an engine: a second start of the same runner stops there, before it could remove
    /// the running one's containers as leftovers.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        become_undumpable();
        let config = Arc::new(config);
        let listener = listen(&config).await?;
        let adapters = Adapters::connect(&config).await?;
        Self::assemble(config, adapters, listener).await
    }

    /// The application on `adapters`.
    pub async fn build_with(config: Arc<Config>, adapters: Adapters) -> anyhow::Result<Self> {
        become_undumpable();
        let listener = listen(&config).await?;
        Self::assemble(config, adapters, listener).await
    }

    async fn assemble(config: Arc<Config>, adapters: Adapters, listener: TcpListener) -> anyhow::Result<Self> {
        let pool = store::open(&config.server.database_url)
            .await
            .context("opening the database")?;
        let job_queued = Arc::new(Notify::new());
        let ingest = IngestWriter::start(&pool, Arc::clone(&job_queued))
            .await
            .context("starting the ingest writer")?;
        let work_root = config.server.work_dir.clone();
        reap_work_root(&work_root, config.terraform_bin.as_deref()).await?;
        warn_of_jobs_that_cannot_run(&config);
        warn_of_tokens_sent_in_clear(&config);
        let Adapters {
            engine,
            untrusted_engine,
            proxy,
            connector,
            forges,
            clock,
        } = adapters;

        let signature_keys = config
            .projects
            .iter()
            .map(|p| SignatureKey::new(p.webhook_secret.expose_secret().as_bytes()))
            .collect();
        let secret_tokens = config
            .projects
            .iter()
            .map(|p| SecretToken::new(p.webhook_secret.expose_secret().as_bytes()))
            .collect();
        let mask = config.secrets().mask();
        let metrics = Arc::new(Metrics::default());
        let cancellations = Arc::new(Cancellations::default());
        let log_events = LogEvents::default();
        let owner = format!("{}-{}", std::process::id(), clock.now_ms());
        let http = probe_client()?;
        if has_local_environments(&config) {
            match (proxy.check().await, &engine) {
                (Err(error), _) => {
                    tracing::error!(%error, "local deploys will fail until the proxy answers");
                }
                (Ok(()), Some(engine)) => {
                    crate::adapters::restore_local_environments(
                        &config,
                        &pool,
                        Arc::clone(engine),
                        Arc::clone(&proxy),
                        http.clone(),
                    )
                    .await;
                    crate::adapters::restore_previews(
                        &config,
                        &pool,
                        Arc::clone(engine),
                        Arc::clone(&proxy),
                        http.clone(),
                    )
                    .await;
                }
                (Ok(()), None) => {}
            }
        }
        let worker = Worker {
            pool: pool.clone(),
            config: Arc::clone(&config),
            job_queued: Arc::clone(&job_queued),
            cancellations: Arc::clone(&cancellations),
            metrics: Arc::clone(&metrics),
            pipeline: PipelineContext {
                pool: pool.clone(),
                work_root,
                checkout_timeout: Duration::from_secs(600),
                push_timeout: Duration::from_secs(1800),
                engine,
                untrusted_engine,
                connector,
                clock: Arc::clone(&clock),
                http,
                probe_image: config.engine.probe_image.clone(),
                terraform_bin: config.terraform_bin.clone(),
                terraform_locks: Arc::default(),
                approval_timeout: Duration::from_secs(24 * 3600),
                owner: owner.clone(),
                log_events: log_events.clone(),
                metrics: Arc::clone(&metrics),
            },
            mask,
            log_events: log_events.clone(),
            runnable_projects: config.runnable_projects().map(Arc::from),
            engine_health: Arc::default(),
            owner,
        };
        let state = AppState {
            config: Arc::clone(&config),
            pool: pool.clone(),
            ingest,
            signature_keys: Arc::new(signature_keys),
            secret_tokens: Arc::new(secret_tokens),
            metrics,
            log_events: log_events.clone(),
            login_limiter: Arc::default(),
            clock: Arc::clone(&clock),
            operations: Operations::new(
                Arc::clone(&config),
                pool.clone(),
                Arc::clone(&forges),
                cancellations,
                Arc::clone(&job_queued),
                log_events,
                Arc::clone(&clock),
            ),
        };
        Ok(Self {
            listener,
            state,
            worker,
            proxy,
            forges,
            job_queued,
            clock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener always has a local address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn pool(&self) -> &Store {
        &self.state.pool
    }

    /// Serves HTTP and runs the workers until `shutdown` resolves; then stops accepting,
    /// finishes in-flight requests, and lets running jobs end (bounded).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stop_workers = CancellationToken::new();
        let mask = self.worker.mask.clone();
        let preview_keeper = crate::operations::previews::PreviewKeeper {
            pool: self.state.pool.clone(),
            config: Arc::clone(&self.state.config),
            engine: self.worker.pipeline.engine.clone(),
            connector: Arc::clone(&self.worker.pipeline.connector),
            forges: Arc::clone(&self.forges),
            clock: Arc::clone(&self.clock),
            wake: self.state.operations.previews_changed(),
            mask: self.worker.mask.clone(),
        };
        let mut workers = self.worker.spawn_pool(stop_workers.clone());
        let pool = self.state.pool.clone();
        let checkpoints = tokio::spawn(checkpoint_periodically(pool.clone()));
        let routes = tokio::spawn(crate::adapters::keep_routes(
            Arc::clone(&self.state.config),
            pool.clone(),
            Arc::clone(&self.proxy),
            stop_workers.clone(),
        ));
        let previews = tokio::spawn(preview_keeper.run(stop_workers.clone()));
        let reporter = tokio::spawn(
            crate::forge::reporter::Reporter::new(
                pool.clone(),
                Arc::clone(&self.state.config),
                Arc::clone(&self.state.metrics),
                self.state.log_events.clone(),
                Arc::clone(&self.forges),
                mask,
                Arc::clone(&self.clock),
            )
            .run(stop_workers.clone()),
        );
        let reconciler = tokio::spawn(
            crate::forge::reconcile::Reconciler {
                pool: pool.clone(),
                config: Arc::clone(&self.state.config),
                metrics: Arc::clone(&self.state.metrics),
                job_queued: Arc::clone(&self.job_queued),
                forges: Arc::clone(&self.forges),
                clock: Arc::clone(&self.clock),
            }
            .run(stop_workers.clone()),
        );
        let log_events = self.state.log_events.clone();
        let wake_ups = tokio::spawn(store::notify::listen(
            pool.clone(),
            Arc::clone(&self.job_queued),
            move |job| log_events.stored(job),
            stop_workers.clone(),
        ));
        let retention = tokio::spawn(prune_history(
            self.state.pool.clone(),
            Arc::clone(&self.clock),
            self.state.config.server.delivery_body_retention,
            self.state.config.server.job_retention,
            stop_workers.clone(),
        ));

        let router = crate::web::router(self.state);
        let served = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        tracing::info!("stopped accepting requests; waiting for running jobs");
        stop_workers.cancel();
        retention.abort();
        checkpoints.abort();
        routes.abort();
        previews.abort();
        reconciler.abort();
        wake_ups.abort();
        // The reporter gets a moment to tell GitHub how the last jobs ended.
        let _ = tokio::time::timeout(Duration::from_secs(5), reporter).await;
        if let Err(error) = store::checkpoint(&pool).await {
            // The WAL is checkpointed again when the database is next opened.
            tracing::warn!(%error, "final WAL checkpoint failed");
        }
        let drained = tokio::time::timeout(JOB_SHUTDOWN_GRACE, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "jobs still running after {JOB_SHUTDOWN_GRACE:?}; their leases will expire and a restart resumes them"
            );
            workers.abort_all();
        }
        served.context("serving HTTP")
    }
}

/// The Docker engine, if one answers; and what an earlier run left in it is cleaned up.
/// A runner whose projects need no engine still starts without one.
async fn connect_engine(config: &Config, instance: String) -> Option<DockerEngine> {
    let needs_engine = config
        .projects
        .iter()
        .any(|p| p.build.is_some() || p.environments.iter().any(|e| e.target.is_some()));
    match DockerEngine::connect(&config.engine.host, instance).await {
        Ok(engine) => {
            if let Err(reason) = engine.buildkit_support() {
                tracing::warn!(%reason, "the engine cannot build with BuildKit; builds use its legacy builder");
            }
            if let Err(error) = engine.reap_leftovers().await {
                tracing::warn!(%error, "cannot remove containers left by an earlier run");
            }
            Some(engine)
        }
        Err(error) if needs_engine => {
            tracing::error!(%error, "no Docker engine: build and rollout steps will fail until it is reachable and the runner restarts");
            None
        }
        Err(_) => None,
    }
}

/// Says at start which projects' jobs would fail for settings they lack, where the first
/// push would otherwise be the first to tell.
/// A forge server reached over plain HTTP beyond this machine sees its token go over the
/// network unencrypted.
fn warn_of_tokens_sent_in_clear(config: &Config) {
    for forge in config.forges.values().filter(|f| f.token.is_some()) {
        let Some(rest) = forge.url.strip_prefix("http://") else {
            continue;
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let loopback = ["localhost", "127.", "[::1]"].iter().any(|l| authority.starts_with(l));
        if !loopback {
            tracing::warn!(forge = %forge.name, url = %forge.url, "the server's token goes over plain HTTP: use https://");
        }
    }
}

fn warn_of_jobs_that_cannot_run(config: &Config) {
    for project in &config.projects {
        let verifies = project.pull_requests != crate::config::PullRequestPolicy::Off;
        for environment in &project.environments {
            let kinds = [
                (JobKind::Deploy, Trigger::Push),
                (JobKind::Verify, Trigger::PullRequest),
            ];
            for (kind, trigger) in kinds {
                if kind == JobKind::Verify && !verifies {
                    continue;
                }
                if let Err(missing) = JobPlan::new(project, environment, kind, trigger) {
                    tracing::warn!(
                        project = %project.name,
                        environment = %environment.name,
                        "{missing}; until then its {kind} jobs fail"
                    );
                }
            }
        }
    }
}

/// Warns when a container on `engine` reaches the cloud metadata address (on EC2 with
/// IMDSv1, the instance role's credentials). In the background, with a short timeout:
/// start-up neither waits for it nor fails by it.
fn check_metadata_address(config: &Config, engine: &DockerEngine, which: &'static str) {
    let engine = engine.clone();
    let (image, address) = (
        config.engine.probe_image.clone(),
        config.engine.metadata_address.clone(),
    );
    tokio::spawn(async move {
        let checked = tokio::time::timeout(Duration::from_secs(20), engine.reaches(&image, &address)).await;
        match checked {
            Ok(Ok(Some(true))) => tracing::warn!(
                %address,
                "a container on {which} reaches the cloud metadata address: block it for containers (README: engines and networks, the DOCKER-USER rule)"
            ),
            Ok(Ok(Some(false))) => tracing::debug!(%address, "containers on {which} do not reach the metadata address"),
            Ok(Ok(None)) => tracing::info!(
                %image,
                "not checked whether containers reach the cloud metadata address: the image for the check ([engine] probe_image) is not on {which}"
            ),
            Ok(Err(error)) => {
                tracing::info!(%error, "cannot check whether containers reach the cloud metadata address")
            }
            Err(_) => tracing::info!("the check whether containers reach the cloud metadata address took too long"),
        }
    });
}

fn has_local_environments(config: &Config) -> bool {
    config
        .projects
        .iter()
        .flat_map(|p| &p.environments)
        .any(|e| matches!(e.target, Some(crate::config::Target::Local(_))))
        || config.projects.iter().any(|p| p.previews.is_some())
}

/// A runner is known to the engine by `identity` (`ServerConfig::identity_path`):
/// restarts keep the identity, two runners never reap each other's containers.
pub fn instance_id(identity: &std::path::Path) -> String {
    use sha2::Digest;
    let stable = std::fs::canonicalize(identity).unwrap_or_else(|_| identity.to_path_buf());
    let digest = sha2::Sha256::digest(stable.to_string_lossy().as_bytes());
    hex::encode(&digest[..6])
}

/// Whatever a previous run left behind (a crash mid-checkout) is removed before any job runs.
async fn reap_work_root(root: &PathBuf, terraform_bin: Option<&std::path::Path>) -> anyhow::Result<()> {
    if tokio::fs::try_exists(root).await.unwrap_or(false) {
        let mut entries = tokio::fs::read_dir(root).await?;
        while let Some(entry) = entries.next_entry().await? {
            let pid_file = entry.path().join(crate::adapters::terraform::PID_FILE);
            if let Some(bin) = terraform_bin
                && let Some(pid) =
                    crate::adapters::terraform::stop_orphan(&pid_file, bin, crate::adapters::terraform::INTERRUPT_GRACE)
                        .await
            {
                tracing::warn!(pid, "interrupted a terraform command an earlier run left running");
            }
            tracing::info!(path = %entry.path().display(), "removing a work directory left by an earlier run");
            tokio::fs::remove_dir_all(entry.path())
                .await
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    crate::secrets::create_private_dir(root).with_context(|| format!("creating the work directory {}", root.display()))
}

async fn checkpoint_periodically(pool: Store) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Err(error) = store::checkpoint(&pool).await {
            tracing::warn!(%error, "WAL checkpoint failed");
        }
    }
}

/// Hourly: delivery bodies past their retention, and finished jobs past theirs.
async fn prune_history(
    pool: Store,
    clock: Arc<dyn Clock>,
    bodies: Duration,
    jobs: Option<Duration>,
    stop: CancellationToken,
) {
    loop {
        let cutoff = clock.now_ms() - store::duration_ms(bodies);
        match deliveries::prune_bodies(&pool, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(bodies = n, "dropped delivery bodies past their retention"),
            Err(error) => tracing::warn!(%error, "cannot prune delivery bodies"),
        }
        if let Some(jobs) = jobs {
            match store::jobs::prune_finished(&pool, clock.now_ms() - store::duration_ms(jobs)).await {
                Ok(pruned) if pruned == store::jobs::Pruned::default() => {}
                Ok(pruned) => tracing::info!(
                    jobs = pruned.jobs,
                    log_lines = pruned.log_lines,
                    "removed finished jobs past their retention"
                ),
                Err(error) => tracing::warn!(%error, "cannot prune finished jobs"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("stop signal received");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Project;
    use crate::pipeline::tests::{FakeConnector, FakeEngine, FakeProxy, free_port, sha};

    /// Every project's forge is absent: nothing is reported.
    struct NoForges;

    #[async_trait::async_trait]
    impl Forges for NoForges {
        async fn connect(
            &self,
            _project: &Project,
        ) -> Option<Result<Arc<dyn crate::adapters::forge::Forge>, crate::adapters::forge::ForgeError>> {
            None
        }
    }

    /// The application on fake adapters, serving on a free port, with one project that
    /// deploys `main` to a local target; returns its address and how to stop it.
    async fn app_on_fakes(
        dir: &std::path::Path,
        engine: &Arc<FakeEngine>,
    ) -> (String, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
        app_on_fakes_with(dir, engine, REGISTRY).await
    }

    const REGISTRY: &str = "[projects.registry]\nkind = \"v2\"\nurl = \"registry.test\"\n";

    /// As [`app_on_fakes`], with `registry` as the project's registry section (or none).
    async fn app_on_fakes_with(
        dir: &std::path::Path,
        engine: &Arc<FakeEngine>,
        registry: &str,
    ) -> (String, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
database_url = "sqlite://{db}"
work_dir = "{work}"
[dashboard]
read_access = "public"
[[projects]]
name = "app"
repository = "Codertocat/Hello-World"
deploy_branches = ["main"]
webhook_secret_env = "S"
[projects.build]
image = "app"
[projects.smoke]
container_port = 8000
path = "/health"
{registry}
[projects.rollout]
target = "local"
host_port = {host}
slot_ports = [{a}, {b}]
timeout_secs = 4
"#,
            db = dir.join("runner.db").display(),
            work = dir.join("work").display(),
            host = free_port(),
            a = free_port(),
            b = free_port(),
        );
        let env = |name: &str| match name {
            "S" => Some("webhook-secret".to_owned()),
            "RUNNER_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
            _ => None,
        };
        let config = Config::parse(&toml, &dir.join("runner.toml"), &env).expect("a valid config");
        let adapters = Adapters {
            engine: Some(Arc::clone(engine) as Arc<dyn ContainerEngine>),
            untrusted_engine: None,
            proxy: Arc::new(FakeProxy),
            connector: Arc::new(FakeConnector {
                http: reqwest::Client::new(),
                ecs: Arc::default(),
                terraform: Arc::default(),
                checkout_delay: Duration::ZERO,
                checkout_failure: None,
            }),
            forges: Arc::new(NoForges),
            clock: Arc::new(SystemClock),
        };
        let app = Application::build_with(Arc::new(config), adapters)
            .await
            .expect("the application starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        let running = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
        (base, stop, running)
    }

    const ADMIN_TOKEN: &str = "admin-token-for-tests";

    /// Sends GitHub's push of `sha` to `main`, signed; returns the queued job's id.
    async fn push(base: &str, sha: &str) -> i64 {
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-webhooks/push.payload.json");
        let mut body: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).expect("the fixture")).expect("json");
        body["ref"] = "refs/heads/main".into();
        body["after"] = sha.into();
        body["deleted"] = false.into();
        let body = body.to_string();
        let signature = crate::webhook::signature::SignatureKey::new(b"webhook-secret").sign(body.as_bytes());
        let response = reqwest::Client::new()
            .post(format!("{base}/webhooks/github"))
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", format!("delivery-{sha}"))
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("the webhook answers");
        let status = response.status();
        let queued: serde_json::Value = response.json().await.expect("json");
        assert_eq!(status, 202, "{queued}");
        queued["job_id"].as_i64().expect("a job id")
    }

    async fn job(base: &str, id: i64) -> serde_json::Value {
        reqwest::get(format!("{base}/api/jobs/{id}"))
            .await
            .expect("the API answers")
            .json()
            .await
            .expect("json")
    }

    /// The job once it left `queued` and `running` (fakes take milliseconds).
    async fn ended(base: &str, id: i64) -> serde_json::Value {
        for _ in 0..200 {
            let job = job(base, id).await;
            if !matches!(job["state"].as_str(), Some("queued" | "running")) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} did not end");
    }

    #[tokio::test]
    async fn the_application_on_fake_adapters_takes_a_signed_push_and_puts_it_live_without_docker() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let engine = Arc::new(FakeEngine::default());
        let (base, stop, running) = app_on_fakes(dir.path(), &engine).await;
        let id = push(&base, &sha(7)).await;
        let job = ended(&base, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["sha"], sha(7));
        // The fakes did the work: one live container of that commit.
        let containers = engine.containers();
        assert_eq!(containers.len(), 1, "{containers:?}");
        let (name, image, serving) = &containers[0];
        assert!(name.starts_with("runner-app-production"), "{name}");
        assert!(image.contains(&sha(7)) && *serving, "{containers:?}");
        stop.cancel();
        running.await.expect("joined").expect("stopped cleanly");
    }

    #[tokio::test]
    async fn workers_claim_nothing_while_the_engine_is_away_and_run_the_job_once_it_is_back() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let engine = Arc::new(FakeEngine::default());
        engine.away.store(true, std::sync::atomic::Ordering::SeqCst);
        let (base, stop, running) = app_on_fakes(dir.path(), &engine).await;
        let id = push(&base, &sha(8)).await;
        // Longer than a worker's engine recheck and idle poll: still waiting, not failed.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let waiting = job(&base, id).await;
        assert_eq!(waiting["state"], "queued", "{waiting}");
        assert_eq!(waiting["attempts"], 0, "{waiting}");
        engine.away.store(false, std::sync::atomic::Ordering::SeqCst);
        let job = ended(&base, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        stop.cancel();
        running.await.expect("joined").expect("stopped cleanly");
    }

    #[tokio::test]
    async fn an_operator_deploy_of_a_project_that_cannot_deploy_is_refused_naming_the_setting_and_queues_nothing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let engine = Arc::new(FakeEngine::default());
        let (base, stop, running) = app_on_fakes_with(dir.path(), &engine, "").await;
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{base}/api/projects/app/deploy"))
            .bearer_auth(ADMIN_TOKEN)
            .body(serde_json::json!({ "sha": sha(9) }).to_string())
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), 409);
        let error: serde_json::Value = response.json().await.expect("json");
        let message = error["error"].as_str().expect("an error message");
        assert!(
            message.contains("project app cannot deploy yet") && message.contains("[projects.registry]"),
            "{message}"
        );
        let jobs: serde_json::Value = reqwest::get(format!("{base}/api/jobs"))
            .await
            .expect("the API answers")
            .json()
            .await
            .expect("json");
        assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
        stop.cancel();
        running.await.expect("joined").expect("stopped cleanly");
    }
}
