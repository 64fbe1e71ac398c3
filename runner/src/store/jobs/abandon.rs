//! `running → failed` for a job whose workers kept dying: after `max_attempts` claims
//! with expired leases it is failed with a clear reason instead of retried forever; one
//! whose cancel was requested before its worker died ends `cancelled`.

use sqlx::SqlitePool;

use crate::store::StoreError;

pub async fn fail_abandoned(pool: &SqlitePool, max_attempts: u32, now: i64) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET
             state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'failed' END,
             error = CASE WHEN cancel_requested = 1 THEN 'cancelled (its worker stopped before cleaning up)'
                          ELSE 'abandoned: its worker stopped ' || attempts || ' time(s) without finishing (max_attempts reached)' END,
             finished_at = ?1, updated_at = ?1, lease_owner = NULL, lease_expires_at = NULL
         WHERE state IN ('running', 'awaiting_approval') AND lease_expires_at < ?1 AND (attempts >= ?2 OR cancel_requested = 1)
         RETURNING id",
    )
    .bind(now)
    .bind(i64::from(max_attempts))
    .fetch_all(pool)
    .await?)
}
