//! The operator commands of the `runner` binary against a running runner: output, JSON,
//! and exit codes that scripts rely on (0 done, 1 failed, 2 bad usage or configuration).

use crate::common::*;
use serde_json::Value;

async fn runner_cli(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runner"));
    command
        .args(args)
        .env_remove("RUNNER_ADMIN_TOKEN")
        .env_remove("RUNNER_URL");
    if let Some(token) = token {
        command.env("RUNNER_ADMIN_TOKEN", token);
    }
    let output = command.output().await.expect("runner runs");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn operator_commands_list_and_act_through_the_api() {
    let runner = TestRunner::start().await;
    let delivery = unique_delivery_id();
    let sha = "1".repeat(40);
    let response = runner
        .deliver_signed("push", &push_body("refs/heads/master", &sha), Some(SECRET), &delivery)
        .await;
    assert_eq!(response.status(), 202);
    let base = runner.base.clone();

    let (code, stdout, _) = runner_cli(&["jobs", "--url", &base], None).await;
    assert_eq!(code, 0);
    let header = stdout.lines().next().expect("a header");
    assert!(header.starts_with("ID") && header.contains("STATE"), "{stdout}");
    assert!(stdout.contains("1111111"), "{stdout}");
    let (code, stdout, _) = runner_cli(&["jobs", "--url", &base, "--json", "--limit", "5"], None).await;
    assert_eq!(code, 0);
    let jobs: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(jobs[0]["sha"], sha.as_str());
    // A project name is a value, never more query parameters.
    let (code, stdout, _) = runner_cli(&["jobs", "--url", &base, "--project", "hello&project=hello"], None).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("(none)"), "{stdout}");

    // Actions: a token is required, and failures exit non-zero with the runner's reason.
    let (code, _, stderr) = runner_cli(&["deploy", "hello", &sha, "--url", &base], None).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("RUNNER_ADMIN_TOKEN"), "{stderr}");
    let (code, stdout, stderr) = runner_cli(&["deploy", "hello", &sha, "--url", &base], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("queued job "), "{stdout}");
    let (code, _, stderr) = runner_cli(
        &["deploy", "hello", &sha, "--url", &base],
        Some("wrong-token-wrong-token"),
    )
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("401"), "{stderr}");
    let (code, _, stderr) = runner_cli(&["rollback", "999", "--url", &base], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("deployment 999 does not exist"), "{stderr}");
    let (code, stdout, stderr) = runner_cli(&["replay", &delivery, "--url", &base, "--json"], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 0, "{stderr}");
    let replayed: Value = serde_json::from_str(&stdout).expect("json");
    let job = runner.get_json(&format!("/api/jobs/{}", replayed["job_id"])).await;
    assert_eq!(job["trigger"], "replay");
    // --wait follows the job: this project's checkout fails, so the command fails.
    let (code, stdout, _) = runner_cli(&["deploy", "hello", &sha, "--url", &base, "--wait"], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 1);
    assert!(stdout.contains("failed"), "{stdout}");

    // Jobs filtered by kind and state; the failed step and the error's first line shown.
    let (code, stdout, _) = runner_cli(
        &[
            "jobs", "--url", &base, "--kind", "deploy", "--state", "failed", "--json",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0);
    let failed: Value = serde_json::from_str(&stdout).expect("json");
    let failed = failed.as_array().expect("a list");
    assert!(!failed.is_empty());
    assert!(
        failed.iter().all(|j| j["state"] == "failed" && j["kind"] == "deploy"),
        "{stdout}"
    );
    assert_eq!(failed[0]["failed_step"], "checkout");
    let (code, stdout, _) = runner_cli(&["jobs", "--url", &base, "--state", "failed"], None).await;
    assert_eq!(code, 0);
    assert!(
        stdout.lines().next().is_some_and(|h| h.contains("FAILED AT")),
        "{stdout}"
    );
    assert!(stdout.contains("checkout"), "{stdout}");
    let (code, _, stderr) = runner_cli(&["jobs", "--url", &base, "--state", "broken"], None).await;
    assert_eq!(code, 2, "{stderr}");

    // Cancel, approve and reject answer like the other actions.
    let (code, stdout, stderr) =
        runner_cli(&["deploy", "hello", &"2".repeat(40), "--url", &base], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 0, "{stderr}");
    let queued: i64 = stdout
        .trim()
        .trim_start_matches("queued job ")
        .parse()
        .expect("a job id");
    let (code, stdout, stderr) = runner_cli(
        &["cancel", &queued.to_string(), "--url", &base, "--json"],
        Some(ADMIN_TOKEN),
    )
    .await;
    if code == 0 {
        let answer: Value = serde_json::from_str(&stdout).expect("json");
        assert_eq!(answer["job_id"], queued);
    } else {
        // The job had already failed at its checkout by the time it was asked.
        assert!(stderr.contains("already finished"), "{stderr}");
    }
    for action in ["approve", "reject"] {
        let (code, _, stderr) = runner_cli(&[action, &queued.to_string(), "--url", &base], Some(ADMIN_TOKEN)).await;
        assert_eq!(code, 1, "{action}: {stderr}");
        assert!(stderr.contains("is not waiting for approval"), "{stderr}");
    }
    let (code, _, stderr) = runner_cli(&["cancel", "999", "--url", &base], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("job 999 does not exist"), "{stderr}");

    let closed = free_port();
    let (code, _, stderr) = runner_cli(&["jobs", "--url", &format!("http://127.0.0.1:{closed}")], None).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach the runner"), "{stderr}");
    runner.stop().await;
}

#[tokio::test]
async fn every_subcommand_has_help() {
    let (code, stdout, _) = runner_cli(&["--help"], None).await;
    assert_eq!(code, 0);
    for command in [
        "serve",
        "check-config",
        "migrate",
        "demo",
        "jobs",
        "deployments",
        "deploy",
        "rollback",
        "replay",
        "approve",
        "reject",
        "cancel",
        "healthcheck",
    ] {
        assert!(stdout.contains(command), "--help lists {command}");
        let (code, help, _) = runner_cli(&[command, "--help"], None).await;
        assert_eq!(code, 0, "{command} --help");
        assert!(help.contains("Usage: runner"), "{help}");
    }
    let (code, _, stderr) = runner_cli(&["rollback", "not-a-number"], None).await;
    assert_eq!(code, 2, "{stderr}");
}
