//! Whether a step runs for an event: its `when` conditions against what the event is,
//! which branch it is on and which files it changed.

use std::fmt;

use super::glob::Globs;

/// What caused a job, as far as a step's `when.event` cares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    Push,
    PullRequest,
    /// Another trigger, by the name the runner gives it (`redeploy`, `rollback`, ...).
    Other(String),
}

impl EventKind {
    pub fn from_name(name: &str) -> Self {
        match name {
            "push" => Self::Push,
            "pull_request" => Self::PullRequest,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Push => "push",
            Self::PullRequest => "pull_request",
            Self::Other(name) => name,
        }
    }

    /// A name `when.event` may hold: lowercase letters and `_`, as the runner names its
    /// triggers.
    /// The events a step can run for: a push (also one recovered or replayed), a pull
    /// request, and an operator's redeploy. Rollbacks and promotions build nothing, so no
    /// step runs for them; anything else is a typo that would silently never match.
    pub const NAMES: [&'static str; 3] = ["push", "pull_request", "redeploy"];

    pub(super) fn is_valid_name(name: &str) -> bool {
        Self::NAMES.contains(&name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The files an event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangedPaths {
    /// Unknown, so taken as the whole tree: a new branch or a push whose `before` commit is
    /// the zero id or not known, a force push, a redeploy.
    All,
    /// Paths from the repository's root (`src/main.rs`), as git names them.
    Paths(Vec<String>),
}

/// What a step's `when` is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFacts {
    pub kind: EventKind,
    /// The branch pushed to, or a pull request's base branch, without `refs/heads/`;
    /// `None` for an event on no branch (a tag).
    pub branch: Option<String>,
    pub changed: ChangedPaths,
}

/// Why a step does not run: a short sentence to show in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipReason(String);

impl SkipReason {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A step's conditions; each one left out holds for every event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct When {
    pub events: Option<Vec<EventKind>>,
    pub branches: Option<Globs>,
    pub paths: Option<Globs>,
}

impl When {
    /// `Ok` when every condition holds for `event`; otherwise why the first that does not
    /// (in the order event, branch, paths) fails.
    pub fn applies(&self, event: &EventFacts) -> Result<(), SkipReason> {
        if let Some(events) = &self.events
            && !events.contains(&event.kind)
        {
            return Err(SkipReason(format!(
                "event {} is not in when.event [{}]",
                event.kind,
                events.iter().map(EventKind::as_str).collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(branches) = &self.branches {
            let listed = branches.patterns().join(", ");
            match &event.branch {
                None => {
                    return Err(SkipReason(format!(
                        "the event is on no branch and when.branch is [{listed}]"
                    )));
                }
                Some(branch) if !branches.is_match(branch) => {
                    return Err(SkipReason(format!("branch {branch} is not in when.branch [{listed}]")));
                }
                Some(_) => {}
            }
        }
        if let Some(paths) = &self.paths {
            // Unknown changes could include any file: the step runs rather than risk
            // skipping the check a change needed.
            if let ChangedPaths::Paths(changed) = &event.changed
                && !changed.iter().any(|path| paths.is_match(path))
            {
                return Err(SkipReason("no changed path matches when.paths".to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(patterns: &[&str]) -> Option<Globs> {
        Some(Globs::new(patterns).expect("valid patterns"))
    }

    fn push(branch: &str, changed: &[&str]) -> EventFacts {
        EventFacts {
            kind: EventKind::Push,
            branch: Some(branch.to_owned()),
            changed: ChangedPaths::Paths(changed.iter().map(|p| (*p).to_owned()).collect()),
        }
    }

    fn reason(when: &When, event: &EventFacts) -> String {
        match when.applies(event) {
            Ok(()) => "runs".to_owned(),
            Err(reason) => reason.to_string(),
        }
    }

    #[test]
    fn no_conditions_run_for_everything() {
        let event = EventFacts {
            kind: EventKind::Other("redeploy".to_owned()),
            branch: None,
            changed: ChangedPaths::Paths(Vec::new()),
        };
        assert_eq!(When::default().applies(&event), Ok(()));
    }

    #[test]
    fn events_must_be_listed() {
        let when = When {
            events: Some(vec![EventKind::Push, EventKind::Other("redeploy".to_owned())]),
            ..When::default()
        };
        assert_eq!(reason(&when, &push("main", &["a"])), "runs");
        let redeploy = EventFacts {
            kind: EventKind::from_name("redeploy"),
            ..push("main", &[])
        };
        assert_eq!(reason(&when, &redeploy), "runs");
        let pr = EventFacts {
            kind: EventKind::PullRequest,
            ..push("main", &["a"])
        };
        assert_eq!(
            reason(&when, &pr),
            "event pull_request is not in when.event [push, redeploy]"
        );
    }

    #[test]
    fn branches_match_patterns() {
        let when = When {
            branches: globs(&["main", "release/*"]),
            ..When::default()
        };
        assert_eq!(reason(&when, &push("main", &["a"])), "runs");
        assert_eq!(reason(&when, &push("release/2", &["a"])), "runs");
        assert_eq!(
            reason(&when, &push("feature/x", &["a"])),
            "branch feature/x is not in when.branch [main, release/*]"
        );
        let tag = EventFacts {
            branch: None,
            ..push("main", &["a"])
        };
        assert_eq!(
            reason(&when, &tag),
            "the event is on no branch and when.branch is [main, release/*]"
        );
    }

    #[test]
    fn paths_need_one_matching_change_unless_changes_are_unknown() {
        let when = When {
            paths: globs(&["src/**", "Cargo.*"]),
            ..When::default()
        };
        assert_eq!(reason(&when, &push("main", &["docs/a.md", "Cargo.lock"])), "runs");
        assert_eq!(reason(&when, &push("main", &["src/a/b.rs"])), "runs");
        assert_eq!(
            reason(&when, &push("main", &["docs/a.md", "x/Cargo.toml"])),
            "no changed path matches when.paths"
        );
        assert_eq!(reason(&when, &push("main", &[])), "no changed path matches when.paths");
        let unknown = EventFacts {
            changed: ChangedPaths::All,
            ..push("main", &[])
        };
        assert_eq!(reason(&when, &unknown), "runs");
    }

    #[test]
    fn the_first_failing_condition_is_the_reason() {
        let when = When {
            events: Some(vec![EventKind::Push]),
            branches: globs(&["main"]),
            paths: globs(&["src/**"]),
        };
        assert_eq!(
            reason(&when, &push("dev", &["docs/x"])),
            "branch dev is not in when.branch [main]"
        );
        assert_eq!(
            reason(&when, &push("main", &["docs/x"])),
            "no changed path matches when.paths"
        );
        assert_eq!(reason(&when, &push("main", &["src/x"])), "runs");
    }

    #[test]
    fn event_names_are_lowercase_words() {
        for name in ["push", "pull_request", "redeploy"] {
            assert!(EventKind::is_valid_name(name), "{name}");
            assert_eq!(EventKind::from_name(name).as_str(), name);
        }
        for name in ["", "pull-request", "Push", "push1", &"x".repeat(41)] {
            assert!(!EventKind::is_valid_name(name), "{name}");
        }
    }
}
