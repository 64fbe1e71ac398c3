//! An engine on another host, reached over SSH: the system's `ssh` forwards the engine's
//! socket to a socket of the runner's own (in a directory only the runner can open, since
//! the socket is the engine), and everything else talks to that socket as to a local
//! engine. `ssh` reads the user's own configuration, keys and agent, so the host key is
//! checked as for any other login; an unknown host is refused, never trusted blindly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::config::SshDestination;

/// The engine's socket on the other host.
const REMOTE_SOCKET: &str = "/var/run/docker.sock";
/// How long `ssh` gets to log in and open the forward.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SshTunnel {
    /// Killed (and the forward closed) when the tunnel is dropped.
    _ssh: tokio::process::Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl SshTunnel {
    /// Logs in to `destination` and forwards its engine's socket; fails with what `ssh`
    /// said when it cannot.
    pub async fn open(destination: &SshDestination) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("runner-engine-{}-{}", std::process::id(), unique()));
        crate::secrets::create_private_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let socket = dir.join("docker.sock");
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
        let mut ssh = command.spawn().map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            format!("cannot run ssh ({e}); install OpenSSH's client")
        })?;
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        loop {
            if socket_answers(&socket).await {
                return Ok(Self { _ssh: ssh, socket, dir });
            }
            let exited = ssh.try_wait().ok().flatten();
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                let mut said = String::new();
                if let Some(mut stderr) = ssh.stderr.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut said)).await;
                }
                let _ = ssh.kill().await;
                let _ = std::fs::remove_dir_all(&dir);
                let said = said.trim().lines().last().unwrap_or("no answer").to_owned();
                return Err(match exited {
                    Some(status) => format!("ssh to {} failed ({status}): {said}", destination.host),
                    None => format!(
                        "ssh to {} did not open the forward within {OPEN_TIMEOUT:?}",
                        destination.host
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The forwarded engine socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SshTunnel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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
