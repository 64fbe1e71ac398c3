//! `runner.example.toml` and the README held to the keys the config accepts.
//!
//! The accepted keys are not listed here: they come from tracing the `Deserialize` impls
//! of the raw config types (serde-reflection), which are what reads the file. A field
//! added to, renamed in or removed from `raw.rs` changes what these tests expect, with no
//! second list to keep in step.

use std::collections::BTreeSet;
use std::path::Path;

use serde_reflection::{ContainerFormat, Format, Tracer, TracerConfig};

use super::Config;
use super::raw::RawConfig;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runner.example.toml");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A table the config file may hold.
#[derive(Debug)]
struct Table {
    /// Its dotted path: `server`, `projects`, `projects.retention`.
    path: String,
    /// The raw type that reads it: tables read by one type take the same keys.
    type_name: String,
    /// Written `[[path]]`: an array of tables.
    array: bool,
    /// Its keys whose values are not tables of their own (numbers, strings, lists, inline
    /// tables such as `build_args`).
    keys: Vec<String>,
    /// Its keys that are tables of their own (`retention` of `projects`).
    tables: Vec<String>,
}

/// Every table the config accepts and its keys, from the root down.
fn accepted_tables() -> Vec<Table> {
    let mut tracer = Tracer::new(TracerConfig::default());
    tracer
        .trace_simple_type::<RawConfig>()
        .expect("the raw config types can be traced");
    let registry = tracer.registry().expect("every raw config type traced");
    let mut tables = Vec::new();
    walk(&registry, "RawConfig", String::new(), false, &mut tables);
    tables
}

fn walk(registry: &serde_reflection::Registry, type_name: &str, path: String, array: bool, out: &mut Vec<Table>) {
    let Some(ContainerFormat::Struct(fields)) = registry.get(type_name) else {
        panic!("{type_name} is read as a table but is not a struct with named fields");
    };
    let mut table = Table {
        path: path.clone(),
        type_name: type_name.to_owned(),
        array,
        keys: Vec::new(),
        tables: Vec::new(),
    };
    let mut children = Vec::new();
    for field in fields {
        // A map of tables (`[forges.<name>]`): one table, its name written as `*`.
        if let Format::Map { value, .. } = &field.value
            && let Some((child, _)) = table_type(registry, value)
        {
            table.tables.push(field.name.clone());
            children.push((format!("{}.*", field.name), child.to_owned(), false));
            continue;
        }
        match table_type(registry, &field.value) {
            Some((child, array)) => {
                table.tables.push(field.name.clone());
                children.push((field.name.clone(), child.to_owned(), array));
            }
            None => table.keys.push(field.name.clone()),
        }
    }
    out.push(table);
    for (name, child, array) in children {
        let child_path = if path.is_empty() {
            name
        } else {
            format!("{path}.{name}")
        };
        walk(registry, &child, child_path, array, out);
    }
}

/// The struct a field's value is read as, and whether it is a list of them: such a
/// value is a table (`[path]`) or an array of tables (`[[path]]`) of the file.
fn table_type<'a>(registry: &serde_reflection::Registry, format: &'a Format) -> Option<(&'a str, bool)> {
    let is_struct = |name: &str| matches!(registry.get(name), Some(ContainerFormat::Struct(_)));
    match format {
        Format::Option(inner) => table_type(registry, inner),
        Format::TypeName(name) if is_struct(name) => Some((name, false)),
        Format::Seq(inner) => match inner.as_ref() {
            Format::TypeName(name) if is_struct(name) => Some((name, true)),
            _ => None,
        },
        _ => None,
    }
}

/// The tables that are maps by name (`[forges.<name>]`).
const MAPS_OF_TABLES: &[&str] = &["forges"];

/// `forges.gitea` as the config's types know it: `forges.*`.
fn generic_path(path: &str) -> String {
    match path.split_once('.') {
        Some((map, name)) if MAPS_OF_TABLES.contains(&map) && !name.contains('.') => format!("{map}.*"),
        _ => path.to_owned(),
    }
}

