//! No replays: a delivery cannot move an environment backwards. A push older than what is
//! live or queued queues nothing, a body recorded before under another delivery id is a
//! duplicate, and an admin's rollback still goes back. Runs on SQLite, and on PostgreSQL
//! with `RUNNER_TEST_DATABASE=postgres`.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// A push of `sha` to master that GitHub received at `pushed_at` (seconds).
fn push_at(sha: &str, pushed_at: i64) -> Vec<u8> {
    let mut push = fixture_json("push.with-no-username-committer.payload.json");
    push["after"] = sha.into();
    push["repository"]["pushed_at"] = pushed_at.into();
    serde_json::to_vec(&push).expect("json")
}

/// Nothing runs: every deploy stays queued (or superseded).
fn nothing_runs(dir: &Path) -> config::Config {
    let mut config = default_config(dir);
    config.projects[0].runs_on = vec!["nowhere".to_owned()];
    config
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// Pushes `sha`, lets its job end (unconfigured, it fails at once) and records it live as
/// the pipeline would; returns (job id, deployment id).
async fn live(runner: &TestRunner, sha: &str, pushed_at: i64) -> (i64, i64) {
    let (status, answer) = json_of(runner.deliver("push", &push_at(sha, pushed_at)).await).await;
    assert_eq!(status, 202, "{answer}");
    let job_id = answer["job_id"].as_i64().expect("job id");
    runner.wait_for_job_end(job_id).await;
    (job_id, record_live(runner, job_id, sha, "http://127.0.0.1:1/").await)
}

async fn live_sha(runner: &TestRunner) -> String {
    let page = runner.get_json("/api/deployments").await;
    let live: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|d| d["status"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "{page}");
    live[0]["sha"].as_str().expect("sha").to_owned()
}

const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";
const PUSHED: i64 = 1_700_000_000;

#[tokio::test]
async fn an_older_push_after_a_newer_one_is_live_is_stale_and_queues_nothing() {
    let runner = TestRunner::start().await;
    // The old push's body, as an attacker would have captured it.
    let old_body = push_at(OLD, PUSHED);
    let (status, _) = json_of(runner.deliver("push", &old_body).await).await;
    assert_eq!(status, 202);
    live(&runner, NEW, PUSHED + 60).await;
    let jobs_before = runner.count("jobs").await;

    // Sent again as a new delivery: the body's digest makes it a duplicate...
    let (status, answer) = json_of(runner.deliver("push", &old_body).await).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)), "{answer}");
    // ...and an old push never seen before (another body, same time) is stale.
    let mut other = fixture_json("push.with-no-username-committer.payload.json");
    other["after"] = OLD.into();
    other["repository"]["pushed_at"] = PUSHED.into();
    other["head_commit"]["message"] = "the same push, another body".into();
    let (status, answer) = json_of(runner.deliver("push", &serde_json::to_vec(&other).expect("json")).await).await;
    assert_eq!(status, 200, "{answer}");
    let reason = answer["ignored"].as_str().unwrap_or_default();
    assert!(reason.starts_with("stale push: "), "{answer}");
    assert!(reason.contains(&NEW[..12]), "names the newer commit: {reason}");
    assert!(answer.get("job_id").is_none(), "{answer}");

    assert_eq!(runner.count("jobs").await, jobs_before, "nothing was queued");
    assert_eq!(live_sha(&runner).await, NEW, "the live version is unchanged");
    // The delivery is recorded, ignored, with the reason.
    let deliveries = runner.get_json("/api/deliveries").await;
    assert_eq!(deliveries["items"][0]["outcome"], "ignored", "{deliveries}");
    assert_eq!(deliveries["items"][0]["reason"].as_str(), Some(reason));
    runner.stop_quickly().await;
}

