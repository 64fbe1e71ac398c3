//! What is wrong with a `.runner.yml`, and where: every error is one sentence after
//! `.runner.yml:LINE:COLUMN: `, so a person (or an editor) can go straight to it.

use std::borrow::Cow;
use std::fmt;

use serde_saphyr::{Location, MessageFormatter, UserMessageFormatter};

/// A 1-based line and column (in characters) in `.runner.yml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    /// The file's start: where problems of the file as a whole are reported.
    pub const START: Position = Position { line: 1, column: 1 };

    /// A location the YAML library could not place (line 0) reads as the file's start
    /// rather than as a position no editor can go to.
    pub(super) fn of(location: &Location) -> Position {
        if location.line() == 0 {
            Position::START
        } else {
            Position {
                line: location.line(),
                column: location.column().max(1),
            }
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A `.runner.yml` the runner cannot use: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(".runner.yml:{at}: {problem}")]
pub struct RunFileError {
    pub at: Position,
    pub problem: Problem,
}

impl RunFileError {
    pub(super) fn new(at: Position, problem: Problem) -> Self {
        Self { at, problem }
    }
}

/// What is wrong, without where. Names and values from the file are quoted with `{:?}` so
/// that a control character or a stray space shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not YAML, a key the file does not have, or a value of the wrong shape: the YAML
    /// library's own sentence.
    #[error("{0}")]
    Yaml(String),
    #[error("the file is {size} bytes; it may be at most {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the file has no YAML in it; it needs at least `steps:`")]
    Empty,
    #[error("the file has {count} steps; it may have at most {limit}")]
    TooManySteps { count: usize, limit: usize },
    #[error(
        "step name {0:?} must be 1-40 characters of lowercase letters, digits, '-' and '_', starting with a letter or digit"
    )]
    StepName(String),
    #[error("step name {name:?} is already used by the step at line {first_line}")]
    DuplicateStep { name: String, first_line: u64 },
    #[error(
        "service name {0:?} must be 1-40 characters of lowercase letters, digits and '-', starting with a letter or digit and not ending with '-'"
    )]
    ServiceName(String),
    #[error("service name {name:?} is already used by the service at line {first_line} of this step")]
    DuplicateService { name: String, first_line: u64 },
    #[error("image {image:?} is not `build`, `target:<stage>` or a valid image reference: {reason}")]
    Image { image: String, reason: String },
    #[error("the Dockerfile has no stage named {stage:?} (its stages: {})", list_or_none(.known))]
    UnknownStage { stage: String, known: Vec<String> },
    #[error("commands is empty; a step runs at least one command")]
    NoCommands,
    #[error("this command is empty")]
    EmptyCommand,
    #[error("env name {0:?} must be letters, digits and '_', not starting with a digit")]
    EnvName(String),
    #[error("env {0} has no value; write \"\" for an empty one")]
    EnvNull(String),
    #[error("env {0} has a NUL character, which no environment variable can hold")]
    EnvNul(String),
    #[error("the project offers no secret named {name:?} (it offers: {})", list_or_none(.offered))]
    UnknownSecret { name: String, offered: Vec<String> },
    #[error("secret {0} is listed twice")]
    DuplicateSecret(String),
    #[error("{0} is both a secret and a key of env; give it in one place")]
    SecretInEnv(String),
    #[error("timeout {value:?} {reason}")]
    Timeout { value: String, reason: &'static str },
    #[error("pattern {pattern:?} {reason}")]
    Glob { pattern: String, reason: String },
    #[error("when.{0} is empty; leave it out to have no condition on it")]
    EmptyCondition(&'static str),
    #[error("event {0:?} is not one a step runs for: push, pull_request or redeploy")]
    EventName(String),
    #[error("step name {0:?} is the runner's own step's; choose another")]
    ReservedStep(String),
    #[error("a step has at most {limit} services")]
    TooManyServices { limit: usize },
    #[error("the steps' timeouts add up to more than {limit_hours} hours, the most one job may take")]
    TotalTimeout { limit_hours: u64 },
    #[error("reports.junit {path:?} {reason}")]
    ReportPath { path: String, reason: &'static str },
    #[error("cache path {path:?} {reason}")]
    CachePath { path: String, reason: &'static str },
    #[error("cache path {0:?} is listed twice")]
    DuplicateCache(String),
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// The YAML library's error as one sentence at its position. Its user-facing wording is
/// kept, except for the two messages that name parser events ("expected sequence start")
/// rather than what the file should hold there.
pub(super) fn from_yaml(error: &serde_saphyr::Error) -> RunFileError {
    let at = error.location().map_or(Position::START, |l| Position::of(&l));
    let inner = innermost(error);
    let message: Cow<'_, str> = match inner {
        serde_saphyr::Error::Unexpected { expected, .. } if *expected == "sequence start" => "expected a list".into(),
        serde_saphyr::Error::Unexpected { expected, .. } if *expected == "mapping start" => "expected a mapping".into(),
        other => UserMessageFormatter.format_message(other),
    };
    RunFileError::new(at, Problem::Yaml(one_line(&message)))
}

/// Past the library's wrappers (a source snippet, an alias's second location) to the error
/// they carry: its formatter expects the bare error.
fn innermost(mut error: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        match error {
            serde_saphyr::Error::WithSnippet { error: inner, .. }
            | serde_saphyr::Error::AliasError { error: inner, .. } => error = inner,
            other => return other,
        }
    }
}

/// Control characters and runs of whitespace become one space: the message is one line
/// wherever it is shown (a status description, a log line).
fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len());
    for word in message.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line
}
