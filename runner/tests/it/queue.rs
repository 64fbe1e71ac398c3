//! The job queue's state changes on a real database (SQLite, or PostgreSQL with
//! `RUNNER_TEST_DATABASE=postgres`): claim, lease, recovery, superseding, per-environment
//! serialisation and cancellation.

use std::time::Duration;

use runner::domain::{CommitSha, GitRef, JobId, Name};
use runner::job::{JobKind, JobState, Trigger};
use runner::store::Store;
use runner::store::jobs::{self, CancelOutcome, Heartbeat, NewJob};

const LEASE: Duration = Duration::from_secs(10);
const LEASE_MS: i64 = 10_000;

async fn fresh_db() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = crate::common::database::url_for(dir.path());
    let pool = runner::store::open(&url).await.expect("open");
    (dir, pool)
}

fn new_job(kind: JobKind, environment: &str, sha_digit: char, ordering_key: i64) -> NewJob {
    NewJob {
        held_for_approval: false,
        project: Name::parse("hello").expect("name"),
        environment: Name::parse(environment).expect("env"),
        kind,
        trigger: if kind == JobKind::Deploy {
            Trigger::Push
        } else {
            Trigger::PullRequest
        },
        git_ref: GitRef::branch("main").expect("ref"),
        sha: CommitSha::parse(&sha_digit.to_string().repeat(40)).expect("sha"),
        pull_request: (kind == JobKind::Verify).then_some(7),
        delivery_id: None,
        commit_message: None,
        commit_author: None,
        ordering_key,
        rollback_of: None,
        base_sha: None,
        base_branch: None,
    }
}

async fn enqueue(pool: &Store, job: NewJob, now: i64) -> JobId {
    let mut tx = pool.begin_write().await.expect("begin");
    let id = jobs::enqueue(&mut tx, &job, now).await.expect("enqueue");
    tx.commit().await.expect("commit");
    id
}

async fn state(pool: &Store, id: JobId) -> JobState {
    jobs::get(pool, id).await.expect("get").expect("exists").state
}

#[tokio::test]
async fn concurrent_claims_hand_a_job_to_exactly_one_worker() {
    let (_dir, pool) = fresh_db().await;
    let id = enqueue(&pool, new_job(JobKind::Deploy, "production", '1', 1), 1_000).await;
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            jobs::claim_next(&pool, &format!("w{worker}"), LEASE, 3, None, 2_000)
                .await
                .expect("claim")
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(job) = task.await.expect("join") {
            winners.push(job);
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].id, id);
    assert_eq!(winners[0].attempts, 1);
    assert_eq!(winners[0].state, JobState::Running);
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_old_worker_loses_it() {
    let (_dir, pool) = fresh_db().await;
    let id = enqueue(&pool, new_job(JobKind::Deploy, "production", '1', 1), 0).await;
    let first = jobs::claim_next(&pool, "dead-worker", LEASE, 3, None, 1_000)
        .await
        .expect("claim")
        .expect("job");
    // While the lease holds, nobody else gets it.
    assert!(
        jobs::claim_next(&pool, "other", LEASE, 3, None, 1_000 + LEASE_MS - 1)
            .await
            .expect("claim")
            .is_none()
    );
    // Once it lapses, it is claimed again with a second attempt.
    let second = jobs::claim_next(&pool, "new-worker", LEASE, 3, None, 1_000 + LEASE_MS + 1)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!((second.id, second.attempts), (first.id, 2));
    // The dead worker, if it comes back, learns it lost the job and cannot finish it.
    let beat = jobs::heartbeat(&pool, id, "dead-worker", LEASE, 12_000)
        .await
        .expect("heartbeat");
    assert_eq!(beat, Heartbeat::Lost);
    assert!(
        !jobs::finish(&pool, id, "dead-worker", JobState::Succeeded, None, 12_000)
            .await
            .expect("finish")
    );
    assert!(
        jobs::finish(&pool, id, "new-worker", JobState::Succeeded, None, 12_000)
            .await
            .expect("finish")
    );
    assert_eq!(state(&pool, id).await, JobState::Succeeded);
}

