//! `.runner.yml` read whole: what a valid file becomes, and where each kind of mistake is
//! reported.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::domain::ImageRef;

fn context() -> FileContext {
    FileContext {
        secrets: ["NPM_TOKEN".to_owned(), "DEPLOY_KEY".to_owned()].into(),
        stages: vec!["test".to_owned(), "db".to_owned()],
    }
}

fn parsed(text: &str) -> RunFile {
    match parse(text, &context()) {
        Ok(file) => file,
        Err(error) => panic!("{error}"),
    }
}

/// The rendered error for `text`, which must be refused.
fn error(text: &str) -> String {
    parse(text, &context()).map(|_| ()).expect_err("refused").to_string()
}

const FULL: &str = r#"# The project's checks.
steps:
  - name: test
    image: target:test
    commands: ["cargo test --locked"]
    env: { RUST_LOG: info, PORT: 8080, VERBOSE: true, RATIO: 1.10, EMPTY: "" }
    secrets: [NPM_TOKEN]
    services:
      - { name: db, image: target:db, env: { POSTGRES_PASSWORD: x } }
      - name: cache
        image: redis:7
    when: { event: [push, pull_request], branch: [main, "release/*"], paths: ["src/**", "Cargo.*"] }
    timeout: 10m
    reports: { junit: ./target/junit.xml }
    cache: [/usr/local/cargo/registry]
  - name: lint
    commands:
      - cargo fmt --check
      - |
        cargo clippy --all-targets \
          -- -D warnings
paths_ignore: ["docs/**", "*.md"]
"#;

#[test]
fn a_full_file_becomes_typed_steps() {
    let file = parsed(FULL);
    assert_eq!(file.steps.len(), 2);
    let test = &file.steps[0];
    assert_eq!(test.name.as_str(), "test");
    assert_eq!(test.image, StepImage::Stage("test".to_owned()));
    assert_eq!(test.commands, ["cargo test --locked"]);
    let env: BTreeMap<String, String> = [
        ("EMPTY", ""),
        ("PORT", "8080"),
        ("RATIO", "1.10"),
        ("RUST_LOG", "info"),
        ("VERBOSE", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(test.env, env);
    assert_eq!(test.secrets, ["NPM_TOKEN"]);
    assert_eq!(test.services.len(), 2);
    assert_eq!(test.services[0].name.as_str(), "db");
    assert_eq!(test.services[0].image, StepImage::Stage("db".to_owned()));
    assert_eq!(
        test.services[0].env.get("POSTGRES_PASSWORD").map(String::as_str),
        Some("x")
    );
    assert_eq!(
        test.services[1].image,
        StepImage::Reference(ImageRef::parse("redis:7").expect("valid reference"))
    );
    assert!(test.services[1].env.is_empty());
    assert_eq!(test.when.events, Some(vec![EventKind::Push, EventKind::PullRequest]));
    assert_eq!(
        test.when.branches.as_ref().map(Globs::patterns),
        Some(&["main".to_owned(), "release/*".to_owned()][..])
    );
    assert_eq!(test.timeout, Duration::from_secs(600));
    assert_eq!(test.junit.as_ref().map(RelativePath::as_str), Some("target/junit.xml"));
    assert_eq!(
        test.cache.iter().map(ContainerPath::as_str).collect::<Vec<_>>(),
        ["/usr/local/cargo/registry"]
    );

    let lint = &file.steps[1];
    assert_eq!(lint.image, StepImage::Built);
    assert_eq!(
        lint.commands,
        ["cargo fmt --check", "cargo clippy --all-targets \\\n  -- -D warnings\n"]
    );
    assert_eq!(lint.when, When::default());
    assert_eq!(lint.timeout, DEFAULT_TIMEOUT);
    assert_eq!(lint.junit, None);
    assert!(lint.env.is_empty() && lint.secrets.is_empty() && lint.services.is_empty() && lint.cache.is_empty());

    assert_eq!(file.paths_ignore.patterns(), ["docs/**", "*.md"]);
}

#[test]
fn a_file_may_hold_only_paths_ignore() {
    let file = parsed("paths_ignore: [docs/**]\n");
    assert!(file.steps.is_empty());
    assert!(file.only_ignored(&ChangedPaths::Paths(vec!["docs/a.md".to_owned()])));
}

#[test]
fn only_ignored_needs_known_changes_all_of_them_ignored() {
    let file = parsed(FULL);
    let paths = |paths: &[&str]| ChangedPaths::Paths(paths.iter().map(|p| (*p).to_owned()).collect());
    assert!(file.only_ignored(&paths(&["docs/guide/setup.md", "README.md"])));
    assert!(!file.only_ignored(&paths(&["docs/guide.md", "src/main.rs"])));
    // `*.md` stays at the root: a Markdown file elsewhere is not ignored.
    assert!(!file.only_ignored(&paths(&["runner/NOTES.md"])));
    assert!(!file.only_ignored(&paths(&[])));
    assert!(!file.only_ignored(&ChangedPaths::All));

    let without = parsed("steps: []\n");
    assert!(!without.only_ignored(&paths(&["README.md"])));
}

#[test]
fn yaml_syntax_errors_are_placed() {
    assert_eq!(error("steps: [\n"), ".runner.yml:1:8: unclosed bracket '['");
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n   oops\n"),
        ".runner.yml:4:4: while parsing a block collection, did not find expected '-' indicator"
    );
    assert_eq!(error("steps:\n  - name: 'a\n"), ".runner.yml:2:11: unclosed quote");
    assert_eq!(
        error("steps:\n\t- name: a\n"),
        ".runner.yml:2:2: tabs disallowed within this context (block indentation)"
    );
    assert_eq!(
        error("---\nsteps: []\n---\nsteps: []\n"),
        ".runner.yml:4:1: only single YAML document expected but multiple found"
    );
}

#[test]
fn unknown_keys_are_refused_where_they_are() {
    assert_eq!(
        error("steps: []\nstep: []\n"),
        ".runner.yml:2:1: unknown field `step`, expected one of steps, paths_ignore"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    comands: [y]\n"),
        ".runner.yml:4:5: unknown field `comands`, expected one of name, image, commands, env, secrets, services, when, timeout, reports, cache"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    when: { branches: [main] }\n"),
        ".runner.yml:4:13: unknown field `branches`, expected one of event, branch, paths"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    reports: { xunit: a.xml }\n"),
        ".runner.yml:4:16: unknown field `xunit`, expected one of junit"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    services: [{ name: db, image: x, port: 5432 }]\n"),
        ".runner.yml:4:38: unknown field `port`, expected one of name, image, env"
    );
}

#[test]
fn wrong_types_and_missing_keys_are_placed() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: cargo test\n"),
        ".runner.yml:3:15: expected a list"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    env: [A]\n"),
        ".runner.yml:4:10: expected a mapping"
    );
    assert_eq!(
        error("steps:\n  - name: [a]\n    commands: [x]\n"),
        ".runner.yml:2:11: expected string scalar"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    image: build\n"),
        ".runner.yml:3:5: missing field `commands`"
    );
    assert_eq!(
        error("steps:\n  - image: build\n    commands: [x]\n"),
        ".runner.yml:3:5: missing field `name`"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    env: { A: 1, A: 2 }\n"),
        ".runner.yml:4:18: duplicate mapping key `A` is not allowed here"
    );
}

