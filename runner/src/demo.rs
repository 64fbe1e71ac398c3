//! `runner demo`: the whole loop on one machine. A git repository holding the webapp, a
//! local registry, the runner on SQLite, one signed push, and the job followed step by
//! step (the repository's own test step among them) until the app answers. State lives in one directory, so a second run deploys a
//! second commit and `--clean` removes everything the demo made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::Docker;
use serde_json::Value;

use crate::config::Config;
use crate::startup::Application;
use crate::webhook::signature::SignatureKey;

const PROJECT: &str = "demo";
const REPOSITORY: &str = "demo/webapp";
const IMAGE: &str = "runner-demo";
const PUSH_TEMPLATE: &str =
    include_str!("../tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json");
/// The app's image, and a `test` stage with a shell (busybox) for the repository's step.
const DOCKERFILE: &str = "\
FROM scratch AS test
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
COPY webapp /webapp

FROM scratch
ARG APP_COMMIT=unknown
COPY webapp /webapp
ENV PORT=5001 APP_COMMIT=${APP_COMMIT}
USER 10001:10001
EXPOSE 5001
ENTRYPOINT [\"/webapp\"]
";
/// The repository's own check, run after the build and before anything is deployed.
const RUNNER_YML: &str = "\
steps:
  - name: test
    image: target:test
    timeout: 2m
    commands:
      - /webapp --version
      - PORT=5999 /webapp serve > /checkout/app.log 2>&1 &
      - for i in $(seq 50); do PORT=5999 /webapp healthcheck && exit 0; sleep 0.1; done; cat /checkout/app.log; exit 1
";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its repository, database and registry data.
    #[arg(long, default_value = ".runner-demo")]
    pub dir: PathBuf,
    /// Port of the runner (webhook, API, dashboard) on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Port the deployed app answers on, on 127.0.0.1.
    #[arg(long, default_value_t = 5050)]
    pub app_port: u16,
    /// A static build of the webapp (default: scripts/build-webapp-static builds one).
    #[arg(long, env = "WEBAPP_STATIC_BIN")]
    pub webapp_bin: Option<PathBuf>,
    /// A Docker Registry v2 to push to (default: one the demo starts on a free port).
    #[arg(long)]
    pub registry: Option<String>,
    /// Stop the runner once the app is live, instead of serving the dashboard until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Remove everything the demo created (containers, images, registry, directory).
    #[arg(long)]
    pub clean: bool,
}

