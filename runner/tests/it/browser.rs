//! The dashboard in a real headless Chromium (driven over WebDriver by chromedriver),
//! against a runner that deploys the webapp for real: local Docker engine, registry.
//! Needs `chromium` and `chromium-driver` (scripts/services.sh install), plus what the
//! end-to-end pipeline test needs. Screenshots land in `target/browser-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

struct Chromedriver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver() -> Chromedriver {
    let driver = which("chromedriver").unwrap_or_else(|| {
        panic!("chromedriver is not installed: apt-get install chromium chromium-driver (scripts/services.sh install does it)")
    });
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Times on the pages must follow the viewer's zone, not the server's.
        .env("TZ", "Asia/Tokyo")
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    // From here on, Drop kills and reaps it whatever happens.
    let driver = Chromedriver {
        child,
        url: url.clone(),
        _profile: tempfile::tempdir().expect("tempdir"),
    };
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {url}");
}

async fn browser(driver: &Chromedriver, width: u32, height: u32) -> Client {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| which(name))
        .unwrap_or_else(|| panic!("chromium is not installed: apt-get install chromium chromium-driver"));
    let profile = driver._profile.path().join(format!("profile-{width}"));
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ]
        }
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

async fn wait_for_text(client: &Client, css: &str, wanted: &str) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last.contains(wanted) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never showed {wanted:?}; last text: {last:?}");
}

async fn wait_job(runner: &TestRunner, job_id: i64) -> Value {
    for _ in 0..1200 {
        let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} did not finish in 120 s");
}

async fn push(runner: &TestRunner, sha: &str, secret: &str, repository: &str, git_ref: &str, message: &str) -> i64 {
    let mut body = fixture_json("push.with-no-username-committer.payload.json");
    body["ref"] = git_ref.into();
    body["after"] = sha.into();
    body["repository"]["full_name"] = repository.into();
    body["head_commit"]["message"] = message.into();
    let response = runner
        .deliver_signed(
            "push",
            &serde_json::to_vec(&body).expect("json"),
            Some(secret),
            &unique_delivery_id(),
        )
        .await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id")
}

