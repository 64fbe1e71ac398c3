//! End to end against the real parts: a git repository holding the webapp's scratch
//! build context, the local Docker engine, a real Docker Registry v2, and the runner.
//! Needs `WEBAPP_STATIC_BIN` (scripts/build-webapp-static) and `RUNNER_TEST_REGISTRY`
//! (scripts/services.sh start); `scripts/test` provides both.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

pub(crate) fn commit_all(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "--allow-empty", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

pub(crate) async fn push_and_wait(runner: &TestRunner, sha: &str) -> Value {
    let response = runner.deliver("push", &push_body("refs/heads/master", sha)).await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    wait_long(runner, job_id).await
}

async fn wait_long(runner: &TestRunner, job_id: i64) -> Value {
    for _ in 0..1200 {
        let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} did not finish in 120 s");
}

async fn live_version(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/version"))
        .await
        .expect("the environment's port answers")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn push_builds_smokes_pushes_and_goes_live_then_a_bad_image_fails_and_rollback_restores() {
    let webapp_bin = PathBuf::from(required_env(
        "WEBAPP_STATIC_BIN",
        "build it with scripts/build-webapp-static",
    ));
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    assert!(webapp_bin.exists(), "{} does not exist", webapp_bin.display());

    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("e2e{unique}");
    let image = format!("runner-e2e-{unique}");
    let host_port = free_port();
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().to_owned();
    git(&repo, &["init", "--quiet", "--initial-branch=master"]);
    std::fs::copy(&webapp_bin, repo.join("webapp")).expect("copy the webapp binary");
    std::fs::write(repo.join("Dockerfile"), WEBAPP_DOCKERFILE).expect("write");
    std::fs::write(repo.join(".dockerignore"), "notes.txt\n").expect("write");
    std::fs::write(repo.join("notes.txt"), "not part of the image\n").expect("write");
    let first = commit_all(&repo, "first version");

    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![
            format!("{image}:*"),
            format!("{registry}/{image}:*"),
            format!("{registry}/{image}@*"),
        ],
    };
    let config_project = project.clone();
    let config_repo = repo.clone();
    let config_registry = registry.clone();
    let config_image = image.clone();
    let runner = TestRunner::start_with(move |dir| {
        let mut config = pipeline_config(
            dir,
            &config_project,
            &config_repo,
            &config_image,
            &config_registry,
            host_port,
            15,
        );
        config.queue = config::Queue {
            workers: Some(2),
            lease_secs: Some(10),
            ..config::Queue::default()
        };
        config
    })
    .await;

    // 1. First push goes live.
    let job = push_and_wait(&runner, &first).await;
    let log = runner.job_log(&job["id"]).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    let steps: Vec<(&str, &str)> = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["name"].as_str().expect("name"), s["state"].as_str().expect("state")))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("checkout", "succeeded"),
            ("build", "succeeded"),
            ("smoke", "succeeded"),
            ("push", "succeeded"),
            ("rollout", "succeeded"),
            ("record", "succeeded")
        ]
    );
    assert!(
        log.contains("[container]"),
        "the smoke container's own logs are in the job log:\n{log}"
    );
    let first_deployment = job["deployment"].clone();
    assert_eq!(first_deployment["status"], "live");
    assert_eq!(first_deployment["sha"], first.as_str());
    assert_eq!(first_deployment["trigger"], "push");
    assert_eq!(first_deployment["url"], format!("http://127.0.0.1:{host_port}"));
    let digest = first_deployment["image_digest"].as_str().expect("digest").to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(live_version(host_port).await["commit"], first.as_str());

    // The image is in the registry under the commit's tag, with the recorded digest.
    let manifest = reqwest::Client::new()
        .head(format!("http://{registry}/v2/{image}/manifests/{first}"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .expect("registry answers");
    assert_eq!(manifest.status(), 200);
    assert_eq!(
        manifest.headers()["docker-content-digest"].to_str().expect("ascii"),
        digest
    );
    // The image carries the OCI labels, and .dockerignore kept notes.txt out.
    let inspect = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{json .Config.Labels}}",
            &format!("{image}:{first}"),
        ])
        .output()
        .expect("docker");
    let labels: Value = serde_json::from_slice(&inspect.stdout).expect("labels json");
    assert_eq!(labels["org.opencontainers.image.revision"], first.as_str());
    assert_eq!(
        labels["org.opencontainers.image.source"],
        format!("https://github.com/{REPOSITORY}")
    );
    assert!(labels["org.opencontainers.image.created"].as_str().is_some());

    // 2. A second commit replaces it.
    std::fs::write(repo.join("CHANGES"), "second\n").expect("write");
    let second = commit_all(&repo, "second version");
    let job = push_and_wait(&runner, &second).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", runner.job_log(&job["id"]).await);
    assert_eq!(job["deployment"]["replaced_id"], first_deployment["id"]);
    assert_eq!(live_version(host_port).await["commit"], second.as_str());

    // 3. An image that never answers its health check fails; the second version keeps serving.
    std::fs::write(
        repo.join("Dockerfile"),
        WEBAPP_DOCKERFILE.replace("PORT=5001", "PORT=5999"),
    )
    .expect("write");
    let broken = commit_all(&repo, "broken version");
    let job = push_and_wait(&runner, &broken).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains("smoke failed") && error.contains("/health answered"),
        "{error}"
    );
    assert_eq!(live_version(host_port).await["commit"], second.as_str());
    let leftovers = Command::new("docker")
        // This project's: other tests' runners start smoke containers of their own.
        .args(["ps", "-aq", "--filter", &format!("name=runner-{project}-smoke-")])
        .output()
        .expect("docker");
    assert!(
        String::from_utf8_lossy(&leftovers.stdout).trim().is_empty(),
        "smoke containers are removed"
    );

    // 4. Rolling back to the first deployment puts exactly its image live again.
    let url = runner.url(&format!("/api/deployments/{}/rollback", first_deployment["id"]));
    let refused = runner.client.post(&url).send().await.expect("POST");
    assert_eq!(refused.status(), 401);
    let response = runner
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = wait_long(&runner, job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", runner.job_log(&job["id"]).await);
    assert_eq!(job["trigger"], "rollback");
    assert_eq!(job["deployment"]["trigger"], "rollback");
    assert_eq!(job["deployment"]["image_digest"], digest.as_str());
    assert_eq!(live_version(host_port).await["commit"], first.as_str());

    // 5. A redeploy of a given commit, by the API.
    let url = runner.url(&format!("/api/projects/{project}/deploy"));
    let response = runner
        .client
        .post(&url)
        .json(&serde_json::json!({ "sha": second }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);
    let response = runner
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "sha": second }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = wait_long(&runner, job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["deployment"]["trigger"], "redeploy");
    assert_eq!(live_version(host_port).await["commit"], second.as_str());

    let deployments = runner.get_json("/api/deployments").await;
    let statuses: Vec<&str> = deployments["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        vec!["live", "replaced", "failed", "replaced", "replaced"],
        "redeploy, rollback, the broken push's attempt, second, first"
    );
    let items = deployments["items"].as_array().expect("items");
    for pair in items.windows(2).filter(|p| p[1]["status"] == "replaced") {
        // Each replaced deployment points at the next one that went live.
        let newer_live = items
            .iter()
            .rev()
            .find(|d| d["id"].as_i64() > pair[1]["id"].as_i64() && d["image_ref"] != "")
            .expect("a newer deployment");
        assert_eq!(pair[1]["replaced_by"], newer_live["id"], "{deployments}");
    }
    assert_eq!(
        items[2]["image_ref"], "",
        "the broken push is an attempt row: {}",
        items[2]
    );
    runner.stop().await;
}

