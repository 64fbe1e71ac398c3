//! Pull requests' previews: the seat each holds, what serves there, and what GitHub has
//! been told of it. Every change people should hear of bumps `version`; the reporter tells
//! GitHub until `told_version` catches up.

use serde::Serialize;
use sqlx::AnyConnection;

use super::{Store, StoreError};
use crate::job::{PreviewState, Removal};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Preview {
    pub id: i64,
    pub project: String,
    pub number: i64,
    pub seat: i64,
    pub state: PreviewState,
    pub url: String,
    /// The commit serving (once live).
    pub sha: Option<String>,
    /// The image serving, pinned by digest (once live).
    pub image: Option<String>,
    /// The job that last put it live.
    pub job_id: Option<i64>,
    pub removal: Option<Removal>,
    pub created_at: i64,
    /// When it last went live with a new push.
    pub pushed_at: i64,
    pub removed_at: Option<i64>,
    pub version: i64,
    pub told_version: i64,
    pub comment_id: Option<i64>,
    pub github_deployment_id: Option<i64>,
    pub tell_attempts: i64,
}

impl Preview {
    /// Its environment's name.
    pub fn environment(&self) -> String {
        crate::config::PreviewSettings::environment_name(self.number)
    }

    pub fn seat(&self) -> u32 {
        u32::try_from(self.seat).unwrap_or(u32::MAX)
    }
}

const COLUMNS: &str = "id, project, number, seat, state, url, sha, image, job_id, removal, created_at, pushed_at, \
     removed_at, version, told_version, comment_id, github_deployment_id, tell_attempts";

fn select(condition: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM previews WHERE {condition}"))
}

/// What a job must do before its pull request's preview can deploy.
#[derive(Debug)]
pub enum Opened {
    /// The preview to deploy into (new, or the one already serving the pull request).
    Ready(Preview),
    /// This one holds the seat or the pull request's preview and is on its way out: remove
    /// it (then ask again).
    RemoveFirst(Preview),
    /// The pull request closed (or an admin removed its preview) after the job was queued:
    /// no preview.
    Closed(Removal),
    /// Every seat is held by a preview whose pull request has a job deploying it.
    Busy,
}

/// A job of the pull request runs: it may be putting a version in the preview's slots.
/// A fork's push held for approval runs nothing.
const JOB_RUNNING: &str = "EXISTS (SELECT 1 FROM jobs WHERE jobs.project = previews.project
     AND jobs.pull_request = previews.number
     AND (jobs.state = 'running' OR (jobs.state = 'awaiting_approval' AND jobs.held_for IS NULL)))";

/// Removals that end a pull request's previews until it is opened again.
const FOR_GOOD: &str = "removal IN ('closed', 'merged', 'removed')";

/// The pull request's open preview, or a new one in the first free seat of `seats`; when
/// every seat is held, the preview pushed longest ago is evicted. `url` names a seat's
/// address for pull request `number`; `since` is when the asking job was queued (a close
/// after it means no preview).
pub async fn open(
    pool: &Store,
    project: &str,
    number: i64,
    since: i64,
    seats: u32,
    url: impl Fn(u32) -> String,
    now: i64,
) -> Result<Opened, StoreError> {
    let mut tx = pool.begin_write().await?;
    let closed: Option<Removal> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT removal FROM previews WHERE project = $1 AND number = $2 AND {FOR_GOOD} AND removed_at >= $3
         ORDER BY id DESC LIMIT 1"
    )))
    .bind(project)
    .bind(number)
    .bind(since)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(why) = closed {
        tx.commit().await?;
        return Ok(Opened::Closed(why));
    }
    // Each held preview, and whether a job of its pull request runs.
    let held: Vec<(Preview, bool)> = {
        let rows: Vec<Preview> = sqlx::query_as(select("project = $1 AND state <> 'removed' ORDER BY pushed_at, id"))
            .bind(project)
            .fetch_all(&mut *tx)
            .await?;
        let busy: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM previews WHERE project = $1 AND state <> 'removed' AND {JOB_RUNNING}"
        )))
        .bind(project)
        .fetch_all(&mut *tx)
        .await?;
        rows.into_iter()
            .map(|p| {
                let running = busy.contains(&p.id);
                (p, running)
            })
            .collect()
    };
    if let Some((own, _)) = held.iter().find(|(p, _)| p.number == number) {
        tx.commit().await?;
        return Ok(match own.state {
            PreviewState::Removing => Opened::RemoveFirst(own.clone()),
            _ => Opened::Ready(own.clone()),
        });
    }
    let free = (0..seats).find(|seat| held.iter().all(|(p, _)| p.seat != i64::from(*seat)));
    let Some(seat) = free else {
        // A preview on its way out frees a seat soonest; else the one pushed longest ago
        // is evicted. None whose pull request has a job deploying it.
        let idle = || held.iter().filter(|(_, busy)| !busy).map(|(p, _)| p);
        if let Some(leaving) = idle().find(|p| p.state == PreviewState::Removing) {
            tx.commit().await?;
            return Ok(Opened::RemoveFirst(leaving.clone()));
        }
        let Some(oldest) = idle().find(|p| p.state != PreviewState::Removing).cloned() else {
            tx.commit().await?;
            return Ok(Opened::Busy);
        };
        mark_removing(&mut tx, oldest.id, Removal::Evicted, now).await?;
        tx.commit().await?;
        return Ok(Opened::RemoveFirst(Preview {
            state: PreviewState::Removing,
            removal: Some(Removal::Evicted),
            ..oldest
        }));
    };
    let preview: Preview = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO previews (project, number, seat, state, url, created_at, pushed_at, version)
         VALUES ($1, $2, $3, 'deploying', $4, $5, $5, 0) RETURNING {COLUMNS}"
    )))
    .bind(project)
    .bind(number)
    .bind(i64::from(seat))
    .bind(url(seat))
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Opened::Ready(preview))
}

