//! A repository's own checks, read from `.runner.yml` at the root of the commit being run,
//! and the decisions about them that need nothing but the file and the event: which steps
//! run, whether a push can be ignored, whether the commit asks to be skipped, and what a
//! step's JUnit report says.
//!
//! ```yaml
//! steps:
//!   - name: test
//!     image: target:test
//!     commands: ["cargo test --locked"]
//!     env: { RUST_LOG: info }
//!     secrets: [NPM_TOKEN]
//!     services:
//!       - { name: db, image: postgres:16, env: { POSTGRES_PASSWORD: x } }
//!     when: { event: [push, pull_request], branch: [main], paths: ["src/**", "Cargo.*"] }
//!     timeout: 10m
//!     reports: { junit: target/junit.xml }
//!     cache: [/usr/local/cargo/registry]
//! paths_ignore: ["docs/**", "**/*.md"]
//! ```
//!
//! Every key is described where it is read, in `runfile/file.rs`; patterns in [`glob`]. [`parse`]
//! checks the whole file against the project (its secrets, its Dockerfile's stages) and
//! reports the first problem it finds as one sentence at its line and column.

mod dockerfile;
mod error;
mod file;
pub mod glob;
pub mod junit;
mod skip;
mod values;
mod when;

#[cfg(test)]
mod tests;

pub use dockerfile::dockerfile_stages;
pub use error::{Position, Problem, RunFileError};
pub use glob::Globs;
pub use skip::skip_ci;
pub use values::{
    ContainerPath, DEFAULT_TIMEOUT, MAX_TIMEOUT, RelativePath, ServiceName, StepImage, StepName, parse_timeout,
};
pub use when::{ChangedPaths, EventFacts, EventKind, SkipReason, When};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use file::{At, RawEnv, RawFile, RawService, RawStep, RawWhen};

/// The file's name at the repository's root.
pub const FILE_NAME: &str = ".runner.yml";
/// The largest `.runner.yml` read: a file of checks is a few kilobytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// The most steps a file may have: each is a row on the job's page and a commit status.
pub const MAX_STEPS: usize = 64;
/// The most services beside one step.
pub const MAX_SERVICES: usize = 4;
/// The most all of a job's steps may take together.
pub const MAX_TOTAL_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// The runner's own steps' names, which a repository's steps cannot take.
pub const RESERVED_STEP_NAMES: [&str; 11] = [
    "checkout", "build", "pipeline", "smoke", "push", "plan", "approval", "apply", "rollout", "record", "preview",
];

/// What the project offers a `.runner.yml`, to check it against before anything runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileContext {
    /// The names of the secrets the project's configuration offers to steps.
    pub secrets: BTreeSet<String>,
    /// The stage names of the project's Dockerfile ([`dockerfile_stages`]), compared
    /// without case.
    pub stages: Vec<String>,
}

/// A checked `.runner.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    pub steps: Vec<StepSpec>,
    pub paths_ignore: Globs,
}

/// One step, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: StepName,
    pub image: StepImage,
    pub commands: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Names among [`FileContext::secrets`], none also a key of `env`.
    pub secrets: Vec<String>,
    pub services: Vec<ServiceSpec>,
    pub when: When,
    pub timeout: Duration,
    pub junit: Option<RelativePath>,
    pub cache: Vec<ContainerPath>,
}

/// A container started beside a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: ServiceName,
    pub image: StepImage,
    pub env: BTreeMap<String, String>,
}

impl RunFile {
    /// Whether every changed path matches `paths_ignore`, so the push deploys nothing. Not
    /// when the changes are unknown ([`ChangedPaths::All`]), nor when there are none to
    /// judge: ignoring is for pushes known to touch only ignored files.
    pub fn only_ignored(&self, changed: &ChangedPaths) -> bool {
        match changed {
            ChangedPaths::All => false,
            ChangedPaths::Paths(paths) => {
                !self.paths_ignore.is_empty()
                    && !paths.is_empty()
                    && paths.iter().all(|path| self.paths_ignore.is_match(path))
            }
        }
    }
}