/// What went wrong, said in one sentence with its fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Prerequisite(String);

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = absolute(&args.dir)?;
    if args.clean {
        return clean(&dir).await;
    }
    let docker = Docker::connect_with_local_defaults().map_err(|e| {
        Prerequisite(format!(
            "No Docker engine found ({e}): install and start Docker, then run `runner demo` again."
        ))
    })?;
    docker.ping().await.map_err(|e| {
        Prerequisite(format!(
            "No Docker engine answers ({e}): start Docker (or point DOCKER_HOST at one), then run `runner demo` again."
        ))
    })?;
    which("git")
        .ok_or_else(|| Prerequisite("git is not installed: install git, then run `runner demo` again.".into()))?;
    let busybox = which("busybox").filter(|path| is_static(path)).ok_or_else(|| {
        Prerequisite(
            "no static busybox (the demo's test step runs in a shell in an image with nothing else): apt-get install busybox-static, then run `runner demo` again.".into(),
        )
    })?;
    port_free(args.port, "--port")?;
    if !app_port_is_ours(&docker, args.app_port).await {
        port_free(args.app_port, "--app-port")?;
    }
    crate::secrets::create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let webapp = match &args.webapp_bin {
        Some(path) => path.clone(),
        None => build_webapp()?,
    };
    if !webapp.is_file() {
        bail!(Prerequisite(format!(
            "{} is not a file: build a static webapp with scripts/build-webapp-static, or pass --webapp-bin.",
            webapp.display()
        )));
    }
    let registry = match &args.registry {
        Some(registry) => registry.clone(),
        None => start_registry(&dir).await?,
    };
    let proxy = start_caddy(&dir).await?;
    let (sha, message) = commit_next_version(&dir.join("repo"), &webapp, &busybox)?;
    step(&format!(
        "commit {} \"{message}\" in {}",
        &sha[..7],
        dir.join("repo").display()
    ));

    let secret = hex::encode(random_bytes()?);
    let admin_token = read_or_create_token(&dir.join("admin-token"))?;
    let config_path = dir.join("runner.toml");
    std::fs::write(
        &config_path,
        demo_config(&dir, args.port, args.app_port, &registry, &proxy),
    )?;
    let env = |name: &str| match name {
        "DEMO_WEBHOOK_SECRET" => Some(secret.clone()),
        "RUNNER_ADMIN_TOKEN" => Some(admin_token.clone()),
        _ => None,
    };
    let config = Config::load_with(Some(&config_path), &env).context("the demo configuration")?;
    let app = Application::build(config).await.context("starting the runner")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    step(&format!(
        "runner listening on {base} (database {})",
        dir.join("data/runner.db").display()
    ));

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let job_id = send_push(&http, &base, &secret, &sha, &message).await?;
    step(&format!("signed push delivered: job {job_id}"));
    let outcome = follow(&http, &base, job_id).await;

    let result = match outcome {
        Ok(()) => {
            let app_url = format!("http://127.0.0.1:{}", args.app_port);
            let version: Value = http
                .get(format!("{app_url}/version"))
                .send()
                .await
                .context("the deployed app does not answer")?
                .json()
                .await?;
            if version["commit"] != sha.as_str() {
                bail!(
                    "the app answers, but with commit {} instead of {sha}",
                    version["commit"]
                );
            }
            println!();
            println!("Dashboard: {base}/");
            println!("App:       {app_url}/  (GET /version answers commit {sha})");
            println!(
                "Admin login token: in {} (for rollback, redeploy, cancel)",
                dir.join("admin-token").display()
            );
            println!("Run `runner demo` again to deploy another commit; `runner demo --clean` removes it all.");
            Ok(())
        }
        Err(error) => Err(error),
    };
    if result.is_ok() && !args.exit {
        println!("The runner keeps serving the dashboard: press Ctrl-C to stop it (the app keeps running).");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    let _ = server.await;
    result
}

fn step(text: &str) {
    println!("▸ {text}");
}

/// Whether `path` is an ELF executable that needs no dynamic loader (it runs in an image
/// that holds nothing else).
fn is_static(path: &Path) -> bool {
    let Ok(elf) = std::fs::read(path) else { return false };
    let (Some(b"\x7fELF"), Some(2), Some(1)) = (elf.get(..4), elf.get(4), elf.get(5)) else {
        // Only 64-bit little-endian executables are read; anything else is not static here.
        return false;
    };
    let read = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        Some(bytes.iter().rev().fold(0, |n, b| (n << 8) | u64::from(*b)))
    };
    let (Some(table), Some(entry), Some(count)) = (read(0x20, 8), read(0x36, 2), read(0x38, 2)) else {
        return false;
    };
    // No PT_INTERP (3) among the program headers: no loader is asked for.
    (0..count).all(|i| {
        usize::try_from(table + i * entry)
            .ok()
            .and_then(|at| read(at, 4))
            .is_some_and(|kind| kind != 3)
    })
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

fn port_free(port: u16, flag: &str) -> Result<(), Prerequisite> {
    std::net::TcpListener::bind(("127.0.0.1", port)).map(drop).map_err(|_| {
        Prerequisite(format!(
            "Port {port} is in use: stop what listens there, or choose another with {flag} <port>."
        ))
    })
}

/// A second run finds its own app on the app port; that is not a conflict.
async fn app_port_is_ours(docker: &Docker, port: u16) -> bool {
    let _ = port;
    for slot in 0..2 {
        let name = crate::adapters::slot_name(PROJECT, "production", slot);
        if docker.inspect_container(&name, None).await.is_ok() {
            return true;
        }
    }
    false
}

