//! A sandbox for programs that run a repository's code on this host (terraform and the
//! providers and modules it runs), made with bubblewrap (Debian's `bubblewrap`).
//!
//! Inside: a read-only system (`/usr` and a few files of `/etc`), the directories the
//! caller names (a job's checkout and home, writable or not), a private `/tmp`, `/dev`
//! and a `/proc` of the sandbox's own PID namespace. Nothing else of the host exists
//! there: no runner data directory, no other job's directory, no engine socket, no
//! process of the host to read the environment of. IPC, UTS and cgroup namespaces are
//! its own; the network is the host's, none (loopback only), or user-mode egress.
//!
//! Untrusted runs go further and run under an unprivileged uid. A runner running as root
//! starts bubblewrap without a user namespace, keeps only the two capabilities `setpriv`
//! needs to drop to that uid on the host itself, and drops them with it (`no_new_privs`
//! keeps them dropped). A runner that is not root runs everything inside a user
//! namespace of its own, as uid 65534 there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use crate::config::SandboxNetwork;
use crate::config::find_executable;

/// The uid and gid an untrusted run gets on the host when the runner is root, and inside
/// its user namespace otherwise.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// What a sandbox is made of, and who runs in it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The `bwrap` executable.
    pub bwrap: PathBuf,
    /// The `setpriv` executable (util-linux), which drops to `user` on the host.
    pub setpriv: PathBuf,
    pub network: SandboxNetwork,
    /// Untrusted code: runs as `user`, an unprivileged uid, and reads only what it is
    /// given read-only.
    pub untrusted: bool,
    pub user: (u32, u32),
    /// With [`SandboxNetwork::Egress`]: unreachable besides loopback, the host's own
    /// addresses and the metadata address.
    pub blocked_networks: Vec<ipnet::IpNet>,
    /// Bound at the same path, read-only.
    pub read_only: Vec<PathBuf>,
    /// Bound at the same path, writable.
    pub writable: Vec<PathBuf>,
    /// Inside the sandbox, the working directory of the program.
    pub chdir: PathBuf,
}

/// Files of `/etc` a program needs to resolve names, verify TLS and know the time zone;
/// nothing else of `/etc` (keys, the runner's own config) is there.
const ETC_FILES: &[&str] = &[
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
];

/// Top-level directories of the system that are links into `/usr` on merged-`/usr`
/// systems, or directories of their own elsewhere.
const SYSTEM_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "terraform's sandbox needs bubblewrap, which is not installed: apt-get install bubblewrap (or set terraform.sandbox = false for trusted deploys only)"
    )]
    MissingBwrap,
    #[error("the sandbox needs setpriv from util-linux: apt-get install util-linux")]
    MissingSetpriv,
    #[error("the sandbox's user-mode network needs slirp4netns: apt-get install slirp4netns")]
    MissingSlirp,
    #[error("the sandbox's outbound firewall needs nft: apt-get install nftables")]
    MissingNft,
}

/// The first executable named `name` on `PATH` (of the runner's environment).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    find_executable(name, &runners_path())
}

/// The runner's `PATH`, or the usual one when it has none.
fn runners_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"))
}

