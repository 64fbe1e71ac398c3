//! The terraform boundary: the Terraform CLI run in a job's checkout, one command at a
//! time, its output streamed into the job log. A cancelled command gets SIGINT and time
//! to release its state lock before it is killed.
//!
//! Terraform starts from an allow-list environment plus what the project configures, and
//! its variables go in a var file only the runner's user can read, never on a command
//! line that is logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::sandbox::Sandbox;
use crate::joblog::JobLog;

/// How long a cancelled terraform command gets to stop on its own (and unlock its state).
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(60);

/// In a job's home directory while a terraform command runs: the command's process id.
pub const PID_FILE: &str = "terraform.pid";

/// Kills every process of a sandbox whose command did not run to its end. Dropped
/// before the command's `Child`, so the launcher's pid cannot have been reused.
struct SandboxReaper(Option<u32>);

impl Drop for SandboxReaper {
    fn drop(&mut self) {
        if let Some(launcher) = self.0 {
            for pid in super::sandbox::descendants(launcher).into_iter().rev() {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Interrupts a terraform command a killed runner left running (named by `pid_file`),
/// as Ctrl-C would, and waits for it to release its lock and exit (killing it after
/// `grace`). Only a process running `bin`, or a sandbox with `bin` running inside it, is
/// touched: the id may have been reused.
pub async fn stop_orphan(pid_file: &Path, bin: &Path, grace: Duration) -> Option<i32> {
    let pid = read_pid(pid_file)?;
    // Only terraform itself, or the sandbox it runs in.
    let launcher_is_ours = super::sandbox::runs(pid, bin)
        || super::sandbox::find_on_path("bwrap").is_some_and(|bwrap| super::sandbox::runs(pid, &bwrap));
    if !launcher_is_ours {
        return None;
    }
    let terraform = terraform_process(pid, bin)?;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    signal(terraform, nix::sys::signal::Signal::SIGINT);
    let deadline = tokio::time::Instant::now() + grace;
    while proc_dir.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if proc_dir.exists() {
        for process in super::sandbox::descendants(pid).into_iter().rev() {
            signal(process, nix::sys::signal::Signal::SIGKILL);
        }
    }
    i32::try_from(pid).ok()
}

/// A pid file's number: a small regular file, never read through a link or a pipe.
fn read_pid(pid_file: &Path) -> Option<u32> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(pid_file)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 1)
}

/// The process running terraform that `launched` (terraform itself, or the sandbox that
/// runs it) stands for.
fn terraform_process(launched: u32, bin: &Path) -> Option<u32> {
    super::sandbox::descendants(launched)
        .into_iter()
        .find(|pid| super::sandbox::runs(*pid, bin))
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error(
        "the state is locked by another operation (lock {id}{who}); it is released when that operation ends, or with `terraform force-unlock {id}` if it crashed"
    )]
    Locked { id: String, who: String },
    #[error("the saved plan is stale: the state changed since it was made")]
    StalePlan,
    #[error("terraform {command} failed (exit {code}): {detail}")]
    Failed { command: String, code: i32, detail: String },
    #[error("cancelled")]
    Cancelled,
    #[error("the sandbox: {0}")]
    Sandbox(String),
    #[error("terraform {command}: unexpected output: {detail}")]
    Output { command: String, detail: String },
}

/// What a plan would do.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub resources: Vec<ResourceChange>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResourceChange {
    pub address: String,
    pub actions: Vec<String>,
}

impl PlanSummary {
    pub fn has_changes(&self) -> bool {
        self.add + self.change + self.destroy > 0
    }

    /// "2 to add, 1 to change, 0 to destroy", as Terraform says it.
    pub fn headline(&self) -> String {
        format!(
            "{} to add, {} to change, {} to destroy",
            self.add, self.change, self.destroy
        )
    }

