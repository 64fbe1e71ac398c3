//! Deployments: what went live where, from which job, replacing what.

use super::Store;
use serde::Serialize;

use super::{Page, StoreError};
use crate::domain::{CommitSha, Name};
use crate::job::{DeploymentStatus, Trigger};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Deployment {
    pub id: i64,
    pub job_id: i64,
    pub project: Name,
    pub environment: Name,
    pub sha: CommitSha,
    pub image_ref: String,
    pub image_digest: Option<String>,
    pub trigger: Trigger,
    pub status: DeploymentStatus,
    pub replaced_id: Option<i64>,
    /// Once it is `replaced`: the deployment that took over.
    pub replaced_by: Option<i64>,
    pub url: Option<String>,
    pub error: Option<String>,
    /// Terraform outputs after the apply of this deployment (JSON object).
    pub outputs: Outputs,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

impl Deployment {
    /// Where its image was pushed: `image_ref` without its `:<sha>` tag.
    pub fn repository(&self) -> &str {
        self.image_ref
            .rsplit_once(':')
            .map_or(self.image_ref.as_str(), |(repository, _)| repository)
    }

    /// `<repository>@<digest>`: exactly the image it ran; `None` without a pushed digest.
    pub fn pinned_image(&self) -> Option<String> {
        Some(format!("{}@{}", self.repository(), self.image_digest.as_deref()?))
    }
}

/// Terraform's outputs after the apply that put a deployment live, kept as JSON text.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Outputs(pub Option<serde_json::Value>);

impl sqlx::Type<sqlx::Any> for Outputs {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Outputs {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <Option<String> as sqlx::Decode<'r, sqlx::Any>>::decode(value)? {
            Some(text) => Ok(Self(Some(serde_json::from_str(&text)?))),
            None => Ok(Self(None)),
        }
    }
}

const COLUMNS: &str = "id, job_id, project, environment, sha, image_ref, image_digest, trigger, status, \
     replaced_id, replaced_by, url, error, outputs, started_at, finished_at";

pub struct NewDeployment<'a> {
    pub job_id: i64,
    pub project: &'a str,
    pub environment: &'a str,
    pub sha: &'a str,
    pub image_ref: &'a str,
    pub image_digest: Option<&'a str>,
    pub trigger: Trigger,
    pub url: &'a str,
}

/// `(nothing) → in_progress`, remembering what is live now. A retried job (its worker
/// died) reuses its row.
pub async fn start(pool: &Store, new: &NewDeployment<'_>, now: i64) -> Result<Deployment, StoreError> {
    let mut tx = pool.begin_write().await?;
    let live: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM deployments WHERE project = $1 AND environment = $2 AND status = 'live' AND job_id <> $3
         ORDER BY id DESC LIMIT 1",
    )
    .bind(new.project)
    .bind(new.environment)
    .bind(new.job_id)
    .fetch_optional(&mut *tx)
    .await?;
    let row: Deployment = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deployments (job_id, project, environment, sha, image_ref, image_digest, trigger, status,
                                  replaced_id, url, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'in_progress', $8, $9, $10)
         ON CONFLICT (job_id) DO UPDATE SET status = 'in_progress', image_ref = excluded.image_ref,
             image_digest = excluded.image_digest, error = NULL, finished_at = NULL
         RETURNING {COLUMNS}"
    )))
    .bind(new.job_id)
    .bind(new.project)
    .bind(new.environment)
    .bind(new.sha)
    .bind(new.image_ref)
    .bind(new.image_digest)
    .bind(new.trigger)
    .bind(live)
    .bind(new.url)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// `in_progress → live | failed | rolled_back`. Going live, the deployment that was live
/// in the environment becomes `replaced` (pointing at this one) in the same transaction,
/// so there is never more, nor less, than one live deployment per environment.
pub async fn finish(
    pool: &Store,
    id: i64,
    status: DeploymentStatus,
    error: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_write().await?;
    if status == DeploymentStatus::Live {
        sqlx::query(
            "UPDATE deployments SET status = 'replaced', replaced_by = $1
             WHERE status = 'live' AND id <> $1
               AND (project, environment) = (SELECT project, environment FROM deployments
                                             WHERE id = $1 AND status = 'in_progress')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE deployments SET status = $1, error = $2, finished_at = $3 WHERE id = $4 AND status = 'in_progress'",
    )
    .bind(status)
    .bind(error)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn get(pool: &Store, id: i64) -> Result<Option<Deployment>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool.db())
    .await?)
}

/// What serves in the environment now, if anything does.
pub async fn live(pool: &Store, project: &str, environment: &str) -> Result<Option<Deployment>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE project = $1 AND environment = $2 AND status = 'live'"
    )))
    .bind(project)
    .bind(environment)
    .fetch_optional(pool.db())
    .await?)
}

pub async fn for_job(pool: &Store, job_id: i64) -> Result<Option<Deployment>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE job_id = $1"
    )))
    .bind(job_id)
    .fetch_optional(pool.db())
    .await?)
}

