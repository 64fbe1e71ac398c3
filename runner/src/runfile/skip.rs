//! A commit that asks not to be checked.

/// The markers GitHub Actions honours in a commit message, lowercase; any of them, in any
/// case, anywhere in the message, skips the commit's steps.
const MARKERS: [(&str, &str); 5] = [
    ("[skip ci]", "the commit message says [skip ci]"),
    ("[ci skip]", "the commit message says [ci skip]"),
    ("[no ci]", "the commit message says [no ci]"),
    ("[skip actions]", "the commit message says [skip actions]"),
    ("[actions skip]", "the commit message says [actions skip]"),
];

/// Why the commit's steps are skipped, when its message asks for it (`[skip ci]`,
/// `[ci skip]`, `[no ci]`, `[skip actions]`, `[actions skip]`, in any case); `None` when
/// it does not.
pub fn skip_ci(message: &str) -> Option<&'static str> {
    let message = message.to_ascii_lowercase();
    MARKERS
        .iter()
        .find(|(marker, _)| message.contains(marker))
        .map(|(_, reason)| *reason)
}

#[cfg(test)]
mod tests {
    use super::skip_ci;

    #[test]
    fn each_marker_in_any_case_skips() {
        assert_eq!(skip_ci("Fix typo [skip ci]"), Some("the commit message says [skip ci]"));
        assert_eq!(skip_ci("[CI SKIP] docs"), Some("the commit message says [ci skip]"));
        assert_eq!(
            skip_ci("Docs\n\nOnly prose. [No Ci]"),
            Some("the commit message says [no ci]")
        );
        assert_eq!(
            skip_ci("x [Skip Actions]"),
            Some("the commit message says [skip actions]")
        );
        assert_eq!(
            skip_ci("x [actions skip]"),
            Some("the commit message says [actions skip]")
        );
    }

    #[test]
    fn near_misses_do_not_skip() {
        for message in [
            "",
            "skip ci",
            "[skip-ci]",
            "[skipci]",
            "[ skip ci ]",
            "(skip ci)",
            "Skip CI tests",
        ] {
            assert_eq!(skip_ci(message), None, "{message:?}");
        }
    }
}
