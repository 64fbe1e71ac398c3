//! Tells GitHub what happened to each job: a commit status for every job, and for
//! deploys a GitHub deployment with its statuses. It runs beside the workers, never in a
//! job's way: it reads what jobs recorded, sends it with retries and backoff, waits out
//! rate limits, and records what it could not send on the job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::github::GitHub;
use super::{CommitState, DeploymentState, ForgeError};
use crate::config::{Config, Project};
use crate::metrics::Metrics;
use crate::pipeline::joblog::LogEvents;
use crate::store::reports::{self, Unreported};
use crate::store::{deployments, now_ms};

/// Without news, the reporter looks again this often.
const IDLE: Duration = Duration::from_secs(1);
/// After news of a job, the reporter waits this long for more before it looks.
const COALESCE: Duration = Duration::from_millis(200);
/// Attempts per state before the reporter gives up on telling GitHub about it.
const MAX_ATTEMPTS: i64 = 8;

pub struct Reporter {
    pool: sqlx::SqlitePool,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    events: LogEvents,
    clients: HashMap<String, GitHub>,
    /// A project whose GitHub asked us to wait is left alone until then.
    paused_until: HashMap<String, i64>,
    /// What a description may quote (a step's error) passes through this first.
    mask: crate::secrets::SecretMask,
}

impl Reporter {
    pub fn new(
        pool: sqlx::SqlitePool,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        events: LogEvents,
        mask: crate::secrets::SecretMask,
    ) -> Self {
        Self {
            pool,
            mask,
            config,
            metrics,
            events,
            clients: HashMap::new(),
            paused_until: HashMap::new(),
        }
    }

