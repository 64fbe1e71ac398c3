use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Where the service listens and what it reports about itself, read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub shutdown_grace: Duration,
    /// The git commit this build came from, shown by `/version`.
    pub commit: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("PORT must be a number from 0 to 65535, got {0:?}")]
    Port(String),
    #[error("HOST must be an IP address, got {0:?}")]
    Host(String),
    #[error("SHUTDOWN_GRACE_SECS must be a whole number of seconds, got {0:?}")]
    Grace(String),
}

/// The port of the original service.
pub const DEFAULT_PORT: u16 = 5001;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Settings {
    /// `PORT` (default 5001), `HOST` (default 0.0.0.0), `SHUTDOWN_GRACE_SECS` (default 10),
    /// `APP_COMMIT` (default: the commit baked in at build time, else "unknown").
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let port = match lookup("PORT").filter(|v| !v.is_empty()) {
            Some(raw) => raw.trim().parse().map_err(|_| SettingsError::Port(raw))?,
            None => DEFAULT_PORT,
        };
        let host = match lookup("HOST").filter(|v| !v.is_empty()) {
            Some(raw) => raw.trim().parse().map_err(|_| SettingsError::Host(raw))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let shutdown_grace = match lookup("SHUTDOWN_GRACE_SECS").filter(|v| !v.is_empty()) {
            Some(raw) => Duration::from_secs(raw.trim().parse().map_err(|_| SettingsError::Grace(raw))?),
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let commit = lookup("APP_COMMIT")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| option_env!("APP_COMMIT").map(str::to_owned))
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(Self {
            host,
            port,
            shutdown_grace,
            commit,
        })
    }

    pub(crate) fn version_info(&self) -> serde_json::Value {
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": self.commit,
        })
    }
}
