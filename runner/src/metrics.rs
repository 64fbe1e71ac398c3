//! Process-local counters and histograms, rendered in the Prometheus text format at
//! `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A counter with two labels.
#[derive(Debug, Default)]
pub struct LabelledCounter(Mutex<BTreeMap<(String, String), u64>>);

impl LabelledCounter {
    pub fn inc(&self, first: &str, second: &str) {
        *lock(&self.0).entry((first.to_owned(), second.to_owned())).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<((String, String), u64)> {
        lock(&self.0).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Upper bounds (seconds) shared by every histogram: from a database write to a build.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

#[derive(Debug, Clone, Default)]
struct Buckets {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Buckets {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// A histogram of durations with one label (empty label: none).
#[derive(Debug, Default)]
pub struct Histogram(Mutex<BTreeMap<String, Buckets>>);

impl Histogram {
    pub fn observe(&self, label: &str, duration: Duration) {
        lock(&self.0)
            .entry(label.to_owned())
            .or_default()
            .observe(duration.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_name: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (label, buckets) in lock(&self.0).iter() {
            let labels = if label_name.is_empty() {
                String::new()
            } else {
                format!("{label_name}=\"{label}\",")
            };
            for (bound, count) in BUCKETS.iter().zip(&buckets.counts) {
                let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", buckets.count);
            let plain = labels.trim_end_matches(',');
            let braces = if plain.is_empty() {
                String::new()
            } else {
                format!("{{{plain}}}")
            };
            let _ = writeln!(out, "{name}_sum{braces} {}", buckets.sum);
            let _ = writeln!(out, "{name}_count{braces} {}", buckets.count);
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub signature_failures: Counter,
    /// By event and outcome.
    pub deliveries: LabelledCounter,
    /// By job kind and final state.
    pub jobs_finished: LabelledCounter,
    /// From queued to claimed, first attempts.
    pub pickup_latency: Histogram,
    /// By step name.
    pub step_duration: Histogram,
    /// Deploy jobs (not rollbacks) by environment and final state.
    pub deploys: LabelledCounter,
    /// Rollback jobs by environment and final state.
    pub rollbacks: LabelledCounter,
    /// Calls to GitHub that did not work, by kind (transient, rate_limited, rejected).
    pub github_report_failures: LabelledCounter,
    /// Failed deliveries the runner asked GitHub to send again.
    pub redeliveries_requested: Counter,
    /// Deploys queued for a branch head no delivery announced.
    pub reconcile_deploys: Counter,
    /// Bytes of the images the runner keeps in the engine, by project (after its last prune).
    pub images_bytes: Mutex<BTreeMap<String, u64>>,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {value}");
}

fn labelled(out: &mut String, name: &str, help: &str, labels: (&str, &str), counter: &LabelledCounter) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for ((first, second), value) in counter.snapshot() {
        if labels.1.is_empty() {
            let _ = writeln!(out, "{name}{{{}=\"{first}\"}} {value}", labels.0);
        } else {
            let _ = writeln!(
                out,
                "{name}{{{}=\"{first}\",{}=\"{second}\"}} {value}",
                labels.0, labels.1
            );
        }
    }
}

impl Metrics {
    pub fn render(&self, queued_jobs: i64) -> String {
        let mut out = String::new();
        counter(
            &mut out,
            "runner_webhook_signature_failures_total",
            "Deliveries refused for a missing or wrong signature.",
            self.signature_failures.get(),
        );
        labelled(
            &mut out,
            "runner_webhook_deliveries_total",
            "Verified deliveries by event and outcome.",
            ("event", "outcome"),
            &self.deliveries,
        );
        labelled(
            &mut out,
            "runner_jobs_finished_total",
            "Jobs that reached a final state, by kind and state.",
            ("kind", "state"),
            &self.jobs_finished,
        );
        let _ = writeln!(out, "# HELP runner_queue_depth Jobs waiting to be claimed.");
        let _ = writeln!(out, "# TYPE runner_queue_depth gauge");
        let _ = writeln!(out, "runner_queue_depth {queued_jobs}");
        self.pickup_latency.render(
            &mut out,
            "runner_queue_pickup_seconds",
            "Time from queued to claimed by a worker (first attempts).",
            "",
        );
        self.step_duration.render(
            &mut out,
            "runner_step_duration_seconds",
            "Duration of pipeline steps, by step.",
            "step",
        );
        labelled(
            &mut out,
            "runner_deploys_total",
            "Deploy jobs that ended, by environment and state.",
            ("environment", "state"),
            &self.deploys,
        );
        labelled(
            &mut out,
            "runner_rollbacks_total",
            "Rollback jobs that ended, by environment and state.",
            ("environment", "state"),
            &self.rollbacks,
        );
        labelled(
            &mut out,
            "runner_github_report_failures_total",
            "Calls to GitHub that failed, by kind.",
            ("kind", ""),
            &self.github_report_failures,
        );
        counter(
            &mut out,
            "runner_github_redeliveries_requested_total",
            "Failed webhook deliveries the runner asked GitHub to send again.",
            self.redeliveries_requested.get(),
        );
        counter(
            &mut out,
            "runner_reconcile_deploys_total",
            "Deploys queued for a branch head that no delivery announced.",
            self.reconcile_deploys.get(),
        );
        let _ = writeln!(
            out,
            "# HELP runner_images_bytes Disk used by the images the runner keeps for rollbacks, by project."
        );
        let _ = writeln!(out, "# TYPE runner_images_bytes gauge");
        for (project, bytes) in lock(&self.images_bytes).iter() {
            let _ = writeln!(out, "runner_images_bytes{{project=\"{project}\"}} {bytes}");
        }
        out
    }
}
