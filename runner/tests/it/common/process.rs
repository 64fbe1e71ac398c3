//! The real `runner` binary as a child process: started with a config and a clean
//! environment, its JSON log collected, stopped with SIGTERM or killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{OTHER_SECRET, SECRET};

pub struct Runner {
    child: Child,
    pub base: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Runner {
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// With only `PATH`, the two test projects' webhook secrets, JSON logs and `extra`
    /// (which may override any of them) in its environment.
    pub fn start_with_env(config: &Path, extra: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["serve", "--config"])
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HELLO_SECRET", SECRET)
            .env("OTHER_SECRET", OTHER_SECRET)
            .env("RUNNER_LOG_FORMAT", "json")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runner");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let found = lines.lock().expect("lock").iter().find_map(|line| {
                let json: Value = serde_json::from_str(line).ok()?;
                (json["message"] == "listening").then(|| json["addr"].as_str().map(str::to_owned))?
            });
            if let Some(addr) = found {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "runner did not start: {:#?}",
                lines.lock().expect("lock")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            base: format!("http://{addr}"),
            lines,
        }
    }

    pub fn kill9(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let _ = self.child.wait();
    }

    /// SIGTERM, then its exit (within 20 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                return exit;
            }
            assert!(Instant::now() < deadline, "runner did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.lines.lock().expect("lock").join("\n")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
