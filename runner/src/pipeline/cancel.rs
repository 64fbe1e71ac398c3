//! The cancel handles of the jobs this process runs: the dashboard and the API cancel a
//! running job through them.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::domain::JobId;

/// Cancellation handles of the jobs running in this process, so a cancel request
/// interrupts the current step at once instead of at the next heartbeat.
#[derive(Default)]
pub struct Cancellations(Mutex<HashMap<JobId, CancellationToken>>);

impl Cancellations {
    pub fn register(&self, id: JobId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        token
    }

    pub fn cancel(&self, id: JobId) {
        if let Some(token) = self.lock().get(&id) {
            token.cancel();
        }
    }

    pub fn remove(&self, id: JobId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