#[tokio::test]
async fn with_ecr_the_repository_is_created_and_the_image_pushed_with_an_ecr_login() {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let aws = required_env("RUNNER_TEST_AWS_ENDPOINT", "start moto with scripts/services.sh start");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let sha = webapp_repo(&repo, WEBAPP_DOCKERFILE);
    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("ecr{unique}");
    let image = format!("runner-ecr-e2e-{unique}");
    let host_port = free_port();
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![
            format!("{image}:*"),
            format!("{registry}/{image}:*"),
            format!("{registry}/{image}@*"),
        ],
    };
    let (config_project, config_image, config_registry) = (project.clone(), image.clone(), registry.clone());
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state = state_dir.path().to_owned();
    // One config for both runners of the test (same slots, same Caddy).
    let config = {
        // ECR's API is moto; the pushes go to the local registry standing in for ECR's host.
        let mut config = pipeline_config(
            &state,
            &config_project,
            &repo,
            &config_image,
            &config_registry,
            host_port,
            15,
        );
        config.projects[0].registry = Some(config::Registry {
            kind: Some("ecr".into()),
            region: Some("us-east-1".into()),
            endpoint_url: Some(aws.clone()),
            ..config::v2_registry(&config_registry)
        });
        config
    };
    let make_config = move |_: &std::path::Path| config.clone();
    let runner = TestRunner::start_with(make_config.clone()).await;
    let job = push_and_wait(&runner, &sha).await;
    let log = runner.job_log(&job["id"]).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(
        log.contains("ECR repository ") && log.contains(&format!("/{image}")),
        "{log}"
    );
    assert_eq!(live_version(host_port).await["commit"], sha.as_str());
    let ecr = runner::adapters::registry::ecr::Ecr::new(
        Some("us-east-1".into()),
        Some(required_env("RUNNER_TEST_AWS_ENDPOINT", "")),
    )
    .await;
    let uri = ecr
        .find_repository(&image)
        .await
        .expect("describe")
        .expect("the runner created the repository");
    assert!(uri.ends_with(&image));
    runner.stop().await;

    // While the runner is down its container stops and Caddy loses the route (restarted
    // without its config): the next start puts both back from the runner's record.
    let live = format!("runner-{project}-production-a");
    let docker = |args: &[&str]| {
        let output = Command::new("docker").args(args).output().expect("docker");
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    docker(&["stop", &live]);
    let admin = crate::common::caddy::for_this_test();
    let dropped = reqwest::Client::new()
        .delete(format!("{admin}/config/apps/http/servers/runner-{project}-production"))
        .send()
        .await
        .expect("Caddy's admin API");
    assert!(dropped.status().is_success(), "{:?}", dropped.text().await);
    assert!(
        reqwest::get(format!("http://127.0.0.1:{host_port}/version"))
            .await
            .is_err()
    );
    let restarted = TestRunner::start_with(make_config).await;
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &live]), "true");
    let version = eventually_answers(
        "the app answers through the proxy again",
        &format!("http://127.0.0.1:{host_port}/version"),
    )
    .await;
    assert!(version.contains(sha.as_str()), "{version}");
    restarted.stop().await;
}

