//! Reporting to GitHub and recovering missed deliveries, against a local server that plays
//! the REST endpoints the runner uses (paths, methods and fields as GitHub documents them),
//! records every request, and can fail with 5xx, rate-limit with 403, or hang.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};

const GITHUB_TOKEN: &str = "ghp_testtoken0123456789abcdefghijklmnop";

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    body: Value,
    authorization: String,
}

#[derive(Default)]
struct Fake {
    requests: Vec<Recorded>,
    /// Answer this many reports (POSTs) with 502 first.
    fail_next: usize,
    /// Answer the next report (POST) with 403 and an exhausted rate limit resetting in N seconds.
    rate_limit_for: Option<u64>,
    hang: bool,
    branches: HashMap<String, String>,
    deliveries: Vec<Value>,
    next_id: i64,
}

#[derive(Clone, Default)]
struct FakeGitHub(Arc<Mutex<Fake>>);

impl FakeGitHub {
    fn with<R>(&self, f: impl FnOnce(&mut Fake) -> R) -> R {
        f(&mut self.0.lock().expect("fake state"))
    }

    fn requests(&self) -> Vec<Recorded> {
        self.with(|f| f.requests.clone())
    }

    fn statuses(&self) -> Vec<(String, String, String, String)> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.contains("/statuses/") && !r.path.contains("/deployments/"))
            .map(|r| {
                (
                    r.path.rsplit('/').next().unwrap_or("").to_owned(),
                    r.body["state"].as_str().unwrap_or("").to_owned(),
                    r.body["context"].as_str().unwrap_or("").to_owned(),
                    r.body["description"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    fn deployment_statuses(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("/deployments/") && r.path.ends_with("/statuses"))
            .map(|r| r.body)
            .collect()
    }

    async fn start(&self) -> String {
        let app = axum::Router::new().fallback(answer).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "documentation_url": "https://docs.github.com/rest" })),
    )
        .into_response()
}

