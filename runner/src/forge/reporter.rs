//! Tells GitHub what happened to each job: a commit status for every job, and for
//! deploys a GitHub deployment with its statuses. It runs beside the workers, never in a
//! job's way: it reads what jobs recorded, sends it with retries and backoff, waits out
//! rate limits, and records what it could not send on the job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::check_run;
use crate::adapters::forge::{CommitState, DeploymentState, Forge, ForgeError, Forges, MAX_ANNOTATIONS_PER_REQUEST};
use crate::clock::Clock;
use crate::config::{Config, Project};
use crate::job::{JobKind, JobState, StepState, Trigger};
use crate::joblog::LogEvents;
use crate::metrics::Metrics;
use crate::pipeline::plan::Step;
use crate::store::deployments;
use crate::store::previews;
use crate::store::reports::{self, Unreported};

/// Without news, the reporter looks again this often.
const IDLE: Duration = Duration::from_secs(1);
/// After news of a job, the reporter waits this long for more before it looks.
const COALESCE: Duration = Duration::from_millis(200);
/// Attempts per state before the reporter gives up on telling GitHub about it.
const MAX_ATTEMPTS: i64 = 8;

pub struct Reporter {
    pool: crate::store::Store,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    events: LogEvents,
    forges: Arc<dyn Forges>,
    clients: HashMap<String, Arc<dyn Forge>>,
    /// GitHub deployments created for jobs whose id could not be recorded, by job id.
    created: HashMap<i64, i64>,
    /// Check runs created for jobs whose id could not be recorded, by job id.
    created_checks: HashMap<i64, i64>,
    /// A project whose GitHub asked us to wait is left alone until then.
    paused_until: HashMap<String, i64>,
    /// What a description may quote (a step's error) passes through this first.
    mask: crate::secrets::SecretMask,
    clock: Arc<dyn Clock>,
}

