//! The reporter's view of jobs: which ones GitHub has not yet been told about.

use sqlx::SqlitePool;

use super::StoreError;
use crate::domain::{CommitSha, Name};
use crate::job::{JobKind, JobState, Trigger};

/// A job whose current state GitHub has not been told.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unreported {
    pub id: i64,
    pub project: Name,
    pub environment: Name,
    pub kind: JobKind,
    pub trigger: Trigger,
    pub state: JobState,
    pub reported_state: Option<JobState>,
    pub sha: CommitSha,
    pub error: Option<String>,
    pub plan_summary: Option<String>,
    pub superseded_by: Option<i64>,
    pub held_for: Option<String>,
    pub github_deployment_id: Option<i64>,
    pub report_attempts: i64,
}

/// Due now, oldest first, of the given projects.
pub async fn due(
    pool: &SqlitePool,
    projects: &[String],
    now: i64,
    limit: usize,
) -> Result<Vec<Unreported>, StoreError> {
    let projects = serde_json::to_string(projects).unwrap_or_else(|_| "[]".into());
    Ok(sqlx::query_as(
        "SELECT id, project, environment, kind, trigger, state, reported_state, sha, error, plan_summary,
                superseded_by, held_for, github_deployment_id, report_attempts
         FROM jobs
         WHERE reported_state IS NOT state AND report_next_at <= ?1
           AND project IN (SELECT value FROM json_each(?2))
         ORDER BY report_next_at, id LIMIT ?3",
    )
    .bind(now)
    .bind(projects)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?)
}

/// GitHub knows `state` now (or was told about it as far as it would listen: `error`).
pub async fn reported(pool: &SqlitePool, id: i64, state: JobState, error: Option<&str>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET reported_state = ?1, report_attempts = 0, report_next_at = 0, report_error = ?2 WHERE id = ?3",
    )
    .bind(state)
    .bind(error)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Telling GitHub failed; try again at `next_at`.
pub async fn retry_later(pool: &SqlitePool, id: i64, error: &str, next_at: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET report_attempts = report_attempts + 1, report_error = ?1, report_next_at = ?2 WHERE id = ?3",
    )
    .bind(error)
    .bind(next_at)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn set_deployment(pool: &SqlitePool, id: i64, github_deployment_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET github_deployment_id = ? WHERE id = ?")
        .bind(github_deployment_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Whether any job of the project was ever queued for this commit.
pub async fn sha_seen(pool: &SqlitePool, project: &str, sha: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE project = ? AND sha = ? LIMIT 1")
        .bind(project)
        .bind(sha)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// The reporting problem shown on a job page, if any.
pub async fn error_of(pool: &SqlitePool, id: i64) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT report_error FROM jobs WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .flatten())
}

/// Jobs of projects that report nowhere are moved out of the reporter's way for good.
pub async fn park_unreportable(pool: &SqlitePool, projects: &[String], now: i64) -> Result<u64, StoreError> {
    const UNREPORTABLE: &str = "reported_state IS NOT state AND report_next_at <= ?1
           AND project NOT IN (SELECT value FROM json_each(?2))";
    let projects = serde_json::to_string(projects).unwrap_or_else(|_| "[]".into());
    // Most passes find nothing to park: a read first keeps them off the write lock.
    let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE {UNREPORTABLE})"
    )))
    .bind(now)
    .bind(&projects)
    .fetch_one(pool)
    .await?;
    if !any {
        return Ok(0);
    }
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET report_next_at = 9223372036854775807 WHERE {UNREPORTABLE}"
    )))
    .bind(now)
    .bind(projects)
    .execute(pool)
    .await?
    .rows_affected())
}