#[test]
fn empty_and_oversized_files_are_refused() {
    for empty in ["", "\n\n", "# nothing yet\n  # still nothing\n", "\u{feff}# nothing\n"] {
        assert_eq!(
            error(empty),
            ".runner.yml:1:1: the file has no YAML in it; it needs at least `steps:`"
        );
    }
    let large = format!("steps: []\n{}", "#".repeat(MAX_FILE_BYTES));
    assert_eq!(
        error(&large),
        format!(
            ".runner.yml:1:1: the file is {} bytes; it may be at most {MAX_FILE_BYTES} bytes",
            large.len()
        )
    );
}

#[test]
fn step_names_must_be_valid_and_unique() {
    assert_eq!(
        error("steps:\n  - name: Unit Tests\n    commands: [x]\n"),
        ".runner.yml:2:11: step name \"Unit Tests\" must be 1-40 characters of lowercase letters, digits, '-' and '_', starting with a letter or digit"
    );
    assert_eq!(
        error(
            "steps:\n  - name: test\n    commands: [x]\n  - name: lint\n    commands: [y]\n  -   name: test\n      commands: [z]\n"
        ),
        ".runner.yml:6:13: step name \"test\" is already used by the step at line 2"
    );
    let many: String = (0..=MAX_STEPS)
        .map(|i| format!("  - {{ name: s{i}, commands: [x] }}\n"))
        .collect();
    assert_eq!(
        error(&format!("steps:\n{many}")),
        format!(
            ".runner.yml:{}:13: the file has {} steps; it may have at most {MAX_STEPS}",
            MAX_STEPS + 2,
            MAX_STEPS + 1
        )
    );
}

