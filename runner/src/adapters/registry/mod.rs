//! The registry boundary: where a built image is pushed, and the login the engine pushes
//! with. The push itself is the engine's; a registry only names the destination and
//! prepares it (an ECR repository is created when missing).
//!
//! Adding a kind of registry is a file here, a [`RegistryKind`] variant in the config, and
//! one arm in the pipeline's connector.

pub mod ecr;
pub mod v2;

use super::engine::RegistryAuth;
use crate::joblog::JobLog;
use crate::store::deployments::KeptImages;

/// Where an image goes, and how to log in there.
pub struct Destination {
    /// `host[:port][/path]/<image>`, without a tag.
    pub repository: String,
    pub auth: Option<RegistryAuth>,
}

#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// The destination of `image` (the repository part of the image's name), made ready
    /// to receive a push.
    async fn destination(&self, image: &str, log: &JobLog) -> Result<Destination, String>;
    /// Deletes the runner's tags of `image` (commit SHAs) whose manifests `keep` does not
    /// name; returns how many it deleted. A registry that cannot delete keeps everything.
    async fn prune(&self, _image: &str, _keep: &KeptImages, _log: &JobLog) -> Result<usize, String> {
        Ok(0)
    }
    /// Deletes `image`'s tags that start with `prefix` (a preview's), but no manifest
    /// `keep` names; returns how many it deleted.
    async fn delete_tags(
        &self,
        _image: &str,
        _prefix: &str,
        _keep: &KeptImages,
        _log: &JobLog,
    ) -> Result<usize, String> {
        Ok(0)
    }
}