#[tokio::test]
async fn a_build_error_fails_the_job_with_the_engines_message_and_verify_jobs_stop_after_smoke() {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let good = webapp_repo(&repo, WEBAPP_DOCKERFILE);
    std::fs::write(repo.join("Dockerfile"), "FROM scratch\nCOPY no-such-file /x\n").expect("write");
    let broken = commit_all(&repo, "broken build");
    let unique = format!("{}{}", std::process::id(), free_port());
    let image = format!("runner-builderr-{unique}");
    let _cleanup = EngineCleanup {
        container: format!("runner-builderr{unique}-production"),
        references: vec![format!("{image}:*"), format!("{registry}/{image}:*")],
    };
    let (config_image, config_registry, config_repo) = (image.clone(), registry.clone(), repo.clone());
    let runner = TestRunner::start_with(move |dir| {
        pipeline_config(
            dir,
            &format!("builderr{unique}"),
            &config_repo,
            &config_image,
            &config_registry,
            free_port(),
            15,
        )
    })
    .await;

    let job = push_and_wait(&runner, &broken).await;
    assert_eq!(job["state"], "failed");
    let error = job["error"].as_str().expect("error");
    assert!(error.starts_with("build failed"), "{error}");
    assert!(
        error.contains("no-such-file"),
        "the engine's own message is kept: {error}"
    );

    // A pull request's verify job builds and smoke-tests, and never pushes or rolls out.
    let mut opened = fixture_json("pull_request.opened.payload.json");
    opened["pull_request"]["head"]["sha"] = good.clone().into();
    let response = runner
        .deliver("pull_request", &serde_json::to_vec(&opened).expect("json"))
        .await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = wait_long(&runner, job_id).await;
    // The PR's ref does not exist in this repository, but its head commit does.
    assert_eq!(job["state"], "succeeded", "{job}\n{}", runner.job_log(&job["id"]).await);
    let steps: Vec<&str> = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(steps, vec!["checkout", "build", "smoke"]);
    assert!(job["deployment"].is_null());
    runner.stop().await;
}
