//! The runner's side of every outside system a job talks to, each behind a small trait in
//! the runner's own words: the container engine (and BuildKit, the SSH tunnel, build
//! context packing), git checkouts, registries, terraform (and its sandbox), the deploy
//! targets and the forges (GitHub's API). The [`connect::Connector`] makes them for a job;
//! the pipeline sees the traits only.

pub mod buildkit;
pub mod checkout;
pub mod child;
pub mod connect;
pub mod context;
pub mod engine;
pub mod forge;
pub mod probe;
pub mod registry;
pub mod sandbox;
mod ssh_tunnel;
pub mod target;
pub mod terraform;

pub use connect::{Connections, Connector};
pub use target::local::{keep_routes, restore_local_environments, restore_previews, slot_name};
