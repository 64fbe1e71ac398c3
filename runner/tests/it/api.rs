//! The JSON API and what a worker does with a claimed job, over HTTP.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// A repository with two commits on master; returns the first commit's SHA (not the tip).
fn make_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("mkdir");
    git(dir, &["init", "--quiet", "--initial-branch=master"]);
    std::fs::write(dir.join("README"), "first\n").expect("write");
    git(dir, &["add", "README"]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("README"), "second\n").expect("write");
    git(dir, &["commit", "--quiet", "-am", "second"]);
    first
}

#[tokio::test]
async fn a_project_with_only_the_pinned_keys_queues_jobs_that_fail_naming_what_is_missing() {
    let runner = TestRunner::start().await;
    let mut push = fixture_json("push.with-no-username-committer.payload.json");
    push["repository"]["full_name"] = "Octocoders/Hello-World".into();
    push["ref"] = "refs/heads/main".into();
    let body = serde_json::to_vec(&push).expect("json");
    let response = runner
        .deliver_signed("push", &body, Some(OTHER_SECRET), &unique_delivery_id())
        .await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = runner.wait_for_job_end(job_id).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().expect("error");
    for setting in [
        "[projects.build]",
        "[projects.smoke]",
        "[projects.registry]",
        "[projects.rollout]",
    ] {
        assert!(error.contains(setting), "{setting} not named in {error}");
    }
    runner.stop().await;
}

#[tokio::test]
async fn checkout_fetches_exactly_the_commit_and_removes_its_directory() {
    use runner::adapters::checkout::{Checkout, GitCheckout};
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let first = make_repo(&repo);
    let runner = TestRunner::start().await;
    // A job row to read: any queued job will do; its SHA is replaced by the repository's.
    let response = runner.deliver("push", &push_body("refs/heads/master", &first)).await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = runner::store::jobs::get(&runner.pool, runner::domain::JobId::new(job_id).expect("id"))
        .await
        .expect("get")
        .expect("job");
    let (log, writer) =
        runner::joblog::JobLog::start(runner.pool.clone(), job.id, Default::default(), Default::default());
    let into = dir.path().join("work");
    GitCheckout::new(repo.display().to_string(), dir.path().join("home"))
        .fetch(&job, &into, &log)
        .await
        .expect("checkout succeeds");
    let git_config = std::fs::read_to_string(into.join(".git/config")).expect("git config");
    assert!(
        !git_config.contains(&repo.display().to_string()),
        "the clone URL (which may hold credentials) is not left in the checkout: {git_config}"
    );
    assert_eq!(
        git(&into, &["rev-parse", "HEAD"]),
        first,
        "HEAD is the job's commit, not the branch tip"
    );
    assert_eq!(std::fs::read_to_string(into.join("README")).expect("file"), "first\n");
    drop(log);
    writer.flush().await;
    runner.stop_quickly().await;
}

#[tokio::test]
async fn a_commit_that_is_not_in_the_repository_fails_checkout_clearly() {
    let runner = TestRunner::start().await;
    make_repo(&runner.dir.path().join("no-such-repo"));
    let missing = "4444444444444444444444444444444444444444";
    let response = runner.deliver("push", &push_body("refs/heads/master", missing)).await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = runner.wait_for_job_end(job_id).await;
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"].as_str().expect("error").starts_with("checkout failed"),
        "{job}"
    );
    runner.stop().await;
}

#[tokio::test]
async fn credentials_in_the_clone_url_never_reach_the_job_log() {
    let runner = TestRunner::start_on_fakes(|dir| {
        let mut config = default_config(dir);
        config.projects[0].clone_url = Some("http://deploy:s3cr3t-clone-token@127.0.0.1:1/repo.git".into());
        config
    })
    .await;
    let response = runner
        .deliver(
            "push",
            &push_body("refs/heads/master", "5555555555555555555555555555555555555555"),
        )
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = runner.wait_for_job_end(job_id).await;
    assert_eq!(job["state"], "failed");
    let log = runner.job_log(job_id).await;
    assert!(log.contains("127.0.0.1:1"), "{log}");
    assert!(!log.contains("s3cr3t-clone-token"), "{log}");
    assert!(!job.to_string().contains("s3cr3t-clone-token"), "{job}");
    let in_db: i64 = sqlx::query_scalar("SELECT count(*) FROM job_logs WHERE line LIKE '%s3cr3t%'")
        .fetch_one(runner.pool.db())
        .await
        .expect("count");
    assert_eq!(in_db, 0);
    runner.stop().await;
}

