//! The checked values of a step: its name, image, timeout and paths, each parsed once
//! into a type that can only hold a valid one.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::error::Problem;
use crate::domain::{ImageRef, ParseError};

/// A step's name: 1-40 characters of `[a-z0-9_-]`, starting with a letter or digit. It
/// names the step's row and its commit status context, and is safe in both, in a URL
/// path and in a container name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepName(String);

impl StepName {
    pub const MAX_LEN: usize = 40;

    pub fn parse(raw: &str) -> Result<Self, Problem> {
        if crate::domain::is_plain_name(raw, Self::MAX_LEN) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Problem::StepName(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StepName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StepName {
    type Err = Problem;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for StepName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A service's name, which is its host name on the step's network: a DNS label (no `_`,
/// no trailing `-`), at most 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(raw: &str) -> Result<Self, Problem> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 40
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && !raw.ends_with('-')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Problem::ServiceName(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a step or a service runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepImage {
    /// `build`: the image this job built from the project's Dockerfile.
    Built,
    /// `target:<stage>`: a stage of the project's Dockerfile, by its lowercased name
    /// (Docker compares stage names without case).
    Stage(String),
    /// Any other image, pulled by reference.
    Reference(ImageRef),
}

impl StepImage {
    /// `raw` as `build`, `target:<stage>` (a stage among `stages`, in any case) or an image
    /// reference.
    pub fn parse(raw: &str, stages: &[String]) -> Result<Self, Problem> {
        if raw == "build" {
            return Ok(Self::Built);
        }
        if let Some(stage) = raw.strip_prefix("target:") {
            if stage.is_empty() {
                return Err(Problem::Image {
                    image: raw.to_owned(),
                    reason: "target: needs the name of a Dockerfile stage".to_owned(),
                });
            }
            let stage = stage.to_ascii_lowercase();
            return if stages.iter().any(|known| known.eq_ignore_ascii_case(&stage)) {
                Ok(Self::Stage(stage))
            } else {
                Err(Problem::UnknownStage {
                    stage,
                    known: stages.to_vec(),
                })
            };
        }
        ImageRef::parse(raw)
            .map(Self::Reference)
            .map_err(|error| Problem::Image {
                image: raw.to_owned(),
                reason: match error {
                    ParseError::ImageRef(_, why) => why.to_owned(),
                    other => other.to_string(),
                },
            })
    }
}

/// A step's default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The longest `timeout` a step may have: a step that needs longer is better split, and
/// a stuck one should not hold a worker for a day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);

/// `90s`, `10m`, `1h30m`, `2h`: hours, minutes and seconds in that order, each at most
/// once, with no spaces; more than zero and at most [`MAX_TIMEOUT`].
pub fn parse_timeout(raw: &str) -> Result<Duration, &'static str> {
    const FORM: &str = "must be hours, minutes and seconds such as 90s, 10m or 1h30m";
    if raw.is_empty() {
        return Err(FORM);
    }
    let mut total: u64 = 0;
    let mut rest = raw;
    // The units still allowed, largest first: each may appear once, in this order.
    let mut units: &[(char, u64)] = &[('h', 3600), ('m', 60), ('s', 1)];
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(FORM);
        }
        let Some(unit) = rest[digits..].chars().next() else {
            return Err("needs a unit: s, m or h (90s, 10m, 1h30m)");
        };
        let Some(index) = units.iter().position(|(u, _)| *u == unit) else {
            return Err(FORM);
        };
        let seconds = units[index].1;
        units = &units[index + 1..];
        // More digits than any allowed timeout has: refused before they could overflow.
        let amount: u64 = if digits > 6 {
            u64::MAX
        } else {
            rest[..digits].parse().map_err(|_| FORM)?
        };
        total = total.saturating_add(amount.saturating_mul(seconds));
        rest = &rest[digits + unit.len_utf8()..];
    }
    let duration = Duration::from_secs(total);
    if duration.is_zero() {
        Err("must be more than zero")
    } else if duration > MAX_TIMEOUT {
        Err("is longer than the 6h a step may run")
    } else {
        Ok(duration)
    }
}

/// A path relative to the checkout that stays inside it: not absolute, no `..`. `.` and
/// empty components are dropped (`./target//junit.xml` is `target/junit.xml`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelativePath(String);

impl RelativePath {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.starts_with('/') {
            return Err("must be relative to the checkout, not absolute");
        }
        if raw.contains('\0') {
            return Err("has a NUL character");
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err("may not contain `..`: it must stay inside the checkout"),
                part => parts.push(part),
            }
        }
        if parts.is_empty() {
            return Err("names no file");
        }
        Ok(Self(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute directory inside a container, fit to mount a cache volume on: not `/` nor
/// the kernel's own trees, and without the `:` and `,` that a mount specification would
/// read as separators. Normalised as [`RelativePath`] is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerPath(String);

impl ContainerPath {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if !raw.starts_with('/') {
            return Err("must be absolute (start with /)");
        }
        if raw.contains(['\0', ':', ',']) || raw.chars().any(char::is_control) {
            return Err("may not contain ':', ',' or control characters");
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err("may not contain `..`"),
                part => parts.push(part),
            }
        }
        match parts.first() {
            None => Err("may not be / itself"),
            Some(&("proc" | "sys" | "dev")) => Err("may not be under /proc, /sys or /dev"),
            Some(_) => Ok(Self(format!("/{}", parts.join("/")))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment variable name a shell can read back: `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_short_lowercase_words() {
        for name in ["test", "a", "0lint", "unit_tests", "e2e-chrome", &"x".repeat(40)] {
            assert!(StepName::parse(name).is_ok(), "{name}");
        }
        for name in ["", "Test", "-x", "_x", "a b", "a/b", "a.b", "ü", &"x".repeat(41)] {
            assert!(StepName::parse(name).is_err(), "{name}");
        }
    }

    #[test]
    fn service_names_are_host_names() {
        for name in ["db", "redis-1", "0cache"] {
            assert!(ServiceName::parse(name).is_ok(), "{name}");
        }
        for name in ["", "db_1", "db-", "-db", "DB", &"x".repeat(41)] {
            assert!(ServiceName::parse(name).is_err(), "{name}");
        }
    }

    #[test]
    fn images_are_the_build_a_stage_or_a_reference() {
        let stages = vec!["test".to_owned(), "DB".to_owned()];
        assert_eq!(StepImage::parse("build", &stages), Ok(StepImage::Built));
        assert_eq!(
            StepImage::parse("target:Test", &stages),
            Ok(StepImage::Stage("test".to_owned()))
        );
        assert_eq!(
            StepImage::parse("target:db", &stages),
            Ok(StepImage::Stage("db".to_owned()))
        );
        assert!(matches!(
            StepImage::parse("postgres:16", &stages),
            Ok(StepImage::Reference(image)) if image.as_str() == "postgres:16"
        ));
        assert!(matches!(
            StepImage::parse("target:nope", &stages),
            Err(Problem::UnknownStage { stage, .. }) if stage == "nope"
        ));
        assert!(matches!(
            StepImage::parse("target:", &stages),
            Err(Problem::Image { .. })
        ));
        assert!(matches!(
            StepImage::parse("Postgres", &stages),
            Err(Problem::Image { .. })
        ));
    }

    #[test]
    fn timeouts_are_hours_minutes_and_seconds() {
        let secs = |s: u64| Ok(Duration::from_secs(s));
        assert_eq!(parse_timeout("90s"), secs(90));
        assert_eq!(parse_timeout("10m"), secs(600));
        assert_eq!(parse_timeout("1h30m"), secs(5400));
        assert_eq!(parse_timeout("1h1m1s"), secs(3661));
        assert_eq!(parse_timeout("6h"), secs(6 * 3600));
        assert_eq!(parse_timeout("360m"), secs(6 * 3600));
        for bad in [
            "",
            "600",
            "10",
            "m",
            "1m30",
            "30m1h",
            "1h1h",
            "1d",
            "1.5h",
            "1 h",
            " 1h",
            "-1m",
            "0s",
            "0h0m",
            "6h1s",
            "99999999999999999999h",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_timeout("600"), Err("needs a unit: s, m or h (90s, 10m, 1h30m)"));
    }

    #[test]
    fn report_paths_stay_inside_the_checkout() {
        let ok = |raw: &str| RelativePath::parse(raw).map(|p| p.as_str().to_owned());
        assert_eq!(ok("target/junit.xml"), Ok("target/junit.xml".to_owned()));
        assert_eq!(ok("./target//junit.xml"), Ok("target/junit.xml".to_owned()));
        assert_eq!(ok("a..b/c"), Ok("a..b/c".to_owned()));
        for bad in ["", ".", "/tmp/junit.xml", "../junit.xml", "target/../../x", "a\0b"] {
            assert!(RelativePath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cache_paths_are_absolute_mountable_directories() {
        let ok = |raw: &str| ContainerPath::parse(raw).map(|p| p.as_str().to_owned());
        assert_eq!(
            ok("/usr/local/cargo/registry"),
            Ok("/usr/local/cargo/registry".to_owned())
        );
        assert_eq!(ok("/root/.cache/"), Ok("/root/.cache".to_owned()));
        for bad in [
            "", "/", "//", "relative", "/a/../b", "/a:b", "/a,b", "/proc", "/dev/shm", "/a\nb",
        ] {
            assert!(ContainerPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_names_are_shell_variables() {
        for name in ["A", "_", "RUST_LOG", "a1"] {
            assert!(is_env_name(name), "{name}");
        }
        for name in ["", "1A", "A-B", "A B", "Ä"] {
            assert!(!is_env_name(name), "{name}");
        }
    }
}