/// Whether this process runs as root (and so can drop to another uid itself).
pub fn runner_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Sandbox {
    /// A `tokio` command that runs `program args…` inside the sandbox; the caller sets its
    /// environment, which bubblewrap passes on unchanged.
    pub fn command(&self, program: &Path, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.bwrap);
        command.args(self.bwrap_args(runner_is_root()));
        if self.untrusted && runner_is_root() {
            command.arg(&self.setpriv).args([
                format!("--reuid={}", self.user.0),
                format!("--regid={}", self.user.1),
                "--clear-groups".to_owned(),
                "--inh-caps=-all".to_owned(),
                "--bounding-set=-all".to_owned(),
                "--no-new-privs".to_owned(),
                "--".to_owned(),
            ]);
        }
        if self.network == SandboxNetwork::Egress {
            // The program starts once `connect` has given the sandbox its network and
            // its rules, and says so with a line on its standard input.
            command.args(["/bin/sh", "-c", "read -r _ && exec \"$0\" \"$@\""]);
            command.stdin(std::process::Stdio::piped());
        } else {
            command.stdin(std::process::Stdio::null());
        }
        command.arg(program).args(args);
        // bubblewrap resolves the paths it binds itself; its own working directory only
        // has to exist.
        command.current_dir("/");
        command
    }

    /// bubblewrap's options, up to the program it runs.
    fn bwrap_args(&self, as_root: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |parts: &[&dyn AsRef<std::ffi::OsStr>]| {
            args.extend(parts.iter().map(|p| p.as_ref().to_owned()));
        };
        // Not --die-with-parent: a terraform command outlives a runner killed under it,
        // so the next start can interrupt it as Ctrl-C would and it releases its state lock.
        push(&[&"--new-session"]);
        if self.untrusted {
            // A pull request's plan holds no lock worth releasing: it ends with the runner.
            push(&[&"--die-with-parent"]);
        }
        push(&[
            &"--unshare-pid",
            &"--unshare-ipc",
            &"--unshare-uts",
            &"--unshare-cgroup-try",
        ]);
        if self.network != SandboxNetwork::Host {
            push(&[&"--unshare-net"]);
        }
        if as_root {
            // No user namespace: a root bubblewrap would keep every capability in it.
            // The program keeps none (an untrusted one only the two setpriv drops).
            push(&[&"--cap-drop", &"ALL"]);
            if self.untrusted {
                // setpriv needs SETPCAP to empty the bounding set as it drops to the user.
                push(&[
                    &"--cap-add",
                    &"CAP_SETUID",
                    &"--cap-add",
                    &"CAP_SETGID",
                    &"--cap-add",
                    &"CAP_SETPCAP",
                ]);
            }
        } else {
            let uid = if self.untrusted {
                self.user.0
            } else {
                nix::unistd::geteuid().as_raw()
            };
            let gid = if self.untrusted {
                self.user.1
            } else {
                nix::unistd::getegid().as_raw()
            };
            push(&[
                &"--unshare-user",
                &"--uid",
                &uid.to_string(),
                &"--gid",
                &gid.to_string(),
            ]);
        }
        push(&[&"--hostname", &"sandbox"]);
        push(&[&"--ro-bind", &"/usr", &"/usr"]);
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::read_link(path) {
                Ok(target) => push(&[&"--symlink", &target, &path]),
                Err(_) if path.is_dir() => push(&[&"--ro-bind", &path, &path]),
                Err(_) => {}
            }
        }
        for file in ETC_FILES {
            push(&[&"--ro-bind-try", file, file]);
        }
        push(&[&"--proc", &"/proc", &"--dev", &"/dev", &"--tmpfs", &"/tmp"]);
        // bubblewrap would make the directories above a bound path private to root,
        // where the unprivileged user could not reach what is bound.
        for dir in ancestors(self.read_only.iter().chain(&self.writable)) {
            push(&[&"--perms", &"0755", &"--dir", &dir]);
        }
        for path in self.read_only.iter().filter(|path| !path.starts_with("/usr")) {
            push(&[&"--ro-bind", path, path]);
        }
        for path in &self.writable {
            push(&[&"--bind", path, path]);
        }
        push(&[&"--chdir", &self.chdir]);
        args
    }

    /// Hands `paths` (recursively) to the untrusted user, so it can write where the
    /// sandbox lets it; nothing to do when the runner is not root (its user namespace
    /// maps the uid onto the runner's own).
    pub fn hand_over(&self, paths: &[&Path]) -> std::io::Result<()> {
        if !self.untrusted || !runner_is_root() {
            return Ok(());
        }
        for path in paths {
            chown_tree(path, self.user)?;
        }
        Ok(())
    }
}

/// The directories above `paths` that the sandbox has to make (the system's own are there).
fn ancestors<'p>(paths: impl Iterator<Item = &'p PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .flat_map(|path| path.ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
        .filter(|dir| {
            dir.parent().is_some()
                && !["/usr", "/etc", "/proc", "/dev"]
                    .iter()
                    .any(|system| dir.starts_with(system))
        })
        .collect();
    dirs.sort_by(|a, b| (a.components().count(), a).cmp(&(b.components().count(), b)));
    dirs.dedup();
    dirs
}

