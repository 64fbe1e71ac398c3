//! `running → running` with a later lease: the worker is alive.

use std::time::Duration;

use crate::store::Store;

use crate::domain::JobId;
use crate::store::{Flag, StoreError, duration_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The lease was extended; carry on.
    Renewed,
    /// Someone asked to cancel the job; stop and clean up.
    CancelRequested,
    /// The job is no longer ours (its lease ran out and another worker took it, or it
    /// was finished elsewhere); stop without touching it.
    Lost,
}

pub async fn heartbeat(
    pool: &Store,
    id: JobId,
    owner: &str,
    lease: Duration,
    now: i64,
) -> Result<Heartbeat, StoreError> {
    let cancel_requested: Option<Flag> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires_at = $1 + $2, updated_at = $1
         WHERE id = $3 AND lease_owner = $4 AND state IN ('running', 'awaiting_approval')
         RETURNING cancel_requested",
    )
    .bind(now)
    .bind(duration_ms(lease))
    .bind(id.get())
    .bind(owner)
    .fetch_optional(pool.db())
    .await?;
    Ok(match cancel_requested {
        None => Heartbeat::Lost,
        Some(Flag(true)) => Heartbeat::CancelRequested,
        Some(Flag(false)) => Heartbeat::Renewed,
    })
}