/// Reads and checks `.runner.yml`'s text against what the project offers.
pub fn parse(text: &str, context: &FileContext) -> Result<RunFile, RunFileError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(RunFileError::new(
            Position::START,
            Problem::TooLarge {
                size: text.len(),
                limit: MAX_FILE_BYTES,
            },
        ));
    }
    // The library's own end-of-input error for a file of only comments points past the
    // last line and says nothing of what is missing.
    if text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#'))
    {
        return Err(RunFileError::new(Position::START, Problem::Empty));
    }
    let options = serde_saphyr::options! {
        // The error is rendered as one line here; the snippet would only be thrown away.
        with_snippet: false,
    };
    let raw: RawFile = serde_saphyr::from_str_with_options(text, options).map_err(|e| error::from_yaml(&e))?;
    Checker { context }.file(raw)
}

/// A problem at the position of the value it is about.
fn at<T>(value: &At<T>, problem: Problem) -> RunFileError {
    RunFileError::new(Position::of(&value.referenced), problem)
}

struct Checker<'a> {
    context: &'a FileContext,
}

impl Checker<'_> {
    fn file(&self, raw: RawFile) -> Result<RunFile, RunFileError> {
        if let Some(extra) = raw.steps.get(MAX_STEPS) {
            return Err(at(
                &extra.name,
                Problem::TooManySteps {
                    count: raw.steps.len(),
                    limit: MAX_STEPS,
                },
            ));
        }
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut steps = Vec::with_capacity(raw.steps.len());
        for step in raw.steps {
            if let Some(&first_line) = seen.get(&step.name.value) {
                return Err(at(
                    &step.name,
                    Problem::DuplicateStep {
                        name: step.name.value.clone(),
                        first_line,
                    },
                ));
            }
            if RESERVED_STEP_NAMES.contains(&step.name.value.as_str()) {
                return Err(at(&step.name, Problem::ReservedStep(step.name.value.clone())));
            }
            seen.insert(step.name.value.clone(), step.name.referenced.line());
            let name = step.name.clone();
            steps.push(self.step(step)?);
            let total: Duration = steps.iter().map(|step: &StepSpec| step.timeout).sum();
            if total > MAX_TOTAL_TIMEOUT {
                return Err(at(
                    &name,
                    Problem::TotalTimeout {
                        limit_hours: MAX_TOTAL_TIMEOUT.as_secs() / 3600,
                    },
                ));
            }
        }
        Ok(RunFile {
            steps,
            paths_ignore: globs(&raw.paths_ignore)?,
        })
    }

    fn step(&self, raw: RawStep) -> Result<StepSpec, RunFileError> {
        let name = StepName::parse(&raw.name.value).map_err(|problem| at(&raw.name, problem))?;
        let image = match &raw.image {
            Some(image) => self.image(image)?,
            None => StepImage::Built,
        };
        if raw.commands.value.is_empty() {
            return Err(at(&raw.commands, Problem::NoCommands));
        }
        let mut commands = Vec::with_capacity(raw.commands.value.len());
        for command in raw.commands.value {
            if command.value.trim().is_empty() {
                return Err(at(&command, Problem::EmptyCommand));
            }
            commands.push(command.value);
        }
        let env = env(raw.env)?;
        let mut secrets: Vec<String> = Vec::with_capacity(raw.secrets.len());
        for secret in raw.secrets {
            let problem = if !self.context.secrets.contains(&secret.value) {
                Problem::UnknownSecret {
                    name: secret.value.clone(),
                    offered: self.context.secrets.iter().cloned().collect(),
                }
            } else if secrets.contains(&secret.value) {
                Problem::DuplicateSecret(secret.value.clone())
            } else if env.contains_key(&secret.value) {
                Problem::SecretInEnv(secret.value.clone())
            } else {
                secrets.push(secret.value);
                continue;
            };
            return Err(at(&secret, problem));
        }
        let mut services: Vec<ServiceSpec> = Vec::with_capacity(raw.services.len());
        let mut service_lines: HashMap<String, u64> = HashMap::new();
        if let Some(extra) = raw.services.get(MAX_SERVICES) {
            return Err(at(&extra.name, Problem::TooManyServices { limit: MAX_SERVICES }));
        }
        for service in raw.services {
            if let Some(&first_line) = service_lines.get(&service.name.value) {
                return Err(at(
                    &service.name,
                    Problem::DuplicateService {
                        name: service.name.value.clone(),
                        first_line,
                    },
                ));
            }
            service_lines.insert(service.name.value.clone(), service.name.referenced.line());
            services.push(self.service(service)?);
        }
        let when = match raw.when {
            Some(when) => self.when(when)?,
            None => When::default(),
        };
        let timeout = match &raw.timeout {
            Some(timeout) => parse_timeout(&timeout.value).map_err(|reason| {
                at(
                    timeout,
                    Problem::Timeout {
                        value: timeout.value.clone(),
                        reason,
                    },
                )
            })?,
            None => DEFAULT_TIMEOUT,
        };
        let junit = match raw.reports.and_then(|reports| reports.junit) {
            Some(path) => Some(RelativePath::parse(&path.value).map_err(|reason| {
                at(
                    &path,
                    Problem::ReportPath {
                        path: path.value.clone(),
                        reason,
                    },
                )
            })?),
            None => None,
        };
        let mut cache: Vec<ContainerPath> = Vec::with_capacity(raw.cache.len());
        for path in raw.cache {
            let parsed = ContainerPath::parse(&path.value).map_err(|reason| {
                at(
                    &path,
                    Problem::CachePath {
                        path: path.value.clone(),
                        reason,
                    },
                )
            })?;
            if cache.contains(&parsed) {
                return Err(at(&path, Problem::DuplicateCache(parsed.to_string())));
            }
            cache.push(parsed);
        }
        Ok(StepSpec {
            name,
            image,
            commands,
            env,
            secrets,
            services,
            when,
            timeout,
            junit,
            cache,
        })
    }

    fn image(&self, image: &At<String>) -> Result<StepImage, RunFileError> {
        StepImage::parse(&image.value, &self.context.stages).map_err(|problem| at(image, problem))
    }

    fn service(&self, raw: RawService) -> Result<ServiceSpec, RunFileError> {
        Ok(ServiceSpec {
            name: ServiceName::parse(&raw.name.value).map_err(|problem| at(&raw.name, problem))?,
            image: self.image(&raw.image)?,
            env: env(raw.env)?,
        })
    }

    fn when(&self, raw: RawWhen) -> Result<When, RunFileError> {
        let events = match raw.event {
            Some(list) => {
                non_empty(&list, "event")?;
                let mut events = Vec::with_capacity(list.value.len());
                for name in &list.value {
                    if !EventKind::is_valid_name(&name.value) {
                        return Err(at(name, Problem::EventName(name.value.clone())));
                    }
                    events.push(EventKind::from_name(&name.value));
                }
                Some(events)
            }
            None => None,
        };
        let branches = match raw.branch {
            Some(list) => {
                non_empty(&list, "branch")?;
                Some(globs(&list.value)?)
            }
            None => None,
        };
        let paths = match raw.paths {
            Some(list) => {
                non_empty(&list, "paths")?;
                Some(globs(&list.value)?)
            }
            None => None,
        };
        Ok(When {
            events,
            branches,
            paths,
        })
    }
}

