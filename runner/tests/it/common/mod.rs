//! Starts the real runner on port 0 with a fresh database, and speaks GitHub's webhook
//! protocol to it.
#![allow(dead_code)]

pub mod caddy;
pub mod config;
pub mod database;
pub mod fake_forges;
pub mod fake_github;
pub mod fakes;
pub mod process;

pub use config::{default_config, pipeline_config, publicly_readable, to_toml};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner::webhook::signature::SignatureKey;
use runner::{Application, Config};
use tokio::sync::oneshot;

pub const SECRET: &str = "test-webhook-secret-0123456789";
pub const OTHER_SECRET: &str = "another-projects-secret-987654";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
pub const REPOSITORY: &str = "Codertocat/Hello-World";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github-webhooks")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// A branch push to `refs/heads/master` of Codertocat/Hello-World (a real GitHub body).
pub fn push_body(git_ref: &str, after: &str) -> Vec<u8> {
    let mut push = fixture_json("push.with-no-username-committer.payload.json");
    push["ref"] = git_ref.into();
    push["after"] = after.into();
    serde_json::to_vec(&push).expect("serialise")
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    SignatureKey::new(secret.as_bytes()).sign(body)
}

/// Serves `app` on a free port of 127.0.0.1 until the test ends; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

pub fn unique_delivery_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestRunner {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub pool: runner::store::Store,
}

pub fn test_env(name: &str) -> Option<String> {
    match name {
        "HELLO_SECRET" => Some(SECRET.to_owned()),
        "OTHER_SECRET" => Some(OTHER_SECRET.to_owned()),
        "RUNNER_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        // Where the machine's terraform is (scripts/services.sh), as the runner would see it.
        "TERRAFORM_BIN" | "PATH" => std::env::var(name).ok(),
        _ => None,
    }
}

impl TestRunner {
    /// The default config's runner, on no outside system (see [`Self::start_on_fakes`]):
    /// its jobs fail at the checkout, before any engine, registry or proxy would be asked.
    pub async fn start() -> Self {
        Self::start_on_fakes(default_config).await
    }

    /// A runner that reaches no outside system: an engine that runs nothing (a job that
    /// gets as far as a build fails saying so), a proxy that takes every route and serves
    /// nothing, GitHub where the config points it (at a local stand-in). For what is tested through HTTP, the
    /// queue and the reporter.
    pub async fn start_on_fakes(make_config: impl FnOnce(&Path) -> config::Config) -> Self {
        Self::start_on_fakes_with_env(make_config, test_env).await
    }

    /// As [`Self::start_on_fakes`], with environment variables from `env`.
    pub async fn start_on_fakes_with_env(
        make_config: impl FnOnce(&Path) -> config::Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        Self::start_app(make_config, env, |config| async move {
            let proxy: Arc<dyn runner::proxy::Proxy> = Arc::new(fakes::NoProxy);
            let adapters = runner::startup::Adapters {
                engine: Some(Arc::new(fakes::IdleEngine)),
                untrusted_engine: None,
                connector: Arc::new(runner::adapters::connect::Connections::new(
                    reqwest::Client::new(),
                    Arc::clone(&proxy),
                    config.proxy.health_interval,
                )),
                proxy,
                forges: Arc::new(runner::adapters::forge::ConfiguredForges::new(Arc::clone(&config))),
                clock: Arc::new(runner::clock::SystemClock),
            };
            Application::build_with(config, adapters).await
        })
        .await
    }

    pub async fn start_with(make_config: impl FnOnce(&Path) -> config::Config) -> Self {
        Self::start_with_env(make_config, test_env).await
    }

    /// With environment variables from `env` (secrets the config names).
    pub async fn start_with_env(
        make_config: impl FnOnce(&Path) -> config::Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        Self::start_app(make_config, env, |config| async move {
            Application::build(Arc::unwrap_or_clone(config)).await
        })
        .await
    }

    async fn start_app<F: std::future::Future<Output = anyhow::Result<Application>>>(
        make_config: impl FnOnce(&Path) -> config::Config,
        env: impl Fn(&str) -> Option<String>,
        build: impl FnOnce(Arc<Config>) -> F,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path: PathBuf = dir.path().join("runner.toml");
        std::fs::write(&config_path, to_toml(&publicly_readable(make_config(dir.path())))).expect("write config");
        let config = Config::load_with(Some(&config_path), &env).expect("valid test config");
        let database_url = config.server.database_url.clone();
        let app = build(Arc::new(config)).await.expect("runner starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let pool = app.pool().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self {
            base,
            dir,
            database_url,
            client,
            stop: Some(stop),
            server: Some(server),
            pool,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a delivery as GitHub does, signed with `secret` (None: no signature header).
    pub async fn deliver_signed(
        &self,
        event: &str,
        body: &[u8],
        secret: Option<&str>,
        delivery_id: &str,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery_id)
            .header("user-agent", "GitHub-Hookshot/test");
        if let Some(secret) = secret {
            request = request.header("x-hub-signature-256", sign(secret, body));
        }
        request.body(body.to_vec()).send().await.expect("POST /webhooks/github")
    }

    pub async fn deliver(&self, event: &str, body: &[u8]) -> reqwest::Response {
        self.deliver_signed(event, body, Some(SECRET), &unique_delivery_id())
            .await
    }

    /// `GET /api/deliveries/{id}/body` as the admin.
    pub async fn delivery_body(&self, delivery_id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/deliveries/{delivery_id}/body")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET delivery body")
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(self.pool.db())
            .await
            .expect("count")
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json")
    }

