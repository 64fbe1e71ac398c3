//! Pull requests' previews on the real engine, Caddy and registry, reporting to the GitHub
//! stand-in: a preview per pull request at its own route, updated by each push with the
//! same switch as an environment, one comment edited as it changes, and nothing left in
//! the engine, Caddy or the registry once the pull request closes; a fork's only once
//! approved; the oldest evicted past `max_previews`; expiry; a restart.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::config::{self, Config};
use crate::common::fake_github::{FakeGitHub, start_runner, with_github};
use crate::common::*;
use crate::pipeline_e2e::commit_all;
use crate::zero_downtime::Prober;

/// `count` consecutive free loopback ports; the first.
fn free_ports(count: u16) -> u16 {
    'search: loop {
        let first = free_port();
        if first > u16::MAX - count {
            continue;
        }
        for port in first + 1..first + count {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue 'search;
            }
        }
        return first;
    }
}

/// A webapp project deploying master, with previews on port ranges, reporting to `github`.
struct Previews {
    project: String,
    image: String,
    registry: String,
    repo: tempfile::TempDir,
    /// The previews' route ports: seat N answers on `host_ports + N`.
    host_ports: u16,
    slot_ports: u16,
    _cleanup: Vec<EngineCleanup>,
}

impl Previews {
    fn new(name: &str, max_previews: u32) -> Self {
        let registry = required_env(
            "RUNNER_TEST_REGISTRY",
            "start a registry with scripts/services.sh start",
        );
        let unique = format!("{}{}", std::process::id(), free_port());
        let (project, image) = (format!("{name}{unique}"), format!("runner-{name}-{unique}"));
        let repo = tempfile::tempdir().expect("tempdir");
        webapp_repo(repo.path(), WEBAPP_DOCKERFILE);
        let cleanup = (1..=9)
            .map(|number| EngineCleanup {
                container: format!("runner-{project}-pr-{number}"),
                references: if number == 1 {
                    vec![
                        format!("{image}:*"),
                        format!("{registry}/{image}:*"),
                        format!("{registry}/{image}@*"),
                    ]
                } else {
                    Vec::new()
                },
            })
            .collect();
        let max = u16::try_from(max_previews).expect("small");
        Self {
            project,
            image,
            registry,
            repo,
            host_ports: free_ports(max),
            slot_ports: free_ports(max * 2),
            _cleanup: cleanup,
        }
    }

    fn config(&self, dir: &Path, api: &str, max_previews: u32) -> Config {
        let mut config = with_github(
            config::pipeline_config(
                dir,
                &self.project,
                self.repo.path(),
                &self.image,
                &self.registry,
                free_port(),
                15,
            ),
            api,
            false,
        );
        let max = u16::try_from(max_previews).expect("small");
        config.projects[0].previews = Some(runner::config::raw::RawPreviews {
            host_ports: Some(vec![self.host_ports, self.host_ports + max - 1]),
            slot_ports: Some(vec![self.slot_ports, self.slot_ports + 2 * max - 1]),
            max_previews: Some(max_previews),
            env: [("GREETING".to_owned(), "from a preview".to_owned())].into(),
            timeout_secs: Some(30),
            ..Default::default()
        });
        config
    }

    /// A commit of pull request `number` (its head ref moved to it); its SHA.
    fn commit(&self, number: i64, change: &str) -> String {
        std::fs::write(self.repo.path().join("CHANGES"), change).expect("write");
        let sha = commit_all(self.repo.path(), change);
        git(
            self.repo.path(),
            &["update-ref", &format!("refs/pull/{number}/head"), &sha],
        );
        sha
    }

    fn url(&self, seat: u16) -> String {
        format!("http://127.0.0.1:{}", self.host_ports + seat)
    }
}

/// A `pull_request` delivery of `action` for pull request `number` at `sha`, from the
/// repository itself or from a fork.
fn pull_request(action: &str, number: i64, sha: &str, fork: bool) -> Vec<u8> {
    let fixture = if action == "closed" {
        "pull_request.closed.payload.json"
    } else {
        "pull_request.opened.payload.json"
    };
    let mut body = fixture_json(fixture);
    body["action"] = action.into();
    body["number"] = number.into();
    body["pull_request"]["number"] = number.into();
    body["pull_request"]["head"]["sha"] = sha.into();
    if fork {
        body["pull_request"]["head"]["repo"]["full_name"] = "stranger/Hello-World".into();
    }
    serde_json::to_vec(&body).expect("json")
}

async fn deliver_pull_request(runner: &TestRunner, action: &str, number: i64, sha: &str, fork: bool) -> Value {
    let response = runner
        .deliver("pull_request", &pull_request(action, number, sha, fork))
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("json")
}