#[tokio::test]
async fn heartbeats_keep_the_lease() {
    let (_dir, pool) = fresh_db().await;
    let id = enqueue(&pool, new_job(JobKind::Deploy, "production", '1', 1), 0).await;
    jobs::claim_next(&pool, "w", LEASE, 3, None, 0)
        .await
        .expect("claim")
        .expect("job");
    for now in [5_000, 10_000, 15_000] {
        assert_eq!(
            jobs::heartbeat(&pool, id, "w", LEASE, now).await.expect("beat"),
            Heartbeat::Renewed
        );
    }
    assert!(
        jobs::claim_next(&pool, "thief", LEASE, 3, None, 20_000)
            .await
            .expect("claim")
            .is_none()
    );
}

#[tokio::test]
async fn a_job_whose_workers_keep_dying_is_failed_after_max_attempts() {
    let (_dir, pool) = fresh_db().await;
    let id = enqueue(&pool, new_job(JobKind::Deploy, "production", '1', 1), 0).await;
    let mut now = 0;
    for attempt in 1..=3 {
        let job = jobs::claim_next(&pool, &format!("w{attempt}"), LEASE, 3, None, now)
            .await
            .expect("claim")
            .expect("job");
        assert_eq!(job.attempts, attempt);
        now += LEASE_MS + 1;
    }
    assert!(
        jobs::claim_next(&pool, "w4", LEASE, 3, None, now)
            .await
            .expect("claim")
            .is_none()
    );
    let failed = jobs::fail_abandoned(&pool, 3, now).await.expect("sweep");
    assert_eq!(failed, vec![id.get()]);
    let job = jobs::get(&pool, id).await.expect("get").expect("job");
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.expect("error").contains("abandoned"));
}

#[tokio::test]
async fn a_newer_deploy_supersedes_the_queued_one_and_an_older_late_one_is_superseded_itself() {
    let (_dir, pool) = fresh_db().await;
    let first = enqueue(&pool, new_job(JobKind::Deploy, "production", '1', 100), 1).await;
    let second = enqueue(&pool, new_job(JobKind::Deploy, "production", '2', 200), 2).await;
    assert_eq!(state(&pool, first).await, JobState::Superseded);
    assert_eq!(
        jobs::get(&pool, first).await.expect("get").expect("job").superseded_by,
        Some(second.get())
    );
    assert_eq!(state(&pool, second).await, JobState::Queued);

    // A delivery of an older push that arrives late never replaces the newer queued one.
    let late = enqueue(&pool, new_job(JobKind::Deploy, "production", '3', 150), 3).await;
    assert_eq!(state(&pool, late).await, JobState::Superseded);
    assert_eq!(state(&pool, second).await, JobState::Queued);

    // Other environments and verify jobs are untouched.
    let staging = enqueue(&pool, new_job(JobKind::Deploy, "staging", '4', 300), 4).await;
    let verify = enqueue(&pool, new_job(JobKind::Verify, "production", '5', 400), 5).await;
    assert_eq!(state(&pool, staging).await, JobState::Queued);
    assert_eq!(state(&pool, verify).await, JobState::Queued);
    assert_eq!(state(&pool, second).await, JobState::Queued);
}

/// Pushes to one environment, each one delivery queuing one deploy: `(delivery, sha digit,
/// push time in ms)`. The last is a late delivery of a push in the same second as the newest
/// (so not stale), which arrives after it.
const PUSHES: [(&str, char, i64); 4] = [
    ("push-a", 'a', 100_000),
    ("push-b", 'b', 200_000),
    ("push-c", 'c', 300_000),
    ("push-d", 'd', 299_500),
];

