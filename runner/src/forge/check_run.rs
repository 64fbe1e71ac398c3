//! A job as a GitHub check run: its state, a markdown table of its steps with their test
//! results, and an annotation on the line of each failing test that names one.

use std::fmt::Write as _;

use crate::adapters::forge::{Annotation, CheckConclusion, CheckRun, CheckStatus};
use crate::job::{JobKind, JobState};
use crate::pipeline::plan::Step;
use crate::runfile::junit::FailedTest;
use crate::secrets::SecretMask;
use crate::store::reports::Unreported;
use crate::store::steps::Step as StepRow;

/// Failing tests listed in the summary per step; the rest are counted.
const LISTED_PER_STEP: usize = 50;

/// What the check run of `job` shows now. `name` is the job's status context, `title` the
/// sentence its commit status says; annotations are added by the caller, in batches.
pub fn check_run(job: &Unreported, rows: &[StepRow], name: String, title: String, job_url: Option<&str>) -> CheckRun {
    CheckRun {
        name,
        head_sha: job.sha.to_string(),
        external_id: job.id.to_string(),
        details_url: job_url.map(str::to_owned),
        status: status(job),
        title,
        summary: summary(job, rows, job_url),
        annotations: Vec::new(),
    }
}

fn status(job: &Unreported) -> CheckStatus {
    match job.state {
        JobState::Queued if job.held_for.is_none() => CheckStatus::Queued,
        JobState::Queued | JobState::Running | JobState::AwaitingApproval => CheckStatus::InProgress,
        JobState::Succeeded => CheckStatus::Completed(CheckConclusion::Success),
        JobState::Failed if job.error.as_deref().is_some_and(|e| e.contains("timed out")) => {
            CheckStatus::Completed(CheckConclusion::TimedOut)
        }
        JobState::Failed => CheckStatus::Completed(CheckConclusion::Failure),
        JobState::Cancelled => CheckStatus::Completed(CheckConclusion::Cancelled),
        // A newer commit took its place: not a verdict on this one.
        JobState::Superseded => CheckStatus::Completed(CheckConclusion::Neutral),
    }
}

/// The step table, then each step's failing tests.
fn summary(job: &Unreported, rows: &[StepRow], job_url: Option<&str>) -> String {
    let mut text = String::new();
    let what = match job.kind {
        JobKind::Deploy => format!("Deploy of `{}` to **{}**", short(job.sha.as_str()), job.environment),
        JobKind::Verify => format!("Verification of `{}`", short(job.sha.as_str())),
    };
    let _ = writeln!(text, "{what}, job {}.\n", job.id);
    text.push_str("| Step | State | Took | Result |\n|---|---|---|---|\n");
    for row in rows {
        let result = row.summary.as_deref().or(row.error.as_deref()).unwrap_or_default();
        let took = crate::domain::took(row.started_at, row.finished_at).unwrap_or_default();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} |",
            cell(&row.name),
            row.state,
            took,
            cell(result)
        );
    }
    for row in rows.iter().filter(|row| !Step::BUILT_IN.contains(&row.name.as_str())) {
        let failed = row.failed_tests();
        if failed.is_empty() {
            continue;
        }
        let _ = writeln!(text, "\n### Failing tests in `{}`\n", cell(&row.name));
        for test in failed.iter().take(LISTED_PER_STEP) {
            let _ = writeln!(text, "- **{}**: {}", cell(&test_title(test)), cell(&test.message));
        }
        if failed.len() > LISTED_PER_STEP {
            let _ = writeln!(text, "- … and {} more", failed.len() - LISTED_PER_STEP);
        }
    }
    if let Some(url) = job_url {
        let _ = write!(text, "\n[The job's page and full log]({url})\n");
    }
    text
}

/// An annotation for every failing test whose report names a file in the repository, in
/// the order of the job's steps.
pub fn annotations(rows: &[StepRow], mask: &SecretMask) -> Vec<Annotation> {
    rows.iter()
        .filter(|row| !Step::BUILT_IN.contains(&row.name.as_str()))
        .flat_map(|row| {
            row.failed_tests().into_iter().filter_map(|test| {
                let path = repository_path(test.file.as_deref()?)?;
                Some(Annotation {
                    path,
                    // Lines count from 1 on GitHub; pytest's from 0.
                    line: test.line.unwrap_or(1).max(1),
                    title: mask.masked(format!("{}: {}", row.name, test_title(&test))),
                    message: mask.masked(if test.message.is_empty() {
                        "failed".to_owned()
                    } else {
                        test.message.clone()
                    }),
                })
            })
        })
        .collect()
}

/// A report's file name as a path in the repository: relative to the checkout (steps run
/// in `/checkout`), never outside it.
fn repository_path(file: &str) -> Option<String> {
    let file = file.trim();
    let relative = file
        .strip_prefix(crate::adapters::engine::TASK_CHECKOUT)
        .map_or(file, |rest| rest.trim_start_matches('/'))
        .trim_start_matches("./");
    let fine = !relative.is_empty()
        && !relative.starts_with('/')
        && !relative.contains('\\')
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    fine.then(|| relative.to_owned())
}

fn test_title(test: &FailedTest) -> String {
    if test.classname.is_empty() || test.name.starts_with(&test.classname) {
        test.name.clone()
    } else {
        format!("{}::{}", test.classname, test.name)
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Text made safe for one markdown table cell or list item: one line, no pipes, no HTML.
fn cell(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_paths_become_repository_paths_or_nothing() {
        assert_eq!(repository_path("/checkout/src/lib.rs").as_deref(), Some("src/lib.rs"));
        assert_eq!(
            repository_path("./tests/test_app.py").as_deref(),
            Some("tests/test_app.py")
        );
        assert_eq!(
            repository_path("tests/test_app.py").as_deref(),
            Some("tests/test_app.py")
        );
        for outside in [
            "/etc/passwd",
            "../secret",
            "src/../../x",
            "/checkout",
            "",
            "a\\b",
            "src//x",
        ] {
            assert_eq!(repository_path(outside), None, "{outside:?}");
        }
    }

    #[test]
    fn cells_hold_one_line_without_markup() {
        assert_eq!(cell("a | b <script>\nsecond line"), "a \\| b &lt;script&gt;");
    }
}
