//! The database tells every replica (through `LISTEN`) when a job may have become
//! claimable (`runner_jobs`, sent by triggers) and when a job's log or state changed
//! (`runner_logs`, with the job's id), so a worker on any replica claims it and a live log
//! served by any replica follows it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::JobId;

pub(in crate::store) const JOBS_CHANNEL: &str = "runner_jobs";
pub(in crate::store) const LOGS_CHANNEL: &str = "runner_logs";

/// Listens until `stop`, reconnecting when the database goes away. After a reconnect
/// one wake-up is given at once: whatever was sent while nobody listened is not lost,
/// since workers and readers look at the tables themselves when woken.
pub(in crate::store) async fn listen(
    database_url: &str,
    job_queued: Arc<Notify>,
    on_log: impl Fn(JobId) + Send + 'static,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let listener = async {
            let mut listener = PgListener::connect(database_url).await?;
            listener.listen_all([JOBS_CHANNEL, LOGS_CHANNEL]).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for the database's wake-ups; retrying");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        job_queued.notify_one();
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = stop.cancelled() => return,
            };
            match received {
                Ok(Some(notification)) => match notification.channel() {
                    JOBS_CHANNEL => job_queued.notify_one(),
                    LOGS_CHANNEL => {
                        if let Some(job) = notification.payload().parse().ok().and_then(|id| JobId::new(id).ok()) {
                            on_log(job);
                        }
                    }
                    _ => {}
                },
                // The connection dropped; anything sent meanwhile is covered by the wake-up
                // given on reconnecting.
                Ok(None) => {
                    tracing::warn!("lost the database's wake-up connection; reconnecting");
                    job_queued.notify_one();
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "listening for the database's wake-ups failed; reconnecting");
                    break;
                }
            }
        }
    }
}
