//! A step's JUnit XML report (`reports.junit`) read into counts and the failed tests.
//!
//! JUnit XML has no one schema; this reads what test runners write in common (cargo-nextest,
//! pytest, jest-junit, Maven Surefire, Go's gotestsum): `<testsuites>` or a bare
//! `<testsuite>` at the root, suites nested in suites, and `<testcase>` elements whose
//! first child among `<failure>`, `<error>` and `<skipped>` says how the test ended (none:
//! it passed). Counts come from the test cases, not from the suites' `tests=`/`failures=`
//! attributes, which emitters fill in unevenly. Retries that passed (Surefire's
//! `<flakyFailure>`) and captured output (`<system-out>`) are not outcomes and are skipped.
//!
//! The report comes from the step's own commands, so it is read defensively: at most
//! [`MAX_REPORT_BYTES`], no document type definitions or external entities resolved (an
//! entity other than XML's five and character references stays as written), invalid UTF-8
//! replaced rather than refused, and only [`MAX_FAILURES_KEPT`] failures kept in full.

use std::fmt;

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;

/// The largest report read: far beyond any test suite's report, small enough to hold in
/// memory while the step's job runs.
pub const MAX_REPORT_BYTES: usize = 16 * 1024 * 1024;
/// How many failed tests are kept with their details; the rest are counted only.
pub const MAX_FAILURES_KEPT: usize = 200;
/// A kept failure's message is cut to this many bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest suite, test or class name, or file path, kept of a failed test.
pub const MAX_NAME_BYTES: usize = 512;
/// Elements nested deeper than this are refused: real reports nest a handful deep.
const MAX_DEPTH: usize = 256;
/// A failure's text is gathered only until its first line is certain to be in it.
const MAX_GATHERED_TEXT: usize = 4 * MAX_MESSAGE_BYTES;

/// A report the runner cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JunitError {
    #[error("the JUnit report is {size} bytes; reports over {limit} bytes are not read")]
    TooLarge { size: usize, limit: usize },
    #[error("the JUnit report is empty")]
    Empty,
    #[error("the JUnit report is not well-formed XML at line {line}, column {column}: {message}")]
    Xml {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the JUnit report ends inside <{0}>: it was cut short")]
    Truncated(String),
    #[error("the JUnit report's root element is <{0}>, not <testsuites> or <testsuite>")]
    NotJunit(String),
    #[error("the JUnit report nests elements more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// How a failed test failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// `<failure>`: an assertion did not hold.
    Failed,
    /// `<error>`: the test could not run to an assertion (a panic in set-up, an exception).
    Errored,
}

/// How a test case ended, when not by passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failure(FailureKind),
    Skipped,
}

/// A test that failed or errored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedTest {
    /// The innermost enclosing `<testsuite>`'s `name` (empty outside any).
    pub suite: String,
    pub name: String,
    pub classname: String,
    pub kind: FailureKind,
    /// The first non-blank line of the failure's `message` attribute, else of its text,
    /// else its `type`; trimmed and cut to [`MAX_MESSAGE_BYTES`].
    pub message: String,
    /// The test case's `file` and `line` attributes, as the emitter wrote them (pytest's
    /// lines count from 0, most others' from 1).
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// What a report says: counts of every outcome, and the first [`MAX_FAILURES_KEPT`]
/// failed or errored tests in the report's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestSummary {
    pub passed: u64,
    pub failed: u64,
    pub errored: u64,
    pub skipped: u64,
    pub failures: Vec<FailedTest>,
}

impl TestSummary {
    /// `212 passed, 2 failed`, then `, 1 errored` and `, 3 skipped` when there are any.
    pub fn describe(&self) -> String {
        let mut text = format!("{} passed, {} failed", self.passed, self.failed);
        if self.errored > 0 {
            text.push_str(&format!(", {} errored", self.errored));
        }
        if self.skipped > 0 {
            text.push_str(&format!(", {} skipped", self.skipped));
        }
        text
    }

    pub fn total(&self) -> u64 {
        self.passed + self.failed + self.errored + self.skipped
    }
}

