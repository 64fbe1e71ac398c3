//! `queued → running`, and `running → running` under a new lease when the previous
//! worker's lease ran out (it crashed or lost the database).

use std::time::Duration;

use super::{Job, JobRow};
use crate::store::{Backend, Store, StoreError, duration_ms, postgres, sqlite};

/// What a claim binds: `$1` the owner, `$2` now, `$3` the lease in milliseconds, `$4` the
/// most attempts, `$5` the projects (a JSON list; NULL: any).
pub(in crate::store) struct Claim<'a> {
    pub owner: &'a str,
    pub now: i64,
    pub lease_ms: i64,
    pub max_attempts: i64,
    pub projects: Option<String>,
}

/// Whether `candidate` is runnable, besides its state and lease: attempts left, no cancel
/// asked, not held, of a project this runner may run (`projects`: the condition on
/// `candidate.project` that `$5` lists it). A deploy is runnable only while no other deploy
/// of its environment holds the environment (one running deploy per environment).
pub(in crate::store) fn runnable(projects: &str) -> String {
    format!(
        "candidate.attempts < $4
           AND NOT candidate.cancel_requested
           AND candidate.held_for IS NULL
           AND ($5 IS NULL OR {projects})
           AND NOT (candidate.kind = 'deploy' AND EXISTS (
               SELECT 1 FROM jobs AS busy
               WHERE busy.kind = 'deploy' AND busy.id <> candidate.id
                 AND busy.project = candidate.project AND busy.environment = candidate.environment
                 AND busy.state IN ('running', 'awaiting_approval')))"
    )
}

/// Claims the job that `next_runnable` (a query of its id) finds.
pub(in crate::store) fn claim_statement(next_runnable: &str) -> String {
    format!(
        "UPDATE jobs
         SET state = 'running', attempts = attempts + 1, lease_owner = $1, lease_expires_at = $2 + $3,
             started_at = coalesce(started_at, $2), updated_at = $2
         WHERE id = ({next_runnable})
         RETURNING {}",
        super::JOB_COLUMNS
    )
}

/// Atomically claims the oldest runnable job in one statement, so two workers (of this
/// runner or of another replica) can never hold the same job: queued, or running/awaiting
/// approval under a lease that ran out, with attempts left and no cancel asked, of a
/// project this runner may run (`projects`; `None`: all), and no other deploy of its
/// environment running. How each database finds it is in `sqlite::claim` and
/// `postgres::claim`.
pub async fn claim_next(
    pool: &Store,
    owner: &str,
    lease: Duration,
    max_attempts: u32,
    projects: Option<&[String]>,
    now: i64,
) -> Result<Option<Job>, StoreError> {
    let claim = Claim {
        owner,
        now,
        lease_ms: duration_ms(lease),
        max_attempts: i64::from(max_attempts),
        projects: projects.map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into())),
    };
    let claimed: Result<Option<JobRow>, sqlx::Error> = match pool.backend() {
        Backend::Sqlite => sqlite::claim::claim(pool.db(), &claim).await,
        Backend::Postgres => postgres::claim::claim(pool.db(), &claim).await,
    };
    match claimed {
        Ok(row) => row.map(Job::try_from).transpose(),
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(None),
        Err(error) => Err(error.into()),
    }
}