/// An empty `when` list would never match, which no one means: refused rather than read
/// as "never run".
fn non_empty(list: &At<Vec<At<String>>>, key: &'static str) -> Result<(), RunFileError> {
    if list.value.is_empty() {
        Err(at(list, Problem::EmptyCondition(key)))
    } else {
        Ok(())
    }
}

fn globs(patterns: &[At<String>]) -> Result<Globs, RunFileError> {
    let texts: Vec<&str> = patterns.iter().map(|p| p.value.as_str()).collect();
    Globs::new(&texts).map_err(|(index, reason)| match patterns.get(index) {
        Some(pattern) => at(
            pattern,
            Problem::Glob {
                pattern: pattern.value.clone(),
                reason,
            },
        ),
        None => RunFileError::new(
            Position::START,
            Problem::Glob {
                pattern: String::new(),
                reason,
            },
        ),
    })
}

fn env(raw: Option<RawEnv>) -> Result<BTreeMap<String, String>, RunFileError> {
    let mut env = BTreeMap::new();
    for (name, value) in raw.unwrap_or_default().0 {
        if !values::is_env_name(&name.value) {
            return Err(at(&name, Problem::EnvName(name.value.clone())));
        }
        let text = match &value.value {
            Some(text) if text.contains('\0') => return Err(at(&value, Problem::EnvNul(name.value))),
            Some(text) => text.clone(),
            // An empty value has no text to point at; its name does.
            None => return Err(at(&name, Problem::EnvNull(name.value.clone()))),
        };
        // The library refuses a name given twice in one mapping, so nothing is replaced.
        env.insert(name.value, text);
    }
    Ok(env)
}
