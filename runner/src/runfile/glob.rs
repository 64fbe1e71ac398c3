//! Path and branch patterns, matched as GitHub Actions matches `paths` and `branches`:
//!
//! - a pattern is matched against the whole path from the repository's root (or the whole
//!   branch name), never a part of it: `*.md` is `README.md` but not `docs/guide.md`;
//! - `*` is any run of characters except `/`; `?` is one character except `/`;
//! - `**` is any run of characters including `/`, as a whole component: `docs/**` is
//!   everything under `docs/`, `**/*.md` every Markdown file at any depth (GitHub's
//!   `**.md` is refused with that spelling suggested);
//! - `[abc]`, `[a-z]` and `[!a-z]` are classes of one character; `{a,b}` is either;
//!   `\` makes the next character literal;
//! - matching is case-sensitive, as git's paths are.
//!
//! Patterns starting with `!` (negations) are refused rather than read as a literal `!`,
//! as are patterns starting with `/` or ending with `/`, which would match nothing a
//! commit changes.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The reason a pattern is refused, for [`super::Problem::Glob`].
pub type PatternError = String;

/// A list of patterns, compiled once, matching when any of them does.
#[derive(Debug, Clone)]
pub struct Globs {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Globs {
    /// No patterns: matches nothing.
    pub fn empty() -> Self {
        Self {
            patterns: Vec::new(),
            set: GlobSet::empty(),
        }
    }

    /// Compiles `patterns`; on a bad one, its index and why it is refused.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, (usize, PatternError)> {
        let mut builder = GlobSetBuilder::new();
        for (index, pattern) in patterns.iter().enumerate() {
            builder.add(compile(pattern.as_ref()).map_err(|reason| (index, reason))?);
        }
        // Every pattern compiled alone; the set of them can only fail on size limits of
        // the regex engine, which a file's worth of patterns stays far below.
        let set = builder.build().map_err(|error| (0, error.kind().to_string()))?;
        Ok(Self {
            patterns: patterns.iter().map(|p| p.as_ref().to_owned()).collect(),
            set,
        })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl PartialEq for Globs {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for Globs {}

/// One pattern, checked and compiled.
pub fn compile(pattern: &str) -> Result<globset::Glob, PatternError> {
    if pattern.is_empty() {
        return Err("is empty".to_owned());
    }
    if pattern.starts_with('!') {
        return Err("is a negation (leading '!'), which is not supported; list what to match instead".to_owned());
    }
    if pattern.starts_with('/') {
        return Err("starts with '/'; patterns are relative to the repository's root".to_owned());
    }
    if pattern.ends_with('/') {
        return Err(format!(
            "ends with '/' and so matches no file; write {:?} for everything under it",
            format!("{pattern}**")
        ));
    }
    // Elsewhere `**` would be read as `*`, not as GitHub Actions reads `**.js` (every
    // `.js` file at any depth): refused, with the spelling that means that here.
    let parts: Vec<&str> = pattern.split('/').collect();
    if let Some(index) = parts.iter().position(|part| part.contains("**") && *part != "**") {
        let part = parts[index];
        return Err(match part.strip_prefix("**") {
            Some(rest) if !rest.contains("**") => {
                let mut fixed = parts.clone();
                let any_depth = format!("**/*{rest}");
                fixed[index] = &any_depth;
                format!(
                    "uses ** inside a name, where it means only *; write {:?} to match at any depth",
                    fixed.join("/")
                )
            }
            _ => "uses ** inside a name; ** must be a whole path component, as in docs/** or **/*.md".to_owned(),
        });
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(false)
        .build()
        .map_err(|error| format!("is not a valid pattern: {}", error.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(patterns: &[&str]) -> Globs {
        Globs::new(patterns).expect("valid patterns")
    }

    #[test]
    fn a_star_stays_in_its_directory_and_two_cross_them() {
        let md = globs(&["*.md"]);
        assert!(md.is_match("README.md"));
        assert!(!md.is_match("docs/guide.md"));

        let any_md = globs(&["**/*.md"]);
        assert!(any_md.is_match("README.md"));
        assert!(any_md.is_match("docs/a/guide.md"));

        let docs = globs(&["docs/**"]);
        assert!(docs.is_match("docs/guide.md"));
        assert!(docs.is_match("docs/a/b/c.png"));
        assert!(!docs.is_match("docs"));
        assert!(!docs.is_match("src/docs/x"));

        let src = globs(&["src/*"]);
        assert!(src.is_match("src/main.rs"));
        assert!(!src.is_match("src/a/b.rs"));
    }

    #[test]
    fn patterns_match_whole_paths_with_classes_and_alternatives() {
        let set = globs(&["Cargo.*", "src/{lib,main}.rs", "test[0-9].txt", "a?c"]);
        for path in [
            "Cargo.toml",
            "Cargo.lock",
            "src/lib.rs",
            "src/main.rs",
            "test7.txt",
            "abc",
        ] {
            assert!(set.is_match(path), "{path}");
        }
        for path in ["x/Cargo.toml", "src/mod.rs", "testx.txt", "a/c", "cargo.toml", "Cargo"] {
            assert!(!set.is_match(path), "{path}");
        }
    }

    #[test]
    fn branch_patterns_follow_the_same_rules() {
        let set = globs(&["main", "release/*"]);
        assert!(set.is_match("main"));
        assert!(set.is_match("release/1.2"));
        assert!(!set.is_match("release/1.2/hotfix"));
        assert!(!set.is_match("mainline"));
    }

    #[test]
    fn patterns_that_would_match_nothing_or_mislead_are_refused() {
        for bad in ["", "!docs/**", "/src/**", "docs/", "src/[", "a{b", "src/**.rs"] {
            assert!(compile(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            compile("docs/").map(|_| ()),
            Err("ends with '/' and so matches no file; write \"docs/**\" for everything under it".to_owned())
        );
        assert_eq!(
            compile("src/**.rs").map(|_| ()),
            Err("uses ** inside a name, where it means only *; write \"src/**/*.rs\" to match at any depth".to_owned())
        );
        assert_eq!(
            compile("**.js").map(|_| ()),
            Err("uses ** inside a name, where it means only *; write \"**/*.js\" to match at any depth".to_owned())
        );
        assert!(compile("a**").is_err());
        assert_eq!(Globs::new(&["a", "b/"]).map(|_| ()).map_err(|(index, _)| index), Err(1));
    }

    #[test]
    fn no_patterns_match_nothing() {
        assert!(!Globs::empty().is_match("a"));
        assert!(Globs::empty().is_empty());
    }
}
