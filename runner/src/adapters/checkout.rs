//! Step 1: fetch exactly the job's commit into a fresh directory, with the git CLI.
//!
//! Nothing from a payload reaches a shell: git runs without one, every argument is a
//! separate argv entry, and the SHA was parsed as 40 hex digits before it got here. Git
//! gets an allow-list environment (see [`super::child`]), and the clone URL (which may
//! hold credentials) is removed from the checkout once the commit is there, so code run
//! in the checkout later cannot read it back from `.git/config`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::domain::CommitSha;
use crate::joblog::JobLog;
use crate::secrets::redact_url;
use crate::store::jobs::Job;

/// Fetches a commit's tree into a directory.
#[async_trait::async_trait]
pub trait Checkout: Send + Sync {
    async fn fetch(&self, job: &Job, into: &Path, log: &JobLog) -> Result<Fetched, CheckoutError>;
}

/// Why a commit could not be fetched or a ref resolved. Every remote and argument in it
/// has had its credentials removed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("cannot run git (is it installed?): {0}")]
    NoGit(#[source] std::io::Error),
    #[error("cannot create {}: {source}", .path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Git ran and failed; `said` is its last line on stderr.
    #[error("{said} (git {command}: {status})")]
    Git {
        command: String,
        status: String,
        said: String,
    },
    #[error("HEAD is {found} after checkout, expected {expected}")]
    WrongHead { found: String, expected: CommitSha },
    #[error("{remote} did not answer within {seconds} s")]
    Silent { remote: String, seconds: u64 },
    #[error("{git_ref} does not exist on {remote}")]
    NoSuchRef { git_ref: String, remote: String },
    #[error("{remote} names {git_ref} by something that is not a commit SHA")]
    NotACommit { git_ref: String, remote: String },
}

/// What a checkout found out beside the tree.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The files that differ between the job's base (a push's `before`, a pull request's
    /// base) and its commit, when the repository has a `.runner.yml` to use them and the
    /// base could be fetched; `None`: unknown.
    pub changed: Option<Vec<String>>,
}

pub struct GitCheckout {
    url: String,
    /// `HOME` and `TMPDIR` of git: a directory private to the job.
    home: PathBuf,
}

impl GitCheckout {
    pub fn new(url: String, home: PathBuf) -> Self {
        Self { url, home }
    }
}

#[async_trait::async_trait]
impl Checkout for GitCheckout {
    async fn fetch(&self, job: &Job, into: &Path, log: &JobLog) -> Result<Fetched, CheckoutError> {
        tokio::fs::create_dir_all(into)
            .await
            .map_err(|source| CheckoutError::Directory {
                path: into.to_owned(),
                source,
            })?;
        log.system(format!("fetching {} from {}", job.sha, redact_url(&self.url)));
        let home = self.home.as_path();
        git(into, home, log, &["init", "--quiet"]).await?;
        git(into, home, log, &["remote", "add", "origin", "--", &self.url]).await?;
        // By SHA first (GitHub serves any reachable commit, shallow); servers that refuse
        // unadvertised objects get the ref instead, and the SHA must then be in it.
        let by_sha = git(
            into,
            home,
            log,
            &["fetch", "--quiet", "--no-tags", "--depth=1", "origin", &job.sha],
        )
        .await;
        if by_sha.is_err() {
            log.system(format!("fetch by SHA refused; fetching {} instead", job.git_ref));
            let refspec = format!("+{}:refs/remotes/origin/job", job.git_ref);
            git(into, home, log, &["fetch", "--quiet", "--no-tags", "origin", &refspec]).await?;
        }
        git(
            into,
            home,
            log,
            &[
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "--quiet",
                "--detach",
                &job.sha,
            ],
        )
        .await?;
        let head = git_output(into, home, &["rev-parse", "HEAD"]).await?;
        if head.trim() != job.sha.as_str() {
            return Err(CheckoutError::WrongHead {
                found: head.trim().to_owned(),
                expected: job.sha.clone(),
            });
        }
        let changed = match &job.base_sha {
            Some(base) if tokio::fs::symlink_metadata(into.join(".runner.yml")).await.is_ok() => {
                changed_since(into, home, log, base, &job.sha).await
            }
            _ => None,
        };
        git(into, home, log, &["remote", "remove", "origin"]).await?;
        log.system(format!("checked out {}", job.sha));
        Ok(Fetched { changed })
    }
}