    /// From `terraform show -json PLAN`.
    pub fn from_show_json(plan: &Value) -> Self {
        let mut summary = Self::default();
        for change in plan["resource_changes"].as_array().into_iter().flatten() {
            let actions: Vec<String> = change["change"]["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let has = |a: &str| actions.iter().any(|x| x == a);
            if has("create") {
                summary.add += 1;
            }
            if has("delete") {
                summary.destroy += 1;
            }
            if has("update") {
                summary.change += 1;
            }
            if actions.iter().all(|a| a == "no-op" || a == "read") {
                continue;
            }
            summary.resources.push(ResourceChange {
                address: change["address"].as_str().unwrap_or("?").to_owned(),
                actions,
            });
        }
        summary
    }
}

/// What a project's module needs to run: where, with which variables and backend.
#[derive(Default)]
pub struct Module {
    pub bin: PathBuf,
    pub dir: PathBuf,
    /// A directory private to the job: terraform's `HOME` and `TMPDIR`, and its var file.
    pub home: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub backend_config: BTreeMap<String, String>,
    /// The whole configured environment of every command (credentials, endpoints).
    pub env: BTreeMap<String, String>,
    pub workspace: String,
    pub lock_timeout: Duration,
    /// `false` plans with `-lock=false`: a pull request's plan never holds the state lock.
    pub lock_state: bool,
    /// Where every command runs; `None` runs terraform as the runner's own child.
    pub sandbox: Option<Sandbox>,
    /// Providers trusted runs downloaded: filled by them, read-only to untrusted ones.
    pub plugin_cache: Option<PathBuf>,
    /// A directory only the runner writes (the job's own, never bound writable into a
    /// sandbox): the pid file and an untrusted run's CLI config. `None`: the home.
    pub runner_dir: Option<PathBuf>,
}

/// The terraform boundary in our words: prepare, plan, apply that exact plan, read outputs.
#[async_trait::async_trait]
pub trait Terraform: Send + Sync {
    async fn prepare(&self, log: &JobLog, cancel: &CancellationToken) -> Result<(), TerraformError>;
    /// Plans into `plan_file`; returns the plan's summary and its readable text.
    async fn plan(
        &self,
        plan_file: &Path,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(PlanSummary, String), TerraformError>;
    /// Applies exactly the saved plan ([`TerraformError::StalePlan`] when the state moved).
    async fn apply(&self, plan_file: &Path, log: &JobLog, cancel: &CancellationToken) -> Result<(), TerraformError>;
    async fn outputs(&self, log: &JobLog, cancel: &CancellationToken) -> Result<Value, TerraformError>;
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Which output goes to the job log as it comes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Echo {
    Everything,
    /// `-json` output: the human message of each line.
    JsonMessages,
    /// Machine-readable output kept out of the log.
    StderrOnly,
}

impl Module {
    fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut command = match &self.sandbox {
            Some(sandbox) => {
                let mut command = sandbox.command(&self.bin, args);
                super::child::restrict_env(&mut command, &self.home, std::env::vars_os());
                command
            }
            None => {
                let mut command = super::child::command(&self.bin, &self.home);
                command.args(args).current_dir(&self.dir).stdin(Stdio::null());
                command
            }
        };
        match (&self.plugin_cache, self.sandbox.as_ref().is_some_and(|s| s.untrusted)) {
            (Some(cache), false) => {
                command.env("TF_PLUGIN_CACHE_DIR", cache);
            }
            // An untrusted run installs what trusted runs cached, read-only, without
            // writing to the cache; a provider it ships itself is its own.
            (Some(_), true) => {
                command.env("TF_CLI_CONFIG_FILE", self.runner_dir().join(CLI_CONFIG));
            }
            (None, _) => {}
        }
        command
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .envs(&self.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // `init` and `workspace select -or-create` run before the workspace exists, and
        // would refuse a TF_WORKSPACE naming it.
        let selects_workspace = matches!(args.first().map(String::as_str), Some("init" | "workspace"));
        if self.workspace != "default" && !selects_workspace {
            command.env("TF_WORKSPACE", &self.workspace);
        }
        command
    }

    async fn run(
        &self,
        args: &[String],
        echo: Echo,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<Ran, TerraformError> {
        log.system(format!("$ terraform {}", shown(args).join(" ")));
        if let Err(source) = self.prepare_home() {
            return Err(TerraformError::Spawn {
                bin: format!("its home directory {}", self.home.display()),
                source,
            });
        }
        let mut child = self.command(args).spawn().map_err(|source| TerraformError::Spawn {
            bin: self.bin.display().to_string(),
            source,
        })?;
        let pid = child.id();
        let _network = match &self.sandbox {
            Some(sandbox) => match sandbox.connect(&mut child).await {
                Ok(network) => Some(network),
                Err(detail) => {
                    let _ = child.kill().await;
                    return Err(TerraformError::Sandbox(detail));
                }
            },
            None => None,
        };
        // A command cut short (cancelled, timed out) takes its whole sandbox with it.
        let mut reaper = SandboxReaper(pid.filter(|_| self.sandbox.is_some()));
        // If the runner dies, its restart finds this and interrupts the orphaned command,
        // so it lets go of the state lock instead of racing the job's next attempt.
        let pid_file = self.runner_dir().join(PID_FILE);
        if let Some(pid) = pid
            && let Err(error) = std::fs::write(&pid_file, pid.to_string())
        {
            // Only a crash of the runner during this command needs the file.
            tracing::warn!(%error, "cannot write terraform's pid file");
        }
        let _forget_pid = RemoveOnDrop(pid_file);
        let stdout = child.stdout.take().map(BufReader::new);
        let stderr = child.stderr.take().map(BufReader::new);
        let read_stdout = async {
            let mut all = String::new();
            if let Some(mut lines) = stdout.map(AsyncBufReadExt::lines) {
                while let Ok(Some(line)) = lines.next_line().await {
                    match echo {
                        Echo::Everything => log.stdout(&line),
                        Echo::JsonMessages => {
                            if let Ok(message) = serde_json::from_str::<Value>(&line)
                                && let Some(text) = message["@message"].as_str()
                            {
                                log.stdout(text);
                            } else {
                                log.stdout(&line);
                            }
                        }
                        Echo::StderrOnly => {}
                    }
                    all.push_str(&line);
                    all.push('\n');
                }
            }
            all
        };
        let read_stderr = async {
            let mut all = String::new();
            if let Some(mut lines) = stderr.map(AsyncBufReadExt::lines) {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.stderr(&line);
                    all.push_str(&line);
                    all.push('\n');
                }
            }
            all
        };
        let work = async {
            let (out, err) = tokio::join!(read_stdout, read_stderr);
            (child.wait().await, out, err)
        };
        tokio::pin!(work);
        let (status, stdout, stderr) = tokio::select! {
            finished = &mut work => {
                reaper.0 = None;
                finished
            }
            () = cancel.cancelled() => {
                // Like Ctrl-C: Terraform stops what it is doing and releases its state lock.
                if let Some(terraform) = pid.and_then(|pid| terraform_process(pid, &self.bin)) {
                    log.system("cancel: sending SIGINT to terraform and waiting for it to release its lock");
                    signal(terraform, nix::sys::signal::Signal::SIGINT);
                }
                if tokio::time::timeout(INTERRUPT_GRACE, &mut work).await.is_err() {
                    log.system(format!("terraform did not stop within {INTERRUPT_GRACE:?}; killing it"));
                }
                return Err(TerraformError::Cancelled);
            }
        };
        let status = status.map_err(|source| TerraformError::Spawn {
            bin: self.bin.display().to_string(),
            source,
        })?;
        Ok(Ran {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    }

    /// Writes the variables to a var file readable by the runner's user only, created
    /// afresh (never through a link someone left at its path).
    fn vars_args(&self) -> Result<Vec<String>, TerraformError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.home.join("runner.tfvars.json");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.home)?;
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(&serde_json::to_vec(&self.vars).unwrap_or_default())?;
            file.sync_all()?;
            self.hand_over(&path)
        };
        write().map_err(|source| TerraformError::Spawn {
            bin: format!("the var file {}", path.display()),
            source,
        })?;
        Ok(vec![format!("-var-file={}", path.display())])
    }

    /// The job's home (handed to a sandbox's user before its first command), and the CLI
    /// config of an untrusted run, written where only the runner writes and bound into the
    /// sandbox read-only.
    fn prepare_home(&self) -> std::io::Result<()> {
        crate::secrets::create_private_dir(&self.home)?;
        if let (Some(cache), Some(sandbox)) = (&self.plugin_cache, &self.sandbox)
            && sandbox.untrusted
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let path = self.runner_dir().join(CLI_CONFIG);
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)?
                .write_all(untrusted_cli_config(cache, &self.dir).as_bytes())?;
        }
        Ok(())
    }