async fn mark_removing(conn: &mut AnyConnection, id: i64, why: Removal, now: i64) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE previews SET state = 'removing', removal = $2, removed_at = $3, version = version + 1,
             tell_attempts = 0, next_tell_at = 0
         WHERE id = $1 AND state IN ('deploying', 'live')",
    )
    .bind(id)
    .bind(why)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Inside the ingest's transaction: pull request `number` closed, so its preview (if one
/// is open) is to be removed. Whether there was one.
pub async fn close_in(
    conn: &mut AnyConnection,
    project: &str,
    number: i64,
    why: Removal,
    now: i64,
) -> Result<bool, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM previews WHERE project = $1 AND number = $2 AND state IN ('deploying', 'live')",
    )
    .bind(project)
    .bind(number)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = id {
        return mark_removing(conn, id, why, now).await;
    }
    // A job of the pull request running now must not open a preview after the close: it
    // finds this record (it serves nothing, and nobody is told of it).
    sqlx::query(
        "INSERT INTO previews (project, number, seat, state, url, removal, created_at, pushed_at, removed_at,
             version, told_version)
         SELECT $1, $2, 0, 'removed', '', $3, $4, $4, $4, 0, 0
         WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.project = $1 AND jobs.pull_request = $2
             AND jobs.state IN ('running', 'awaiting_approval'))",
    )
    .bind(project)
    .bind(number)
    .bind(why)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(false)
}

/// Asks for the removal of pull request `number`'s preview. Whether one was open.
pub async fn close(pool: &Store, project: &str, number: i64, why: Removal, now: i64) -> Result<bool, StoreError> {
    let mut tx = pool.begin_write().await?;
    let closed = close_in(&mut tx, project, number, why, now).await?;
    tx.commit().await?;
    Ok(closed)
}

/// The preview serves `sha` from `image`. `false` when it is being removed meanwhile (the
/// pull request closed while it deployed): nothing was changed.
pub async fn went_live(
    pool: &Store,
    id: i64,
    sha: &str,
    image: &str,
    job_id: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE previews SET state = 'live', sha = $2, image = $3, job_id = $4, pushed_at = $5,
             version = version + 1, tell_attempts = 0, next_tell_at = 0
         WHERE id = $1 AND state IN ('deploying', 'live') AND (job_id IS NULL OR job_id <= $4)",
    )
    .bind(id)
    .bind(sha)
    .bind(image)
    .bind(job_id)
    .bind(now)
    .execute(pool.db())
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// A preview whose first deploy failed serves nothing: it goes.
pub async fn never_served(pool: &Store, id: i64, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE previews SET state = 'removing', removal = 'failed', removed_at = $2, version = version + 1
         WHERE id = $1 AND state = 'deploying'",
    )
    .bind(id)
    .bind(now)
    .execute(pool.db())
    .await?;
    Ok(())
}

/// Its containers, route and images are gone.
pub async fn removed(pool: &Store, id: i64, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE previews SET state = 'removed', removed_at = COALESCE(removed_at, $2), version = version + 1,
             tell_attempts = 0, next_tell_at = 0
         WHERE id = $1 AND state = 'removing'",
    )
    .bind(id)
    .bind(now)
    .execute(pool.db())
    .await?;
    Ok(())
}

/// The project's open previews with no push since `cutoff` are to be removed; returns them.
pub async fn expire(pool: &Store, project: &str, cutoff: i64, now: i64) -> Result<Vec<Preview>, StoreError> {
    let mut tx = pool.begin_write().await?;
    let stale: Vec<Preview> = sqlx::query_as(select(
        "project = $1 AND state IN ('deploying', 'live') AND pushed_at < $2",
    ))
    .bind(project)
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    for preview in &stale {
        mark_removing(&mut tx, preview.id, Removal::Expired, now).await?;
    }
    tx.commit().await?;
    Ok(stale)
}

/// The project's open previews in seats `seats` no longer has (`max_previews` was
/// lowered) are to be removed.
pub async fn evict_beyond(pool: &Store, project: &str, seats: u32, now: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE previews SET state = 'removing', removal = 'evicted', removed_at = $3, version = version + 1
         WHERE project = $1 AND seat >= $2 AND state IN ('deploying', 'live')",
    )
    .bind(project)
    .bind(i64::from(seats))
    .bind(now)
    .execute(pool.db())
    .await?
    .rows_affected())
}

