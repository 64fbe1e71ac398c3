//! The config file as written, before any checking. Every field is documented in
//! `runner.example.toml`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) queue: RawQueue,
    #[serde(default)]
    pub(super) dashboard: RawDashboard,
    #[serde(default)]
    pub(super) github: RawGitHub,
    #[serde(default)]
    pub(super) projects: Vec<RawProject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGitHub {
    pub(super) api_url: Option<String>,
    pub(super) status_context: Option<String>,
    pub(super) reconcile_interval_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProjectGitHub {
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) app_id: Option<u64>,
    pub(super) installation_id: Option<u64>,
    pub(super) private_key_env: Option<String>,
    pub(super) private_key_file: Option<PathBuf>,
    pub(super) hook_id: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDashboard {
    pub(super) read_access: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) session_hours: Option<u32>,
    pub(super) login_attempts_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) database_url: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) delivery_body_retention_days: Option<u32>,
    pub(super) log_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub(super) workers: Option<usize>,
    pub(super) lease_secs: Option<u64>,
    pub(super) max_attempts: Option<u32>,
    pub(super) job_log_max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProject {
    pub(super) name: String,
    pub(super) repository: String,
    pub(super) deploy_branches: Vec<String>,
    pub(super) webhook_secret_env: Option<String>,
    pub(super) webhook_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) deploy_tags: bool,
    pub(super) environment: Option<String>,
    pub(super) clone_url: Option<String>,
    pub(super) pull_requests: Option<String>,
    pub(super) containers: Option<RawContainers>,
    pub(super) build: Option<RawBuild>,
    pub(super) smoke: Option<RawSmoke>,
    pub(super) registry: Option<RawRegistry>,
    pub(super) terraform: Option<RawTerraform>,
    pub(super) rollout: Option<RawRollout>,
    pub(super) github: Option<RawProjectGitHub>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTerraform {
    pub(super) dir: String,
    pub(super) image_var: Option<String>,
    #[serde(default)]
    pub(super) vars: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) backend_config: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) secret_env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) secret_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) plan_pull_requests: bool,
    #[serde(default)]
    pub(super) pull_request_env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) pull_request_secret_env: BTreeMap<String, String>,
    pub(super) workspace: Option<String>,
    #[serde(default)]
    pub(super) require_approval: bool,
    pub(super) lock_timeout_secs: Option<u64>,
    pub(super) timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBuild {
    pub(super) image: String,
    pub(super) context: Option<String>,
    pub(super) dockerfile: Option<String>,
    #[serde(default)]
    pub(super) build_args: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, String>,
    pub(super) timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainers {
    pub(super) memory_mb: Option<u64>,
    pub(super) cpus: Option<f64>,
    pub(super) pids_limit: Option<i64>,
    pub(super) capabilities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmoke {
    pub(super) container_port: u16,
    pub(super) path: Option<String>,
    pub(super) expect_status: Option<u16>,
    pub(super) expect_body: Option<String>,
    pub(super) timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) kind: Option<String>,
    pub(super) url: Option<String>,
    pub(super) region: Option<String>,
    pub(super) endpoint_url: Option<String>,
    pub(super) username_env: Option<String>,
    pub(super) password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub(super) target: String,
    pub(super) host_port: Option<u16>,
    pub(super) bind: Option<String>,
    pub(super) timeout_secs: Option<u64>,
    pub(super) cluster: Option<String>,
    pub(super) service: Option<String>,
    pub(super) container: Option<String>,
    pub(super) region: Option<String>,
    pub(super) endpoint_url: Option<String>,
    pub(super) rollback_on_failure: Option<bool>,
    pub(super) url: Option<String>,
}
