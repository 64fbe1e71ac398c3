//! Rollout to containers on the runner's Docker engine, behind the proxy. An environment
//! has two slots (loopback ports) and a route over them in which the first slot wins while
//! healthy. A deploy starts the new version in the slot the live one does not hold and
//! checks its health directly; then the traffic moves without a reload of the proxy:
//! - new version in the first slot: the proxy's own health check sends it the traffic
//!   as soon as it answers;
//! - new version in the second slot: the old one (first slot) is asked to stop and closes
//!   its listener; requests it could not take are retried on the new one.
//!
//! Either way the deploy is recorded live only once a request through the route is
//! answered by the new slot; then the old version finishes what it serves (at most the
//! drain period) and is stopped. A version that never gets healthy never gets traffic.
//! The runner's record says which deployment is live; at start-up each environment is
//! brought back to it (route, one container, nothing else).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{DeployTarget, Release, RolloutError, TargetError};
use crate::adapters::engine::{
    ContainerEngine, ContainerSpec, EngineError, ManagedContainer, Network, Role, copy_logs,
};
use crate::adapters::probe;
use crate::config::{ContainerLimits, Environment, Project, RolloutSettings, SmokeSettings};
use crate::joblog::JobLog;
use crate::proxy::{HealthCheck, Listen, Proxy, Route};
use crate::store::deployments::Deployment;

const PROJECT_LABEL: &str = "io.runner.project";
const ENVIRONMENT_LABEL: &str = "io.runner.environment";
const DEPLOYMENT_LABEL: &str = "io.runner.deployment";
const SLOT_LABEL: &str = "io.runner.slot";
const SLOT_NAMES: [&str; 2] = ["a", "b"];
/// Beyond the proxy's health checks, how long a handover may take to show through it.
const HANDOVER_MARGIN: Duration = Duration::from_secs(3);

/// The name of the container in an environment's slot (`slot` 0 or 1).
pub fn slot_name(project: &str, environment: &str, slot: usize) -> String {
    format!("runner-{project}-{environment}-{}", SLOT_NAMES[slot % 2])
}

pub struct LocalTarget {
    pub engine: Arc<dyn ContainerEngine>,
    pub proxy: Arc<dyn Proxy>,
    pub http: reqwest::Client,
    pub project: String,
    pub environment: String,
    pub smoke: SmokeSettings,
    pub rollout: RolloutSettings,
    pub limits: ContainerLimits,
    /// How often the proxy checks each slot.
    pub health_interval: Duration,
    /// The route's probe token (see [`Route::probe_token`]).
    probe_token: String,
    /// Set once `go_live` has put the release in its slot for good.
    went_live: AtomicBool,
}

/// One of an environment's containers.
#[derive(Debug, Clone)]
struct Occupant {
    id: String,
    slot: Option<usize>,
    deployment: Option<i64>,
    running: bool,
    published: Vec<u16>,
}

impl LocalTarget {
    /// The local target of `environment`, which probes the app as its smoke settings say.
    pub fn for_environment(
        project: &Project,
        environment: &Environment,
        rollout: &RolloutSettings,
        engine: Arc<dyn ContainerEngine>,
        proxy: Arc<dyn Proxy>,
        http: reqwest::Client,
        health_interval: Duration,
    ) -> Result<Self, TargetError> {
        Ok(Self {
            engine,
            proxy,
            http,
            project: project.name.to_string(),
            environment: environment.name.to_string(),
            smoke: project.smoke.clone().ok_or(TargetError::Unconfigured(
                "the local target probes the app: configure [projects.smoke]",
            ))?,
            rollout: rollout.clone(),
            limits: project.containers.clone(),
            health_interval,
            probe_token: probe_token(project, route_name(environment, rollout)),
            went_live: AtomicBool::new(false),
        })
    }