impl fmt::Display for TestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Reads a JUnit XML report.
pub fn summarize(xml: &[u8]) -> Result<TestSummary, JunitError> {
    if xml.len() > MAX_REPORT_BYTES {
        return Err(JunitError::TooLarge {
            size: xml.len(),
            limit: MAX_REPORT_BYTES,
        });
    }
    // Test output captured into the report may hold any bytes; they only ever reach a
    // message, where a replacement character does no harm.
    let text = String::from_utf8_lossy(xml);
    let mut reader = Reader::from_str(&text);
    let config = reader.config_mut();
    // A stray `&` in captured output is common and harmless here.
    config.allow_dangling_amp = true;
    config.check_end_names = true;

    let mut state = State::default();
    loop {
        let event = reader.read_event().map_err(|error| {
            let (line, column) = line_and_column(&text, reader.error_position());
            JunitError::Xml {
                line,
                column,
                message: error.to_string(),
            }
        })?;
        match event {
            Event::Start(element) => state.open(&element)?,
            Event::Empty(element) => {
                state.open(&element)?;
                state.close();
            }
            Event::End(_) => state.close(),
            Event::Text(content) => state.gather(&content.xml10_content()),
            Event::CData(content) => state.gather(&content.xml10_content()),
            Event::GeneralRef(reference) => state.gather(&resolve(&reference)),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    match state.open_elements.last() {
        Some(open) => Err(JunitError::Truncated(open.name.clone())),
        None if !state.root_seen => Err(JunitError::Empty),
        None => Ok(state.summary),
    }
}

#[derive(Debug, Default)]
struct State {
    root_seen: bool,
    open_elements: Vec<Open>,
    /// The names of the `<testsuite>`s the reader is inside, outermost first.
    suites: Vec<String>,
    case: Option<Case>,
    summary: TestSummary,
}

#[derive(Debug)]
struct Open {
    name: String,
    role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Suite,
    Case,
    /// The `<failure>`, `<error>` or `<skipped>` that decided the open case's outcome:
    /// its text is the message when it has no `message` attribute.
    Outcome,
    Other,
}

#[derive(Debug)]
struct Case {
    name: String,
    classname: String,
    file: Option<String>,
    line: Option<u32>,
    outcome: Option<(Outcome, Detail)>,
}

#[derive(Debug, Default)]
struct Detail {
    message: Option<String>,
    /// The `type` attribute: an exception's class, or how the emitter classes the failure.
    error_type: Option<String>,
    text: String,
}

impl State {
    fn open(&mut self, element: &BytesStart<'_>) -> Result<(), JunitError> {
        let name = element.local_name().into_inner().to_owned();
        if self.open_elements.len() >= MAX_DEPTH {
            return Err(JunitError::TooDeep);
        }
        if !self.root_seen {
            self.root_seen = true;
            if name != "testsuites" && name != "testsuite" {
                return Err(JunitError::NotJunit(name));
            }
        }
        let in_case = self.case.is_some();
        let parent_is_case = self.open_elements.last().is_some_and(|open| open.role == Role::Case);
        let role = match name.as_str() {
            "testsuite" if !in_case => {
                self.suites.push(capped(attribute(element, "name").unwrap_or_default()));
                Role::Suite
            }
            "testcase" if !in_case => {
                self.case = Some(Case {
                    name: capped(attribute(element, "name").unwrap_or_default()),
                    classname: capped(attribute(element, "classname").unwrap_or_default()),
                    // A path cut short is no path: one that long is dropped.
                    file: attribute(element, "file").filter(|file| !file.is_empty() && file.len() <= MAX_NAME_BYTES),
                    line: attribute(element, "line").and_then(|line| line.trim().parse().ok()),
                    outcome: None,
                });
                Role::Case
            }
            "failure" | "error" | "skipped" if parent_is_case => {
                let outcome = match name.as_str() {
                    "failure" => Outcome::Failure(FailureKind::Failed),
                    "error" => Outcome::Failure(FailureKind::Errored),
                    _ => Outcome::Skipped,
                };
                match &mut self.case {
                    Some(case) if case.outcome.is_none() => {
                        case.outcome = Some((
                            outcome,
                            Detail {
                                message: attribute(element, "message"),
                                error_type: attribute(element, "type"),
                                text: String::new(),
                            },
                        ));
                        Role::Outcome
                    }
                    _ => Role::Other,
                }
            }
            _ => Role::Other,
        };
        self.open_elements.push(Open { name, role });
        Ok(())
    }

    fn close(&mut self) {
        let Some(open) = self.open_elements.pop() else {
            return;
        };
        match open.role {
            Role::Suite => {
                self.suites.pop();
            }
            Role::Case => {
                if let Some(case) = self.case.take() {
                    self.record(case);
                }
            }
            Role::Outcome | Role::Other => {}
        }
    }

    fn gather(&mut self, text: &str) {
        let inside_outcome = self.open_elements.last().is_some_and(|open| open.role == Role::Outcome);
        if let (
            true,
            Some(Case {
                outcome: Some((_, detail)),
                ..
            }),
        ) = (inside_outcome, &mut self.case)
            && detail.text.len() < MAX_GATHERED_TEXT
        {
            detail.text.push_str(text);
        }
    }

    fn record(&mut self, case: Case) {
        let summary = &mut self.summary;
        let Some((outcome, detail)) = case.outcome else {
            summary.passed += 1;
            return;
        };
        let kind = match outcome {
            Outcome::Skipped => {
                summary.skipped += 1;
                return;
            }
            Outcome::Failure(kind) => kind,
        };
        match kind {
            FailureKind::Failed => summary.failed += 1,
            FailureKind::Errored => summary.errored += 1,
        }
        if summary.failures.len() < MAX_FAILURES_KEPT {
            summary.failures.push(FailedTest {
                suite: self.suites.last().cloned().unwrap_or_default(),
                name: case.name,
                classname: case.classname,
                kind,
                message: first_line([
                    detail.message.as_deref(),
                    Some(&detail.text),
                    detail.error_type.as_deref(),
                ]),
                file: case.file,
                line: case.line,
            });
        }
    }
}

/// An attribute's value with its references resolved; one whose references cannot be (an
/// entity no DTD here defines) is kept as written.
fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|attribute| attribute.key.local_name().into_inner() == name)
        .map(|attribute| match attribute.normalized_value(XmlVersion::Implicit1_0) {
            Ok(value) => value.into_owned(),
            Err(_) => attribute.value.into_owned(),
        })
}