impl Reporter {
    pub fn new(
        pool: crate::store::Store,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        events: LogEvents,
        forges: Arc<dyn Forges>,
        mask: crate::secrets::SecretMask,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            pool,
            mask,
            clock,
            forges,
            config,
            metrics,
            events,
            clients: HashMap::new(),
            created: HashMap::new(),
            created_checks: HashMap::new(),
            paused_until: HashMap::new(),
        }
    }

    fn reporting_projects(&self) -> Vec<String> {
        self.config
            .projects
            .iter()
            .filter(|p| p.reports_to_forge())
            .map(|p| p.name.to_string())
            .collect()
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let projects = self.reporting_projects();
        if projects.is_empty() {
            return;
        }
        let mut events = self.events.subscribe();
        // Of several replicas, the one holding the reporter's lock reports; another takes
        // over when it dies (the server releases a dead session's lock).
        let mut reporting: Option<crate::store::locks::HeldLock> = None;
        loop {
            if let Some(lock) = &mut reporting
                && !lock.is_held().await
            {
                tracing::warn!("reporter: lost the reporter's lock");
                reporting = None;
            }
            if reporting.is_none() {
                match self.pool.try_lock(crate::store::locks::LockKind::Reporter, "").await {
                    Ok(lock) => reporting = lock,
                    Err(error) => tracing::warn!(%error, "reporter: cannot take the reporter's lock"),
                }
            }
            if reporting.is_some() {
                self.pass(&projects).await;
                self.tell_previews().await;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                _ = events.recv() => {
                    // Log lines of a busy job arrive in bursts: one pass answers a burst.
                    tokio::time::sleep(COALESCE).await;
                    while events.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(IDLE) => {}
            }
        }
    }

    /// Tells the forge what it has not heard yet, for the jobs due now.
    async fn pass(&mut self, projects: &[String]) {
        let now = self.clock.now_ms();
        if let Err(error) = reports::park_unreportable(&self.pool, projects, now).await {
            tracing::warn!(%error, "reporter: cannot set aside jobs of projects without GitHub");
        }
        match reports::due(&self.pool, projects, now, 20).await {
            Ok(jobs) => {
                for job in jobs {
                    self.report(&job).await;
                }
            }
            Err(error) => tracing::warn!(%error, "reporter: cannot read jobs to report"),
        }
    }

    async fn client(&mut self, project: &Project) -> Result<Arc<dyn Forge>, ForgeError> {
        if let Some(client) = self.clients.get(project.name.as_str()) {
            return Ok(Arc::clone(client));
        }
        let client = self.forges.connect(project).await.unwrap_or_else(|| {
            Err(ForgeError::Rejected {
                status: 0,
                message: "no credentials for the project's forge".into(),
            })
        })?;
        self.clients.insert(project.name.to_string(), Arc::clone(&client));
        Ok(client)
    }

    async fn report(&mut self, job: &Unreported) {
        let Some(project) = self.config.project(&job.project).cloned() else {
            self.record(
                job,
                reports::reported(
                    &self.pool,
                    job.id,
                    job.state,
                    job.steps_version,
                    Some("project no longer configured"),
                ),
            )
            .await;
            return;
        };
        let now = self.clock.now_ms();
        if let Some(until) = self
            .paused_until
            .get(job.project.as_str())
            .copied()
            .filter(|until| *until > now)
        {
            self.record(
                job,
                reports::retry_later(&self.pool, job.id, "waiting out GitHub's rate limit", until),
            )
            .await;
            return;
        }
        let outcome = async {
            let client = self.client(&project).await?;
            self.send(client.as_ref(), job).await
        }
        .await;
        let error = match outcome {
            Ok(()) => {
                self.record(
                    job,
                    reports::reported(&self.pool, job.id, job.state, job.steps_version, None),
                )
                .await;
                return;
            }
            Err(error) => error,
        };
        self.metrics.github_report_failures.inc(error_kind(&error), "");
        tracing::warn!(job_id = job.id, project = %job.project, %error, "could not report to the project's forge");
        let message = format!("reporting to the forge: {error}");
        let next = match &error {
            ForgeError::RateLimited { wait, .. } => {
                let until = now + crate::store::duration_ms(*wait);
                self.paused_until.insert(job.project.to_string(), until);
                Some(until)
            }
            ForgeError::Transient(_) if job.report_attempts + 1 < MAX_ATTEMPTS => {
                Some(now + backoff(job.report_attempts))
            }
            _ => None,
        };
        match next {
            Some(at) => {
                self.record(job, reports::retry_later(&self.pool, job.id, &message, at))
                    .await
            }
            // Refused, or tried enough: GitHub will not hear about this state.
            None => {
                self.record(
                    job,
                    reports::reported(&self.pool, job.id, job.state, job.steps_version, Some(&message)),
                )
                .await;
            }
        }
    }

    /// A bookkeeping write that fails leaves the job due: the reporter tells GitHub the
    /// same state again on its next pass, which GitHub takes as a no-op for statuses.
    async fn record(&self, job: &Unreported, write: impl Future<Output = Result<(), crate::store::StoreError>>) {
        if let Err(error) = write.await {
            tracing::warn!(job_id = job.id, %error, "reporter: cannot record what GitHub was told");
        }
    }

    async fn send(&mut self, client: &dyn Forge, job: &Unreported) -> Result<(), ForgeError> {
        let job_url = self
            .config
            .dashboard
            .public_url
            .as_ref()
            .map(|base| format!("{base}/jobs/{}", job.id));
        let context = self.config.github.job_context(job.kind, job.environment.as_str());
        // What is told depends on the steps: without them, nothing is told (and the job
        // stays due) rather than an empty story.
        let rows = crate::store::steps::list(&self.pool, job.id)
            .await
            .map_err(|error| ForgeError::Transient(format!("reading the job's steps: {error}")))?;
        if job.only_steps_changed() {
            self.report_checks(client, job, &rows, job_url.as_deref()).await?;
            let (_, text) = commit_status(job);
            return self
                .report_check_run(client, job, &rows, context, text, job_url.as_deref())
                .await;
        }
        // A job first seen already finished still shows GitHub the whole story.
        if job.reported_state.is_none() && job.state != JobState::Queued {
            client
                .commit_status(&job.sha, CommitState::Pending, &context, "queued", job_url.as_deref())
                .await?;
        }
        // A push whose every change `paths_ignore` names deploys nothing, and says so.
        let nothing_to_do = rows
            .iter()
            .find(|row| row.name == Step::Pipeline.name() && row.state == StepState::Skipped)
            .and_then(|row| row.error.clone())
            .filter(|_| job.state == JobState::Succeeded);
        let (state, text) = match &nothing_to_do {
            Some(reason) => (CommitState::Success, reason.clone()),
            None => commit_status(job),
        };
        let text = self.mask.masked(text);
        client
            .commit_status(&job.sha, state, &context, &text, job_url.as_deref())
            .await?;
        self.report_checks(client, job, &rows, job_url.as_deref()).await?;
        // A verify job that serves its pull request's preview deploys it, to `pr-<number>`.
        let preview = job.pull_request.filter(|_| {
            rows.iter().any(|row| {
                row.name == Step::Preview.name() && !matches!(row.state, StepState::Pending | StepState::Skipped)
            })
        });
        if (job.kind == JobKind::Deploy || preview.is_some())
            && nothing_to_do.is_none()
            && client.offers_deployments(&job.git_ref)
        {
            self.report_deployment(client, job, preview, &text, job_url.as_deref())
                .await?;
        }
        // Last: a check run GitHub refuses keeps nothing above from being told.
        self.report_check_run(client, job, &rows, context, text, job_url.as_deref())
            .await
    }

    /// A deploy is a GitHub deployment too, created once, with its statuses; so is a
    /// preview's (pull request `preview`), to its own transient environment.
    async fn report_deployment(
        &mut self,
        client: &dyn Forge,
        job: &Unreported,
        preview: Option<i64>,
        text: &str,
        job_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let environment = match preview {
            Some(number) => crate::config::PreviewSettings::environment_name(number),
            None => job.environment.to_string(),
        };
        let deployment = match job.github_deployment_id.or_else(|| self.created.get(&job.id).copied()) {
            Some(id) => id,
            None => {
                let what = match (job.trigger, preview) {
                    (_, Some(number)) => format!("preview of pull request #{number} by the runner (job {})", job.id),
                    (Trigger::Rollback, None) => format!("rollback by the runner (job {})", job.id),
                    (trigger, None) => format!("{trigger} deploy by the runner (job {})", job.id),
                };
                let id = client
                    .create_deployment(&job.sha, &job.git_ref, &environment, &what)
                    .await?;
                if let Err(error) = reports::set_deployment(&self.pool, job.id, id).await {
                    // Kept in memory instead: the next pass uses this id rather than
                    // creating a second deployment on GitHub.
                    tracing::warn!(job_id = job.id, %error, "reporter: cannot record the GitHub deployment's id");
                    self.created.insert(job.id, id);
                }
                id
            }
        };
        // GitHub shows it as a link: only a web address (a terraform output could be
        // `javascript:`).
        let recorded_url = match preview {
            Some(number) => previews::of_job(&self.pool, job.project.as_str(), number, job.id)
                .await
                .ok()
                .flatten()
                .map(|p| p.url),
            None => deployments::for_job(&self.pool, job.id)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.url),
        };
        let environment_url = recorded_url.filter(|url| crate::domain::is_web_url(url));
        if job.reported_state.is_none_or(|s| s == JobState::Queued) && job.state != JobState::Queued {
            client
                .deployment_status(deployment, DeploymentState::InProgress, "deploying", None, job_url)
                .await?;
        }
        let final_state = match job.state {
            JobState::Succeeded => Some(DeploymentState::Success),
            JobState::Failed => Some(DeploymentState::Failure),
            JobState::Cancelled | JobState::Superseded => Some(DeploymentState::Inactive),
            JobState::Queued | JobState::Running | JobState::AwaitingApproval => None,
        };
        if let Some(final_state) = final_state {
            client
                .deployment_status(
                    deployment,
                    final_state,
                    text,
                    environment_url
                        .as_deref()
                        .filter(|_| final_state == DeploymentState::Success),
                    job_url,
                )
                .await?;
        }
        if let Some(number) = preview
            && final_state == Some(DeploymentState::Success)
            && environment_url.is_some()
        {
            self.replace_preview_deployment(client, job, number, deployment).await;
        }
        Ok(())
    }
}

