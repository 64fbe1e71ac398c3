//! `[dashboard]`: who may read it, where people reach it, and its sessions.

use std::time::Duration;

use serde::Serialize;

use super::raw::RawDashboard;
use super::{ConfigError, Env, invalid};

/// Who may read the dashboard's pages and the read endpoints of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadAccess {
    /// Anyone who can reach the runner.
    Public,
    /// Only a logged-in admin (session cookie) or a caller with the admin token.
    Login,
}

#[derive(Debug, Clone, Serialize)]
pub struct DashboardConfig {
    pub read_access: ReadAccess,
    /// Where people reach the dashboard (`https://ci.example.com`), for links the runner
    /// hands out; an `https` URL also marks the session cookie `Secure`.
    pub public_url: Option<String>,
    #[serde(rename = "session_hours", serialize_with = "hours")]
    pub session_lifetime: Duration,
    /// Login attempts one client address may make per minute.
    pub login_attempts_per_minute: u32,
}

fn hours<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_secs() / 3600)
}

impl DashboardConfig {
    pub fn secure_cookies(&self) -> bool {
        self.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
    }
}

pub(super) fn resolve(raw: RawDashboard, env: &Env<'_>) -> Result<DashboardConfig, ConfigError> {
    let read_access = match env
        .get("RUNNER_DASHBOARD_READ_ACCESS")
        .or(raw.read_access)
        .as_deref()
        .unwrap_or("login")
    {
        "public" => ReadAccess::Public,
        "login" => ReadAccess::Login,
        other => {
            return Err(invalid(
                "dashboard.read_access",
                format!("{other:?} is not \"public\" or \"login\""),
            ));
        }
    };
    let public_url = env
        .get("RUNNER_PUBLIC_URL")
        .or(raw.public_url)
        .map(|u| u.trim_end_matches('/').to_owned());
    if let Some(url) = &public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid(
            "dashboard.public_url",
            format!("{url:?} must start with http:// or https://"),
        ));
    }
    let login_attempts_per_minute = raw.login_attempts_per_minute.unwrap_or(10);
    if !(1..=1000).contains(&login_attempts_per_minute) {
        return Err(invalid(
            "dashboard.login_attempts_per_minute",
            "must be between 1 and 1000",
        ));
    }
    let session_hours = raw.session_hours.unwrap_or(12);
    if !(1..=24 * 30).contains(&session_hours) {
        return Err(invalid("dashboard.session_hours", "must be between 1 and 720"));
    }
    Ok(DashboardConfig {
        read_access,
        public_url,
        session_lifetime: Duration::from_secs(u64::from(session_hours) * 3600),
        login_attempts_per_minute,
    })
}