/// The endpoints used, as GitHub's REST documentation describes them.
async fn answer(
    State(fake): State<FakeGitHub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (hang, fail, limited) = fake.with(|f| {
        f.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            body: body.clone(),
            authorization: authorization.clone(),
        });
        let is_report = method == Method::POST;
        let fail = is_report && f.fail_next > 0;
        if fail {
            f.fail_next -= 1;
        }
        let limited = if is_report { f.rate_limit_for.take() } else { None };
        (f.hang, fail, limited)
    });
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if authorization != format!("Bearer {GITHUB_TOKEN}") {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(seconds) = limited {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + seconds;
        let mut response = error(StatusCode::FORBIDDEN, "API rate limit exceeded");
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", "5000".parse().expect("header"));
        headers.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        headers.insert("x-ratelimit-reset", reset.to_string().parse().expect("header"));
        return response;
    }
    if fail {
        return error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["repos", _, _, "statuses", sha]) => {
            let valid = matches!(
                body["state"].as_str(),
                Some("error" | "failure" | "pending" | "success")
            ) && sha.len() == 40
                && body["description"].as_str().is_none_or(|d| d.chars().count() <= 140);
            if !valid {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            (
                StatusCode::CREATED,
                Json(json!({ "state": body["state"], "context": body["context"] })),
            )
                .into_response()
        }
        ("POST", ["repos", _, _, "deployments"]) => {
            if body["ref"].as_str().is_none() {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            let id = fake.with(|f| {
                f.next_id += 1;
                f.next_id
            });
            (
                StatusCode::CREATED,
                Json(json!({ "id": id, "sha": body["ref"], "environment": body["environment"] })),
            )
                .into_response()
        }
        ("POST", ["repos", _, _, "deployments", _, "statuses"]) => {
            let valid = matches!(
                body["state"].as_str(),
                Some("error" | "failure" | "inactive" | "in_progress" | "queued" | "pending" | "success")
            );
            if !valid {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            (StatusCode::CREATED, Json(json!({ "state": body["state"] }))).into_response()
        }
        ("GET", ["repos", _, _, "hooks", _, "deliveries"]) => {
            Json(Value::Array(fake.with(|f| f.deliveries.clone()))).into_response()
        }
        ("POST", ["repos", _, _, "hooks", _, "deliveries", _, "attempts"]) => {
            (StatusCode::ACCEPTED, Json(json!({}))).into_response()
        }
        ("GET", ["repos", _, _, "branches", branch]) => match fake.with(|f| f.branches.get(*branch).cloned()) {
            Some(sha) => Json(json!({ "name": branch, "commit": { "sha": sha } })).into_response(),
            None => error(StatusCode::NOT_FOUND, "Branch not found"),
        },
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn github_section(api: &str, hook: bool) -> String {
    format!(
        "\n[projects.github]\ntoken_env = \"GITHUB_TOKEN_FOR_TESTS\"\n{}",
        if hook { "hook_id = 42\n" } else { "" }
    ) + &format!("\n#api {api}\n")
}

/// The config `base` with GitHub reporting to `api` for its first project.
fn with_github(base: String, api: &str, hook: bool) -> String {
    let global = format!(
        "[github]\napi_url = \"{api}\"\nreconcile_interval_secs = 3600\n\n[dashboard]\npublic_url = \"https://ci.example.test\"\n\n"
    );
    // The first project's section ends where the second [[projects]] or its sub-tables begin.
    let first = base.find("[[projects]]").expect("a project");
    let rest = &base[first + 12..];
    let end = rest
        .find("\n[[projects]]")
        .or_else(|| rest.find("\n[projects."))
        .map_or(base.len(), |i| first + 12 + i);
    format!("{global}{}{}{}", &base[..end], github_section(api, hook), &base[end..])
}

async fn start_runner(make: impl FnOnce(&Path) -> String) -> TestRunner {
    TestRunner::start_with_env(make, |name| match name {
        "GITHUB_TOKEN_FOR_TESTS" => Some(GITHUB_TOKEN.to_owned()),
        other => test_env(other),
    })
    .await
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(value) = check() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test]
async fn a_failed_job_reports_pending_then_failure_and_its_deployment_fails() {
    let fake = FakeGitHub::default();
    let api = fake.start().await;
    let runner = start_runner(|dir| with_github(default_config_toml(dir), &api, false)).await;
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
    let runner = start_runner(|dir| with_github(default_config_toml(dir), &api, false)).await;
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
    let metrics = runner
        .client
        .get(runner.url("/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("runner_github_report_failures_total{kind=\"transient\"} 2"),
        "{metrics}"
    );

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
    let metrics = runner
        .client
        .get(runner.url("/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
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
    let runner = start_runner(|dir| with_github(default_config_toml(dir), &api, false)).await;
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
        assert_eq!(runner.wait_for_job_end(id).await["state"], "failed");
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
    });
    let api = fake.start().await;
    // Before GitHub reporting was set up, the release branch head was announced by a
    // delivery the runner received.
    let data = tempfile::tempdir().expect("tempdir");
    let shared = |dir: &Path| {
        default_config_toml(dir).replace(
            &format!("sqlite://{}", dir.join("runner.db").display()),
            &format!("sqlite://{}", data.path().join("runner.db").display()),
        )
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
    let runner = start_runner(|dir| with_github(shared(dir), &api, true)).await;

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
    let runner = start_runner(|dir| with_github(default_config_toml(dir), &api, false)).await;
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
        seen.push_str(
            &runner
                .client
                .get(runner.url(path))
                .send()
                .await
                .expect("GET")
                .text()
                .await
                .expect("text"),
        );
    }
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(error, '') || coalesce(report_error, '') || coalesce(plan_summary, '') FROM jobs
         UNION ALL SELECT line FROM job_logs UNION ALL SELECT coalesce(reason, '') FROM deliveries",
    )
    .fetch_all(&runner.pool)
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
    let get = || async {
        runner
            .client
            .get(runner.url("/metrics"))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("text")
    };
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
