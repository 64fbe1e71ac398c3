//! Several runner replicas on one PostgreSQL database (always PostgreSQL, whichever
//! backend the rest of the suite runs on): deliveries spread over them while each is
//! killed and restarted, the database itself restarted under a runner, and replicas
//! migrating a fresh database at the same moment.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::common::database::{self, OwnPostgres, psql};
use crate::common::process::Runner;
use crate::common::{SECRET, TestRunner, default_config, fixture_json, sign, to_toml};

const DELIVERIES: usize = 2_000;
const LEASE_SECS: u64 = 2;

struct Replica {
    config: PathBuf,
    work_dir: PathBuf,
    runner: Runner,
}

/// A replica's config: the default test projects (their jobs fail fast at checkout), the
/// shared database, a work directory of its own.
fn replica_config(dir: &Path, database_url: &str) -> PathBuf {
    let mut config = default_config(dir);
    config.server.database_url = Some(database_url.to_owned());
    config.server.work_dir = Some(dir.join("work"));
    config.server.max_body_bytes = Some(1024 * 1024);
    config.queue.lease_secs = Some(LEASE_SECS);
    config.queue.workers = Some(4);
    let path = dir.join("runner.toml");
    std::fs::write(&path, to_toml(&config)).expect("write config");
    path
}

/// A delivery: mostly pull requests (one verify job each, none superseded), every
/// seventh a push to master (deploys of one environment, superseding each other).
fn delivery(n: usize) -> (&'static str, Vec<u8>) {
    if n.is_multiple_of(7) {
        let sha = format!("{:040x}", n + 1);
        ("push", crate::common::push_body("refs/heads/master", &sha))
    } else {
        let mut opened = fixture_json("pull_request.opened.payload.json");
        opened["number"] = (10_000 + n).into();
        opened["pull_request"]["head"]["sha"] = format!("{:040x}", n + 1).into();
        ("pull_request", serde_json::to_vec(&opened).expect("json"))
    }
}

