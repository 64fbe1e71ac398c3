//! Job log lines, numbered per job so a reader can resume after the last line it saw.

use serde::Serialize;

use super::{Backend, Store, StoreError, postgres};
use crate::domain::JobId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Written by the runner itself (step started, finished, why it failed).
    System,
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogLine {
    pub seq: i64,
    pub at: i64,
    pub stream: String,
    pub line: String,
}

/// Appends lines in one transaction; sequence numbers continue from the job's last line.
pub async fn append(pool: &Store, job: JobId, lines: &[(i64, Stream, String)]) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin_write().await?;
    append_in(&mut tx, pool.backend, job, lines).await?;
    tx.commit().await?;
    Ok(())
}

/// Appends lines inside the caller's write transaction.
pub(in crate::store) async fn append_in(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    job: JobId,
    lines: &[(i64, Stream, String)],
) -> Result<(), StoreError> {
    let last: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM job_logs WHERE job_id = $1")
        .bind(job.get())
        .fetch_one(&mut *conn)
        .await?;
    for (offset, (at, stream, line)) in (1_i64..).zip(lines) {
        sqlx::query("INSERT INTO job_logs (job_id, seq, at, stream, line) VALUES ($1, $2, $3, $4, $5)")
            .bind(job.get())
            .bind(last + offset)
            .bind(at)
            .bind(stream.as_str())
            .bind(line)
            .execute(&mut *conn)
            .await?;
    }
    match backend {
        // One process: the caller tells its own live logs.
        Backend::Sqlite => {}
        // Live logs served by other replicas follow this job.
        Backend::Postgres => postgres::announce_log_lines(conn, job).await?,
    }
    Ok(())
}

/// Lines after `after_seq`, oldest first, at most `limit`.
pub async fn read(pool: &Store, job: JobId, after_seq: i64, limit: usize) -> Result<Vec<LogLine>, StoreError> {
    fetch_lines(
        pool,
        "SELECT seq, at, stream, line FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        job,
        after_seq,
        limit,
    )
    .await
}

/// The last `limit` lines, oldest first: what a page shows of a long log.
pub async fn tail(pool: &Store, job: JobId, limit: usize) -> Result<Vec<LogLine>, StoreError> {
    fetch_lines(
        pool,
        "SELECT seq, at, stream, line FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3",
        job,
        // Line numbers start at 1: after 0 is the whole log.
        0,
        limit,
    )
    .await
}

/// The last `limit` lines a step wrote, oldest first: what a failed job's page opens
/// with. A step's lines are those after its latest "step NAME: started" line.
pub async fn step_tail(pool: &Store, job: JobId, step: &str, limit: usize) -> Result<Vec<LogLine>, StoreError> {
    let started: Option<i64> =
        sqlx::query_scalar("SELECT max(seq) FROM job_logs WHERE job_id = $1 AND stream = 'system' AND line = $2")
            .bind(job.get())
            .bind(format!("step {step}: started"))
            .fetch_one(pool.db())
            .await?;
    let Some(started) = started else {
        return Ok(Vec::new());
    };
    fetch_lines(
        pool,
        "SELECT seq, at, stream, line FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3",
        job,
        started,
        limit,
    )
    .await
}

/// Runs a line query with the database packing its rows into one JSON array. Fetched row by
/// row, a thousand-line log costs milliseconds of per-row driver overhead; as one value it
/// costs one row and a JSON parse.
async fn fetch_lines(
    pool: &Store,
    query: &'static str,
    job: JobId,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<LogLine>, StoreError> {
    let packed: String = sqlx::query_scalar(sqlx::AssertSqlSafe(
        pool.backend().json_rows("seq, at, stream, line", query),
    ))
    .bind(job.get())
    .bind(after_seq)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_one(pool.db())
    .await?;
    let rows: Vec<(i64, i64, String, String)> =
        serde_json::from_str(&packed).map_err(|e| StoreError::Corrupt(format!("job log lines: {e}")))?;
    let mut lines: Vec<LogLine> = rows
        .into_iter()
        .map(|(seq, at, stream, line)| LogLine { seq, at, stream, line })
        .collect();
    // An aggregate promises no order; the caller wants oldest first.
    lines.sort_unstable_by_key(|l| l.seq);
    Ok(lines)
}
