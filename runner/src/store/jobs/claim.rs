//! `queued → running`, and `running → running` under a new lease when the previous
//! worker's lease ran out (it crashed or lost the database).

use std::time::Duration;

use sqlx::SqlitePool;

use super::{JOB_COLUMNS, Job, JobRow};
use crate::store::{StoreError, duration_ms};

/// The oldest runnable job: queued, or running/awaiting approval under a lease that ran
/// out, with attempts left and no cancel asked. A deploy is runnable only while no other
/// deploy of its environment holds the environment (one running deploy per environment).
/// Parameters: `?2` now, `?4` the most attempts. The states are listed as the `jobs_live`
/// partial index lists them, so only live jobs are searched, never the finished history.
const NEXT_RUNNABLE: &str = "
    SELECT candidate.id FROM jobs AS candidate
    WHERE candidate.state IN ('queued', 'running', 'awaiting_approval')
      AND (candidate.state = 'queued' OR candidate.lease_expires_at < ?2)
      AND candidate.attempts < ?4
      AND candidate.cancel_requested = 0
      AND candidate.held_for IS NULL
      AND NOT (candidate.kind = 'deploy' AND EXISTS (
          SELECT 1 FROM jobs AS busy
          WHERE busy.kind = 'deploy' AND busy.id <> candidate.id
            AND busy.project = candidate.project AND busy.environment = candidate.environment
            AND busy.state IN ('running', 'awaiting_approval')))
    ORDER BY candidate.id
    LIMIT 1";

/// Atomically claims the oldest runnable job in one statement, so two workers can never
/// hold the same job.
///
/// An UPDATE takes SQLite's write lock even when it changes nothing, and a worker wakes on
/// every queued job, most of which a newer push supersedes or an environment's running
/// deploy holds back. So a read (which never waits for or blocks a writer under WAL) looks
/// first, and only a job that looks runnable is claimed; the UPDATE still decides.
pub async fn claim_next(
    pool: &SqlitePool,
    owner: &str,
    lease: Duration,
    max_attempts: u32,
    now: i64,
) -> Result<Option<Job>, StoreError> {
    // Bound like the UPDATE below, so the same numbered parameters mean the same values.
    let runnable: Option<i64> = sqlx::query_scalar(NEXT_RUNNABLE)
        .bind(owner)
        .bind(now)
        .bind(duration_ms(lease))
        .bind(i64::from(max_attempts))
        .fetch_optional(pool)
        .await?;
    if runnable.is_none() {
        return Ok(None);
    }
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs
         SET state = 'running', attempts = attempts + 1, lease_owner = ?1, lease_expires_at = ?2 + ?3,
             started_at = coalesce(started_at, ?2), updated_at = ?2
         WHERE id = ({NEXT_RUNNABLE})
         RETURNING {JOB_COLUMNS}"
    )))
    .bind(owner)
    .bind(now)
    .bind(duration_ms(lease))
    .bind(i64::from(max_attempts))
    .fetch_optional(pool)
    .await?;
    row.map(Job::try_from).transpose()
}
