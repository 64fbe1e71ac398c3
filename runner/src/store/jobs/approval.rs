//! `running → awaiting_approval → running`: a job whose plan needs a person's yes. The
//! worker keeps its lease while it waits, so a worker that dies lets the job be claimed
//! again (and planned again) like any other.

use crate::domain::JobId;
use crate::store::artifacts::{ContentDigest, PLAN};
use crate::store::{Store, StoreError};

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
    /// An approval of a plan that names no plan digest.
    PlanDigestMissing,
    /// The plan the approval names is not the job's plan now (it was planned again).
    PlanChanged,
    /// The job waits on a plan whose text was not kept: nobody can have read it.
    NoPlan,
}

/// A person's answer. Approving a plan names the plan read (by its digest, see
/// [`ContentDigest`]), so that a plan made again after it was read is never approved by a
/// late click; rejecting needs no digest, and neither does releasing a fork's held job.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    Approve { plan_digest: Option<&'a str> },
    Reject,
}

/// A person answers: only a job that is waiting can be approved or rejected, once. A
/// held job (a fork's pull request) is released to the queue, or cancelled; a job waiting
/// on its plan gets the answer its worker is polling for, an approval only while the plan
/// kept for it is the one the approval names (checked in the same statement that records it).
pub async fn decide(pool: &Store, id: JobId, answer: Answer<'_>, now: i64) -> Result<Decision, StoreError> {
    let answer_text = match answer {
        Answer::Approve { .. } => "approved",
        Answer::Reject => "rejected",
    };
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
    .bind(answer_text)
    .bind(now)
    .bind(id.get())
    .execute(pool.db())
    .await?
    .rows_affected();
    if released == 1 {
        return Ok(Decision::Released);
    }
    let changed = match answer {
        Answer::Reject => sqlx::query(
            "UPDATE jobs SET approval = 'rejected', updated_at = $1
             WHERE id = $2 AND state = 'awaiting_approval' AND approval IS NULL AND held_for IS NULL",
        )
        .bind(now)
        .bind(id.get())
        .execute(pool.db())
        .await?
        .rows_affected(),
        Answer::Approve { plan_digest: None } => 0,
        Answer::Approve {
            plan_digest: Some(given),
        } => {
            // The text whose digest was named, compared whole in the update: a plan kept
            // again in between (same job, planned again) fails it.
            let plan = super::super::artifacts::get(pool, id.get(), PLAN).await?;
            match plan.filter(|plan| plan.digest().matches(given)) {
                None => 0,
                Some(plan) => sqlx::query(
                    "UPDATE jobs SET approval = 'approved', updated_at = $1
                     WHERE id = $2 AND state = 'awaiting_approval' AND approval IS NULL AND held_for IS NULL
                       AND EXISTS (SELECT 1 FROM job_artifacts
                                   WHERE job_id = $2 AND name = $3 AND content = $4)",
                )
                .bind(now)
                .bind(id.get())
                .bind(PLAN)
                .bind(plan.content)
                .execute(pool.db())
                .await?
                .rows_affected(),
            }
        }
    };
    if changed == 1 {
        return Ok(Decision::Recorded);
    }
    why_not(pool, id, answer).await
}

/// Why an answer changed nothing.
async fn why_not(pool: &Store, id: JobId, answer: Answer<'_>) -> Result<Decision, StoreError> {
    // state, approval, held for, plan text
    type Row = (String, Option<String>, Option<String>, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT j.state, j.approval, j.held_for, a.content FROM jobs AS j
         LEFT JOIN job_artifacts AS a ON a.job_id = j.id AND a.name = $1
         WHERE j.id = $2",
    )
    .bind(PLAN)
    .bind(id.get())
    .fetch_optional(pool.db())
    .await?;
    let Some((state, approval, held_for, plan)) = row else {
        return Ok(Decision::NotFound);
    };
    let waits_for_plan = state == "awaiting_approval" && approval.is_none() && held_for.is_none();
    Ok(match (answer, plan) {
        (Answer::Approve { .. }, _) if !waits_for_plan => Decision::NotWaiting,
        (Answer::Approve { plan_digest: None }, _) => Decision::PlanDigestMissing,
        (Answer::Approve { .. }, None) => Decision::NoPlan,
        (
            Answer::Approve {
                plan_digest: Some(given),
            },
            Some(plan),
        ) if !ContentDigest::of(&plan).matches(given) => Decision::PlanChanged,
        _ => Decision::NotWaiting,
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
