//! What every request handler shares.

use std::sync::Arc;

use crate::store::Store;

use crate::config::Config;
use crate::joblog::LogEvents;
use crate::metrics::Metrics;
use crate::operations::Operations;
use crate::webhook::ingest::IngestWriter;
use crate::webhook::signature::{SecretToken, SignatureKey};

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Store,
    pub ingest: IngestWriter,
    /// One per project, in the order of `config.projects`.
    pub signature_keys: Arc<Vec<SignatureKey>>,
    /// The same secrets as GitLab sends them (the token itself), in the same order.
    pub secret_tokens: Arc<Vec<SecretToken>>,
    pub metrics: Arc<Metrics>,
    /// Which job just stored log lines or changed state: wakes live log streams.
    pub log_events: LogEvents,
    pub login_limiter: Arc<super::dashboard::auth::LoginLimiter>,
    /// The application's one clock: what it records and what it compares with.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// What an operator asks for (redeploy, rollback, promote, replay, cancel, approve).
    pub operations: Operations,
}