/// The verify job a delivery queued, once it ended successfully; its log.
async fn verified(runner: &TestRunner, queued: &Value) -> String {
    let (job, log) = runner.job_when_ended(queued["job_id"].as_i64().expect("a job")).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    log
}

/// The commit `url`'s `/version` answers with.
async fn serving(url: &str) -> Option<String> {
    let answer = reqwest::get(format!("{url}/version")).await.ok()?;
    let version: Value = answer.json().await.ok()?;
    version["commit"].as_str().map(str::to_owned)
}

/// Polls `what` every 100 ms for up to `secs` until it holds.
async fn eventually(secs: u64, mut what: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if what().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn preview_of(runner: &TestRunner, number: i64) -> Value {
    let listed = runner.get_json("/api/previews").await;
    listed["previews"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["number"] == number)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A TCP listener on `address` that answers every connection with `text`; its address as
/// `nc` takes it (`IP PORT`, the host's own address for an unspecified one).
fn answering(address: (&str, u16), text: &'static str) -> String {
    let listener = std::net::TcpListener::bind(address)
        .unwrap_or_else(|e| panic!("bind {address:?} for a stand-in listener (tests run as root): {e}"));
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &stream, format!("{text}\n").as_bytes());
        }
    });
    format!("{} {port}", host_address())
}

/// What `address` (`IP PORT`) answers a container on `network`, or `blocked`.
fn connect_from(network: &str, address: &str) -> String {
    docker(&[
        "run",
        "--rm",
        "--network",
        network,
        "local/busybox:1",
        "sh",
        "-c",
        &format!("nc -w 2 {address} </dev/null || echo blocked"),
    ])
}

fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What the engine and the registry still hold of pull request `number`'s preview (its
/// seat's route stays in Caddy, for the seat's next preview, and answers nothing).
async fn leftovers(previews: &Previews, number: i64) -> Vec<String> {
    let name = format!("runner-{}-pr-{number}", previews.project);
    let mut left: Vec<String> = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={name}"),
    ])
    .lines()
    .map(|c| format!("container {c}"))
    .collect();
    if !docker(&["network", "ls", "-q", "--filter", &format!("name=^{name}$")]).is_empty() {
        left.push(format!("network {name}"));
    }
    let tag = format!("pr-{number}-");
    left.extend(
        docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            &format!("{}/{}", previews.registry, previews.image),
        ])
        .lines()
        .filter(|image| image.contains(&tag))
        .map(|image| format!("engine image {image}")),
    );
    let tags: Value = reqwest::get(format!("http://{}/v2/{}/tags/list", previews.registry, previews.image))
        .await
        .expect("registry")
        .json()
        .await
        .unwrap_or(Value::Null);
    left.extend(
        tags["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|t| t.starts_with(&tag))
            .map(|t| format!("registry tag {t}")),
    );
    left
}

