//! Claims on SQLite.
//!
//! An UPDATE takes the write lock even when it changes nothing, and a worker wakes on
//! every queued job, most of which a newer push supersedes or an environment's running
//! deploy holds back. So a read (which never waits for or blocks a writer under WAL) looks
//! first, and only a job that looks runnable is claimed; the UPDATE still decides.

use sqlx::AnyPool;

use crate::store::jobs::JobRow;
use crate::store::jobs::claim::{Claim, claim_statement, runnable};

/// The oldest runnable job. The states are listed as the `jobs_live` partial index lists
/// them, so only live jobs are searched, never the finished history.
fn next_runnable() -> String {
    format!(
        "SELECT candidate.id FROM jobs AS candidate
         WHERE candidate.state IN ('queued', 'running', 'awaiting_approval')
           AND (candidate.state = 'queued' OR candidate.lease_expires_at < $2)
           AND {}
         ORDER BY candidate.id
         LIMIT 1",
        runnable(&super::in_json_list("candidate.project", "$5"))
    )
}

pub(in crate::store) async fn claim(db: &AnyPool, claim: &Claim<'_>) -> Result<Option<JobRow>, sqlx::Error> {
    // Bound like the UPDATE below, so the same numbered parameters mean the same values.
    let looks_runnable: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(next_runnable()))
        .bind(claim.owner)
        .bind(claim.now)
        .bind(claim.lease_ms)
        .bind(claim.max_attempts)
        .bind(claim.projects.clone())
        .fetch_optional(db)
        .await?;
    if looks_runnable.is_none() {
        return Ok(None);
    }
    sqlx::query_as(sqlx::AssertSqlSafe(claim_statement(&next_runnable())))
        .bind(claim.owner)
        .bind(claim.now)
        .bind(claim.lease_ms)
        .bind(claim.max_attempts)
        .bind(claim.projects.clone())
        .fetch_optional(db)
        .await
}
