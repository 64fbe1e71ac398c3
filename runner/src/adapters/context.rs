//! The build context: the context directory of the checkout as a tar archive, without
//! what `.dockerignore` excludes (Docker's rules: `*`, `?`, `**`, `!` exceptions, last
//! match wins) and never the `.git` directory. Symbolic links are archived as links and
//! never followed: neither the context directory nor `.dockerignore` may lead out of the
//! checkout.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One `.dockerignore` rule.
#[derive(Debug, Clone)]
struct Rule {
    segments: Vec<String>,
    exclude: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (exclude, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (false, rest.trim()),
                    None => (true, line),
                };
                let segments: Vec<String> = pattern
                    .trim_start_matches("./")
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (!segments.is_empty()).then_some(Rule { segments, exclude })
            })
            .collect();
        Self { rules }
    }

    /// Whether `path` (relative, '/'-separated) is left out of the context. A pattern that
    /// matches a directory excludes everything under it.
    pub fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for rule in &self.rules {
            let matched = (1..=parts.len()).any(|len| matches_segments(&rule.segments, &parts[..len]));
            if matched {
                excluded = rule.exclude;
            }
        }
        excluded
    }
}

fn matches_segments(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => {
            matches_segments(&pattern[1..], path) || (!path.is_empty() && matches_segments(pattern, &path[1..]))
        }
        (Some(p), Some(segment)) => {
            wildcard(p.as_bytes(), segment.as_bytes()) && matches_segments(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// `*` (any run of characters) and `?` (one character) within one path segment.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&pattern[1..], text) || (!text.is_empty() && wildcard(pattern, &text[1..])),
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => wildcard(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Fails unless `path`, with every symbolic link resolved, lies inside `root`. A path
/// that does not exist yet is inside (nothing can be read through it).
pub fn inside(root: &Path, path: &Path) -> Result<(), String> {
    let root = std::fs::canonicalize(root).map_err(|e| format!("cannot resolve {}: {e}", root.display()))?;
    match std::fs::canonicalize(path) {
        Ok(resolved) if resolved.starts_with(&root) => Ok(()),
        Ok(_) => Err("it leads out of the checkout through a symbolic link".to_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A dangling link is not a path "that does not exist yet".
            if std::fs::symlink_metadata(path).is_ok() {
                Err("it is a symbolic link to nothing inside the checkout".to_owned())
            } else {
                Ok(())
            }
        }
        Err(error) => Err(format!("cannot resolve it: {error}")),
    }
}
/// The `# syntax=` parser directive of a pull request's Dockerfile, blanked out in the
/// checkout (the runner's own copy) before it is packed; returns the line if there was
/// one. With it, BuildKit would build with a frontend image the pull request names, which
/// could ignore what keeps the build apart from deploy builds. The engine's own frontend
/// builds it instead; the line numbers stay.
pub fn drop_frontend_choice(checkout: &Path, dir: &Path, dockerfile: &str) -> Result<Option<String>, String> {
    let path = dir.join(dockerfile);
    let resolved = match std::fs::canonicalize(&path) {
        Ok(resolved) => resolved,
        // The engine says what is missing.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot resolve the Dockerfile: {error}")),
    };
    // BuildKit resolves the Dockerfile inside the context: so does this, or it leaves it be.
    let context = std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve the build context: {e}"))?;
    inside(checkout, &resolved).map_err(|e| format!("the Dockerfile: {e}"))?;
    if !resolved.starts_with(&context) {
        return Err("the Dockerfile leads out of the build context through a symbolic link".to_owned());
    }
    let text = std::fs::read_to_string(&resolved).map_err(|e| format!("cannot read the Dockerfile: {e}"))?;
    let (kept, dropped) = without_frontend_choice(&text);
    if let Some(line) = &dropped {
        std::fs::write(&resolved, kept).map_err(|e| format!("cannot rewrite the Dockerfile: {e}"))?;
        Ok(Some(line.clone()))
    } else {
        Ok(None)
    }
}

/// `text` without its `syntax` directive, and that directive. Directives are the
/// `# key=value` lines at the top; BuildKit stops looking at the first other line, this
/// looks on through comments and blank lines too (blanking one too many does no harm).
fn without_frontend_choice(text: &str) -> (String, Option<String>) {
    let mut dropped = None;
    let mut kept = String::with_capacity(text.len());
    let mut in_head = true;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_start_matches('\u{feff}').trim();
        in_head = in_head && (bare.is_empty() || bare.starts_with('#'));
        let is_syntax = in_head
            && bare
                .strip_prefix('#')
                .and_then(|rest| rest.split_once('='))
                .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case("syntax"));
        if is_syntax {
            dropped.get_or_insert_with(|| format!("line {}: {bare}", index + 1));
            kept.push_str(if line.ends_with('\n') { "#\n" } else { "#" });
        } else {
            kept.push_str(line);
        }
    }
    (kept, dropped)
}

/// Packs `dir` into a tar archive, honouring its `.dockerignore`. The Dockerfile is
/// always included, as Docker does, even when a pattern matches it. `dir` must lie inside
/// `checkout`.
pub fn pack(checkout: &Path, dir: &Path, dockerfile: &str) -> Result<Vec<u8>, String> {
    inside(checkout, dir).map_err(|e| format!("the build context {}: {e}", dir.display()))?;
    let ignore_path = dir.join(".dockerignore");
    if std::fs::symlink_metadata(&ignore_path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(".dockerignore is a symbolic link; it must be a file of the repository".into());
    }
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => DockerIgnore::parse(&text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(error) => return Err(format!("cannot read .dockerignore: {error}")),
    };
    let tree = Tree {
        what: "the build context",
        prefix: None,
        skip: &|relative: &str| {
            relative == ".git" || relative.starts_with(".git/") || (ignore.excludes(relative) && relative != dockerfile)
        },
        modes: Modes {
            directory: 0o755,
            file: 0o644,
            executable: 0o755,
        },
        max_bytes: u64::MAX,
    };
    tree.pack(dir)
}

/// Packs the whole checkout (its `.git` too, for steps that ask git) under `prefix/`, for
/// a step's container: everything writable by whoever the image runs as (the copy is the
/// step's own), symbolic links kept as links, never followed. At most `max_bytes` of
/// archive, headers included.
pub fn pack_tree(root: &Path, prefix: &str, max_bytes: u64) -> Result<Vec<u8>, String> {
    let tree = Tree {
        what: "the checkout",
        prefix: Some(prefix),
        skip: &|_: &str| false,
        modes: Modes {
            directory: 0o777,
            file: 0o666,
            executable: 0o777,
        },
        max_bytes,
    };
    tree.pack(root)
}

/// How a tree of files becomes a tar archive.
struct Tree<'a> {
    /// What the tree is, as errors name it.
    what: &'a str,
    /// A directory every entry goes under.
    prefix: Option<&'a str>,
    /// Paths (relative, `/`-separated) left out, with what is below them.
    skip: &'a dyn Fn(&str) -> bool,
    modes: Modes,
    max_bytes: u64,
}

struct Modes {
    directory: u32,
    file: u32,
    executable: u32,
}

impl Tree<'_> {
    /// Entries in name order; symbolic links as links, never followed; neither sockets,
    /// pipes nor devices.
    fn pack(&self, root: &Path) -> Result<Vec<u8>, String> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut total = 0_u64;
        let mut count = |bytes: u64| {
            // A tar entry is a 512-byte header and its content padded to 512 bytes.
            total = total.saturating_add(bytes.div_ceil(512) * 512 + 512);
            if total > self.max_bytes {
                return Err(format!(
                    "{} is larger than {} MiB",
                    self.what,
                    self.max_bytes / (1024 * 1024)
                ));
            }
            Ok(())
        };
        if let Some(prefix) = self.prefix {
            count(0)?;
            builder
                .append_data(
                    &mut self.header(tar::EntryType::Directory, false, 0),
                    prefix,
                    std::io::empty(),
                )
                .map_err(|e| format!("cannot add {prefix}: {e}"))?;
        }
        let mut pending = vec![root.to_path_buf()];
        while let Some(current) = pending.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&current)
                .map_err(|e| format!("cannot read {}: {e}", current.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cannot read {}: {e}", current.display()))?;
            entries.sort_by_key(std::fs::DirEntry::file_name);
            for entry in entries {
                let path = entry.path();
                let relative = path
                    .strip_prefix(root)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .replace('\\', "/");
                if (self.skip)(&relative) {
                    continue;
                }
                let name = match self.prefix {
                    Some(prefix) => format!("{prefix}/{relative}"),
                    None => relative.clone(),
                };
                let kind = entry.file_type().map_err(|e| e.to_string())?;
                let add_error = |e: std::io::Error| format!("cannot add {relative}: {e}");
                if kind.is_dir() {
                    count(0)?;
                    builder
                        .append_data(
                            &mut self.header(tar::EntryType::Directory, false, 0),
                            &name,
                            std::io::empty(),
                        )
                        .map_err(add_error)?;
                    pending.push(path);
                } else if kind.is_symlink() {
                    count(0)?;
                    let target = std::fs::read_link(&path).map_err(add_error)?;
                    let mut header = stable_header(tar::EntryType::Symlink, 0o777, 0);
                    builder.append_link(&mut header, &name, &target).map_err(add_error)?;
                } else if kind.is_file() {
                    let file = std::fs::File::open(&path).map_err(add_error)?;
                    let metadata = file.metadata().map_err(add_error)?;
                    count(metadata.len())?;
                    let executable = metadata.permissions().mode() & 0o111 != 0;
                    let mut header = self.header(tar::EntryType::Regular, executable, metadata.len());
                    builder.append_data(&mut header, &name, file).map_err(add_error)?;
                }
            }
        }
        builder
            .into_inner()
            .map_err(|e| format!("cannot finish the archive of {}: {e}", self.what))
    }

    fn header(&self, kind: tar::EntryType, executable: bool, size: u64) -> tar::Header {
        let mode = match kind {
            tar::EntryType::Directory => self.modes.directory,
            _ if executable => self.modes.executable,
            _ => self.modes.file,
        };
        stable_header(kind, mode, size)
    }
}