/// Previews in `states`, oldest first.
pub async fn in_states(pool: &Store, states: &[PreviewState]) -> Result<Vec<Preview>, StoreError> {
    let list = states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(
        sqlx::query_as(select(&format!("state IN ({list}) ORDER BY created_at, id")))
            .fetch_all(pool.db())
            .await?,
    )
}

/// What the dashboard lists: every open preview, then the `removed` most recently removed.
pub async fn list(pool: &Store, removed: i64) -> Result<Vec<Preview>, StoreError> {
    let mut open = in_states(
        pool,
        &[PreviewState::Deploying, PreviewState::Live, PreviewState::Removing],
    )
    .await?;
    // Not the records of pull requests closed before they had a preview (no address).
    let gone: Vec<Preview> = sqlx::query_as(select(
        "state = 'removed' AND url <> '' ORDER BY removed_at DESC, id DESC LIMIT $1",
    ))
    .bind(removed)
    .fetch_all(pool.db())
    .await?;
    open.extend(gone);
    Ok(open)
}

pub async fn get(pool: &Store, id: i64) -> Result<Option<Preview>, StoreError> {
    Ok(sqlx::query_as(select("id = $1"))
        .bind(id)
        .fetch_optional(pool.db())
        .await?)
}

/// Whether a job of the preview's pull request is running now (it may be putting a
/// version in the preview's slots).
pub async fn job_running(pool: &Store, id: i64) -> Result<bool, StoreError> {
    let running: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM previews WHERE id = $1 AND {JOB_RUNNING}"
    )))
    .bind(id)
    .fetch_optional(pool.db())
    .await?;
    Ok(running.is_some())
}

/// Previews still `deploying` whose pull request has no job left to finish them (the job
/// was cancelled, timed out or abandoned): they go, with their seats.
pub async fn abandon_unfinished(pool: &Store, now: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE previews SET state = 'removing', removal = 'failed', removed_at = $1, version = version + 1
         WHERE state = 'deploying' AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.project = previews.project
             AND jobs.pull_request = previews.number AND jobs.state IN ('queued', 'running', 'awaiting_approval'))",
    )
    .bind(now)
    .execute(pool.db())
    .await?
    .rows_affected())
}

/// Previews with changes GitHub has not heard of, due now.
pub async fn untold(pool: &Store, now: i64, limit: i64) -> Result<Vec<Preview>, StoreError> {
    Ok(sqlx::query_as(select(
        "told_version < version AND next_tell_at <= $1 ORDER BY next_tell_at, id LIMIT $2",
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(pool.db())
    .await?)
}

/// GitHub heard of `version`; `comment_id` is the pull request comment that says so.
pub async fn told(pool: &Store, id: i64, version: i64, comment_id: Option<i64>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE previews SET told_version = CASE WHEN told_version > $2 THEN told_version ELSE $2 END,
             comment_id = COALESCE($3, comment_id), tell_attempts = 0
         WHERE id = $1",
    )
    .bind(id)
    .bind(version)
    .bind(comment_id)
    .execute(pool.db())
    .await?;
    Ok(())
}

/// Telling GitHub failed; try again at `at`.
pub async fn tell_later(pool: &Store, id: i64, at: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE previews SET tell_attempts = tell_attempts + 1, next_tell_at = $2 WHERE id = $1")
        .bind(id)
        .bind(at)
        .execute(pool.db())
        .await?;
    Ok(())
}

/// The GitHub deployment of the preview's latest version (set inactive when it goes).
pub async fn set_github_deployment(
    pool: &Store,
    project: &str,
    number: i64,
    deployment: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE previews SET github_deployment_id = $3 WHERE project = $1 AND number = $2 AND state <> 'removed'",
    )
    .bind(project)
    .bind(number)
    .bind(deployment)
    .execute(pool.db())
    .await?;
    Ok(())
}

/// The GitHub deployment recorded for pull request `number`'s open preview.
pub async fn github_deployment(pool: &Store, project: &str, number: i64) -> Result<Option<i64>, StoreError> {
    let id: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT github_deployment_id FROM previews WHERE project = $1 AND number = $2 AND state <> 'removed'",
    )
    .bind(project)
    .bind(number)
    .fetch_optional(pool.db())
    .await?;
    Ok(id.flatten())
}

/// Pull request `number`'s preview as job `job_id` left it, if that job put it live.
pub async fn of_job(pool: &Store, project: &str, number: i64, job_id: i64) -> Result<Option<Preview>, StoreError> {
    Ok(sqlx::query_as(select(
        "project = $1 AND number = $2 AND job_id = $3 ORDER BY id DESC LIMIT 1",
    ))
    .bind(project)
    .bind(number)
    .bind(job_id)
    .fetch_optional(pool.db())
    .await?)
}
