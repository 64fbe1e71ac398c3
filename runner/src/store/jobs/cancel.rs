//! `queued → cancelled` at once; `running | awaiting_approval → cancelled` through the
//! worker, which is asked to stop and cleans up first.

use crate::store::Store;
use sqlx::AnyConnection;

use crate::domain::JobId;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not started: it is cancelled now.
    Cancelled,
    /// It is running: its worker was asked to stop.
    Requested,
    /// It had already finished; nothing changed.
    AlreadyFinished,
    NotFound,
}

pub async fn cancel(pool: &Store, id: JobId, now: i64) -> Result<CancelOutcome, StoreError> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE jobs SET
             state = CASE WHEN state IN ('queued', 'awaiting_approval') THEN 'cancelled' ELSE state END,
             finished_at = CASE WHEN state IN ('queued', 'awaiting_approval') THEN $1 ELSE finished_at END,
             cancel_requested = CASE WHEN state = 'running' THEN TRUE ELSE cancel_requested END,
             error = CASE WHEN state IN ('queued', 'awaiting_approval') THEN 'cancelled before it ran' ELSE error END,
             updated_at = $1
         WHERE id = $2 AND state IN ('queued', 'awaiting_approval', 'running')
         RETURNING state",
    )
    .bind(now)
    .bind(id.get())
    .fetch_optional(pool.db())
    .await?;
    Ok(match state.as_deref() {
        Some("running") => CancelOutcome::Requested,
        Some(_) => CancelOutcome::Cancelled,
        None => {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = $1")
                .bind(id.get())
                .fetch_optional(pool.db())
                .await?;
            if exists.is_some() {
                CancelOutcome::AlreadyFinished
            } else {
                CancelOutcome::NotFound
            }
        }
    })
}

/// A closed pull request needs no verification: cancel its verify jobs that have not started.
pub async fn cancel_queued_pull_request(
    conn: &mut AnyConnection,
    project: &str,
    pull_request: i64,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET state = 'cancelled', error = 'pull request closed', finished_at = $1, updated_at = $1
         WHERE project = $2 AND pull_request = $3 AND kind = 'verify'
           AND (state = 'queued' OR (state = 'awaiting_approval' AND held_for IS NOT NULL))
         RETURNING id",
    )
    .bind(now)
    .bind(project)
    .bind(pull_request)
    .fetch_all(conn)
    .await?)
}
