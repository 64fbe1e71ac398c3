//! Deploys with terraform steps and ECS rollouts, end to end: a signed delivery, the real
//! build, smoke test and push (local engine and registry), real Terraform plan/apply
//! (fixture modules with built-in resources only), approval over the API, and ECS on moto.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

struct Setup {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    state: PathBuf,
    registry: String,
    image: String,
    project: String,
    _cleanup: EngineCleanup,
}

fn setup() -> Setup {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    required_env("TERRAFORM_BIN", "install Terraform (scripts/services.sh install)");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    webapp_repo(&repo, WEBAPP_DOCKERFILE);
    let infra = repo.join("infra");
    std::fs::create_dir_all(&infra).expect("mkdir");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/terraform/app/main.tf"),
        infra.join("main.tf"),
    )
    .expect("copy the module");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "infrastructure"]);
    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("infra{unique}");
    let image = format!("runner-infra-{unique}");
    Setup {
        state: dir.path().join("state.tfstate"),
        _cleanup: EngineCleanup {
            container: format!("runner-{project}-production"),
            references: vec![
                format!("{image}:*"),
                format!("{registry}/{image}:*"),
                format!("{registry}/{image}@*"),
            ],
        },
        _dir: dir,
        repo,
        registry,
        image,
        project,
    }
}

fn head(setup: &Setup) -> String {
    git(&setup.repo, &["rev-parse", "HEAD"])
}

/// The project's config: terraform in `infra/` with local state, and `rollout`.
fn config(setup: &Setup, dir: &Path, approval: bool, rollout: config::Rollout) -> config::Config {
    let mut config = config::with_local_probe(config::runner(dir));
    config.queue = config::Queue {
        workers: Some(2),
        lease_secs: Some(10),
        ..config::Queue::default()
    };
    config.projects = vec![config::Project {
        clone_url: Some(setup.repo.display().to_string()),
        build: Some(config::build(&setup.image)),
        smoke: Some(config::Smoke {
            path: None,
            ..config::webapp_smoke(15)
        }),
        registry: Some(config::v2_registry(&setup.registry)),
        terraform: Some(config::Terraform {
            require_approval: approval,
            lock_timeout_secs: Some(5),
            plan_pull_requests: true,
            ..config::terraform("infra", &setup.state)
        }),
        rollout: Some(rollout),
        ..config::project(&setup.project, REPOSITORY, &["master"], "HELLO_SECRET")
    }];
    config::with_proxy(config)
}

fn local_rollout(port: u16) -> config::Rollout {
    config::local_rollout(port, Some(30))
}

async fn wait_for_state(runner: &TestRunner, job_id: i64, wanted: &[&str]) -> Value {
    for _ in 0..1200 {
        let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
        if wanted.iter().any(|w| job["state"] == *w) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} never reached {wanted:?}");
}

async fn push(runner: &TestRunner, sha: &str) -> i64 {
    let response = runner.deliver("push", &push_body("refs/heads/master", sha)).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id")
}

fn step_states(job: &Value) -> Vec<(String, String)> {
    job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_owned(),
                s["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn post(runner: &TestRunner, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = runner.client.post(runner.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST")
}

/// The digest of the plan job `job_id` shows now (what an approval names).
async fn plan_digest(runner: &TestRunner, job_id: i64) -> String {
    let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
    job["plan_digest"]
        .as_str()
        .expect("a job waiting on its plan shows its digest")
        .to_owned()
}

/// `POST /api/jobs/{id}/approve` as the admin, naming the plan by `digest`.
async fn approve(runner: &TestRunner, job_id: i64, digest: Option<&str>) -> reqwest::Response {
    let mut request = runner
        .client
        .post(runner.url(&format!("/api/jobs/{job_id}/approve")))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(digest) = digest {
        request = request.json(&serde_json::json!({ "plan_digest": digest }));
    }
    request.send().await.expect("POST approve")
}

