//! `running → succeeded | failed | cancelled`.

use crate::store::Store;

use crate::domain::JobId;
use crate::job::JobState;
use crate::store::StoreError;

/// Records the outcome, only if this worker still holds the job. Returns whether it did.
pub async fn finish(
    pool: &Store,
    id: JobId,
    owner: &str,
    outcome: JobState,
    error: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    debug_assert!(matches!(
        outcome,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    ));
    let updated = sqlx::query(
        "UPDATE jobs SET state = $1, error = $2, finished_at = $3, updated_at = $3,
                         lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $4 AND lease_owner = $5 AND state = 'running'",
    )
    .bind(outcome.as_str())
    .bind(error)
    .bind(now)
    .bind(id.get())
    .bind(owner)
    .execute(pool.db())
    .await?;
    Ok(updated.rows_affected() == 1)
}
