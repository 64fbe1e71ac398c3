//! The repository's own steps (`.runner.yml`) on the real engine and registry: they run
//! after the build, in containers of their own, and gate the push and the deploy; a
//! failing test, a bad file, a timeout or a cancel stops the job with nothing left behind;
//! a pull request's steps get no secret and no network off the closed bridge.
//! Needs `WEBAPP_STATIC_BIN`, `RUNNER_TEST_REGISTRY` and `local/busybox:1`
//! (scripts/services.sh start).

use std::path::Path;

use crate::common::*;
use serde_json::Value;

const DEPLOY_TOKEN: &str = "deploy-token-0c9f2b7e41";

/// The image's stages: `test` (a shell, for the checks), `pong` (a service answering
/// `pong` on port 8080) and the app.
fn dockerfile(id: &str) -> String {
    format!(
        "FROM local/busybox:1 AS test\nRUN echo {id} > /test-id\n\n\
         FROM local/busybox:1 AS pong\nRUN mkdir /www && echo pong-{id} > /www/index.html\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n\n\
         FROM local/busybox:1\nRUN echo {id} > /app-id\nCOPY webapp /webapp\nENV PORT=5001\nEXPOSE 5001\nENTRYPOINT [\"/webapp\"]\n"
    )
}

/// A test's project: its names unique to the run, its repository's directory, and the
/// engine's images of it removed at the end, whatever the outcome.
struct Bench {
    id: String,
    project: String,
    image: String,
    registry: String,
    repo_dir: tempfile::TempDir,
    _cleanup: EngineCleanup,
}

impl Bench {
    fn new(prefix: &str) -> Self {
        busybox_image();
        let registry = required_env(
            "RUNNER_TEST_REGISTRY",
            "start a registry with scripts/services.sh start",
        );
        let id = format!("{}{}", std::process::id(), free_port());
        let (project, image) = (format!("{prefix}{id}"), format!("runner-{prefix}-{id}"));
        let _cleanup = EngineCleanup {
            container: format!("runner-{project}-production"),
            references: vec![
                format!("{image}:*"),
                format!("{image}-*"),
                format!("{registry}/{image}:*"),
            ],
        };
        Self {
            id,
            project,
            image,
            registry,
            repo_dir: tempfile::tempdir().expect("tempdir"),
            _cleanup,
        }
    }

    fn repo(&self) -> &Path {
        self.repo_dir.path()
    }
}

/// Removes the named volumes of a test's caches, whatever the outcome.
struct VolumeCleanup(String);

impl Drop for VolumeCleanup {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &format!("name={}", self.0)])
            .output();
        if let Ok(listed) = listed {
            for volume in String::from_utf8_lossy(&listed.stdout).lines() {
                let _ = std::process::Command::new("docker")
                    .args(["volume", "rm", "-f", volume])
                    .output();
            }
        }
    }
}

fn commit(repo: &Path, runner_yml: &str, message: &str) -> String {
    std::fs::write(repo.join(".runner.yml"), runner_yml).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "--allow-empty", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

fn steps(job: &Value) -> Vec<(String, String)> {
    job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job}"))
}

async fn in_registry(registry: &str, image: &str, tag: &str) -> bool {
    reqwest::Client::new()
        .head(format!("http://{registry}/v2/{image}/manifests/{tag}"))
        .header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .expect("the registry answers")
        .status()
        .is_success()
}

const PASSING: &str = r#"steps:
  - name: unit
    image: target:test
    secrets: [DEPLOY_TOKEN]
    env: { GREETING: hello }
    cache: [/var/cache/steps]
    commands:
      - 'echo run >> /var/cache/steps/runs && echo "cached runs: $(wc -l < /var/cache/steps/runs)"'
      - echo "$GREETING from the test stage, token $DEPLOY_TOKEN"
      - test -f /checkout/.runner.yml && test -x /checkout/webapp
      - mkdir -p /checkout/out
      - printf '<testsuite name="unit" tests="2"><testcase name="adds"/><testcase name="subtracts"/></testsuite>' > /checkout/out/junit.xml
    reports: { junit: out/junit.xml }
  - name: release-only
    commands: ["echo never"]
    when: { branch: [release] }
  - name: image
    commands: ["test -x /webapp", "echo \"app-id:$(cat /app-id)\""]
