//! Local deploys behind a real Caddy: a client probing the environment through the proxy
//! during deploys, a failed deploy and a rollback sees no failed request; a Caddy that is
//! down fails the deploy and leaves the live version alone; a Caddy that lost its routes
//! gets them back from the runner.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::pipeline_e2e::{commit_all, push_and_wait};

/// Counts what a client sees on `url` while it runs: answers per commit, and failures.
pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<Vec<String>>>,
}

impl Prober {
    /// Four clients, each with keep-alive connections, asking every 5 ms.
    pub(crate) fn start(url: String) -> Self {
        let (stop, ok, failed) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let task = {
            let (stop, ok, failed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
                (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..4 {
                    let (client, url, stop, ok, failed) = (
                        client.clone(),
                        url.clone(),
                        Arc::clone(&stop),
                        Arc::clone(&ok),
                        Arc::clone(&failed),
                    );
                    tasks.spawn(async move {
                        let mut seen = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            match client.get(&url).send().await {
                                Ok(response) if response.status().is_success() => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    if let Ok(version) = response.json::<Value>().await
                                        && let Some(commit) = version["commit"].as_str()
                                        && seen.last().is_none_or(|last: &String| last != commit)
                                    {
                                        seen.push(commit.to_owned());
                                    }
                                }
                                _ => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        seen
                    });
                }
                let mut all = Vec::new();
                while let Some(Ok(seen)) = tasks.join_next().await {
                    all.push(seen);
                }
                all
            })
        };
        Self { stop, ok, failed, task }
    }

    /// (answered, failed, per client the commits in the order they answered).
    pub(crate) async fn finish(self) -> (u64, u64, Vec<Vec<String>>) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.task.await.expect("the prober ends");
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            seen,
        )
    }
}

/// A webapp project deploying master to a local environment behind this test's Caddy.
pub(crate) struct Environment {
    pub project: String,
    pub image: String,
    pub registry: String,
    pub runner: TestRunner,
    repo: tempfile::TempDir,
    host_port: u16,
    _cleanup: EngineCleanup,
}

async fn environment(name: &str) -> Environment {
    environment_with(name, |_| {}).await
}

/// As [`environment`], with `tune` applied to the runner's config.
pub(crate) async fn environment_with(
    name: &str,
    tune: impl FnOnce(&mut config::Config) + Send + 'static,
) -> Environment {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let unique = format!("{}{}", std::process::id(), free_port());
    let (project, image, host_port) = (
        format!("{name}{unique}"),
        format!("runner-{name}-{unique}"),
        free_port(),
    );
    let repo = tempfile::tempdir().expect("tempdir");
    webapp_repo(repo.path(), WEBAPP_DOCKERFILE);
    let cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![
            format!("{image}:*"),
            format!("{registry}/{image}:*"),
            format!("{registry}/{image}@*"),
        ],
    };
    let (repo_path, config_project) = (repo.path().to_owned(), project.clone());
    let (config_image, config_registry) = (image.clone(), registry.clone());
    let runner = TestRunner::start_with(move |dir| {
        let mut config = pipeline_config(
            dir,
            &config_project,
            &repo_path,
            &config_image,
            &config_registry,
            host_port,
            15,
        );
        tune(&mut config);
        config
    })
    .await;
    Environment {
        project,
        image,
        registry,
        runner,
        repo,
        host_port,
        _cleanup: cleanup,
    }
}

impl Environment {
    pub(crate) async fn deploy(&self, change: &str) -> (String, Value) {
        std::fs::write(self.repo.path().join("CHANGES"), change).expect("write");
        let sha = commit_all(self.repo.path(), change);
        let job = push_and_wait(&self.runner, &sha).await;
        (sha, job)
    }

    /// As [`Self::deploy`], for a deploy that must succeed; returns its log too.
    pub(crate) async fn deploy_live(&self, change: &str) -> (String, Value, String) {
        let (sha, job) = self.deploy(change).await;
        let log = self.runner.job_log(&job["id"]).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{log}");
        (sha, job, log)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/version", self.host_port)
    }
}

