//! Reporting to GitHub and recovering missed deliveries, against a local server that plays
//! the REST endpoints the runner uses (paths, methods and fields as GitHub documents them),
//! records every request, and can fail with 5xx, rate-limit with 403, or hang.

use std::path::Path;
use std::time::Duration;

use crate::common::fake_github::*;
use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_failed_job_reports_pending_then_failure_and_its_deployment_fails() {
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let runner = start_runner_on_fakes(|dir| with_github(default_config(dir), &api, false)).await;
    let sha = "a".repeat(40);
    let response = runner.deliver("push", &push_body("refs/heads/master", &sha)).await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = runner.wait_for_job_end(job_id).await;
    assert_eq!(job["state"], "failed");

    let statuses = eventually("a final status", || {
        let s = fake.statuses();
        s.iter().any(|(_, state, _, _)| state == "failure").then_some(s)
    })
    .await;
    assert_eq!(statuses[0].1, "pending", "{statuses:?}");
    let last = statuses.last().expect("status");
    assert_eq!(last.0, sha);
    assert_eq!(last.2, "runner/deploy (production)");
    assert!(last.3.contains("checkout failed"), "says what happened: {last:?}");
    let status_request = fake
        .requests()
        .into_iter()
        .find(|r| r.path.contains("/statuses/"))
        .expect("a status request");
    assert_eq!(status_request.path, format!("/repos/{REPOSITORY}/statuses/{sha}"));
    assert_eq!(
        status_request.body["target_url"],
        format!("https://ci.example.test/jobs/{job_id}")
    );
    let created: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/deployments"))
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].body["ref"], sha.as_str());
    assert_eq!(created[0].body["environment"], "production");
    let states: Vec<String> = eventually("deployment statuses", || {
        let states: Vec<String> = fake
            .deployment_statuses()
            .iter()
            .filter_map(|b| b["state"].as_str().map(str::to_owned))
            .collect();
        (states.last().map(String::as_str) == Some("failure")).then_some(states)
    })
    .await;
    assert_eq!(states, ["in_progress", "failure"]);
    runner.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_and_rate_limits_waited_out() {
    let fake = FakeGitHub::default();
    fake.with(|f| f.fail_next = 2);
    let api = fake.start().await;
    let runner = start_runner_on_fakes(|dir| with_github(default_config(dir), &api, false)).await;
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"b".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    runner.wait_for_job_end(job_id).await;
    eventually("the failure status after two 502s", || {
        fake.statuses()
            .iter()
            .any(|(_, state, _, _)| state == "failure")
            .then_some(())
    })
    .await;
    let metrics = runner.get_text("/metrics").await;
    assert!(
        metrics.contains("runner_github_report_failures_total{kind=\"transient\"} 2"),
        "{metrics}"
    );

    // The first job's deployment is fully reported before the rate limit starts, so
    // only the second job's requests are counted below.
    eventually("the first deployment's failure", || {
        fake.deployment_statuses()
            .iter()
            .any(|b| b["state"] == "failure")
            .then_some(())
    })
    .await;

    // A rate limit: nothing is sent until it resets, then the report goes through.
    fake.with(|f| f.rate_limit_for = Some(2));
    let before = fake.requests().len();
    let response = runner
        .deliver("push", &push_body("refs/heads/release/v1", &"c".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    runner.wait_for_job_end(job_id).await;
    let limited_at = std::time::Instant::now();
    eventually("the report after the rate limit", || {
        fake.statuses()
            .iter()
            .any(|(sha, state, _, _)| sha == &"c".repeat(40) && state == "failure")
            .then_some(())
    })
    .await;
    assert!(
        limited_at.elapsed() >= Duration::from_millis(500),
        "waited for the reset"
    );
    let sent_while_limited = fake.requests().len() - before;
    assert!(sent_while_limited <= 8, "{sent_while_limited} requests");
    let metrics = runner.get_text("/metrics").await;
    assert!(
        metrics.contains("runner_github_report_failures_total{kind=\"rate_limited\"} 1"),
        "{metrics}"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_hung_github_does_not_hold_up_jobs() {
    let fake = FakeGitHub::default();
    fake.with(|f| f.hang = true);
    let api = fake.start().await;
    let runner = start_runner_on_fakes(|dir| with_github(default_config(dir), &api, false)).await;
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for (n, branch) in ["refs/heads/master", "refs/heads/release/v1"].iter().enumerate() {
        let response = runner
            .deliver("push", &push_body(branch, &format!("{}", n + 1).repeat(40)))
            .await;
        ids.push(
            response.json::<Value>().await.expect("json")["job_id"]
                .as_i64()
                .expect("id"),
        );
    }
    for id in ids {
        // Both deploy to one environment: the older may be superseded before it starts.
        let state = runner.wait_for_job_end(id).await["state"].clone();
        assert!(state == "failed" || state == "superseded", "{state}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "jobs took {:?}",
        started.elapsed()
    );
    eventually("a request reached the hung server", || {
        (!fake.requests().is_empty()).then_some(())
    })
    .await;
    runner.stop_quickly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_redelivers_missed_deliveries_and_deploys_an_unannounced_head() {
    let fake = FakeGitHub::default();
    let seen_delivery = unique_delivery_id();
    let head = "d".repeat(40);
    fake.with(|f| {
        f.branches.insert("master".into(), head.clone());
        f.branches.insert("release/v1".into(), "e".repeat(40));
        f.deliveries = vec![
            json!({ "id": 1001, "guid": "never-arrived-1", "status_code": 502, "event": "push", "redelivery": false }),
            json!({ "id": 1002, "guid": seen_delivery, "status_code": 0, "event": "push", "redelivery": false }),
            json!({ "id": 1003, "guid": "arrived-fine", "status_code": 202, "event": "push", "redelivery": false }),
            json!({ "id": 1004, "guid": "retried-ok", "status_code": 500, "event": "push", "redelivery": false }),
            json!({ "id": 1005, "guid": "retried-ok", "status_code": 202, "event": "push", "redelivery": true }),
        ];
        // Newer deliveries that arrived fine push the missed one to the third page.
        f.deliveries.extend((0..240).map(|i| {
            json!({ "id": 2000 + i, "guid": format!("fine-{i}"), "status_code": 202, "event": "push", "redelivery": false })
        }));
    });
    let api = fake.start().await;
    // Before GitHub reporting was set up, the release branch head was announced by a
    // delivery the runner received.
    let data = tempfile::tempdir().expect("tempdir");
    let shared = |dir: &Path| {
        let mut config = default_config(dir);
        config.server.database_url = Some(crate::common::database::url_for(data.path()));
        config.server.work_dir = Some(dir.join("work"));
        config
    };
    let before = TestRunner::start_with(shared).await;
    let response = before
        .deliver_signed(
            "push",
            &push_body("refs/heads/release/v1", &"e".repeat(40)),
            Some(SECRET),
            &seen_delivery,
        )
        .await;
    assert_eq!(response.status(), 202);
    before.stop().await;
    let runner = start_runner_on_fakes(|dir| with_github(shared(dir), &api, true)).await;

    let reconcile_job = eventually("a reconcile deploy", || {
        let jobs = futures_executor(runner.get_json("/api/jobs?kind=deploy"));
        jobs["items"]
            .as_array()
            .and_then(|items| items.iter().find(|j| j["trigger"] == "reconcile").cloned())
    })
    .await;
    assert_eq!(reconcile_job["sha"], head.as_str());
    assert_eq!(reconcile_job["git_ref"], "refs/heads/master");
    let redelivered: Vec<String> = eventually("a redelivery request", || {
        let asked: Vec<String> = fake
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/attempts"))
            .map(|r| r.path)
            .collect();
        (!asked.is_empty()).then_some(asked)
    })
    .await;
    assert_eq!(
        redelivered,
        [format!("/repos/{REPOSITORY}/hooks/42/deliveries/1001/attempts")]
    );
    let pages = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/hooks/42/deliveries"))
        .count();
    assert_eq!(pages, 3, "245 deliveries are three pages of 100");
    // The other branch's head was seen: no second job for it.
    let jobs = runner.get_json("/api/jobs").await;
    let for_release = jobs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|j| j["sha"] == "e".repeat(40))
        .count();
    assert_eq!(for_release, 1);
    runner.stop().await;
}

/// Blocks on a future from inside `eventually`'s synchronous check.
fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test]
async fn the_token_appears_in_no_log_page_or_table() {
    let fake = FakeGitHub::default();
    fake.with(|f| f.fail_next = 1);
    let api = fake.start().await;
    let runner = start_runner_on_fakes(|dir| with_github(default_config(dir), &api, false)).await;
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"f".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    runner.wait_for_job_end(job_id).await;
    eventually("reports", || (fake.statuses().len() >= 2).then_some(())).await;
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.authorization == format!("Bearer {GITHUB_TOKEN}"))
    );
    let mut seen = String::new();
    for path in [
        "/",
        &format!("/jobs/{job_id}"),
        "/deliveries",
        "/metrics",
        "/api/jobs",
        &format!("/api/jobs/{job_id}/logs"),
    ] {
        seen.push_str(&runner.get_text(path).await);
    }
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(error, '') || coalesce(report_error, '') || coalesce(plan_summary, '') FROM jobs
         UNION ALL SELECT line FROM job_logs UNION ALL SELECT coalesce(reason, '') FROM deliveries",
    )
    .fetch_all(runner.pool.db())
    .await
    .expect("dump");
    seen.push_str(&dump.join("\n"));
    assert!(!seen.contains(GITHUB_TOKEN), "the GitHub token leaked");
    assert!(!seen.contains(&GITHUB_TOKEN[4..20]), "part of the GitHub token leaked");
    runner.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move() {
    let runner = TestRunner::start().await;
    let scrape = |text: String| -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
    };
    let value = |scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let get = || async { runner.get_text("/metrics").await };
    let before = scrape(get().await);
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"9".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    runner.wait_for_job_end(job_id).await;
    runner
        .deliver_signed("push", b"{}", Some("wrong-secret-wrong-secret"), &unique_delivery_id())
        .await;
    runner
        .deliver("push", &push_body("refs/heads/feature", &"8".repeat(40)))
        .await;
    let after = scrape(get().await);
    let moved = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(
        moved(
            "runner_webhook_deliveries_total",
            &[("event", "push"), ("outcome", "queued")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "runner_webhook_deliveries_total",
            &[("event", "push"), ("outcome", "ignored")]
        ),
        1.0
    );
    assert_eq!(moved("runner_webhook_signature_failures_total", &[]), 1.0);
    assert_eq!(
        moved("runner_jobs_finished_total", &[("kind", "deploy"), ("state", "failed")]),
        1.0
    );
    assert_eq!(
        moved(
            "runner_deploys_total",
            &[("environment", "production"), ("state", "failed")]
        ),
        1.0
    );
    let histogram = after
        .samples
        .iter()
        .find(|s| s.metric == "runner_step_duration_seconds" && s.labels.get("step") == Some("checkout"))
        .expect("a checkout step duration");
    assert!(
        matches!(histogram.value, prometheus_parse::Value::Histogram(_)),
        "{histogram:?}"
    );
    assert!(after.samples.iter().any(|s| s.metric == "runner_queue_pickup_seconds"));
    assert!(after.samples.iter().any(|s| s.metric == "runner_queue_depth"));
    runner.stop().await;
}

#[tokio::test]
async fn a_github_app_reports_with_its_installation_token_and_each_job_is_a_check_run_it_can_rerun() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = app_key(keys.path());
    let fake = FakeGitHub::default();
    fake.with(|f| f.accepted_token = Some(INSTALLATION_TOKEN.to_owned()));
    let api = fake.start().await;
    let runner = start_runner_on_fakes(|dir| {
        let mut config = default_config(dir);
        as_app(&mut config, &api, &key);
        config
    })
    .await;
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"4".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    runner.wait_for_job_end(job_id).await;
    eventually("statuses sent with the installation token", || {
        fake.statuses()
            .iter()
            .any(|(_, state, _, _)| state == "failure")
            .then_some(())
    })
    .await;
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == format!("/repos/{REPOSITORY}/installation")),
        "installation looked up"
    );
    assert!(
        requests.iter().any(|r| r.path == "/app/installations/77/access_tokens"),
        "token minted"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.path.contains("/statuses/"))
            .all(|r| r.authorization == format!("Bearer {INSTALLATION_TOKEN}")),
        "statuses use the installation token"
    );
    // The minted token is masked wherever the runner writes text, from then on.
    assert_eq!(
        runner::secrets::SecretMask::default().apply(&format!("Authorization: token {INSTALLATION_TOKEN}")),
        "Authorization: token ***"
    );

    // The job is a check run too, created as it was queued and completed as it ended.
    let sha = "4".repeat(40);
    let check_run = eventually("the job's check run completed", || {
        fake.check_runs().into_iter().find(|run| {
            run["external_id"].as_str().and_then(|id| id.parse().ok()) == Some(job_id) && run["status"] == "completed"
        })
    })
    .await;
    assert_eq!(check_run["conclusion"], "failure", "{check_run}");
    assert_eq!(check_run["head_sha"], sha.as_str());
    assert_eq!(check_run["name"], "runner/deploy (production)");
    assert_eq!(
        check_run["details_url"],
        format!("https://ci.example.test/jobs/{job_id}")
    );
    let summary = check_run["output"]["summary"].as_str().expect("summary");
    assert!(summary.contains("| checkout | failed |"), "{summary}");

    // GitHub's Re-run button queues the job again, once however often GitHub sends it.
    let delivery = unique_delivery_id();
    let request = rerun_request(REPOSITORY, &sha, job_id, "runner/deploy (production)");
    let response = runner
        .deliver_signed("check_run", &request, Some(SECRET), &delivery)
        .await;
    assert_eq!(response.status(), 202);
    let again = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("a new job");
    assert_ne!(again, job_id);
    let rerun = runner.get_json(&format!("/api/jobs/{again}")).await;
    assert_eq!(
        (&rerun["sha"], &rerun["kind"], &rerun["environment"], &rerun["trigger"]),
        (&json!(sha), &json!("deploy"), &json!("production"), &json!("replay")),
        "{rerun}"
    );
    let duplicate = runner
        .deliver_signed("check_run", &request, Some(SECRET), &delivery)
        .await;
    assert_eq!(duplicate.status(), 200);
    assert_eq!(duplicate.json::<Value>().await.expect("json")["duplicate"], true);
    runner.wait_for_job_end(again).await;

    // A re-run of another commit's check run, of no job of ours, or a check run event that
    // only tells (completed) queues nothing, and says why.
    for (event, body) in [
        (
            "check_run",
            rerun_request(REPOSITORY, &"5".repeat(40), job_id, "runner/deploy (production)"),
        ),
        (
            "check_run",
            rerun_request(REPOSITORY, &sha, 999_999, "runner/deploy (production)"),
        ),
        ("check_run", {
            // Another App's check run (the fixture's own app) naming the same job id.
            let mut body: Value =
                serde_json::from_slice(&rerun_request(REPOSITORY, &sha, job_id, "runner/deploy (production)"))
                    .expect("json");
            body["check_run"]["app"]["id"] = 2.into();
            serde_json::to_vec(&body).expect("serialise")
        }),
        ("check_run", {
            let mut body = fixture_json("check_run.completed.payload.json");
            body["repository"]["full_name"] = REPOSITORY.into();
            serde_json::to_vec(&body).expect("serialise")
        }),
    ] {
        let response = runner.deliver(event, &body).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("json");
        assert!(answer["ignored"].as_str().is_some_and(|r| !r.is_empty()), "{answer}");
    }
    let jobs = runner.get_json("/api/jobs").await;
    assert_eq!(jobs["items"].as_array().expect("jobs").len(), 2, "{jobs}");
    runner.stop().await;
}