/// What a line of the example is, once its comment marks are taken off.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Header { path: String, array: bool },
    Key(String),
    Other,
}

/// A line of the example: a table header or a `key = value` line (written, or commented
/// out) is a switch a variant turns on or off; every other line is kept as it is.
#[derive(Debug, Clone)]
struct Line {
    text: String,
    /// The line without its comment marks.
    uncommented: String,
    commented: bool,
    kind: Kind,
    /// The table the line is in once turned on (a header: its own).
    table: String,
    /// The header occurrence that opens the line's block, counted from 1 (0: the root).
    block: usize,
}

fn classify(text: &str) -> Kind {
    if let Some(rest) = text.strip_prefix('[') {
        let array = rest.starts_with('[');
        let close = if array { "]]" } else { "]" };
        let inner = rest.trim_start_matches('[');
        if let Some((path, after)) = inner.split_once(close) {
            let after = after.trim();
            if !path.is_empty()
                && path
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.".contains(&b))
                && (after.is_empty() || after.starts_with('#'))
            {
                return Kind::Header {
                    path: generic_path(path),
                    array,
                };
            }
        }
        return Kind::Other;
    }
    let key: String = text
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    if !key.is_empty() && text[key.len()..].trim_start().starts_with('=') {
        return Kind::Key(key);
    }
    Kind::Other
}

fn parse_example(text: &str) -> Vec<Line> {
    // A commented-out line belongs to the last header, commented or not (where it lands
    // when turned on); a written line to the last written header (where TOML reads it).
    let (mut any_table, mut written_table) = (String::new(), String::new());
    let (mut any_block, mut written_block, mut blocks) = (0, 0, 0);
    let mut lines = Vec::new();
    for text in text.lines() {
        let commented = text.trim_start().starts_with('#');
        let uncommented = text.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
        let kind = classify(uncommented);
        if let Kind::Header { path, .. } = &kind {
            blocks += 1;
            any_table.clone_from(path);
            any_block = blocks;
            if !commented {
                written_table.clone_from(path);
                written_block = blocks;
            }
        }
        let (table, block) = if commented {
            (any_table.clone(), any_block)
        } else {
            (written_table.clone(), written_block)
        };
        lines.push(Line {
            text: text.to_owned(),
            uncommented: uncommented.to_owned(),
            commented,
            kind,
            table,
            block,
        });
    }
    lines
}

fn is_switch(line: &Line) -> bool {
    line.kind != Kind::Other
}

