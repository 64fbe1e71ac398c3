//! Claims on PostgreSQL, by workers of several replicas at once.
//!
//! The candidate row is locked, and one another replica is claiming is skipped; two
//! deploys of one environment claimed at the same instant are stopped by the
//! `jobs_one_running_deploy` index, and the loser finds nothing this time.

use sqlx::AnyPool;

use crate::store::jobs::JobRow;
use crate::store::jobs::claim::{Claim, claim_statement, runnable};

/// The oldest runnable job. Queued jobs and lapsed leases are searched apart, each walking
/// the `jobs_live` partial index in id order (a plain index scan, where one over three
/// states at once is planned as a bitmap scan). A job that stopped being live leaves its
/// entry in the index until vacuum, and only a plain scan marks such an entry dead the
/// first time it passes it; a burst of superseded deploys would otherwise be walked again
/// by every claim until vacuum ran.
fn next_runnable() -> String {
    let runnable = runnable(&super::in_json_list("candidate.project", "$5"));
    format!(
        "SELECT id FROM (
             SELECT id FROM (
                 SELECT candidate.id FROM jobs AS candidate
                 WHERE candidate.state = 'queued' AND {runnable}
                 ORDER BY candidate.id LIMIT 1 FOR UPDATE SKIP LOCKED) AS queued
             UNION ALL
             SELECT id FROM (
                 SELECT candidate.id FROM jobs AS candidate
                 WHERE candidate.state IN ('running', 'awaiting_approval')
                   AND candidate.lease_expires_at < $2 AND {runnable}
                 ORDER BY candidate.id LIMIT 1 FOR UPDATE SKIP LOCKED) AS lapsed
         ) AS runnable
         ORDER BY id LIMIT 1"
    )
}

pub(in crate::store) async fn claim(db: &AnyPool, claim: &Claim<'_>) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(claim_statement(&next_runnable())))
        .bind(claim.owner)
        .bind(claim.now)
        .bind(claim.lease_ms)
        .bind(claim.max_attempts)
        .bind(claim.projects.clone())
        .fetch_optional(db)
        .await
}
