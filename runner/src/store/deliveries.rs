//! Webhook deliveries: recorded once per `X-GitHub-Delivery`, with the job they queued.

use serde::Serialize;
use sqlx::{SqliteConnection, SqlitePool};

use std::collections::{HashMap, HashSet};

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

/// Records a batch of deliveries and what they trigger, inside the caller's transaction,
/// with one multi-row statement for the deliveries and one for their jobs (round trips to
/// SQLite, not rows, are what a batch costs). The unique index on `delivery_id` decides
/// duplicates, also between copies inside one batch (the first wins), so concurrent
/// redeliveries cannot both win. Triggers (migrations/) supersede older queued deploys
/// and link each job to its delivery, row by row in batch order.
pub async fn record_batch(
    conn: &mut SqliteConnection,
    batch: &[(&NewDelivery, &Action)],
) -> Result<Vec<Recorded>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO deliveries (delivery_id, event, action, project, repository, git_ref, sha, hook_id, outcome, reason, \
         content_type, body, body_bytes, received_at) ",
    );
    insert.push_values(batch.iter(), |mut row, (delivery, action)| {
        let (outcome, reason) = match action {
            Action::Queue(_) => ("queued", None),
            Action::Ignore { reason } => ("ignored", Some(reason.clone())),
            Action::CancelPullRequest { number, .. } => ("cancelled", Some(format!("pull request #{number} closed"))),
        };
        row.push_bind(delivery.delivery_id.clone())
            .push_bind(delivery.event.clone())
            .push_bind(delivery.action.clone())
            .push_bind(delivery.project.clone())
            .push_bind(delivery.repository.clone())
            .push_bind(delivery.git_ref.clone())
            .push_bind(delivery.sha.clone())
            .push_bind(delivery.hook_id)
            .push_bind(outcome)
            .push_bind(reason)
            .push_bind(delivery.content_type.clone())
            .push_bind(delivery.body.clone())
            .push_bind(i64::try_from(delivery.body.len()).unwrap_or(i64::MAX))
            .push_bind(delivery.received_at);
    });
    insert.push(" ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id");
    let inserted: HashSet<String> = insert
        .build_query_scalar::<String>()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();

    // In batch order, the first copy of an inserted id is the new one; every other is a duplicate.
    let mut claimed = HashSet::new();
    let is_new: Vec<bool> = batch
        .iter()
        .map(|(delivery, _)| inserted.contains(&delivery.delivery_id) && claimed.insert(delivery.delivery_id.as_str()))
        .collect();

    let new_jobs: Vec<&NewJob> = batch
        .iter()
        .zip(&is_new)
        .filter_map(|((_, action), new)| match action {
            Action::Queue(job) if *new => Some(job),
            _ => None,
        })
        .collect();
    let mut job_ids: HashMap<String, i64> = HashMap::new();
    if !new_jobs.is_empty() {
        let now = batch[0].0.received_at;
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO jobs (project, environment, kind, trigger, state, git_ref, sha, pull_request, ordering_key, \
             delivery_id, commit_message, commit_author, rollback_of, created_at, updated_at) ",
        );
        insert.push_values(new_jobs.iter(), |mut row, job| {
            row.push_bind(job.project.to_string())
                .push_bind(job.environment.to_string())
                .push_bind(job.kind.as_str())
                .push_bind(job.trigger.as_str())
                .push_bind("queued")
                .push_bind(job.git_ref.to_string())
                .push_bind(job.sha.to_string())
                .push_bind(job.pull_request)
                .push_bind(job.ordering_key)
                .push_bind(job.delivery_id.clone())
                .push_bind(job.commit_message.clone())
                .push_bind(job.commit_author.clone())
                .push_bind(job.rollback_of)
                .push_bind(now)
                .push_bind(now);
        });
        insert.push(" RETURNING id, delivery_id");
        let rows: Vec<(i64, Option<String>)> = insert.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
        job_ids.extend(rows.into_iter().filter_map(|(id, delivery)| Some((delivery?, id))));
    }

    let mut results = Vec::with_capacity(batch.len());
    for ((delivery, action), new) in batch.iter().zip(is_new) {
        let recorded = if !new {
            let job_id: Option<i64> = sqlx::query_scalar("SELECT job_id FROM deliveries WHERE delivery_id = ?")
                .bind(&delivery.delivery_id)
                .fetch_one(&mut *conn)
                .await?;
            Recorded::Duplicate { job_id }
        } else {
            match action {
                Action::Queue(_) => Recorded::Queued {
                    job_id: job_ids.get(&delivery.delivery_id).copied().ok_or_else(|| {
                        StoreError::Corrupt(format!("no job recorded for delivery {}", delivery.delivery_id))
                    })?,
                },
                Action::Ignore { reason } => Recorded::Ignored { reason: reason.clone() },
                Action::CancelPullRequest { project, number } => {
                    let cancelled =
                        jobs::cancel_queued_pull_request(conn, project, *number, delivery.received_at).await?;
                    let reason = format!(
                        "pull request #{number} closed; cancelled {} queued verify job(s)",
                        cancelled.len()
                    );
                    sqlx::query("UPDATE deliveries SET reason = ? WHERE delivery_id = ?")
                        .bind(&reason)
                        .bind(&delivery.delivery_id)
                        .execute(&mut *conn)
                        .await?;
                    Recorded::Cancelled { jobs: cancelled }
                }
            }
        };
        results.push(recorded);
    }
    Ok(results)
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

pub async fn list(pool: &SqlitePool, before: Option<i64>, limit: usize) -> Result<Page<Delivery>, StoreError> {
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
pub async fn body(pool: &SqlitePool, delivery_id: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
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