    fn runner_dir(&self) -> &Path {
        self.runner_dir.as_deref().unwrap_or(&self.home)
    }

    /// Gives `path` to the sandbox's user, when it has one of its own.
    fn hand_over(&self, path: &Path) -> std::io::Result<()> {
        match &self.sandbox {
            Some(sandbox) => sandbox.hand_over(&[path]),
            None => Ok(()),
        }
    }

    fn lock_args(&self) -> Vec<String> {
        if self.lock_state {
            vec![format!("-lock-timeout={}s", self.lock_timeout.as_secs())]
        } else {
            vec!["-lock=false".to_owned()]
        }
    }
}

/// The CLI config of untrusted runs, in the runner's directory of the job.
pub const CLI_CONFIG: &str = "terraform.rc";

/// Providers from the cache trusted runs filled (read-only) and from the module's own
/// `terraform.d/plugins`, each only from there, and the rest from their registries: what
/// Terraform does by default, with the cache read as a mirror it never writes to.
fn untrusted_cli_config(cache: &Path, module_dir: &Path) -> String {
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let list = |items: &[String]| items.iter().map(|i| quoted(i)).collect::<Vec<_>>().join(", ");
    let mut config = String::from("provider_installation {\n");
    let mut local = Vec::new();
    let shipped = module_dir.join("terraform.d").join("plugins");
    // Read as root: a link in the repository must not make it list a directory of the host.
    let shipped_is_real = [module_dir.join("terraform.d"), shipped.clone()]
        .iter()
        .all(|dir| std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()));
    let dirs = if shipped_is_real {
        vec![cache.to_path_buf(), shipped]
    } else {
        vec![cache.to_path_buf()]
    };
    for dir in dirs {
        let providers = providers_in(&dir);
        if providers.is_empty() {
            continue;
        }
        config.push_str(&format!(
            "  filesystem_mirror {{\n    path    = {}\n    include = [{}]\n  }}\n",
            quoted(&dir.display().to_string()),
            list(&providers)
        ));
        local.extend(providers);
    }
    if local.is_empty() {
        config.push_str("  direct {}\n");
    } else {
        config.push_str(&format!("  direct {{\n    exclude = [{}]\n  }}\n", list(&local)));
    }
    config.push_str("}\n");
    config
}