#[tokio::test]
async fn a_deploy_waits_for_approval_of_its_plan_then_applies_exactly_it() {
    let setup = setup();
    let port = free_port();
    let runner = TestRunner::start_with(|dir| config(&setup, dir, true, local_rollout(port))).await;
    let sha = head(&setup);
    let job_id = push(&runner, &sha).await;

    let waiting = wait_for_state(&runner, job_id, &["awaiting_approval", "failed"]).await;
    assert_eq!(waiting["state"], "awaiting_approval", "{waiting}");
    assert_eq!(
        waiting["plan_summary"]["headline"],
        "2 to add, 0 to change, 0 to destroy"
    );
    let steps = step_states(&waiting);
    assert!(steps.contains(&("plan".into(), "succeeded".into())), "{steps:?}");
    assert!(steps.contains(&("approval".into(), "running".into())), "{steps:?}");
    assert!(steps.contains(&("apply".into(), "pending".into())), "{steps:?}");
    let plan_text = runner.get_text(&format!("/api/jobs/{job_id}/plan")).await;
    assert!(plan_text.contains("terraform_data.app will be created"), "{plan_text}");
    // Nothing was applied yet, and the app is not live.
    assert!(
        !setup.state.exists()
            || !std::fs::read_to_string(&setup.state)
                .unwrap_or_default()
                .contains("terraform_data")
    );
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .is_ok_and(|r| r.status().is_server_error()),
        "the route exists, and nothing behind it is live"
    );

    // The dashboard offers the decision to an admin.
    assert_eq!(
        post(&runner, &format!("/api/jobs/{job_id}/approve"), None)
            .await
            .status(),
        401
    );
    assert_eq!(
        post(
            &runner,
            &format!("/api/jobs/{job_id}/approve"),
            Some("wrong-token-wrong-token")
        )
        .await
        .status(),
        401
    );
    let page = runner.get_text(&format!("/jobs/{job_id}")).await;
    assert!(
        page.contains("Terraform plan: 2 to add, 0 to change, 0 to destroy"),
        "{page}"
    );
    assert!(page.contains("terraform_data.app"));

    // The approval names the plan read: its digest is the SHA-256 of the text shown.
    let digest = plan_digest(&runner, job_id).await;
    let plan = runner
        .client
        .get(runner.url(&format!("/api/jobs/{job_id}/plan")))
        .send()
        .await
        .expect("GET plan");
    assert_eq!(plan.headers()["x-plan-digest"].to_str().ok(), Some(digest.as_str()));
    let shown = plan.text().await.expect("text");
    assert_eq!(runner::store::artifacts::ContentDigest::of(&shown).as_str(), digest);
    let missing = approve(&runner, job_id, None).await;
    assert_eq!(missing.status(), 400);
    let error = missing.json::<Value>().await.expect("json")["error"].to_string();
    assert!(error.contains("plan_digest is required"), "{error}");
    let other = approve(&runner, job_id, Some(&"0".repeat(64))).await;
    assert_eq!(other.status(), 409);
    assert_eq!(
        other.json::<Value>().await.expect("json")["error"],
        "the plan changed, read it again"
    );
    let cookie = crate::dashboard::log_in(&runner).await;
    let page = runner
        .client
        .get(runner.url(&format!("/jobs/{job_id}")))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET job page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains(&format!("/jobs/{job_id}/approve?plan_digest={digest}")),
        "the Approve button names the plan shown: {page}"
    );
    let approved = approve(&runner, job_id, Some(&digest)).await;
    assert_eq!(approved.status(), 200);
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["approval"], "approved");
    let steps = step_states(&done);
    for name in [
        "checkout", "build", "smoke", "push", "plan", "approval", "apply", "rollout", "record",
    ] {
        assert!(steps.contains(&(name.into(), "succeeded".into())), "{name}: {steps:?}");
    }
    let deployment = &done["deployment"];
    assert_eq!(deployment["status"], "live");
    let digest = deployment["image_digest"].as_str().expect("digest");
    assert_eq!(
        deployment["outputs"]["image"],
        format!("{}/{}@{digest}", setup.registry, setup.image),
        "terraform got the pushed image, pinned by digest"
    );
    assert_eq!(deployment["outputs"]["app_url"], "http://app.example.test/");
    let version: Value = reqwest::get(format!("http://127.0.0.1:{port}/version"))
        .await
        .expect("live")
        .json()
        .await
        .expect("json");
    assert_eq!(version["commit"], sha.as_str());
    let log = runner.job_log(job_id).await;
    assert!(log.contains("Apply complete! Resources: 2 added"), "{log}");
    // Answered once; a second answer is refused.
    assert_eq!(
        post(&runner, &format!("/api/jobs/{job_id}/reject"), Some(ADMIN_TOKEN))
            .await
            .status(),
        409
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_rejected_plan_applies_nothing() {
    let setup = setup();
    let port = free_port();
    let runner = TestRunner::start_with(|dir| config(&setup, dir, true, local_rollout(port))).await;
    let job_id = push(&runner, &head(&setup)).await;
    wait_for_state(&runner, job_id, &["awaiting_approval"]).await;
    let rejected = post(&runner, &format!("/api/jobs/{job_id}/reject"), Some(ADMIN_TOKEN)).await;
    assert_eq!(rejected.status(), 200);
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "failed");
    assert!(done["error"].as_str().unwrap_or("").contains("rejected"), "{done}");
    let steps = step_states(&done);
    assert!(steps.contains(&("approval".into(), "failed".into())), "{steps:?}");
    assert!(steps.contains(&("apply".into(), "skipped".into())), "{steps:?}");
    // Nothing went live: the deployment is the failed attempt, without an image.
    assert_eq!(done["deployment"]["status"], "failed", "{done}");
    assert_eq!(done["deployment"]["image_ref"], "", "{done}");
    let state = std::fs::read_to_string(&setup.state).unwrap_or_default();
    assert!(!state.contains("terraform_data"), "nothing was applied: {state}");

    runner.stop().await;
}