#[tokio::test]
async fn deploys_a_failed_deploy_and_a_rollback_fail_no_request_through_the_proxy() {
    let env = environment("zd").await;
    let (first, job, _) = env.deploy_live("first").await;
    let first_deployment = job["deployment"]["id"].as_i64().expect("a deployment");

    let prober = Prober::start(env.url());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (second, _, log) = env.deploy_live("second").await;
    assert!(log.contains("started in slot b beside the live version"), "{log}");
    let (third, _, log) = env.deploy_live("third").await;
    assert!(log.contains("started in slot a"), "{log}");

    // A version that never answers its health check: it gets no traffic.
    std::fs::write(
        env.repo.path().join("Dockerfile"),
        WEBAPP_DOCKERFILE.replace("PORT=5001", "PORT=5999"),
    )
    .expect("write");
    let (_, job) = env.deploy("broken").await;
    assert_eq!(job["state"], "failed", "{job}");

    let rollback = reqwest::Client::new()
        .post(env.runner.url(&format!("/api/deployments/{first_deployment}/rollback")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(rollback.status(), 202);
    let job_id = rollback.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = env.runner.wait_for_job_end(job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", env.runner.job_log(job_id).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (answered, failed, seen) = prober.finish().await;
    assert_eq!(failed, 0, "{answered} requests answered, {failed} failed");
    assert!(answered > 100, "the prober kept asking: {answered}");
    for client in &seen {
        assert_eq!(
            client,
            &[first.clone(), second.clone(), third.clone(), first.clone()],
            "each version served in turn"
        );
    }
    let running = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=io.runner.project={}", env.project),
        ])
        .output()
        .expect("docker");
    assert_eq!(
        String::from_utf8_lossy(&running.stdout).lines().count(),
        1,
        "one container serves the environment"
    );
    env.runner.stop().await;
}

#[tokio::test]
async fn with_caddy_down_a_deploy_fails_in_one_sentence_and_a_restarted_caddy_gets_its_routes_back() {
    let env = environment("cd").await;
    let (first, _, _) = env.deploy_live("first").await;

    caddy::this_tests(caddy::Caddy::kill);
    let (_, job) = env.deploy("second").await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().expect("an error");
    assert!(
        error.contains("Caddy's admin API") && error.contains("the live version keeps serving"),
        "{error}"
    );
    let live = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{index .Config.Labels \"org.opencontainers.image.revision\"}}",
        ])
        .arg(format!("runner-{}-production-a", env.project))
        .output()
        .expect("docker");
    assert_eq!(
        String::from_utf8_lossy(&live.stdout).trim(),
        format!("true {first}"),
        "the live container is untouched"
    );

    // Caddy comes back without any configuration: the runner puts its route back.
    caddy::this_tests(caddy::Caddy::run);
    let url = env.url();
    let answered = eventually_answers("the environment answers through the proxy again", &url).await;
    assert!(answered.contains(first.as_str()), "{answered}");
    env.runner.stop().await;
}

/// An app that has no SIGTERM handler: busybox's httpd, serving `/health` and a
/// `/version` naming its commit.
const IGNORES_SIGTERM: &str = "FROM local/busybox:1\nARG APP_COMMIT=unknown\n\
RUN mkdir -p /www && echo healthy > /www/health && printf '{\"commit\":\"%s\"}' \"$APP_COMMIT\" > /www/version\n\
EXPOSE 5001\nCMD [\"httpd\", \"-f\", \"-p\", \"5001\", \"-h\", \"/www\"]\n";

/// Deploys into slot a, then slot b of `env`: the second's log, and what the route served
/// the moment the second was recorded live.
async fn deploy_twice_behind_a_prober(env: &Environment) -> (String, String, u64, u64) {
    std::fs::write(env.repo.path().join("Dockerfile"), IGNORES_SIGTERM).expect("write");
    let (first, _, _) = env.deploy_live("first").await;
    let prober = Prober::start(env.url());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (second, _, log) = env.deploy_live("second").await;
    // Recorded live: the route serves it, to a client that never asked before.
    let served: Value = reqwest::get(env.url())
        .await
        .expect("the route answers")
        .json()
        .await
        .expect("json");
    assert_eq!(served["commit"], second.as_str(), "live means served\n{log}");
    assert!(log.contains("started in slot b beside the live version"), "{log}");
    let (answered, failed, seen) = prober.finish().await;
    for client in &seen {
        assert_eq!(client, &[first.clone(), second.clone()], "each version served in turn");
    }
    (second, log, answered, failed)
}

#[tokio::test]
async fn an_app_without_a_sigterm_handler_gives_up_the_traffic_at_once_and_is_live_only_once_the_route_serves_the_new_one()
 {
    let env = environment_with("sigterm", |config| {
        // A grace period long enough that waiting it out cannot pass for a handover.
        config.projects[0].containers = Some(runner::config::raw::RawContainers {
            stop_grace_secs: Some(30),
            ..Default::default()
        });
    })
    .await;
    let (_, log, answered, failed) = deploy_twice_behind_a_prober(&env).await;
    assert_eq!(failed, 0, "{answered} requests answered, {failed} failed\n{log}");
    assert!(log.contains("the proxy sends"), "{log}");
    assert!(
        !log.contains("still holds the traffic"),
        "its init passed SIGTERM on: the old version let go at once\n{log}"
    );
    env.runner.stop().await;

    // Without an init, the app as PID 1 ignores SIGTERM: the switch waits out the grace
    // period, then stops it, and only then records the new version live.
    let env = environment_with("noinit", |config| {
        config.projects[0].containers = Some(runner::config::raw::RawContainers {
            init: Some(false),
            stop_grace_secs: Some(2),
            ..Default::default()
        });
    })
    .await;
    let (_, log, _, _) = deploy_twice_behind_a_prober(&env).await;
    assert!(
        log.contains("the replaced version still holds the traffic after its grace period: it is stopped"),
        "{log}"
    );
    env.runner.stop().await;
}