    /// The body of `GET path` as text, whatever the status.
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("text")
    }

    /// A job's log as plain text.
    pub async fn job_log(&self, job_id: impl std::fmt::Display) -> String {
        self.get_text(&format!("/api/jobs/{job_id}/logs")).await
    }

    /// Waits until the job leaves `queued`/`running` and returns it.
    pub async fn wait_for_job_end(&self, job_id: i64) -> serde_json::Value {
        for _ in 0..300 {
            let job = self.get_json(&format!("/api/jobs/{job_id}")).await;
            if !matches!(job["state"].as_str(), Some("queued" | "running")) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {job_id} did not finish");
    }

    /// The job once it ended, waited for up to 180 s (builds and steps on the real engine
    /// take seconds each), and its log.
    pub async fn job_when_ended(&self, job_id: i64) -> (serde_json::Value, String) {
        for _ in 0..1800 {
            let job = self.get_json(&format!("/api/jobs/{job_id}")).await;
            if !matches!(job["state"].as_str(), Some("queued" | "running")) {
                return (job, self.job_log(job_id).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {job_id} did not end in 180 s");
    }

    /// Delivers a push of `sha` to `refs/heads/master`, which must queue a job; its id.
    pub async fn push_queued(&self, sha: &str) -> i64 {
        let response = self.deliver("push", &push_body("refs/heads/master", sha)).await;
        assert_eq!(response.status(), 202);
        response.json::<serde_json::Value>().await.expect("json")["job_id"]
            .as_i64()
            .expect("id")
    }

    /// Delivers the opening of a pull request from the repository itself whose head is
    /// `sha`, which must queue its verify job; the job's id.
    pub async fn pull_request_queued(&self, sha: &str) -> i64 {
        let mut body = fixture_json("pull_request.opened.payload.json");
        body["pull_request"]["head"]["sha"] = sha.into();
        let response = self
            .deliver("pull_request", &serde_json::to_vec(&body).expect("json"))
            .await;
        assert_eq!(response.status(), 202);
        response.json::<serde_json::Value>().await.expect("json")["job_id"]
            .as_i64()
            .expect("id")
    }

    /// Drops the runner without waiting for running jobs (their leases simply lapse).
    pub async fn stop_quickly(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(Duration::from_secs(40), server).await;
            result.expect("runner stops").expect("join").expect("clean stop");
        }
    }
}

/// A TCP server that accepts connections and never answers: a git remote that hangs.
pub fn hanging_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://{addr}/hangs.git")
}

/// A loopback port that is free now and that this test process has not handed out before:
/// the kernel may offer a port again once its probe socket closes, and two roles of one
/// config (a proxy port and a slot port) must never share one. It lies below the kernel's
/// ephemeral range, so no outgoing connection and no port the engine publishes at random
/// takes it between now and its use.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    static STATE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001) - 1);
    let seed = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let _ = STATE.compare_exchange(
        0,
        seed | 1,
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
    loop {
        // xorshift: spread over the range, different in each test process.
        let mut x = STATE.load(std::sync::atomic::Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        STATE.store(x, std::sync::atomic::Ordering::Relaxed);
        let port = low + (x % u64::from(high - low + 1)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// The Dockerfile of the test repositories: the static webapp binary in an empty image.
pub const WEBAPP_DOCKERFILE: &str = "FROM scratch\nARG APP_COMMIT=unknown\nCOPY webapp /webapp\nENV PORT=5001 APP_COMMIT=${APP_COMMIT}\nEXPOSE 5001\nENTRYPOINT [\"/webapp\"]\n";

pub fn required_env(name: &str, how: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {how} (scripts/test does this)"))
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git is installed");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A git repository holding the webapp's scratch build context; returns the commit.
pub fn webapp_repo(repo: &Path, dockerfile: &str) -> String {
    let webapp_bin = PathBuf::from(required_env(
        "WEBAPP_STATIC_BIN",
        "build it with scripts/build-webapp-static",
    ));
    std::fs::create_dir_all(repo).expect("mkdir");
    git(repo, &["init", "--quiet", "--initial-branch=master"]);
    std::fs::copy(&webapp_bin, repo.join("webapp")).unwrap_or_else(|e| panic!("copy {}: {e}", webapp_bin.display()));
    std::fs::write(repo.join("Dockerfile"), dockerfile).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "-m", "webapp"]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Names of containers the runner labelled for job `job_id` of `project` (any state).
/// Every test's database numbers its jobs from 1, so the project tells tests apart.
pub fn containers_of_job(project: &str, job_id: i64) -> Vec<String> {
    let output = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=io.runner.job={job_id}"),
            "--filter",
            &format!("name=runner-{project}-"),
        ])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The program's path on `PATH`, if it is installed.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// The base image with a shell that test Dockerfiles build on (scripts/services.sh start
/// imports it from Debian's busybox-static).
pub fn busybox_image() {
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", "local/busybox:1"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present,
        "the image local/busybox:1 is missing: scripts/services.sh start makes it (needs apt-get install busybox-static)"
    );
}

/// An IPv4 address of the host's own, outside the engine's bridges: the host's services
/// as a container or a sandbox on another network would see them.
pub fn host_address() -> std::net::Ipv4Addr {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip (iproute2) runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let interface = *fields.get(1)?;
            let address = fields.get(3)?.split('/').next()?;
            (interface != "docker0" && !interface.starts_with("br-") && !interface.starts_with("runner-"))
                .then(|| address.parse().ok())
                .flatten()
        })
        .next()
        .expect("the host has an address of its own (not a bridge's)")
}

/// Records job `job_id` (ended) of project hello as its production deployment of `sha`,
/// live at `url`, as the pipeline would; returns the deployment's id.
pub async fn record_live(runner: &TestRunner, job_id: i64, sha: &str, url: &str) -> i64 {
    use runner::store::deployments::{self, NewDeployment};
    let deployment = deployments::start(
        &runner.pool,
        &NewDeployment {
            job_id,
            project: "hello",
            environment: "production",
            sha,
            image_ref: "127.0.0.1:5000/hello:abc",
            image_digest: Some("sha256:1111111111111111111111111111111111111111111111111111111111111111"),
            trigger: runner::job::Trigger::Push,
            url,
        },
        runner::store::now_ms(),
    )
    .await
    .expect("start deployment");
    deployments::finish(
        &runner.pool,
        deployment.id,
        runner::job::DeploymentStatus::Live,
        None,
        runner::store::now_ms(),
    )
    .await
    .expect("finish deployment");
    deployment.id
}

/// Removes what the test made live in the engine, whatever the outcome.
pub struct EngineCleanup {
    pub container: String,
    /// Image references to remove, as `docker images --filter reference=` patterns.
    pub references: Vec<String>,
}

impl Drop for EngineCleanup {
    fn drop(&mut self) {
        // The environment's container, in whichever slot it is.
        let (a, b) = (format!("{}-a", self.container), format!("{}-b", self.container));
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.container, &a, &b])
            .output();
        // The environment's own network bears the containers' common name.
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.container])
            .output();
        for reference in &self.references {
            let listed = std::process::Command::new("docker")
                .args([
                    "images",
                    "--format",
                    "{{.ID}}",
                    "--filter",
                    &format!("reference={reference}"),
                ])
                .output();
            if let Ok(listed) = listed {
                for image in String::from_utf8_lossy(&listed.stdout).lines() {
                    let _ = std::process::Command::new("docker").args(["rmi", "-f", image]).output();
                }
            }
        }
    }
}

