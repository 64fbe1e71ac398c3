//! The runner's integration tests, in one test binary: each module starts the real
//! runner (in process on port 0, or as a process) against the real outside parts that
//! `scripts/services.sh` runs, with a fresh database.

mod common;

mod api;
mod browser;
mod checks;
mod cli;
mod dashboard;
mod demo;
mod deploy_infra;
mod ecr;
mod engine_builds;
mod environments;
mod forges;
mod github;
mod parse_properties;
mod pipeline_e2e;
mod previews;
mod process;
mod queue;
mod replays;
mod replicas;
mod retention;
mod terraform;
mod trust_domains;
mod untrusted;
mod webhook;
mod zero_downtime;