#[tokio::test]
async fn a_verify_job_stops_after_its_plan() {
    let setup = setup();
    let port = free_port();
    let runner = TestRunner::start_with(|dir| config(&setup, dir, true, local_rollout(port))).await;
    let mut opened = fixture_json("pull_request.opened.payload.json");
    opened["pull_request"]["head"]["sha"] = head(&setup).into();
    opened["pull_request"]["base"]["ref"] = "master".into();
    let response = runner
        .deliver("pull_request", &serde_json::to_vec(&opened).expect("json"))
        .await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id");
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let names: Vec<String> = step_states(&done).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["checkout", "build", "smoke", "plan"]);
    assert_eq!(done["plan_summary"]["add"], 2);
    assert!(
        !setup.state.exists()
            || !std::fs::read_to_string(&setup.state)
                .unwrap_or_default()
                .contains("terraform_data")
    );
    runner.stop().await;
}

async fn ecs_client(endpoint: &str) -> aws_sdk_ecs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_ecs::Client::new(&config)
}

/// A cluster and a service on moto running `desired` tasks of a first revision; returns
/// that revision's ARN.
async fn ecs_service(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str, desired: i32) -> String {
    use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, LaunchType, NetworkMode};
    ecs.create_cluster()
        .cluster_name(cluster)
        .send()
        .await
        .expect("create cluster");
    let registered = ecs
        .register_task_definition()
        .family(service)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("registry.test/app:first")
                .essential(true)
                .build(),
        )
        .send()
        .await
        .expect("register task definition");
    let first = registered
        .task_definition
        .and_then(|t| t.task_definition_arn)
        .expect("arn");
    ecs.create_service()
        .cluster(cluster)
        .service_name(service)
        .task_definition(&first)
        .desired_count(desired)
        .launch_type(LaunchType::Fargate)
        .send()
        .await
        .expect("create service");
    first
}

async fn service_task_definition(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str) -> String {
    ecs.describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .expect("describe")
        .services
        .unwrap_or_default()
        .into_iter()
        .next()
        .and_then(|s| s.task_definition)
        .expect("task definition")
}

fn ecs_rollout(endpoint: &str, cluster: &str, service: &str, timeout: u64) -> config::Rollout {
    config::ecs_rollout(cluster, service, endpoint, timeout)
}

