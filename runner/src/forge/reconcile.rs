//! Recovers what a forge failed to deliver. At start and then periodically the runner
//! queues a deploy for a deploy branch's head that no delivery announced (trigger
//! `reconcile`), asking each project's forge for its branches' heads. GitHub also lists a
//! hook's deliveries and does not redeliver on its own, so the runner asks it to resend
//! the failed ones that never reached us; Gitea's and Forgejo's API list none, and
//! GitLab's hook events are not read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Project};
use crate::domain::{CommitSha, GitRef, Name};
use crate::job::Trigger;
use crate::metrics::Metrics;
use crate::store::jobs::{NewJob, enqueue_now};
use crate::store::{deliveries, reports};

/// GitHub keeps three days of a hook's deliveries; a first pass reads at most this many
/// pages of 100 (later passes stop at what they have seen).
const MAX_DELIVERY_PAGES: usize = 50;

pub struct Reconciler {
    pub pool: crate::store::Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub job_queued: Arc<Notify>,
    pub forges: Arc<dyn crate::adapters::forge::Forges>,
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl Reconciler {
    pub async fn run(self, stop: CancellationToken) {
        let projects: Vec<Project> = self
            .config
            .projects
            .iter()
            .filter(|p| p.reports_to_forge())
            .cloned()
            .collect();
        if projects.is_empty() {
            return;
        }
        // Deliveries already asked for again: GitHub lists each attempt, asking twice helps nobody.
        let mut asked: HashSet<i64> = HashSet::new();
        // Per project, the newest hook delivery an earlier pass went through: paging stops there.
        let mut seen_up_to: HashMap<String, i64> = HashMap::new();
        loop {
            // One pass at a time across replicas; a replica that finds one under way skips.
            match self.pool.try_lock(crate::store::locks::LockKind::Reconciler, "").await {
                Ok(Some(pass)) => {
                    for project in &projects {
                        let seen = seen_up_to.entry(project.name.to_string()).or_default();
                        if let Err(error) = self.reconcile(project, &mut asked, seen).await {
                            tracing::warn!(project = %project.name, %error, "reconciliation with the project's forge failed");
                        }
                    }
                    pass.release().await;
                }
                Ok(None) => tracing::debug!("another replica is reconciling"),
                Err(error) => tracing::warn!(%error, "cannot take the reconciler's lock"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.config.github.reconcile_interval) => {}
            }
        }
    }

    /// One pass for one project. `seen_up_to` (0 at first) is the newest delivery id an
    /// earlier pass went through; it moves up once this pass has handled every delivery.
    pub async fn reconcile(
        &self,
        project: &Project,
        asked: &mut HashSet<i64>,
        seen_up_to: &mut i64,
    ) -> anyhow::Result<()> {
        let Some(github) = self.forges.connect(project).await else {
            return Ok(());
        };
        let github = github?;
        if let Some(hook_id) = project.github.as_ref().and_then(|settings| settings.hook_id) {
            let seen = (*seen_up_to > 0).then_some(*seen_up_to);
            let listed = github.hook_deliveries(hook_id, seen, MAX_DELIVERY_PAGES).await?;
            // A delivery that later succeeded (a redelivery shares its guid) needs nothing.
            let succeeded: HashSet<&str> = listed.iter().filter(|d| !d.failed()).map(|d| d.guid.as_str()).collect();
            for delivery in listed.iter().filter(|d| d.failed()) {
                if succeeded.contains(delivery.guid.as_str()) || asked.contains(&delivery.id) {
                    continue;
                }
                if deliveries::get(&self.pool, &delivery.guid).await?.is_some() {
                    continue;
                }
                github.redeliver(hook_id, delivery.id).await?;
                asked.insert(delivery.id);
                self.metrics.redeliveries_requested.inc();
                tracing::info!(
                    project = %project.name,
                    delivery = %delivery.guid,
                    event = delivery.event.as_deref().unwrap_or(""),
                    "asked GitHub to redeliver a delivery that never arrived"
                );
            }
            if let Some(newest) = listed.iter().map(|d| d.id).max() {
                *seen_up_to = (*seen_up_to).max(newest);
            }
        }
        let heads: Vec<(&Name, &GitRef)> = project
            .environments
            .iter()
            .flat_map(|e| e.branches.iter().map(move |b| (&e.name, b)))
            .collect();
        for (environment, branch) in heads {
            let head = github.branch_head(branch.short_name()).await?;
            let Ok(sha) = CommitSha::parse(&head) else { continue };
            if reports::sha_seen(&self.pool, project.name.as_str(), sha.as_str()).await? {
                continue;
            }
            let job = NewJob::deploy(
                project.name.clone(),
                environment.clone(),
                Trigger::Reconcile,
                branch.clone(),
                sha,
                self.clock.now_ms(),
            );
            let job_id = enqueue_now(&self.pool, &job, self.clock.now_ms()).await?;
            self.job_queued.notify_one();
            self.metrics.reconcile_deploys.inc();
            tracing::info!(
                project = %project.name,
                branch = %branch,
                sha = %job.sha,
                job_id = %job_id,
                "queued a deploy for a branch head no delivery announced"
            );
        }
        Ok(())
    }
}
