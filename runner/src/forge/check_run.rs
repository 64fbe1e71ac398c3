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
/// Annotations per check run: enough to find the failures, few enough requests.
const MAX_ANNOTATIONS: usize = 150;
/// A path longer than this is no file of the repository's.
const MAX_PATH_BYTES: usize = 1_024;

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
        JobState::Queued => CheckStatus::Queued,
        JobState::Running | JobState::AwaitingApproval => CheckStatus::InProgress,
        JobState::Succeeded => CheckStatus::Completed(CheckConclusion::Success),
        JobState::Failed if job.error.as_deref().is_some_and(timed_out) => {
            CheckStatus::Completed(CheckConclusion::TimedOut)
        }
        JobState::Failed => CheckStatus::Completed(CheckConclusion::Failure),
        // A newer commit took its place: no verdict on this one, and no pass either (a
        // required check must not turn green for a commit nothing checked).
        JobState::Cancelled | JobState::Superseded => CheckStatus::Completed(CheckConclusion::Cancelled),
    }
}

/// The job's error says a step ran out of time: `<step> timed out after ...`, the step
/// being one of the runner's or the repository's plain names (not a test's text).
fn timed_out(error: &str) -> bool {
    error
        .split_once(" timed out after ")
        .is_some_and(|(step, _)| crate::domain::is_plain_name(step, 64))
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
        let _ = writeln!(text, "| {} | {} | {} | {} |", row.name, row.state, took, code(result));
    }
    for row in rows.iter().filter(|row| !Step::BUILT_IN.contains(&row.name.as_str())) {
        let failed = row.failed_tests();
        if failed.is_empty() {
            continue;
        }
        let _ = writeln!(text, "\n### Failing tests in {}\n", row.name);
        for test in failed.iter().take(LISTED_PER_STEP) {
            let _ = writeln!(text, "- {}: {}", code(&test_title(test)), code(&test.message));
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
                let file = test.file.as_deref()?;
                // A path a secret appears in is no path to show.
                if mask.apply(file) != file {
                    return None;
                }
                let path = repository_path(file)?;
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
        .take(MAX_ANNOTATIONS)
        .collect()
}

/// A report's file name as a path in the repository: relative to the checkout (steps run
/// in `/checkout`), never outside it.
fn repository_path(file: &str) -> Option<String> {
    let file = file.trim();
    let checkout = format!("{}/", crate::adapters::engine::TASK_CHECKOUT);
    let relative = file
        .strip_prefix(checkout.as_str())
        .unwrap_or(file)
        .trim_start_matches("./");
    let fine = !relative.is_empty()
        && relative.len() <= MAX_PATH_BYTES
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

/// A stranger's text (a test's name or message) as one markdown code span, safe in a
/// table cell: shown as written, never a link, image, mention or markup.
fn code(text: &str) -> String {
    let line: String = text.lines().next().unwrap_or_default().chars().take(300).collect();
    if line.trim().is_empty() {
        return String::new();
    }
    // In a table a pipe ends the cell even inside a code span, unless escaped.
    let line = line.replace('|', "\\|");
    let longest_run = line.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    let pad = if line.starts_with('`') || line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{line}{pad}{fence}")
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
    fn a_strangers_text_is_one_code_span_whatever_it_holds() {
        assert_eq!(code("a | b <script>\nsecond line"), "`a \\| b <script>`");
        assert_eq!(
            code("[re-authorize](https://evil.example) ![x](https://t.example/p.png) @org/team #12"),
            "`[re-authorize](https://evil.example) ![x](https://t.example/p.png) @org/team #12`"
        );
        assert_eq!(code("uses `x` and ``y``"), "``` uses `x` and ``y`` ```");
        assert_eq!(code("`edge`"), "`` `edge` ``");
        assert_eq!(code("  "), "");
    }

    #[test]
    fn only_a_step_running_out_of_time_is_a_time_out() {
        assert!(timed_out("unit timed out after 10m"));
        assert!(!timed_out(
            "unit failed: 1 passed, 1 failed; failing: login timed out after 5s: boom"
        ));
    }
}
