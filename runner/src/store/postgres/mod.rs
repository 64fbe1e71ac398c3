//! PostgreSQL, shared by several runner replicas. What is written only for it: its pool,
//! the advisory lock that stands in for SQLite's one writer, its JSON functions, and the
//! statements shaped for writers on several replicas at once: ingest (`ingest`), claims
//! (`claim`), locks held across replicas (`locks`) and wake-ups through `LISTEN`/`NOTIFY`
//! (`notify`).

pub(super) mod claim;
pub(super) mod ingest;
pub(super) mod locks;
pub(super) mod notify;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};

use super::StoreError;
use crate::domain::JobId;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// The database-wide advisory lock that write transactions which read before they write
/// take first: the same one-writer-at-a-time rule SQLite's `BEGIN IMMEDIATE` gives, across
/// every replica. Claims and heartbeats do not take it.
const WRITE_LOCK: i64 = 0x7275_6e6e_6572; // "runner"

/// The class of the per-environment advisory locks ("envi") that queuing deploys takes:
/// the superseding trigger (migrations/postgres) and ingest's stale-push check.
const ENVIRONMENT_LOCK: i32 = 1_701_738_089;

pub(super) fn pool_options() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(16)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
}

pub(super) async fn begin_write(db: &AnyPool) -> Result<Transaction<'static, Any>, StoreError> {
    let mut tx = db.begin().await?;
    // `pg_advisory_xact_lock` returns void, which the driver does not read: count it.
    sqlx::query("SELECT count(*) FROM (SELECT pg_advisory_xact_lock($1)) AS held")
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Tells every replica's live logs that `job` has new lines, when the transaction commits.
pub(super) async fn announce_log_lines(conn: &mut sqlx::AnyConnection, job: JobId) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(notify::LOGS_CHANNEL)
        .bind(job.get().to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) fn in_json_list(column: &str, param: &str) -> String {
    format!("{column} IN (SELECT json_array_elements_text(CAST({param} AS json)))")
}

pub(super) fn json_pairs(param: &str) -> String {
    format!("(SELECT e->>0 AS first, e->>1 AS second FROM json_array_elements(CAST({param} AS json)) AS e)")
}

pub(super) fn json_rows(columns: &str, rows: &str) -> String {
    format!("SELECT coalesce(CAST(json_agg(json_build_array({columns})) AS text), '[]') FROM ({rows}) AS packed")
}