/// Records `pushes` as the ingest writer does: all in one transaction, or one each.
async fn record_pushes(pool: &Store, pushes: &[(&str, char, i64)], together: bool) -> Vec<(String, i64)> {
    use runner::store::deliveries::{Action, BodyDigest, NewDelivery, Recorded, StoredBody};
    let deliveries: Vec<(NewDelivery, Action)> = pushes
        .iter()
        .map(|(id, sha, pushed)| {
            let mut job = new_job(JobKind::Deploy, "production", *sha, *pushed);
            job.delivery_id = Some((*id).to_owned());
            let delivery = NewDelivery {
                delivery_id: (*id).to_owned(),
                event: "push".to_owned(),
                action: None,
                project: Some("hello".to_owned()),
                repository: None,
                git_ref: Some("refs/heads/main".to_owned()),
                sha: Some(job.sha.to_string()),
                hook_id: None,
                content_type: "application/json".to_owned(),
                body: StoredBody::compress(id.as_bytes()),
                body_digest: BodyDigest::of(id.as_bytes()),
                received_at: 1_000,
            };
            (delivery, Action::Queue(vec![job]))
        })
        .collect();
    let items: Vec<_> = deliveries.iter().map(|(d, a)| (d, a)).collect();
    let batches: Vec<&[_]> = if together {
        vec![&items[..]]
    } else {
        items.chunks(1).collect()
    };
    let mut recorder = pool.recorder().await.expect("the ingest's connection");
    let mut queued = Vec::new();
    for batch in batches {
        for (recorded, (delivery, _)) in recorder
            .record_batch(batch)
            .await
            .expect("recorded")
            .into_iter()
            .zip(batch)
        {
            let Recorded::Queued { job_id } = recorded else {
                panic!("{} was not queued: {recorded:?}", delivery.delivery_id);
            };
            queued.push((delivery.delivery_id.clone(), job_id));
        }
    }
    queued
}

/// Superseding keeps one record on both databases, whether the ingest committed the pushes
/// together or apart: a superseded deploy names the deploy that replaced it when it
/// arrived (the dashboard's "Superseded by", the commit status's "superseded by job N"),
/// and only the newest push stays queued.
#[tokio::test]
async fn a_superseded_deploy_names_the_deploy_that_replaced_it_whether_its_pushes_were_committed_together_or_apart() {
    for together in [true, false] {
        let (_dir, pool) = fresh_db().await;
        let queued = record_pushes(&pool, &PUSHES, together).await;
        let id_of = |delivery: &str| queued.iter().find(|(d, _)| d == delivery).expect("queued").1;
        let mut record = Vec::new();
        for (delivery, id) in &queued {
            let job = jobs::get(&pool, JobId::new(*id).expect("id"))
                .await
                .expect("get")
                .expect("job");
            let successor = job
                .superseded_by
                .map(|s| queued.iter().find(|(_, id)| *id == s).expect("a queued job").0.clone());
            record.push((delivery.clone(), job.state, successor, job.finished_at));
        }
        let superseded = |by: &str| (JobState::Superseded, Some(by.to_owned()), Some(1_000));
        let expected: Vec<(String, JobState, Option<String>, Option<i64>)> = [
            ("push-a", superseded("push-b")),
            ("push-b", superseded("push-c")),
            ("push-c", (JobState::Queued, None, None)),
            ("push-d", superseded("push-c")),
        ]
        .into_iter()
        .map(|(delivery, (state, by, finished))| (delivery.to_owned(), state, by, finished))
        .collect();
        assert_eq!(record, expected, "committed together: {together}");
        assert!(id_of("push-a") < id_of("push-d"), "jobs are numbered in arrival order");
    }
}

#[tokio::test]
async fn one_running_deploy_per_environment_while_others_run_in_parallel() {
    let (_dir, pool) = fresh_db().await;
    let running = enqueue(&pool, new_job(JobKind::Deploy, "production", '1', 1), 0).await;
    let claimed = jobs::claim_next(&pool, "w1", LEASE, 3, None, 0)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(claimed.id, running);

    let next_prod = enqueue(&pool, new_job(JobKind::Deploy, "production", '2', 2), 1).await;
    let staging = enqueue(&pool, new_job(JobKind::Deploy, "staging", '3', 3), 2).await;
    let verify = enqueue(&pool, new_job(JobKind::Verify, "production", '4', 4), 3).await;

    let a = jobs::claim_next(&pool, "w2", LEASE, 3, None, 10)
        .await
        .expect("claim")
        .expect("job");
    let b = jobs::claim_next(&pool, "w3", LEASE, 3, None, 10)
        .await
        .expect("claim")
        .expect("job");
    let mut got = vec![a.id, b.id];
    got.sort();
    assert_eq!(
        got,
        vec![staging, verify],
        "staging and the verify job run beside the production deploy"
    );
    assert!(
        jobs::claim_next(&pool, "w4", LEASE, 3, None, 10)
            .await
            .expect("claim")
            .is_none(),
        "production waits"
    );

    assert!(
        jobs::finish(&pool, running, "w1", JobState::Succeeded, None, 20)
            .await
            .expect("finish")
    );
    let after = jobs::claim_next(&pool, "w4", LEASE, 3, None, 30)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(after.id, next_prod);
}