/// The paths that differ between `base` and `head` (fetched shallow by SHA; comparing two
/// trees needs no history). `None` when the base cannot be fetched.
async fn changed_since(
    into: &Path,
    home: &Path,
    log: &JobLog,
    base: &CommitSha,
    head: &CommitSha,
) -> Option<Vec<String>> {
    let fetched = git(
        into,
        home,
        log,
        &["fetch", "--quiet", "--no-tags", "--depth=1", "origin", base.as_str()],
    )
    .await;
    if fetched.is_err() {
        log.system(format!(
            "cannot fetch {base} to compare with: every file counts as changed"
        ));
        return None;
    }
    match git_output(
        into,
        home,
        &[
            "diff",
            "--name-only",
            "--no-renames",
            "-z",
            base.as_str(),
            head.as_str(),
        ],
    )
    .await
    {
        Ok(listed) => {
            let changed: Vec<String> = listed
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            log.system(format!("{} file(s) changed since {}", changed.len(), base.short()));
            Some(changed)
        }
        Err(error) => {
            log.system(format!(
                "cannot compare with {base} ({error}): every file counts as changed"
            ));
            None
        }
    }
}

/// The commit a ref points at on the remote (`git ls-remote`), for deploys by branch name.
pub async fn resolve_ref(url: &str, git_ref: &crate::domain::GitRef) -> Result<CommitSha, CheckoutError> {
    const WITHIN_SECS: u64 = 60;
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(WITHIN_SECS),
        git_command(
            Path::new("."),
            Path::new("/nonexistent"),
            &["ls-remote", "--", url, git_ref.as_str()],
        )
        .output(),
    )
    .await
    .map_err(|_| CheckoutError::Silent {
        remote: redact_url(url),
        seconds: WITHIN_SECS,
    })?
    .map_err(CheckoutError::NoGit)?;
    if !output.status.success() {
        return Err(CheckoutError::Git {
            command: "ls-remote".to_owned(),
            status: output.status.to_string(),
            said: redact_url(String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let sha = stdout
        .lines()
        .find_map(|line| {
            line.split_once('\t')
                .filter(|(_, name)| *name == git_ref.as_str())
                .map(|(sha, _)| sha.to_owned())
        })
        .ok_or_else(|| CheckoutError::NoSuchRef {
            git_ref: git_ref.to_string(),
            remote: redact_url(url),
        })?;
    CommitSha::parse(&sha).map_err(|_| CheckoutError::NotACommit {
        git_ref: git_ref.to_string(),
        remote: redact_url(url),
    })
}

fn git_command(dir: &Path, home: &Path, args: &[&str]) -> Command {
    let mut command: Command = super::child::command("git", home);
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs git, streaming its output into the job log; the error names the failed command.
async fn git(dir: &Path, home: &Path, log: &JobLog, args: &[&str]) -> Result<(), CheckoutError> {
    let mut child = git_command(dir, home, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(CheckoutError::NoGit)?;
    let stdout = child.stdout.take().map(|out| {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.stdout(&line);
            }
        })
    });
    let mut last_error = String::new();
    if let Some(err) = child.stderr.take() {
        let mut lines = BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.stderr(&line);
            last_error = line;
        }
    }
    let status = child.wait().await.map_err(CheckoutError::NoGit)?;
    if let Some(task) = stdout {
        let _ = task.await;
    }
    if status.success() {
        Ok(())
    } else {
        let shown: Vec<String> = args.iter().map(|a| redact_url(a)).collect();
        Err(CheckoutError::Git {
            command: shown.join(" "),
            status: status.to_string(),
            said: redact_url(&last_error),
        })
    }
}

async fn git_output(dir: &Path, home: &Path, args: &[&str]) -> Result<String, CheckoutError> {
    let output = git_command(dir, home, args)
        .output()
        .await
        .map_err(CheckoutError::NoGit)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CheckoutError::Git {
            command: args.join(" "),
            status: output.status.to_string(),
            said: redact_url(String::from_utf8_lossy(&output.stderr).trim()),
        })
    }
}

/// Where the project's repository is cloned from: its `clone_url`, else its forge's.
pub fn clone_url(project: &crate::config::Project) -> String {
    use secrecy::ExposeSecret as _;
    project
        .clone_url
        .as_ref()
        .map_or_else(|| project.links.clone_url(), |url| url.expose_secret().to_owned())
}

#[cfg(test)]
mod tests {
    use crate::secrets::redact_url;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            redact_url("https://x-access-token:ghs_abc@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(redact_url("https://github.com/o/r.git"), "https://github.com/o/r.git");
        assert_eq!(redact_url("/srv/git/repo"), "/srv/git/repo");
    }
}