#[tokio::test]
async fn push_to_ecs_on_moto_plans_waits_for_approval_applies_and_becomes_stable() {
    let endpoint = required_env("RUNNER_TEST_AWS_ENDPOINT", "start moto with scripts/services.sh start");
    let setup = setup();
    let ecs = ecs_client(&endpoint).await;
    let (cluster, service) = (format!("c-{}", setup.project), format!("s-{}", setup.project));
    // moto runs 2 tasks per service (MOTO_ECS_SERVICE_RUNNING=2): 2 wanted is stable.
    let first = ecs_service(&ecs, &cluster, &service, 2).await;
    let rollout = ecs_rollout(&endpoint, &cluster, &service, 30);
    let runner = TestRunner::start_with(|dir| config(&setup, dir, true, rollout)).await;
    let sha = head(&setup);
    let job_id = push(&runner, &sha).await;
    wait_for_state(&runner, job_id, &["awaiting_approval"]).await;
    let digest = plan_digest(&runner, job_id).await;
    assert_eq!(approve(&runner, job_id, Some(&digest)).await.status(), 200);
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    let deployment = &done["deployment"];
    assert_eq!(deployment["status"], "live");
    assert_eq!(
        deployment["url"], "http://app.example.test/",
        "the URL comes from terraform's app_url"
    );
    let pushed = format!(
        "{}/{}@{}",
        setup.registry,
        setup.image,
        deployment["image_digest"].as_str().expect("digest")
    );
    assert_eq!(deployment["outputs"]["image"], pushed.as_str());
    let now_running = service_task_definition(&ecs, &cluster, &service).await;
    assert_ne!(now_running, first, "the service moved to a new revision");
    assert_eq!(
        service_image(&ecs, &cluster, &service).await,
        pushed,
        "the new revision runs the pushed image"
    );
    runner.stop().await;
}

