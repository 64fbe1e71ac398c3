//! Time as the runner sees it: the times it records (queued, started, finished, live),
//! what it compares with them (leases, sessions, retention), and step timeouts. The
//! runner uses the system's clock; the unit tests use a clock they move by hand, so a
//! 30-minute timeout is tested in a millisecond. Durations the runner measures (how long
//! a step took, a probe's budget) use tokio's monotonic clock, which tests may pause.
//!
//! Only [`SystemClock`] reads the wall clock; everything else asks the clock it was given,
//! except a job log, which stamps each line with the system's time as it is written (a
//! stamp, never a decision), and two boundaries whose other side checks the time itself:
//! a GitHub App's token (its `iat`) and an ECR token's expiry.

use std::time::Duration;

#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Resolves once `duration` has passed on this clock.
    async fn sleep(&self, duration: Duration);
    /// Milliseconds since the Unix epoch, as the store records times.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
    }
}