#[tokio::test]
async fn a_pull_request_gets_a_preview_each_push_updates_and_closing_it_leaves_nothing_behind() {
    let github = FakeGitHub::default();
    let api = github.start().await;
    let previews = Previews::new("preview", 2);
    let runner = start_runner(|dir| previews.config(dir, &api, 2)).await;
    let url = previews.url(0);

    let first = previews.commit(2, "first");
    let log = verified(
        &runner,
        &deliver_pull_request(&runner, "opened", 2, &first, false).await,
    )
    .await;
    assert!(log.contains("the preview of #2 serves"), "{log}");
    assert_eq!(
        serving(&url).await.as_deref(),
        Some(first.as_str()),
        "the preview answers at its route"
    );
    let preview = preview_of(&runner, 2).await;
    assert_eq!(preview["state"], "live", "{preview}");
    assert_eq!(preview["url"], url.as_str(), "{preview}");
    // Its container has the previews' variables and none of the project's.
    let container = docker(&[
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name=runner-{}-pr-2", previews.project),
    ]);
    let env = docker(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        container.lines().next().expect("a container"),
    ]);
    assert!(env.contains("GREETING=from a preview"), "{env}");
    assert!(!env.contains(SECRET) && !env.contains("ghp_"), "{env}");
    // A pull request's code reaches none of the host's services from its preview, while
    // the same listener answers a container on an ordinary bridge.
    let host = answering(("0.0.0.0", 0), "host-listener");
    busybox_image();
    let container = container.lines().next().expect("a container");
    let preview_network = format!("container:{container}");
    assert_eq!(
        connect_from("bridge", &host),
        "host-listener",
        "the listener answers an ordinary bridge"
    );
    assert_eq!(
        connect_from(&preview_network, &host),
        "blocked",
        "the preview reached the host"
    );
    // Name lookups are the exception: a resolver on the host (port 53) still answers.
    let resolver = answering((host_address().to_string().as_str(), 53), "resolver");
    assert_eq!(
        connect_from(&preview_network, &resolver),
        "resolver",
        "the preview's name lookups reach the host's resolver"
    );
    // Nor another container's port published on the host's addresses.
    let neighbour = format!("runner-{}-neighbour", previews.project);
    docker(&[
        "run",
        "-d",
        "--name",
        &neighbour,
        "-p",
        "0.0.0.0::8080",
        "local/busybox:1",
        "sh",
        "-c",
        "while true; do echo published | nc -l -p 8080; done",
    ]);
    let published = docker(&["port", &neighbour, "8080/tcp"]);
    let published_port = published
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .expect("a port")
        .to_owned();
    let published = format!("{} {published_port}", host_address());
    let (from_bridge, from_preview) = (
        connect_from("bridge", &published),
        connect_from(&preview_network, &published),
    );
    docker(&["rm", "-f", &neighbour]);
    assert_eq!(from_bridge, "published", "the neighbour answers an ordinary bridge");
    assert_eq!(
        from_preview, "blocked",
        "the preview reached another container's published port"
    );

    // Each push updates the same preview, with no failed request through its route.
    let prober = Prober::start(format!("{url}/version"));
    let mut pushed = vec![first.clone()];
    for change in ["second", "third"] {
        let sha = previews.commit(2, change);
        verified(
            &runner,
            &deliver_pull_request(&runner, "synchronize", 2, &sha, false).await,
        )
        .await;
        assert_eq!(serving(&url).await.as_deref(), Some(sha.as_str()));
        pushed.push(sha);
    }
    let (answered, failed, seen) = prober.finish().await;
    assert_eq!(
        failed, 0,
        "{answered} answered, {failed} failed through the preview's route"
    );
    for client in &seen {
        assert!(
            pushed.ends_with(client),
            "each client saw the pushes in order: {client:?}"
        );
    }

    // One comment, edited: it names the latest commit and the address.
    assert!(
        eventually(10, async || github
            .comments_on(2)
            .first()
            .is_some_and(|(_, body)| body.contains(&pushed[2])))
        .await,
        "{:?}",
        github.comments_on(2)
    );
    let comments = github.comments_on(2);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].1.contains(&url), "{comments:?}");
    // GitHub deployments of the preview: transient, to `pr-2`, each push's successful.
    let created = || -> Vec<Value> {
        github
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/deployments"))
            .map(|r| r.body)
            .collect()
    };
    assert!(eventually(10, async || created().len() == 3).await, "{:?}", created());
    let created = created();
    for deployment in &created {
        assert_eq!(deployment["environment"], "pr-2", "{deployment}");
        assert_eq!(deployment["transient_environment"], true, "{deployment}");
        assert_eq!(deployment["production_environment"], false, "{deployment}");
    }
    assert!(
        eventually(10, async || github
            .deployment_statuses()
            .iter()
            .filter(|s| s["state"] == "success" && s["environment_url"] == url.as_str())
            .count()
            == 3)
        .await,
        "{:?}",
        github.deployment_statuses()
    );

    // Closed: everything of it goes, and GitHub hears so.
    deliver_pull_request(&runner, "closed", 2, &pushed[2], false).await;
    assert!(
        eventually(60, async || preview_of(&runner, 2).await["state"] == "removed").await,
        "{}",
        preview_of(&runner, 2).await
    );
    assert_eq!(preview_of(&runner, 2).await["removal"], "closed");
    let left = leftovers(&previews, 2).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        serving(&url).await.is_none(),
        "nothing answers at the preview's address"
    );
    assert!(
        eventually(10, async || github.deployment_statuses().iter().any(|s| s["state"]
            == "inactive"
            && s["description"].as_str().is_some_and(|d| d.contains("closed"))))
        .await,
        "{:?}",
        github.deployment_statuses()
    );
    assert!(
        eventually(10, async || github.comments_on(2).first().is_some_and(
            |(_, body)| body.contains("was removed: the pull request was closed")
        ))
        .await,
        "{:?}",
        github.comments_on(2)
    );
    assert_eq!(github.comments_on(2).len(), 1, "the comment was edited, not repeated");
    runner.stop().await;
}