/// What keeps a running sandbox's outbound network up; ends it when dropped.
pub struct Network {
    _slirp: Option<tokio::process::Child>,
}

impl Sandbox {
    /// Gives the sandbox `child` (spawned from [`Sandbox::command`]) its network: nothing
    /// to do but for egress, where slirp4netns connects its namespace to the outside and
    /// a firewall inside it refuses the host, its neighbours and the metadata address.
    pub async fn connect(&self, child: &mut tokio::process::Child) -> Result<Network, String> {
        if self.network != SandboxNetwork::Egress {
            return Ok(Network { _slirp: None });
        }
        let launched = child.id().ok_or("the sandbox ended before its network was up")?;
        let inside = wait_for(|| {
            let own = std::fs::read_link("/proc/self/ns/net").ok()?;
            descendants(launched)
                .into_iter()
                .find(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != own))
        })
        .await
        .ok_or("the sandbox's network namespace did not appear")?;
        let slirp =
            tokio::process::Command::new(find_on_path("slirp4netns").ok_or(SandboxError::MissingSlirp.to_string())?)
                .args([
                    "--configure",
                    "--mtu=65520",
                    "--disable-host-loopback",
                    // slirp4netns parses every packet the sandbox sends: it confines itself.
                    "--enable-sandbox",
                    "--enable-seccomp",
                ])
                .arg(inside.to_string())
                .arg("tap0")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start slirp4netns: {e}"))?;
        let routed = wait_for(|| {
            std::fs::read_to_string(format!("/proc/{inside}/net/route"))
                .ok()
                .filter(|routes| routes.lines().any(|l| l.starts_with("tap0\t00000000")))
        })
        .await;
        if routed.is_none() {
            return Err("slirp4netns did not configure the sandbox's network".into());
        }
        let mut nsenter =
            tokio::process::Command::new(find_on_path("nsenter").ok_or("the sandbox needs nsenter from util-linux")?);
        nsenter.arg(format!("--target={inside}")).arg("--net");
        if !runner_is_root() {
            nsenter.args(["--user", "--preserve-credentials"]);
        }
        let nft = find_on_path("nft").ok_or(SandboxError::MissingNft.to_string())?;
        let mut firewall = nsenter
            .arg(nft)
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start nft: {e}"))?;
        if let Some(mut stdin) = firewall.stdin.take() {
            use tokio::io::AsyncWriteExt as _;
            stdin
                .write_all(egress_rules(&self.blocked_networks, &host_networks()).as_bytes())
                .await
                .map_err(|e| format!("writing the sandbox's firewall rules: {e}"))?;
        }
        let output = firewall
            .wait_with_output()
            .await
            .map_err(|e| format!("running nft: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "the sandbox's firewall rules were refused: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt as _;
            stdin
                .write_all(b"go\n")
                .await
                .map_err(|e| format!("starting the sandboxed program: {e}"))?;
        }
        Ok(Network { _slirp: Some(slirp) })
    }
}

/// Polls `probe` for a few seconds.
async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..200 {
        if let Some(found) = probe() {
            return Some(found);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    None
}

/// Every network this host's interfaces are on (its own addresses and their neighbours):
/// through slirp4netns, they are the host and the machines and containers beside it.
fn host_networks() -> Vec<ipnet::IpNet> {
    let mut networks: Vec<ipnet::IpNet> = nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|interface| {
            let address = interface.address?;
            let netmask = interface.netmask;
            if let Some(v4) = address.as_sockaddr_in() {
                let mask = netmask.as_ref().and_then(|m| m.as_sockaddr_in()).map(|m| m.ip());
                let prefix = mask.map_or(32, |m| u32::from(m).count_ones() as u8);
                ipnet::Ipv4Net::new(v4.ip(), prefix)
                    .ok()
                    .map(|n| ipnet::IpNet::V4(n.trunc()))
            } else if let Some(v6) = address.as_sockaddr_in6() {
                let mask = netmask.as_ref().and_then(|m| m.as_sockaddr_in6()).map(|m| m.ip());
                let prefix = mask.map_or(128, |m| u128::from(m).count_ones() as u8);
                ipnet::Ipv6Net::new(v6.ip(), prefix)
                    .ok()
                    .map(|n| ipnet::IpNet::V6(n.trunc()))
            } else {
                None
            }
        })
        .collect();
    networks.sort_unstable();
    networks.dedup();
    networks
}

