//! The real `runner` binary: start-up checks, SIGKILL while a job is claimed, restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::process::Runner;
use crate::common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_runner");

/// Delivers a signed push of `sha` to master and returns the queued job's id.
async fn push_to(client: &reqwest::Client, base: &str, sha: &str) -> i64 {
    let body = push_body("refs/heads/master", sha);
    let response = client
        .post(format!("{base}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", unique_delivery_id())
        .header("x-hub-signature-256", sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id")
}

async fn job(client: &reqwest::Client, base: &str, id: i64) -> Value {
    client
        .get(format!("{base}/api/jobs/{id}"))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("json")
}

async fn wait_for(client: &reqwest::Client, base: &str, id: i64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let current = job(client, base, id).await;
        if check(&current) {
            return current;
        }
        assert!(Instant::now() < deadline, "job {id} never got {what}: {current}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_job_claimed_when_the_runner_is_killed_is_claimed_again_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = hanging_server();
    let mut config = default_config(dir.path());
    config.queue.lease_secs = Some(2);
    config.queue.max_attempts = Some(5);
    config.projects[0].clone_url = Some(remote);
    let config_path = dir.path().join("runner.toml");
    config::write(&config_path, config);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let mut first = Runner::start(&config_path);
    let job_id = push_to(&client, &first.base, "3333333333333333333333333333333333333333").await;

    // The worker claims it and hangs in checkout against the silent remote.
    let claimed = wait_for(&client, &first.base, job_id, "claimed", |j| j["state"] == "running").await;
    assert_eq!(claimed["attempts"], 1);
    let work_dir = dir.path().join("work").join(format!("job-{job_id}-1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !work_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "checkout never created {}",
            work_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    first.kill9();

    let second = Runner::start(&config_path);
    // What the killed run left behind is reaped before any job runs again.
    assert!(
        !work_dir.exists(),
        "stale work directory {} survived the restart",
        work_dir.display()
    );
    let reclaimed = wait_for(&client, &second.base, job_id, "re-claimed", |j| j["attempts"] == 2).await;
    assert_eq!(reclaimed["state"], "running");
    assert!(second.log_text().contains("job claimed"), "{}", second.log_text());
}

#[test]
fn serve_refuses_to_start_without_the_webhook_secret_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("runner.toml");
    std::fs::write(&config_path, to_toml(&default_config(dir.path()))).expect("write");
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_clear()
        .env("OTHER_SECRET", OTHER_SECRET)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HELLO_SECRET is not set"), "{stderr}");
    assert!(
        !crate::common::database::is_migrated(dir.path()),
        "nothing is created for a config that is refused"
    );
}

#[test]
fn check_config_prints_the_resolved_config_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("runner.toml");
    let mut config = default_config(dir.path());
    let registry = config.projects[0].registry.as_mut().expect("a registry");
    registry.username_env = Some("REG_USER".into());
    registry.password_env = Some("REG_PASS".into());
    config::write(&config_path, config);
    let output = Command::new(BIN)
        .args(["check-config", "--json", "--config"])
        .arg(&config_path)
        .env_clear()
        .env("HELLO_SECRET", SECRET)
        .env("OTHER_SECRET", OTHER_SECRET)
        .env("RUNNER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("REG_USER", "deployer")
        .env("REG_PASS", "registry-password-123456")
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for secret in [SECRET, OTHER_SECRET, ADMIN_TOKEN, "registry-password-123456"] {
        assert!(!stdout.contains(secret), "secret printed: {stdout}");
    }
    let json: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(json["projects"][0]["repository"], REPOSITORY);
    assert_eq!(json["projects"][0]["webhook_secret"], "[redacted]");
    assert_eq!(json["projects"][0]["registry"]["password"], "[redacted]");
    assert_eq!(json["projects"][0]["registry"]["username"], "deployer");
    assert_eq!(json["projects"][0]["smoke"]["container_port"], 5001);
}

#[test]
fn help_lists_every_subcommand() {
    let output = Command::new(BIN).arg("--help").output().expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "check-config", "migrate"] {
        assert!(help.contains(command), "{help}");
    }
}

#[tokio::test]
async fn sigterm_stops_the_runner_cleanly_with_exit_code_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("runner.toml");
    std::fs::write(&config_path, to_toml(&default_config(dir.path()))).expect("write");
    let mut runner = Runner::start(&config_path);
    let health: Value = reqwest::get(format!("{}/healthz", runner.base))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    let exit = runner.terminate();
    assert_eq!(exit.code(), Some(0), "{}", runner.log_text());
    std::thread::sleep(Duration::from_millis(100));
    assert!(runner.log_text().contains("\"stopped\""), "{}", runner.log_text());
    // The database was created under the configured path with its migrations applied.
    assert!(crate::common::database::is_migrated(dir.path()));
}

#[tokio::test]
async fn a_runner_killed_during_smoke_leaves_no_container_and_the_job_still_ends() {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    // An image that never becomes healthy keeps the smoke step busy long enough to kill.
    let sha = webapp_repo(&repo, &WEBAPP_DOCKERFILE.replace("PORT=5001", "PORT=5999"));
    let unique = format!("{}{}", std::process::id(), free_port());
    let image = format!("runner-kill-{unique}");
    let project = format!("kill{unique}");
    let config = pipeline_config(dir.path(), &project, &repo, &image, &registry, free_port(), 20);
    let config_path = dir.path().join("runner.toml");
    config::write(&config_path, config);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let mut first = Runner::start(&config_path);
    let job_id = push_to(&client, &first.base, &sha).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    while containers_of_job(&project, job_id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the smoke container never started: {}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill9();
    assert!(
        !containers_of_job(&project, job_id).is_empty(),
        "the killed runner left its smoke container"
    );

    let second = Runner::start(&config_path);
    let leftovers = containers_of_job(&project, job_id);
    // The restarted runner reaps it before running anything (a new attempt may start its own).
    let stale: Vec<&String> = leftovers.iter().filter(|name| name.ends_with("-1")).collect();
    assert!(
        stale.is_empty(),
        "attempt 1's container survived the restart: {leftovers:?}"
    );
    let job = wait_for(&client, &second.base, job_id, "a final state", |j| {
        !matches!(j["state"].as_str(), Some("queued" | "running"))
    })
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        containers_of_job(&project, job_id).is_empty(),
        "no container of the job is left"
    );
    let work: Vec<_> = std::fs::read_dir(dir.path().join("work")).expect("work dir").collect();
    assert!(work.is_empty(), "no work directory is left");
    let _ = Command::new("docker")
        .args(["rmi", "-f", &format!("{image}:{sha}")])
        .output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_token_never_reaches_the_runners_own_log() {
    use crate::common::fake_github::*;
    let fake = FakeGitHub::default();
    // GitHub refuses the token and fails now and then: the runner logs every problem.
    fake.with(|f| {
        f.accepted_token = Some("some-other-token".into());
        f.fail_next = 3;
    });
    let api = fake.start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("runner.toml");
    config::write(&config, with_github(default_config(dir.path()), &api, true));
    let runner = Runner::start_with_env(
        &config,
        &[("GITHUB_TOKEN_FOR_TESTS", GITHUB_TOKEN), ("RUST_LOG", "debug")],
    );
    let client = reqwest::Client::new();
    let id = push_to(&client, &runner.base, &"3".repeat(40)).await;
    wait_for(&client, &runner.base, id, "its end", |job| job["state"] == "failed").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !runner.log_text().contains("could not report to the project's forge") {
        assert!(
            Instant::now() < deadline,
            "no reporting problem logged:\n{}",
            runner.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fake.requests().iter().any(|r| r.authorization.contains(GITHUB_TOKEN)),
        "the token was used"
    );
    let log = runner.log_text();
    assert!(!log.contains(GITHUB_TOKEN), "the token is in the runner's log");
    assert!(
        !log.contains(&GITHUB_TOKEN[4..20]),
        "part of the token is in the runner's log"
    );
}

/// A TCP relay to `target` that passes what the client sends 32 KiB at a time, with a
/// pause between pieces: a registry that takes a few seconds to receive an image.
fn slow_relay(target: &str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let target = target.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (mut client_in, mut server_out) =
                (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            std::thread::spawn(move || {
                let mut buffer = vec![0_u8; 32 * 1024];
                while let Ok(n) = client_in.read(&mut buffer) {
                    if n == 0 || server_out.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(15));
                }
                let _ = server_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut server_in, mut client_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_in, &mut client_out);
                let _ = client_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr.to_string()
}

/// Where a runner is killed, and what the deploy has for it to be killed in.
struct KillPoint {
    /// The step running when the runner is killed (`approval`: while it waits for one;
    /// `slowcheck`: a step of the repository's `.runner.yml`, with a service beside it).
    step: &'static str,
    terraform: bool,
    slow_registry: bool,
}

/// A good deploy of the webapp, set up for a runner to be killed in: its repository
/// (with the terraform module when asked), its config and its engine cleanup.
struct KilledDeploy {
    dir: tempfile::TempDir,
    sha: String,
    project: String,
    host_port: u16,
    config_path: std::path::PathBuf,
    /// What every runner of the test gets in its environment.
    env: Vec<(&'static str, String)>,
    client: reqwest::Client,
    _cleanup: EngineCleanup,
}

impl KilledDeploy {
    fn new(point: &KillPoint) -> Self {
        let step = point.step;
        let real_registry = required_env(
            "RUNNER_TEST_REGISTRY",
            "start a registry with scripts/services.sh start",
        );
        let registry = if point.slow_registry {
            slow_relay(&real_registry)
        } else {
            real_registry
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let unique = format!("{}{}", std::process::id(), free_port());
        // BuildKit builds the webapp's image in well under a second: a build to be killed
        // gets a slow stage first, unique to this run so that no earlier run's build cache
        // (the suite runs once per backend) skips it.
        let dockerfile = if step == "build" {
            WEBAPP_DOCKERFILE.replacen(
                "FROM scratch\n",
                &format!(
                    "FROM local/busybox:1 AS slow\nRUN sleep 6 && echo {unique} > /slept\nFROM scratch\nCOPY --from=slow /slept /slept\n"
                ),
                1,
            )
        } else if step == "slowcheck" {
            format!(
                "FROM local/busybox:1 AS pong\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/\"]\n{WEBAPP_DOCKERFILE}"
            )
        } else {
            WEBAPP_DOCKERFILE.to_owned()
        };
        let mut sha = webapp_repo(&repo, &dockerfile);
        if step == "slowcheck" {
            std::fs::write(
                repo.join(".runner.yml"),
                "steps:\n  - name: slowcheck\n    image: local/busybox:1\n    services: [{ name: pong, image: \"target:pong\" }]\n    commands: [\"sleep 6\"]\n",
            )
            .expect("write .runner.yml");
            git(&repo, &["add", "-A"]);
            git(&repo, &["commit", "--quiet", "-m", "a slow check"]);
            sha = git(&repo, &["rev-parse", "HEAD"]);
        }
        let project = format!("kill{step}{unique}");
        let image = format!("runner-kill-{step}-{unique}");
        let host_port = free_port();
        let mut config = pipeline_config(dir.path(), &project, &repo, &image, &registry, host_port, 20);
        // Long enough that a busy machine's slow disk never costs the first runner its
        // lease before the kill: the job must run exactly twice.
        config.queue.lease_secs = Some(6);
        let mut env = vec![("RUNNER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned())];
        if point.terraform {
            env.push((
                "TERRAFORM_BIN",
                required_env("TERRAFORM_BIN", "scripts/services.sh install builds one"),
            ));
            std::fs::create_dir_all(repo.join("infra")).expect("mkdir");
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/terraform/app/main.tf"),
                repo.join("infra/main.tf"),
            )
            .expect("copy the module");
            git(&repo, &["add", "-A"]);
            git(&repo, &["commit", "--quiet", "-m", "infra"]);
            sha = git(&repo, &["rev-parse", "HEAD"]);
            config.projects[0].terraform = Some(config::Terraform {
                vars: [(
                    "apply_delay".to_owned(),
                    if step == "apply" { "8" } else { "0" }.to_owned(),
                )]
                .into(),
                require_approval: step == "approval",
                lock_timeout_secs: Some(90),
                ..config::terraform("infra", &dir.path().join("state.tfstate"))
            });
        }
        let config_path = dir.path().join("runner.toml");
        config::write(&config_path, config);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let _cleanup = EngineCleanup {
            container: format!("runner-{project}-production"),
            references: vec![
                format!("{image}:*"),
                format!("{registry}/{image}:*"),
                format!("{registry}/{image}@*"),
            ],
        };
        Self {
            dir,
            sha,
            project,
            host_port,
            config_path,
            env,
            client,
            _cleanup,
        }
    }

    fn start_runner(&self) -> Runner {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Runner::start_with_env(&self.config_path, &env)
    }

    /// After the restart: the job ends succeeded on its second attempt, its commit is the
    /// one live version, and no container but the live one, no work directory, terraform
    /// process or state lock is left.
    async fn assert_finished(&self, second: &Runner, job_id: i64) {
        let (client, project) = (&self.client, &self.project);
        let job = wait_for(client, &second.base, job_id, "a final state", |j| {
            !matches!(j["state"].as_str(), Some("queued" | "running" | "awaiting_approval"))
        })
        .await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", second.log_text());
        assert_eq!(job["attempts"], 2);
        assert_eq!(job["deployment"]["status"], "live");
        let deployments: Value = client
            .get(format!("{}/api/deployments?project={project}", second.base))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let live = deployments["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|d| d["status"] == "live")
            .count();
        assert_eq!(live, 1, "one live version: {deployments}");
        let version: Value = reqwest::get(format!("http://127.0.0.1:{}/version", self.host_port))
            .await
            .expect("the environment answers")
            .json()
            .await
            .expect("json");
        assert_eq!(version["commit"], self.sha.as_str());
        assert_eq!(
            containers_of_job(project, job_id),
            vec![format!("runner-{project}-production-a")],
            "only the live container remains, in the first slot"
        );
        let work_dir = self.dir.path().join("work");
        let work: Vec<_> = std::fs::read_dir(&work_dir).expect("work dir").collect();
        assert!(work.is_empty(), "no work directory is left");
        assert!(
            !self.dir.path().join(".terraform.tfstate.lock.info").exists()
                && !self.dir.path().join("state.tfstate.lock.info").exists(),
            "no state lock is left"
        );
        let left = Command::new("pgrep")
            .args(["-f", &work_dir.display().to_string()])
            .output()
            .expect("pgrep");
        assert!(
            String::from_utf8_lossy(&left.stdout).trim().is_empty(),
            "a terraform command of the job is still running"
        );
    }
}

/// Kills the runner at `point` of a deploy; after a restart the job ends as
/// [`KilledDeploy::assert_finished`] checks.
async fn kill_then_restart(point: KillPoint) {
    let step = point.step;
    let deploy = KilledDeploy::new(&point);
    let client = &deploy.client;
    let mut first = deploy.start_runner();
    let job_id = push_to(client, &first.base, &deploy.sha).await;
    let waiting_for = |attempts: i64| {
        move |j: &Value| {
            if step == "approval" {
                j["state"] == "awaiting_approval" && j["attempts"] == attempts
            } else {
                j["steps"]
                    .as_array()
                    .is_some_and(|steps| steps.iter().any(|s| s["name"] == step && s["state"] == "running"))
            }
        }
    };
    wait_for(
        client,
        &first.base,
        job_id,
        &format!("{step} under way"),
        waiting_for(1),
    )
    .await;
    if step == "apply" {
        // Killed once terraform itself runs (its step may wait for the state lock first).
        let work = deploy.dir.path().join("work");
        crate::common::eventually("terraform apply under way", || {
            std::fs::read_dir(&work)
                .ok()?
                .flatten()
                .any(|job| job.path().join("terraform.pid").exists())
                .then_some(())
        })
        .await;
    }
    if step == "slowcheck" {
        // Killed once the step's pod, service and own container all run.
        crate::common::eventually("the step's pod, service and container", || {
            let containers = containers_of_job(&deploy.project, job_id);
            (containers.iter().filter(|name| name.contains("-step-")).count() == 3).then_some(())
        })
        .await;
    }
    first.kill9();
    if step == "slowcheck" {
        let left = containers_of_job(&deploy.project, job_id);
        assert_eq!(
            left.iter().filter(|name| name.contains("-step-")).count(),
            3,
            "the killed runner left the step's containers: {left:?}"
        );
    }

    let second = deploy.start_runner();
    if step == "approval" {
        // The job is claimed again, planned again, and waits for an answer again.
        wait_for(
            client,
            &second.base,
            job_id,
            "a second wait for approval",
            waiting_for(2),
        )
        .await;
        let job: serde_json::Value = client
            .get(format!("{}/api/jobs/{job_id}", second.base))
            .send()
            .await
            .expect("GET job")
            .json()
            .await
            .expect("json");
        let approved = client
            .post(format!("{}/api/jobs/{job_id}/approve", second.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "plan_digest": job["plan_digest"] }))
            .send()
            .await
            .expect("approve");
        assert_eq!(approved.status(), 200);
    }
    deploy.assert_finished(&second, job_id).await;
    if step == "apply" {
        assert!(
            second
                .log_text()
                .contains("interrupted a terraform command an earlier run left running"),
            "the orphaned apply was interrupted at start: {}",
            second.log_text()
        );
    }
}

#[tokio::test]
async fn a_runner_killed_during_a_repositorys_step_leaves_none_of_its_containers_and_finishes_the_deploy() {
    kill_then_restart(KillPoint {
        step: "slowcheck",
        terraform: false,
        slow_registry: false,
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_during_build_finishes_the_deploy_after_restart() {
    kill_then_restart(KillPoint {
        step: "build",
        terraform: false,
        slow_registry: false,
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_during_rollout_finishes_the_deploy_after_restart() {
    kill_then_restart(KillPoint {
        step: "rollout",
        terraform: false,
        slow_registry: false,
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_during_push_finishes_the_deploy_after_restart() {
    kill_then_restart(KillPoint {
        step: "push",
        terraform: false,
        slow_registry: true,
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_during_the_plan_finishes_the_deploy_after_restart() {
    kill_then_restart(KillPoint {
        step: "plan",
        terraform: true,
        slow_registry: false,
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_while_a_plan_waits_for_approval_asks_again_after_restart() {
    kill_then_restart(KillPoint {
        step: "approval",
        terraform: true,
        slow_registry: false,
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_during_apply_interrupts_the_orphaned_apply_and_finishes_after_restart() {
    kill_then_restart(KillPoint {
        step: "apply",
        terraform: true,
        slow_registry: false,
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_while_recording_a_deploy_that_already_went_live_finishes_it_after_restart() {
    let deploy = KilledDeploy::new(&KillPoint {
        step: "record",
        terraform: false,
        slow_registry: false,
    });
    let client = &deploy.client;
    let mut first = deploy.start_runner();
    let job_id = push_to(client, &first.base, &deploy.sha).await;
    wait_for(client, &first.base, job_id, "the rollout under way", |j| {
        j["steps"]
            .as_array()
            .is_some_and(|steps| steps.iter().any(|s| s["name"] == "rollout" && s["state"] == "running"))
    })
    .await;
    // Hold the database's write lock: the container can go live, but the runner cannot
    // record that it did. It is killed right there.
    let url = crate::common::database::url_for(deploy.dir.path());
    let holder = runner::store::open(&url).await.expect("a second connection");
    let lock = holder.begin_write().await.expect("take the write lock");
    let live_name = format!("runner-{}-production-a", deploy.project);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = Command::new("docker")
            .args(["inspect", "--format", "{{.State.Running}}", &live_name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true");
        if running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new version never went live: {}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.kill9();
    drop(lock);
    holder.close().await;

    let second = deploy.start_runner();
    deploy.assert_finished(&second, job_id).await;
    let deployments: Value = client
        .get(format!("{}/api/deployments?project={}", second.base, deploy.project))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let items = deployments["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        1,
        "the retried job kept its one deployment row: {deployments}"
    );
}
