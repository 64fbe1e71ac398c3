//! A self-hosted push-to-deploy runner: verified GitHub webhooks in, a durable job queue
//! (SQLite embedded, PostgreSQL for replicas), and workers that check out, build, test
//! and roll out each commit through the adapters of the outside systems.

pub mod adapters;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod domain;
pub mod forge;
pub mod job;
pub mod joblog;
pub mod metrics;
pub mod operations;
pub mod percent;
pub mod pipeline;
pub mod proxy;
pub mod runfile;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod webhook;
pub mod worker;

pub use config::Config;
pub use startup::Application;