fn build_webapp() -> anyhow::Result<PathBuf> {
    let script = Path::new("scripts/build-webapp-static");
    if !script.is_file() {
        bail!(Prerequisite(
            "No webapp binary: run the demo from the repository root (it builds one with scripts/build-webapp-static), or pass --webapp-bin.".into()
        ));
    }
    step("building a static webapp (scripts/build-webapp-static)");
    let output = std::process::Command::new(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running scripts/build-webapp-static")?;
    if !output.status.success() {
        bail!("scripts/build-webapp-static failed");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Runner Demo")
        .env("GIT_AUTHOR_EMAIL", "demo@runner.invalid")
        .env("GIT_COMMITTER_NAME", "Runner Demo")
        .env("GIT_COMMITTER_EMAIL", "demo@runner.invalid")
        .output()
        .context("running git")?;
    if !output.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// First run: the webapp as a scratch build context, with a test step in `.runner.yml`.
/// Later runs: one more commit.
fn commit_next_version(repo: &Path, webapp: &Path, busybox: &Path) -> anyhow::Result<(String, String)> {
    let fresh = !repo.join(".git").exists();
    if fresh {
        std::fs::create_dir_all(repo)?;
        git(repo, &["init", "--quiet", "--initial-branch=main"])?;
    }
    // A repository made by an earlier version of the demo gets the test step too.
    if !repo.join(".runner.yml").exists() {
        std::fs::write(repo.join("Dockerfile"), DOCKERFILE)?;
        std::fs::write(repo.join(".runner.yml"), RUNNER_YML)?;
        std::fs::copy(busybox, repo.join("busybox")).with_context(|| format!("copying {}", busybox.display()))?;
    }
    std::fs::copy(webapp, repo.join("webapp")).with_context(|| format!("copying {}", webapp.display()))?;
    let runs = git(repo, &["rev-list", "--count", "--all"]).map_or(0, |n| n.parse::<u32>().unwrap_or(0));
    let message = if fresh {
        "Demo: first version of the webapp".to_owned()
    } else {
        format!("Demo: change number {}", runs + 1)
    };
    std::fs::write(
        repo.join("CHANGES"),
        format!("{message}\n{}\n", crate::telemetry::format_ms(crate::store::now_ms())),
    )?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "--quiet", "-m", &message])?;
    Ok((git(repo, &["rev-parse", "HEAD"])?, message))
}

fn random_bytes() -> anyhow::Result<[u8; 24]> {
    let mut bytes = [0_u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes)
}

fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(token) = std::fs::read_to_string(path)
        && token.trim().len() >= 16
    {
        return Ok(token.trim().to_owned());
    }
    let token = hex::encode(random_bytes()?);
    crate::secrets::write_private(path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// A registry for the demo's images: Debian's `docker-registry` on a free port, its data
/// in the demo directory. Its PID is kept so `--clean` can stop it.
async fn start_registry(dir: &Path) -> anyhow::Result<String> {
    let pid_file = dir.join("registry.pid");
    let port_file = dir.join("registry.port");
    if let (Ok(pid), Ok(port)) = (std::fs::read_to_string(&pid_file), std::fs::read_to_string(&port_file))
        && Path::new(&format!("/proc/{}", pid.trim())).exists()
        && registry_answers(port.trim()).await
    {
        return Ok(format!("127.0.0.1:{}", port.trim()));
    }
    let Some(binary) = which("docker-registry") else {
        bail!(Prerequisite(
            "No registry to push to: install Debian's docker-registry (apt-get install docker-registry), or pass --registry HOST:PORT of a running one.".into()
        ));
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = dir.join("registry");
    std::fs::create_dir_all(&data)?;
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        ),
    )?;
    let log = std::fs::File::create(dir.join("registry.log"))?;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(binary)
        // Its own process group: Ctrl-C on the demo leaves the registry (and its images) up.
        .process_group(0)
        .arg("serve")
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting docker-registry")?;
    std::fs::write(&pid_file, child.id().to_string())?;
    std::fs::write(&port_file, port.to_string())?;
    for _ in 0..100 {
        if registry_answers(&port.to_string()).await {
            step(&format!("registry on 127.0.0.1:{port} (data in {})", data.display()));
            return Ok(format!("127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the registry did not start; see {}", dir.join("registry.log").display())
}

async fn registry_answers(port: &str) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/v2/"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The proxy in front of the demo's app: Debian's `caddy`, its admin API on a free port,
/// kept running between runs like the registry (`--clean` stops it).
async fn start_caddy(dir: &Path) -> anyhow::Result<String> {
    let (pid_file, port_file) = (dir.join("caddy.pid"), dir.join("caddy.port"));
    if let (Ok(pid), Ok(port)) = (std::fs::read_to_string(&pid_file), std::fs::read_to_string(&port_file))
        && Path::new(&format!("/proc/{}", pid.trim())).exists()
        && reqwest::get(format!("http://127.0.0.1:{}/config/", port.trim()))
            .await
            .is_ok()
    {
        return Ok(format!("http://127.0.0.1:{}", port.trim()));
    }
    let Some(binary) = which("caddy") else {
        bail!(Prerequisite(
            "No proxy for the app: install Debian's caddy (apt-get install caddy), then run `runner demo` again."
                .into()
        ));
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.join("caddy.json");
    std::fs::write(&config, format!(r#"{{"admin":{{"listen":"127.0.0.1:{port}"}}}}"#))?;
    let log = std::fs::File::create(dir.join("caddy.log"))?;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(binary)
        .process_group(0)
        .args(["run", "--config"])
        .arg(&config)
        .env("XDG_DATA_HOME", dir.join("caddy-data"))
        .env("XDG_CONFIG_HOME", dir.join("caddy-config"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting caddy")?;
    std::fs::write(&pid_file, child.id().to_string())?;
    std::fs::write(&port_file, port.to_string())?;
    for _ in 0..100 {
        if reqwest::get(format!("http://127.0.0.1:{port}/config/")).await.is_ok() {
            step(&format!("proxy (Caddy) with its admin API on 127.0.0.1:{port}"));
            return Ok(format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("Caddy did not start; see {}", dir.join("caddy.log").display())
}

fn demo_config(dir: &Path, port: u16, app_port: u16, registry: &str, proxy: &str) -> String {
    format!(
        r#"# Written by `runner demo`; rewritten on each run.
[server]
listen = "127.0.0.1:{port}"
database_url = "sqlite://{db}"

[dashboard]
read_access = "public"

[proxy]
admin_url = "{proxy}"

[[projects]]
name = "{PROJECT}"
repository = "{REPOSITORY}"
deploy_branches = ["main"]
webhook_secret_env = "DEMO_WEBHOOK_SECRET"
clone_url = "{repo}"

[projects.build]
image = "{IMAGE}"
build_args = {{ APP_COMMIT = "{{{{sha}}}}" }}

[projects.smoke]
container_port = 5001
path = "/health"
expect_body = "healthy"

[projects.registry]
url = "{registry}"

[projects.rollout]
target = "local"
host_port = {app_port}
slot_ports = [{slot_a}, {slot_b}]
"#,
        slot_a = app_port.wrapping_add(1000),
        slot_b = app_port.wrapping_add(1001),
        db = dir.join("data/runner.db").display(),
        repo = dir.join("repo").display(),
    )
}

async fn send_push(http: &reqwest::Client, base: &str, secret: &str, sha: &str, message: &str) -> anyhow::Result<i64> {
    let mut push: Value = serde_json::from_str(PUSH_TEMPLATE)?;
    push["ref"] = "refs/heads/main".into();
    push["after"] = sha.into();
    push["repository"]["full_name"] = REPOSITORY.into();
    push["repository"]["name"] = "webapp".into();
    push["head_commit"]["id"] = sha.into();
    push["head_commit"]["message"] = message.into();
    push["head_commit"]["author"] = serde_json::json!({ "name": "Runner Demo", "email": "demo@runner.invalid" });
    push["head_commit"]["timestamp"] = Value::Null;
    let body = serde_json::to_vec(&push)?;
    let response = http
        .post(format!("{base}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header(
            "x-github-delivery",
            format!("demo-{}", hex::encode(&random_bytes()?[..8])),
        )
        .header("x-hub-signature-256", SignatureKey::new(secret.as_bytes()).sign(&body))
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    answer["job_id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("the runner answered {status}: {answer}"))
}

/// Prints each step as it starts and ends, until the job is over.
async fn follow(http: &reqwest::Client, base: &str, job_id: i64) -> anyhow::Result<()> {
    let mut shown: HashMap<String, String> = HashMap::new();
    loop {
        let job: Value = http
            .get(format!("{base}/api/jobs/{job_id}"))
            .send()
            .await?
            .json()
            .await?;
        for step in job["steps"].as_array().into_iter().flatten() {
            let name = step["name"].as_str().unwrap_or("?").to_owned();
            let state = step["state"].as_str().unwrap_or("?").to_owned();
            if shown.get(&name) == Some(&state) || state == "pending" {
                continue;
            }
            let took = match (step["started_at"].as_i64(), step["finished_at"].as_i64()) {
                (Some(start), Some(end)) => format!("{:>6.1}s", (end - start) as f64 / 1000.0),
                _ => String::new(),
            };
            let mark = match state.as_str() {
                "running" => "…",
                "succeeded" => "✓",
                "skipped" => "-",
                _ => "✗",
            };
            let error = step["error"].as_str().map(|e| format!("  {e}")).unwrap_or_default();
            println!("  {mark} {name:<10} {state:<10}{took}{error}");
            shown.insert(name, state);
        }
        match job["state"].as_str() {
            Some("succeeded") => {
                let took = (job["finished_at"].as_i64().unwrap_or(0) - job["created_at"].as_i64().unwrap_or(0)) as f64
                    / 1000.0;
                step(&format!("job {job_id} succeeded in {took:.1}s"));
                return Ok(());
            }
            Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(150)).await,
            other => {
                let log = http
                    .get(format!("{base}/api/jobs/{job_id}/logs"))
                    .send()
                    .await?
                    .text()
                    .await?;
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("last lines of the job log:");
                for line in tail.iter().rev() {
                    eprintln!("  {line}");
                }
                bail!(
                    "job {job_id} {}: {}",
                    other.unwrap_or("?"),
                    job["error"].as_str().unwrap_or("no error recorded")
                );
            }
        }
    }
}

/// Removes the demo's containers and images, stops its registry, deletes its directory.
async fn clean(dir: &Path) -> anyhow::Result<()> {
    if let Ok(docker) = Docker::connect_with_local_defaults()
        && docker.ping().await.is_ok()
    {
        let instance = crate::startup::instance_id(&dir.join("data/runner.db"));
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={instance}", crate::adapters::engine::MANAGED_LABEL)],
        )]);
        let containers = docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        for container in containers {
            if let Some(id) = container.id {
                docker
                    .remove_container(
                        &id,
                        Some(bollard::query_parameters::RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await?;
                step(&format!(
                    "removed container {}",
                    container.names.unwrap_or_default().join(",")
                ));
            }
        }
        let images = docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                all: false,
                ..Default::default()
            }))
            .await?;
        for image in images {
            let ours = image.repo_tags.iter().chain(image.repo_digests.iter()).any(|name| {
                let repository = name.rsplit_once([':', '@']).map_or(name.as_str(), |(r, _)| r);
                repository == IMAGE || repository.ends_with(&format!("/{IMAGE}"))
            });
            if ours {
                let _ = docker
                    .remove_image(
                        &image.id,
                        Some(bollard::query_parameters::RemoveImageOptions {
                            force: true,
                            ..Default::default()
                        }),
                        None,
                    )
                    .await;
            }
        }
        step("removed the demo's images");
    }
    for (what, file) in [("the registry", "registry.pid"), ("the proxy", "caddy.pid")] {
        if let Ok(pid) = std::fs::read_to_string(dir.join(file)) {
            let pid = pid.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                let _ = std::process::Command::new("kill").arg(pid).status();
                step(&format!("stopped {what} (pid {pid})"));
            }
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        step(&format!("removed {}", dir.display()));
    }
    println!("The demo is cleaned up.");
    Ok(())
}
