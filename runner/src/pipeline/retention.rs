//! Image retention after a deploy: per environment, the images of the project's latest
//! `keep_deployments` deployments stay (the live one and every one a rollback can go back
//! to), as do those of its unfinished jobs; every other image the runner built for the
//! project goes, from the engine and, where it allows deletes, from the registry.

use std::sync::Arc;

use super::PipelineContext;
use crate::adapters::engine::{ContainerEngine, StoredImage};
use crate::config::Project;
use crate::joblog::JobLog;
use crate::store::deployments::{self, KeptImages};

/// Never fails the deploy: what cannot be removed now is removed after a later one.
/// `pushed_to` is the repository the deploy's image was pushed to.
pub(super) async fn prune(
    ctx: &PipelineContext,
    project: &Project,
    engine: &Arc<dyn ContainerEngine>,
    pushed_to: &str,
    log: &JobLog,
) {
    let Some(build) = &project.build else { return };
    let kept = match deployments::kept_images(&ctx.pool, project.name.as_str(), project.keep_deployments).await {
        Ok(kept) => kept,
        Err(error) => {
            log.system(format!(
                "retention: cannot read the deployments to keep ({error}); nothing is pruned"
            ));
            return;
        }
    };
    let registry = match &project.registry {
        Some(settings) => Some(ctx.connector.registry(settings).await),
        None => None,
    };
    let repositories = [build.image.clone(), pushed_to.to_owned()];
    let images = match engine.images(&repositories).await {
        Ok(images) => images,
        Err(error) => {
            log.system(format!("retention: cannot list the engine's images ({error})"));
            return;
        }
    };
    let (mut removed, mut freed, mut kept_bytes) = (0, 0, 0);
    for image in &images {
        if needed(image, &kept) {
            kept_bytes += image.bytes;
            continue;
        }
        // By each of its names: an image pushed is named twice (built and pushed), and the
        // engine refuses to remove it by id while more than one name points at it.
        let mut gone = true;
        for name in image.tags.iter().chain(&image.digests) {
            gone &= engine.remove_image(name).await.is_ok();
        }
        if gone {
            removed += 1;
            freed += image.bytes;
        } else {
            // Still used by a container: it stays, and counts.
            kept_bytes += image.bytes;
        }
    }
    ctx.metrics
        .images_bytes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(project.name.to_string(), kept_bytes);
    let deleted = match &registry {
        Some(registry) => registry.prune(&build.image, &kept, log).await.unwrap_or_else(|error| {
            log.system(format!("retention: {error}"));
            0
        }),
        None => 0,
    };
    if removed + deleted > 0 {
        log.system(format!(
            "retention: removed {removed} image(s) ({:.1} MB) from the engine and {deleted} from the registry; \
             kept those of the last {} deployments of each environment",
            freed as f64 / 1e6,
            project.keep_deployments
        ));
    }
}

/// An image stays if any of its names is a kept commit's tag or a kept digest.
fn needed(image: &StoredImage, kept: &KeptImages) -> bool {
    image
        .tags
        .iter()
        .filter_map(|name| name.rsplit_once(':').map(|(_, tag)| tag))
        // A preview's image (`pr-<number>-<sha>`) counts by its commit too: its job may
        // be about to start it.
        .map(|tag| {
            tag.strip_prefix("pr-")
                .and_then(|rest| rest.split_once('-'))
                .map_or(tag, |(_, sha)| sha)
        })
        .any(|tag| kept.shas.contains(tag))
        || image
            .digests
            .iter()
            .filter_map(|name| name.rsplit_once('@').map(|(_, digest)| digest))
            .any(|digest| kept.digests.contains(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_image_is_kept_while_its_commit_is() {
        let sha = "b".repeat(40);
        let kept = KeptImages {
            shas: [sha.clone()].into(),
            digests: Default::default(),
        };
        let image = |tag: String| StoredImage {
            id: "sha256:id".into(),
            tags: vec![tag],
            digests: Vec::new(),
            bytes: 1,
        };
        assert!(needed(&image(format!("r/app:pr-7-{sha}")), &kept));
        assert!(!needed(&image(format!("r/app:pr-7-{}", "c".repeat(40))), &kept));
    }

    #[test]
    fn an_image_is_kept_by_its_commit_tag_or_its_digest_and_only_then() {
        let kept = KeptImages {
            shas: ["a".repeat(40)].into(),
            digests: ["sha256:kept".to_owned()].into(),
        };
        let image = |tags: &[&str], digests: &[&str]| StoredImage {
            id: "sha256:id".into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            digests: digests.iter().map(|d| (*d).to_owned()).collect(),
            bytes: 1,
        };
        assert!(needed(
            &image(&[&format!("reg:5000/app:{}", "a".repeat(40))], &[]),
            &kept
        ));
        assert!(needed(&image(&[], &["reg:5000/app@sha256:kept"]), &kept));
        assert!(!needed(
            &image(&[&format!("app:{}", "b".repeat(40))], &["app@sha256:other"]),
            &kept
        ));
    }
}
