//! `running → failed` for a job whose workers kept dying: after `max_attempts` claims
//! with expired leases it is failed with a clear reason instead of retried forever; one
//! whose cancel was requested before its worker died ends `cancelled`.

use crate::store::Store;

use crate::store::{Flag, StoreError};

/// Jobs whose lease ran out and that may not be claimed again. `?1` now, `?2` the most attempts.
const ABANDONED: &str = "state IN ('running', 'awaiting_approval') AND lease_expires_at < $1 \
     AND (attempts >= $2 OR cancel_requested)";

pub async fn fail_abandoned(pool: &Store, max_attempts: u32, now: i64) -> Result<Vec<i64>, StoreError> {
    // The sweep runs every few seconds and almost always finds nothing; a read costs no
    // write lock, so webhook commits never wait behind an empty sweep.
    let any: Flag = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE {ABANDONED})"
    )))
    .bind(now)
    .bind(i64::from(max_attempts))
    .fetch_one(pool.db())
    .await?;
    if !any.0 {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET
             state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
             error = CASE WHEN cancel_requested THEN 'cancelled (its worker stopped before cleaning up)'
                          ELSE 'abandoned: its worker stopped ' || attempts || ' time(s) without finishing (max_attempts reached)' END,
             finished_at = $1, updated_at = $1, lease_owner = NULL, lease_expires_at = NULL
         WHERE {ABANDONED}
         RETURNING id"
    )))
    .bind(now)
    .bind(i64::from(max_attempts))
    .fetch_all(pool.db())
    .await?)
}
