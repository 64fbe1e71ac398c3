//! `.runner.yml` as written: every key the file may hold, with where each value sits in
//! the text. [`super::parse`] checks these and builds the typed [`super::RunFile`]; the
//! doc comment on each field is the reference for its key.
//!
//! Values are read as text wherever the file format calls for text: `8080`, `true` and
//! `1.10` reach an `env` value exactly as written, never as a number or a boolean made
//! text again. Every mapping refuses keys it does not list, and a key given twice in one
//! mapping is an error.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A value and where it starts in the file.
pub(super) type At<T> = Spanned<T>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    /// `steps`: the checks to run, in order, each a mapping (see [`RawStep`]); at most 64.
    /// A file that only gives `paths_ignore` may leave it out.
    #[serde(default)]
    pub steps: Vec<RawStep>,
    /// `paths_ignore`: path patterns (see [`super::glob`]) of files whose changes alone do
    /// not call for a deploy: a push whose every changed path matches one of them deploys
    /// nothing. A push whose changes are unknown (a new branch, a force push) is never
    /// ignored.
    #[serde(default)]
    pub paths_ignore: Vec<At<String>>,
}

/// One entry of `steps`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    /// `name` (required): 1-40 characters of lowercase letters, digits, `-` and `_`,
    /// starting with a letter or a digit, unique within the file. The step is shown under
    /// this name and reports its commit status under the context `<project>/<name>`.
    pub name: At<String>,
    /// `image`: what the commands run in. `build` (the default) is the image this job
    /// built from the project's Dockerfile; `target:<stage>` is the named stage of that
    /// Dockerfile (`FROM ... AS <stage>`), built for the step; anything else is an image
    /// reference pulled from its registry (`rust:1.94`, `ghcr.io/owner/tool@sha256:...`).
    pub image: Option<At<String>>,
    /// `commands` (required, at least one): shell commands run one after another with
    /// `sh -e` in the image's working directory; the first to fail fails the step. A
    /// command may span lines (a YAML block scalar, `|`).
    pub commands: At<Vec<At<String>>>,
    /// `env`: environment variables for the commands, `NAME: value`. Names are letters,
    /// digits and `_`, not starting with a digit. Values are text: a number or a boolean is
    /// passed exactly as written (`PORT: 8080` gives `8080`, `RATIO: 1.10` gives `1.10`);
    /// an empty value must be written `""`.
    #[serde(default)]
    pub env: Option<RawEnv>,
    /// `secrets`: names of secrets the project's configuration offers, each given to the
    /// commands as an environment variable of that name. Secrets are for deploy jobs
    /// only, never a pull request's verify job. A name may not also be a key of `env`.
    #[serde(default)]
    pub secrets: Vec<At<String>>,
    /// `services`: containers started beside the step for its length, each reachable from
    /// the commands under its `name` as a host name (see [`RawService`]).
    #[serde(default)]
    pub services: Vec<RawService>,
    /// `when`: conditions for running the step; left out, the step always runs (see
    /// [`RawWhen`]).
    pub when: Option<RawWhen>,
    /// `timeout`: how long the step may run before it is stopped and fails, as hours,
    /// minutes and seconds in that order, each at most once: `90s`, `10m`, `1h30m`.
    /// Default `30m`, at most `6h`.
    pub timeout: Option<At<String>>,
    /// `reports`: files the commands leave behind for the runner to read (see
    /// [`RawReports`]).
    pub reports: Option<RawReports>,
    /// `cache`: absolute directories in the container (`/usr/local/cargo/registry`) kept
    /// from one run of this step to the next, per project and step. Not `/`, nor under
    /// `/proc`, `/sys` or `/dev`; no `..`, `:` or `,`.
    #[serde(default)]
    pub cache: Vec<At<String>>,
}

/// One entry of a step's `services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    /// `name` (required): the host name the step's commands reach the service by: 1-40
    /// characters of lowercase letters, digits and `-`, starting with a letter or a digit
    /// and not ending with `-`; unique within the step.
    pub name: At<String>,
    /// `image` (required): as a step's `image`: `build`, `target:<stage>` or an image
    /// reference.
    pub image: At<String>,
    /// `env`: the service's environment variables, as a step's `env`.
    #[serde(default)]
    pub env: Option<RawEnv>,
}

/// A step's `when`: every condition given must hold for the step to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWhen {
    /// `event`: the events the step runs for: `push`, `pull_request`, or the name of one of
    /// the runner's own triggers (`redeploy`, `rollback`, ...). Left out: every event.
    pub event: Option<At<Vec<At<String>>>>,
    /// `branch`: branch patterns (`main`, `release/*`); the step runs when the pushed
    /// branch, or a pull request's base branch, matches one. An event without a branch (a
    /// tag) does not match. Left out: every branch.
    pub branch: Option<At<Vec<At<String>>>>,
    /// `paths`: path patterns; the step runs when at least one changed file matches one,
    /// or when the changes are unknown (a new branch, a force push). Left out: any change.
    pub paths: Option<At<Vec<At<String>>>>,
}

/// A step's `reports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
    /// `junit`: a JUnit XML file the commands write (`target/junit.xml`), relative to the
    /// checkout, inside it (no `..`, not absolute). Its summary (`212 passed, 2 failed`)
    /// and failed tests are shown with the step.
    pub junit: Option<At<String>>,
}

/// An `env` mapping, in the file's order, each name and value with its position. A value
/// is `None` when the file leaves it empty or writes `~`/`null`, so that the check can
/// point at it and ask for `""`.
#[derive(Debug, Default)]
pub(super) struct RawEnv(pub Vec<(At<String>, At<Option<String>>)>);

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvVisitor;

        impl<'de> Visitor<'de> for EnvVisitor {
            type Value = RawEnv;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of variable names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnv, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<At<String>>()? {
                    entries.push((name, map.next_value::<At<Option<String>>>()?));
                }
                Ok(RawEnv(entries))
            }
        }

        deserializer.deserialize_map(EnvVisitor)
    }
}
