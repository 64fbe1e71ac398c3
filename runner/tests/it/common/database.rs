//! Which database a test's runner uses: SQLite in the test's own directory (the default),
//! or, with `RUNNER_TEST_DATABASE=postgres`, a fresh database of its own on the PostgreSQL
//! server named by `RUNNER_TEST_POSTGRES` (scripts/services.sh starts one). Runners given
//! the same directory share one database, as they would share one SQLite file.

use std::path::Path;
use std::process::Command;

pub fn is_postgres() -> bool {
    match std::env::var("RUNNER_TEST_DATABASE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("RUNNER_TEST_DATABASE={other:?}: expected \"sqlite\" or \"postgres\""),
    }
}

/// The database URL for a runner whose files live in `dir`.
pub fn url_for(dir: &Path) -> String {
    if is_postgres() {
        postgres_database(&database_name(dir))
    } else {
        format!("sqlite://{}", dir.join("runner.db").display())
    }
}

/// The PostgreSQL server's URL (its maintenance database).
pub fn postgres_server() -> String {
    std::env::var("RUNNER_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "RUNNER_TEST_POSTGRES is not set: start PostgreSQL with `scripts/services.sh install && \
             scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`"
        )
    })
}

fn database_name(dir: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
    format!("runner_test_{}", hex::encode(&digest[..8]))
}

/// Creates the database `name` (once) and returns its URL.
pub fn postgres_database(name: &str) -> String {
    let server = postgres_server();
    let exists = psql(&server, &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"));
    if exists.trim() != "1" {
        psql(&server, &format!("CREATE DATABASE {name}"));
    }
    let (base, _) = server.rsplit_once('/').expect("RUNNER_TEST_POSTGRES ends in /DATABASE");
    format!("{base}/{name}")
}

/// Runs one statement with psql, returning what it printed (unaligned, tuples only).
pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs (apt-get install postgresql-client)");
    assert!(
        output.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether the runner whose files live in `dir` has created its database's schema.
pub fn is_migrated(dir: &Path) -> bool {
    if is_postgres() {
        psql(
            &url_for(dir),
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = '_sqlx_migrations'",
        )
        .trim()
            == "1"
    } else {
        dir.join("runner.db").exists()
    }
}

/// Everything the database holds, as text: the SQLite files' bytes, or every row of
/// every table of the PostgreSQL database.
pub fn stored_text(dir: &Path) -> String {
    if is_postgres() {
        let url = url_for(dir);
        let tables = psql(&url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
        tables
            .lines()
            .filter(|t| !t.is_empty())
            .map(|table| psql(&url, &format!("SELECT CAST(t AS text) FROM {table} AS t")))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        let mut text = String::new();
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("runner.db"))
            {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).expect("read database")));
            }
        }
        text
    }
}

/// A PostgreSQL server of a test's own (Debian's binaries, `RUNNER_TEST_PG_BIN`), on a
/// free loopback port, for tests that stop and start the database under a runner.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl OwnPostgres {
    pub fn start() -> Self {
        let bin = std::path::PathBuf::from(std::env::var("RUNNER_TEST_PG_BIN").unwrap_or_else(|_| {
            panic!("RUNNER_TEST_PG_BIN is not set: scripts/services.sh env names Debian's PostgreSQL 15 binaries")
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Self {
            port: super::free_port(),
            dir,
            bin,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(server.dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        server.run(
            "initdb",
            &["-D", &server.data(), "-U", "runner", "--auth=trust", "-E", "UTF8"],
        );
        server.resume();
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let output = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://runner@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (open connections are cut).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn resume(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data();
        let mut stop = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            Command::new(pg_ctl)
        };
        let _ = stop.args(["-D", &data, "-m", "immediate", "stop"]).output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
