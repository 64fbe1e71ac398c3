//! `POST /webhooks/github` against the real server, with real GitHub bodies.

use crate::common::*;
use serde_json::Value;

const SHA_A: &str = "1111111111111111111111111111111111111111";
const SHA_B: &str = "2222222222222222222222222222222222222222";

async fn assert_nothing_stored(runner: &TestRunner) {
    assert_eq!(runner.count("deliveries").await, 0, "no delivery row");
    assert_eq!(runner.count("jobs").await, 0, "no job row");
}

async fn error_of(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("error bodies are JSON");
    body["error"].as_str().expect("error field").to_owned()
}

#[tokio::test]
async fn githubs_documented_signature_vector_is_accepted_over_http() {
    let vector = TestRunner::start_with(|dir| {
        std::fs::write(dir.join("github-vector-secret"), "It's a Secret to Everybody\n").expect("write secret");
        let mut config = default_config(dir);
        config.projects[0].webhook_secret_env = None;
        config.projects[0].webhook_secret_file = Some("github-vector-secret".into());
        config
    })
    .await;
    let response = vector
        .client
        .post(vector.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", unique_delivery_id())
        .header(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )
        .body("Hello, World!")
        .send()
        .await
        .expect("POST");
    // The signature verified (not 401); the body is then refused for not being JSON.
    assert_eq!(response.status(), 400);
    assert!(error_of(response).await.contains("not valid JSON"));
    vector.stop().await;
}

#[tokio::test]
async fn a_push_to_a_deploy_branch_queues_a_deploy_job() {
    let runner = TestRunner::start().await;
    let delivery_id = unique_delivery_id();
    let body = push_body("refs/heads/master", SHA_A);
    let response = runner.deliver_signed("push", &body, Some(SECRET), &delivery_id).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["delivery_id"], delivery_id);
    let job_id = answer["job_id"].as_i64().expect("job id");

    let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["kind"], "deploy");
    assert_eq!(job["trigger"], "push");
    assert_eq!(job["sha"], SHA_A);
    assert_eq!(job["git_ref"], "refs/heads/master");
    assert_eq!(job["project"], "hello");
    assert_eq!(job["environment"], "production");
    assert_eq!(job["delivery_id"], delivery_id);

    let deliveries = runner.get_json("/api/deliveries").await;
    let recorded = &deliveries["items"][0];
    assert_eq!(recorded["delivery_id"], delivery_id);
    assert_eq!(recorded["event"], "push");
    assert_eq!(recorded["outcome"], "queued");
    assert_eq!(recorded["sha"], SHA_A);
    assert_eq!(recorded["git_ref"], "refs/heads/master");
    assert_eq!(recorded["repository"], REPOSITORY);
    assert_eq!(recorded["job_id"], job_id);
    assert_eq!(recorded["body_kept"], true);
    assert!(recorded["received_at"].as_i64().expect("time") > 0);

    assert_eq!(recorded["body_bytes"], body.len());

    // The raw body is kept byte for byte, for inspection and replay: its signature still
    // verifies. On disk it takes a fraction of its size.
    let kept = runner.delivery_body(&delivery_id).await;
    assert_eq!(kept.status(), 200);
    assert_eq!(kept.headers()["content-type"], "application/json");
    let kept = kept.bytes().await.expect("body");
    assert_eq!(kept.as_ref(), body.as_slice());
    assert_eq!(sign(SECRET, &kept), sign(SECRET, &body));
    let on_disk: i64 = sqlx::query_scalar("SELECT length(body) FROM deliveries WHERE delivery_id = $1")
        .bind(&delivery_id)
        .fetch_one(runner.pool.db())
        .await
        .expect("stored length");
    assert!(
        on_disk * 3 < i64::try_from(body.len()).expect("length"),
        "a {}-byte push body takes {on_disk} bytes on disk",
        body.len()
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_kept_body_is_for_admins_and_says_when_retention_dropped_it() {
    let runner = TestRunner::start().await;
    let delivery_id = unique_delivery_id();
    let body = push_body("refs/heads/master", SHA_A);
    assert_eq!(
        runner
            .deliver_signed("push", &body, Some(SECRET), &delivery_id)
            .await
            .status(),
        202
    );

    let anonymous = runner
        .client
        .get(runner.url(&format!("/api/deliveries/{delivery_id}/body")))
        .send()
        .await
        .expect("GET");
    assert_eq!(anonymous.status(), 401);
    assert!(!anonymous.text().await.expect("text").contains("Hello-World"));

    assert_eq!(runner.delivery_body("no-such-delivery").await.status(), 404);
    assert_eq!(runner.delivery_body("bad id with spaces").await.status(), 400);

    sqlx::query("UPDATE deliveries SET body = NULL WHERE delivery_id = $1")
        .bind(&delivery_id)
        .execute(runner.pool.db())
        .await
        .expect("drop the body as retention does");
    let gone = runner.delivery_body(&delivery_id).await;
    assert_eq!(gone.status(), 410);
    assert!(error_of(gone).await.contains("no longer kept"));
    runner.stop().await;
}

#[tokio::test]
async fn form_encoded_deliveries_are_accepted_and_signed_over_the_raw_body() {
    let runner = TestRunner::start().await;
    let json = String::from_utf8(push_body("refs/heads/master", SHA_A)).expect("utf8");
    let form = serde_urlencoded::to_string([("payload", json.as_str())]).expect("encode");
    let response = runner
        .client
        .post(runner.url("/webhooks/github"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "push")
        .header("x-github-delivery", unique_delivery_id())
        .header("x-hub-signature-256", sign(SECRET, form.as_bytes()))
        .body(form.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);

    // Signing the JSON instead of the form body is a wrong signature.
    let response = runner
        .client
        .post(runner.url("/webhooks/github"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "push")
        .header("x-github-delivery", unique_delivery_id())
        .header("x-hub-signature-256", sign(SECRET, json.as_bytes()))
        .body(form.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);

    // The form body is kept as it came, under its own content type.
    let deliveries = runner.get_json("/api/deliveries").await;
    let accepted = deliveries["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|d| d["content_type"] == "application/x-www-form-urlencoded")
        .expect("the form delivery is listed");
    let kept = runner
        .delivery_body(accepted["delivery_id"].as_str().expect("id"))
        .await;
    assert_eq!(kept.headers()["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(kept.text().await.expect("text"), form);
    runner.stop().await;
}

#[tokio::test]
async fn missing_garbled_or_wrong_signatures_are_401_and_store_nothing() {
    let runner = TestRunner::start().await;
    let body = push_body("refs/heads/master", SHA_A);
    let id = unique_delivery_id();

    let missing = runner.deliver_signed("push", &body, None, &id).await;
    assert_eq!(missing.status(), 401);
    assert!(error_of(missing).await.contains("missing X-Hub-Signature-256"));

    let wrong = runner.deliver_signed("push", &body, Some("not-the-secret"), &id).await;
    assert_eq!(wrong.status(), 401);
    assert!(error_of(wrong).await.contains("does not match"));

    // Signed with a secret this runner knows, but for another repository.
    let cross = runner.deliver_signed("push", &body, Some(OTHER_SECRET), &id).await;
    assert_eq!(cross.status(), 401);
    assert!(error_of(cross).await.contains(REPOSITORY));

    for garbled in ["sha256=xyz", "sha1=0123", "", "sha256="] {
        let response = runner
            .client
            .post(runner.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", &id)
            .header("x-hub-signature-256", garbled)
            .body(body.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 401, "{garbled:?}");
    }
    // A tampered body with the original signature.
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] = b' ';
    let response = runner
        .client
        .post(runner.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", &id)
        .header("x-hub-signature-256", sign(SECRET, &body))
        .body(tampered)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);

    assert_nothing_stored(&runner).await;
    let metrics = runner.get_text("/metrics").await;
    assert!(
        metrics.contains("runner_webhook_signature_failures_total 8"),
        "{metrics}"
    );
    runner.stop().await;
}

#[tokio::test]
async fn missing_headers_and_malformed_bodies_are_400_and_store_nothing() {
    let runner = TestRunner::start().await;
    let body = push_body("refs/heads/master", SHA_A);
    let signature = sign(SECRET, &body);
    let post = |event: Option<&str>, delivery: Option<&str>, content_type: &str, body: Vec<u8>| {
        let signature = sign(SECRET, &body);
        let mut request = runner
            .client
            .post(runner.url("/webhooks/github"))
            .header("content-type", content_type)
            .header("x-hub-signature-256", signature);
        if let Some(event) = event {
            request = request.header("x-github-event", event);
        }
        if let Some(delivery) = delivery {
            request = request.header("x-github-delivery", delivery);
        }
        request.body(body).send()
    };
    let id = unique_delivery_id();
    let cases: Vec<(reqwest::Response, &str)> = vec![
        (
            post(None, Some(&id), "application/json", body.clone())
                .await
                .expect("POST"),
            "missing x-github-event",
        ),
        (
            post(Some("push"), None, "application/json", body.clone())
                .await
                .expect("POST"),
            "missing x-github-delivery",
        ),
        (
            post(Some("push"), Some("../../etc"), "application/json", body.clone())
                .await
                .expect("POST"),
            "delivery id",
        ),
        (
            post(Some("push"), Some(&id), "application/json", b"{not json".to_vec())
                .await
                .expect("POST"),
            "not valid JSON",
        ),
        (
            post(Some("push"), Some(&id), "application/json", b"[1,2]".to_vec())
                .await
                .expect("POST"),
            "JSON object",
        ),
        (
            post(
                Some("push"),
                Some(&id),
                "application/json",
                br#"{"repository":{"full_name":"Codertocat/Hello-World"}}"#.to_vec(),
            )
            .await
            .expect("POST"),
            "ref/after",
        ),
        (
            post(Some("push"), Some(&id), "text/plain", body.clone())
                .await
                .expect("POST"),
            "unsupported Content-Type",
        ),
        (
            post(
                Some("push"),
                Some(&id),
                "application/x-www-form-urlencoded",
                b"other=1".to_vec(),
            )
            .await
            .expect("POST"),
            "no payload field",
        ),
        (
            post(
                Some("push"),
                Some(&id),
                "application/json",
                push_body("refs/heads/master", "not-a-sha"),
            )
            .await
            .expect("POST"),
            "after",
        ),
    ];
    for (response, expected) in cases {
        assert_eq!(response.status(), 400, "{expected}");
        let error = error_of(response).await;
        assert!(error.contains(expected), "{expected:?} not in {error:?}");
    }
    let _ = signature;
    assert_nothing_stored(&runner).await;
    runner.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_without_being_read() {
    let runner = TestRunner::start().await; // max_body_bytes = 65536
    let mut push = fixture_json("push.with-no-username-committer.payload.json");
    push["padding"] = "x".repeat(70_000).into();
    let body = serde_json::to_vec(&push).expect("json");
    let response = runner.deliver("push", &body).await;
    assert_eq!(response.status(), 413);
    assert!(error_of(response).await.contains("65536"));

    // Chunked (no Content-Length): refused once the limit is passed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let response = runner
        .client
        .post(runner.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", unique_delivery_id())
        .header("x-hub-signature-256", sign(SECRET, &body))
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 413);
    assert_nothing_stored(&runner).await;
    runner.stop().await;
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static {
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn an_unknown_repository_is_404() {
    let runner = TestRunner::start().await;
    let mut push = fixture_json("push.with-no-username-committer.payload.json");
    push["repository"]["full_name"] = "someone/else".into();
    let response = runner.deliver("push", &serde_json::to_vec(&push).expect("json")).await;
    assert_eq!(response.status(), 404);
    assert!(error_of(response).await.contains("someone/else is not configured"));
    assert_nothing_stored(&runner).await;
    runner.stop().await;
}

#[tokio::test]
async fn ping_is_200_and_records_the_hook() {
    let runner = TestRunner::start().await;
    let response = runner
        .deliver_signed(
            "ping",
            &fixture("ping.payload.json"),
            Some(OTHER_SECRET),
            &unique_delivery_id(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert!(
        answer["ignored"].as_str().expect("reason").contains("hook 109948940"),
        "{answer}"
    );
    let deliveries = runner.get_json("/api/deliveries").await;
    assert_eq!(deliveries["items"][0]["hook_id"], 109948940);
    assert_eq!(deliveries["items"][0]["outcome"], "ignored");
    assert_eq!(runner.count("jobs").await, 0);
    runner.stop().await;
}

#[tokio::test]
async fn pushes_that_deploy_nothing_are_200_ignored_with_the_reason() {
    let runner = TestRunner::start().await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("push", push_body("refs/tags/v1.0", SHA_A), "tag push v1.0"),
        (
            "push",
            push_body("refs/heads/feature", SHA_A),
            "branch feature is not a deploy branch",
        ),
        (
            "push",
            push_body("refs/heads/master", &"0".repeat(40)),
            "master was deleted",
        ),
        ("push", fixture("push.payload.json"), "was deleted"),
        (
            "create",
            fixture("create.payload.json"),
            "event \"create\" does not trigger anything",
        ),
        ("delete", fixture("delete.payload.json"), "does not trigger anything"),
    ];
    for (event, body, expected) in cases {
        let response = runner.deliver(event, &body).await;
        assert_eq!(response.status(), 200, "{expected}");
        let answer: Value = response.json().await.expect("json");
        let reason = answer["ignored"].as_str().unwrap_or_else(|| panic!("{answer}"));
        assert!(reason.contains(expected), "{expected:?} not in {reason:?}");
    }
    assert_eq!(runner.count("jobs").await, 0);
    assert_eq!(
        runner.count("deliveries").await,
        6,
        "ignored deliveries are recorded too"
    );
    runner.stop().await;
}

#[tokio::test]
async fn tag_pushes_deploy_when_the_project_says_so() {
    let runner = TestRunner::start_with(|dir| {
        let mut config = default_config(dir);
        config.projects[0].deploy_tags = true;
        config
    })
    .await;
    let response = runner.deliver("push", &push_body("refs/tags/v1.0", SHA_A)).await;
    assert_eq!(response.status(), 202);
    runner.stop().await;
}

#[tokio::test]
async fn pull_requests_queue_verify_jobs_and_closing_cancels_the_queued_ones() {
    // The only worker is held by the first verify job, whose checkout hangs, so the
    // second one is still queued when the pull request closes.
    let remote = hanging_server();
    let runner = TestRunner::start_with(move |dir| {
        let mut config = default_config(dir);
        config.queue.workers = Some(1);
        config.projects[0].clone_url = Some(remote);
        config
    })
    .await;
    let opened = fixture_json("pull_request.opened.payload.json");
    let head_sha = opened["pull_request"]["head"]["sha"].as_str().expect("sha").to_owned();
    let number = opened["number"].as_i64().expect("number");
    let base = opened["pull_request"]["base"]["ref"].as_str().expect("base").to_owned();
    assert_eq!(base, "master");

    let response = runner
        .deliver("pull_request", &fixture("pull_request.opened.payload.json"))
        .await;
    assert_eq!(response.status(), 202);
    let first: Value = response.json().await.expect("json");
    let job = runner.get_json(&format!("/api/jobs/{}", first["job_id"])).await;
    assert_eq!(job["kind"], "verify");
    assert_eq!(job["trigger"], "pull_request");
    assert_eq!(job["sha"], head_sha);
    assert_eq!(job["pull_request"], number);
    assert_eq!(job["git_ref"], format!("refs/pull/{number}/head"));

    let response = runner
        .deliver("pull_request", &fixture("pull_request.synchronize.payload.json"))
        .await;
    assert_eq!(response.status(), 202);
    let second: Value = response.json().await.expect("json");

    // A PR against a branch that is not deployed is ignored.
    let mut elsewhere = opened.clone();
    elsewhere["pull_request"]["base"]["ref"] = "develop".into();
    let response = runner
        .deliver("pull_request", &serde_json::to_vec(&elsewhere).expect("json"))
        .await;
    assert_eq!(response.status(), 200);

    // Unrelated actions are ignored.
    let mut labeled = opened.clone();
    labeled["action"] = "labeled".into();
    let response = runner
        .deliver("pull_request", &serde_json::to_vec(&labeled).expect("json"))
        .await;
    assert_eq!(response.status(), 200);

    // Closing cancels the verify jobs that have not started.
    let response = runner
        .deliver("pull_request", &fixture("pull_request.closed.payload.json"))
        .await;
    assert_eq!(response.status(), 200);
    let closed: Value = response.json().await.expect("json");
    let cancelled: Vec<i64> = closed["cancelled_jobs"]
        .as_array()
        .expect("cancelled list")
        .iter()
        .map(|v| v.as_i64().expect("id"))
        .collect();
    let second_id = second["job_id"].as_i64().expect("id");
    assert!(cancelled.contains(&second_id), "{closed}");
    let job = runner.get_json(&format!("/api/jobs/{second_id}")).await;
    assert_eq!(job["state"], "cancelled");
    runner.stop_quickly().await;
}

#[tokio::test]
async fn a_redelivery_is_a_duplicate_and_never_a_second_job() {
    let runner = TestRunner::start().await;
    let id = unique_delivery_id();
    let body = push_body("refs/heads/master", SHA_A);
    let first: Value = runner
        .deliver_signed("push", &body, Some(SECRET), &id)
        .await
        .json()
        .await
        .expect("json");
    let response = runner.deliver_signed("push", &body, Some(SECRET), &id).await;
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.expect("json");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(runner.count("jobs").await, 1);
    assert_eq!(runner.count("deliveries").await, 1);

    // A duplicate of an ignored delivery has no job.
    let ping_id = unique_delivery_id();
    let ping = fixture("ping.payload.json");
    runner.deliver_signed("ping", &ping, Some(OTHER_SECRET), &ping_id).await;
    let again: Value = runner
        .deliver_signed("ping", &ping, Some(OTHER_SECRET), &ping_id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["job_id"], Value::Null);
    runner.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_copies_of_one_delivery_make_one_job() {
    let runner = std::sync::Arc::new(TestRunner::start().await);
    let id = unique_delivery_id();
    let body = push_body("refs/heads/master", SHA_B);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let runner = std::sync::Arc::clone(&runner);
        let (id, body) = (id.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let response = runner.deliver_signed("push", &body, Some(SECRET), &id).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }));
    }
    let mut accepted = 0;
    let mut job_ids = std::collections::HashSet::new();
    for task in tasks {
        let (status, answer) = task.await.expect("join");
        match status {
            202 => accepted += 1,
            200 => assert_eq!(answer["duplicate"], true),
            other => panic!("unexpected {other}: {answer}"),
        }
        job_ids.insert(answer["job_id"].as_i64().expect("job id"));
    }
    assert_eq!(accepted, 1, "exactly one copy is accepted");
    assert_eq!(job_ids.len(), 1, "every copy names the same job");
    assert_eq!(runner.count("jobs").await, 1);
    assert_eq!(runner.count("deliveries").await, 1);
}

/// Deliveries that arrive together are committed together; each must still get its own
/// job, and each copy the job of its original, whatever the mix inside one commit.
#[tokio::test]
async fn concurrent_deliveries_each_get_their_own_job_and_copies_the_originals() {
    let runner = std::sync::Arc::new(TestRunner::start().await);
    let ids: Vec<String> = (0..40).map(|_| unique_delivery_id()).collect();
    let mut tasks = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        // Every fourth delivery is sent three times, all at once.
        for _ in 0..if n % 4 == 0 { 3 } else { 1 } {
            let runner = std::sync::Arc::clone(&runner);
            let id = id.clone();
            let body = push_body("refs/heads/master", &format!("{:040x}", n + 1));
            tasks.push(tokio::spawn(async move {
                let response = runner.deliver_signed("push", &body, Some(SECRET), &id).await;
                let status = response.status().as_u16();
                (id, status, response.json::<Value>().await.expect("json"))
            }));
        }
    }
    let mut job_of = std::collections::HashMap::new();
    let mut accepted = 0;
    for task in tasks {
        let (id, status, answer) = task.await.expect("join");
        assert!(
            status == 202 || (status == 200 && answer["duplicate"] == true),
            "{status}: {answer}"
        );
        accepted += usize::from(status == 202);
        let job_id = answer["job_id"].as_i64().expect("job id");
        assert_eq!(
            *job_of.entry(id.clone()).or_insert(job_id),
            job_id,
            "copies of {id} name one job"
        );
    }
    assert_eq!(accepted, ids.len(), "one copy of each delivery is accepted");
    for (id, job_id) in &job_of {
        let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
        assert_eq!(job["delivery_id"], id.as_str(), "job {job_id} belongs to delivery {id}");
    }
    assert_eq!(runner.count("jobs").await, 40);
    assert_eq!(runner.count("deliveries").await, 40);
}

#[tokio::test]
async fn hostile_refs_are_stored_safely_or_refused() {
    let runner = TestRunner::start().await;
    let long_ref = format!("refs/heads/{}", "a".repeat(5_000));
    for (git_ref, _why) in [
        ("refs/heads/$(rm -rf ~)", "shell substitution"),
        ("refs/heads/`reboot`; echo", "backticks"),
        ("refs/heads/master\n", "newline"),
        (long_ref.as_str(), "very long"),
    ] {
        let response = runner.deliver("push", &push_body(git_ref, SHA_A)).await;
        assert_eq!(response.status(), 200, "{git_ref:.40}");
        let answer: Value = response.json().await.expect("json");
        assert!(
            answer["ignored"]
                .as_str()
                .expect("ignored")
                .contains("not a deploy branch"),
            "{answer}"
        );
    }
    // The hostile ref is stored as data, verbatim (clipped), and never became a job.
    let stored: String = sqlx::query_scalar("SELECT git_ref FROM deliveries ORDER BY id LIMIT 1")
        .fetch_one(runner.pool.db())
        .await
        .expect("row");
    assert_eq!(stored, "refs/heads/$(rm -rf ~)");
    let longest: i64 = sqlx::query_scalar("SELECT max(length(git_ref)) FROM deliveries")
        .fetch_one(runner.pool.db())
        .await
        .expect("row");
    assert!(longest <= 512);
    assert_eq!(runner.count("jobs").await, 0);

    // A lone surrogate escape (not valid UTF-8 once decoded) is malformed JSON: 400.
    let body = String::from_utf8(push_body("refs/heads/PLACEHOLDER", SHA_A))
        .expect("utf8")
        .replace("PLACEHOLDER", "\\udc80");
    let response = runner.deliver("push", body.as_bytes()).await;
    assert_eq!(response.status(), 400);
    // Raw non-UTF-8 bytes in the body: 400.
    let mut raw = push_body("refs/heads/PLACEHOLDER", SHA_A);
    let at = raw.windows(11).position(|w| w == b"PLACEHOLDER").expect("marker");
    raw[at] = 0xff;
    let response = runner.deliver("push", &raw).await;
    assert_eq!(response.status(), 400);
    runner.stop().await;
}

#[tokio::test]
async fn repository_names_match_case_insensitively_as_on_github() {
    let runner = TestRunner::start().await;
    let mut push = fixture_json("push.with-no-username-committer.payload.json");
    push["repository"]["full_name"] = "codertocat/hello-world".into();
    let response = runner.deliver("push", &serde_json::to_vec(&push).expect("json")).await;
    assert_eq!(response.status(), 202);
    runner.stop().await;
}