#[tokio::test]
async fn jobs_and_deliveries_are_listed_newest_first_with_keyset_pages() {
    let runner = TestRunner::start().await;
    let mut created = Vec::new();
    for n in 0..5 {
        let mut opened = fixture_json("pull_request.opened.payload.json");
        opened["number"] = (100 + n).into();
        let response = runner
            .deliver("pull_request", &serde_json::to_vec(&opened).expect("json"))
            .await;
        assert_eq!(response.status(), 202);
        created.push(
            response.json::<Value>().await.expect("json")["job_id"]
                .as_i64()
                .expect("id"),
        );
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut path = "/api/jobs?limit=2".to_owned();
    loop {
        let page = runner.get_json(&path).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|j| j["id"].as_i64().expect("id")));
        match page["next_before"].as_i64() {
            Some(before) => path = format!("/api/jobs?limit=2&before={before}"),
            None => break,
        }
    }
    assert_eq!(seen, created);

    let verify_only = runner.get_json("/api/jobs?kind=verify&project=hello").await;
    assert_eq!(verify_only["items"].as_array().expect("items").len(), 5);
    let none = runner.get_json("/api/jobs?project=other").await;
    assert!(none["items"].as_array().expect("items").is_empty());

    let deliveries = runner.get_json("/api/deliveries?limit=3").await;
    assert_eq!(deliveries["items"].as_array().expect("items").len(), 3);
    assert!(deliveries["next_before"].is_i64());

    for (path, status) in [
        ("/api/jobs?limit=0", 400),
        ("/api/jobs?state=exploded", 400),
        ("/api/jobs/abc", 400),
        ("/api/jobs/999999", 404),
        ("/api/jobs/999999/logs", 404),
        ("/api/nothing-here", 404),
    ] {
        let response = runner.client.get(runner.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.expect("errors are JSON");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    runner.stop().await;
}

#[tokio::test]
async fn cancel_needs_the_admin_token() {
    // One worker, held by a hanging checkout, so the second job stays queued.
    let remote = hanging_server();
    let runner = TestRunner::start_on_fakes(move |dir| {
        let mut config = default_config(dir);
        config.queue.workers = Some(1);
        config.projects[0].clone_url = Some(remote);
        config
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let mut opened = fixture_json("pull_request.opened.payload.json");
        opened["number"] = (200 + n).into();
        let response = runner
            .deliver("pull_request", &serde_json::to_vec(&opened).expect("json"))
            .await;
        ids.push(
            response.json::<Value>().await.expect("json")["job_id"]
                .as_i64()
                .expect("id"),
        );
    }
    let queued = ids[1];
    let url = runner.url(&format!("/api/jobs/{queued}/cancel"));

    let anonymous = runner.client.post(&url).send().await.expect("POST");
    assert_eq!(anonymous.status(), 401);
    let wrong = runner
        .client
        .post(&url)
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .expect("POST");
    assert_eq!(wrong.status(), 401);
    assert_eq!(runner.get_json(&format!("/api/jobs/{queued}")).await["state"], "queued");

    let ok = runner
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        runner.get_json(&format!("/api/jobs/{queued}")).await["state"],
        "cancelled"
    );
    let again = runner
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(again.status(), 409);

    // The running one (stuck in checkout) stops promptly when cancelled.
    let running = ids[0];
    let response = runner
        .client
        .post(runner.url(&format!("/api/jobs/{running}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let job = runner.wait_for_job_end(running).await;
    assert_eq!(job["state"], "cancelled");
    let leftovers: Vec<_> = std::fs::read_dir(runner.dir.path().join("work"))
        .expect("work dir")
        .collect();
    assert!(leftovers.is_empty(), "the cancelled checkout's directory is removed");
    runner.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let runner = TestRunner::start().await;
    let health = runner.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
    runner.deliver("ping", &fixture("ping.with-app_id.payload.json")).await;
    let metrics = runner.get_text("/metrics").await;
    assert!(metrics.contains("runner_queue_depth"), "{metrics}");
    runner.stop().await;
}

#[tokio::test]
async fn redeploy_and_rollback_refuse_bad_requests() {
    let runner = TestRunner::start().await;
    let deploy = runner.url("/api/projects/hello/deploy");
    let cases: Vec<(String, Option<&str>, &str, u16)> = vec![
        (
            deploy.clone(),
            None,
            r#"{"sha":"1111111111111111111111111111111111111111"}"#,
            401,
        ),
        (
            deploy.clone(),
            Some("wrong-token-wrong-token"),
            r#"{"sha":"1111111111111111111111111111111111111111"}"#,
            401,
        ),
        (deploy.clone(), Some(ADMIN_TOKEN), r#"{"sha":"123"}"#, 400),
        (deploy.clone(), Some(ADMIN_TOKEN), r#"{"ref":"$(id)"}"#, 400),
        (deploy.clone(), Some(ADMIN_TOKEN), r#"{}"#, 400),
        (deploy.clone(), Some(ADMIN_TOKEN), r#"not json"#, 400),
        (deploy.clone(), Some(ADMIN_TOKEN), r#"{"ref":"master"}"#, 409),
        (
            runner.url("/api/projects/nope/deploy"),
            Some(ADMIN_TOKEN),
            r#"{"ref":"master"}"#,
            404,
        ),
        (runner.url("/api/deployments/999/rollback"), Some(ADMIN_TOKEN), "", 404),
        (runner.url("/api/deployments/abc/rollback"), Some(ADMIN_TOKEN), "", 400),
        (runner.url("/api/deployments/1/rollback"), None, "", 401),
    ];
    for (url, token, body, status) in cases {
        let mut request = runner
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        assert_eq!(response.status(), status, "{url} {body}");
        let answer: Value = response.json().await.expect("JSON error");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(runner.count("jobs").await, 0, "nothing was queued");
    runner.stop().await;
}

#[tokio::test]
async fn wrong_bearer_tokens_are_limited_per_address_like_logins() {
    let runner = TestRunner::start_on_fakes(|dir| {
        let mut config = default_config(dir);
        config.dashboard.login_attempts_per_minute = Some(3);
        config
    })
    .await;
    let cancel = |token: &'static str| {
        runner
            .client
            .post(runner.url("/api/jobs/1/cancel"))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(cancel("wrong-token-0123456789").await.expect("POST").status(), 401);
    }
    let limited = cancel("wrong-token-0123456789").await.expect("POST");
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    // Over the limit even the right token waits: guessing gains nothing by going on.
    assert_eq!(cancel(ADMIN_TOKEN).await.expect("POST").status(), 429);
    // Requests without a bearer token (reads, webhooks) are not held up.
    assert_eq!(
        runner
            .client
            .get(runner.url("/api/jobs"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    runner.stop_quickly().await;
}

#[tokio::test]
async fn the_right_bearer_token_does_not_use_up_the_attempts() {
    let runner = TestRunner::start_on_fakes(|dir| {
        let mut config = default_config(dir);
        config.dashboard.login_attempts_per_minute = Some(2);
        config
    })
    .await;
    for _ in 0..5 {
        let answer = runner
            .client
            .post(runner.url("/api/jobs/999/cancel"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("POST");
        assert_eq!(answer.status(), 404);
    }
    runner.stop_quickly().await;
}

#[tokio::test]
async fn aws_credentials_in_the_runners_environment_are_masked_in_job_logs() {
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const AWS_SESSION: &str = "FwoGZXIvYXdzEBYaDHVzZXNzaW9udG9rZW4wMTIz";
    let runner = TestRunner::start_with_env(
        |dir| {
            let mut config = default_config(dir);
            // A checkout from a path that names both: git and the runner both print it.
            let path = dir.join(AWS_SECRET.replace('/', "_")).join(AWS_SESSION);
            config.projects[0].clone_url = Some(path.display().to_string());
            config
        },
        |name| match name {
            "AWS_SECRET_ACCESS_KEY" => Some(AWS_SECRET.replace('/', "_")),
            "AWS_SESSION_TOKEN" => Some(AWS_SESSION.to_owned()),
            other => test_env(other),
        },
    )
    .await;
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"5".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id");
    runner.wait_for_job_end(job_id).await;
    let log = runner.job_log(job_id).await;
    assert!(log.contains("***"), "the checkout's lines name the path: {log}");
    assert!(!log.contains(&AWS_SECRET.replace('/', "_")), "{log}");
    assert!(!log.contains(AWS_SESSION), "{log}");
    runner.stop_quickly().await;
}
