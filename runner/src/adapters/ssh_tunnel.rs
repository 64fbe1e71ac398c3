//! An engine on another host, reached over SSH: the system's `ssh` forwards the engine's
//! socket to a socket of the runner's own (in a directory only the runner can open, since
//! the socket is the engine), and everything else talks to that socket as to a local
//! engine. `ssh` reads the user's own configuration, keys and agent, so the host key is
//! checked as for any other login; an unknown host is refused, never trusted blindly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use crate::config::SshDestination;

/// The engine's socket on the other host.
const REMOTE_SOCKET: &str = "/var/run/docker.sock";
/// How long `ssh` gets to log in and open the forward.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the forward could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("creating {}: {source}", .dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run ssh ({0}); install OpenSSH's client")]
    NoSsh(#[source] std::io::Error),
    /// `ssh` ended; `said` is its last line on stderr.
    #[error("ssh to {host} failed ({status}): {said}")]
    Failed { host: String, status: String, said: String },
    #[error("ssh to {host} did not open the forward within {OPEN_TIMEOUT:?}")]
    Silent { host: String },
}

pub struct SshTunnel {
    socket: PathBuf,
    dir: PathBuf,
    /// Watches `ssh` and starts it again when the connection drops; aborting it kills
    /// `ssh` (and closes the forward).
    keeper: tokio::task::JoinHandle<()>,
}

impl SshTunnel {
    /// Logs in to `destination` and forwards its engine's socket; fails with what `ssh`
    /// said when it cannot. A forward that breaks later is opened again at the same
    /// socket, so the engine's clients carry on once it is back.
    pub async fn open(destination: &SshDestination) -> Result<Self, TunnelError> {
        let dir = std::env::temp_dir().join(format!("runner-engine-{}-{}", std::process::id(), unique()));
        crate::secrets::create_private_dir(&dir).map_err(|source| TunnelError::Directory {
            dir: dir.clone(),
            source,
        })?;
        let socket = dir.join("docker.sock");
        let ssh = match forward(destination, &socket).await {
            Ok(ssh) => ssh,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        };
        let keeper = tokio::spawn(keep_open(ssh, destination.clone(), socket.clone()));
        Ok(Self { socket, dir, keeper })
    }

    /// The forwarded engine socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SshTunnel {
    fn drop(&mut self) {
        self.keeper.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `ssh` to end, then opens the forward again: at once the first time, then
/// after growing pauses while it keeps failing.
async fn keep_open(mut ssh: tokio::process::Child, destination: SshDestination, socket: PathBuf) {
    let mut pause = Duration::ZERO;
    loop {
        let status = ssh.wait().await;
        tracing::warn!(host = %destination.host, ?status, "the SSH forward to the engine ended; opening it again");
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
            match forward(&destination, &socket).await {
                Ok(reopened) => {
                    tracing::info!(host = %destination.host, "the SSH forward to the engine is open again");
                    ssh = reopened;
                    pause = Duration::ZERO;
                    break;
                }
                Err(error) => tracing::warn!(%error, retry_in = ?pause, "cannot open the SSH forward to the engine"),
            }
        }
    }
}

/// Starts `ssh` forwarding the engine's socket to `socket`, and waits until it answers.
async fn forward(destination: &SshDestination, socket: &Path) -> Result<tokio::process::Child, TunnelError> {
    let mut command = tokio::process::Command::new("ssh");
    // ssh needs the user's home (its config, keys, known hosts) and agent; nothing else
    // of the runner's environment.
    command.env_clear();
    for name in ["PATH", "HOME", "USER", "LOGNAME", "SSH_AUTH_SOCK"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.args([
        "-nNT",
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "StreamLocalBindUnlink=yes",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=3",
    ]);
    if let Some(port) = destination.port {
        command.arg("-p").arg(port.to_string());
    }
    if let Some(identity) = &destination.identity_file {
        command.arg("-i").arg(identity).args(["-o", "IdentitiesOnly=yes"]);
    }
    if let Some(known_hosts) = &destination.known_hosts_file {
        command
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes"]);
    }
    command
        .arg("-L")
        .arg(format!("{}:{REMOTE_SOCKET}", socket.display()))
        .arg("--")
        .arg(match &destination.user {
            Some(user) => format!("{user}@{}", destination.host),
            None => destination.host.clone(),
        })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut ssh = command.spawn().map_err(TunnelError::NoSsh)?;
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    loop {
        if socket_answers(socket).await {
            // What ssh says from now on (a dropped connection, say) goes to the runner's log,
            // and never fills the pipe.
            if let Some(stderr) = ssh.stderr.take() {
                let host = destination.host.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::info!(%host, ssh = %line, "ssh");
                    }
                });
            }
            return Ok(ssh);
        }
        let exited = ssh.try_wait().ok().flatten();
        if exited.is_some() || tokio::time::Instant::now() >= deadline {
            let mut said = String::new();
            if let Some(mut stderr) = ssh.stderr.take() {
                let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut said)).await;
            }
            let _ = ssh.kill().await;
            let said = said.trim().lines().last().unwrap_or("no answer").to_owned();
            let host = destination.host.clone();
            return Err(match exited {
                Some(status) => TunnelError::Failed {
                    host,
                    status: status.to_string(),
                    said,
                },
                None => TunnelError::Silent { host },
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn socket_answers(socket: &Path) -> bool {
    socket.exists() && tokio::net::UnixStream::connect(socket).await.is_ok()
}

fn unique() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}
