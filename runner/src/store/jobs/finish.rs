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
    finish_logged(pool, id, owner, outcome, error, now, None).await
}

/// As [`finish`], with the job log's last line (`job failed`) written in the same
/// transaction, only if the outcome is recorded: a runner killed at any moment leaves a
/// job either not ended and without the line (another runner takes it over), or ended
/// with it, never ended twice in its log.
pub async fn finish_logged(
    pool: &Store,
    id: JobId,
    owner: &str,
    outcome: JobState,
    error: Option<&str>,
    now: i64,
    last_line: Option<&str>,
) -> Result<bool, StoreError> {
    debug_assert!(matches!(
        outcome,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    ));
    let mut tx = pool.begin_write().await?;
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
    .execute(&mut *tx)
    .await?;
    let finished = updated.rows_affected() == 1;
    if finished && let Some(line) = last_line {
        let line = (now, crate::store::logs::Stream::System, line.to_owned());
        crate::store::logs::append_in(&mut tx, pool.backend(), id, &[line]).await?;
    }
    tx.commit().await?;
    Ok(finished)
}