#[test]
fn images_must_be_the_build_a_known_stage_or_a_reference() {
    assert_eq!(
        error("steps:\n  - name: a\n    image: target:tests\n    commands: [x]\n"),
        ".runner.yml:3:12: the Dockerfile has no stage named \"tests\" (its stages: test, db)"
    );
    assert_eq!(
        error(
            "steps:\n  - name: a\n    commands: [x]\n    services:\n      - name: db\n        image: target:postgres\n"
        ),
        ".runner.yml:6:16: the Dockerfile has no stage named \"postgres\" (its stages: test, db)"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    image: Rust:latest\n    commands: [x]\n"),
        ".runner.yml:3:12: image \"Rust:latest\" is not `build`, `target:<stage>` or a valid image reference: repository path must be lowercase letters, digits and separators"
    );
    let no_stages = FileContext::default();
    assert_eq!(
        parse(
            "steps: [{ name: a, image: \"target:test\", commands: [x] }]\n",
            &no_stages
        )
        .map(|_| ())
        .expect_err("refused")
        .to_string(),
        ".runner.yml:1:27: the Dockerfile has no stage named \"test\" (its stages: none)"
    );
}

#[test]
fn commands_must_be_there_and_not_blank() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: []\n"),
        ".runner.yml:3:15: commands is empty; a step runs at least one command"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands:\n      - make\n      - \"  \"\n"),
        ".runner.yml:5:9: this command is empty"
    );
}

#[test]
fn env_names_and_values_are_checked() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    env:\n      RUST-LOG: info\n"),
        ".runner.yml:5:7: env name \"RUST-LOG\" must be letters, digits and '_', not starting with a digit"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    env:\n      TOKEN:\n"),
        ".runner.yml:5:7: env TOKEN has no value; write \"\" for an empty one"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    env: { A: \"x\\0y\" }\n"),
        ".runner.yml:4:15: env A has a NUL character, which no environment variable can hold"
    );
}

#[test]
fn secrets_must_be_offered_once_and_not_shadowed() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    secrets: [NPM_TOKEN, AWS_KEY]\n"),
        ".runner.yml:4:26: the project offers no secret named \"AWS_KEY\" (it offers: DEPLOY_KEY, NPM_TOKEN)"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    secrets:\n      - NPM_TOKEN\n      - NPM_TOKEN\n"),
        ".runner.yml:6:9: secret NPM_TOKEN is listed twice"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    env: { NPM_TOKEN: x }\n    secrets: [NPM_TOKEN]\n"),
        ".runner.yml:5:15: NPM_TOKEN is both a secret and a key of env; give it in one place"
    );
}

#[test]
fn services_need_host_names_unique_in_their_step() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    services:\n      - { name: db_1, image: postgres }\n"),
        ".runner.yml:5:17: service name \"db_1\" must be 1-40 characters of lowercase letters, digits and '-', starting with a letter or digit and not ending with '-'"
    );
    assert_eq!(
        error(
            "steps:\n  - name: a\n    commands: [x]\n    services:\n      - { name: db, image: postgres }\n      - { name: db, image: redis }\n"
        ),
        ".runner.yml:6:17: service name \"db\" is already used by the service at line 5 of this step"
    );
    // The same service name in two steps is two services.
    parsed(
        "steps:\n  - { name: a, commands: [x], services: [{ name: db, image: postgres }] }\n  - { name: b, commands: [x], services: [{ name: db, image: postgres }] }\n",
    );
}

#[test]
fn timeouts_are_checked() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    timeout: 600\n"),
        ".runner.yml:4:14: timeout \"600\" needs a unit: s, m or h (90s, 10m, 1h30m)"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    timeout: 7h\n"),
        ".runner.yml:4:14: timeout \"7h\" is longer than the 6h a step may run"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    timeout: 10 minutes\n"),
        ".runner.yml:4:14: timeout \"10 minutes\" must be hours, minutes and seconds such as 90s, 10m or 1h30m"
    );
    let file = parsed("steps:\n  - { name: a, commands: [x], timeout: 1h30m }\n");
    assert_eq!(file.steps[0].timeout, Duration::from_secs(5400));
}

#[test]
fn patterns_are_checked_where_they_are() {
    assert_eq!(
        error("steps: []\npaths_ignore:\n  - docs/**\n  - \"src/[\"\n"),
        ".runner.yml:4:5: pattern \"src/[\" is not a valid pattern: unclosed character class; missing ']'"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    when: { paths: [\"!docs/**\"] }\n"),
        ".runner.yml:4:21: pattern \"!docs/**\" is a negation (leading '!'), which is not supported; list what to match instead"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    when:\n      branch: [main, feature/]\n"),
        ".runner.yml:5:22: pattern \"feature/\" ends with '/' and so matches no file; write \"feature/**\" for everything under it"
    );
}

#[test]
fn when_lists_are_checked() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    when: { branch: [] }\n"),
        ".runner.yml:4:21: when.branch is empty; leave it out to have no condition on it"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    when:\n      event: [push, pull-request]\n"),
        ".runner.yml:5:21: event \"pull-request\" is not one a step runs for: push, pull_request or redeploy"
    );
    // A typo would never match: refused, as are triggers that run no step.
    for event in ["pushh", "rollback", "promote"] {
        assert!(
            error(&format!(
                "steps:\n  - {{ name: a, commands: [x], when: {{ event: [{event}] }} }}\n"
            ))
            .contains(&format!("event \"{event}\" is not one a step runs for")),
            "{event}"
        );
    }
    let file = parsed("steps:\n  - { name: a, commands: [x], when: { event: [redeploy] } }\n");
    assert_eq!(
        file.steps[0].when.events,
        Some(vec![EventKind::Other("redeploy".to_owned())])
    );
}