/// The body `url` answers with a 2xx, once it does (each try bounded to 3 s).
pub async fn eventually_answers(what: &str, url: &str) -> String {
    eventually(what, || {
        std::process::Command::new("curl")
            .args(["-fsS", "-m", "3", url])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .await
}

/// Polls `check` every 100 ms for up to 30 s until it gives a value.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(value) = check() {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}

/// A runner of `project` building `repo` through every step ([`pipeline_config`], its
/// registry `RUNNER_TEST_REGISTRY`), with the build secret `DEPLOY_TOKEN` of value `token`,
/// after `edit` changed its config.
pub async fn start_with_deploy_token(
    token: &'static str,
    project: &str,
    repo: &Path,
    image: &str,
    edit: impl FnOnce(&mut config::Config) + Send + 'static,
) -> TestRunner {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let (project, repo, image) = (project.to_owned(), repo.to_owned(), image.to_owned());
    TestRunner::start_with_env(
        move |dir| {
            let mut config = pipeline_config(dir, &project, &repo, &image, &registry, free_port(), 30);
            let build = config.projects[0].build.as_mut().expect("a build");
            build.secrets =
                std::collections::BTreeMap::from([("DEPLOY_TOKEN".to_owned(), "TEST_DEPLOY_TOKEN".to_owned())]);
            edit(&mut config);
            config
        },
        move |name| match name {
            "TEST_DEPLOY_TOKEN" => Some(token.to_owned()),
            other => test_env(other),
        },
    )
    .await
}