/// A reference in text: a character reference or one of XML's five entities; any other is
/// kept as written, never looked up.
fn resolve(reference: &BytesRef<'_>) -> String {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return c.to_string();
    }
    let name: &str = reference;
    match resolve_predefined_entity(name) {
        Some(text) => text.to_owned(),
        None => format!("&{name};"),
    }
}

/// The first non-blank line of the first source that has one, trimmed and cut to
/// [`MAX_MESSAGE_BYTES`] at a character boundary.
fn first_line<const N: usize>(sources: [Option<&str>; N]) -> String {
    let Some(line) = sources
        .into_iter()
        .flatten()
        .find_map(|source| source.lines().map(str::trim).find(|line| !line.is_empty()))
    else {
        return String::new();
    };
    cut(line, MAX_MESSAGE_BYTES)
}

/// A name kept on a failed test (suite, test, class), cut to [`MAX_NAME_BYTES`].
fn capped(name: String) -> String {
    if name.len() <= MAX_NAME_BYTES {
        name
    } else {
        cut(&name, MAX_NAME_BYTES)
    }
}

/// `text` cut to `max` bytes at a character boundary, marked with `…` where it was cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The 1-based line and column (in characters) of a byte offset into `text`.
fn line_and_column(text: &str, offset: u64) -> (usize, usize) {
    let mut end = usize::try_from(offset).unwrap_or(usize::MAX).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(xml: &str) -> TestSummary {
        summarize(xml.as_bytes()).expect("a readable report")
    }

    fn failure(suite: &str, name: &str, kind: FailureKind, message: &str) -> FailedTest {
        FailedTest {
            suite: suite.to_owned(),
            name: name.to_owned(),
            classname: String::new(),
            kind,
            message: message.to_owned(),
            file: None,
            line: None,
        }
    }

    #[test]
    fn a_cargo_nextest_report() {
        let report = summarize(include_bytes!("testdata/nextest.xml")).expect("readable");
        assert_eq!(
            (report.passed, report.failed, report.errored, report.skipped),
            (3, 1, 0, 0)
        );
        assert_eq!(report.describe(), "3 passed, 1 failed");
        assert_eq!(
            report.failures,
            [FailedTest {
                classname: "runner".to_owned(),
                ..failure(
                    "runner",
                    "runfile::tests::timeouts_round_trip",
                    FailureKind::Failed,
                    "thread 'runfile::tests::timeouts_round_trip' panicked at runner/src/runfile/values.rs:310:9:"
                )
            }]
        );
    }

    #[test]
    fn a_pytest_report_with_files_and_lines() {
        let report = summarize(include_bytes!("testdata/pytest.xml")).expect("readable");
        assert_eq!(report.describe(), "2 passed, 1 failed, 1 errored, 1 skipped");
        assert_eq!(
            report.failures,
            [
                FailedTest {
                    classname: "tests.test_app".to_owned(),
                    file: Some("tests/test_app.py".to_owned()),
                    line: Some(8),
                    ..failure("pytest", "test_totals", FailureKind::Failed, "assert 3 == 4")
                },
                FailedTest {
                    classname: "tests.test_db".to_owned(),
                    file: Some("tests/test_db.py".to_owned()),
                    line: Some(20),
                    ..failure(
                        "pytest",
                        "test_insert",
                        FailureKind::Errored,
                        "failed on setup with \"psycopg.OperationalError: connection refused\""
                    )
                },
            ]
        );
    }

    #[test]
    fn a_jest_junit_report_with_messages_in_text() {
        let report = summarize(include_bytes!("testdata/jest-junit.xml")).expect("readable");
        assert_eq!(report.describe(), "3 passed, 1 failed");
        assert_eq!(
            report.failures,
            [FailedTest {
                classname: "math divides by two".to_owned(),
                file: Some("src/math.test.js".to_owned()),
                ..failure(
                    "math",
                    "math divides by two",
                    FailureKind::Failed,
                    "Error: expect(received).toBe(expected) // Object.is equality"
                )
            }]
        );
    }

    #[test]
    fn a_bare_testsuite_with_nested_suites() {
        let report = summary(
            r#"<testsuite name="all">
                 <testcase name="a"/>
                 <testsuite name="inner">
                   <testcase name="b"><failure message="  &lt;nope&gt;&#x21;&#10;second line"/></testcase>
                   <testsuite name="deepest"><testcase name="c"><skipped/></testcase></testsuite>
                   <testcase name="d"><error type="Panic"/></testcase>
                 </testsuite>
                 <testcase name="e"><failure>
                      first text line
                 </failure></testcase>
               </testsuite>"#,
        );
        assert_eq!(report.describe(), "1 passed, 2 failed, 1 errored, 1 skipped");
        assert_eq!(
            report.failures,
            [
                failure("inner", "b", FailureKind::Failed, "<nope>!"),
                failure("inner", "d", FailureKind::Errored, "Panic"),
                failure("all", "e", FailureKind::Failed, "first text line"),
            ]
        );
    }

    #[test]
    fn the_first_outcome_counts_and_output_is_not_a_message() {
        let report = summary(
            r#"<testsuites><testsuite name="s">
                 <testcase name="flaky"><flakyFailure message="timeout"/><system-out>retry passed</system-out></testcase>
                 <testcase name="twice"><failure message="first"/><error message="second"/></testcase>
                 <testcase name="out"><system-out>noise</system-out><failure/></testcase>
               </testsuite></testsuites>"#,
        );
        assert_eq!((report.passed, report.failed, report.errored), (1, 2, 0));
        assert_eq!(report.failures[0].message, "first");
        assert_eq!(report.failures[1].message, "");
    }

    #[test]
    fn every_failure_is_counted_but_only_the_first_are_kept() {
        let mut xml = String::from("<testsuite name=\"many\">");
        for i in 0..250 {
            xml.push_str(&format!(
                "<testcase name=\"t{i}\"><failure message=\"m{i}\"/></testcase>"
            ));
        }
        xml.push_str("<testcase name=\"ok\"/></testsuite>");
        let report = summary(&xml);
        assert_eq!(report.describe(), "1 passed, 250 failed");
        assert_eq!(report.failures.len(), MAX_FAILURES_KEPT);
        assert_eq!(report.failures[199].name, "t199");
    }

    #[test]
    fn long_messages_are_cut_at_a_character() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let report = summary(&format!(
            "<testsuite><testcase name=\"t\"><failure message=\"{long}\"/></testcase></testsuite>"
        ));
        let message = &report.failures[0].message;
        assert!(message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(), "{}", message.len());
        assert!(message.ends_with("é…"));
    }

    #[test]
    fn entities_are_never_looked_up() {
        let report = summary(
            r#"<?xml version="1.0"?>
               <!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
               <testsuite><testcase name="t"><failure>&xxe; & more</failure></testcase></testsuite>"#,
        );
        assert_eq!(report.failures[0].message, "&xxe; & more");
    }

    #[test]
    fn invalid_utf8_in_output_is_replaced() {
        let mut xml = b"<testsuite><testcase name=\"t\"><failure>bad ".to_vec();
        xml.extend_from_slice(&[0xff, 0xfe]);
        xml.extend_from_slice(b" bytes</failure></testcase></testsuite>");
        let report = summarize(&xml).expect("readable");
        assert_eq!(report.failures[0].message, "bad \u{fffd}\u{fffd} bytes");
    }

    #[test]
    fn unreadable_reports_say_why() {
        let error = |xml: &str| summarize(xml.as_bytes()).map(|_| ()).expect_err("refused").to_string();
        assert_eq!(error(""), "the JUnit report is empty");
        assert_eq!(error("  <!-- nothing -->\n"), "the JUnit report is empty");
        assert_eq!(
            error("<html><body/></html>"),
            "the JUnit report's root element is <html>, not <testsuites> or <testsuite>"
        );
        assert_eq!(
            error("<testsuites><testsuite name=\"a\"><testcase name=\"b\">"),
            "the JUnit report ends inside <testcase>: it was cut short"
        );
        assert!(
            error("<testsuite>\n  <testcase></testsuite>")
                .starts_with("the JUnit report is not well-formed XML at line 2, column 13:"),
            "{}",
            error("<testsuite>\n  <testcase></testsuite>")
        );
        let deep = format!("<testsuite>{}", "<x>".repeat(MAX_DEPTH));
        assert_eq!(
            error(&deep),
            format!("the JUnit report nests elements more than {MAX_DEPTH} deep")
        );
        let large = vec![b' '; MAX_REPORT_BYTES + 1];
        assert_eq!(
            summarize(&large),
            Err(JunitError::TooLarge {
                size: MAX_REPORT_BYTES + 1,
                limit: MAX_REPORT_BYTES
            })
        );
    }

    #[test]
    fn descriptions_mention_errors_and_skips_only_when_there_are_some() {
        let counts = |passed, failed, errored, skipped| TestSummary {
            passed,
            failed,
            errored,
            skipped,
            failures: Vec::new(),
        };
        assert_eq!(counts(212, 2, 0, 0).describe(), "212 passed, 2 failed");
        assert_eq!(counts(5, 0, 0, 3).to_string(), "5 passed, 0 failed, 3 skipped");
        assert_eq!(counts(0, 0, 1, 0).describe(), "0 passed, 0 failed, 1 errored");
        assert_eq!(counts(1, 2, 3, 4).total(), 10);
    }
}
