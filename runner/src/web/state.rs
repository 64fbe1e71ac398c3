//! What every request handler shares.

use std::sync::Arc;

use crate::store::Store;
use tokio::sync::Notify;

use crate::config::Config;
use crate::joblog::LogEvents;
use crate::metrics::Metrics;
use crate::pipeline::Cancellations;
use crate::webhook::ingest::IngestWriter;
use crate::webhook::signature::SignatureKey;

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Store,
    pub ingest: IngestWriter,
    /// One per project, in the order of `config.projects`.
    pub signature_keys: Arc<Vec<SignatureKey>>,
    pub metrics: Arc<Metrics>,
    pub cancellations: Arc<Cancellations>,
    /// Woken once per job queued outside the webhook (API actions).
    pub job_queued: Arc<Notify>,
    /// Which job just stored log lines or changed state: wakes live log streams.
    pub log_events: LogEvents,
    pub login_limiter: Arc<super::dashboard::auth::LoginLimiter>,
    /// Asks a project's forge what a branch points at (a redeploy of a branch).
    pub forges: Arc<dyn crate::adapters::forge::Forges>,
}
