//! The config file as written, before any checking: what `runner.toml` may hold. Every
//! field is documented in `runner.example.toml` (`reference_tests` fails when one is
//! not). Tests build configs with these types and write them as TOML.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub engine: RawEngine,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub dashboard: RawDashboard,
    #[serde(default)]
    pub github: RawGitHub,
    /// Gitea, Forgejo and GitLab servers, by the name projects' `forge` keys use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forges: BTreeMap<String, RawForge>,
    #[serde(default)]
    pub projects: Vec<RawProject>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawForge {
    pub kind: Option<String>,
    pub url: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitHub {
    pub api_url: Option<String>,
    pub status_context: Option<String>,
    pub reconcile_interval_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProjectGitHub {
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub app_id: Option<u64>,
    pub installation_id: Option<u64>,
    pub private_key_env: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub hook_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDashboard {
    pub read_access: Option<String>,
    pub public_url: Option<String>,
    pub session_hours: Option<u32>,
    pub login_attempts_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub delivery_body_retention_days: Option<u32>,
    pub retention_days: Option<u32>,
    pub log_format: Option<String>,
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub host: Option<String>,
    pub untrusted_host: Option<String>,
    pub probe_image: Option<String>,
    pub metadata_address: Option<String>,
    pub tls_cert_dir: Option<PathBuf>,
    pub ssh_identity_file: Option<PathBuf>,
    pub ssh_known_hosts_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub admin_url: Option<String>,
    pub http_listen: Option<String>,
    pub https_listen: Option<String>,
    pub health_interval_ms: Option<u64>,
    pub check_interval_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub workers: Option<usize>,
    pub lease_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    pub job_log_max_bytes: Option<u64>,
    pub labels: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub name: String,
    pub repository: String,
    pub forge: Option<String>,
    #[serde(default)]
    pub deploy_branches: Vec<String>,
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub deploy_tags: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs_on: Vec<String>,
    pub environment: Option<String>,
    pub clone_url: Option<String>,
    pub pull_requests: Option<String>,
    pub containers: Option<RawContainers>,
    pub build: Option<RawBuild>,
    pub smoke: Option<RawSmoke>,
    pub registry: Option<RawRegistry>,
    pub terraform: Option<RawTerraform>,
    pub rollout: Option<RawRollout>,
    pub github: Option<RawProjectGitHub>,
    pub retention: Option<RawRetention>,
    pub previews: Option<RawPreviews>,
    /// Several environments fed by branches of the repository; without them, the
    /// project has one (`environment`, `deploy_branches`, `deploy_tags`, `rollout`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<RawEnvironment>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub keep_deployments: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    pub name: String,
    #[serde(default)]
    pub branches: Vec<String>,
    #[serde(default)]
    pub tags: bool,
    pub rollout: Option<RawRollout>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTerraform {
    pub dir: String,
    pub image_var: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub backend_config: BTreeMap<String, String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub plan_pull_requests: bool,
    #[serde(default)]
    pub pull_request_env: BTreeMap<String, String>,
    #[serde(default)]
    pub pull_request_secret_env: BTreeMap<String, String>,
    pub workspace: Option<String>,
    #[serde(default)]
    pub require_approval: bool,
    pub lock_timeout_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub sandbox: Option<bool>,
    pub pull_request_network: Option<String>,
    pub pull_request_blocked_networks: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    pub image: String,
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    pub timeout_secs: Option<u64>,
    pub builder: Option<String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    #[serde(default)]
    pub cache_from: Vec<String>,
    pub cache_to: Option<String>,
    pub pull_request_build_network: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawContainers {
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub capabilities: Option<Vec<String>>,
    pub init: Option<bool>,
    pub stop_grace_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmoke {
    pub container_port: u16,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    pub expect_body: Option<String>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub target: String,
    pub host_port: Option<u16>,
    pub bind: Option<String>,
    pub hostname: Option<String>,
    pub tls: Option<String>,
    pub slot_ports: Option<Vec<u16>>,
    pub drain_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub container: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub rollback_on_failure: Option<bool>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreviews {
    pub hostname: Option<String>,
    pub tls: Option<String>,
    pub host_ports: Option<Vec<u16>>,
    pub bind: Option<String>,
    pub slot_ports: Option<Vec<u16>>,
    pub max_previews: Option<u32>,
    pub ttl_hours: Option<u64>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    pub drain_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
}
