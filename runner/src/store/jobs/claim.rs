//! `queued → running`, and `running → running` under a new lease when the previous
//! worker's lease ran out (it crashed or lost the database).

use std::time::Duration;

use sqlx::SqlitePool;

use super::{JOB_COLUMNS, Job, JobRow};
use crate::store::{StoreError, duration_ms};

/// Atomically claims the oldest runnable job in one statement, so two workers can never
/// hold the same job. A deploy is runnable only while no other deploy of its environment
/// holds a live lease (one running deploy per environment).
pub async fn claim_next(
    pool: &SqlitePool,
    owner: &str,
    lease: Duration,
    max_attempts: u32,
    now: i64,
) -> Result<Option<Job>, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs
         SET state = 'running', attempts = attempts + 1, lease_owner = ?1, lease_expires_at = ?2 + ?3,
             started_at = coalesce(started_at, ?2), updated_at = ?2
         WHERE id = (
             SELECT candidate.id FROM jobs AS candidate
             WHERE (candidate.state = 'queued'
                    OR (candidate.state IN ('running', 'awaiting_approval') AND candidate.lease_expires_at < ?2))
               AND candidate.attempts < ?4
               AND candidate.cancel_requested = 0
               AND NOT (candidate.kind = 'deploy' AND EXISTS (
                   SELECT 1 FROM jobs AS busy
                   WHERE busy.kind = 'deploy' AND busy.id <> candidate.id
                     AND busy.project = candidate.project AND busy.environment = candidate.environment
                     AND busy.state IN ('running', 'awaiting_approval')))
             ORDER BY candidate.id
             LIMIT 1)
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
