//! The worker pool: claim a job, keep its lease alive, run its pipeline, record the end.

use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::domain::JobId;
use crate::job::JobState;
use crate::joblog::{JobLog, LogEvents, SecretMask};
use crate::metrics::Metrics;
use crate::pipeline::{self, Cancellations, JobFailure, PipelineContext};
use crate::store::jobs::{self, Heartbeat, Job};

#[derive(Clone)]
pub struct Worker {
    pub pool: Store,
    pub config: Arc<Config>,
    pub job_queued: Arc<Notify>,
    pub cancellations: Arc<Cancellations>,
    pub metrics: Arc<Metrics>,
    pub pipeline: PipelineContext,
    pub mask: SecretMask,
    pub log_events: LogEvents,
    /// Distinguishes this process's leases from another's (and from its own past lives).
    pub owner: String,
    /// The projects whose jobs this runner may claim (`None`: all); see
    /// `Config::runnable_projects`.
    pub runnable_projects: Option<Arc<[String]>>,
    /// When the engine was last asked whether it answers, and what it said.
    pub engine_health: Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>>,
}

/// How long an engine's answer (or silence) holds before it is asked again.
const ENGINE_RECHECK: Duration = Duration::from_secs(1);

/// How often an idle worker looks for jobs whose lease ran out, even without a wake-up,
/// when nobody but this process wakes it. Where the database wakes every replica's workers
/// (which would all poll one database), an idle worker looks at the lease sweep's pace; the
/// database wakes it for everything else.
const IDLE_POLL: Duration = Duration::from_millis(500);

