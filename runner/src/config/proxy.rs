//! `[proxy]`: the Caddy in front of local environments. The runner owns only the routes
//! it names (`runner-…`); the rest of Caddy's configuration is left as it is.

use std::time::Duration;

use serde::Serialize;

use super::raw::RawProxy;
use super::secret::secs;
use super::{ConfigError, Env, invalid};

pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:2019";

#[derive(Debug, Clone, Serialize)]
pub struct ProxyConfig {
    /// Caddy's admin API.
    pub admin_url: String,
    /// Where hostname routes without TLS are served (`tls = "off"`).
    pub http_listen: String,
    /// Where hostname routes with `tls = "auto"` are served; Caddy gets their certificates.
    pub https_listen: String,
    /// How often Caddy checks each slot's health: a new version on the preferred slot
    /// takes traffic within this long of answering.
    #[serde(rename = "health_interval_ms", serialize_with = "millis")]
    pub health_interval: Duration,
    /// How often the runner compares Caddy's routes with its own record (and puts back
    /// what a Caddy restart lost).
    #[serde(rename = "check_interval_secs", serialize_with = "secs")]
    pub check_interval: Duration,
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u128(duration.as_millis())
}

pub(super) fn resolve(raw: RawProxy, env: &Env<'_>) -> Result<ProxyConfig, ConfigError> {
    let admin_url = env
        .get("RUNNER_PROXY_ADMIN_URL")
        .or(raw.admin_url)
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned());
    let parsed = reqwest::Url::parse(&admin_url)
        .map_err(|e| invalid("proxy.admin_url", format!("{admin_url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(
            "proxy.admin_url",
            format!("{admin_url:?} is not an http(s) URL of Caddy's admin API"),
        ));
    }
    let health_interval_ms = raw.health_interval_ms.unwrap_or(250);
    if !(50..=10_000).contains(&health_interval_ms) {
        return Err(invalid("proxy.health_interval_ms", "must be between 50 and 10000"));
    }
    let check_interval_secs = raw.check_interval_secs.unwrap_or(5);
    if !(1..=3600).contains(&check_interval_secs) {
        return Err(invalid("proxy.check_interval_secs", "must be between 1 and 3600"));
    }
    Ok(ProxyConfig {
        admin_url: admin_url.trim_end_matches('/').to_owned(),
        http_listen: raw.http_listen.unwrap_or_else(|| ":80".to_owned()),
        https_listen: raw.https_listen.unwrap_or_else(|| ":443".to_owned()),
        health_interval: Duration::from_millis(health_interval_ms),
        check_interval: Duration::from_secs(check_interval_secs),
    })
}
