//! `[server]`: where the runner listens, its database, and how it logs.

use std::net::SocketAddr;
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
    pub database_url: String,
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
    if !database_url.starts_with("sqlite:") {
        return Err(invalid(
            "server.database_url",
            format!("{database_url:?}: only sqlite: URLs are supported by this build"),
        ));
    }
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
