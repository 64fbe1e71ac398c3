//! The jobs table. Each state change has its own module, so the rules for moving a
//! job from one state to the next are each written once.

mod abandon;
pub mod approval;
mod cancel;
pub(in crate::store) mod claim;
mod enqueue;
mod finish;
mod heartbeat;
mod prune;

pub use abandon::fail_abandoned;
pub use cancel::{CancelOutcome, cancel, cancel_queued_pull_request};
pub use claim::claim_next;
pub use enqueue::{NewJob, enqueue, enqueue_now, push_insert, push_insert_numbered};
pub use finish::{finish, finish_logged};
pub use heartbeat::{Heartbeat, heartbeat};
pub use prune::{Pruned, prune_finished};

use crate::store::Store;
use serde::Serialize;

use super::{Flag, Page, StoreError};
use crate::domain::{CommitSha, GitRef, JobId, Name};
use crate::job::{JobKind, JobState, Trigger};

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: JobId,
    pub project: Name,
    pub environment: Name,
    pub kind: JobKind,
    pub trigger: Trigger,
    pub state: JobState,
    pub git_ref: GitRef,
    pub sha: CommitSha,
    pub pull_request: Option<i64>,
    pub delivery_id: Option<String>,
    pub commit_message: Option<String>,
    pub commit_author: Option<String>,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub superseded_by: Option<i64>,
    pub rollback_of: Option<i64>,
    pub error: Option<String>,
    /// What the job's terraform plan would change (JSON), when it planned.
    pub plan_summary: Option<serde_json::Value>,
    /// `approved` or `rejected`, once a person answered the job's request.
    pub approval: Option<String>,
    /// `fork`: a fork's pull request held until an admin approves it.
    pub held_for: Option<String>,
    /// What the commit is compared with for its changed files (see [`NewJob::base_sha`]).
    pub base_sha: Option<CommitSha>,
    pub base_branch: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    project: String,
    environment: String,
    kind: String,
    trigger: String,
    state: String,
    git_ref: String,
    sha: String,
    pull_request: Option<i64>,
    delivery_id: Option<String>,
    commit_message: Option<String>,
    commit_author: Option<String>,
    attempts: i64,
    #[sqlx(try_from = "Flag")]
    cancel_requested: bool,
    superseded_by: Option<i64>,
    rollback_of: Option<i64>,
    error: Option<String>,
    plan_summary: Option<String>,
    approval: Option<String>,
    held_for: Option<String>,
    base_sha: Option<String>,
    base_branch: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
}

pub(crate) const JOB_COLUMNS: &str = "id, project, environment, kind, trigger, state, git_ref, sha, pull_request, \
     delivery_id, commit_message, commit_author, attempts, cancel_requested, superseded_by, rollback_of, error, \
     plan_summary, approval, held_for, base_sha, base_branch, created_at, started_at, finished_at, updated_at";

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, value: &str| StoreError::Corrupt(format!("job {}: {what} {value:?}", row.id));
        Ok(Self {
            id: JobId::new(row.id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            kind: JobKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?,
            trigger: Trigger::parse(&row.trigger).ok_or_else(|| corrupt("trigger", &row.trigger))?,
            state: JobState::parse(&row.state).ok_or_else(|| corrupt("state", &row.state))?,
            project: Name::parse(&row.project).map_err(|_| corrupt("project", &row.project))?,
            environment: Name::parse(&row.environment).map_err(|_| corrupt("environment", &row.environment))?,
            git_ref: GitRef::parse(&row.git_ref).map_err(|_| corrupt("ref", &row.git_ref))?,
            sha: CommitSha::parse(&row.sha).map_err(|_| corrupt("sha", &row.sha))?,
            pull_request: row.pull_request,
            delivery_id: row.delivery_id,
            commit_message: row.commit_message,
            commit_author: row.commit_author,
            attempts: row.attempts,
            cancel_requested: row.cancel_requested,
            superseded_by: row.superseded_by,
            rollback_of: row.rollback_of,
            error: row.error,
            plan_summary: row.plan_summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            approval: row.approval,
            held_for: row.held_for,
            // Only ever written from a parsed SHA; anything else reads as unknown.
            base_sha: row.base_sha.as_deref().and_then(|sha| CommitSha::parse(sha).ok()),
            base_branch: row.base_branch,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        })
    }
}

pub async fn get(pool: &Store, id: JobId) -> Result<Option<Job>, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id.get())
    .fetch_optional(pool.db())
    .await?;
    row.map(Job::try_from).transpose()
}

/// Filters for listing jobs; `None` means any.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub project: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
}

/// A job as lists show it: with the step it failed at, if it failed at one.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    #[serde(flatten)]
    pub job: Job,
    pub failed_step: Option<String>,
}

#[derive(sqlx::FromRow)]
struct JobSummaryRow {
    #[sqlx(flatten)]
    job: JobRow,
    failed_step: Option<String>,
}

/// Newest first, `limit` rows with ids below `before`.
pub async fn list(
    pool: &Store,
    filter: &JobFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<Page<JobSummary>, StoreError> {
    let rows: Vec<JobSummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS},
                (SELECT name FROM job_steps AS s WHERE s.job_id = jobs.id AND s.state = 'failed'
                 ORDER BY s.position LIMIT 1) AS failed_step
         FROM jobs
         WHERE id < $1 AND ($2 IS NULL OR project = $2) AND ($3 IS NULL OR state = $3) AND ($4 IS NULL OR kind = $4)
         ORDER BY id DESC LIMIT $5"
    )))
    .bind(before.unwrap_or(i64::MAX))
    .bind(filter.project.as_deref())
    .bind(filter.state.map(JobState::as_str))
    .bind(filter.kind.map(JobKind::as_str))
    .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
    .fetch_all(pool.db())
    .await?;
    let jobs = rows
        .into_iter()
        .map(|row| {
            Ok(JobSummary {
                job: Job::try_from(row.job)?,
                failed_step: row.failed_step,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Page::from_rows(jobs, limit, |summary| summary.job.id.get()))
}

/// Jobs waiting to be claimed, for metrics and the dashboard.
pub async fn queued_count(pool: &Store) -> Result<i64, StoreError> {
    // The repeated condition lets SQLite use the partial index of live jobs instead of a scan.
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running', 'awaiting_approval') AND state = 'queued'",
    )
    .fetch_one(pool.db())
    .await?)
}

/// The newest job of a project for a commit: what a push said about it (message, author).
pub async fn latest_for_sha(pool: &Store, project: &str, sha: &str) -> Result<Option<Job>, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE project = $1 AND sha = $2 AND commit_message IS NOT NULL
         ORDER BY id DESC LIMIT 1"
    )))
    .bind(project)
    .bind(sha)
    .fetch_optional(pool.db())
    .await?;
    row.map(Job::try_from).transpose()
}

/// The key that orders the job among its environment's deploys (see
/// [`NewJob::ordering_key`]).
pub async fn ordering_key(pool: &Store, id: JobId) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT ordering_key FROM jobs WHERE id = $1")
        .bind(id.get())
        .fetch_optional(pool.db())
        .await?)
}

/// Jobs not yet finished (queued, running, awaiting approval), newest first.
pub async fn active(pool: &Store, limit: usize) -> Result<Vec<Job>, StoreError> {
    let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running', 'awaiting_approval')
         ORDER BY id DESC LIMIT $1"
    )))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool.db())
    .await?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Log lines stored for a job.
pub async fn log_line_count(pool: &Store, id: JobId) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM job_logs WHERE job_id = $1")
            .bind(id.get())
            .fetch_one(pool.db())
            .await?,
    )
}