/// An app of shell scripts that serves `/health`, `/version`, a slow request (`/slow`, 4 s)
/// and a streaming one (`/stream`, ten lines over 4 s), each connection by a process of
/// its own; on SIGTERM it stops listening and exits once the requests in flight are done.
const DRAINING_APP: [(&str, &str); 3] = [
    (
        "Dockerfile",
        "FROM local/busybox:1\nARG APP_COMMIT=unknown\nENV APP_COMMIT=${APP_COMMIT}\nCOPY server.sh handler.sh /\nRUN chmod +x /handler.sh\nEXPOSE 5001\nENTRYPOINT [\"/bin/sh\", \"/server.sh\"]\n",
    ),
    (
        "server.sh",
        "nc -ll -p 5001 -e /handler.sh &\nlistener=$!\n\
         trap 'kill $listener; while ls /tmp/busy.* >/dev/null 2>&1; do sleep 0.1; done; exit 0' TERM\n\
         wait $listener\n",
    ),
    (
        "handler.sh",
        "#!/bin/sh\nread -r method path version\ntouch /tmp/busy.$$\n\
         while read -r line; do [ -z \"$(echo \"$line\" | tr -d '\\r')\" ] && break; done\n\
         answer() { printf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' \"${#1}\" \"$1\"; }\n\
         case \"$path\" in\n\
         /health) answer healthy ;;\n\
         /version) answer \"{\\\"commit\\\":\\\"$APP_COMMIT\\\"}\" ;;\n\
         /slow) sleep 4; answer \"slow $APP_COMMIT\" ;;\n\
         /stream) printf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n\\r\\n'\n\
           for i in 1 2 3 4 5 6 7 8 9 10; do echo \"line $i $APP_COMMIT\"; sleep 0.4; done ;;\n\
         *) printf 'HTTP/1.1 404 Not Found\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' ;;\n\
         esac\nrm -f /tmp/busy.$$\n",
    ),
];

/// A slow and a streaming request through the route, opened once a deploy's rollout has
/// begun (the new version starting beside the live one): both must be answered whole by
/// the version that was live when they started.
async fn long_requests_across(env: &Environment, change: &str, live: &str) -> String {
    let base = env.url().trim_end_matches("/version").to_owned();
    let client = reqwest::Client::new();
    std::fs::write(env.repo.path().join("CHANGES"), change).expect("write");
    let sha = commit_all(env.repo.path(), change);
    let job_id = env.runner.push_queued(&sha).await;
    let rolling_out = async || {
        let job = env.runner.get_json(&format!("/api/jobs/{job_id}")).await;
        assert!(matches!(job["state"].as_str(), Some("queued" | "running")), "{job}");
        job["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|step| step["name"] == "rollout" && step["state"] == "running")
    };
    for _ in 0..1800 {
        if rolling_out().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), format!("{base}/slow"));
        async move { client.get(url).send().await?.text().await }
    });
    let stream = tokio::spawn({
        let (client, url) = (client.clone(), format!("{base}/stream"));
        async move { client.get(url).send().await?.text().await }
    });
    let (job, log) = env.runner.job_when_ended(job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    let slow = slow.await.expect("join").expect("the slow request is answered");
    assert_eq!(slow, format!("slow {live}"), "{log}");
    let stream = stream.await.expect("join").expect("the stream ends well");
    let lines: Vec<String> = (1..=10).map(|i| format!("line {i} {live}")).collect();
    assert_eq!(stream.lines().collect::<Vec<_>>(), lines, "{log}");
    sha
}

#[tokio::test]
async fn slow_and_streaming_requests_open_across_a_switch_finish_on_the_version_they_started_on() {
    busybox_image();
    let env = environment_with("drain", |config| {
        let rollout = config.projects[0].rollout.as_mut().expect("a rollout");
        rollout.drain_secs = Some(6);
    })
    .await;
    for (name, text) in DRAINING_APP {
        std::fs::write(env.repo.path().join(name), text).expect("write");
    }
    let (first, _, _) = env.deploy_live("first").await;
    let prober = Prober::start(env.url());
    // Into slot b: the old version is asked to stop at once, and finishes what it serves.
    let second = long_requests_across(&env, "second", &first).await;
    // Into slot a: the old version gets no new request, and is stopped once its requests
    // in flight are done (within drain_secs).
    long_requests_across(&env, "third", &second).await;
    let (answered, failed, _) = prober.finish().await;
    assert_eq!(failed, 0, "{answered} requests answered, {failed} failed");
    env.runner.stop().await;
}