/// `host/namespace/type` of every provider a mirror directory holds.
fn providers_in(dir: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            // What a provider address may hold; nothing a config file or a shell reads.
            .filter(|name| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            })
            .collect()
    };
    let mut found = Vec::new();
    for host in names(dir) {
        for namespace in names(&dir.join(&host)) {
            for kind in names(&dir.join(&host).join(&namespace)) {
                found.push(format!("{host}/{namespace}/{kind}"));
            }
        }
    }
    found.sort();
    found
}

/// A command line as it may be logged: backend settings show their names only.
fn shown(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|arg| match arg.strip_prefix("-backend-config=") {
            Some(setting) => match setting.split_once('=') {
                Some((key, _)) => format!("-backend-config={key}=***"),
                None => arg.clone(),
            },
            None => arg.clone(),
        })
        .collect()
}

/// A command's failure, turned into what went wrong in our words.
fn failure(command: &str, ran: &Ran) -> TerraformError {
    let text = format!("{}\n{}", ran.stderr, ran.stdout);
    if text.contains("Error acquiring the state lock") {
        let field = |name: &str| {
            text.lines()
                .map(str::trim)
                .find_map(|line| line.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        return TerraformError::Locked {
            id: field("ID:").unwrap_or_else(|| "unknown".into()),
            who: field("Who:").map(|who| format!(", held by {who}")).unwrap_or_default(),
        };
    }
    if text.contains("Saved plan is stale") {
        return TerraformError::StalePlan;
    }
    let detail = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '╷' || c == '│' || c == '╵'))
        .map(|l| l.trim_start_matches(['│', '╷', '╵']).trim())
        .filter(|l| !l.is_empty())
        .take(10)
        .collect::<Vec<_>>()
        .join(" ");
    TerraformError::Failed {
        command: command.to_owned(),
        code: ran.code,
        detail,
    }
}

