//! The steps of a job with their state and timing: `pending → running → succeeded |
//! failed | skipped | cancelled`.

use super::Store;
use serde::Serialize;

use super::StoreError;
use crate::job::StepState;
use crate::runfile::junit::FailedTest;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Step {
    pub position: i64,
    pub name: String,
    pub state: StepState,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    /// What the step's test report said ("212 passed, 2 failed").
    pub summary: Option<String>,
    /// The report's failing tests, as JSON (see [`Step::failed_tests`]).
    #[serde(skip)]
    failures: Option<String>,
}

impl Step {
    /// The failing tests the step's report named, the first
    /// [`MAX_FAILURES_KEPT`](crate::runfile::junit::MAX_FAILURES_KEPT) of them.
    pub fn failed_tests(&self) -> Vec<FailedTest> {
        self.failures
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }
}

/// Lays out the job's plan; a retried job starts its plan afresh.
pub async fn plan(pool: &Store, job_id: i64, names: &[&str]) -> Result<(), StoreError> {
    let mut tx = pool.begin_write().await?;
    sqlx::query("DELETE FROM job_steps WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    for (position, name) in (0_i64..).zip(names) {
        sqlx::query("INSERT INTO job_steps (job_id, position, name, state) VALUES ($1, $2, $3, 'pending')")
            .bind(job_id)
            .bind(position)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Adds `names` as pending steps right after the step `after` (the repository's own steps,
/// known once its checkout is read); the steps after them move down. A name the job
/// already has is not added again (a retried job reads the same file).
pub async fn insert_after(pool: &Store, job_id: i64, after: &str, names: &[&str]) -> Result<(), StoreError> {
    let mut tx = pool.begin_write().await?;
    let existing: Vec<(i64, String)> = sqlx::query_as("SELECT position, name FROM job_steps WHERE job_id = $1")
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
    let new: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !existing.iter().any(|(_, have)| have == name))
        .collect();
    let Some(anchor) = existing
        .iter()
        .find(|(_, name)| name == after)
        .map(|(position, _)| *position)
    else {
        tx.commit().await?;
        return Ok(());
    };
    if new.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    let shift = i64::try_from(new.len()).unwrap_or(i64::MAX);
    // Through negative positions: the key (job_id, position) is checked row by row.
    sqlx::query("UPDATE job_steps SET position = -(position + $1) WHERE job_id = $2 AND position > $3")
        .bind(shift)
        .bind(job_id)
        .bind(anchor)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE job_steps SET position = -position WHERE job_id = $1 AND position < 0")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    for (offset, name) in (1_i64..).zip(new) {
        sqlx::query("INSERT INTO job_steps (job_id, position, name, state) VALUES ($1, $2, $3, 'pending')")
            .bind(job_id)
            .bind(anchor + offset)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn set_state(
    pool: &Store,
    job_id: i64,
    name: &str,
    state: StepState,
    error: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE job_steps SET state = $1, error = $2,
             started_at = CASE WHEN $1 = 'running' THEN $3 ELSE started_at END,
             finished_at = CASE WHEN $1 IN ('succeeded', 'failed', 'skipped', 'cancelled') THEN $3 ELSE finished_at END
         WHERE job_id = $4 AND name = $5",
    )
    .bind(state)
    .bind(error)
    .bind(now)
    .bind(job_id)
    .bind(name)
    .execute(pool.db())
    .await?;
    Ok(())
}

/// Keeps what the step's test report said, and the tests that failed.
pub async fn set_summary(
    pool: &Store,
    job_id: i64,
    name: &str,
    summary: &str,
    failures: &[FailedTest],
) -> Result<(), StoreError> {
    let failures = (!failures.is_empty())
        .then(|| serde_json::to_string(failures))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("failing tests: {e}")))?;
    sqlx::query("UPDATE job_steps SET summary = $1, failures = $2 WHERE job_id = $3 AND name = $4")
        .bind(summary)
        .bind(failures)
        .bind(job_id)
        .bind(name)
        .execute(pool.db())
        .await?;
    Ok(())
}

/// Steps that never ran once the job ended are marked skipped.
pub async fn skip_pending(pool: &Store, job_id: i64, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE job_steps SET state = 'skipped', finished_at = $1 WHERE job_id = $2 AND state = 'pending'")
        .bind(now)
        .bind(job_id)
        .execute(pool.db())
        .await?;
    Ok(())
}

pub async fn list(pool: &Store, job_id: i64) -> Result<Vec<Step>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT position, name, state, started_at, finished_at, error, summary, failures FROM job_steps WHERE job_id = $1 ORDER BY position",
    )
    .bind(job_id)
    .fetch_all(pool.db())
    .await?)
}