#[tokio::test]
async fn cancelling_a_queued_job_is_immediate_and_a_running_one_is_asked_to_stop() {
    let (_dir, pool) = fresh_db().await;
    let queued = enqueue(&pool, new_job(JobKind::Verify, "production", '1', 1), 0).await;
    assert_eq!(
        jobs::cancel(&pool, queued, 5).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(state(&pool, queued).await, JobState::Cancelled);
    assert_eq!(
        jobs::cancel(&pool, queued, 6).await.expect("cancel"),
        CancelOutcome::AlreadyFinished
    );

    let running = enqueue(&pool, new_job(JobKind::Deploy, "production", '2', 2), 0).await;
    jobs::claim_next(&pool, "w", LEASE, 3, None, 10)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(
        jobs::cancel(&pool, running, 20).await.expect("cancel"),
        CancelOutcome::Requested
    );
    assert_eq!(
        jobs::heartbeat(&pool, running, "w", LEASE, 30).await.expect("beat"),
        Heartbeat::CancelRequested
    );
    assert!(
        jobs::finish(&pool, running, "w", JobState::Cancelled, Some("cancelled"), 40)
            .await
            .expect("finish")
    );
    assert_eq!(state(&pool, running).await, JobState::Cancelled);

    assert_eq!(
        jobs::cancel(&pool, JobId::new(999).expect("id"), 50)
            .await
            .expect("cancel"),
        CancelOutcome::NotFound
    );
}

#[tokio::test]
async fn the_schema_refuses_states_that_do_not_exist() {
    let (_dir, pool) = fresh_db().await;
    let id = enqueue(&pool, new_job(JobKind::Deploy, "production", '1', 1), 0).await;
    let result = sqlx::query("UPDATE jobs SET state = 'exploded' WHERE id = $1")
        .bind(id.get())
        .execute(pool.db())
        .await;
    assert!(result.is_err(), "CHECK constraint rejects unknown states");
    let result = sqlx::query("UPDATE jobs SET state = 'running' WHERE id = $1")
        .bind(id.get())
        .execute(pool.db())
        .await;
    assert!(result.is_err(), "a running job must have a lease");
}

#[tokio::test]
async fn deployments_of_an_older_database_get_true_states_and_failed_attempts_their_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    // An upgrade of a SQLite file from an older release: SQLite's own migrations.
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .expect("options")
        .create_if_missing(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open");
    // The schema before deployments could be replaced: every deployment that went live
    // stayed "live".
    runner::store::SQLITE_MIGRATOR
        .run_to(7, &pool)
        .await
        .expect("migrations up to 7");
    let job = |id: i64, state: &str| {
        sqlx::query(
            "INSERT INTO jobs (id, project, environment, kind, trigger, state, git_ref, sha, ordering_key,
                               error, created_at, started_at, finished_at, updated_at)
             VALUES ($1, 'app', CASE WHEN $1 = 4 THEN 'staging' ELSE 'production' END, 'deploy', 'push', $2,
                     'refs/heads/main', $3, $1, CASE WHEN $2 = 'failed' THEN 'smoke failed' END, $1, $1, $1, $1)",
        )
        .bind(id)
        .bind(state)
        .bind(format!("{id}").repeat(40))
        .execute(&pool)
    };
    for (id, state) in [
        (1, "succeeded"),
        (2, "succeeded"),
        (3, "succeeded"),
        (4, "succeeded"),
        (5, "failed"),
        (6, "failed"),
    ] {
        job(id, state).await.expect("job");
    }
    for (id, status) in [(1, "live"), (2, "live"), (3, "live"), (4, "live"), (5, "failed")] {
        sqlx::query(
            "INSERT INTO deployments (id, job_id, project, environment, sha, image_ref, image_digest, trigger, status, started_at)
             SELECT $1, id, project, environment, sha, 'r/app:' || id, 'sha256:' || id, 'push', $2, $1 FROM jobs WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .execute(&pool)
        .await
        .expect("deployment");
    }
    runner::store::SQLITE_MIGRATOR
        .run(&pool)
        .await
        .expect("the remaining migrations");

    let rows: Vec<(i64, i64, String, Option<i64>, String)> =
        sqlx::query_as("SELECT id, job_id, status, replaced_by, image_ref FROM deployments ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    let states: Vec<(i64, &str, Option<i64>)> = rows.iter().map(|r| (r.1, r.2.as_str(), r.3)).collect();
    assert_eq!(
        states,
        [
            (1, "replaced", Some(2)),
            (2, "replaced", Some(3)),
            (3, "live", None),
            (4, "live", None),
            (5, "failed", None),
            // Job 6 failed before its rollout: an attempt row, without an image.
            (6, "failed", None),
        ]
    );
    assert_eq!(rows[5].4, "");
    // One live deployment per environment, from now on enforced by the database.
    let second_live = sqlx::query("UPDATE deployments SET status = 'live' WHERE id = 1")
        .execute(&pool)
        .await;
    assert!(second_live.is_err(), "two live deployments in production");

    // A deploy job that ends failed or cancelled from now on leaves its attempt row too.
    job(7, "queued").await.expect("job");
    sqlx::query("UPDATE jobs SET state = 'cancelled', error = 'cancelled before it ran' WHERE id = 7")
        .execute(&pool)
        .await
        .expect("cancel");
    let attempt: (String, Option<String>) = sqlx::query_as("SELECT status, error FROM deployments WHERE job_id = 7")
        .fetch_one(&pool)
        .await
        .expect("attempt row");
    assert_eq!(
        attempt,
        ("cancelled".to_owned(), Some("cancelled before it ran".to_owned()))
    );
    let violations = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&pool)
        .await
        .expect("check");
    assert!(violations.is_empty(), "{} foreign key violations", violations.len());
}

#[tokio::test]
async fn finished_jobs_past_the_retention_lose_their_logs_and_those_without_a_deployment_go() {
    use runner::store::deployments::{self, NewDeployment};
    use runner::store::logs::{self, Stream};
    let (_dir, pool) = fresh_db().await;
    let mut ids = Vec::new();
    // A verify job and a deploy job finished at t=1000, a verify job at t=5000.
    for (kind, digit, finished_at) in [
        (JobKind::Verify, '1', 1_000),
        (JobKind::Deploy, '2', 1_000),
        (JobKind::Verify, '3', 5_000),
    ] {
        let id = enqueue(&pool, new_job(kind, "production", digit, 1), 0).await;
        let claimed = jobs::claim_next(&pool, "w", LEASE, 3, None, 10)
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(claimed.id, id);
        logs::append(&pool, id, &[(10, Stream::System, "a line".to_owned())])
            .await
            .expect("log");
        if kind == JobKind::Deploy {
            let sha = digit.to_string().repeat(40);
            let deployment = deployments::start(
                &pool,
                &NewDeployment {
                    job_id: id.get(),
                    project: "hello",
                    environment: "production",
                    sha: &sha,
                    image_ref: "app:x",
                    image_digest: Some("sha256:x"),
                    trigger: Trigger::Push,
                    url: "",
                },
                20,
            )
            .await
            .expect("deployment");
            deployments::finish(&pool, deployment.id, runner::job::DeploymentStatus::Live, None, 30)
                .await
                .expect("live");
        }
        assert!(
            jobs::finish(&pool, id, "w", JobState::Succeeded, None, finished_at)
                .await
                .expect("finish")
        );
        ids.push(id);
    }
    let pruned = jobs::prune_finished(&pool, 2_000).await.expect("prune");
    assert_eq!(pruned, jobs::Pruned { log_lines: 2, jobs: 1 });
    assert!(
        jobs::get(&pool, ids[0]).await.expect("get").is_none(),
        "the old verify job is gone"
    );
    assert!(
        jobs::get(&pool, ids[1]).await.expect("get").is_some(),
        "a deployment's job stays"
    );
    assert!(
        logs::read(&pool, ids[1], 0, 10).await.expect("read").is_empty(),
        "without its log"
    );
    assert_eq!(
        logs::read(&pool, ids[2], 0, 10).await.expect("read").len(),
        1,
        "a recent job keeps its log"
    );
    assert_eq!(
        deployments::list(&pool, Some("hello"), None, 10)
            .await
            .expect("list")
            .items
            .len(),
        1,
        "deployments are kept"
    );
}