    fn reporting_projects(&self) -> Vec<String> {
        self.config
            .projects
            .iter()
            .filter(|p| p.github.is_some())
            .map(|p| p.name.to_string())
            .collect()
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let projects = self.reporting_projects();
        if projects.is_empty() {
            return;
        }
        let mut events = self.events.subscribe();
        loop {
            let now = now_ms();
            if let Err(error) = reports::park_unreportable(&self.pool, &projects, now).await {
                tracing::warn!(%error, "reporter: cannot set aside jobs of projects without GitHub");
            }
            match reports::due(&self.pool, &projects, now, 20).await {
                Ok(jobs) => {
                    for job in jobs {
                        self.report(&job).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "reporter: cannot read jobs to report"),
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

    async fn client(&mut self, project: &Project) -> Result<GitHub, ForgeError> {
        if let Some(client) = self.clients.get(project.name.as_str()) {
            return Ok(client.clone());
        }
        let Some(settings) = &project.github else {
            return Err(ForgeError::Rejected {
                status: 0,
                message: "no GitHub credentials".into(),
            });
        };
        let client = GitHub::connect(&self.config.github.api_url, &settings.auth, project.repository.clone()).await?;
        self.clients.insert(project.name.to_string(), client.clone());
        Ok(client)
    }

    async fn report(&mut self, job: &Unreported) {
        let Some(project) = self.config.project(&job.project).cloned() else {
            let _ = reports::reported(&self.pool, job.id, &job.state, Some("project no longer configured")).await;
            return;
        };
        let now = now_ms();
        if self.paused_until.get(&job.project).is_some_and(|until| *until > now) {
            let until = self.paused_until[&job.project];
            let _ = reports::retry_later(&self.pool, job.id, "waiting out GitHub's rate limit", until).await;
            return;
        }
        let outcome = async {
            let client = self.client(&project).await?;
            self.send(&client, &project, job).await
        }
        .await;
        match outcome {
            Ok(()) => {
                let _ = reports::reported(&self.pool, job.id, &job.state, None).await;
            }
            Err(error) => {
                self.metrics.github_report_failures.inc(error_kind(&error), "");
                tracing::warn!(job_id = job.id, project = %job.project, %error, "could not report to GitHub");
                let message = format!("reporting to GitHub: {error}");
                let next = match &error {
                    ForgeError::RateLimited { wait, .. } => {
                        let until = now + crate::store::duration_ms(*wait);
                        self.paused_until.insert(job.project.clone(), until);
                        Some(until)
                    }
                    ForgeError::Transient(_) if job.report_attempts + 1 < MAX_ATTEMPTS => {
                        Some(now + backoff(job.report_attempts))
                    }
                    _ => None,
                };
                let _ = match next {
                    Some(at) => reports::retry_later(&self.pool, job.id, &message, at).await,
                    // Refused, or tried enough: GitHub will not hear about this state.
                    None => reports::reported(&self.pool, job.id, &job.state, Some(&message)).await,
                };
            }
        }
    }

    async fn send(&self, client: &GitHub, project: &Project, job: &Unreported) -> Result<(), ForgeError> {
        let job_url = self
            .config
            .dashboard
            .public_url
            .as_ref()
            .map(|base| format!("{base}/jobs/{}", job.id));
        let context = format!(
            "{}/{} ({})",
            self.config.github.status_context, job.kind, job.environment
        );
        let is_deploy = job.kind == "deploy";
        // A job first seen already finished still shows GitHub the whole story.
        if job.reported_state.is_none() && job.state != "queued" {
            client
                .commit_status(&job.sha, CommitState::Pending, &context, "queued", job_url.as_deref())
                .await?;
        }
        let (state, text) = commit_status(job);
        let text = self.mask.masked(text);
        client
            .commit_status(&job.sha, state, &context, &text, job_url.as_deref())
            .await?;
        if !is_deploy {
            return Ok(());
        }
        let deployment = match job.github_deployment_id {
            Some(id) => id,
            None => {
                let what = match job.trigger.as_str() {
                    "rollback" => format!("rollback by the runner (job {})", job.id),
                    trigger => format!("{trigger} deploy by the runner (job {})", job.id),
                };
                let id = client
                    .create_deployment(&job.sha, project.environment.as_str(), &what)
                    .await?;
                let _ = reports::set_deployment(&self.pool, job.id, id).await;
                id
            }
        };
        let environment_url = match deployments::for_job(&self.pool, job.id).await {
            Ok(Some(d)) => d.url,
            _ => None,
        };
        if job.reported_state.as_deref().is_none_or(|s| s == "queued") && !matches!(job.state.as_str(), "queued") {
            client
                .deployment_status(
                    deployment,
                    DeploymentState::InProgress,
                    "deploying",
                    None,
                    job_url.as_deref(),
                )
                .await?;
        }
        let final_state = match job.state.as_str() {
            "succeeded" => Some(DeploymentState::Success),
            "failed" => Some(DeploymentState::Failure),
            "cancelled" | "superseded" => Some(DeploymentState::Inactive),
            _ => None,
        };
        if let Some(final_state) = final_state {
            client
                .deployment_status(
                    deployment,
                    final_state,
                    &text,
                    environment_url
                        .as_deref()
                        .filter(|_| final_state == DeploymentState::Success),
                    job_url.as_deref(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The commit status of a job's state, and what it says.
fn commit_status(job: &Unreported) -> (CommitState, String) {
    let plan = job
        .plan_summary
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v["headline"].as_str().map(str::to_owned));
    match job.state.as_str() {
        "queued" => (CommitState::Pending, "queued".into()),
        "running" => (CommitState::Pending, "running".into()),
        "awaiting_approval" if job.held_for.is_some() => (
            CommitState::Pending,
            "waiting for an admin to approve running this pull request from a fork".into(),
        ),
        "awaiting_approval" => (
            CommitState::Pending,
            format!("waiting for approval of the plan: {}", plan.unwrap_or_default()),
        ),
        "succeeded" => (
            CommitState::Success,
            match (job.kind.as_str(), plan) {
                ("verify", Some(plan)) => format!("builds, passes its smoke test; plan: {plan}"),
                ("verify", None) => "builds and passes its smoke test".into(),
                (_, _) => format!("deployed to {}", job.environment),
            },
        ),
        "failed" => (
            CommitState::Failure,
            job.error.clone().unwrap_or_else(|| "failed".into()),
        ),
        "superseded" => (
            CommitState::Error,
            job.superseded_by.map_or_else(
                || "superseded by a newer push".into(),
                |id| format!("superseded by job {id}"),
            ),
        ),
        _ => (CommitState::Error, "cancelled".into()),
    }
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