#[tokio::test]
async fn an_older_push_after_a_newer_one_is_queued_is_stale_and_a_newer_one_still_supersedes() {
    let runner = TestRunner::start_on_fakes(nothing_runs).await;
    let (status, newer) = json_of(runner.deliver("push", &push_at(NEW, PUSHED + 60)).await).await;
    assert_eq!(status, 202);
    let (status, answer) = json_of(runner.deliver("push", &push_at(OLD, PUSHED)).await).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .is_some_and(|r| r.starts_with("stale push: ")),
        "{answer}"
    );
    assert_eq!(runner.count("jobs").await, 1);

    // A push newer than the queued one supersedes it, as ever; one in the same second as
    // the queued one is not stale either (GitHub's time has whole seconds).
    let newest = "3333333333333333333333333333333333333333";
    let (status, answer) = json_of(runner.deliver("push", &push_at(newest, PUSHED + 60)).await).await;
    assert_eq!(status, 202, "{answer}");
    let job = runner.get_json(&format!("/api/jobs/{}", newer["job_id"])).await;
    assert_eq!(job["state"], "superseded", "{job}");
    let queued: Vec<String> = runner.get_json("/api/jobs?state=queued").await["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|j| j["sha"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(queued, [newest]);
    runner.stop_quickly().await;
}

#[tokio::test]
async fn the_same_body_under_another_delivery_id_is_a_duplicate_of_the_first() {
    let runner = TestRunner::start_on_fakes(nothing_runs).await;
    let body = push_at(NEW, PUSHED);
    let (status, first) = json_of(runner.deliver("push", &body).await).await;
    assert_eq!(status, 202);
    for _ in 0..2 {
        let (status, again) = json_of(runner.deliver("push", &body).await).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], true, "{again}");
        assert_eq!(again["job_id"], first["job_id"], "{again}");
    }
    // A pull request's body, replayed, likewise.
    let pull_request = fixture("pull_request.opened.payload.json");
    let (status, opened) = json_of(runner.deliver("pull_request", &pull_request).await).await;
    assert_eq!(status, 202, "{opened}");
    let (status, again) = json_of(runner.deliver("pull_request", &pull_request).await).await;
    assert_eq!((status, &again["duplicate"]), (200, &Value::Bool(true)), "{again}");
    assert_eq!(again["job_id"], opened["job_id"]);
    assert_eq!(runner.count("jobs").await, 2);
    assert_eq!(runner.count("deliveries").await, 2, "copies are answered, not recorded");
    runner.stop_quickly().await;
}

#[tokio::test]
async fn copies_of_one_body_sent_at_once_under_many_ids_make_one_job() {
    let runner = TestRunner::start_on_fakes(nothing_runs).await;
    let body = push_at(NEW, PUSHED);
    let answers =
        futures_util::future::join_all((0..20).map(|_| async { json_of(runner.deliver("push", &body).await).await }))
            .await;
    let queued: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 202).map(|(_, a)| a).collect();
    assert_eq!(queued.len(), 1, "{answers:?}");
    for (status, answer) in &answers {
        if *status == 200 {
            assert_eq!(answer["duplicate"], true, "{answer}");
            assert_eq!(answer["job_id"], queued[0]["job_id"], "{answer}");
        }
    }
    assert_eq!(runner.count("jobs").await, 1);
    runner.stop_quickly().await;
}

#[tokio::test]
async fn an_admin_rollback_still_goes_back_and_later_pushes_deploy_again() {
    let runner = TestRunner::start().await;
    let (_, old_deployment) = live(&runner, OLD, PUSHED).await;
    live(&runner, NEW, PUSHED + 60).await;
    let response = runner
        .client
        .post(runner.url(&format!("/api/deployments/{old_deployment}/rollback")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST rollback");
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 202, "{answer}");
    let job = runner.get_json(&format!("/api/jobs/{}", answer["job_id"])).await;
    assert_eq!(
        (job["trigger"].as_str(), job["sha"].as_str()),
        (Some("rollback"), Some(OLD))
    );
    // A push made after the rollback deploys as ever.
    let now = runner::store::now_ms() / 1000 + 1;
    let (status, answer) = json_of(
        runner
            .deliver("push", &push_at("4444444444444444444444444444444444444444", now))
            .await,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    runner.stop_quickly().await;
}