#[tokio::test]
async fn a_token_reports_statuses_but_writes_no_check_run() {
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let runner = start_runner_on_fakes(|dir| with_github(default_config(dir), &api, false)).await;
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"6".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    runner.wait_for_job_end(job_id).await;
    // The reporter tells jobs one after the other: once a later job's failure is told, all
    // of the first job's story has been, a check run included had there been one.
    let later = runner
        .deliver("push", &push_body("refs/heads/master", &"7".repeat(40)))
        .await;
    assert_eq!(later.status(), 202);
    eventually("both failures reported", || {
        let failed: Vec<String> = fake
            .statuses()
            .into_iter()
            .filter(|(_, state, _, _)| state == "failure")
            .map(|(sha, _, _, _)| sha)
            .collect();
        (failed.contains(&"6".repeat(40)) && failed.contains(&"7".repeat(40))).then_some(())
    })
    .await;
    assert!(
        fake.requests().iter().all(|r| !r.path.contains("/check-runs")),
        "GitHub refuses check runs from a token: none is asked for"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_redeploy_of_a_branch_asks_github_for_its_head() {
    let fake = FakeGitHub::default();
    let head = "d".repeat(40);
    fake.with(|f| {
        f.branches.insert("master".into(), head.clone());
    });
    let api = fake.start().await;
    // Cloned from GitHub (no clone_url of its own), which is not reachable from here: only
    // GitHub's API can answer.
    let runner = start_runner_on_fakes(|dir| {
        let mut config = with_github(default_config(dir), &api, false);
        config.projects[0].clone_url = None;
        config
    })
    .await;
    let response = runner
        .client
        .post(runner.url("/api/projects/hello/deploy"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"ref":"master"}"#)
        .send()
        .await
        .expect("POST deploy");
    let status = response.status();
    let answer: Value = response.json().await.expect("json");
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["sha"], head.as_str(), "{answer}");
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == format!("/repos/{REPOSITORY}/branches/master")),
        "{:?}",
        fake.requests()
    );

    runner.stop().await;
}