impl Reporter {
    /// The preview's earlier GitHub deployment (an earlier push's) is inactive once a
    /// newer one exists: GitHub does not do so itself for transient environments.
    async fn replace_preview_deployment(&self, client: &dyn Forge, job: &Unreported, number: i64, id: i64) {
        let earlier = previews::github_deployment(&self.pool, job.project.as_str(), number)
            .await
            .ok()
            .flatten();
        if let Some(earlier) = earlier.filter(|earlier| *earlier != id)
            && let Err(error) = client
                .deployment_status(
                    earlier,
                    DeploymentState::Inactive,
                    "replaced by a newer push",
                    None,
                    None,
                )
                .await
        {
            tracing::warn!(job_id = job.id, %error, "reporter: cannot set the preview's earlier deployment inactive");
        }
        if let Err(error) = previews::set_github_deployment(&self.pool, job.project.as_str(), number, id).await {
            tracing::warn!(job_id = job.id, %error, "reporter: cannot record the preview's GitHub deployment");
        }
    }

    /// Tells each pull request with a changed preview: one comment, edited as the preview
    /// changes, and the GitHub deployment inactive once the preview is gone.
    async fn tell_previews(&mut self) {
        let now = self.clock.now_ms();
        let untold = match previews::untold(&self.pool, now, 20).await {
            Ok(untold) => untold,
            Err(error) => {
                tracing::warn!(%error, "reporter: cannot read the previews to tell");
                return;
            }
        };
        for preview in untold {
            let Some(project) = self.config.project(&preview.project).cloned() else {
                let _ = previews::told(&self.pool, preview.id, preview.version, None).await;
                continue;
            };
            let told = async {
                let client = self.client(&project).await?;
                self.tell_preview(client.as_ref(), &preview).await
            }
            .await;
            let written = match told {
                Ok(comment_id) => previews::told(&self.pool, preview.id, preview.version, comment_id).await,
                Err(ForgeError::Transient(_) | ForgeError::RateLimited { .. })
                    if preview.tell_attempts + 1 < MAX_ATTEMPTS =>
                {
                    previews::tell_later(&self.pool, preview.id, now + backoff(preview.tell_attempts)).await
                }
                Err(error) => {
                    tracing::warn!(project = %preview.project, number = preview.number, %error, "reporter: GitHub will not hear of this preview change");
                    previews::told(&self.pool, preview.id, preview.version, None).await
                }
            };
            if let Err(error) = written {
                tracing::warn!(%error, "reporter: cannot record what GitHub was told of a preview");
            }
        }
    }

    /// Returns the comment's id when it was created now.
    async fn tell_preview(&self, client: &dyn Forge, preview: &previews::Preview) -> Result<Option<i64>, ForgeError> {
        if preview.state == crate::job::PreviewState::Removed
            && let Some(deployment) = preview.github_deployment_id
        {
            let why = preview.removal.map_or("removed", |r| r.describe());
            client
                .deployment_status(
                    deployment,
                    DeploymentState::Inactive,
                    &format!("preview removed: {why}"),
                    None,
                    None,
                )
                .await?;
        }
        let body = self
            .mask
            .masked(preview_comment(preview, self.config.dashboard.public_url.as_deref()));
        match preview.comment_id {
            Some(id) => client.edit_comment(preview.number, id, &body).await.map(|()| None),
            None => client.create_comment(preview.number, &body).await.map(Some),
        }
    }