/// Posts until some replica acknowledges it (2xx), moving to the next replica after a
/// refusal or a dropped connection, as GitHub's redelivery would. Returns the answer.
async fn deliver_until_acknowledged(
    client: &reqwest::Client,
    bases: &Arc<Mutex<Vec<String>>>,
    first: usize,
    id: &str,
    event: &str,
    body: &[u8],
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = first;
    loop {
        let base = bases.lock().await[attempt % 3].clone();
        let response = client
            .post(format!("{base}/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", sign(SECRET, body))
            .body(body.to_vec())
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status();
            if status.is_success() {
                return response.json().await.expect("json");
            }
            assert!(
                status == 503,
                "delivery {id}: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "delivery {id} was never acknowledged");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_killed_in_turn_store_every_delivery_once_and_end_every_job_once() {
    let database_url = database::postgres_database(&format!("runner_replicas_{}", std::process::id()));
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut replicas: Vec<Replica> = dirs
        .iter()
        .map(|dir| {
            let config = replica_config(dir.path(), &database_url);
            Replica {
                runner: Runner::start(&config),
                work_dir: dir.path().join("work"),
                config,
            }
        })
        .collect();
    let bases = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.runner.base.clone()).collect::<Vec<_>>(),
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    let answers: Arc<Mutex<HashMap<String, Vec<Value>>>> = Arc::default();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for lane in 0..16 {
        let (client, bases, answers, sent) = (
            client.clone(),
            Arc::clone(&bases),
            Arc::clone(&answers),
            Arc::clone(&sent),
        );
        senders.spawn(async move {
            for n in (lane..DELIVERIES).step_by(16) {
                let id = format!("00000000-0000-4000-8000-{n:012}");
                let (event, body) = delivery(n);
                let answer = if n.is_multiple_of(10) {
                    // The same delivery to two replicas at once.
                    let (a, b) = tokio::join!(
                        deliver_until_acknowledged(&client, &bases, n, &id, event, &body),
                        deliver_until_acknowledged(&client, &bases, n + 1, &id, event, &body),
                    );
                    vec![a, b]
                } else {
                    vec![deliver_until_acknowledged(&client, &bases, n, &id, event, &body).await]
                };
                answers.lock().await.insert(id, answer);
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    // Each replica is killed once, a third of the way apart, and started again.
    for (victim, at) in [(0, DELIVERIES / 4), (1, DELIVERIES / 2), (2, 3 * DELIVERIES / 4)] {
        while sent.load(std::sync::atomic::Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        replicas[victim].runner.kill9();
        let restarted = Runner::start(&replicas[victim].config);
        bases.lock().await[victim] = restarted.base.clone();
        replicas[victim].runner = restarted;
    }
    while let Some(done) = senders.join_next().await {
        done.expect("sender");
    }

    // Every job ends, though some replica died holding it.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let live = psql(
            &database_url,
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running', 'awaiting_approval')",
        );
        if live.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs never ended: {}",
            live.trim(),
            psql(
                &database_url,
                "SELECT id, state, attempts, lease_owner FROM jobs WHERE state IN ('queued', 'running', 'awaiting_approval') LIMIT 20"
            )
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged delivery is stored once and queued one job.
    let answers = answers.lock().await;
    assert_eq!(answers.len(), DELIVERIES);
    let stored = psql(
        &database_url,
        "SELECT count(*), count(DISTINCT delivery_id) FROM deliveries",
    );
    assert_eq!(stored.trim(), format!("{DELIVERIES}|{DELIVERIES}"));
    let queued = psql(&database_url, "SELECT count(*), count(DISTINCT delivery_id) FROM jobs");
    assert_eq!(queued.trim(), format!("{DELIVERIES}|{DELIVERIES}"));
    // Both copies of a delivery sent twice name the one job it queued.
    for copies in answers.values().filter(|a| a.len() == 2) {
        assert_eq!(copies[0]["job_id"], copies[1]["job_id"], "{copies:?}");
        assert!(copies[0]["job_id"].is_i64(), "{copies:?}");
    }

    // No job was held by two replicas at once: a later claim of a job came only after the
    // earlier claim's lease ran out (its holder stopped renewing it). And none ended twice.
    let claims = psql(
        &database_url,
        "SELECT job_id, at FROM job_logs WHERE stream = 'system' AND line LIKE 'attempt % claimed by runner %' ORDER BY job_id, seq",
    );
    let mut by_job: HashMap<i64, Vec<i64>> = HashMap::new();
    for line in claims.lines().filter(|l| !l.is_empty()) {
        let (job, at) = line.split_once('|').expect("job|at");
        by_job
            .entry(job.parse().expect("id"))
            .or_default()
            .push(at.parse().expect("at"));
    }
    let lease_ms = i64::try_from(LEASE_SECS * 1000).expect("ms");
    let mut reclaimed = 0;
    for (job, times) in &by_job {
        for pair in times.windows(2) {
            reclaimed += 1;
            // Each time is when the claim's log line was written, a moment after the claim
            // itself: half a lease of slack still tells a lapsed lease from two holders.
            assert!(
                pair[1] - pair[0] >= lease_ms / 2,
                "job {job} was claimed again {} ms after an earlier claim, inside its {lease_ms} ms lease",
                pair[1] - pair[0]
            );
        }
    }
    assert!(!by_job.is_empty(), "some jobs ran");
    let ended_twice = psql(
        &database_url,
        "SELECT job_id FROM job_logs WHERE stream = 'system' AND line IN ('job succeeded', 'job failed', 'job cancelled')
         GROUP BY job_id HAVING count(*) > 1",
    );
    assert_eq!(ended_twice.trim(), "", "jobs that ended twice");
    let states: HashSet<String> = psql(&database_url, "SELECT DISTINCT state FROM jobs")
        .lines()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
        .collect();
    assert!(states.contains("superseded") && states.contains("failed"), "{states:?}");

    // No replica left a container behind.
    for replica in &replicas {
        let instance = runner::startup::instance_id(&replica.work_dir);
        let output = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label={}={instance}", runner::adapters::engine::MANAGED_LABEL))
            .output()
            .expect("docker ps");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "",
            "containers left behind"
        );
    }
    eprintln!("{reclaimed} claims of a job after its earlier holder's lease ran out");
}

#[tokio::test]
async fn while_postgres_is_down_deliveries_get_503_and_after_it_returns_redeliveries_are_stored_once() {
    let server = OwnPostgres::start();
    let url = server.url();
    let runner = TestRunner::start_with(|dir| {
        let mut config = default_config(dir);
        config.server.database_url = Some(url.clone());
        config
    })
    .await;
    let send = |id: String, n: usize| {
        let runner = &runner;
        async move {
            let (event, body) = delivery(n);
            runner.deliver_signed(event, &body, Some(SECRET), &id).await
        }
    };
    for n in 1..=5 {
        let response = send(format!("before-{n}"), n).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
    }

    server.stop();
    for n in 1..=5 {
        let response = send(format!("during-{n}"), n + 10).await;
        assert_eq!(response.status(), 503, "never a 2xx for what was not committed");
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
    }

    server.resume();
    let stored_before_redelivery = psql(
        &url,
        "SELECT count(*) FROM deliveries WHERE delivery_id LIKE 'during-%'",
    );
    assert_eq!(
        stored_before_redelivery.trim(),
        "0",
        "nothing of a refused delivery was stored"
    );
    // The same runner, not restarted, takes GitHub's redeliveries once the database is back.
    for n in 1..=5 {
        let id = format!("during-{n}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let response = send(id.clone(), n + 10).await;
            if response.status() == 202 {
                break;
            }
            assert_eq!(response.status(), 503);
            assert!(Instant::now() < deadline, "the runner never recovered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let again = send(id.clone(), n + 10).await;
        assert_eq!(again.status(), 200, "a redelivery of a stored delivery is a duplicate");
    }
    let stored = psql(&url, "SELECT count(*), count(DISTINCT delivery_id) FROM deliveries");
    assert_eq!(stored.trim(), "10|10");
    runner.stop_quickly().await;
}

#[tokio::test]
async fn two_replicas_starting_on_a_fresh_database_at_once_apply_each_migration_once() {
    let url = database::postgres_database(&format!("runner_migrate_{}", std::process::id()));
    let start = |url: String| {
        TestRunner::start_with(move |dir| {
            let mut config = default_config(dir);
            config.server.database_url = Some(url);
            config
        })
    };
    let (a, b) = tokio::join!(start(url.clone()), start(url.clone()));
    let applied = psql(
        &url,
        "SELECT version, count(*) FROM _sqlx_migrations GROUP BY version ORDER BY version",
    );
    let expected: Vec<String> = runner::store::POSTGRES_MIGRATOR
        .iter()
        .map(|m| format!("{}|1", m.version))
        .collect();
    assert_eq!(applied.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(), expected);
    assert_eq!(a.get_json("/healthz").await["status"], "ok");
    assert_eq!(b.get_json("/healthz").await["status"], "ok");
    a.stop_quickly().await;
    b.stop_quickly().await;
}

#[tokio::test]
async fn a_replica_claims_only_labelled_projects_and_streams_the_live_log_of_a_job_another_runs() {
    let url = database::postgres_database(&format!("runner_placement_{}", std::process::id()));
    let remote = crate::common::hanging_server();
    let replica = |labels: Vec<String>| {
        let (url, remote) = (url.clone(), remote.clone());
        move |dir: &Path| {
            let mut config = default_config(dir);
            config.server.database_url = Some(url);
            config.queue.labels = Some(labels);
            config.projects[0].clone_url = Some(remote);
            config.projects[0].runs_on = vec!["builder-a".to_owned()];
            config
        }
    };
    // Replica B does not offer the project's label: a push it receives waits for A.
    let b = TestRunner::start_with(replica(Vec::new())).await;
    let response = b
        .deliver("push", &crate::common::push_body("refs/heads/master", &"e".repeat(40)))
        .await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("job id");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.get_json(&format!("/api/jobs/{job_id}")).await["state"], "queued");

    // A offers it: it claims the job (its checkout hangs), and B's dashboard follows it.
    let a = TestRunner::start_with(replica(vec!["builder-a".to_owned()])).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.get_json(&format!("/api/jobs/{job_id}")).await["state"] != "running" {
        assert!(Instant::now() < deadline, "replica A never claimed the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = live_log(&b, job_id).await;
    assert_eq!(stream.status(), 200);
    let events = crate::dashboard::read_events(stream, |events| {
        events
            .iter()
            .any(|(_, _, data)| data.contains("step checkout: started"))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|(_, _, data)| data.contains("attempt 1 claimed by runner")),
        "{events:?}"
    );
    // Cancelled through B, the job run by A ends, and B's stream says so.
    let stream = live_log(&b, job_id).await;
    let cancel = b
        .client
        .post(b.url(&format!("/api/jobs/{job_id}/cancel")))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(cancel.status(), 200);
    let events = crate::dashboard::read_events(stream, |events| events.iter().any(|(_, e, _)| e == "end")).await;
    assert_eq!(events.last().expect("end").2, "cancelled", "{events:?}");
    a.stop_quickly().await;
    b.stop_quickly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_to_one_environment_through_two_replicas_at_once_leave_only_the_newest_deploy_queued_and_the_older_superseded_or_stale()
 {
    const ROUNDS: usize = 150;
    let url = database::postgres_database(&format!("runner_supersede_{}", std::process::id()));
    let replica = || {
        let url = url.clone();
        move |dir: &Path| {
            let mut config = default_config(dir);
            config.server.database_url = Some(url);
            // No replica offers this label: every deploy stays queued or superseded.
            config.projects[0].runs_on = vec!["nowhere".to_owned()];
            config
        }
    };
    let (a, b) = tokio::join!(TestRunner::start_with(replica()), TestRunner::start_with(replica()));
    let push = |pushed: usize| {
        let mut push = fixture_json("push.with-no-username-committer.payload.json");
        push["after"] = format!("{:040x}", pushed + 1).into();
        push["repository"]["pushed_at"] = (1_700_000_000 + pushed).into();
        serde_json::to_vec(&push).expect("json")
    };
    // Each round, one push through each replica at the same moment; the earlier push of the
    // two goes alternately to either. A later round heals what an earlier one left wrong, so
    // the queue is checked after every round.
    for round in 0..ROUNDS {
        let (older, newer) = (push(2 * round), push(2 * round + 1));
        let (to_a, to_b) = if round % 2 == 0 {
            (&older, &newer)
        } else {
            (&newer, &older)
        };
        let (from_a, from_b) = tokio::join!(a.deliver("push", to_a), b.deliver("push", to_b));
        let (from_older, from_newer) = if round % 2 == 0 {
            (from_a, from_b)
        } else {
            (from_b, from_a)
        };
        assert_eq!(from_newer.status(), 202, "round {round}: the newer push is queued");
        // The older one is queued (and superseded) when it commits first, else it is stale.
        let older_status = from_older.status();
        let older: serde_json::Value = from_older.json().await.expect("json");
        assert!(
            older_status == 202
                || (older_status == 200 && older["ignored"].as_str().is_some_and(|r| r.starts_with("stale push"))),
            "round {round}: {older_status} {older}"
        );
        let queued = psql(&url, "SELECT sha FROM jobs WHERE state = 'queued' ORDER BY id");
        assert_eq!(
            queued.trim(),
            format!("{:040x}", 2 * round + 2),
            "after round {round} only the newest push is queued"
        );
    }
    let states = psql(&url, "SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state");
    let stale = psql(
        &url,
        "SELECT count(*) FROM deliveries WHERE outcome = 'ignored' AND reason LIKE 'stale push%'",
    );
    let stale: usize = stale.trim().parse().expect("a count");
    let expected = if stale == 2 * ROUNDS - 1 {
        "queued|1".to_owned()
    } else {
        format!("queued|1\nsuperseded|{}", 2 * ROUNDS - 1 - stale)
    };
    assert_eq!(states.trim(), expected, "every older push superseded or stale");
    // Each superseded deploy points at one that was newer than itself.
    let backwards = psql(
        &url,
        "SELECT count(*) FROM jobs AS old JOIN jobs AS newer ON newer.id = old.superseded_by
         WHERE (newer.ordering_key, newer.id) <= (old.ordering_key, old.id)",
    );
    assert_eq!(backwards.trim(), "0");
    a.stop_quickly().await;
    b.stop_quickly().await;
}

/// The job's live log (server-sent events) as `runner` serves it.
async fn live_log(runner: &TestRunner, job_id: i64) -> reqwest::Response {
    runner
        .client
        .get(runner.url(&format!("/api/jobs/{job_id}/logs")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET stream")
}
