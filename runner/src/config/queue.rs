//! `[queue]`: how many jobs run at once, and how a job that lost its worker is found.

use std::time::Duration;

use serde::Serialize;

use super::raw::RawQueue;
use super::secret::secs;
use super::{ConfigError, Env, invalid};

#[derive(Debug, Clone, Serialize)]
pub struct QueueConfig {
    /// Jobs that may run at once (deploys to one environment still run one at a time).
    pub workers: usize,
    /// A claimed job whose worker stops renewing it for this long is claimed again.
    #[serde(rename = "lease_secs", serialize_with = "secs")]
    pub lease: Duration,
    /// Claims per job before it is failed as abandoned.
    pub max_attempts: u32,
    /// A job's log stops growing at this many bytes (the cut is said in the log).
    pub job_log_max_bytes: u64,
    /// What this runner offers (`[[projects]] runs_on` asks for labels); it claims only
    /// jobs of projects whose every label it has.
    pub labels: Vec<String>,
}

pub(super) fn resolve(raw: RawQueue, env: &Env<'_>) -> Result<QueueConfig, ConfigError> {
    let workers = match env.get("RUNNER_WORKERS") {
        Some(v) => v
            .parse()
            .map_err(|_| invalid("RUNNER_WORKERS", format!("{v:?} is not a number")))?,
        None => raw.workers.unwrap_or(2),
    };
    if !(1..=64).contains(&workers) {
        return Err(invalid("queue.workers", "must be between 1 and 64"));
    }
    let lease_secs = raw.lease_secs.unwrap_or(30);
    if !(2..=3600).contains(&lease_secs) {
        return Err(invalid("queue.lease_secs", "must be between 2 and 3600"));
    }
    let max_attempts = raw.max_attempts.unwrap_or(3);
    if !(1..=20).contains(&max_attempts) {
        return Err(invalid("queue.max_attempts", "must be between 1 and 20"));
    }
    let job_log_max_bytes = raw.job_log_max_bytes.unwrap_or(50 * 1024 * 1024);
    if job_log_max_bytes < 64 * 1024 {
        return Err(invalid("queue.job_log_max_bytes", "must be at least 65536"));
    }
    let labels = match env.get("RUNNER_LABELS") {
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => raw.labels.unwrap_or_default(),
    };
    for label in &labels {
        check_label(label).map_err(|why| invalid("queue.labels", why))?;
    }
    Ok(QueueConfig {
        workers,
        labels,
        lease: Duration::from_secs(lease_secs),
        max_attempts,
        job_log_max_bytes,
    })
}

/// A placement label: a short word of letters, digits, `-`, `_` and `.`.
pub(super) fn check_label(label: &str) -> Result<(), String> {
    let valid = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{label:?} is not a label (1 to 64 letters, digits, '-', '_' or '.')"
        ))
    }
}
