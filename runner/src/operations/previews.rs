//! Previews in the background: each closed, expired, evicted or admin-removed preview is
//! removed (containers, route, network, pushed images) once no job of its pull request
//! runs; previews without a push for `ttl_hours` are expired; and, once after start-up,
//! previews whose pull request closed while the runner was down are found and removed.
//! An admin's removal is an operation like the others.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{OperationError, Operations};
use crate::adapters::connect::Connector;
use crate::adapters::engine::ContainerEngine;
use crate::adapters::forge::Forges;
use crate::clock::Clock;
use crate::config::Config;
use crate::job::{PreviewState, Removal};
use crate::joblog::{JobLog, SecretMask};
use crate::store::Store;
use crate::store::previews::{self, Preview};

pub struct PreviewKeeper {
    pub pool: Store,
    pub config: Arc<Config>,
    /// `None` when no engine answered at start: nothing can be removed, so nothing is.
    pub engine: Option<Arc<dyn ContainerEngine>>,
    pub connector: Arc<dyn Connector>,
    pub forges: Arc<dyn Forges>,
    pub clock: Arc<dyn Clock>,
    /// Woken when a preview is asked to go (an admin's removal, a closed pull request).
    pub wake: Arc<Notify>,
    pub mask: SecretMask,
}

impl PreviewKeeper {
    pub async fn run(self, stop: CancellationToken) {
        let Some(engine) = self.engine.clone() else { return };
        if self.config.projects.iter().all(|p| p.previews.is_none()) {
            return;
        }
        self.find_closed_pull_requests().await;
        loop {
            self.pass(&engine).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                // As often as the proxy's routes are checked.
                () = tokio::time::sleep(self.config.proxy.check_interval) => {}
            }
        }
    }

    /// One round: expire, then remove what is to go.
    pub async fn pass(&self, engine: &Arc<dyn ContainerEngine>) {
        let now = self.clock.now_ms();
        for project in self.config.projects.iter() {
            let Some(settings) = &project.previews else { continue };
            if let Err(error) =
                previews::evict_beyond(&self.pool, project.name.as_str(), settings.max_previews, now).await
            {
                tracing::warn!(%error, "cannot remove previews beyond max_previews");
            }
            let cutoff = now - crate::store::duration_ms(settings.ttl);
            match previews::expire(&self.pool, project.name.as_str(), cutoff, now).await {
                Ok(expired) => {
                    for preview in &expired {
                        tracing::info!(project = %preview.project, number = preview.number, "the preview had no push within ttl_hours: removing it");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot expire previews"),
            }
        }
        if let Err(error) = previews::abandon_unfinished(&self.pool, now).await {
            tracing::warn!(%error, "cannot find previews whose deploy was abandoned");
        }
        let leaving = match previews::in_states(&self.pool, &[PreviewState::Removing]).await {
            Ok(leaving) => leaving,
            Err(error) => {
                tracing::warn!(%error, "cannot read the previews to remove");
                return;
            }
        };
        for preview in leaving {
            self.remove(engine, &preview).await;
        }
    }

    /// Whether this runner runs the project's jobs, and so holds its previews' containers
    /// on its engine (of several replicas, the ones whose labels the project's `runs_on`
    /// names).
    fn runs(&self, project: &str) -> bool {
        self.config
            .runnable_projects()
            .is_none_or(|runnable| runnable.iter().any(|p| p == project))
    }

    async fn remove(&self, engine: &Arc<dyn ContainerEngine>, preview: &Preview) {
        let Some(project) = self
            .config
            .project(&preview.project)
            .filter(|p| self.runs(p.name.as_str()))
        else {
            return;
        };
        // A running job of the pull request may be putting a version in the slots: it sees
        // the preview going when it ends, and the next round removes what it left.
        match previews::job_running(&self.pool, preview.id).await {
            Ok(false) => {}
            Ok(true) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether a job of the pull request runs");
                return;
            }
        }
        let log = JobLog::to_tracing(
            format!("{} preview {}", preview.project, preview.environment()),
            self.mask.clone(),
        );
        match crate::pipeline::preview::remove(
            &self.pool,
            self.connector.as_ref(),
            project,
            engine,
            preview,
            &log,
            self.clock.now_ms(),
        )
        .await
        {
            Ok(()) => {
                tracing::info!(project = %preview.project, number = preview.number, reason = ?preview.removal, "preview removed")
            }
            Err(error) => {
                tracing::warn!(project = %preview.project, number = preview.number, %error, "cannot remove the preview yet")
            }
        }
    }

    /// Asks the forge about each open preview's pull request: one closed while the runner
    /// was down (its delivery lost) is removed.
    async fn find_closed_pull_requests(&self) {
        let open = match previews::in_states(&self.pool, &[PreviewState::Deploying, PreviewState::Live]).await {
            Ok(open) => open,
            Err(error) => {
                tracing::warn!(%error, "cannot read the open previews");
                return;
            }
        };
        for preview in open {
            let Some(project) = self.config.project(&preview.project) else {
                continue;
            };
            let Some(Ok(forge)) = self.forges.connect(project).await else {
                continue;
            };
            match forge.pull_request_open(preview.number).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(project = %preview.project, number = preview.number, "the pull request closed while the runner was down: removing its preview");
                    if let Err(error) = previews::close(
                        &self.pool,
                        &preview.project,
                        preview.number,
                        Removal::Closed,
                        self.clock.now_ms(),
                    )
                    .await
                    {
                        tracing::warn!(%error, "cannot mark the preview for removal");
                    }
                }
                Err(error) => {
                    tracing::warn!(project = %preview.project, number = preview.number, %error, "cannot ask whether the pull request is open")
                }
            }
        }
    }
}

impl Operations {
    /// The previews, open ones first, then the latest removed.
    pub async fn previews(&self) -> Result<Vec<Preview>, OperationError> {
        Ok(previews::list(&self.store, 20).await?)
    }

    /// An admin's removal of pull request `number`'s preview in `project`.
    pub async fn remove_preview(&self, project: &str, number: i64) -> Result<(), OperationError> {
        if self.config.project(project).is_none_or(|p| p.previews.is_none()) {
            return Err(OperationError::NotFound(format!("project {project} has no previews")));
        }
        if !previews::close(&self.store, project, number, Removal::Removed, self.clock.now_ms()).await? {
            return Err(OperationError::NotFound(format!(
                "pull request #{number} of {project} has no open preview"
            )));
        }
        self.previews_changed.notify_one();
        Ok(())
    }
}
