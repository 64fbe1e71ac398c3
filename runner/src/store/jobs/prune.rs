//! `finished → (gone)`: finished jobs past the retention lose their logs, steps and
//! artifacts; those no deployment names are removed too (the deployments page keeps its
//! history, and a delivery keeps its record without its job).

use crate::store::Store;

use crate::store::StoreError;

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub log_lines: u64,
    pub jobs: u64,
}

/// Jobs finished before `cutoff` (epoch ms).
const OLD: &str = "SELECT id FROM jobs WHERE finished_at < $1
                   AND state IN ('succeeded', 'failed', 'cancelled', 'superseded')";
/// Of those, the ones no deployment names.
const UNREFERENCED: &str = "SELECT id FROM jobs AS old WHERE old.finished_at < $1
                   AND old.state IN ('succeeded', 'failed', 'cancelled', 'superseded')
                   AND NOT EXISTS (SELECT 1 FROM deployments WHERE job_id = old.id)
                   AND NOT EXISTS (SELECT 1 FROM previews WHERE job_id = old.id AND state <> 'removed')";

pub async fn prune_finished(pool: &Store, cutoff: i64) -> Result<Pruned, StoreError> {
    let mut tx = pool.begin_write().await?;
    let log_lines = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM job_logs WHERE job_id IN ({OLD})"
    )))
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    for table in ["job_steps", "job_artifacts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE job_id IN ({OLD})"
        )))
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    }
    for unlink in [
        "UPDATE jobs SET superseded_by = NULL WHERE superseded_by IN",
        "UPDATE deliveries SET job_id = NULL WHERE job_id IN",
        "UPDATE previews SET job_id = NULL WHERE state = 'removed' AND job_id IN",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("{unlink} ({UNREFERENCED})")))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
    }
    let jobs = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM jobs WHERE id IN ({UNREFERENCED})"
    )))
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Pruned { log_lines, jobs })
}
