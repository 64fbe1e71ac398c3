//! `queued → running`, and `running → running` under a new lease when the previous
//! worker's lease ran out (it crashed or lost the database).

use std::time::Duration;

use crate::store::Store;

use super::{JOB_COLUMNS, Job, JobRow};
use crate::store::{Backend, StoreError, duration_ms};

/// The oldest runnable job: queued, or running/awaiting approval under a lease that ran
/// out, with attempts left and no cancel asked, of a project this runner may run. A deploy
/// is runnable only while no other deploy of its environment holds the environment (one
/// running deploy per environment). Parameters: `$2` now, `$4` the most attempts, `$5`
/// the projects (a JSON list; NULL: any). The states are listed as the `jobs_live` partial
/// index lists them, so only live jobs are searched, never the finished history.
///
/// On PostgreSQL queued jobs and lapsed leases are searched apart, each walking `jobs_live`
/// in id order (a plain index scan, where one over three states at once is planned as a
/// bitmap scan). A job that stopped being live leaves its entry in the index until vacuum,
/// and only a plain scan marks such an entry dead the first time it passes it; a burst of
/// superseded deploys would otherwise be walked again by every claim until vacuum ran.
fn next_runnable(backend: Backend) -> String {
    let runnable = format!(
        "candidate.attempts < $4
           AND NOT candidate.cancel_requested
           AND candidate.held_for IS NULL
           AND ($5 IS NULL OR {projects})
           AND NOT (candidate.kind = 'deploy' AND EXISTS (
               SELECT 1 FROM jobs AS busy
               WHERE busy.kind = 'deploy' AND busy.id <> candidate.id
                 AND busy.project = candidate.project AND busy.environment = candidate.environment
                 AND busy.state IN ('running', 'awaiting_approval')))",
        projects = backend.in_json_list("candidate.project", "$5"),
    );
    match backend {
        Backend::Sqlite => format!(
            "SELECT candidate.id FROM jobs AS candidate
             WHERE candidate.state IN ('queued', 'running', 'awaiting_approval')
               AND (candidate.state = 'queued' OR candidate.lease_expires_at < $2)
               AND {runnable}
             ORDER BY candidate.id
             LIMIT 1"
        ),
        Backend::Postgres => format!(
            "SELECT id FROM (
                 SELECT id FROM (
                     SELECT candidate.id FROM jobs AS candidate
                     WHERE candidate.state = 'queued' AND {runnable}
                     ORDER BY candidate.id LIMIT 1 FOR UPDATE SKIP LOCKED) AS queued
                 UNION ALL
                 SELECT id FROM (
                     SELECT candidate.id FROM jobs AS candidate
                     WHERE candidate.state IN ('running', 'awaiting_approval')
                       AND candidate.lease_expires_at < $2 AND {runnable}
                     ORDER BY candidate.id LIMIT 1 FOR UPDATE SKIP LOCKED) AS lapsed
             ) AS runnable
             ORDER BY id LIMIT 1"
        ),
    }
}

/// Atomically claims the oldest runnable job in one statement, so two workers (of this
/// runner or of another replica) can never hold the same job. `projects`: the projects
/// this runner may run (`None`: all).
///
/// On SQLite an UPDATE takes the write lock even when it changes nothing, and a worker
/// wakes on every queued job, most of which a newer push supersedes or an environment's
/// running deploy holds back. So a read (which never waits for or blocks a writer under
/// WAL) looks first, and only a job that looks runnable is claimed; the UPDATE still
/// decides. On PostgreSQL the candidate row is locked, and one another replica is
/// claiming is skipped; two deploys of one environment claimed at the same instant are
/// stopped by the `jobs_one_running_deploy` index, and the loser finds nothing this time.
pub async fn claim_next(
    pool: &Store,
    owner: &str,
    lease: Duration,
    max_attempts: u32,
    projects: Option<&[String]>,
    now: i64,
) -> Result<Option<Job>, StoreError> {
    let backend = pool.backend();
    let projects = projects.map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into()));
    if backend == Backend::Sqlite {
        // Bound like the UPDATE below, so the same numbered parameters mean the same values.
        let runnable: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(next_runnable(backend)))
            .bind(owner)
            .bind(now)
            .bind(duration_ms(lease))
            .bind(i64::from(max_attempts))
            .bind(projects.clone())
            .fetch_optional(pool.db())
            .await?;
        if runnable.is_none() {
            return Ok(None);
        }
    }
    let claimed: Result<Option<JobRow>, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs
         SET state = 'running', attempts = attempts + 1, lease_owner = $1, lease_expires_at = $2 + $3,
             started_at = coalesce(started_at, $2), updated_at = $2
         WHERE id = ({})
         RETURNING {JOB_COLUMNS}",
        next_runnable(backend)
    )))
    .bind(owner)
    .bind(now)
    .bind(duration_ms(lease))
    .bind(i64::from(max_attempts))
    .bind(projects)
    .fetch_optional(pool.db())
    .await;
    match claimed {
        Ok(row) => row.map(Job::try_from).transpose(),
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error.into()),
    }
}