#[tokio::test]
async fn a_forks_preview_waits_for_approval_and_the_oldest_preview_makes_room_for_a_new_one() {
    let github = FakeGitHub::default();
    let api = github.start().await;
    let previews = Previews::new("evict", 1);
    let runner = start_runner(|dir| {
        let mut config = previews.config(dir, &api, 1);
        config.projects[0].pull_requests = Some("approve-forks".into());
        config
    })
    .await;

    let forked = previews.commit(7, "a stranger's change");
    let held = deliver_pull_request(&runner, "opened", 7, &forked, true).await;
    let job_id = held["job_id"].as_i64().expect("a held job");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        runner.get_json(&format!("/api/jobs/{job_id}")).await["state"],
        "awaiting_approval"
    );
    assert!(
        preview_of(&runner, 7).await.is_null(),
        "no preview before an admin approves"
    );
    assert!(serving(&previews.url(0)).await.is_none());
    let approved = reqwest::Client::new()
        .post(runner.url(&format!("/api/jobs/{job_id}/approve")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("approve");
    assert_eq!(approved.status(), 200);
    verified(&runner, &held).await;
    assert_eq!(serving(&previews.url(0)).await.as_deref(), Some(forked.as_str()));

    // The only seat is taken: a new pull request's preview evicts the fork's.
    let own = previews.commit(8, "our change");
    let log = verified(&runner, &deliver_pull_request(&runner, "opened", 8, &own, false).await).await;
    assert!(log.contains("removing the preview of #7 first"), "{log}");
    assert_eq!(serving(&previews.url(0)).await.as_deref(), Some(own.as_str()));
    let evicted = preview_of(&runner, 7).await;
    assert_eq!(
        (evicted["state"].as_str(), evicted["removal"].as_str()),
        (Some("removed"), Some("evicted"))
    );
    assert!(
        leftovers(&previews, 7).await.is_empty(),
        "{:?}",
        leftovers(&previews, 7).await
    );
    assert!(
        eventually(10, async || github
            .comments_on(7)
            .first()
            .is_some_and(|(_, body)| body.contains("max_previews")))
        .await,
        "the evicted preview's comment says why: {:?}",
        github.comments_on(7)
    );

    // No push for longer than ttl_hours: it expires.
    sqlx::query("UPDATE previews SET pushed_at = pushed_at - 73 * 3600 * 1000 WHERE number = 8")
        .execute(runner.pool.db())
        .await
        .expect("age the preview");
    assert!(
        eventually(20, async || preview_of(&runner, 8).await["state"] == "removed").await,
        "{}",
        preview_of(&runner, 8).await
    );
    assert_eq!(preview_of(&runner, 8).await["removal"], "expired");
    assert!(
        leftovers(&previews, 8).await.is_empty(),
        "{:?}",
        leftovers(&previews, 8).await
    );
    runner.stop().await;
}

#[tokio::test]
async fn previews_keep_serving_across_a_killed_runner_and_one_closed_meanwhile_goes_at_start() {
    let github = FakeGitHub::default();
    github.with(|f| {
        f.pulls.insert(4, "open".into());
        f.pulls.insert(5, "open".into());
    });
    let api = github.start().await;
    let previews = Previews::new("restart", 2);
    let database = tempfile::tempdir().expect("tempdir");
    let database_url = database::url_for(database.path());
    let with_database = |mut config: Config| {
        config.server.database_url = Some(database_url.clone());
        config
    };
    let runner = start_runner(|dir| with_database(previews.config(dir, &api, 2))).await;
    let four = previews.commit(4, "four");
    verified(&runner, &deliver_pull_request(&runner, "opened", 4, &four, false).await).await;
    let five = previews.commit(5, "five");
    verified(&runner, &deliver_pull_request(&runner, "opened", 5, &five, false).await).await;
    // Each route answers with its own pull request's version only.
    let (url4, url5) = (previews.url(0), previews.url(1));
    for _ in 0..20 {
        assert_eq!(serving(&url4).await.as_deref(), Some(four.as_str()));
        assert_eq!(serving(&url5).await.as_deref(), Some(five.as_str()));
    }
    runner.stop_quickly().await;

    // While it is down, #5 closes (its delivery never arrives).
    github.with(|f| f.pulls.insert(5, "closed".into()));
    let runner = start_runner(|dir| with_database(previews.config(dir, &api, 2))).await;
    assert_eq!(
        serving(&url4).await.as_deref(),
        Some(four.as_str()),
        "#4 serves after the restart"
    );
    assert!(
        eventually(30, async || preview_of(&runner, 5).await["state"] == "removed").await,
        "{}",
        preview_of(&runner, 5).await
    );
    assert!(
        leftovers(&previews, 5).await.is_empty(),
        "{:?}",
        leftovers(&previews, 5).await
    );
    assert_eq!(preview_of(&runner, 4).await["state"], "live");
    assert_eq!(serving(&url4).await.as_deref(), Some(four.as_str()));
    runner.stop().await;
}