#[tokio::test]
async fn an_ecs_service_that_never_stabilises_times_out_and_is_rolled_back() {
    let endpoint = required_env("RUNNER_TEST_AWS_ENDPOINT", "start moto with scripts/services.sh start");
    let setup = setup();
    let ecs = ecs_client(&endpoint).await;
    let (cluster, service) = (format!("c-{}", setup.project), format!("n-{}", setup.project));
    // Wants 5 tasks where moto runs 2: never stable.
    let first = ecs_service(&ecs, &cluster, &service, 5).await;
    let rollout = ecs_rollout(&endpoint, &cluster, &service, 4);
    let runner = TestRunner::start_with(|dir| {
        let mut config = config(&setup, dir, false, rollout);
        // This project rolls out without terraform: the runner registers the revision.
        config.projects[0].terraform = None;
        config
    })
    .await;
    let started = std::time::Instant::now();
    let job_id = push(&runner, &head(&setup)).await;
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or("");
    assert!(error.contains("did not become stable"), "{error}");
    assert!(error.contains("rolled back"), "{error}");
    assert_eq!(done["deployment"]["status"], "rolled_back");
    assert_eq!(
        service_task_definition(&ecs, &cluster, &service).await,
        first,
        "the previous revision is back"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "bounded by the rollout timeout"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_plan_gone_stale_while_waiting_is_planned_again_and_needs_a_new_approval() {
    use runner::adapters::terraform::{Module, Terraform, TerraformCli};
    let setup = setup();
    let port = free_port();
    let runner = TestRunner::start_with(|dir| config(&setup, dir, true, local_rollout(port))).await;
    let job_id = push(&runner, &head(&setup)).await;
    wait_for_state(&runner, job_id, &["awaiting_approval"]).await;

    // Someone else changes the same state while the plan waits.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::fs::copy(setup.repo.join("infra/main.tf"), elsewhere.path().join("main.tf")).expect("copy");
    let other = Module {
        bin: PathBuf::from(required_env("TERRAFORM_BIN", "scripts/services.sh install")),
        dir: elsewhere.path().to_owned(),
        home: elsewhere.path().join("home"),
        vars: [("image_url".to_owned(), "registry.test/someone-else@sha256:0".to_owned())].into(),
        backend_config: [("path".to_owned(), setup.state.display().to_string())].into(),
        env: Default::default(),
        workspace: "default".into(),
        lock_timeout: Duration::from_secs(5),
        lock_state: true,
        ..Module::default()
    };
    let other = TerraformCli::from(other);
    let (runner_job_log, writer) = runner::joblog::JobLog::start(
        runner.pool.clone(),
        runner::domain::JobId::new(job_id).expect("id"),
        Default::default(),
        Default::default(),
    );
    let never = tokio_util::sync::CancellationToken::new();
    other.prepare(&runner_job_log, &never).await.expect("init");
    let plan = elsewhere.path().join("other.tfplan");
    other.plan(&plan, &runner_job_log, &never).await.expect("plan");
    other.apply(&plan, &runner_job_log, &never).await.expect("apply");
    drop(runner_job_log);
    writer.flush().await;

    let first_plan = plan_digest(&runner, job_id).await;
    assert_eq!(approve(&runner, job_id, Some(&first_plan)).await.status(), 200);
    // The approved plan is stale: the job plans again and asks again.
    let mut asked_again = None;
    for _ in 0..600 {
        let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
        if job["state"] == "awaiting_approval" && job["approval"].is_null() {
            asked_again = Some(job);
            break;
        }
        assert!(!matches!(job["state"].as_str(), Some("succeeded" | "failed")), "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = asked_again.expect("the job asks for approval of the new plan");
    assert_eq!(
        again["plan_summary"]["change"], 1,
        "the new plan updates what the other apply made: {again}"
    );
    // A late click on the first plan does not approve the new one nobody read.
    let late = approve(&runner, job_id, Some(&first_plan)).await;
    assert_eq!(late.status(), 409);
    assert_eq!(
        late.json::<Value>().await.expect("json")["error"],
        "the plan changed, read it again"
    );
    let second_plan = plan_digest(&runner, job_id).await;
    assert_ne!(second_plan, first_plan);
    assert_eq!(approve(&runner, job_id, Some(&second_plan)).await.status(), 200);
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let log = runner.job_log(job_id).await;
    assert!(log.contains("the saved plan is stale"), "{log}");
    runner.stop().await;
}

#[tokio::test]
async fn a_deploy_and_its_rollback_report_statuses_and_deployments_to_github() {
    use crate::common::fake_github::*;
    let setup = setup();
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let port = free_port();
    let runner = start_runner(|dir| with_github(config(&setup, dir, false, local_rollout(port)), &api, false)).await;
    let sha = head(&setup);
    let job_id = push(&runner, &sha).await;
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let deployment_id = done["deployment"]["id"].as_i64().expect("deployment");
    let rollback = post(
        &runner,
        &format!("/api/deployments/{deployment_id}/rollback"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(rollback.status(), 202);
    let rollback_job = rollback.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job");
    let rolled = wait_for_state(&runner, rollback_job, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(rolled["state"], "succeeded", "{rolled}");

    let deployment_states = eventually("both deployments reported", || {
        let states: Vec<String> = fake
            .deployment_statuses()
            .iter()
            .filter_map(|b| b["state"].as_str().map(str::to_owned))
            .collect();
        (states.iter().filter(|s| *s == "success").count() == 2).then_some(states)
    })
    .await;
    assert_eq!(deployment_states, ["in_progress", "success", "in_progress", "success"]);
    let app_url = format!("http://127.0.0.1:{port}");
    let successes: Vec<Value> = fake
        .deployment_statuses()
        .into_iter()
        .filter(|b| b["state"] == "success")
        .collect();
    assert_eq!(successes[0]["environment_url"], app_url.as_str());
    let created: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/deployments"))
        .map(|r| r.body)
        .collect();
    assert_eq!(created.len(), 2, "a rollback is a deployment of its own");
    assert!(
        created
            .iter()
            .all(|d| d["ref"] == sha.as_str() && d["environment"] == "production")
    );
    assert!(
        created[1]["description"].as_str().unwrap_or("").contains("rollback"),
        "{created:?}"
    );
    let statuses: Vec<(String, String)> = fake
        .statuses()
        .into_iter()
        .filter(|(s, _, _, _)| *s == sha)
        .map(|(_, state, context, _)| (state, context))
        .collect();
    assert_eq!(
        statuses[0],
        ("pending".to_owned(), "runner/deploy (production)".to_owned())
    );
    assert!(
        statuses.iter().filter(|(state, _)| state == "success").count() >= 2,
        "{statuses:?}"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_pull_request_verify_puts_its_plan_summary_on_github() {
    use crate::common::fake_github::*;
    let setup = setup();
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let port = free_port();
    let runner = start_runner(|dir| with_github(config(&setup, dir, true, local_rollout(port)), &api, false)).await;
    let mut opened = fixture_json("pull_request.opened.payload.json");
    opened["pull_request"]["head"]["sha"] = head(&setup).into();
    let response = runner
        .deliver("pull_request", &serde_json::to_vec(&opened).expect("json"))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job");
    let job = wait_for_state(&runner, job_id, &["succeeded", "failed"]).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", runner.job_log(job_id).await);
    let verdict = eventually("the verify job's final status", || {
        fake.statuses().into_iter().find(|(_, state, _, _)| state == "success")
    })
    .await;
    assert_eq!(verdict.0, head(&setup));
    assert_eq!(verdict.2, "runner/verify (production)");
    assert!(
        verdict.3.contains("plan: 2 to add, 0 to change, 0 to destroy"),
        "{verdict:?}"
    );
    assert!(
        fake.requests().iter().all(|r| !r.path.contains("/deployments")),
        "a pull request is no deployment"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_failed_smoke_test_is_reported_to_github_with_what_it_answered() {
    use crate::common::fake_github::*;
    let setup = setup();
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let port = free_port();
    let runner = start_runner(|dir| {
        let mut config = with_github(config(&setup, dir, false, local_rollout(port)), &api, false);
        let smoke = config.projects[0].smoke.as_mut().expect("smoke");
        smoke.expect_body = Some("sick".into());
        smoke.timeout_secs = Some(3);
        config
    })
    .await;
    let sha = head(&setup);
    let job_id = push(&runner, &sha).await;
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "failed", "{done}");
    let failure = eventually("the failure status", || {
        fake.statuses().into_iter().find(|(_, state, _, _)| state == "failure")
    })
    .await;
    assert_eq!(failure.0, sha);
    assert!(
        failure.3.starts_with("smoke failed: /health answered"),
        "says what happened: {failure:?}"
    );
    let states: Vec<String> = eventually("the deployment's failure", || {
        let states: Vec<String> = fake
            .deployment_statuses()
            .iter()
            .filter_map(|b| b["state"].as_str().map(str::to_owned))
            .collect();
        states.contains(&"failure".to_owned()).then_some(states)
    })
    .await;
    assert_eq!(states, ["in_progress", "failure"]);
    runner.stop().await;
}

/// The image a service's current revision runs.
async fn service_image(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str) -> String {
    let revision = service_task_definition(ecs, cluster, service).await;
    ecs.describe_task_definition()
        .task_definition(&revision)
        .send()
        .await
        .expect("describe")
        .task_definition
        .and_then(|t| t.container_definitions)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.image)
        .expect("image")
}

#[tokio::test]
async fn on_ecs_each_environment_has_its_service_and_a_promotion_moves_stagings_digest_to_production() {
    let endpoint = required_env("RUNNER_TEST_AWS_ENDPOINT", "start moto with scripts/services.sh start");
    let setup = setup();
    let ecs = ecs_client(&endpoint).await;
    let cluster = format!("c-{}", setup.project);
    let (staging, production) = (format!("stg-{}", setup.project), format!("prd-{}", setup.project));
    ecs_service(&ecs, &cluster, &staging, 2).await;
    let production_first = ecs_service(&ecs, &cluster, &production, 2).await;
    let (staging_rollout, production_rollout) = (
        ecs_rollout(&endpoint, &cluster, &staging, 30),
        ecs_rollout(&endpoint, &cluster, &production, 30),
    );
    let runner = TestRunner::start_with(|dir| {
        let mut config = config(&setup, dir, false, staging_rollout.clone());
        let project = &mut config.projects[0];
        project.terraform = None;
        project.deploy_branches.clear();
        project.rollout = None;
        project.environments = vec![
            config::Environment {
                name: "staging".into(),
                branches: vec!["develop".into()],
                rollout: Some(staging_rollout),
                ..config::Environment::default()
            },
            config::Environment {
                name: "production".into(),
                branches: vec!["master".into()],
                rollout: Some(production_rollout),
                ..config::Environment::default()
            },
        ];
        config
    })
    .await;
    let response = runner
        .deliver("push", &push_body("refs/heads/develop", &head(&setup)))
        .await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["environment"], "staging");
    let pushed = format!(
        "{}/{}@{}",
        setup.registry,
        setup.image,
        done["deployment"]["image_digest"].as_str().expect("digest")
    );
    assert_eq!(service_image(&ecs, &cluster, &staging).await, pushed);
    assert_eq!(
        service_task_definition(&ecs, &cluster, &production).await,
        production_first,
        "production is untouched by a push to develop"
    );

    let promoted = reqwest::Client::new()
        .post(runner.url(&format!("/api/projects/{}/promote", setup.project)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "from": "staging", "to": "production" }))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(promoted.status(), 202);
    let job_id = promoted.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let done = wait_for_state(&runner, job_id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["deployment"]["trigger"], "promote");
    assert_eq!(
        service_image(&ecs, &cluster, &production).await,
        pushed,
        "production runs exactly staging's digest"
    );
    runner.stop().await;
}