#[tokio::test]
async fn the_dashboard_in_a_browser_shows_deploys_live_logs_and_rolls_back_after_login() {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let unique = format!("{}{}", std::process::id(), free_port());
    let project = format!("web{unique}");
    let image = format!("runner-browser-{unique}");
    let host_port = free_port();
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().join("repo");
    let first = webapp_repo(&repo, WEBAPP_DOCKERFILE);
    git(&repo, &["commit", "--quiet", "--allow-empty", "-m", "second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![
            format!("{image}:*"),
            format!("{registry}/{image}:*"),
            format!("{registry}/{image}@*"),
        ],
    };
    let hanging = hanging_server();
    let (config_project, config_repo, config_image, config_registry) =
        (project.clone(), repo.clone(), image.clone(), registry.clone());
    let runner = TestRunner::start_with(move |dir| {
        let mut config = pipeline_config(
            dir,
            &config_project,
            &config_repo,
            &config_image,
            &config_registry,
            host_port,
            15,
        );
        let quick_project = |name: &str, repository: &str, clone_url: String| config::Project {
            clone_url: Some(clone_url),
            build: Some(config::Build {
                image: format!("runner-browser-{name}"),
                ..config::Build::default()
            }),
            smoke: Some(config::Smoke {
                container_port: 5001,
                ..config::Smoke::default()
            }),
            registry: Some(config::v2_registry("127.0.0.1:1")),
            rollout: Some(config::local_rollout(free_port(), None)),
            ..config::project(name, repository, &["main"], "OTHER_SECRET")
        };
        config
            .projects
            .push(quick_project("slow", "Octocoders/Hello-World", hanging.clone()));
        let missing = dir.join("no-such-repository").display().to_string();
        config.projects.push(quick_project("broken", "Acme/broken", missing));
        config
    })
    .await;

    // Two real deploys.
    let first_job = push(
        &runner,
        &first,
        SECRET,
        REPOSITORY,
        "refs/heads/master",
        "First <b>version</b>",
    )
    .await;
    assert_eq!(wait_job(&runner, first_job).await["state"], "succeeded");
    let second_job = push(
        &runner,
        &second,
        SECRET,
        REPOSITORY,
        "refs/heads/master",
        "Second version",
    )
    .await;
    assert_eq!(wait_job(&runner, second_job).await["state"], "succeeded");
    let deployments = runner.get_json("/api/deployments").await;
    let first_deployment = deployments["items"][1]["id"].as_i64().expect("first deployment");

    let driver = start_chromedriver().await;
    let client = browser(&driver, 1280, 900).await;

    // The deployments page: both rows, the newest marked current, text not markup.
    client.goto(&runner.url("/")).await.expect("open /");
    let table = wait_for_text(&client, "#deployments", "Second version").await;
    assert!(table.contains("First <b>version</b>"), "{table}");
    let current = client
        .find(Locator::Css("tr.live"))
        .await
        .expect("the current deployment is marked")
        .text()
        .await
        .expect("text");
    assert!(current.contains("Second version"), "{current}");
    let shown_time = client
        .execute(
            "var t=document.querySelector('#deployments time');\
             return [t.title, new Date(Number(t.dataset.ms)).toLocaleString(), t.textContent];",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        shown_time[0], shown_time[1],
        "times are shown in the viewer's zone: {shown_time}"
    );
    assert!(
        shown_time[2]
            .as_str()
            .is_some_and(|t| t.contains("ago") || t.contains("now")),
        "{shown_time}"
    );
    screenshot(&client, "deployments").await;

    // A running job's page shows a line the job writes after the page loaded.
    let slow_job = push(
        &runner,
        &"5".repeat(40),
        OTHER_SECRET,
        "Octocoders/Hello-World",
        "refs/heads/main",
        "slow",
    )
    .await;
    for _ in 0..100 {
        if runner.get_json(&format!("/api/jobs/{slow_job}")).await["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .goto(&runner.url(&format!("/jobs/{slow_job}")))
        .await
        .expect("open the job");
    wait_for_text(&client, "#job-state", "running").await;
    let before = client
        .find(Locator::Css("#log"))
        .await
        .expect("log")
        .text()
        .await
        .expect("text");
    assert!(!before.contains("job cancelled"), "{before}");
    let loaded_url = client.current_url().await.expect("url");
    let cancel = runner
        .client
        .post(runner.url(&format!("/api/jobs/{slow_job}/cancel")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), 200);
    wait_for_text(&client, "#log", "job cancelled").await;
    wait_for_text(&client, "#job-state", "cancelled").await;
    wait_for_text(&client, "#steps", "cancelled").await;
    assert!(
        client.find(Locator::Css("#cancel-job")).await.is_err(),
        "the cancel button goes once the job has ended"
    );
    assert_eq!(client.current_url().await.expect("url"), loaded_url, "no reload");
    screenshot(&client, "job-live-log").await;

    // Without a login, an action is refused.
    client.goto(&runner.url("/")).await.expect("open /");
    client
        .execute(
            "var f=document.createElement('form');f.method='post';\
             f.action='/deployments/'+arguments[0]+'/rollback';document.body.appendChild(f);f.submit();",
            vec![json!(first_deployment)],
        )
        .await
        .expect("submit");
    wait_for_text(&client, "main", "Log in with the admin token").await;
    screenshot(&client, "refused-without-login").await;
    let jobs_before = runner.get_json("/api/jobs").await["items"]
        .as_array()
        .expect("items")
        .len();

    // Log in, roll back to the first deployment, land on the new job.
    client.goto(&runner.url("/login")).await.expect("open /login");
    screenshot(&client, "login").await;
    client
        .find(Locator::Css("#token"))
        .await
        .expect("token field")
        .send_keys(ADMIN_TOKEN)
        .await
        .expect("type");
    client
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_for_text(&client, "header", "Log out").await;
    client
        .find(Locator::Css(&format!(
            "#deployment-{first_deployment} form[action$='/rollback'] button"
        )))
        .await
        .expect("a rollback button on the older deployment")
        .click()
        .await
        .expect("click");
    client.accept_alert().await.expect("confirm the rollback");
    wait_for_text(&client, "h1", "Job #").await;
    let url = client.current_url().await.expect("url");
    let rollback_job: i64 = url
        .path()
        .strip_prefix("/jobs/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("landed on {url}"));
    let lead = client
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(lead.contains("rollback"), "{lead}");
    assert_eq!(
        runner.get_json("/api/jobs").await["items"]
            .as_array()
            .expect("items")
            .len(),
        jobs_before + 1
    );
    wait_for_text(&client, "#job-state", "succeeded").await;
    screenshot(&client, "rollback-job").await;
    let version: Value = reqwest::get(format!("http://127.0.0.1:{host_port}/version"))
        .await
        .expect("the app answers")
        .json()
        .await
        .expect("json");
    assert_eq!(version["commit"], first.as_str(), "the first commit is live again");

    // A push that fails: its job page opens on the failing step and that step's last lines;
    // the Jobs page lists it with where it failed; the deployments page shows the attempt.
    let broken_job = push(
        &runner,
        &"b".repeat(40),
        OTHER_SECRET,
        "Acme/broken",
        "refs/heads/main",
        "Broken",
    )
    .await;
    assert_eq!(wait_job(&runner, broken_job).await["state"], "failed");
    client
        .goto(&runner.url(&format!("/jobs/{broken_job}")))
        .await
        .expect("open the failed job");
    let failure = wait_for_text(&client, "#failure", "Failed at checkout").await;
    assert!(
        failure.contains("fetching"),
        "the checkout's own lines come first: {failure}"
    );
    let open = client
        .execute("return document.querySelector('#failure details').open;", vec![])
        .await
        .expect("script");
    assert_eq!(open, Value::Bool(true), "the failing step is open");
    screenshot(&client, "failed-job").await;
    client.goto(&runner.url("/jobs?kind=deploy")).await.expect("open /jobs");
    let row = wait_for_text(&client, &format!("#job-{broken_job}"), "checkout").await;
    assert!(row.contains("failed"), "{row}");
    let jobs_table = client
        .find(Locator::Css("#jobs"))
        .await
        .expect("jobs table")
        .text()
        .await
        .expect("text");
    assert!(
        jobs_table.contains(&format!("#{slow_job}")),
        "every job is listed: {jobs_table}"
    );
    screenshot(&client, "jobs").await;
    client.goto(&runner.url("/")).await.expect("open /");
    let attempt = wait_for_text(&client, "tr.attempt", "Broken").await;
    assert!(attempt.contains("failed"), "{attempt}");
    let live_rows = client
        .find_all(Locator::Css("#deployments tr.live"))
        .await
        .expect("rows");
    assert_eq!(live_rows.len(), 1, "one live deployment in the environment");

    // Deliveries, and the narrow phone layout without sideways scrolling.
    client.goto(&runner.url("/deliveries")).await.expect("open deliveries");
    wait_for_text(&client, "#deliveries", "push").await;
    screenshot(&client, "deliveries").await;
    client.close().await.expect("close");

    let phone = browser(&driver, 390, 844).await;
    phone.goto(&runner.url("/")).await.expect("open /");
    wait_for_text(&phone, "#deployments", "Second version").await;
    let overflow = phone
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .expect("script");
    assert!(
        overflow.as_i64().is_some_and(|px| px <= 0),
        "the page scrolls sideways by {overflow}px"
    );
    screenshot(&phone, "deployments-phone").await;
    phone.close().await.expect("close");
    runner.stop().await;
    let _ = rollback_job;
}
