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

/// What a registry could not do. The text names what was being done and, for an API that
/// failed, its whole cause chain; it never holds a login.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be asked, or its answer could not be read.
    #[error("{doing}: {}", chain(.source.as_ref()))]
    Unreachable {
        doing: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry answered, and refused.
    #[error("{doing}: the registry answered {status}")]
    Refused { doing: String, status: u16 },
    /// The answer lacked what the registry's API documents.
    #[error("{0}")]
    Unexpected(String),
}

impl RegistryError {
    pub fn unreachable(doing: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unreachable {
            doing: doing.into(),
            source: Box::new(source),
        }
    }
}

/// An error and its causes in one line: SDK errors say little at the top ("dispatch
/// failure") and everything below it.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text = format!("{text}: {words}");
        }
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// The destination of `image` (the repository part of the image's name), made ready
    /// to receive a push.
    async fn destination(&self, image: &str, log: &JobLog) -> Result<Destination, RegistryError>;
    /// Deletes the runner's tags of `image` (commit SHAs) whose manifests `keep` does not
    /// name; returns how many it deleted. A registry that cannot delete keeps everything.
    async fn prune(&self, _image: &str, _keep: &KeptImages, _log: &JobLog) -> Result<usize, RegistryError> {
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
    ) -> Result<usize, RegistryError> {
        Ok(0)
    }
}
