//! Process-local counters, rendered in the Prometheus text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with two labels.
#[derive(Debug, Default)]
pub struct LabelledCounter(Mutex<BTreeMap<(String, String), u64>>);

impl LabelledCounter {
    pub fn inc(&self, first: &str, second: &str) {
        let mut values = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *values.entry((first.to_owned(), second.to_owned())).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<((String, String), u64)> {
        let values = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        values.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub signature_failures: Counter,
    /// By event and outcome.
    pub deliveries: LabelledCounter,
    /// By job kind and final state.
    pub jobs_finished: LabelledCounter,
}

impl Metrics {
    pub fn render(&self, queued_jobs: i64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP runner_webhook_signature_failures_total Deliveries refused for a missing or wrong signature."
        );
        let _ = writeln!(out, "# TYPE runner_webhook_signature_failures_total counter");
        let _ = writeln!(
            out,
            "runner_webhook_signature_failures_total {}",
            self.signature_failures.get()
        );
        let _ = writeln!(
            out,
            "# HELP runner_webhook_deliveries_total Verified deliveries by event and outcome."
        );
        let _ = writeln!(out, "# TYPE runner_webhook_deliveries_total counter");
        for ((event, outcome), value) in self.deliveries.snapshot() {
            let _ = writeln!(
                out,
                "runner_webhook_deliveries_total{{event=\"{event}\",outcome=\"{outcome}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP runner_jobs_finished_total Jobs that reached a final state, by kind and state."
        );
        let _ = writeln!(out, "# TYPE runner_jobs_finished_total counter");
        for ((kind, state), value) in self.jobs_finished.snapshot() {
            let _ = writeln!(
                out,
                "runner_jobs_finished_total{{kind=\"{kind}\",state=\"{state}\"}} {value}"
            );
        }
        let _ = writeln!(out, "# HELP runner_queue_depth Jobs waiting to be claimed.");
        let _ = writeln!(out, "# TYPE runner_queue_depth gauge");
        let _ = writeln!(out, "runner_queue_depth {queued_jobs}");
        out
    }
}
