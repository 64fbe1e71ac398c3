//! `running → awaiting_approval → running`: a job whose plan needs a person's yes. The
//! worker keeps its lease while it waits, so a worker that dies lets the job be claimed
//! again (and planned again) like any other.

use crate::store::Store;

use crate::domain::JobId;
use crate::store::StoreError;

/// The worker asks for approval: `running → awaiting_approval`, any earlier answer cleared.
pub async fn request(pool: &Store, id: JobId, owner: &str, now: i64) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE jobs SET state = 'awaiting_approval', approval = NULL, updated_at = $1
         WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
    )
    .bind(now)
    .bind(id.get())
    .bind(owner)
    .execute(pool.db())
    .await?
    .rows_affected()
        == 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A held job: approved, it is queued; rejected, it is cancelled.
    Released,
    /// The worker waiting on the job's plan carries on with the answer.
    Recorded,
    NotWaiting,
    NotFound,
}

/// A person answers: only a job that is waiting can be approved or rejected, once. A
/// held job (a fork's pull request) is released to the queue, or cancelled; a job waiting
/// on its plan gets the answer its worker is polling for.
pub async fn decide(pool: &Store, id: JobId, approved: bool, now: i64) -> Result<Decision, StoreError> {
    let answer = if approved { "approved" } else { "rejected" };
    let released = sqlx::query(
        "UPDATE jobs SET
             state = CASE WHEN $1 = 'approved' THEN 'queued' ELSE 'cancelled' END,
             held_for = CASE WHEN $1 = 'approved' THEN NULL ELSE held_for END,
             approval = $1,
             error = CASE WHEN $1 = 'approved' THEN NULL
                          ELSE 'rejected by an admin: the pull request''s code was not run' END,
             finished_at = CASE WHEN $1 = 'approved' THEN NULL ELSE $2 END,
             updated_at = $2
         WHERE id = $3 AND state = 'awaiting_approval' AND held_for IS NOT NULL",
    )
    .bind(answer)
    .bind(now)
    .bind(id.get())
    .execute(pool.db())
    .await?
    .rows_affected();
    if released == 1 {
        return Ok(Decision::Released);
    }
    let changed = sqlx::query(
        "UPDATE jobs SET approval = $1, updated_at = $2
         WHERE id = $3 AND state = 'awaiting_approval' AND approval IS NULL AND held_for IS NULL",
    )
    .bind(answer)
    .bind(now)
    .bind(id.get())
    .execute(pool.db())
    .await?
    .rows_affected();
    if changed == 1 {
        return Ok(Decision::Recorded);
    }
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = $1")
        .bind(id.get())
        .fetch_optional(pool.db())
        .await?;
    Ok(if exists.is_some() {
        Decision::NotWaiting
    } else {
        Decision::NotFound
    })
}

/// What the waiting worker sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    Pending,
    Approved,
    Rejected,
    /// Cancelled, or taken from this worker.
    Gone,
}

pub async fn poll(pool: &Store, id: JobId, owner: &str) -> Result<Waiting, StoreError> {
    let row: Option<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT state, approval, lease_owner FROM jobs WHERE id = $1")
            .bind(id.get())
            .fetch_optional(pool.db())
            .await?;
    Ok(match row {
        Some((state, approval, lease_owner))
            if state == "awaiting_approval" && lease_owner.as_deref() == Some(owner) =>
        {
            match approval.as_deref() {
                Some("approved") => Waiting::Approved,
                Some("rejected") => Waiting::Rejected,
                _ => Waiting::Pending,
            }
        }
        _ => Waiting::Gone,
    })
}

/// The worker carries on: `awaiting_approval → running`.
pub async fn resume(pool: &Store, id: JobId, owner: &str, now: i64) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE jobs SET state = 'running', updated_at = $1
         WHERE id = $2 AND lease_owner = $3 AND state = 'awaiting_approval'",
    )
    .bind(now)
    .bind(id.get())
    .bind(owner)
    .execute(pool.db())
    .await?
    .rows_affected()
        == 1)
}

/// The plan's summary, shown on the job and reported for pull requests.
pub async fn record_plan(pool: &Store, id: JobId, summary: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET plan_summary = $1, updated_at = $2 WHERE id = $3")
        .bind(summary)
        .bind(now)
        .bind(id.get())
        .execute(pool.db())
        .await?;
    Ok(())
}
