//! `(nothing) → queued` (or `awaiting_approval`, held, for a fork's pull request), and
//! `queued → superseded` for older deploys of the same environment.

use sqlx::AnyConnection;

use crate::domain::{CommitSha, GitRef, JobId, Name};
use crate::job::{JobKind, Trigger};
use crate::store::{Store, StoreError, Values};

#[derive(Debug, Clone)]
pub struct NewJob {
    pub project: Name,
    pub environment: Name,
    pub kind: JobKind,
    pub trigger: Trigger,
    pub git_ref: GitRef,
    pub sha: CommitSha,
    pub pull_request: Option<i64>,
    pub delivery_id: Option<String>,
    pub commit_message: Option<String>,
    pub commit_author: Option<String>,
    /// Orders deploys of one environment (GitHub's push time when known, else now).
    pub ordering_key: i64,
    /// For a rollback: the deployment whose image goes live again.
    pub rollback_of: Option<i64>,
    /// A fork's pull request: queued held, nothing runs until an admin approves it.
    pub held_for_approval: bool,
    /// What the commit is compared with for its changed files: a push's `before`, a pull
    /// request's base commit; `None` when unknown (a new branch).
    pub base_sha: Option<CommitSha>,
    /// A pull request's base branch (a short name).
    pub base_branch: Option<String>,
}

impl NewJob {
    /// A deploy of `sha` (on `git_ref`) to `environment`: a push, a redeploy, a
    /// reconciled missed push, a replayed delivery.
    pub fn deploy(
        project: Name,
        environment: Name,
        trigger: Trigger,
        git_ref: GitRef,
        sha: CommitSha,
        ordering_key: i64,
    ) -> Self {
        Self {
            project,
            environment,
            kind: JobKind::Deploy,
            trigger,
            git_ref,
            sha,
            pull_request: None,
            delivery_id: None,
            commit_message: None,
            commit_author: None,
            ordering_key,
            rollback_of: None,
            held_for_approval: false,
            base_sha: None,
            base_branch: None,
        }
    }

    /// A deploy of the image of deployment `deployment_id`: a rollback, or a promotion
    /// into another environment, ordered as asked at `now`.
    pub fn redelivery(
        project: Name,
        environment: Name,
        trigger: Trigger,
        git_ref: GitRef,
        sha: CommitSha,
        deployment_id: i64,
        now: i64,
    ) -> Self {
        Self {
            rollback_of: Some(deployment_id),
            ..Self::deploy(project, environment, trigger, git_ref, sha, now)
        }
    }

    /// Pull request `number`'s verify job for its head `sha` (`git_ref`).
    pub fn verify(
        project: Name,
        environment: Name,
        number: i64,
        git_ref: GitRef,
        sha: CommitSha,
        ordering_key: i64,
    ) -> Self {
        Self {
            kind: JobKind::Verify,
            trigger: Trigger::PullRequest,
            pull_request: Some(number),
            ..Self::deploy(project, environment, Trigger::PullRequest, git_ref, sha, ordering_key)
        }
    }

    /// The webhook delivery that asked for it.
    pub fn from_delivery(mut self, delivery_id: &str) -> Self {
        self.delivery_id = Some(delivery_id.to_owned());
        self
    }

    /// What the commit says of itself, for pages and statuses.
    pub fn described(mut self, message: Option<String>, author: Option<String>) -> Self {
        self.commit_message = message;
        self.commit_author = author;
        self
    }

    /// Compared with `base_sha` (and, for a pull request, its base branch).
    pub fn based_on(mut self, base_sha: Option<CommitSha>, base_branch: Option<String>) -> Self {
        self.base_sha = base_sha;
        self.base_branch = base_branch;
        self
    }

    /// Queued held until an admin approves it (a fork's pull request).
    pub fn held(mut self, held: bool) -> Self {
        self.held_for_approval = held;
        self
    }
}

/// Inserts the job inside the caller's transaction. For a deploy, the trigger
/// `jobs_supersede_older_deploys` (migrations/) then supersedes every queued deploy of the
/// same environment that is older by `ordering_key`; if a newer one is already queued
/// (deliveries can arrive out of order), the new job itself is recorded as superseded, so
/// deploys never go live out of push order and nothing is silently dropped. A superseded
/// deploy's `superseded_by` names the deploy that replaced it when it was superseded (the
/// newest queued then), on both databases and however many jobs one statement inserts.
/// On SQLite the trigger `jobs_link_delivery` records the job on its delivery; on
/// PostgreSQL ingest writes the delivery already naming its job (see
/// `deliveries::Recorder::record_batch`).
pub async fn enqueue(conn: &mut AnyConnection, job: &NewJob, now: i64) -> Result<JobId, StoreError> {
    let mut insert = Values::new("");
    push_insert(&mut insert, [job], now);
    insert.push(" RETURNING id");
    let id: i64 = insert.build_scalar().fetch_one(&mut *conn).await?;
    JobId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Appends `INSERT INTO jobs ... VALUES` with one row per job, each queued at `now`: the
/// one statement that queues jobs, alone (`enqueue`) or as part of a webhook batch. The
/// triggers described on `enqueue` run for each row, in order.
pub fn push_insert<'j>(insert: &mut Values, jobs: impl IntoIterator<Item = &'j NewJob>, now: i64) {
    push_rows(insert, false, jobs.into_iter().map(|job| (None, job)), now);
}

/// The same, each job under the id given with it, taken from the jobs' id sequence
/// beforehand (PostgreSQL), so that what refers to a job can be written with it.
pub fn push_insert_numbered<'j>(insert: &mut Values, jobs: impl IntoIterator<Item = (i64, &'j NewJob)>, now: i64) {
    push_rows(insert, true, jobs.into_iter().map(|(id, job)| (Some(id), job)), now);
}

fn push_rows<'j>(insert: &mut Values, numbered: bool, jobs: impl Iterator<Item = (Option<i64>, &'j NewJob)>, now: i64) {
    insert.push(if numbered {
        "INSERT INTO jobs (id, "
    } else {
        "INSERT INTO jobs ("
    });
    insert.push(
        "project, environment, kind, trigger, state, git_ref, sha, pull_request, ordering_key, \
         delivery_id, commit_message, commit_author, rollback_of, held_for, base_sha, base_branch, created_at, \
         updated_at) ",
    );
    insert.rows(jobs, |row, (id, job)| {
        if let Some(id) = id {
            row.bind(id);
        }
        row.bind(job.project.to_string())
            .bind(job.environment.to_string())
            .bind(job.kind.as_str())
            .bind(job.trigger.as_str())
            .bind(if job.held_for_approval {
                "awaiting_approval"
            } else {
                "queued"
            })
            .bind(job.git_ref.to_string())
            .bind(job.sha.to_string())
            .bind(job.pull_request)
            .bind(job.ordering_key)
            .bind(job.delivery_id.clone())
            .bind(job.commit_message.clone())
            .bind(job.commit_author.clone())
            .bind(job.rollback_of)
            .bind(job.held_for_approval.then_some("fork"))
            .bind(job.base_sha.as_ref().map(ToString::to_string))
            .bind(job.base_branch.clone())
            .bind(now)
            .bind(now);
    });
}

/// Queues a job in its own transaction (actions from the API, not webhook deliveries).
pub async fn enqueue_now(pool: &Store, job: &NewJob, now: i64) -> Result<JobId, StoreError> {
    let mut tx = pool.begin_write().await?;
    let id = enqueue(&mut tx, job, now).await?;
    tx.commit().await?;
    Ok(id)
}