/// [`Terraform`] by the terraform CLI, for one [`Module`].
pub struct TerraformCli(Module);

impl From<Module> for TerraformCli {
    fn from(module: Module) -> Self {
        Self(module)
    }
}

impl std::ops::Deref for TerraformCli {
    type Target = Module;

    fn deref(&self) -> &Module {
        &self.0
    }
}

#[async_trait::async_trait]
impl Terraform for TerraformCli {
    /// `fmt -check` (a warning only), `init`, the workspace, `validate`.
    async fn prepare(&self, log: &JobLog, cancel: &CancellationToken) -> Result<(), TerraformError> {
        let fmt = self
            .run(
                &["fmt".into(), "-check".into(), "-recursive".into(), "-no-color".into()],
                Echo::Everything,
                log,
                cancel,
            )
            .await?;
        if fmt.code != 0 {
            log.system("warning: terraform fmt -check found files that are not formatted (listed above)");
        }
        let mut init: Vec<String> = vec!["init".into(), "-input=false".into(), "-no-color".into()];
        init.extend(self.lock_args());
        init.extend(
            self.backend_config
                .iter()
                .map(|(key, value)| format!("-backend-config={key}={value}")),
        );
        let ran = self.run(&init, Echo::Everything, log, cancel).await?;
        if ran.code != 0 {
            return Err(failure("init", &ran));
        }
        if self.workspace != "default" {
            let select = self
                .run(
                    &[
                        "workspace".into(),
                        "select".into(),
                        "-or-create".into(),
                        self.workspace.clone(),
                    ],
                    Echo::Everything,
                    log,
                    cancel,
                )
                .await?;
            if select.code != 0 {
                return Err(failure("workspace select", &select));
            }
        }
        let validate = self
            .run(&["validate".into(), "-no-color".into()], Echo::Everything, log, cancel)
            .await?;
        if validate.code != 0 {
            return Err(failure("validate", &validate));
        }
        Ok(())
    }

