//! Webhook deliveries: recorded once per `X-GitHub-Delivery`, with the job they queued.

use serde::Serialize;
use sqlx::{SqliteConnection, SqlitePool};

use super::jobs::{self, NewJob};
use super::{Page, StoreError};

/// What the ingest decided to do with a verified, parsed delivery.
#[derive(Debug, Clone)]
pub enum Action {
    Queue(NewJob),
    Ignore { reason: String },
    CancelPullRequest { project: String, number: i64 },
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub project: Option<String>,
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub hook_id: Option<i64>,
    pub content_type: String,
    pub body: Vec<u8>,
    pub received_at: i64,
}

/// The result of recording a delivery, as the webhook answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Queued {
        job_id: i64,
    },
    Ignored {
        reason: String,
    },
    Cancelled {
        jobs: Vec<i64>,
    },
    /// This delivery id was recorded before; nothing changed.
    Duplicate {
        job_id: Option<i64>,
    },
}

/// Records one delivery and what it triggers, inside the caller's transaction. The
/// delivery row goes first: the unique index on `delivery_id` decides duplicates (so
/// concurrent redeliveries cannot both win), and a duplicate has written nothing.
pub async fn record(
    conn: &mut SqliteConnection,
    delivery: &NewDelivery,
    action: &Action,
) -> Result<Recorded, StoreError> {
    let now = delivery.received_at;
    let (outcome, reason) = match action {
        Action::Queue(_) => ("queued", None),
        Action::Ignore { reason } => ("ignored", Some(reason.clone())),
        Action::CancelPullRequest { number, .. } => {
            ("cancelled", Some(format!("pull request #{number} closed")))
        }
    };
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO deliveries (delivery_id, event, action, project, repository, git_ref, sha, hook_id, outcome, reason,
                                 content_type, body, body_bytes, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (delivery_id) DO NOTHING
         RETURNING id",
    )
    .bind(&delivery.delivery_id)
    .bind(&delivery.event)
    .bind(delivery.action.as_deref())
    .bind(delivery.project.as_deref())
    .bind(delivery.repository.as_deref())
    .bind(delivery.git_ref.as_deref())
    .bind(delivery.sha.as_deref())
    .bind(delivery.hook_id)
    .bind(outcome)
    .bind(reason.as_deref())
    .bind(&delivery.content_type)
    .bind(&delivery.body)
    .bind(i64::try_from(delivery.body.len()).unwrap_or(i64::MAX))
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row_id) = inserted else {
        let job_id: Option<i64> =
            sqlx::query_scalar("SELECT job_id FROM deliveries WHERE delivery_id = ?")
                .bind(&delivery.delivery_id)
                .fetch_one(&mut *conn)
                .await?;
        return Ok(Recorded::Duplicate { job_id });
    };
    Ok(match action {
        Action::Queue(job) => Recorded::Queued {
            job_id: jobs::enqueue(conn, job, now).await?.get(),
        },
        Action::Ignore { reason } => Recorded::Ignored {
            reason: reason.clone(),
        },
        Action::CancelPullRequest { project, number } => {
            let cancelled = jobs::cancel_queued_pull_request(conn, project, *number, now).await?;
            let reason = format!(
                "pull request #{number} closed; cancelled {} queued verify job(s)",
                cancelled.len()
            );
            sqlx::query("UPDATE deliveries SET reason = ? WHERE id = ?")
                .bind(&reason)
                .bind(row_id)
                .execute(&mut *conn)
                .await?;
            Recorded::Cancelled { jobs: cancelled }
        }
    })
}

/// A delivery as listed by the API (without its body).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub project: Option<String>,
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub hook_id: Option<i64>,
    pub outcome: String,
    pub reason: Option<String>,
    pub job_id: Option<i64>,
    pub content_type: String,
    pub body_bytes: i64,
    pub body_kept: bool,
    pub received_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, delivery_id, event, action, project, repository, git_ref, sha, hook_id, outcome, \
     reason, job_id, content_type, body_bytes, body IS NOT NULL AS body_kept, received_at";

pub async fn list(
    pool: &SqlitePool,
    before: Option<i64>,
    limit: usize,
) -> Result<Page<Delivery>, StoreError> {
    let rows: Vec<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id < ? ORDER BY id DESC LIMIT ?"
    )))
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, limit, |d| d.id))
}

pub async fn get(pool: &SqlitePool, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = ?"
    )))
    .bind(delivery_id)
    .fetch_optional(pool)
    .await?)
}

/// The stored raw body and its content type, while retention keeps it.
pub async fn body(
    pool: &SqlitePool,
    delivery_id: &str,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    let row: Option<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT content_type, body FROM deliveries WHERE delivery_id = ?")
            .bind(delivery_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(content_type, body)| body.map(|b| (content_type, b))))
}

/// Drops raw bodies received before `cutoff`; the delivery rows themselves stay.
pub async fn prune_bodies(pool: &SqlitePool, cutoff: i64) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("UPDATE deliveries SET body = NULL WHERE body IS NOT NULL AND received_at < ?")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

pub async fn count(pool: &SqlitePool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(pool)
        .await?)
}
