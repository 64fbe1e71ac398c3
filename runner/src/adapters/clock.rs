//! Time as the pipeline sees it: step timeouts and the times recorded on steps. The
//! runner uses the system's clock; the unit tests use a clock they move by hand, so a
//! 30-minute timeout is tested in a millisecond.

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
        crate::store::now_ms()
    }
}