    async fn plan(
        &self,
        plan_file: &Path,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(PlanSummary, String), TerraformError> {
        let mut args: Vec<String> = vec![
            "plan".into(),
            "-input=false".into(),
            "-no-color".into(),
            "-detailed-exitcode".into(),
            format!("-out={}", plan_file.display()),
        ];
        args.extend(self.lock_args());
        args.extend(self.vars_args()?);
        let ran = self.run(&args, Echo::Everything, log, cancel).await?;
        // -detailed-exitcode: 0 no changes, 2 changes, anything else an error.
        if ran.code != 0 && ran.code != 2 {
            return Err(failure("plan", &ran));
        }
        let show = self
            .run(
                &["show".into(), "-json".into(), plan_file.display().to_string()],
                Echo::StderrOnly,
                log,
                cancel,
            )
            .await?;
        if show.code != 0 {
            return Err(failure("show -json", &show));
        }
        let json: Value = serde_json::from_str(show.stdout.trim()).map_err(|e| TerraformError::Output {
            command: "show -json".into(),
            detail: e.to_string(),
        })?;
        let text = self
            .run(
                &["show".into(), "-no-color".into(), plan_file.display().to_string()],
                Echo::StderrOnly,
                log,
                cancel,
            )
            .await?;
        if text.code != 0 {
            return Err(failure("show", &text));
        }
        Ok((PlanSummary::from_show_json(&json), text.stdout))
    }

    async fn apply(&self, plan_file: &Path, log: &JobLog, cancel: &CancellationToken) -> Result<(), TerraformError> {
        let mut args: Vec<String> = vec!["apply".into(), "-input=false".into(), "-json".into()];
        args.extend(self.lock_args());
        args.push(plan_file.display().to_string());
        let ran = self.run(&args, Echo::JsonMessages, log, cancel).await?;
        if ran.code != 0 {
            return Err(failure("apply", &ran));
        }
        Ok(())
    }

    async fn outputs(&self, log: &JobLog, cancel: &CancellationToken) -> Result<Value, TerraformError> {
        let ran = self
            .run(&["output".into(), "-json".into()], Echo::StderrOnly, log, cancel)
            .await?;
        if ran.code != 0 {
            return Err(failure("output", &ran));
        }
        let all: Value = serde_json::from_str(ran.stdout.trim()).map_err(|e| TerraformError::Output {
            command: "output -json".into(),
            detail: e.to_string(),
        })?;
        // Sensitive values never leave Terraform's state.
        let mut outputs = serde_json::Map::new();
        for (name, output) in all.as_object().into_iter().flatten() {
            let value = if output["sensitive"].as_bool() == Some(true) {
                Value::String("(sensitive)".into())
            } else {
                output["value"].clone()
            };
            outputs.insert(name.clone(), value);
        }
        Ok(Value::Object(outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_a_plan_like_terraform_does() {
        let plan = serde_json::json!({"resource_changes": [
            {"address": "terraform_data.a", "change": {"actions": ["create"]}},
            {"address": "terraform_data.b", "change": {"actions": ["update"]}},
            {"address": "terraform_data.c", "change": {"actions": ["delete", "create"]}},
            {"address": "terraform_data.d", "change": {"actions": ["no-op"]}},
            {"address": "terraform_data.e", "change": {"actions": ["delete"]}},
        ]});
        let summary = PlanSummary::from_show_json(&plan);
        assert_eq!(summary.headline(), "2 to add, 1 to change, 2 to destroy");
        assert_eq!(summary.resources.len(), 4);
        assert!(summary.has_changes());
        assert!(!PlanSummary::from_show_json(&serde_json::json!({})).has_changes());
    }

    #[test]
    fn an_untrusted_run_installs_cached_and_shipped_providers_only_from_where_they_are() {
        let cache = tempfile::tempdir().expect("tempdir");
        let module = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(
            cache
                .path()
                .join("registry.terraform.io/hashicorp/aws/5.0.0/linux_amd64"),
        )
        .expect("mkdir");
        std::fs::create_dir_all(
            module
                .path()
                .join("terraform.d/plugins/example.com/acme/thing/1.0.0/linux_amd64"),
        )
        .expect("mkdir");
        let config = untrusted_cli_config(cache.path(), module.path());
        assert!(
            config.contains("include = [\"registry.terraform.io/hashicorp/aws\"]"),
            "{config}"
        );
        assert!(config.contains("include = [\"example.com/acme/thing\"]"), "{config}");
        assert!(
            config.contains("exclude = [\"registry.terraform.io/hashicorp/aws\", \"example.com/acme/thing\"]"),
            "{config}"
        );
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            untrusted_cli_config(empty.path(), empty.path()),
            "provider_installation {\n  direct {}\n}\n"
        );
        // A name a shell would run, and a link out of the checkout, are not read.
        let hostile = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(hostile.path().join("terraform.d/plugins/z$(id)/ns/kind")).expect("mkdir");
        assert!(!untrusted_cli_config(empty.path(), hostile.path()).contains("$("));
        let linked = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(linked.path().join("terraform.d")).expect("mkdir");
        std::os::unix::fs::symlink(cache.path(), linked.path().join("terraform.d/plugins")).expect("link");
        assert_eq!(
            untrusted_cli_config(empty.path(), linked.path()),
            "provider_installation {\n  direct {}\n}\n"
        );
    }

    #[test]
    fn a_lock_held_elsewhere_is_named() {
        let ran = Ran {
            code: 1,
            stdout: String::new(),
            stderr: "Error: Error acquiring the state lock\n\nLock Info:\n  ID:        4d3c-11\n  Path:      x\n  Who:       ci@host\n".into(),
        };
        let error = failure("apply", &ran).to_string();
        assert!(error.contains("lock 4d3c-11"), "{error}");
        assert!(error.contains("held by ci@host"), "{error}");
    }
}
