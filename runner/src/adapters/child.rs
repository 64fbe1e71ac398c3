//! Child processes (git, terraform) start from an empty environment plus an allow-list,
//! never from the runner's own: the runner's environment holds its secrets (admin token,
//! webhook secrets, registry and GitHub credentials), and a child may run a stranger's
//! code (a module's `local-exec`, an `external` data source, `filebase64("/proc/self/environ")`).

use std::ffi::OsString;
use std::path::Path;

/// Variables passed through from the runner's environment, by exact name.
const PASSED: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Whether the runner's variable `name` may reach a child.
fn passes(name: &str) -> bool {
    PASSED.contains(&name) || name.starts_with("LC_")
}

/// A command whose environment is the allow-list taken from `parent`, `HOME` and `TMPDIR`
/// set to `home` (a directory private to the job), and nothing else; callers add what the
/// project's configuration names.
pub fn command_from(
    program: impl AsRef<std::ffi::OsStr>,
    home: &Path,
    parent: impl IntoIterator<Item = (OsString, OsString)>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    restrict_env(&mut command, home, parent);
    command
}

/// Replaces `command`'s environment with the allow-list taken from `parent`, and `HOME`
/// and `TMPDIR` set to `home` (for a command made elsewhere, such as a sandbox's).
pub fn restrict_env(
    command: &mut tokio::process::Command,
    home: &Path,
    parent: impl IntoIterator<Item = (OsString, OsString)>,
) {
    command.env_clear();
    for (name, value) in parent {
        if name.to_str().is_some_and(passes) {
            command.env(name, value);
        }
    }
    command.env("HOME", home).env("TMPDIR", home);
}

/// [`command_from`] the runner's own environment.
pub fn command(program: impl AsRef<std::ffi::OsStr>, home: &Path) -> tokio::process::Command {
    command_from(program, home, std::env::vars_os())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_sees_the_allow_list_and_nothing_of_the_runners_secrets() {
        let home = tempfile::tempdir().expect("tempdir");
        let parent = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("HTTPS_PROXY", "http://proxy.internal:3128"),
            ("RUNNER_ADMIN_TOKEN", "admin-token-0123456789abcdef"),
            ("HELLO_WEBHOOK_SECRET", "webhook-secret-0123456789"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-0123456789"),
            ("GITHUB_TOKEN", "ghp_0123456789"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let output = command_from("env", home.path(), parent)
            .output()
            .await
            .expect("env runs");
        let seen = String::from_utf8_lossy(&output.stdout);
        let names: Vec<&str> = seen.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["HOME", "HTTPS_PROXY", "LC_ALL", "PATH", "TMPDIR"], "{seen}");
        assert!(seen.contains(&format!("HOME={}", home.path().display())), "{seen}");
        for secret in ["admin-token", "webhook-secret", "aws-secret", "ghp_"] {
            assert!(!seen.contains(secret), "{secret} reached the child: {seen}");
        }
    }
}