impl Worker {
    /// Starts `config.queue.workers` workers and the lease sweeper; they stop claiming
    /// when `shutdown` fires and return once their current job is done.
    pub fn spawn_pool(self, shutdown: CancellationToken) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for index in 0..self.config.queue.workers {
            let worker = self.clone();
            let shutdown = shutdown.clone();
            set.spawn(async move { worker.run(index, shutdown).await });
        }
        let sweeper = self.clone();
        set.spawn(async move { sweeper.sweep_abandoned(shutdown).await });
        set
    }

    async fn run(self, index: usize, shutdown: CancellationToken) {
        tracing::debug!(worker = index, "worker started");
        while !shutdown.is_cancelled() {
            if !self.engine_answers().await {
                // Another replica, or this one once its engine is back, runs the jobs.
                tokio::select! {
                    () = tokio::time::sleep(ENGINE_RECHECK) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            let claimed = jobs::claim_next(
                &self.pool,
                &self.owner,
                self.config.queue.lease,
                self.config.queue.max_attempts,
                self.runnable_projects.as_deref(),
                self.pipeline.clock.now_ms(),
            )
            .await;
            match claimed {
                Ok(Some(job)) => {
                    if job.attempts == 1 {
                        let waited = (self.pipeline.clock.now_ms() - job.created_at).max(0);
                        self.metrics
                            .pickup_latency
                            .observe("", Duration::from_millis(u64::try_from(waited).unwrap_or(0)));
                    }
                    // More may be waiting: another idle worker looks too.
                    self.job_queued.notify_one();
                    let span = tracing::info_span!("job", job_id = %job.id, project = %job.project, sha = %job.sha, kind = %job.kind);
                    self.run_job(job).instrument(span).await;
                    // Finishing may unblock another environment's queued deploy.
                    self.job_queued.notify_one();
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.job_queued.notified() => {}
                        () = tokio::time::sleep(self.idle_poll()) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot claim a job; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
        tracing::debug!(worker = index, "worker stopped");
    }

    /// Whether this runner's engine answers, asked at most once per `ENGINE_RECHECK` for
    /// all workers. A runner that started without an engine claims as before: its jobs
    /// fail naming what is missing.
    async fn engine_answers(&self) -> bool {
        let Some(engine) = &self.pipeline.engine else {
            return true;
        };
        let mut health = self.engine_health.lock().await;
        if let Some((asked, answered)) = *health
            && asked.elapsed() < ENGINE_RECHECK
        {
            return answered;
        }
        let answered = match engine.ping().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "the engine does not answer; claiming no job until it does");
                false
            }
        };
        *health = Some((tokio::time::Instant::now(), answered));
        answered
    }

    fn idle_poll(&self) -> Duration {
        if self.pool.wakes_workers() {
            self.sweep_interval()
        } else {
            IDLE_POLL
        }
    }

    fn sweep_interval(&self) -> Duration {
        self.config.queue.lease.min(Duration::from_secs(5))
    }

    async fn run_job(&self, job: Job) {
        tracing::info!(attempt = job.attempts, "job claimed");
        let cancel = self.cancellations.register(job.id);
        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().keep_lease(job.id, cancel.clone(), lost.clone()));
        let (log, writer) = JobLog::start_capped(
            self.pool.clone(),
            job.id,
            self.mask.clone(),
            self.log_events.clone(),
            self.config.queue.job_log_max_bytes,
        );

        // Which runner ran which attempt: with several replicas, where to look.
        log.system(format!("attempt {} claimed by runner {}", job.attempts, self.owner));
        let outcome = match self.config.project(&job.project) {
            Some(project) => pipeline::run(&self.pipeline, project, &job, &log, &cancel).await,
            None => Err(JobFailure::NotConfigured(format!(
                "project {} is no longer configured on this runner",
                job.project
            ))),
        };
        heartbeat.abort();
        self.cancellations.remove(job.id);

        let (state, error) = match &outcome {
            Ok(()) => (JobState::Succeeded, None),
            Err(JobFailure::Cancelled) => (JobState::Cancelled, Some("cancelled by request".to_owned())),
            Err(failure) => (JobState::Failed, Some(self.mask.masked(failure.to_string()))),
        };
        drop(log);
        writer.flush().await;
        if lost.is_cancelled() {
            tracing::warn!("lease lost; another worker owns the job now");
            return;
        }
        match jobs::finish_logged(
            &self.pool,
            job.id,
            &self.owner,
            state,
            error.as_deref(),
            self.pipeline.clock.now_ms(),
            Some(&format!("job {state}")),
        )
        .await
        {
            Ok(true) => {
                self.log_events.stored(job.id);
                self.metrics.jobs_finished.inc(job.kind.as_str(), state.as_str());
                if job.kind == crate::job::JobKind::Deploy {
                    let counter = if job.trigger == crate::job::Trigger::Rollback {
                        &self.metrics.rollbacks
                    } else {
                        &self.metrics.deploys
                    };
                    counter.inc(&job.environment, state.as_str());
                }
                tracing::info!(state = %state, error = error.as_deref().unwrap_or(""), "job finished");
            }
            Ok(false) => tracing::warn!("job was taken over before it finished"),
            Err(error) => {
                tracing::error!(%error, "cannot record the job's end; its lease will expire and it will be retried")
            }
        }
    }

    /// Renews the lease at a third of its length; turns a cancel request or a lost lease
    /// into cancellation of the running step.
    async fn keep_lease(self, id: JobId, cancel: CancellationToken, lost: CancellationToken) {
        let period = self.config.queue.lease / 3;
        loop {
            tokio::time::sleep(period).await;
            match jobs::heartbeat(
                &self.pool,
                id,
                &self.owner,
                self.config.queue.lease,
                self.pipeline.clock.now_ms(),
            )
            .await
            {
                Ok(Heartbeat::Renewed) => {}
                Ok(Heartbeat::CancelRequested) => cancel.cancel(),
                Ok(Heartbeat::Lost) => {
                    lost.cancel();
                    cancel.cancel();
                    return;
                }
                Err(error) => tracing::warn!(%error, "heartbeat failed; retrying"),
            }
        }
    }

    async fn sweep_abandoned(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match jobs::fail_abandoned(&self.pool, self.config.queue.max_attempts, self.pipeline.clock.now_ms()).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(jobs = ?ids, "failed jobs whose workers kept stopping")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot sweep abandoned jobs"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.sweep_interval()) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }
}