pub async fn list(
    pool: &Store,
    project: Option<&str>,
    before: Option<i64>,
    limit: usize,
) -> Result<Page<Deployment>, StoreError> {
    let rows: Vec<Deployment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deployments WHERE id < $1 AND ($2 IS NULL OR project = $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(before.unwrap_or(i64::MAX))
    .bind(project)
    .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
    .fetch_all(pool.db())
    .await?;
    Ok(Page::from_rows(rows, limit, |d| d.id))
}

/// A deployment whose job ended without finishing it (its worker died too often) is failed.
pub async fn fail_orphans(pool: &Store, now: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE deployments SET status = 'failed', error = 'its job ended before the rollout finished', finished_at = $1
         WHERE status = 'in_progress'
           AND job_id IN (SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled', 'superseded'))",
    )
    .bind(now)
    .execute(pool.db())
    .await?
    .rows_affected())
}

/// A deployment as the dashboard lists it: with the commit it deployed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeploymentView {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub deployment: Deployment,
    pub git_ref: Option<String>,
    pub commit_message: Option<String>,
    pub commit_author: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct DeploymentFilter {
    pub project: Option<String>,
    pub environment: Option<String>,
    pub status: Option<String>,
}

/// Newest first, filtered, keyset-paginated on the id.
pub async fn list_views(
    pool: &Store,
    filter: &DeploymentFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<Page<DeploymentView>, StoreError> {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("d.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows: Vec<DeploymentView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {columns}, j.git_ref, j.commit_message, j.commit_author
         FROM deployments AS d LEFT JOIN jobs AS j ON j.id = d.job_id
         WHERE d.id < $1 AND ($2 IS NULL OR d.project = $2) AND ($3 IS NULL OR d.environment = $3)
           AND ($4 IS NULL OR d.status = $4)
         ORDER BY d.id DESC LIMIT $5"
    )))
    .bind(before.unwrap_or(i64::MAX))
    .bind(filter.project.as_deref())
    .bind(filter.environment.as_deref())
    .bind(filter.status.as_deref())
    .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
    .fetch_all(pool.db())
    .await?;
    Ok(Page::from_rows(rows, limit, |d| d.deployment.id))
}

/// Records what the apply of this deployment's job produced.
pub async fn set_outputs(pool: &Store, id: i64, outputs: &serde_json::Value) -> Result<(), StoreError> {
    sqlx::query("UPDATE deployments SET outputs = $1 WHERE id = $2")
        .bind(outputs.to_string())
        .bind(id)
        .execute(pool.db())
        .await?;
    Ok(())
}

/// What a project's rollbacks and running jobs still need: commits and image digests.
#[derive(Debug, Default, Clone)]
pub struct KeptImages {
    pub shas: std::collections::HashSet<String>,
    pub digests: std::collections::HashSet<String>,
}

/// Per environment of `project`, the images of its `keep` latest deployments that went
/// (or are going) live: the live one and those a rollback can go back to; and the commits
/// of its jobs not yet finished, whose images may not have a deployment yet.
pub async fn kept_images(pool: &Store, project: &str, keep: u32) -> Result<KeptImages, StoreError> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT sha, image_digest FROM (
             SELECT sha, image_digest,
                    row_number() OVER (PARTITION BY environment ORDER BY id DESC) AS newest
             FROM deployments
             WHERE project = $1 AND status IN ('live', 'replaced', 'in_progress') AND image_ref <> '') AS ranked
         WHERE newest <= $2
         UNION ALL
         SELECT sha, NULL FROM jobs
         WHERE project = $1 AND state IN ('queued', 'running', 'awaiting_approval')",
    )
    .bind(project)
    .bind(i64::from(keep))
    .fetch_all(pool.db())
    .await?;
    let mut kept = KeptImages::default();
    for (sha, digest) in rows {
        kept.shas.insert(sha);
        kept.digests.extend(digest);
    }
    // A preview's image may be a deploy's too (the same build): while it serves, it stays.
    let previews: Vec<String> = sqlx::query_scalar(
        "SELECT image FROM previews WHERE project = $1 AND state IN ('deploying', 'live') AND image IS NOT NULL",
    )
    .bind(project)
    .fetch_all(pool.db())
    .await?;
    kept.digests.extend(
        previews
            .iter()
            .filter_map(|image| image.split_once('@'))
            .map(|(_, digest)| digest.to_owned()),
    );
    Ok(kept)
}

/// Whether `deployment` is among the ones whose images are kept (see [`kept_images`]).
pub async fn within_kept(pool: &Store, deployment: &Deployment, keep: u32) -> Result<bool, StoreError> {
    let newer: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployments
         WHERE project = $1 AND environment = $2 AND status IN ('live', 'replaced', 'in_progress')
           AND image_ref <> '' AND id > $3",
    )
    .bind(deployment.project.as_str())
    .bind(deployment.environment.as_str())
    .bind(deployment.id)
    .fetch_one(pool.db())
    .await?;
    Ok(newer < i64::from(keep))
}