/// The egress firewall inside the sandbox: slirp4netns's DNS answers; loopback of the
/// host (through slirp's gateway), the host's own addresses, the blocked networks and the
/// metadata address are refused at once.
pub fn egress_rules(blocked: &[ipnet::IpNet], host: &[ipnet::IpNet]) -> String {
    // Always refused, whatever the configured list says: loopback, slirp's gateway (the
    // host's loopback), "this network", link-local (cloud metadata and container
    // credentials endpoints) and the metadata address's IPv6 form.
    let mut v4: Vec<String> = ["127.0.0.0/8", "10.0.2.2", "0.0.0.0/8", "169.254.0.0/16"]
        .map(str::to_owned)
        .to_vec();
    let mut v6: Vec<String> = ["::1", "fe80::/10", "fd00:ec2::254"].map(str::to_owned).to_vec();
    for network in blocked.iter().chain(host) {
        match network {
            ipnet::IpNet::V4(n) => v4.push(n.to_string()),
            ipnet::IpNet::V6(n) => v6.push(n.to_string()),
        }
    }
    format!(
        "table inet sandbox {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    oif \"lo\" accept\n    ip daddr 10.0.2.3 udp dport 53 accept\n    ip daddr 10.0.2.3 tcp dport 53 accept\n    ip daddr {{ {} }} reject with icmp type admin-prohibited\n    ip6 daddr {{ {} }} reject with icmpv6 type admin-prohibited\n  }}\n}}\n",
        v4.join(", "),
        v6.join(", ")
    )
}

/// Changes the owner of `path` and everything under it, never following a link (a link
/// in a repository may point anywhere on the host).
fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    let metadata = std::fs::symlink_metadata(path)?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Checks that what a sandbox of `network` needs is installed, naming the package when not.
pub fn tools(network: SandboxNetwork, untrusted: bool) -> Result<(PathBuf, PathBuf), SandboxError> {
    tools_in(&runners_path(), network, untrusted)
}

fn tools_in(
    path: &std::ffi::OsStr,
    network: SandboxNetwork,
    untrusted: bool,
) -> Result<(PathBuf, PathBuf), SandboxError> {
    let bwrap = find_executable("bwrap", path).ok_or(SandboxError::MissingBwrap)?;
    let setpriv = match find_executable("setpriv", path) {
        Some(setpriv) => setpriv,
        None if untrusted && runner_is_root() => return Err(SandboxError::MissingSetpriv),
        None => PathBuf::from("/usr/bin/setpriv"),
    };
    if network == SandboxNetwork::Egress {
        find_executable("slirp4netns", path).ok_or(SandboxError::MissingSlirp)?;
        find_executable("nft", path).ok_or(SandboxError::MissingNft)?;
    }
    Ok((bwrap, setpriv))
}

/// The process ids of `root` and every process that descends from it, read from `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    found
}