    fn slot_address(&self, slot: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.rollout.slot_ports[slot % 2])
    }

    /// The environment's route in the proxy.
    pub fn route(&self) -> Route {
        route_of(
            &self.project,
            self.rollout.route.as_deref().unwrap_or(&self.environment),
            &self.rollout,
            &self.smoke,
            self.health_interval,
            self.probe_token.clone(),
        )
    }

    async fn occupants(&self) -> Result<Vec<Occupant>, EngineError> {
        let listed = self
            .engine
            .containers(&[
                (PROJECT_LABEL, self.project.as_str()),
                (ENVIRONMENT_LABEL, self.environment.as_str()),
            ])
            .await?;
        Ok(listed
            .into_iter()
            .filter(|c| c.role == Some(Role::Live))
            .map(occupant)
            .collect())
    }

    fn spec(&self, slot: usize, image: &str, deployment: i64, job_id: i64, sha: &str) -> ContainerSpec {
        let labels = HashMap::from([
            (PROJECT_LABEL.to_owned(), self.project.clone()),
            (ENVIRONMENT_LABEL.to_owned(), self.environment.clone()),
            (DEPLOYMENT_LABEL.to_owned(), deployment.to_string()),
            (SLOT_LABEL.to_owned(), SLOT_NAMES[slot].to_owned()),
            ("org.opencontainers.image.revision".to_owned(), sha.to_owned()),
        ]);
        ContainerSpec {
            name: slot_name(&self.project, &self.environment, slot),
            image: image.to_owned(),
            container_port: self.smoke.container_port,
            publish: Some((IpAddr::V4(Ipv4Addr::LOCALHOST), self.rollout.slot_ports[slot])),
            role: Role::Live,
            job_id,
            labels,
            limits: self.limits.clone(),
            // Each environment on a bridge of its own: its containers' unpublished ports
            // are out of other environments' reach; the proxy uses the published ones.
            network: if self.rollout.strangers_code {
                Network::Guarded(self.network_name())
            } else {
                Network::Own(self.network_name())
            },
            env: self.rollout.env.clone(),
        }
    }

    fn network_name(&self) -> String {
        format!("runner-{}-{}", self.project, self.environment)
    }

    /// Whether the route serves from `slot` within `within`, asked through the proxy.
    async fn until_served(&self, slot: usize, within: Duration) -> bool {
        let (route, wanted) = (self.route(), self.slot_address(slot));
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.proxy.serving(&route).await {
                Ok(Some(serving)) if serving == wanted => return true,
                Err(crate::proxy::ProxyError::CannotAsk) => {
                    // Trusted to the proxy's health checks: two rounds of them.
                    tokio::time::sleep(self.health_interval * 2).await;
                    return true;
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Lets the container finish the requests it is serving (at most the drain period),
    /// then stops and removes it.
    async fn retire_slot(&self, occupant: &Occupant, log: &JobLog) {
        if let Some(slot) = occupant.slot {
            let deadline = tokio::time::Instant::now() + self.rollout.drain;
            while tokio::time::Instant::now() < deadline {
                match self.proxy.in_flight(self.slot_address(slot)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        if let Err(error) = self.engine.stop(&occupant.id).await {
            log.system(format!("could not stop the replaced container: {error}"));
        }
        if let Err(error) = self.engine.remove(&occupant.id).await {
            log.system(format!("could not remove the replaced container: {error}"));
        }
    }

    /// Brings the environment back to what the runner's record says: the route in the
    /// proxy, `live`'s container running in a slot, and no other container. Run when no
    /// job of this runner is running (at start-up).
    pub async fn restore(&self, live: Option<Serving<'_>>) -> Result<(), TargetError> {
        let occupants = self.occupants().await?;
        // Containers from before slots held the route's port: they go first.
        for legacy in occupants.iter().filter(|o| o.slot.is_none()) {
            tracing::warn!(container = %legacy.id, environment = %self.environment, "replacing a container that predates the proxy");
            self.engine.remove(&legacy.id).await?;
        }
        self.proxy.ensure(&self.route()).await?;
        // The live deployment's container, if it still publishes its slot's port (the
        // slot ports may have changed in the config since it started).
        let in_its_slot = |o: &Occupant| {
            o.slot
                .is_some_and(|slot| o.published.is_empty() || o.published.contains(&self.rollout.slot_ports[slot]))
        };
        let keep = live.as_ref().and_then(|deployment| {
            occupants
                .iter()
                .filter(|o| in_its_slot(o) && o.deployment == Some(deployment.id))
                .max_by_key(|o| o.running)
                .cloned()
        });
        for other in occupants
            .iter()
            .filter(|o| o.slot.is_some() && keep.as_ref().is_none_or(|k| k.id != o.id))
        {
            tracing::info!(container = %other.id, environment = %self.environment, "removing a container the record does not call live");
            self.engine.remove(&other.id).await?;
        }
        match (keep, live) {
            (Some(kept), _) if !kept.running => {
                tracing::info!(container = %kept.id, "starting the live container again");
                self.engine.restart(&kept.id).await.map_err(TargetError::from)
            }
            (Some(_), _) | (None, None) => Ok(()),
            (None, Some(deployment)) => {
                let Some(image) = deployment.image.clone() else {
                    return Err(TargetError::NoImage(deployment.id));
                };
                tracing::warn!(deployment = deployment.id, environment = %self.environment, "the live deployment had no container; starting it again");
                self.engine
                    .start(&self.spec(0, &image, deployment.id, 0, deployment.sha))
                    .await
                    .map(|_| ())
                    .map_err(TargetError::from)
            }
        }
    }
}

/// What the record says serves an environment: its deployment (a preview's: its job) and
/// the image, pinned by digest.
pub struct Serving<'a> {
    pub id: i64,
    pub image: Option<String>,
    pub sha: &'a str,
}

impl<'a> From<&'a Deployment> for Serving<'a> {
    fn from(deployment: &'a Deployment) -> Self {
        Self {
            id: deployment.id,
            image: deployment.pinned_image(),
            sha: deployment.sha.as_str(),
        }
    }
}

fn occupant(container: ManagedContainer) -> Occupant {
    Occupant {
        slot: container
            .labels
            .get(SLOT_LABEL)
            .and_then(|s| SLOT_NAMES.iter().position(|n| n == s)),
        deployment: container.labels.get(DEPLOYMENT_LABEL).and_then(|d| d.parse().ok()),
        running: container.running,
        published: container.published,
        id: container.id,
    }
}

#[async_trait::async_trait]
impl DeployTarget for LocalTarget {
    fn timeout(&self) -> Duration {
        self.rollout.timeout
    }

    fn url(&self, _outputs: Option<&Value>) -> String {
        self.rollout.url()
    }

    async fn go_live(&self, release: &Release<'_>, log: &JobLog) -> Result<(), RolloutError> {
        // Without its route nothing would reach the new version: nothing is started.
        self.proxy.ensure(&self.route()).await.map_err(|e| {
            RolloutError::failed(format!("{e}; nothing was started and the live version keeps serving"))
        })?;
        let occupants = self.occupants().await.map_err(failed)?;
        // The slot serving now: the replaced deployment's, else any running one.
        let serving = |o: &&Occupant| o.running && o.slot.is_some();
        let live_slot = occupants
            .iter()
            .filter(serving)
            .find(|o| o.deployment.is_some() && o.deployment == release.replaces)
            .or_else(|| occupants.iter().find(serving))
            .and_then(|o| o.slot);
        let slot = live_slot.map_or(0, |live| 1 - live);
        // Whatever else sits in that slot (a failed attempt, a stopped leftover) goes.
        for leftover in occupants.iter().filter(|o| o.slot == Some(slot)) {
            self.engine.remove(&leftover.id).await.map_err(failed)?;
        }
        let spec = self.spec(slot, release.image, release.deployment_id, release.job_id, release.sha);
        let started = self.engine.start(&spec).await.map_err(failed)?;
        let probe_url = format!("http://{}{}", self.slot_address(slot), self.smoke.path);
        log.system(format!(
            "started in slot {} beside the live version; waiting for {probe_url}",
            SLOT_NAMES[slot]
        ));
        if let Err(last) = probe::until_healthy(
            || probe::ask_over_http(&self.http, &probe_url),
            &self.smoke,
            self.rollout.timeout,
        )
        .await
        {
            copy_logs(self.engine.as_ref(), &started.id, log).await;
            return Err(RolloutError::failed(format!(
                "the new version never became healthy ({} answered {last}); it got no traffic and the live version keeps serving",
                self.smoke.path
            )));
        }
        let confirmed = if slot == 0 {
            // The first slot wins while healthy: the proxy moves the traffic at its next
            // health check of it.
            if !self
                .until_served(slot, self.health_interval * 8 + HANDOVER_MARGIN)
                .await
            {
                return Err(RolloutError::failed(format!(
                    "the proxy did not send {} to the new version; it got no traffic and the live version keeps serving",
                    self.rollout.url()
                )));
            }
            true
        } else {
            // The version in the first slot is asked to stop: it closes its listener (an
            // app without a SIGTERM handler exits, its init passing the signal on), and the
            // proxy's retries and health checks send everything to the second slot. What it
            // is serving meanwhile it finishes (see `retire`).
            let replaced: Vec<&Occupant> = occupants.iter().filter(|o| o.slot == Some(0) && o.running).collect();
            for old in &replaced {
                if let Err(error) = self.engine.ask_to_stop(&old.id).await {
                    log.system(format!("could not ask the replaced version to stop: {error}"));
                }
            }
            // From here the new version is the one that stays, whatever happens.
            self.went_live.store(true, Ordering::SeqCst);
            self.until_served(slot, self.limits.stop_grace + HANDOVER_MARGIN).await || {
                log.system("the replaced version still holds the traffic after its grace period: it is stopped");
                for old in &replaced {
                    if let Err(error) = self.engine.kill(&old.id).await {
                        log.system(format!("could not stop the replaced version: {error}"));
                    }
                }
                self.until_served(slot, HANDOVER_MARGIN).await
            }
        };
        self.went_live.store(true, Ordering::SeqCst);
        log.system(if confirmed {
            format!("the proxy sends {} to slot {}", self.rollout.url(), SLOT_NAMES[slot])
        } else {
            format!(
                "the proxy does not confirm that slot {} serves {}",
                SLOT_NAMES[slot],
                self.rollout.url()
            )
        });
        Ok(())
    }

    async fn tear_down(&self, log: &JobLog) -> Result<(), TargetError> {
        let listed = self
            .engine
            .containers(&[
                (PROJECT_LABEL, self.project.as_str()),
                (ENVIRONMENT_LABEL, self.environment.as_str()),
            ])
            .await?;
        for container in &listed {
            self.engine.remove(&container.id).await?;
        }
        // A seat's route stays for the seat's next preview.
        if self.rollout.route.is_none() {
            self.proxy.remove(&self.route()).await?;
        }
        self.engine.remove_network(&self.network_name()).await?;
        log.system(format!(
            "removed {} container(s), the route {} and the network of {}",
            listed.len(),
            self.rollout.url(),
            self.environment
        ));
        Ok(())
    }

    async fn clean_up(&self, release: &Release<'_>, log: &JobLog) {
        if self.went_live.load(Ordering::SeqCst) {
            return;
        }
        let Ok(occupants) = self.occupants().await else { return };
        for unfinished in occupants.iter().filter(|o| o.deployment == Some(release.deployment_id)) {
            if let Err(error) = self.engine.remove(&unfinished.id).await {
                log.system(format!("could not remove container {}: {error}", unfinished.id));
            }
        }
    }

    async fn retire(&self, release: &Release<'_>, log: &JobLog) {
        let Ok(occupants) = self.occupants().await else { return };
        for replaced in occupants.iter().filter(|o| o.deployment != Some(release.deployment_id)) {
            // The traffic has moved (`go_live` saw the route serve the release): what the
            // replaced version still serves, it finishes.
            log.system(format!(
                "stopping the replaced version (deployment {})",
                replaced.deployment.map_or_else(|| "?".to_owned(), |d| d.to_string())
            ));
            self.retire_slot(replaced, log).await;
        }
    }
}

fn failed(error: EngineError) -> RolloutError {
    RolloutError::failed(error.to_string())
}

/// At start-up, before any job runs: every local environment back to the runner's record
/// (see [`LocalTarget::restore`]). One environment that cannot be restored does not keep
/// the others from it.
pub async fn restore_local_environments(
    config: &crate::config::Config,
    pool: &crate::store::Store,
    engine: Arc<dyn ContainerEngine>,
    proxy: Arc<dyn Proxy>,
    http: reqwest::Client,
) {
    for (project, environment, rollout) in local_environments(config) {
        let live = match crate::store::deployments::live(pool, project.name.as_str(), environment.name.as_str()).await {
            Ok(live) => live,
            Err(error) => {
                tracing::warn!(%error, "cannot read the live deployment");
                continue;
            }
        };
        let target = LocalTarget::for_environment(
            project,
            environment,
            rollout,
            Arc::clone(&engine),
            Arc::clone(&proxy),
            http.clone(),
            config.proxy.health_interval,
        );
        restore_one(target, live.as_ref().map(Serving::from), project, environment).await;
    }
}

/// Restores one environment's `target` (see [`LocalTarget::restore`]), saying how it went.
async fn restore_one(
    target: Result<LocalTarget, TargetError>,
    serving: Option<Serving<'_>>,
    project: &Project,
    environment: &Environment,
) {
    let restored = match target {
        Ok(target) => target.restore(serving).await,
        Err(error) => Err(error),
    };
    match restored {
        Ok(()) => {
            tracing::info!(project = %project.name, environment = %environment.name, "environment matches the record")
        }
        Err(error) => {
            tracing::error!(project = %project.name, environment = %environment.name, %error, "cannot restore the environment")
        }
    }
}

/// At start-up, before any job runs: every preview that serves back to the runner's
/// record, like an environment (see [`LocalTarget::restore`]); one being deployed when the
/// runner stopped loses its unfinished containers (its job runs again).
pub async fn restore_previews(
    config: &crate::config::Config,
    pool: &crate::store::Store,
    engine: Arc<dyn ContainerEngine>,
    proxy: Arc<dyn Proxy>,
    http: reqwest::Client,
) {
    let open = match crate::store::previews::in_states(
        pool,
        &[crate::job::PreviewState::Deploying, crate::job::PreviewState::Live],
    )
    .await
    {
        Ok(open) => open,
        Err(error) => {
            tracing::warn!(%error, "cannot read the previews");
            return;
        }
    };
    for preview in open {
        let Some((project, environment, rollout)) = preview_environment(config, &preview) else {
            tracing::warn!(project = %preview.project, number = preview.number, "a preview of a project without [projects.previews] is left as it is");
            continue;
        };
        let serving = match (preview.state, preview.job_id, &preview.sha) {
            (crate::job::PreviewState::Live, Some(id), Some(sha)) => Some(Serving {
                id,
                image: preview.image.clone(),
                sha,
            }),
            _ => None,
        };
        let target = LocalTarget::for_environment(
            project,
            &environment,
            &rollout,
            Arc::clone(&engine),
            Arc::clone(&proxy),
            http.clone(),
            config.proxy.health_interval,
        );
        restore_one(target, serving, project, &environment).await;
    }
    // Every seat's route, before any preview needs it: no later preview changes the
    // proxy's configuration.
    for route in routes(config, pool).await {
        if let Err(error) = proxy.ensure(&route).await {
            tracing::warn!(route = %route.id, %error, "cannot write the route");
        }
    }
}

/// A preview's project, environment and rollout, while its project still has previews.
fn preview_environment<'c>(
    config: &'c crate::config::Config,
    preview: &crate::store::previews::Preview,
) -> Option<(&'c Project, Environment, RolloutSettings)> {
    let project = config.project(&preview.project)?;
    let environment = project.previews.as_ref()?.environment(preview.seat(), preview.number);
    let Some(crate::config::Target::Local(rollout)) = environment.target.clone() else {
        unreachable!("a preview's environment has the local target")
    };
    Some((project, environment, rollout))
}

/// The routes the record says the proxy has: every local environment's, and every open
/// preview's.
async fn routes(config: &crate::config::Config, pool: &crate::store::Store) -> Vec<Route> {
    let route = |project: &Project, environment: &Environment, rollout: &RolloutSettings| {
        let smoke = project.smoke.as_ref()?;
        let name = route_name(environment, rollout);
        Some(route_of(
            project.name.as_str(),
            name,
            rollout,
            smoke,
            config.proxy.health_interval,
            probe_token(project, name),
        ))
    };
    let mut routes: Vec<Route> = local_environments(config)
        .filter_map(|(project, environment, rollout)| route(project, environment, rollout))
        .collect();
    // Every seat of port previews, held or not; a host name preview's while it serves.
    for project in &config.projects {
        let Some(settings) = project.previews.as_ref().filter(|s| s.host_ports.is_some()) else {
            continue;
        };
        routes.extend((0..settings.max_previews).filter_map(|seat| {
            let environment = settings.environment(seat, 1);
            let Some(crate::config::Target::Local(rollout)) = &environment.target else {
                return None;
            };
            route(project, &environment, rollout)
        }));
    }
    if config
        .projects
        .iter()
        .any(|p| p.previews.as_ref().is_some_and(|s| s.hostname.is_some()))
    {
        let open = crate::store::previews::in_states(pool, &[crate::job::PreviewState::Live])
            .await
            .unwrap_or_default();
        routes.extend(open.iter().filter_map(|preview| {
            let (project, environment, rollout) = preview_environment(config, preview)?;
            rollout
                .route
                .is_none()
                .then(|| route(project, &environment, &rollout))
                .flatten()
        }));
    }
    routes
}

/// Keeps the proxy's routes as the record says, every `check_interval`: a Caddy that was
/// restarted without them gets them back. Only a route that differs is written.
pub async fn keep_routes(
    config: Arc<crate::config::Config>,
    pool: crate::store::Store,
    proxy: Arc<dyn Proxy>,
    stop: tokio_util::sync::CancellationToken,
) {
    if local_environments(&config).next().is_none() && config.projects.iter().all(|p| p.previews.is_none()) {
        return;
    }
    let mut failing = false;
    loop {
        // Start-up has just written them (restore_local_environments): the first check waits.
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.proxy.check_interval) => {}
        }
        for route in &routes(&config, &pool).await {
            match proxy.ensure(route).await {
                Ok(crate::proxy::Applied::Written) => {
                    tracing::warn!(route = %route.id, "put back a route the proxy had lost")
                }
                Ok(crate::proxy::Applied::Unchanged) => {}
                Err(error) if !failing => {
                    tracing::error!(route = %route.id, %error, "the proxy's routes cannot be checked");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        if failing && proxy.check().await.is_ok() {
            failing = false;
        }
    }
}

fn local_environments(
    config: &crate::config::Config,
) -> impl Iterator<Item = (&Project, &Environment, &RolloutSettings)> {
    config.projects.iter().flat_map(|project| {
        project
            .environments
            .iter()
            .filter_map(move |environment| match &environment.target {
                Some(crate::config::Target::Local(rollout)) => Some((project, environment, rollout)),
                _ => None,
            })
    })
}

/// The route's probe token: the same on every replica and across restarts (so the route
/// is not rewritten), and not guessable without the project's webhook secret.
/// The name of the environment's route: its own, or its rollout's (a preview seat's).
fn route_name<'a>(environment: &'a Environment, rollout: &'a RolloutSettings) -> &'a str {
    rollout.route.as_deref().unwrap_or(environment.name.as_str())
}

fn probe_token(project: &Project, route: &str) -> String {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"runner route probe\0")
        .chain_update(project.webhook_secret.expose_secret().as_bytes())
        .chain_update(b"\0")
        .chain_update(project.name.as_str().as_bytes())
        .chain_update(b"\0")
        .chain_update(route.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

fn route_of(
    project: &str,
    environment: &str,
    rollout: &RolloutSettings,
    smoke: &SmokeSettings,
    health_interval: Duration,
    probe_token: String,
) -> Route {
    let slot = |i: usize| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), rollout.slot_ports[i]);
    Route {
        id: format!("runner-{project}-{environment}"),
        listen: match (&rollout.hostname, rollout.host_port) {
            (Some(name), _) => Listen::Host {
                name: name.clone(),
                tls: rollout.tls,
            },
            (None, port) => Listen::Port(SocketAddr::new(rollout.bind, port.unwrap_or_default())),
        },
        slots: [slot(0), slot(1)],
        health: HealthCheck {
            path: smoke.path.clone(),
            expect_status: smoke.expect_status,
            expect_body: smoke.expect_body.clone(),
            interval: health_interval,
        },
        probe_token,
    }
}
