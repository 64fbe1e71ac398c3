//! A Caddy of the test's own (Debian's `caddy` package): admin API on a free loopback
//! port, no routes until a runner writes them. It dies with the thread that started it,
//! so a test's Caddy never outlives the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, which};

pub struct Caddy {
    child: Option<Child>,
    pub admin_port: u16,
    dir: PathBuf,
}

impl Caddy {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for Caddy").keep();
        let mut caddy = Self {
            child: None,
            admin_port: free_port(),
            dir,
        };
        caddy.run();
        caddy
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Starts Caddy (again) with an empty configuration: what a restart without a saved
    /// configuration looks like.
    pub fn run(&mut self) {
        let program = which("caddy").unwrap_or_else(|| {
            panic!("caddy is not installed: run scripts/services.sh install (Debian's caddy package)")
        });
        let config = self.dir.join("caddy.json");
        std::fs::write(
            &config,
            format!(r#"{{"admin":{{"listen":"127.0.0.1:{}"}}}}"#, self.admin_port),
        )
        .expect("write Caddy's config");
        let log = std::fs::File::create(self.dir.join("caddy.log")).expect("Caddy's log file");
        // setpriv (util-linux) makes Caddy die with the thread that started it.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(program)
            .args(["run", "--config"])
            .arg(&config)
            // Caddy keeps its certificates and autosave here, not in the user's home.
            .env("HOME", &self.dir)
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(command.spawn().expect("start caddy"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Caddy's admin API never answered: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills Caddy at once (what a crash looks like).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

thread_local! {
    static THIS_TESTS: std::cell::RefCell<Option<Caddy>> = const { std::cell::RefCell::new(None) };
}

/// The admin URL of this test's Caddy, started on first use: every config the test makes
/// (a restarted runner's too) uses the same one, which lives until the test's thread ends.
pub fn for_this_test() -> String {
    this_tests(|caddy| caddy.admin_url())
}

/// Does `what` with this test's Caddy (started on first use).
pub fn this_tests<T>(what: impl FnOnce(&mut Caddy) -> T) -> T {
    THIS_TESTS.with_borrow_mut(|slot| what(slot.get_or_insert_with(Caddy::start)))
}