/// Whether process `pid` runs the executable `bin` (the same file, wherever it is bound).
pub fn runs(pid: u32, bin: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(format!("/proc/{pid}/exe")), std::fs::metadata(bin)) {
        (Ok(running), Ok(wanted)) => running.dev() == wanted.dev() && running.ino() == wanted.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(untrusted: bool, network: SandboxNetwork, home: &Path) -> Option<Sandbox> {
        let (bwrap, setpriv) = tools(network, untrusted).ok()?;
        Some(Sandbox {
            bwrap,
            setpriv,
            network,
            untrusted,
            user: NOBODY,
            blocked_networks: vec![],
            read_only: vec![],
            writable: vec![home.to_owned()],
            chdir: home.to_owned(),
        })
    }

    /// Runs `script` with bash (its `/dev/tcp` is the probe of the network).
    async fn run_sh(sandbox: &Sandbox, script: &str) -> (bool, String) {
        let output = sandbox
            .command(Path::new("/bin/bash"), &["-c".to_owned(), script.to_owned()])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .await
            .expect("bwrap runs");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    #[tokio::test]
    async fn an_untrusted_program_sees_none_of_the_hosts_processes_files_or_network() {
        let home = tempfile::tempdir().expect("tempdir");
        let Some(sandbox) = sandbox(true, SandboxNetwork::None, home.path()) else {
            panic!("bubblewrap is required for this test: apt-get install bubblewrap");
        };
        sandbox.hand_over(&[home.path()]).expect("chown");
        let secret_dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(secret_dir.path().join("runner.db"), "secret").expect("write");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = format!(
            "id -u; echo written > written && cat written; \
             cat /proc/{ppid}/environ && echo READ-PARENT; \
             ls /proc | grep -c '^[0-9]' ; \
             test -e /var/run/docker.sock && echo SOCKET; \
             cat {db} && echo READ-DB; \
             (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo CONNECTED; \
             grep CapBnd /proc/self/status; true",
            ppid = std::process::id(),
            db = secret_dir.path().join("runner.db").display(),
        );
        let (ok, text) = run_sh(&sandbox, &script).await;
        assert!(ok, "{text}");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("65534"), "{text}");
        assert!(text.contains("written"), "its home is writable: {text}");
        for reached in ["READ-PARENT", "SOCKET", "READ-DB", "CONNECTED"] {
            assert!(!text.contains(reached), "{reached}: {text}");
        }
        assert!(
            text.contains("CapBnd:\t0000000000000000"),
            "no capability can come back: {text}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn an_untrusted_sandbox_ends_with_the_command_that_started_it() {
        let home = tempfile::tempdir().expect("tempdir");
        let Some(sandbox) = sandbox(true, SandboxNetwork::None, home.path()) else {
            panic!("bubblewrap is required for this test: apt-get install bubblewrap");
        };
        sandbox.hand_over(&[home.path()]).expect("chown");
        // A program that ignores the end of its parent and goes on in the background.
        let mut child = sandbox
            .command(
                Path::new("/bin/sh"),
                &[
                    "-c".to_owned(),
                    "trap '' INT TERM HUP; sleep 300 & sleep 300".to_owned(),
                ],
            )
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .spawn()
            .expect("bwrap runs");
        let launcher = child.id().expect("pid");
        let inside = wait_for(|| {
            let all = descendants(launcher);
            (all.len() >= 5).then_some(all)
        })
        .await
        .expect("the sandbox's processes started");
        child.kill().await.expect("kill the launcher");
        let survivors = wait_for(|| {
            let alive: Vec<u32> = inside
                .iter()
                .copied()
                .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
                })
                .collect();
            alive.is_empty().then_some(())
        })
        .await;
        assert!(survivors.is_some(), "processes of the sandbox outlived it: {inside:?}");
    }

    #[tokio::test]
    async fn a_trusted_program_keeps_the_hosts_network_but_not_its_files() {
        let home = tempfile::tempdir().expect("tempdir");
        let Some(sandbox) = sandbox(false, SandboxNetwork::Host, home.path()) else {
            panic!("bubblewrap is required for this test: apt-get install bubblewrap");
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accept = std::thread::spawn(move || listener.accept().map(|_| ()));
        let script = format!(
            "echo x > file && cat file; ls /proc | grep -c '^[0-9]'; \
             test -e /var/run/docker.sock && echo SOCKET; \
             echo > /dev/tcp/127.0.0.1/{port} && echo CONNECTED; true"
        );
        let (ok, text) = run_sh(&sandbox, &script).await;
        assert!(ok, "{text}");
        assert!(text.contains("CONNECTED"), "{text}");
        assert!(!text.contains("SOCKET"), "{text}");
        accept.join().expect("thread").expect("accepted");
    }

    /// An address of this host other than loopback, where a listener stands for the host's
    /// services and neighbours.
    fn host_address() -> std::net::IpAddr {
        nix::ifaddrs::getifaddrs()
            .expect("getifaddrs")
            .filter_map(|interface| {
                interface
                    .address?
                    .as_sockaddr_in()
                    .map(|v4| std::net::IpAddr::V4(v4.ip()))
            })
            .find(|a| !a.is_loopback())
            .expect("this host has a non-loopback IPv4 address")
    }

    #[tokio::test]
    async fn egress_reaches_out_but_not_the_host_its_loopback_or_the_metadata_address() {
        let home = tempfile::tempdir().expect("tempdir");
        let Some(mut sandbox) = sandbox(true, SandboxNetwork::Egress, home.path()) else {
            panic!(
                "the egress sandbox needs bubblewrap, slirp4netns and nftables: apt-get install bubblewrap slirp4netns nftables"
            );
        };
        sandbox.hand_over(&[home.path()]).expect("chown");
        // No blocked ranges: only the host's own addresses, loopback and metadata are refused.
        sandbox.blocked_networks = vec![];
        let listener = tokio::net::TcpListener::bind((host_address(), 0)).await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let loopback = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let loopback_port = loopback.local_addr().expect("addr").port();
        let script = format!(
            "grep -c tap0 /proc/net/route; \
             (echo > /dev/tcp/{ip}/{port}) 2>/dev/null && echo HOST-REACHED; \
             (echo > /dev/tcp/10.0.2.2/{loopback_port}) 2>/dev/null && echo LOOPBACK-REACHED; \
             (echo > /dev/tcp/169.254.169.254/80) 2>/dev/null && echo METADATA-REACHED; \
             (echo > /dev/tcp/10.0.2.3/53) 2>/dev/null && echo DNS-REACHED; true",
            ip = address.ip(),
            port = address.port(),
        );
        let mut command = sandbox.command(Path::new("/bin/bash"), &["-c".to_owned(), script]);
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("bwrap runs");
        let network = sandbox.connect(&mut child).await.expect("the sandbox's network is up");
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept());
        let (output, accepted) = tokio::join!(child.wait_with_output(), accepted);
        drop(network);
        let output = output.expect("output");
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(
            text.starts_with('2'),
            "the sandbox has its own routes through tap0: {text}"
        );
        assert!(
            accepted.is_err(),
            "a listener on the host's address was reached: {text}"
        );
        for reached in ["HOST-REACHED", "LOOPBACK-REACHED", "METADATA-REACHED"] {
            assert!(!text.contains(reached), "{reached}: {text}");
        }
        assert!(text.contains("DNS-REACHED"), "slirp4netns's resolver answers: {text}");
    }

    #[test]
    fn a_missing_tool_is_one_sentence_naming_its_package() {
        let empty = tempfile::tempdir().expect("tempdir");
        let error = tools_in(empty.path().as_os_str(), SandboxNetwork::None, true)
            .expect_err("no bwrap there")
            .to_string();
        assert!(error.contains("apt-get install bubblewrap"), "{error}");
        // Only bwrap there: egress also needs slirp4netns.
        let bwrap = find_on_path("bwrap").expect("bubblewrap is installed: apt-get install bubblewrap");
        std::os::unix::fs::symlink(&bwrap, empty.path().join("bwrap")).expect("link");
        std::os::unix::fs::symlink(find_on_path("setpriv").expect("setpriv"), empty.path().join("setpriv"))
            .expect("link");
        let error = tools_in(empty.path().as_os_str(), SandboxNetwork::Egress, true)
            .expect_err("no slirp4netns there")
            .to_string();
        assert!(error.contains("apt-get install slirp4netns"), "{error}");
        assert!(tools_in(empty.path().as_os_str(), SandboxNetwork::None, true).is_ok());
    }

    #[test]
    fn descendants_include_the_root_and_its_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let all = descendants(std::process::id());
        assert!(all.contains(&std::process::id()));
        assert!(all.contains(&child.id()), "{all:?}");
        assert!(runs(child.id(), &find_on_path("sleep").expect("sleep on PATH")));
        child.kill().expect("kill");
        let _ = child.wait();
    }
}
