//! `[server]`: where the runner listens, its database, and how it logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::raw::RawServer;
use super::{ConfigError, Env, invalid};

/// GitHub never sends a body larger than this.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/runner.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `sqlite:` (one runner process) or `postgres://` (replicas sharing one database);
    /// shown without its credentials.
    #[serde(serialize_with = "redacted_url")]
    pub database_url: String,
    /// Where jobs check out and build. Beside the SQLite file by default; each replica
    /// on PostgreSQL names its own, and it is that replica's identity on its engine.
    pub work_dir: PathBuf,
    pub max_body_bytes: usize,
    /// Raw bodies of accepted deliveries are kept this long, for inspection and replay.
    #[serde(rename = "delivery_body_retention_days", serialize_with = "days")]
    pub delivery_body_retention: Duration,
    /// Finished jobs (their logs, steps and artifacts) are removed after this long;
    /// deployments and the jobs they name are kept. `None`: kept for ever.
    #[serde(rename = "retention_days", serialize_with = "optional_days")]
    pub job_retention: Option<Duration>,
    pub log_format: LogFormat,
}

fn redacted_url<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::secrets::redact_url(url))
}

fn optional_days<S: serde::Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.map_or(0, |d| d.as_secs() / 86_400))
}

fn days<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_secs() / 86_400)
}

pub(super) fn resolve(raw: RawServer, env: &Env<'_>) -> Result<ServerConfig, ConfigError> {
    let listen_raw = env
        .get("RUNNER_LISTEN")
        .or(raw.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = listen_raw.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("{listen_raw:?} is not an address like 127.0.0.1:8080"),
        )
    })?;
    let database_url = env
        .get("RUNNER_DATABASE_URL")
        .or(raw.database_url)
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let postgres = database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
    if !postgres && !database_url.starts_with("sqlite:") {
        return Err(invalid(
            "server.database_url",
            format!(
                "{:?} is neither a sqlite: URL nor a postgres:// URL",
                crate::secrets::redact_url(&database_url)
            ),
        ));
    }
    if postgres {
        let host = database_url
            .split_once("://")
            .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, host)| host))
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || host.starts_with(':') {
            return Err(invalid(
                "server.database_url",
                format!(
                    "{:?} names no host: write postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                    crate::secrets::redact_url(&database_url)
                ),
            ));
        }
    }
    let work_dir = match env.get("RUNNER_WORK_DIR").map(PathBuf::from).or(raw.work_dir) {
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err(invalid("server.work_dir", "must not be empty"));
        }
        Some(dir) => dir,
        None if postgres => {
            return Err(invalid(
                "server.work_dir",
                "required with a postgres:// database_url: each replica needs a work directory of its own",
            ));
        }
        None => default_work_dir(&database_url),
    };
    let max_body_bytes = match env.get("RUNNER_MAX_BODY_BYTES") {
        Some(v) => v
            .parse()
            .map_err(|_| invalid("RUNNER_MAX_BODY_BYTES", format!("{v:?} is not a number of bytes")))?,
        None => raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
    };
    if max_body_bytes < 1024 {
        return Err(invalid("server.max_body_bytes", "must be at least 1024"));
    }
    let retention_days = raw.delivery_body_retention_days.unwrap_or(14);
    let log_format = match env
        .get("RUNNER_LOG_FORMAT")
        .or(raw.log_format)
        .as_deref()
        .unwrap_or("human")
    {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "server.log_format",
                format!("{other:?} is not \"human\" or \"json\""),
            ));
        }
    };
    Ok(ServerConfig {
        listen,
        database_url,
        work_dir,
        max_body_bytes,
        delivery_body_retention: Duration::from_secs(u64::from(retention_days) * 86_400),
        // 0: kept for ever.
        job_retention: match raw.retention_days.unwrap_or(90) {
            0 => None,
            days => Some(Duration::from_secs(u64::from(days) * 86_400)),
        },
        log_format,
    })
}

/// The file a `sqlite:` URL names; `None` for an in-memory database or another scheme.
fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?
        .split('?')
        .next()
        .unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// Job work directories live beside the SQLite file.
fn default_work_dir(database_url: &str) -> PathBuf {
    match sqlite_file(database_url) {
        Some(file) => file
            .parent()
            .map_or_else(|| PathBuf::from("work"), |dir| dir.join("work")),
        None => std::env::temp_dir().join(format!("runner-work-{}", std::process::id())),
    }
}

impl ServerConfig {
    /// What names this runner to its engine: its SQLite file (as runners before replicas
    /// existed were named, so an upgrade keeps finding its containers), or, for a replica
    /// on PostgreSQL, its work directory.
    pub fn identity_path(&self) -> PathBuf {
        sqlite_file(&self.database_url).unwrap_or_else(|| {
            if self.database_url.starts_with("sqlite:") {
                // In memory: one process's own.
                PathBuf::from(format!(":memory:{}", std::process::id()))
            } else {
                self.work_dir.clone()
            }
        })
    }
}
