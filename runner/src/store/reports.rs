//! The reporter's view of jobs: which ones GitHub has not yet been told about.

use super::{Flag, Store, StoreError};
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
    /// The ref the job's commit came from (`refs/heads/main`, `refs/pull/7/head`).
    pub git_ref: String,
    pub error: Option<String>,
    pub plan_summary: Option<String>,
    pub superseded_by: Option<i64>,
    pub held_for: Option<String>,
    pub github_deployment_id: Option<i64>,
    /// A verify job's pull request.
    pub pull_request: Option<i64>,
    pub report_attempts: i64,
    /// Bumped by each change of one of the repository's steps; differs from what was last
    /// told when only steps changed.
    pub steps_version: i64,
    pub steps_reported: i64,
    /// The job's check run on GitHub, once created.
    pub check_run_id: Option<i64>,
    /// How many of the check run's annotations GitHub has taken.
    pub check_annotations_sent: i64,
}

impl Unreported {
    /// Only its steps changed since the forge was last told: the job's own status stands.
    pub fn only_steps_changed(&self) -> bool {
        self.reported_state == Some(self.state)
    }
}

/// Due now, oldest first, of the given projects.
pub async fn due(pool: &Store, projects: &[String], now: i64, limit: usize) -> Result<Vec<Unreported>, StoreError> {
    let projects = serde_json::to_string(projects).unwrap_or_else(|_| "[]".into());
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, project, environment, kind, trigger, state, reported_state, sha, git_ref, error, plan_summary,
                superseded_by, held_for, github_deployment_id, pull_request, report_attempts, steps_version, steps_reported,
                check_run_id, check_annotations_sent
         FROM jobs
         WHERE (reported_state IS DISTINCT FROM state OR steps_version <> steps_reported) AND report_next_at <= $1
           AND {}
         ORDER BY report_next_at, id LIMIT $3",
        pool.backend().in_json_list("project", "$2")
    )))
    .bind(now)
    .bind(projects)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool.db())
    .await?)
}

/// GitHub knows `state` now, and its steps as of `steps_version` (or was told about them
/// as far as it would listen: `error`).
pub async fn reported(
    pool: &Store,
    id: i64,
    state: JobState,
    steps_version: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET reported_state = $1, steps_reported = $2, report_attempts = 0, report_next_at = 0,
             report_error = $3
         WHERE id = $4",
    )
    .bind(state)
    .bind(steps_version)
    .bind(error)
    .bind(id)
    .execute(pool.db())
    .await?;
    Ok(())
}

/// Telling GitHub failed; try again at `next_at`.
pub async fn retry_later(pool: &Store, id: i64, error: &str, next_at: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET report_attempts = report_attempts + 1, report_error = $1, report_next_at = $2 WHERE id = $3",
    )
    .bind(error)
    .bind(next_at)
    .bind(id)
    .execute(pool.db())
    .await?;
    Ok(())
}

pub async fn set_deployment(pool: &Store, id: i64, github_deployment_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET github_deployment_id = $1 WHERE id = $2")
        .bind(github_deployment_id)
        .bind(id)
        .execute(pool.db())
        .await?;
    Ok(())
}

pub async fn set_check_run(pool: &Store, id: i64, check_run_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET check_run_id = $1 WHERE id = $2")
        .bind(check_run_id)
        .bind(id)
        .execute(pool.db())
        .await?;
    Ok(())
}

/// GitHub has taken the check run's first `count` annotations: a retry sends only the rest.
pub async fn set_annotations_sent(pool: &Store, id: i64, count: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET check_annotations_sent = $1 WHERE id = $2")
        .bind(count)
        .bind(id)
        .execute(pool.db())
        .await?;
    Ok(())
}

/// Whether a push of this commit ever reached the project: a job was queued for it, or a
/// delivery naming it was received (and perhaps ignored, as `[skip ci]` asks).
pub async fn sha_seen(pool: &Store, project: &str, sha: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM jobs WHERE project = $1 AND sha = $2
         UNION ALL SELECT 1 FROM deliveries WHERE project = $1 AND sha = $2 LIMIT 1",
    )
    .bind(project)
    .bind(sha)
    .fetch_optional(pool.db())
    .await?;
    Ok(found.is_some())
}

/// The reporting problem shown on a job page, if any.
pub async fn error_of(pool: &Store, id: i64) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT report_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool.db())
        .await?
        .flatten())
}

/// One of the job's repository steps changed: the forge hears of it on the reporter's next
/// pass.
pub async fn steps_changed(pool: &Store, id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE jobs SET steps_version = steps_version + 1 WHERE id = $1")
        .bind(id)
        .execute(pool.db())
        .await?;
    Ok(())
}

/// Jobs of projects that report nowhere are moved out of the reporter's way for good.
pub async fn park_unreportable(pool: &Store, projects: &[String], now: i64) -> Result<u64, StoreError> {
    let unreportable = format!(
        "(reported_state IS DISTINCT FROM state OR steps_version <> steps_reported) AND report_next_at <= $1 \
         AND NOT ({})",
        pool.backend().in_json_list("project", "$2")
    );
    let projects = serde_json::to_string(projects).unwrap_or_else(|_| "[]".into());
    // Most passes find nothing to park: a read first keeps them off the write lock.
    let any: Flag = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE {unreportable})"
    )))
    .bind(now)
    .bind(&projects)
    .fetch_one(pool.db())
    .await?;
    if !any.0 {
        return Ok(0);
    }
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET report_next_at = 9223372036854775807 WHERE {unreportable}"
    )))
    .bind(now)
    .bind(projects)
    .execute(pool.db())
    .await?
    .rows_affected())
}