    /// Each of the repository's own steps (from its `.runner.yml`) is a status context of
    /// its own, `<project>/<step>`, so branch protection can require it by name.
    async fn report_checks(
        &self,
        client: &dyn Forge,
        job: &Unreported,
        rows: &[crate::store::steps::Step],
        job_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        for row in rows.iter().filter(|row| !Step::BUILT_IN.contains(&row.name.as_str())) {
            let (state, text) = check_status(job.state, row);
            let text = self.mask.masked(text);
            let context = check_context(job, &row.name);
            let url = job_url.map(|url| format!("{url}#step-{}", row.name));
            match client
                .commit_status(&job.sha, state, &context, &text, url.as_deref())
                .await
            {
                Ok(()) => {}
                // One status GitHub refuses does not keep the job's own from being told.
                Err(ForgeError::Rejected { status, message }) => {
                    tracing::warn!(
                        job_id = job.id,
                        context,
                        status,
                        message,
                        "GitHub refused a step's status"
                    );
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl Reporter {
    /// Reporting as a GitHub App, the job is a check run too: created when first told
    /// (found again rather than made twice when an earlier creation's answer was lost),
    /// updated as it goes, and once it ended, given an annotation per failing test that
    /// names a file, [`MAX_ANNOTATIONS_PER_REQUEST`] per request after its conclusion,
    /// each batch recorded as sent. A check run GitHub refuses is logged and left: the
    /// job's statuses and deployment never wait on it.
    async fn report_check_run(
        &mut self,
        client: &dyn Forge,
        job: &Unreported,
        rows: &[crate::store::steps::Step],
        name: String,
        title: String,
        job_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        if !client.writes_check_runs() {
            return Ok(());
        }
        match self.send_check_run(client, job, rows, name, title, job_url).await {
            Err(ForgeError::Rejected { status, message }) => {
                tracing::warn!(job_id = job.id, status, message, "GitHub refused the job's check run");
                Ok(())
            }
            other => other,
        }
    }

    async fn send_check_run(
        &mut self,
        client: &dyn Forge,
        job: &Unreported,
        rows: &[crate::store::steps::Step],
        name: String,
        title: String,
        job_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let mut run = check_run::check_run(job, rows, name, self.mask.masked(title), job_url);
        run.summary = self.mask.masked(run.summary);
        let known = match job.check_run_id.or_else(|| self.created_checks.get(&job.id).copied()) {
            Some(id) => Some(id),
            None => client.find_check_run(&run).await?,
        };
        let id = match known {
            Some(id) => {
                client.update_check_run(id, &run).await?;
                id
            }
            None => client.create_check_run(&run).await?,
        };
        if job.check_run_id != Some(id)
            && let Err(error) = reports::set_check_run(&self.pool, job.id, id).await
        {
            // Kept in memory instead, so the next pass updates this check run.
            tracing::warn!(job_id = job.id, %error, "reporter: cannot record the check run's id");
            self.created_checks.insert(job.id, id);
        }
        if !job.state.is_terminal() {
            return Ok(());
        }
        let mut sent = usize::try_from(job.check_annotations_sent).unwrap_or(0);
        let annotations = check_run::annotations(rows, &self.mask);
        for batch in annotations
            .get(sent..)
            .unwrap_or_default()
            .chunks(MAX_ANNOTATIONS_PER_REQUEST)
        {
            run.annotations = batch.to_vec();
            match client.update_check_run(id, &run).await {
                Ok(()) => {}
                // One batch GitHub will not take is skipped, not retried for ever.
                Err(ForgeError::Rejected { status, message }) => {
                    tracing::warn!(
                        job_id = job.id,
                        status,
                        message,
                        "GitHub refused a batch of annotations"
                    );
                }
                Err(error) => return Err(error),
            }
            sent += batch.len();
            self.record_annotations(job, i64::try_from(sent).unwrap_or(i64::MAX))
                .await;
        }
        Ok(())
    }

    async fn record_annotations(&self, job: &Unreported, sent: i64) {
        if sent != job.check_annotations_sent {
            self.record(job, reports::set_annotations_sent(&self.pool, job.id, sent))
                .await;
        }
    }
}

/// A step's status context: `<project>/<step>` for a pull request's verify job (what
/// branch protection requires), `<project>/<step> (<environment>)` for a deploy's, so one
/// commit's deploys to several environments, and a pull request's verify of the same
/// commit, never overwrite each other's.
fn check_context(job: &Unreported, step: &str) -> String {
    match job.kind {
        JobKind::Verify => format!("{}/{step}", job.project),
        JobKind::Deploy => format!("{}/{step} ({})", job.project, job.environment),
    }
}

/// The commit status of one of the repository's steps, once its job is in `job_state`.
fn check_status(job_state: JobState, row: &crate::store::steps::Step) -> (CommitState, String) {
    let error = row.error.clone().unwrap_or_default();
    match row.state {
        StepState::Succeeded => (
            CommitState::Success,
            row.summary.clone().unwrap_or_else(|| "passed".into()),
        ),
        StepState::Skipped if job_state == JobState::Succeeded || !error.is_empty() => (
            CommitState::Success,
            if error.is_empty() {
                "skipped".into()
            } else {
                format!("skipped: {error}")
            },
        ),
        StepState::Failed => (CommitState::Failure, error),
        StepState::Cancelled => (CommitState::Error, "cancelled".into()),
        // Not reached: the job ended before it.
        StepState::Skipped => (CommitState::Error, "not run: an earlier step failed".into()),
        StepState::Pending | StepState::Running if job_state.is_terminal() => (CommitState::Error, "not run".into()),
        StepState::Pending => (CommitState::Pending, "waiting".into()),
        StepState::Running => (CommitState::Pending, "running".into()),
    }
}

/// The commit status of a job's state, and what it says.
fn commit_status(job: &Unreported) -> (CommitState, String) {
    let plan = job
        .plan_summary
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v["headline"].as_str().map(str::to_owned));
    match job.state {
        JobState::Queued => (CommitState::Pending, "queued".into()),
        JobState::Running => (CommitState::Pending, "running".into()),
        JobState::AwaitingApproval if job.held_for.is_some() => (
            CommitState::Pending,
            "waiting for an admin to approve running this pull request from a fork".into(),
        ),
        JobState::AwaitingApproval => (
            CommitState::Pending,
            format!("waiting for approval of the plan: {}", plan.unwrap_or_default()),
        ),
        JobState::Succeeded => (
            CommitState::Success,
            match (job.kind, plan) {
                (JobKind::Verify, Some(plan)) => format!("builds, passes its smoke test; plan: {plan}"),
                (JobKind::Verify, None) => "builds and passes its smoke test".into(),
                (JobKind::Deploy, _) => format!("deployed to {}", job.environment),
            },
        ),
        JobState::Failed => (
            CommitState::Failure,
            job.error.clone().unwrap_or_else(|| "failed".into()),
        ),
        JobState::Superseded => (
            CommitState::Error,
            job.superseded_by.map_or_else(
                || "superseded by a newer push".into(),
                |id| format!("superseded by job {id}"),
            ),
        ),
        JobState::Cancelled => (CommitState::Error, "cancelled".into()),
    }
}

/// The pull request comment of a preview: where it is and what it serves, or why it went.
fn preview_comment(preview: &previews::Preview, dashboard: Option<&str>) -> String {
    use crate::job::PreviewState;
    let environment = preview.environment();
    let mut text = format!("<!-- runner:preview {} -->\n", preview.environment());
    match preview.state {
        PreviewState::Live | PreviewState::Deploying => {
            let sha = preview.sha.as_deref().unwrap_or_default();
            text.push_str(&format!(
                "**Preview `{environment}`** is live at {}\n\nIt serves commit `{sha}`; each push to this pull request updates it.",
                preview.url
            ));
        }
        PreviewState::Removing | PreviewState::Removed => {
            let why = preview.removal.map_or("it was removed", |r| r.describe());
            text.push_str(&format!("**Preview `{environment}`** was removed: {why}."));
        }
    }
    if let (Some(base), Some(job)) = (dashboard, preview.job_id) {
        text.push_str(&format!("\n\n[Job {job}]({base}/jobs/{job})"));
    }
    text
}

fn backoff(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.clamp(0, 8)).unwrap_or(8);
    (500_i64 * 2_i64.pow(exponent)).min(300_000)
}

fn error_kind(error: &ForgeError) -> &'static str {
    match error {
        ForgeError::Transient(_) => "transient",
        ForgeError::RateLimited { .. } => "rate_limited",
        ForgeError::Rejected { .. } => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, PoisonError};

    use super::*;
    use crate::adapters::forge::{CheckRun, HookDelivery};
    use crate::domain::{CommitSha, GitRef, Name};
    use crate::job::{JobState, Trigger};
    use crate::store::jobs::{self, NewJob};
    use crate::store::now_ms;

    /// A forge that keeps what it is told.
    #[derive(Default)]
    struct FakeForge {
        told: Mutex<Vec<String>>,
        /// Statuses by context, in the order told: `context state text`.
        statuses: Mutex<Vec<String>>,
        /// Writes check runs (as a GitHub App does).
        app: bool,
        /// Check run requests in order: `None` creates, `Some(id)` updates.
        check_runs: Mutex<Vec<(Option<i64>, CheckRun)>>,
        /// The check run update of this index (counting from 0) fails once.
        fail_update: Mutex<Option<usize>>,
        /// Every check run request is refused (an App without the Checks permission).
        refuse_check_runs: bool,
    }

    impl FakeForge {
        fn say(&self, what: String) {
            self.told.lock().unwrap_or_else(PoisonError::into_inner).push(what);
        }

        fn told(&self) -> Vec<String> {
            self.told.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }
    }

    #[async_trait::async_trait]
    impl Forge for FakeForge {
        async fn commit_status(
            &self,
            _sha: &str,
            state: CommitState,
            context: &str,
            text: &str,
            _target_url: Option<&str>,
        ) -> Result<(), ForgeError> {
            self.statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{context} {} {text}", state.as_str()));
            if context.starts_with("app/") {
                return Ok(());
            }
            self.say(format!("status {} {text}", state.as_str()));
            Ok(())
        }

        async fn create_deployment(
            &self,
            _sha: &str,
            _git_ref: &str,
            environment: &str,
            _text: &str,
        ) -> Result<i64, ForgeError> {
            self.say(format!("deployment to {environment}"));
            Ok(99)
        }

        async fn deployment_status(
            &self,
            deployment: i64,
            state: DeploymentState,
            _text: &str,
            _environment_url: Option<&str>,
            _log_url: Option<&str>,
        ) -> Result<(), ForgeError> {
            self.say(format!("deployment {deployment} {}", state.as_str()));
            Ok(())
        }

        async fn hook_deliveries(&self, _: i64, _: Option<i64>, _: usize) -> Result<Vec<HookDelivery>, ForgeError> {
            Ok(Vec::new())
        }

        async fn redeliver(&self, _: i64, _: i64) -> Result<(), ForgeError> {
            Ok(())
        }

        async fn branch_head(&self, _: &str) -> Result<String, ForgeError> {
            Ok("0".repeat(40))
        }

        fn writes_check_runs(&self) -> bool {
            self.app
        }

        async fn create_check_run(&self, run: &CheckRun) -> Result<i64, ForgeError> {
            if self.refuse_check_runs {
                return Err(ForgeError::Rejected {
                    status: 403,
                    message: "Resource not accessible by integration".into(),
                });
            }
            self.check_runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((None, run.clone()));
            Ok(7)
        }

        async fn update_check_run(&self, id: i64, run: &CheckRun) -> Result<(), ForgeError> {
            let mut runs = self.check_runs.lock().unwrap_or_else(PoisonError::into_inner);
            let updates = runs.iter().filter(|(id, _)| id.is_some()).count();
            let mut fail = self.fail_update.lock().unwrap_or_else(PoisonError::into_inner);
            if *fail == Some(updates) {
                *fail = None;
                return Err(ForgeError::Transient("502 Bad Gateway".into()));
            }
            runs.push((Some(id), run.clone()));
            Ok(())
        }
    }

    /// Every project's forge is the one fake.
    struct OneForge(Arc<dyn Forge>);

    #[async_trait::async_trait]
    impl Forges for OneForge {
        async fn connect(&self, _: &crate::config::Project) -> Option<Result<Arc<dyn Forge>, ForgeError>> {
            Some(Ok(Arc::clone(&self.0)))
        }
    }

    /// A reporter of project `app` (deploying `main` to `production`) telling `forge`.
    async fn reporter(dir: &std::path::Path, forge: &Arc<FakeForge>) -> (Reporter, crate::store::Store, Vec<String>) {
        let toml = format!(
            "[server]\ndatabase_url = \"sqlite://{}\"\n[[projects]]\nname = \"app\"\nrepository = \"o/app\"\n\
             deploy_branches = [\"main\"]\nwebhook_secret_env = \"S\"\n[projects.github]\ntoken_env = \"T\"\n",
            dir.join("runner.db").display()
        );
        let env = |name: &str| matches!(name, "S" | "T").then(|| "a-secret-value".to_owned());
        let config = Arc::new(Config::parse(&toml, &dir.join("runner.toml"), &env).expect("config"));
        let pool = crate::store::open(&config.server.database_url).await.expect("database");
        let reporter = Reporter::new(
            pool.clone(),
            Arc::clone(&config),
            Arc::default(),
            LogEvents::default(),
            Arc::new(OneForge(Arc::clone(forge) as Arc<dyn Forge>)),
            crate::secrets::SecretSet::default().mask(),
            Arc::new(crate::clock::SystemClock),
        );
        let projects = reporter.reporting_projects();
        (reporter, pool, projects)
    }

    fn push_of(sha: char) -> NewJob {
        NewJob::deploy(
            Name::parse("app").expect("name"),
            Name::parse("production").expect("name"),
            Trigger::Push,
            GitRef::parse("refs/heads/main").expect("ref"),
            CommitSha::parse(&sha.to_string().repeat(40)).expect("sha"),
            now_ms(),
        )
    }

    /// A push of `sha` queued, claimed, with the runner's own steps laid out.
    async fn running_deploy(pool: &crate::store::Store, sha: char) -> crate::domain::JobId {
        jobs::enqueue_now(pool, &push_of(sha), now_ms()).await.expect("enqueue");
        let claimed = jobs::claim_next(pool, "w", Duration::from_secs(60), 3, None, now_ms())
            .await
            .expect("claim")
            .expect("a job");
        crate::store::steps::plan(pool, claimed.id.get(), &["checkout", "build", "smoke"])
            .await
            .expect("plan");
        claimed.id
    }

    #[tokio::test]
    async fn a_job_is_one_check_run_whose_failing_tests_are_annotated_fifty_at_a_time_and_never_twice() {
        use crate::adapters::forge::{CheckConclusion, CheckStatus};
        use crate::runfile::junit::{FailedTest, FailureKind};
        use crate::store::steps;
        let dir = tempfile::tempdir().expect("temporary directory");
        let forge = Arc::new(FakeForge {
            app: true,
            // The second update (the first batch of annotations, after the conclusion) fails
            // once.
            fail_update: Mutex::new(Some(1)),
            ..FakeForge::default()
        });
        let (mut reporter, pool, projects) = reporter(dir.path(), &forge).await;
        let id = running_deploy(&pool, 'a').await;
        reporter.pass(&projects).await;
        steps::insert_after(&pool, id.get(), "build", &["unit"])
            .await
            .expect("rows");
        let failures: Vec<FailedTest> = (1..=121)
            .map(|n| FailedTest {
                suite: "suite".into(),
                name: format!("case_{n}"),
                classname: "tests::app".into(),
                kind: FailureKind::Failed,
                message: format!("assertion failed: {n} | <b>"),
                // The last names no file: listed in the summary, not annotated.
                file: (n <= 120).then(|| "/checkout/tests/app.rs".to_owned()),
                line: Some(n),
            })
            .collect();
        let now = now_ms();
        steps::set_state(
            &pool,
            id.get(),
            "unit",
            StepState::Failed,
            Some("0 passed, 121 failed"),
            now,
        )
        .await
        .expect("state");
        steps::set_summary(&pool, id.get(), "unit", "0 passed, 121 failed", &failures)
            .await
            .expect("summary");
        jobs::finish(
            &pool,
            id,
            "w",
            JobState::Failed,
            Some("unit: 0 passed, 121 failed"),
            now,
        )
        .await
        .expect("finish");
        reporter.pass(&projects).await;
        // Due again at once, after the failed update.
        reports::retry_later(&pool, id.get(), "again", 0).await.expect("due");
        reporter.pass(&projects).await;
        reporter.pass(&projects).await;

        let runs = forge.check_runs.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (created, first) = &runs[0];
        assert_eq!(*created, None, "created while running");
        assert_eq!(first.status, CheckStatus::InProgress);
        assert_eq!(first.external_id, id.get().to_string());
        assert_eq!(first.name, "runner/deploy (production)");
        assert!(
            runs[1..].iter().all(|(update, _)| *update == Some(7)),
            "then only updated: {runs:?}"
        );
        let last = &runs.last().expect("a run").1;
        assert_eq!(last.status, CheckStatus::Completed(CheckConclusion::Failure));
        assert!(last.summary.contains("| unit | failed |"), "{}", last.summary);
        assert!(
            last.summary
                .contains("- `tests::app::case_1`: `assertion failed: 1 \\| <b>`")
                && last.summary.contains("- … and 71 more"),
            "{}",
            last.summary
        );
        let batches: Vec<usize> = runs
            .iter()
            .map(|(_, run)| run.annotations.len())
            .filter(|n| *n > 0)
            .collect();
        assert_eq!(batches, [50, 50, 20], "fifty at a time, none sent twice");
        let annotated: Vec<u32> = runs
            .iter()
            .flat_map(|(_, run)| run.annotations.iter().map(|a| a.line))
            .collect();
        assert_eq!(annotated, (1..=120).collect::<Vec<u32>>());
        let first_annotation = &runs
            .iter()
            .find(|(_, run)| !run.annotations.is_empty())
            .expect("annotations")
            .1
            .annotations[0];
        assert_eq!(first_annotation.path, "tests/app.rs");
        assert_eq!(first_annotation.title, "unit: tests::app::case_1");
    }

    #[tokio::test]
    async fn a_check_run_github_refuses_keeps_nothing_else_from_being_told() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let forge = Arc::new(FakeForge {
            app: true,
            refuse_check_runs: true,
            ..FakeForge::default()
        });
        let (mut reporter, pool, projects) = reporter(dir.path(), &forge).await;
        let id = running_deploy(&pool, 'c').await;
        reporter.pass(&projects).await;
        jobs::finish(&pool, id, "w", JobState::Succeeded, None, now_ms())
            .await
            .expect("finish");
        reporter.pass(&projects).await;
        reporter.pass(&projects).await;
        assert_eq!(
            forge.told(),
            [
                "status pending queued",
                "status pending running",
                "deployment to production",
                "deployment 99 in_progress",
                "status success deployed to production",
                "deployment 99 success",
            ],
        );
    }

    #[tokio::test]
    async fn a_token_that_cannot_write_check_runs_is_never_asked_to() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let forge = Arc::new(FakeForge::default());
        let (mut reporter, pool, projects) = reporter(dir.path(), &forge).await;
        running_deploy(&pool, 'b').await;
        reporter.pass(&projects).await;
        assert!(forge.told().contains(&"status pending running".to_owned()));
        assert!(
            forge
                .check_runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_deploy_is_told_as_it_happens_with_one_forge_deployment() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let forge = Arc::new(FakeForge::default());
        let (mut reporter, pool, projects) = reporter(dir.path(), &forge).await;
        let job = NewJob::deploy(
            Name::parse("app").expect("name"),
            Name::parse("production").expect("name"),
            Trigger::Push,
            GitRef::parse("refs/heads/main").expect("ref"),
            CommitSha::parse(&"a".repeat(40)).expect("sha"),
            now_ms(),
        );
        jobs::enqueue_now(&pool, &job, now_ms()).await.expect("enqueue");
        reporter.pass(&projects).await;
        let claimed = jobs::claim_next(&pool, "w", Duration::from_secs(60), 3, None, now_ms())
            .await
            .expect("claim")
            .expect("a job");
        reporter.pass(&projects).await;
        jobs::finish(&pool, claimed.id, "w", JobState::Succeeded, None, now_ms())
            .await
            .expect("finish");
        reporter.pass(&projects).await;
        reporter.pass(&projects).await;

        assert_eq!(
            forge.told(),
            [
                "status pending queued",
                "deployment to production",
                "status pending running",
                "deployment 99 in_progress",
                "status success deployed to production",
                "deployment 99 success",
            ],
            "each state once, one forge deployment, nothing told twice"
        );
    }

    #[tokio::test]
    async fn each_of_a_repositorys_steps_is_a_status_of_its_own_and_a_push_of_ignored_files_deploys_nothing() {
        use crate::store::steps;
        let dir = tempfile::tempdir().expect("temporary directory");
        let forge = Arc::new(FakeForge::default());
        let (mut reporter, pool, projects) = reporter(dir.path(), &forge).await;

        // A job whose steps passed, were skipped, and failed.
        let id = running_deploy(&pool, 'a').await;
        steps::insert_after(&pool, id.get(), "build", &["unit", "lint", "e2e"])
            .await
            .expect("rows");
        let now = now_ms();
        steps::set_state(&pool, id.get(), "unit", StepState::Succeeded, None, now)
            .await
            .expect("state");
        steps::set_summary(&pool, id.get(), "unit", "212 passed, 0 failed", &[])
            .await
            .expect("summary");
        steps::set_state(
            &pool,
            id.get(),
            "lint",
            StepState::Skipped,
            Some("branch main is not in when.branch [release]"),
            now,
        )
        .await
        .expect("state");
        steps::set_state(
            &pool,
            id.get(),
            "e2e",
            StepState::Failed,
            Some("e2e failed: 1 passed, 1 failed"),
            now,
        )
        .await
        .expect("state");
        jobs::finish(
            &pool,
            id,
            "w",
            JobState::Failed,
            Some("e2e failed: 1 passed, 1 failed"),
            now,
        )
        .await
        .expect("finish");
        reporter.pass(&projects).await;
        let statuses = forge.statuses.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let of_steps: Vec<&String> = statuses.iter().filter(|s| s.starts_with("app/")).collect();
        assert_eq!(
            of_steps,
            [
                "app/unit (production) success 212 passed, 0 failed",
                "app/lint (production) success skipped: branch main is not in when.branch [release]",
                "app/e2e (production) failure e2e failed: 1 passed, 1 failed",
            ],
            "one status per step of the repository's, under <project>/<step>; none for the runner's own"
        );

        // A push of ignored files only: success saying so, and no forge deployment.
        let told_before = forge.told().len();
        let id = running_deploy(&pool, 'b').await;
        steps::insert_after(&pool, id.get(), "checkout", &["pipeline"])
            .await
            .expect("rows");
        let reason = "every changed file matches .runner.yml's paths_ignore: nothing to build or deploy";
        steps::set_state(&pool, id.get(), "pipeline", StepState::Skipped, Some(reason), now_ms())
            .await
            .expect("state");
        jobs::finish(&pool, id, "w", JobState::Succeeded, None, now_ms())
            .await
            .expect("finish");
        reporter.pass(&projects).await;
        let told = forge.told();
        assert_eq!(
            told[told_before..],
            ["status pending queued".to_owned(), format!("status success {reason}"),],
            "no forge deployment for a job that deployed nothing"
        );
    }

    #[tokio::test]
    async fn a_running_jobs_steps_are_told_as_they_change_without_telling_the_job_again() {
        use crate::store::{reports, steps};
        let dir = tempfile::tempdir().expect("temporary directory");
        let forge = Arc::new(FakeForge::default());
        let (mut reporter, pool, projects) = reporter(dir.path(), &forge).await;
        let id = running_deploy(&pool, 'c').await.get();
        reporter.pass(&projects).await;
        let told = forge.told();
        let step_statuses = || -> Vec<String> {
            forge
                .statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|s| s.starts_with("app/"))
                .cloned()
                .collect()
        };
        assert!(step_statuses().is_empty());

        // The repository's steps appear, then one runs: each change is told, the job's own
        // status and deployment are not told again.
        steps::insert_after(&pool, id, "build", &["unit"]).await.expect("rows");
        reports::steps_changed(&pool, id).await.expect("changed");
        reporter.pass(&projects).await;
        steps::set_state(&pool, id, "unit", StepState::Running, None, now_ms())
            .await
            .expect("state");
        reports::steps_changed(&pool, id).await.expect("changed");
        reporter.pass(&projects).await;
        reporter.pass(&projects).await;
        assert_eq!(
            step_statuses(),
            [
                "app/unit (production) pending waiting",
                "app/unit (production) pending running"
            ],
            "each change once"
        );
        assert_eq!(forge.told(), told, "nothing else told again");
    }
}