#[test]
fn report_and_cache_paths_are_checked() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    reports: { junit: ../junit.xml }\n"),
        ".runner.yml:4:23: reports.junit \"../junit.xml\" may not contain `..`: it must stay inside the checkout"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    reports:\n      junit: /tmp/junit.xml\n"),
        ".runner.yml:5:14: reports.junit \"/tmp/junit.xml\" must be relative to the checkout, not absolute"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    cache: [target]\n"),
        ".runner.yml:4:13: cache path \"target\" must be absolute (start with /)"
    );
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n    cache: [/a/b, /a/b/]\n"),
        ".runner.yml:4:19: cache path \"/a/b\" is listed twice"
    );
}

#[test]
fn an_alias_is_reported_where_it_is_used() {
    assert_eq!(
        error("steps:\n  - name: &n test\n    commands: [x]\n  - name: *n\n    commands: [y]\n"),
        ".runner.yml:4:11: step name \"test\" is already used by the step at line 2"
    );
}

#[test]
fn every_error_is_one_line() {
    let texts = [
        "steps:\n  - name: a\n    commands: [x]\n    env: { A: 1, A: 2 }\n",
        "steps: [\n",
        "steps:\n  - name: \"a\\nb\"\n    commands: [x]\n",
        "steps:\n  - name: a\n    commands: [x]\n    image: \"a\\tb\"\n",
    ];
    for text in texts {
        let message = error(text);
        assert!(!message.contains('\n') && !message.contains('\t'), "{message:?}");
    }
}

#[test]
fn the_example_in_the_module_docs_parses() {
    let example = r#"
steps:
  - name: test
    image: target:test
    commands: ["cargo test --locked"]
    env: { RUST_LOG: info }
    secrets: [NPM_TOKEN]
    services:
      - { name: db, image: postgres:16, env: { POSTGRES_PASSWORD: x } }
    when: { event: [push, pull_request], branch: [main], paths: ["src/**", "Cargo.*"] }
    timeout: 10m
    reports: { junit: target/junit.xml }
    cache: [/usr/local/cargo/registry]
paths_ignore: ["docs/**", "**/*.md"]
"#;
    let file = parsed(example);
    assert_eq!(file.steps[0].name.as_str(), "test");
}

#[test]
fn the_runners_own_step_names_too_many_services_and_too_long_a_job_are_refused() {
    assert_eq!(
        error("steps:\n  - name: a\n    commands: [x]\n  - name: smoke\n    commands: [x]\n"),
        ".runner.yml:4:11: step name \"smoke\" is the runner's own step's; choose another"
    );
    let services: String = (1..=5)
        .map(|n| format!("      - {{ name: s{n}, image: \"busybox:1\" }}\n"))
        .collect();
    assert_eq!(
        error(&format!(
            "steps:\n  - name: a\n    commands: [x]\n    services:\n{services}"
        )),
        ".runner.yml:9:17: a step has at most 4 services"
    );
    assert_eq!(
        error("steps:\n  - { name: a, commands: [x], timeout: 4h }\n  - { name: b, commands: [x], timeout: 2h1m }\n"),
        ".runner.yml:3:13: the steps' timeouts add up to more than 6 hours, the most one job may take"
    );
}

#[test]
fn this_repositorys_own_runner_yml_is_valid_for_the_webapps_dockerfile() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(".runner.yml")).expect("the repository's .runner.yml");
    let dockerfile = std::fs::read_to_string(root.join("webapp/Dockerfile")).expect("webapp/Dockerfile");
    let context = FileContext {
        secrets: BTreeSet::new(),
        stages: dockerfile_stages(&dockerfile),
    };
    let file = parse(&text, &context).unwrap_or_else(|e| panic!("{e}"));
    let test = &file.steps[0];
    assert_eq!(test.name.as_str(), "webapp-tests");
    assert_eq!(test.image, StepImage::Stage("test".to_owned()));
    assert!(test.commands[0].starts_with("cargo test --locked --offline -p webapp"));
}
