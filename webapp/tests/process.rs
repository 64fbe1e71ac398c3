//! The real `webapp` binary: its log lines, signals, exit codes and self-probe.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_webapp");

struct Running {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Running {
    fn start(extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn webapp");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("LOG_FORMAT=json wrote a line that is not JSON: {line}"));
                sink.lock().expect("lock").push(value);
            }
        });
        let mut running = Self { child, port: 0, lines };
        let listening = running.wait_for_line(|line| line["message"] == "listening");
        let addr = listening["addr"].as_str().expect("addr field").to_owned();
        running.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in addr");
        running
    }

    fn wait_for_line(&self, matches: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(line) = self.lines.lock().expect("lock").iter().find(|l| matches(l)) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no matching log line; got {:#?}", self.lines.lock().expect("lock"));
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "webapp did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let response = reqwest::get(url).await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    })
}

#[test]
fn each_hit_of_index_is_logged_at_info() {
    let app = Running::start(&[]);
    for _ in 0..3 {
        assert_eq!(get(&app.url("/")).0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hits = app
            .lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l["message"] == "Hello world endpoint was accessed" && l["level"] == "INFO")
            .count();
        if hits == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "expected 3 info lines, saw {hits}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_404_is_logged_at_error_with_the_url() {
    let app = Running::start(&[]);
    let (status, body) = get(&app.url("/missing/page?q=1"));
    assert_eq!((status, body.as_str()), (404, "404 page not found"));
    let line = app.wait_for_line(|l| l["level"] == "ERROR" && l["url"].as_str().is_some());
    assert_eq!(line["url"], "/missing/page?q=1");
}

#[test]
fn version_uses_app_commit_from_the_environment() {
    let app = Running::start(&[("APP_COMMIT", "feedface")]);
    let (status, body) = get(&app.url("/version"));
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["commit"], "feedface");
}

#[test]
fn sigterm_and_sigint_stop_the_process_with_exit_code_0() {
    for signal in ["TERM", "INT"] {
        let mut app = Running::start(&[]);
        assert_eq!(get(&app.url("/health")).0, 200);
        app.signal(signal);
        let status = app.wait_exit();
        assert_eq!(status.code(), Some(0), "after SIG{signal}");
        app.wait_for_line(|l| l["message"] == "stopped");
    }
}

#[test]
fn healthcheck_exits_0_when_healthy_and_1_when_nothing_listens() {
    let app = Running::start(&[]);
    let healthy = Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("PORT", app.port.to_string())
        .status()
        .expect("run healthcheck");
    assert_eq!(healthy.code(), Some(0));

    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let output = Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("PORT", free_port.to_string())
        .output()
        .expect("run healthcheck");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach"));
}

#[test]
fn invalid_settings_exit_with_a_clear_message() {
    let output = Command::new(BIN)
        .env_clear()
        .env("PORT", "eighty")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PORT must be a number"), "{stderr}");
}
