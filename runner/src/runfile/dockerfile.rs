//! The stage names a Dockerfile declares, for checking a step's `image: target:<stage>`
//! before anything is built.

/// The names of the Dockerfile's stages (`FROM <image> AS <name>`), lowercased as Docker
/// compares them, in the order they appear. Reads instructions as BuildKit does: the
/// keywords in any case, `--flag`s before the image, lines continued with the escape
/// character (`\`, or the one an `# escape=` directive sets), comment lines (also inside a
/// continued instruction) skipped. Heredoc bodies are not told apart from instructions: a
/// heredoc line that reads as a `FROM ... AS ...` would count.
pub fn dockerfile_stages(dockerfile: &str) -> Vec<String> {
    let escape = escape_directive(dockerfile).unwrap_or('\\');
    let mut stages = Vec::new();
    let mut instruction = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && !instruction.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix(escape) {
            Some(head) => {
                instruction.push_str(head);
                instruction.push(' ');
            }
            None => {
                instruction.push_str(trimmed);
                if let Some(stage) = stage_name(&instruction) {
                    stages.push(stage);
                }
                instruction.clear();
            }
        }
    }
    if let Some(stage) = stage_name(&instruction) {
        stages.push(stage);
    }
    stages
}

/// `FROM [--flag...] <image> AS <name>` → `name`, lowercased.
fn stage_name(instruction: &str) -> Option<String> {
    let mut words = instruction.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("from") {
        return None;
    }
    let mut words = words.skip_while(|word| word.starts_with("--"));
    let _image = words.next()?;
    if !words.next()?.eq_ignore_ascii_case("as") {
        return None;
    }
    Some(words.next()?.to_ascii_lowercase())
}

/// The escape character an `# escape=` parser directive sets. Directives come first: the
/// first line that is not one (an instruction, a comment, a blank line) ends them.
fn escape_directive(dockerfile: &str) -> Option<char> {
    for line in dockerfile.lines() {
        let directive = line.trim().strip_prefix('#')?;
        let (key, value) = directive.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("escape") {
            let mut chars = value.trim().chars();
            return match (chars.next(), chars.next()) {
                (Some(c @ ('\\' | '`')), None) => Some(c),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::dockerfile_stages;

    #[test]
    fn stages_are_read_from_from_lines_in_any_case() {
        let dockerfile = "\
# syntax=docker/dockerfile:1
ARG RUST=1.94
FROM rust:${RUST} AS Chef
from chef as planner
FROM --platform=$BUILDPLATFORM chef AS builder
FROM builder AS test
RUN cargo test
FROM debian:bookworm-slim
FROM postgres:16 AS db # not a comment: Docker would refuse it
";
        assert_eq!(
            dockerfile_stages(dockerfile),
            ["chef", "planner", "builder", "test", "db"]
        );
    }

    #[test]
    fn continued_lines_and_comments_inside_them_are_read_as_docker_reads_them() {
        let dockerfile = "\
FROM \\
    # the toolchain
    rust:1.94 \\

    AS build
RUN echo FROM x AS not_a_stage
#FROM y AS commented
  FROM   z   AS   spaced
";
        assert_eq!(dockerfile_stages(dockerfile), ["build", "spaced"]);
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let dockerfile = "# escape=`\nFROM mcr.microsoft.com/windows `\n  AS win\nRUN dir c:\\\nFROM win AS second\n";
        assert_eq!(dockerfile_stages(dockerfile), ["win", "second"]);
        let without = "FROM a AS one\nRUN dir c:\\\nFROM b AS joined\n";
        assert_eq!(dockerfile_stages(without), ["one"]);
    }

    #[test]
    fn no_stages_in_files_without_named_from_lines() {
        assert!(dockerfile_stages("").is_empty());
        assert!(dockerfile_stages("FROM alpine\nRUN true\n").is_empty());
        assert!(dockerfile_stages("FROM alpine AS").is_empty());
    }
}