"#;

const FAILING: &str = r#"steps:
  - name: unit
    image: target:test
    commands:
      - mkdir -p /checkout/out
      - printf '<testsuite name="unit" tests="2"><testcase name="adds"/><testcase name="subtracts" file="/checkout/tests/math.rs" line="12"><failure message="expected 1, got 3">assertion failed</failure></testcase></testsuite>' > /checkout/out/junit.xml
      - exit 1
    reports: { junit: out/junit.xml }
"#;

#[tokio::test]
async fn a_repositorys_steps_gate_the_deploy_and_what_fails_stops_it_before_the_push_leaving_nothing() {
    let bench = Bench::new("checks");
    let _volumes = VolumeCleanup(format!("runner-cache-{}-", bench.project));
    let (id, project, image, registry, repo) = (&bench.id, &bench.project, &bench.image, &bench.registry, bench.repo());
    webapp_repo(repo, &dockerfile(id));
    // Reporting as a GitHub App: each job is a check run as well.
    let keys = tempfile::tempdir().expect("tempdir");
    let key = fake_github::app_key(keys.path());
    let github = fake_github::FakeGitHub::default();
    github.with(|f| f.accepted_token = Some(fake_github::INSTALLATION_TOKEN.to_owned()));
    let api = github.start().await;
    let runner = start_with_deploy_token(DEPLOY_TOKEN, project, repo, image, move |config| {
        fake_github::as_app(config, &api, &key);
    })
    .await;

    // Passing steps: run in order after the build, skipped where `when` says, then live.
    let passing = commit(repo, PASSING, "passing steps");
    let job_id = runner.push_queued(&passing).await;
    let (job, log) = runner.job_when_ended(job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    let names: Vec<(String, String)> = steps(&job);
    let expected: Vec<(String, String)> = [
        ("checkout", "succeeded"),
        ("build", "succeeded"),
        ("unit", "succeeded"),
        ("release-only", "skipped"),
        ("image", "succeeded"),
        ("smoke", "succeeded"),
        ("push", "succeeded"),
        ("rollout", "succeeded"),
        ("record", "succeeded"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(names, expected, "{log}");
    let skipped = step(&job, "release-only")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(skipped.contains("release"), "the skip says why: {skipped}");
    assert!(
        log.contains("+ echo \"$GREETING from the test stage"),
        "each command is shown before it runs:\n{log}"
    );
    assert!(log.contains("hello from the test stage, token "), "{log}");
    assert!(
        !log.contains(DEPLOY_TOKEN),
        "the deploy's secret reached the step and stayed out of the log:\n{log}"
    );
    assert!(log.contains("2 passed"), "the JUnit report is read:\n{log}");
    assert_eq!(step(&job, "unit")["summary"], "2 passed, 0 failed", "{job}");
    // `runner jobs JOB` shows the same rows.
    // (Asynchronously: the runner answering it serves on this test's thread.)
    let shown = tokio::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["jobs", &job_id.to_string(), "--url", &runner.base])
        .env_remove("RUNNER_ADMIN_TOKEN")
        .output()
        .await
        .expect("runner runs");
    let (shown, stderr) = (
        String::from_utf8_lossy(&shown.stdout).into_owned(),
        String::from_utf8_lossy(&shown.stderr).into_owned(),
    );
    let unit = shown.lines().find(|l| l.starts_with("unit ")).unwrap_or_default();
    assert!(
        unit.contains("succeeded") && unit.contains("2 passed, 0 failed"),
        "{shown}{stderr}"
    );
    let skipped = shown
        .lines()
        .find(|l| l.starts_with("release-only "))
        .unwrap_or_default();
    assert!(
        skipped.contains("skipped") && skipped.contains("when.branch"),
        "{shown}"
    );
    assert!(log.contains("cached runs: 1"), "{log}");
    assert!(
        log.contains(&format!("app-id:{id}")),
        "the `build` image is the app's own:\n{log}"
    );
    assert!(in_registry(registry, image, &passing).await);
    assert!(
        containers_of_job(project, job_id).iter().all(|c| !c.contains("-step-")),
        "no step container is left"
    );

    // A failing test: the job fails at that step, nothing is pushed, the live version stays.
    let failing = commit(repo, FAILING, "a failing test");
    let job_id = runner.push_queued(&failing).await;
    let (job, log) = runner.job_when_ended(job_id).await;
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("unit failed: 1 passed, 1 failed") && error.contains("subtracts: expected 1, got 3"),
        "the job names the failing test: {error}"
    );
    assert_eq!(step(&job, "unit")["state"], "failed");
    assert_eq!(step(&job, "smoke")["state"], "skipped");
    assert_eq!(step(&job, "push")["state"], "skipped");
    assert!(
        !in_registry(registry, image, &failing).await,
        "an untested image is never pushed"
    );
    assert!(
        containers_of_job(project, job_id).is_empty(),
        "{:?}",
        containers_of_job(project, job_id)
    );
    let deployments = runner.get_json("/api/deployments").await;
    let live: Vec<&Value> = deployments["items"]
        .as_array()
        .expect("deployments")
        .iter()
        .filter(|d| d["status"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "{deployments}");
    assert_eq!(live[0]["sha"], passing.as_str(), "the tested version stays live");
    // On GitHub: the step's status names the failing count, and the job's check run has
    // the step table, the failing test, and an annotation on the test's line.
    let check_run = eventually("the failing job's check run completed", || {
        github.check_runs().into_iter().find(|run| {
            run["external_id"].as_str().and_then(|id| id.parse().ok()) == Some(job_id) && run["status"] == "completed"
        })
    })
    .await;
    assert_eq!(check_run["conclusion"], "failure", "{check_run}");
    let summary = check_run["output"]["summary"].as_str().expect("summary");
    assert!(summary.contains("| unit | failed |"), "{summary}");
    assert!(summary.contains("- `subtracts`: `expected 1, got 3`"), "{summary}");
    let annotations = check_run["annotations"].as_array().expect("annotations");
    assert_eq!(annotations.len(), 1, "{check_run}");
    assert_eq!(
        (&annotations[0]["path"], &annotations[0]["start_line"]),
        (&Value::from("tests/math.rs"), &Value::from(12)),
        "{check_run}"
    );
    let unit_status = github
        .statuses()
        .into_iter()
        .rfind(|(sha, _, context, _)| *sha == failing && context.ends_with("/unit (production)"));
    assert!(
        unit_status
            .as_ref()
            .is_some_and(|(_, state, _, text)| state == "failure" && text.contains("1 passed, 1 failed")),
        "{unit_status:?}"
    );

    // A bad file: the job fails at `pipeline` with the place in the file, before any build.
    let bad = commit(repo, "steps:\n  - name: unit\n    comands: [\"true\"]\n", "a typo");
    let job_id = runner.push_queued(&bad).await;
    let (job, log) = runner.job_when_ended(job_id).await;
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("pipeline failed: .runner.yml:3:5: "), "{error}");
    assert!(error.contains("comands"), "{error}");
    assert_eq!(step(&job, "build")["state"], "skipped");
    let order: Vec<String> = steps(&job).into_iter().map(|(name, _)| name).take(3).collect();
    assert_eq!(
        order,
        ["checkout", "pipeline", "build"],
        "the file is read before the build"
    );

    // A step past its timeout, and a cancelled one: stopped, their containers gone.
    let slow = commit(
        repo,
        "steps:\n  - name: slow\n    timeout: 2s\n    commands: [\"sleep 60\"]\n",
        "a slow step",
    );
    let job_id = runner.push_queued(&slow).await;
    let (job, log) = runner.job_when_ended(job_id).await;
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("slow timed out after 2s"),
        "{job}"
    );
    assert!(
        containers_of_job(project, job_id).is_empty(),
        "{:?}",
        containers_of_job(project, job_id)
    );

    let hanging = commit(
        repo,
        "steps:\n  - name: hanging\n    commands: [\"sleep 60\"]\n",
        "a hanging step",
    );
    let job_id = runner.push_queued(&hanging).await;
    let running = eventually("the step's container to run", || {
        let containers = containers_of_job(project, job_id);
        containers.iter().any(|c| c.contains("-step-")).then_some(containers)
    })
    .await;
    assert!(!running.is_empty());
    let cancelled = runner
        .client
        .post(runner.url(&format!("/api/jobs/{job_id}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), 200);
    let (job, log) = runner.job_when_ended(job_id).await;
    assert_eq!(job["state"], "cancelled", "{job}\n{log}");
    assert!(
        containers_of_job(project, job_id).is_empty(),
        "{:?}\n{log}",
        containers_of_job(project, job_id)
    );

    // The cache outlived the earlier run of its step.
    std::fs::write(repo.join("notes.txt"), "again\n").expect("write");
    let again = commit(repo, PASSING, "passing again");
    let (job, log) = runner.job_when_ended(runner.push_queued(&again).await).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(log.contains("cached runs: 2"), "{log}");
    runner.stop().await;
}

#[tokio::test]
async fn a_pull_requests_steps_get_no_secret_and_no_way_off_the_closed_network() {
    let bench = Bench::new("prchecks");
    let (id, project, image, registry, repo) = (&bench.id, &bench.project, &bench.image, &bench.registry, bench.repo());
    webapp_repo(repo, &dockerfile(id));
    let runner = start_with_deploy_token(DEPLOY_TOKEN, project, repo, image, |_| {}).await;
    let host = host_address();
    let probe = format!(
        r#"steps:
  - name: for-master
    image: target:test
    when: {{ branch: [master] }}
    commands: ["echo for the master branch"]
  - name: for-release
    image: target:test
    when: {{ branch: [release] }}
    commands: ["echo never"]
  - name: snoop
    image: target:test
    secrets: [DEPLOY_TOKEN]
    timeout: 60s
    services:
      - {{ name: pong, image: "target:pong" }}
    commands:
      - echo "token:[$DEPLOY_TOKEN]"
      - until wget -q -O /tmp/answer http://pong:8080/; do sleep 0.2; done; echo "service said $(cat /tmp/answer)"
      - if wget -q -T 3 -O - http://{registry}/v2/ >/dev/null 2>&1; then echo "registry reached"; else echo "registry out of reach"; fi
      - if wget -q -T 3 -O - http://{host}:{port}/ >/dev/null 2>&1; then echo "host reached"; else echo "host out of reach"; fi
"#,
        port = runner.base.rsplit(':').next().unwrap_or_default()
    );
    let sha = commit(repo, &probe, "a curious pull request");
    let job_id = runner.pull_request_queued(&sha).await;
    let (job, log) = runner.job_when_ended(job_id).await;
    assert_eq!(job["kind"], "verify");
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert_eq!(step(&job, "snoop")["state"], "succeeded");
    // A pull request's steps are judged by the branch it would merge into.
    assert_eq!(step(&job, "for-master")["state"], "succeeded", "{log}");
    assert_eq!(step(&job, "for-release")["state"], "skipped", "{log}");
    assert!(log.contains("token:[]"), "no secret in a pull request's step:\n{log}");
    assert!(log.contains("secrets withheld"), "and the log says so:\n{log}");
    assert!(
        log.contains("registry out of reach") && log.contains("host out of reach"),
        "{log}"
    );
    assert!(
        log.contains(&format!("service said pong-{id}")),
        "the service answers by its name:\n{log}"
    );
    assert!(
        containers_of_job(project, job_id).is_empty(),
        "{:?}",
        containers_of_job(project, job_id)
    );

    // The project's own images are not a stranger's to run, even on the engine that holds them.
    let deployed = format!("{image}:{}", "f".repeat(40));
    let own = commit(
        repo,
        &format!("steps:\n  - name: own\n    image: \"{deployed}\"\n    commands: [\"cat /app-id\"]\n"),
        "run the deployed image",
    );
    let (job, log) = runner.job_when_ended(runner.pull_request_queued(&own).await).await;
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot run the project's own images"), "{error}");
    runner.stop().await;
}

/// A push of `after` to master that says the branch was at `before`.
async fn push_since(runner: &TestRunner, before: &str, after: &str) -> i64 {
    let mut body: Value = serde_json::from_slice(&push_body("refs/heads/master", after)).expect("json");
    body["before"] = before.into();
    let response = runner.deliver("push", &serde_json::to_vec(&body).expect("json")).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id")
}

const PATHS: &str = r#"steps:
  - name: sources
    image: target:test
    when: { paths: ["src/**"] }
    commands: ["echo sources changed"]
  - name: always
    image: target:test
    commands: ["echo always"]
paths_ignore: ["docs/**"]
"#;

#[tokio::test]
async fn what_a_push_changed_decides_which_steps_run_and_a_push_of_ignored_files_deploys_nothing() {
    let bench = Bench::new("paths");
    let (id, project, image, registry, repo) = (&bench.id, &bench.project, &bench.image, &bench.registry, bench.repo());
    let initial = webapp_repo(repo, &dockerfile(id));
    let runner = start_with_deploy_token(DEPLOY_TOKEN, project, repo, image, |_| {}).await;

    // The file itself changed, no source: `sources` is skipped, saying why.
    let with_file = commit(repo, PATHS, "add .runner.yml");
    let (job, log) = runner
        .job_when_ended(push_since(&runner, &initial, &with_file).await)
        .await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert_eq!(step(&job, "sources")["state"], "skipped", "{log}");
    assert!(
        step(&job, "sources")["error"]
            .as_str()
            .unwrap_or_default()
            .contains("when.paths"),
        "{job}"
    );
    assert_eq!(step(&job, "always")["state"], "succeeded");

    // Only documentation: nothing built, pushed or deployed, and the job says why.
    std::fs::create_dir_all(repo.join("docs")).expect("mkdir");
    std::fs::write(repo.join("docs/guide.md"), "how to\n").expect("write");
    let docs = commit(repo, PATHS, "docs only");
    let (job, log) = runner
        .job_when_ended(push_since(&runner, &with_file, &docs).await)
        .await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert_eq!(step(&job, "pipeline")["state"], "skipped", "{job}");
    assert!(
        step(&job, "pipeline")["error"]
            .as_str()
            .unwrap_or_default()
            .contains("paths_ignore"),
        "{job}"
    );
    assert_eq!(step(&job, "build")["state"], "skipped");
    assert_eq!(step(&job, "push")["state"], "skipped");
    assert!(!in_registry(registry, image, &docs).await, "nothing was pushed");
    assert!(job["deployment"].is_null(), "nothing was deployed: {job}");

    // A source change runs `sources`; an unknown `before` (a new branch) runs everything.
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    std::fs::write(repo.join("src/lib.txt"), "code\n").expect("write");
    let source = commit(repo, PATHS, "a source change");
    let (job, log) = runner.job_when_ended(push_since(&runner, &docs, &source).await).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert_eq!(step(&job, "sources")["state"], "succeeded", "{log}");
    assert!(log.contains("sources changed"), "{log}");
    std::fs::write(repo.join("docs/guide.md"), "how to, again\n").expect("write");
    let unknown = commit(repo, PATHS, "docs, on a new branch");
    let (job, log) = runner
        .job_when_ended(push_since(&runner, &"0".repeat(40), &unknown).await)
        .await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert_eq!(
        step(&job, "sources")["state"],
        "succeeded",
        "changes unknown: every step runs\n{log}"
    );
    assert!(
        in_registry(registry, image, &unknown).await,
        "changes unknown: deployed"
    );
    runner.stop().await;
}
