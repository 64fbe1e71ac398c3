//! `runner demo` end to end on this machine: the real binary, the local Docker engine,
//! Debian's docker-registry started by the demo itself, two runs, then `--clean`.
//! Needs `WEBAPP_STATIC_BIN` and docker-registry (scripts/test provides both).

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;
use serde_json::Value;

fn demo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("demo")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("runner demo runs")
}

/// The app URL and commit from the demo's closing lines.
fn printed_app(stdout: &str) -> (String, String) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("App:"))
        .unwrap_or_else(|| panic!("no App: line in\n{stdout}"));
    let url = line
        .split_whitespace()
        .nth(1)
        .expect("url")
        .trim_end_matches('/')
        .to_owned();
    let commit = line
        .rsplit(' ')
        .next()
        .expect("commit")
        .trim_end_matches(')')
        .to_owned();
    (url, commit)
}

async fn version_at(url: &str) -> Value {
    reqwest::get(format!("{url}/version"))
        .await
        .expect("the printed app URL answers")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn the_demo_deploys_the_webapp_twice_and_cleans_up() {
    let webapp_bin = required_env("WEBAPP_STATIC_BIN", "build it with scripts/build-webapp-static");
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("demo");
    let (port, app_port) = (free_port().to_string(), free_port().to_string());
    let args = [
        "--port",
        &port,
        "--app-port",
        &app_port,
        "--webapp-bin",
        &webapp_bin,
        "--exit",
    ];

    let first = demo(&dir, &args);
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for step in ["checkout", "build", "test", "smoke", "push", "rollout", "record"] {
        assert!(
            stdout.contains(&format!("✓ {step}")),
            "progress shows {step}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("Dashboard: http://127.0.0.1:{port}/")),
        "{stdout}"
    );
    let (url, commit) = printed_app(&stdout);
    assert_eq!(url, format!("http://127.0.0.1:{app_port}"));
    assert_eq!(commit, git(&dir.join("repo"), &["rev-parse", "HEAD"]));
    assert_eq!(version_at(&url).await["commit"], commit.as_str());

    let second = demo(&dir, &args);
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "second run failed: {stdout}");
    let (url, second_commit) = printed_app(&stdout);
    assert_ne!(second_commit, commit, "a second run deploys a second commit");
    assert_eq!(version_at(&url).await["commit"], second_commit.as_str());

    // Both deployments are on record, readable with the operator CLI from the database.
    let listed = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["deployments", "--json", "--config"])
        .arg(dir.join("runner.toml"))
        .env("DEMO_WEBHOOK_SECRET", "only-needed-to-load-the-config")
        .output()
        .expect("runner deployments");
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let deployments: Value = serde_json::from_slice(&listed.stdout).expect("json");
    let shas: Vec<&str> = deployments
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["sha"].as_str())
        .collect();
    assert_eq!(shas, [second_commit.as_str(), commit.as_str()]);

    let cleaned = demo(&dir, &["--clean"]);
    assert!(cleaned.status.success(), "{}", String::from_utf8_lossy(&cleaned.stderr));
    assert!(!dir.exists(), "the demo directory is removed");
    let left = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            "name=runner-demo-production",
        ])
        .output()
        .expect("docker CLI");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "the app container is removed"
    );
    assert!(
        reqwest::get(format!("{url}/version")).await.is_err(),
        "the app no longer answers"
    );
}

#[tokio::test]
async fn a_port_in_use_is_one_clear_sentence_with_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let work = tempfile::tempdir().expect("tempdir");
    let output = demo(&work.path().join("demo"), &["--port", &port, "--exit"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("Port {port} is in use")), "{stderr}");
    assert!(stderr.contains("--port"), "{stderr}");
}