#[test]
fn the_example_config_documents_every_key_the_config_accepts() {
    let lines = parse_example(&read(EXAMPLE));
    let headers: BTreeSet<(String, bool)> = lines
        .iter()
        .filter_map(|line| match &line.kind {
            Kind::Header { path, array } => Some((path.clone(), *array)),
            _ => None,
        })
        .collect();
    let documented: BTreeSet<(String, String)> = lines
        .iter()
        .filter_map(|line| match &line.kind {
            Kind::Key(key) => Some((line.table.clone(), key.clone())),
            _ => None,
        })
        .collect();
    let tables = accepted_tables();
    // A table read by the same type as another (an environment's rollout, read like the
    // project's) takes the same keys: they are documented once, where that type is.
    let paths_of_type = |type_name: &str| {
        tables
            .iter()
            .filter(|t| t.type_name == type_name)
            .map(|t| t.path.clone())
            .collect::<Vec<_>>()
    };
    let mut missing = Vec::new();
    for table in tables.iter().filter(|t| !t.path.is_empty()) {
        if !headers.contains(&(table.path.clone(), table.array)) {
            missing.push(if table.array {
                format!("[[{}]]", table.path)
            } else {
                format!("[{}]", table.path)
            });
        }
        for key in &table.keys {
            if !paths_of_type(&table.type_name)
                .into_iter()
                .any(|path| documented.contains(&(path, key.clone())))
            {
                missing.push(format!("[{}] {key}", table.path));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "runner.example.toml does not document these keys of the config (add each, commented out if it is optional, with a comment saying what it does): {missing:#?}"
    );
    // The walk found the config's tables, not an empty tree that passes by itself.
    assert!(
        tables
            .iter()
            .any(|t| t.path == "projects.retention" && t.keys == ["keep_deployments"])
    );
    assert!(tables.iter().any(|t| t.path == "projects.environments" && t.array));
}

/// Lines of the example picked by an option of an alternative.
#[derive(Debug)]
enum Pick {
    /// The `key = value` lines of a table whose text starts with this (`database_url = "postgres`).
    Key(&'static str, &'static str),
    /// Every line of a table and of the tables under it.
    Table(&'static str),
    /// Every line of the blocks of a table that hold a line starting with this.
    Block(&'static str, &'static str),
}

impl Pick {
    fn matches(&self, line: &Line, lines: &[Line]) -> bool {
        match self {
            Pick::Key(table, start) => {
                matches!(line.kind, Kind::Key(_)) && line.table == *table && line.uncommented.starts_with(start)
            }
            Pick::Table(table) => line.table == *table || line.table.starts_with(&format!("{table}.")),
            Pick::Block(table, holding) => {
                line.block != 0
                    && line.table == *table
                    && lines.iter().any(|other| {
                        other.block == line.block
                            && matches!(other.kind, Kind::Key(_))
                            && other.uncommented.starts_with(holding)
                    })
            }
        }
    }
}

use Pick::{Block, Key, Table as TablePick};

/// Keys of the example that exclude each other, as groups of named options. A variant
/// turns on the lines of the option it picks in each group (the first where it names
/// none) and turns off the lines of the group's other options; every line no group
/// names is turned on in every variant.
const ALTERNATIVES: &[&[(&str, &[Pick])]] = &[
    // One database: a SQLite file, or PostgreSQL shared by replicas.
    &[
        ("sqlite", &[Key("server", "database_url = \"sqlite")]),
        ("postgres", &[Key("server", "database_url = \"postgres")]),
    ],
    // The ssh options are refused for an engine that is not reached over SSH.
    &[
        ("unix engine", &[Key("engine", "host = \"unix")]),
        (
            "ssh engine",
            &[
                Key("engine", "host = \"ssh"),
                Key("engine", "ssh_identity_file"),
                Key("engine", "ssh_known_hosts_file"),
            ],
        ),
    ],
    // A secret comes from the environment or from a file, not both.
    &[
        ("webhook secret env", &[Key("projects", "webhook_secret_env")]),
        ("webhook secret file", &[Key("projects", "webhook_secret_file")]),
    ],
    // One environment from the project's own keys, or [[projects.environments]].
    &[
        (
            "one environment",
            &[
                Key("projects", "deploy_branches"),
                Key("projects", "deploy_tags"),
                Key("projects", "environment ="),
            ],
        ),
        ("environments", &[TablePick("projects.environments")]),
    ],
    // GitHub: a token (env or file), or an App with its private key (file or env).
    &[
        ("github token env", &[Key("projects.github", "token_env")]),
        ("github token file", &[Key("projects.github", "token_file")]),
        (
            "github app key file",
            &[
                Key("projects.github", "app_id"),
                Key("projects.github", "installation_id"),
                Key("projects.github", "private_key_file"),
            ],
        ),
        (
            "github app key env",
            &[
                Key("projects.github", "app_id"),
                Key("projects.github", "installation_id"),
                Key("projects.github", "private_key_env"),
            ],
        ),
    ],
    // A forge server's token from an env var or from a file.
    &[
        ("forge token env", &[Key("forges.*", "token_env")]),
        ("forge token file", &[Key("forges.*", "token_file")]),
    ],
    // A v2 registry with its basic auth, or ECR with its region and endpoint.
    &[
        (
            "v2 registry",
            &[
                Key("projects.registry", "kind = \"v2\""),
                Key("projects.registry", "username_env"),
                Key("projects.registry", "password_env"),
            ],
        ),
        (
            "ecr registry",
            &[
                Key("projects.registry", "kind = \"ecr\""),
                Key("projects.registry", "region"),
                Key("projects.registry", "endpoint_url"),
            ],
        ),
    ],
    // The project's rollout: the local block or the ECS one (both are [projects.rollout]).
    &[
        ("local rollout", &[Block("projects.rollout", "target = \"local\"")]),
        ("ecs rollout", &[Block("projects.rollout", "target = \"ecs\"")]),
    ],
    // A local route on a port, or under a host name.
    &[
        ("route port", &[Key("projects.rollout", "host_port")]),
        (
            "route hostname",
            &[Key("projects.rollout", "hostname"), Key("projects.rollout", "tls")],
        ),
    ],
    // Previews run pull requests' code on this engine, which an untrusted host keeps off it.
    &[
        ("previews", &[TablePick("projects.previews")]),
        ("untrusted engine", &[Key("engine", "untrusted_host")]),
    ],
    // Previews under a host name template, or on a port range.
    &[
        (
            "preview hostname",
            &[Key("projects.previews", "hostname"), Key("projects.previews", "tls")],
        ),
        (
            "preview ports",
            &[Key("projects.previews", "host_ports"), Key("projects.previews", "bind")],
        ),
    ],
];

/// The variants loaded beside the file as written: the options each picks.
const VARIANTS: &[&[&str]] = &[
    &[],
    &[
        "postgres",
        "ssh engine",
        "webhook secret file",
        "environments",
        "github app key file",
        "ecr registry",
        "ecs rollout",
        "untrusted engine",
    ],
    &[
        "github token file",
        "route hostname",
        "preview ports",
        "forge token file",
    ],
    &["github app key env"],
];

/// The example with its switches set by `on`: a switch turned on is written without its
/// comment marks, a written one turned off is left out, one left off stays a comment.
fn render(lines: &[Line], on: &dyn Fn(&Line) -> bool) -> String {
    let mut out = String::new();
    for line in lines {
        let text = match (is_switch(line), on(line), line.commented) {
            (false, _, _) | (true, false, true) => &line.text,
            (true, true, _) => &line.uncommented,
            (true, false, false) => continue,
        };
        out.push_str(text);
        out.push('\n');
    }
    out
}

/// Loads a config text as the file `runner.toml` in `dir`. The environment holds each
/// variable the example names in quotes (a value shaped like a PEM key, which every
/// secret accepts) and a terraform executable; nothing else, so no `RUNNER_*` override
/// hides a key of the file.
fn load(text: &str, example: &str, dir: &Path) -> Result<Config, super::ConfigError> {
    let example = example.to_owned();
    let env = move |name: &str| match name {
        "TERRAFORM_BIN" => Some("/bin/sh".to_owned()),
        _ if example.contains(&format!("\"{name}\"")) => Some(pem_shaped(name)),
        _ => None,
    };
    Config::parse(text, &dir.join("runner.toml"), &env)
}

fn pem_shaped(name: &str) -> String {
    format!("-----BEGIN PRIVATE KEY-----\nexample-{name}\n-----END PRIVATE KEY-----")
}

/// The example's secret files (`/run/secrets/NAME`) made in `dir`, and the example
/// pointing there.
fn with_secret_files(example: &str, dir: &Path) -> String {
    for piece in example.split("/run/secrets/").skip(1) {
        let name: String = piece.chars().take_while(|c| *c != '"').collect();
        std::fs::write(dir.join(&name), pem_shaped(&name)).expect("write a secret file");
    }
    example.replace("/run/secrets/", &format!("{}/", dir.display()))
}

#[test]
fn the_example_config_loads_as_written_and_with_every_commented_key_turned_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = with_secret_files(&read(EXAMPLE), dir.path());
    let lines = parse_example(&example);

    // A commented-out key must be a whole TOML line, or turning it on would not parse.
    for line in lines.iter().filter(|l| l.commented && is_switch(l)) {
        assert!(
            line.uncommented.parse::<toml::Table>().is_ok(),
            "runner.example.toml: this commented-out key is not a TOML line of its own: {}",
            line.text
        );
    }

    let written = load(&example, &example, dir.path()).unwrap_or_else(|e| panic!("the example as written: {e}"));
    assert_eq!(written.projects.len(), 1);

    let option_names: BTreeSet<&str> = ALTERNATIVES
        .iter()
        .flat_map(|g| g.iter().map(|(name, _)| *name))
        .collect();
    for name in VARIANTS.iter().flat_map(|v| v.iter()) {
        assert!(
            option_names.contains(name),
            "VARIANTS names {name:?}, which no group has"
        );
    }
    for (index, group) in ALTERNATIVES.iter().enumerate() {
        for (name, picks) in group.iter() {
            for pick in picks.iter() {
                assert!(
                    lines.iter().any(|line| is_switch(line) && pick.matches(line, &lines)),
                    "alternative {name:?} (group {index}): {pick:?} matches no line of runner.example.toml"
                );
            }
        }
    }

    let mut ever_on: BTreeSet<usize> = BTreeSet::new();
    for variant in VARIANTS {
        let chosen: Vec<&[Pick]> = ALTERNATIVES
            .iter()
            .map(|group| {
                group
                    .iter()
                    .find(|(name, _)| variant.contains(name))
                    .unwrap_or(&group[0])
                    .1
            })
            .collect();
        let on = |line: &Line| {
            ALTERNATIVES.iter().zip(&chosen).all(|(group, picked)| {
                let named = group
                    .iter()
                    .flat_map(|(_, picks)| picks.iter())
                    .any(|p| p.matches(line, &lines));
                !named || picked.iter().any(|p| p.matches(line, &lines))
            })
        };
        for (index, line) in lines.iter().enumerate() {
            if is_switch(line) && on(line) {
                ever_on.insert(index);
            }
        }
        let text = render(&lines, &on);
        let config = load(&text, &example, dir.path()).unwrap_or_else(|e| {
            panic!(
                "runner.example.toml with every commented-out key turned on, alternatives {variant:?} \
                 (else each group's first), does not load: {e}\n\n{text}"
            )
        });
        let project = &config.projects[0];
        // Commented-out tables were turned on.
        assert!(project.terraform.is_some() && project.github.is_some(), "{text}");
    }
    let never: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(index, line)| line.commented && is_switch(line) && !ever_on.contains(index))
        .map(|(_, line)| line.text.as_str())
        .collect();
    assert!(
        never.is_empty(),
        "these commented-out keys of runner.example.toml are turned on in no variant: {never:#?}"
    );
}

/// The keys a README text names: `[table] key` and `section.key` in backticks, and the
/// keys of each row of the configuration table. Each is (table as written, key or none,
/// where it was found).
fn readme_references(readme: &str, tables: &[Table]) -> Vec<(String, Option<String>, String)> {
    let mut found = Vec::new();
    // Fenced blocks are shell sessions and program output, not prose that names keys.
    let mut fenced = false;
    let prose: String = readme
        .lines()
        .filter(|line| {
            if line.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    for span in prose.split('`').skip(1).step_by(2) {
        // A span may be wrapped across lines.
        let span = span.split_whitespace().collect::<Vec<_>>().join(" ");
        let span = span.as_str();
        let before_value = span.split_once('=').map_or(span, |(name, _)| name).trim();
        if let Kind::Header { path, .. } = classify(span) {
            found.push((path, None, format!("`{span}`")));
        } else if let Some((header, key)) = before_value.split_once(' ')
            && let Kind::Header { path, .. } = classify(header)
            && is_identifier(key.trim())
        {
            found.push((path, Some(key.trim().to_owned()), format!("`{span}`")));
        } else if let Some((section, key)) = before_value.rsplit_once('.')
            && is_identifier(key)
            && section.split('.').all(is_identifier)
        {
            // `server.log_format`, `build.context`: a section written by its last names.
            let candidates: Vec<&Table> = tables
                .iter()
                .filter(|t| t.path == section || t.path.ends_with(&format!(".{section}")))
                .collect();
            if let Some(table) = candidates.first() {
                let key_of_any = candidates
                    .iter()
                    .find(|t| t.keys.iter().chain(&t.tables).any(|k| k == key));
                let path = key_of_any.unwrap_or(table).path.clone();
                found.push((path, Some(key.to_owned()), format!("`{span}`")));
            }
        }
    }
    for row in prose.lines().filter(|l| l.starts_with("| `[")) {
        let cells: Vec<&str> = row.split('|').collect();
        let (Some(section), Some(keys)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(Kind::Header { path, .. }) = section.split('`').nth(1).map(classify) else {
            continue;
        };
        for key in table_cell_keys(keys) {
            found.push((
                path.clone(),
                Some(key),
                format!("the configuration table's row {}", section.trim()),
            ));
        }
    }
    found
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The keys a row of the configuration table names: the backticked names outside
/// parentheses (inside them are defaults and values), and `+ name` inside them.
fn table_cell_keys(cell: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut depth = 0_usize;
    let mut before = String::new();
    let mut pieces = cell.split('`');
    while let Some(text) = pieces.next() {
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        before.push_str(text);
        let Some(span) = pieces.next() else { break };
        let name = span.split_once('=').map_or(span, |(name, _)| name).trim();
        if is_identifier(name) && (depth == 0 || before.trim_end().ends_with('+')) {
            keys.push(name.to_owned());
        }
        before.clear();
    }
    keys
}

/// Each reference that names a table or key the config does not have.
fn wrong_references(references: &[(String, Option<String>, String)], tables: &[Table]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (path, key, place) in references {
        let Some(table) = tables.iter().find(|t| t.path == *path) else {
            wrong.push(format!("{place}: there is no table [{path}]"));
            continue;
        };
        if let Some(key) = key
            && !table.keys.iter().chain(&table.tables).any(|k| k == key)
        {
            wrong.push(format!("{place}: [{path}] has no key {key}"));
        }
    }
    wrong
}

#[test]
fn every_key_the_readme_names_is_one_the_config_accepts() {
    let tables = accepted_tables();
    let references = readme_references(&read(README), &tables);
    let wrong = wrong_references(&references, &tables);
    assert!(
        wrong.is_empty(),
        "the README names keys the config does not accept: {wrong:#?}"
    );
    // The README's references were found, not skipped: one of each form.
    let named = |path: &str, key: &str| {
        references
            .iter()
            .any(|(p, k, _)| p == path && k.as_deref() == Some(key))
    };
    assert!(named("projects.retention", "keep_deployments"), "{references:#?}");
    assert!(
        named("server", "log_format") && named("projects.build", "context"),
        "{references:#?}"
    );
    assert!(named("projects.containers", "pids_limit"), "{references:#?}");
}

#[test]
fn the_readme_check_names_each_form_of_a_wrong_key() {
    let tables = accepted_tables();
    let text = "Set `[projects.retention] keep_deploys` and `server.log_formats = \"json\"`, \
                not `[engine] host` or `build.context`.\n\n\
                | `[queue]` | `workers` (2), `labelz` (none; `x`) |\n| `[projects.nope]` | `a` |\n";
    let wrong: BTreeSet<String> = wrong_references(&readme_references(text, &tables), &tables)
        .into_iter()
        .collect();
    assert_eq!(
        wrong,
        BTreeSet::from(
            [
                "`[projects.retention] keep_deploys`: [projects.retention] has no key keep_deploys",
                "`server.log_formats = \"json\"`: [server] has no key log_formats",
                "the configuration table's row `[queue]`: [queue] has no key labelz",
                "`[projects.nope]`: there is no table [projects.nope]",
                "the configuration table's row `[projects.nope]`: there is no table [projects.nope]",
            ]
            .map(str::to_owned)
        )
    );
}