/// Headers that depend only on content and the executable bit: a fresh checkout's
/// timestamps and owners would otherwise defeat the engine's layer cache.
fn stable_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steps_copy_of_the_checkout_is_writable_keeps_links_as_links_and_has_a_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
        std::fs::write(root.join("README.md"), "hello\n").expect("write");
        std::os::unix::fs::symlink("/etc/shadow", root.join("shadow")).expect("symlink");
        let tar = pack_tree(root, "checkout", 1024 * 1024).expect("packed");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let header = entry.header();
            let path = entry.path().expect("path").display().to_string();
            let link = header.link_name().expect("link").map(|l| l.display().to_string());
            seen.push((path, header.mode().expect("mode"), link));
        }
        assert_eq!(
            seen,
            [
                ("checkout".to_owned(), 0o777, None),
                ("checkout/.git".to_owned(), 0o777, None),
                ("checkout/README.md".to_owned(), 0o666, None),
                ("checkout/shadow".to_owned(), 0o777, Some("/etc/shadow".to_owned())),
                ("checkout/.git/HEAD".to_owned(), 0o666, None),
            ]
        );
        // Headers count: many empty files are no small tree.
        for n in 0..64 {
            std::fs::write(root.join(format!("empty-{n}")), "").expect("write");
        }
        let error = pack_tree(root, "checkout", 32 * 1024).expect_err("over the limit");
        assert!(error.starts_with("the checkout is larger than"), "{error}");
    }

    #[test]
    fn a_frontend_choice_at_the_top_is_blanked_and_nothing_else() {
        let (kept, dropped) = without_frontend_choice("# syntax=evil/frontend:1\nFROM scratch\n");
        assert_eq!(kept, "#\nFROM scratch\n");
        assert_eq!(dropped.as_deref(), Some("line 1: # syntax=evil/frontend:1"));
        // Spaces, case, a byte order mark, other directives and comments before it.
        let text = "\u{feff}# escape=`\n\n#  SYNTAX = evil/frontend\nFROM scratch\n# syntax=later/comment\n";
        let (kept, dropped) = without_frontend_choice(text);
        assert_eq!(dropped.as_deref(), Some("line 3: #  SYNTAX = evil/frontend"));
        assert_eq!(kept, "\u{feff}# escape=`\n\n#\nFROM scratch\n# syntax=later/comment\n");
        let plain = "FROM scratch\n# syntax=not/a/directive\n";
        assert_eq!(without_frontend_choice(plain), (plain.to_owned(), None));
    }

    #[test]
    fn dockerignore_rules_follow_docker() {
        let ignore = DockerIgnore::parse("# comment\ntarget\n*.log\n**/*.tmp\n!keep.log\ndocs/*\n!docs/README.md\n");
        assert!(ignore.excludes("target"));
        assert!(ignore.excludes("target/debug/app"));
        assert!(ignore.excludes("build.log"));
        assert!(!ignore.excludes("keep.log"));
        assert!(ignore.excludes("a/b/c.tmp"));
        assert!(ignore.excludes("docs/guide.md"));
        assert!(!ignore.excludes("docs/README.md"));
        assert!(!ignore.excludes("src/main.rs"));
        assert!(
            !ignore.excludes("sub/build.log"),
            "a pattern without ** matches from the root only"
        );
    }

    #[test]
    fn packing_honours_dockerignore_and_skips_git() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::write(dir.path().join(".dockerignore"), "secret.env\nDockerfile\n").expect("write");
        std::fs::write(dir.path().join("secret.env"), "TOKEN=x").expect("write");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        std::fs::write(dir.path().join(".git/config"), "x").expect("write");
        std::fs::create_dir_all(dir.path().join("bin")).expect("mkdir");
        std::fs::write(dir.path().join("bin/app"), "binary").expect("write");
        let tar_bytes = pack(dir.path(), dir.path(), "Dockerfile").expect("pack");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"Dockerfile".to_owned()), "{names:?}");
        assert!(names.contains(&"bin/app".to_owned()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("secret.env")), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with(".git")), "{names:?}");
    }

    #[test]
    fn links_out_of_the_checkout_are_never_followed() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("host-secret"), "HOST-SECRET-CONTENT").expect("write");
        let checkout = tempfile::tempdir().expect("tempdir");
        let root = checkout.path();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").expect("write");
        std::os::unix::fs::symlink(outside.path(), root.join("app")).expect("link");
        std::os::unix::fs::symlink(outside.path().join("host-secret"), root.join("leak")).expect("link");

        // The context directory itself is a link out: refused.
        let error = pack(root, &root.join("app"), "Dockerfile").expect_err("context outside");
        assert!(error.contains("symbolic link"), "{error}");

        // A link inside the context is archived as a link, its target never read.
        let tar_bytes = pack(root, root, "Dockerfile").expect("pack");
        let text = String::from_utf8_lossy(&tar_bytes);
        assert!(!text.contains("HOST-SECRET-CONTENT"));
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let leak = archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry"))
            .find(|e| e.path().expect("path").to_string_lossy() == "leak")
            .expect("the link is archived");
        assert_eq!(leak.header().entry_type(), tar::EntryType::Symlink);

        // A .dockerignore that is a link is refused rather than read.
        std::os::unix::fs::symlink(outside.path().join("host-secret"), root.join(".dockerignore")).expect("link");
        let error = pack(root, root, "Dockerfile").expect_err("linked .dockerignore");
        assert!(error.contains(".dockerignore"), "{error}");
    }
}
