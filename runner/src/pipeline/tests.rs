//! The pipeline driven through fakes of every boundary: no Docker, no git, no registry,
//! no AWS. A fake container is an HTTP server in this process, so the health probes and
//! the local target's swap on a fixed port run for real; the store is a real SQLite
//! database in a temporary directory.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::plan::Step;
use super::{Connector, JobFailure, PipelineContext, StepError};
use crate::adapters::checkout::{Checkout, CheckoutError};
use crate::adapters::engine::{
    BuildRequest, ContainerEngine, ContainerSpec, Endpoint, EngineError, ManagedContainer, Network, RegistryAuth, Role,
    Started,
};
use crate::adapters::probe::{self, Answer};
use crate::adapters::registry::{Destination, Registry, RegistryError};
use crate::adapters::target::DeployTarget;
use crate::adapters::target::ecs::EcsTarget;
use crate::adapters::target::ecs_api::{Deployer, EcsError};
use crate::adapters::target::local::LocalTarget;
use crate::adapters::terraform::{Module, PlanSummary, Terraform, TerraformError};
use crate::clock::Clock;
use crate::config::{Config, Environment, Project, RegistrySettings, Target};
use crate::domain::{CommitSha, GitRef, Name};
use crate::job::{DeploymentStatus, JobKind, JobState, StepState, Trigger};
use crate::joblog::{JobLog, LogEvents};
use crate::store::jobs::{self, Job, NewJob};
use crate::store::{deployments, now_ms, steps};

// ---------------------------------------------------------------------------------------
// Fakes

/// A container of the fake engine: an HTTP server answering every request with `status`.
struct FakeContainer {
    name: String,
    image: String,
    role: Role,
    labels: HashMap<String, String>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
}

/// What the fake engine does differently from a healthy one.
#[derive(Default)]
struct Script {
    /// Operation name → the error it returns.
    fail: HashMap<&'static str, String>,
    /// Operation name → how long it takes.
    slow: HashMap<&'static str, Duration>,
    /// Containers of these roles answer 500.
    unhealthy: Vec<Role>,
    /// Images whose live containers answer 500 (as candidates they are healthy).
    unhealthy_live_images: Vec<String>,
}

impl Script {
    fn fail_on(&mut self, operation: &'static str, message: &str) {
        self.fail.insert(operation, message.to_owned());
    }

    fn slow_on(&mut self, operation: &'static str, delay: Duration) {
        self.slow.insert(operation, delay);
    }
}

#[derive(Default)]
pub(crate) struct FakeEngine {
    calls: Mutex<Vec<String>>,
    containers: Mutex<HashMap<String, FakeContainer>>,
    next_id: AtomicU64,
    script: Mutex<Script>,
    /// Set: the engine does not answer (`ping` fails).
    pub(crate) away: std::sync::atomic::AtomicBool,
    /// Started tasks' scripts, by container id.
    tasks: Mutex<HashMap<String, String>>,
}

impl FakeEngine {
    fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.script.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// (name, image, running) of every container that exists.
    pub(crate) fn containers(&self) -> Vec<(String, String, bool)> {
        let mut all: Vec<_> = self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|c| (c.name.clone(), c.image.clone(), c.server.is_some()))
            .collect();
        all.sort();
        all
    }

    async fn enter(&self, operation: &'static str, detail: &str) -> Result<(), EngineError> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{operation} {detail}").trim_end().to_owned());
        let (slow, fail) = {
            let script = self.script.lock().unwrap_or_else(PoisonError::into_inner);
            (script.slow.get(operation).copied(), script.fail.get(operation).cloned())
        };
        if let Some(delay) = slow {
            tokio::time::sleep(delay).await;
        }
        match fail {
            Some(message) => Err(EngineError::Engine(message)),
            None => Ok(()),
        }
    }

    fn status_for(&self, role: Role, image: &str) -> u16 {
        let script = self.script.lock().unwrap_or_else(PoisonError::into_inner);
        let live_fault = role == Role::Live && script.unhealthy_live_images.iter().any(|i| image.contains(i.as_str()));
        if script.unhealthy.contains(&role) || live_fault {
            500
        } else {
            200
        }
    }

    fn by_name(&self, name_or_id: &str) -> Option<String> {
        let containers = self.containers.lock().unwrap_or_else(PoisonError::into_inner);
        if containers.contains_key(name_or_id) {
            return Some(name_or_id.to_owned());
        }
        containers
            .iter()
            .find(|(_, c)| c.name == name_or_id)
            .map(|(id, _)| id.clone())
    }
}

/// Stops a fake container's server; its port is free once this returns.
async fn shut_down(server: Option<JoinHandle<()>>) {
    if let Some(server) = server {
        server.abort();
        let _ = server.await;
    }
}

/// Serves `status` on `addr` (port 0: any free port) until aborted.
async fn serve(addr: SocketAddr, status: u16) -> Result<(SocketAddr, JoinHandle<()>), EngineError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| EngineError::Engine(format!("port {addr} is already allocated: {e}")))?;
    let bound = listener.local_addr().map_err(|e| EngineError::Engine(e.to_string()))?;
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0_u8; 1024];
                let _ = socket.read(&mut request).await;
                let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok((bound, server))
}

#[async_trait::async_trait]
impl ContainerEngine for FakeEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        if self.away.load(Ordering::SeqCst) {
            return Err(EngineError::Unreachable("the fake engine is away".into()));
        }
        Ok(())
    }

    async fn build(&self, context_tar: Bytes, request: &BuildRequest, log: &JobLog) -> Result<String, EngineError> {
        self.enter("build", &request.tag).await?;
        if context_tar.is_empty() {
            return Err(EngineError::Engine("empty build context".into()));
        }
        log.stdout("Step 1/1 : FROM scratch");
        Ok(format!("sha256:{:064x}", context_tar.len()))
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Started, EngineError> {
        self.enter("start", &spec.name).await?;
        if self.by_name(&spec.name).is_some() {
            return Err(EngineError::Engine(format!("the name {} is already in use", spec.name)));
        }
        let addr = match spec.publish {
            Some((ip, port)) => SocketAddr::new(ip, port),
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        };
        let (bound, server) = serve(addr, self.status_for(spec.role, &spec.image)).await?;
        let id = format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.containers.lock().unwrap_or_else(PoisonError::into_inner).insert(
            id.clone(),
            FakeContainer {
                name: spec.name.clone(),
                image: spec.image.clone(),
                role: spec.role,
                labels: spec.labels.clone(),
                addr: bound,
                server: Some(server),
            },
        );
        // Like the real engine, a closed network's container is asked from inside only.
        let endpoint = if spec.network == Network::Closed {
            Endpoint::Inside { port: bound.port() }
        } else {
            Endpoint::Published {
                ip: bound.ip(),
                port: bound.port(),
            }
        };
        Ok(Started { id, endpoint })
    }

    async fn logs(&self, container: &str) -> Result<Vec<String>, EngineError> {
        self.enter("logs", container).await?;
        Ok(vec!["listening".to_owned()])
    }

    async fn remove(&self, container: &str) -> Result<(), EngineError> {
        let Some(id) = self.by_name(container) else {
            return Ok(());
        };
        let name = self.containers.lock().unwrap_or_else(PoisonError::into_inner)[&id]
            .name
            .clone();
        self.enter("remove", &name).await?;
        let removed = self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        shut_down(removed.and_then(|c| c.server)).await;
        Ok(())
    }

    async fn push(
        &self,
        image: &str,
        tag: &str,
        _auth: Option<RegistryAuth>,
        _log: &JobLog,
    ) -> Result<String, EngineError> {
        self.enter("push", &format!("{image}:{tag}")).await?;
        Ok(format!("sha256:{}", &tag[..tag.len().min(64)]))
    }

    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        self.enter("tag", &format!("{source} {repo}:{tag}")).await
    }

    async fn find(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self.by_name(name))
    }

    async fn stop(&self, container: &str) -> Result<(), EngineError> {
        self.enter("stop", container).await?;
        let id = self
            .by_name(container)
            .ok_or_else(|| EngineError::Engine("no such container".into()))?;
        let server = self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
            .and_then(|c| c.server.take());
        shut_down(server).await;
        Ok(())
    }

    async fn kill(&self, container: &str) -> Result<(), EngineError> {
        self.enter("kill", container).await?;
        let server = self.by_name(container).and_then(|id| {
            self.containers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(&id)
                .and_then(|c| c.server.take())
        });
        shut_down(server).await;
        Ok(())
    }

    async fn restart(&self, container: &str) -> Result<(), EngineError> {
        self.enter("restart", container).await?;
        let id = self
            .by_name(container)
            .ok_or_else(|| EngineError::Engine("no such container".into()))?;
        let (addr, role, image) = {
            let containers = self.containers.lock().unwrap_or_else(PoisonError::into_inner);
            let c = &containers[&id];
            (c.addr, c.role, c.image.clone())
        };
        let (_, server) = serve(addr, self.status_for(role, &image)).await?;
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
            .expect("the container still exists")
            .server = Some(server);
        Ok(())
    }

    async fn images(&self, _repositories: &[String]) -> Result<Vec<crate::adapters::engine::StoredImage>, EngineError> {
        Ok(Vec::new())
    }

    async fn remove_image(&self, name: &str) -> Result<(), EngineError> {
        self.enter("remove_image", name).await
    }

    async fn containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ManagedContainer>, EngineError> {
        let containers = self.containers.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(containers
            .iter()
            .filter(|(_, c)| {
                labels
                    .iter()
                    .all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(id, c)| ManagedContainer {
                id: id.clone(),
                role: Some(c.role),
                running: c.server.is_some(),
                labels: c.labels.clone(),
                published: vec![c.addr.port()],
            })
            .collect())
    }

    async fn rename(&self, container: &str, name: &str) -> Result<(), EngineError> {
        self.enter("rename", &format!("{container} {name}")).await?;
        let id = self
            .by_name(container)
            .ok_or_else(|| EngineError::Engine("no such container".into()))?;
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
            .expect("the container still exists")
            .name = name.to_owned();
        Ok(())
    }

    async fn start_prober(
        &self,
        beside: &str,
        image: &str,
        _job_id: i64,
        _lifetime: Duration,
    ) -> Result<String, EngineError> {
        self.enter("start_prober", &format!("{image} beside {beside}")).await?;
        self.by_name(beside)
            .ok_or_else(|| EngineError::Engine("no such container".into()))?;
        Ok(format!("prober-of-{beside}"))
    }

    async fn ask_inside(&self, prober: &str, port: u16, path: &str) -> Result<Answer, EngineError> {
        if !prober.starts_with("prober-of-") {
            return Err(EngineError::Engine(format!("{prober} is no prober")));
        }
        // The fake's containers share the host's network: inside is 127.0.0.1 here too.
        Ok(probe::ask_over_http(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}{path}")).await)
    }

    /// A task "runs" its script's lines: `exit N` ends it with N, anything else is echoed.
    async fn start_task(&self, task: &crate::adapters::engine::TaskSpec) -> Result<String, EngineError> {
        self.enter("task", &task.name).await?;
        let id = format!("task-{}", task.name);
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), task.script.clone().unwrap_or_default());
        Ok(id)
    }

    async fn start_pod(&self, pod: &crate::adapters::engine::PodSpec) -> Result<String, EngineError> {
        self.enter("pod", &pod.name).await?;
        Ok(format!("pod-{}", pod.name))
    }

    async fn follow_task(&self, container: &str, log: &JobLog) -> Result<i64, EngineError> {
        let script = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(container)
            .cloned()
            .ok_or_else(|| EngineError::Engine(format!("no task {container}")))?;
        for line in script.lines() {
            if let Some(code) = line.trim().strip_prefix("exit ") {
                return Ok(code.trim().parse().unwrap_or(1));
            }
            log.stdout(line);
        }
        Ok(0)
    }

    async fn read_file(&self, _container: &str, _path: &str, _max_bytes: u64) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(None)
    }
}

/// A checkout that writes a one-line Dockerfile, after `delay`.
struct FakeCheckout {
    delay: Duration,
    fail: Option<String>,
}

#[async_trait::async_trait]
impl Checkout for FakeCheckout {
    async fn fetch(
        &self,
        job: &Job,
        into: &Path,
        log: &JobLog,
    ) -> Result<crate::adapters::checkout::Fetched, CheckoutError> {
        tokio::time::sleep(self.delay).await;
        if let Some(message) = &self.fail {
            return Err(CheckoutError::Git {
                command: "fetch".into(),
                status: "exit status: 128".into(),
                said: message.clone(),
            });
        }
        log.system(format!("fake checkout of {}", job.sha));
        let unwritable = |source| CheckoutError::Directory {
            path: into.to_owned(),
            source,
        };
        tokio::fs::create_dir_all(into.join("infra"))
            .await
            .map_err(unwritable)?;
        tokio::fs::write(into.join("Dockerfile"), "FROM scratch\n")
            .await
            .map_err(unwritable)?;
        Ok(crate::adapters::checkout::Fetched::default())
    }
}

struct FakeRegistry;

#[async_trait::async_trait]
impl Registry for FakeRegistry {
    async fn destination(&self, image: &str, _log: &JobLog) -> Result<Destination, RegistryError> {
        Ok(Destination {
            repository: format!("registry.test/{image}"),
            auth: None,
        })
    }
}

/// An ECS service as the fake deployer keeps it.
#[derive(Default)]
pub(crate) struct FakeEcs {
    calls: Mutex<Vec<String>>,
    /// The service's task definition.
    current: Mutex<String>,
    revisions: AtomicU64,
    /// `wait_stable` fails with this.
    unstable: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Deployer for FakeEcs {
    async fn current(&self, _cluster: &str, _service: &str) -> Result<String, EcsError> {
        Ok(self.current.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    async fn revision_with_image(&self, _td: &str, _container: &str, image: &str) -> Result<String, EcsError> {
        let revision = self.revisions.fetch_add(1, Ordering::Relaxed) + 2;
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("register {image}"));
        Ok(format!("app:{revision}"))
    }

    async fn image_of(&self, _td: &str, _container: &str) -> Result<Option<String>, EcsError> {
        Ok(Some("old-image".to_owned()))
    }

    async fn point(&self, _cluster: &str, _service: &str, task_definition: &str) -> Result<(), EcsError> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("point {task_definition}"));
        task_definition.clone_into(&mut self.current.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(())
    }

    async fn wait_stable(
        &self,
        _cluster: &str,
        _service: &str,
        task_definition: &str,
        _timeout: Duration,
        _log: &JobLog,
    ) -> Result<(), EcsError> {
        match self.unstable.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            Some(reason) => Err(EcsError::Failed(reason)),
            None => {
                self.calls
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("stable {task_definition}"));
                Ok(())
            }
        }
    }
}

/// Terraform as the fake runs it: what each job's module was given, and scripted plans.
#[derive(Default)]
pub(crate) struct FakeTerraform {
    calls: Mutex<Vec<String>>,
    /// The environment and `lock_state` of each module a job ran.
    modules: Mutex<Vec<(BTreeMap<String, String>, bool)>>,
    /// Plans report no changes.
    no_changes: AtomicBool,
    /// The next apply finds its plan stale.
    stale_once: AtomicBool,
    /// Operation name → how long it takes.
    slow: Mutex<HashMap<&'static str, Duration>>,
}

impl FakeTerraform {
    async fn enter(&self, operation: &'static str) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(operation.to_owned());
        let delay = self
            .slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(operation)
            .copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

struct FakeModule(Arc<FakeTerraform>);

#[async_trait::async_trait]
impl Terraform for FakeModule {
    async fn prepare(&self, _log: &JobLog, _cancel: &CancellationToken) -> Result<(), TerraformError> {
        self.0.enter("prepare").await;
        Ok(())
    }

    async fn plan(
        &self,
        _plan_file: &Path,
        _log: &JobLog,
        _cancel: &CancellationToken,
    ) -> Result<(PlanSummary, String), TerraformError> {
        self.0.enter("plan").await;
        let changes = usize::from(!self.0.no_changes.load(Ordering::Relaxed));
        let summary = PlanSummary {
            change: changes,
            ..PlanSummary::default()
        };
        Ok((summary, "~ aws_ecs_service.app".to_owned()))
    }

    async fn apply(&self, _plan_file: &Path, _log: &JobLog, _cancel: &CancellationToken) -> Result<(), TerraformError> {
        self.0.enter("apply").await;
        if self.0.stale_once.swap(false, Ordering::Relaxed) {
            return Err(TerraformError::StalePlan);
        }
        Ok(())
    }

    async fn outputs(&self, _log: &JobLog, _cancel: &CancellationToken) -> Result<serde_json::Value, TerraformError> {
        self.0.enter("outputs").await;
        Ok(serde_json::json!({ "app_url": "http://app.test" }))
    }
}

pub(crate) struct FakeConnector {
    pub(crate) http: reqwest::Client,
    pub(crate) ecs: Arc<FakeEcs>,
    pub(crate) terraform: Arc<FakeTerraform>,
    pub(crate) checkout_delay: Duration,
    pub(crate) checkout_failure: Option<String>,
}

#[async_trait::async_trait]
impl Connector for FakeConnector {
    fn checkout(&self, _project: &Project, _home: &Path) -> Box<dyn Checkout> {
        Box::new(FakeCheckout {
            delay: self.checkout_delay,
            fail: self.checkout_failure.clone(),
        })
    }

    async fn registry(&self, _settings: &RegistrySettings) -> Arc<dyn Registry> {
        Arc::new(FakeRegistry)
    }

    fn terraform(&self, module: Module) -> Box<dyn Terraform> {
        self.terraform
            .modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((module.env, module.lock_state));
        Box::new(FakeModule(Arc::clone(&self.terraform)))
    }

    async fn target(
        &self,
        project: &Project,
        environment: &Environment,
        target: &Target,
        engine: Arc<dyn ContainerEngine>,
    ) -> Result<Arc<dyn DeployTarget>, crate::adapters::target::TargetError> {
        Ok(match target {
            Target::Local(rollout) => Arc::new(LocalTarget::for_environment(
                project,
                environment,
                rollout,
                engine,
                Arc::new(FakeProxy),
                self.http.clone(),
                Duration::from_millis(10),
            )?),
            Target::Ecs(settings) => Arc::new(EcsTarget {
                ecs: Arc::clone(&self.ecs) as Arc<dyn Deployer>,
                settings: settings.clone(),
            }),
        })
    }
}

/// A proxy that takes every route; nothing is ever in flight.
pub(crate) struct FakeProxy;

#[async_trait::async_trait]
impl crate::proxy::Proxy for FakeProxy {
    async fn ensure(&self, _route: &crate::proxy::Route) -> Result<crate::proxy::Applied, crate::proxy::ProxyError> {
        Ok(crate::proxy::Applied::Unchanged)
    }

    async fn in_flight(&self, _upstream: SocketAddr) -> Result<u64, crate::proxy::ProxyError> {
        Ok(0)
    }

    async fn remove(&self, _route: &crate::proxy::Route) -> Result<(), crate::proxy::ProxyError> {
        Ok(())
    }

    /// As Caddy's `first` policy: the first slot whose health check answers as expected.
    async fn serving(&self, route: &crate::proxy::Route) -> Result<Option<SocketAddr>, crate::proxy::ProxyError> {
        for slot in route.slots {
            let url = format!("http://{slot}{}", route.health.path);
            if reqwest::get(&url)
                .await
                .is_ok_and(|answer| answer.status().as_u16() == route.health.expect_status)
            {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    async fn check(&self) -> Result<(), crate::proxy::ProxyError> {
        Ok(())
    }
}

/// A clock that moves only when a test moves it.
struct FakeClock {
    time: Mutex<FakeTime>,
}

struct FakeTime {
    now_ms: i64,
    /// Sleepers by the time they wake at.
    sleepers: Vec<(i64, tokio::sync::oneshot::Sender<()>)>,
}

impl FakeClock {
    fn new() -> Self {
        Self {
            time: Mutex::new(FakeTime {
                now_ms: 1_700_000_000_000,
                sleepers: Vec::new(),
            }),
        }
    }

    /// Moves the clock on, waking every sleeper whose time has come.
    fn advance(&self, by: Duration) {
        let mut time = self.time.lock().unwrap_or_else(PoisonError::into_inner);
        time.now_ms += i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let now = time.now_ms;
        let (due, waiting): (Vec<_>, Vec<_>) = time.sleepers.drain(..).partition(|(at, _)| *at <= now);
        time.sleepers = waiting;
        for (_, wake) in due {
            let _ = wake.send(());
        }
    }
}

#[async_trait::async_trait]
impl Clock for FakeClock {
    async fn sleep(&self, duration: Duration) {
        let woken = {
            let mut time = self.time.lock().unwrap_or_else(PoisonError::into_inner);
            let (wake, woken) = tokio::sync::oneshot::channel();
            let at = time.now_ms + i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
            time.sleepers.push((at, wake));
            woken
        };
        // A dropped clock never wakes its sleepers.
        if woken.await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn now_ms(&self) -> i64 {
        self.time.lock().unwrap_or_else(PoisonError::into_inner).now_ms
    }
}

// ---------------------------------------------------------------------------------------
// Harness

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

struct Harness {
    _dir: tempfile::TempDir,
    ctx: PipelineContext,
    engine: Arc<FakeEngine>,
    ecs: Arc<FakeEcs>,
    terraform: Arc<FakeTerraform>,
    clock: Arc<FakeClock>,
    project: Project,
    live_port: u16,
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A project deploying `main` to `rollout` (a `[projects.rollout]` body; `None`: the
/// local target on a free port).
async fn harness_with(rollout: Option<&str>, tune: impl FnOnce(&mut FakeConnector)) -> Harness {
    harness_full(rollout, "", tune).await
}

/// As [`harness_with`], with more of the project's sub-tables (`[projects.terraform]`).
async fn harness_full(rollout: Option<&str>, extra: &str, tune: impl FnOnce(&mut FakeConnector)) -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let live_port = free_port();
    let rollout = rollout.map_or_else(
        || {
            format!(
                "target = \"local\"\nhost_port = {}\nslot_ports = [{live_port}, {}]\ntimeout_secs = 4",
                free_port(),
                free_port()
            )
        },
        str::to_owned,
    );
    let toml = format!(
        r#"
[server]
database_url = "sqlite://{db}"
[[projects]]
name = "app"
repository = "o/app"
deploy_branches = ["main"]
webhook_secret_env = "S"
[projects.build]
image = "app"
timeout_secs = 5
[projects.smoke]
container_port = 8000
path = "/health"
timeout_secs = 2
[projects.registry]
kind = "v2"
url = "registry.test"
[projects.rollout]
{rollout}
{extra}
"#,
        db = dir.path().join("runner.db").display()
    );
    let env = |name: &str| match name {
        "S" => Some("webhook-secret".to_owned()),
        // Any executable stands in: the fake terraform never runs it.
        "TERRAFORM_BIN" => Some("/bin/true".to_owned()),
        _ => None,
    };
    let config = Config::parse(&toml, &dir.path().join("runner.toml"), &env).expect("a valid config");
    let pool = crate::store::open(&config.server.database_url).await.expect("database");
    let engine = Arc::new(FakeEngine::default());
    let ecs = Arc::new(FakeEcs::default());
    *ecs.current.lock().unwrap_or_else(PoisonError::into_inner) = "app:1".to_owned();
    let http = reqwest::Client::new();
    let terraform = Arc::new(FakeTerraform::default());
    let clock = Arc::new(FakeClock::new());
    let mut connector = FakeConnector {
        http: http.clone(),
        ecs: Arc::clone(&ecs),
        terraform: Arc::clone(&terraform),
        checkout_delay: Duration::ZERO,
        checkout_failure: None,
    };
    tune(&mut connector);
    let ctx = PipelineContext {
        pool,
        work_root: dir.path().join("work"),
        checkout_timeout: Duration::from_secs(5),
        push_timeout: Duration::from_secs(5),
        engine: Some(Arc::clone(&engine) as Arc<dyn ContainerEngine>),
        untrusted_engine: None,
        connector: Arc::new(connector),
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        http,
        probe_image: "probe:latest".to_owned(),
        terraform_bin: config.terraform_bin.clone(),
        terraform_locks: Arc::default(),
        approval_timeout: Duration::from_secs(5),
        owner: "test".into(),
        log_events: LogEvents::default(),
        metrics: Arc::default(),
    };
    let project = config.projects[0].clone();
    Harness {
        _dir: dir,
        ctx,
        engine,
        ecs,
        terraform,
        clock,
        project,
        live_port,
    }
}

async fn harness() -> Harness {
    harness_with(None, |_| {}).await
}

struct Ran {
    result: Result<(), JobFailure>,
    job: Job,
    steps: Vec<(String, String)>,
    log: String,
}

impl Ran {
    fn step(&self, name: &str) -> &str {
        self.steps
            .iter()
            .find(|(n, _)| n == name)
            .map_or("absent", |(_, state)| state.as_str())
    }
}

impl Harness {
    async fn job(&self, sha: &str, trigger: Trigger, rollback_of: Option<i64>) -> Job {
        self.enqueue(JobKind::Deploy, sha, trigger, rollback_of).await
    }

    async fn enqueue(&self, kind: JobKind, sha: &str, trigger: Trigger, rollback_of: Option<i64>) -> Job {
        let pull_request = (kind == JobKind::Verify).then_some(7);
        let git_ref = match pull_request {
            Some(number) => format!("refs/pull/{number}/head"),
            None => "refs/heads/main".to_owned(),
        };
        let new = NewJob {
            project: Name::parse("app").expect("a name"),
            environment: Name::parse("production").expect("a name"),
            kind,
            trigger,
            git_ref: GitRef::parse(&git_ref).expect("a ref"),
            sha: CommitSha::parse(sha).expect("a sha"),
            pull_request,
            delivery_id: None,
            commit_message: None,
            commit_author: None,
            ordering_key: now_ms(),
            rollback_of,
            held_for_approval: false,
            base_sha: None,
            base_branch: None,
        };
        jobs::enqueue_now(&self.ctx.pool, &new, now_ms())
            .await
            .expect("enqueue");
        jobs::claim_next(&self.ctx.pool, "test", Duration::from_secs(60), 3, None, now_ms())
            .await
            .expect("claim")
            .expect("a runnable job")
    }

    async fn run_job(&self, job: Job, cancel: &CancellationToken) -> Ran {
        let (log, writer) = JobLog::start(
            self.ctx.pool.clone(),
            job.id,
            crate::secrets::SecretSet::default().mask(),
            LogEvents::default(),
        );
        let result = super::run(&self.ctx, &self.project, &job, &log, cancel).await;
        drop(log);
        writer.flush().await;
        // What the worker does with the outcome, so the environment's next job may run.
        let (outcome, error) = match &result {
            Ok(()) => (JobState::Succeeded, None),
            Err(JobFailure::Cancelled) => (JobState::Cancelled, None),
            Err(failure) => (JobState::Failed, Some(failure.to_string())),
        };
        jobs::finish(&self.ctx.pool, job.id, "test", outcome, error.as_deref(), now_ms())
            .await
            .expect("the job's end is recorded");
        let steps = steps::list(&self.ctx.pool, job.id.get())
            .await
            .expect("steps")
            .into_iter()
            .map(|s| (s.name, s.state.to_string()))
            .collect();
        let log = crate::store::logs::read(&self.ctx.pool, job.id, 0, 10_000)
            .await
            .expect("log")
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n");
        Ran {
            result,
            job,
            steps,
            log,
        }
    }

    async fn deploy(&self, sha: &str) -> Ran {
        let job = self.job(sha, Trigger::Push, None).await;
        self.run_job(job, &CancellationToken::new()).await
    }

    async fn live_answers(&self) -> Option<u16> {
        let url = format!("http://127.0.0.1:{}/health", self.live_port);
        match reqwest::get(url).await {
            Ok(response) => Some(response.status().as_u16()),
            Err(_) => None,
        }
    }

    async fn deployment_of(&self, job: &Job) -> deployments::Deployment {
        deployments::for_job(&self.ctx.pool, job.id.get())
            .await
            .expect("read")
            .expect("a deployment row")
    }

    fn work_dirs_left(&self) -> usize {
        std::fs::read_dir(&self.ctx.work_root).map_or(0, Iterator::count)
    }
}

pub(crate) fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn a_deploy_runs_every_step_in_order_and_leaves_only_the_live_container() {
    let h = harness().await;
    let ran = h.deploy(SHA).await;
    ran.result.as_ref().expect("the deploy succeeds");
    let names: Vec<&str> = ran.steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["checkout", "build", "smoke", "push", "rollout", "record"]);
    assert!(ran.steps.iter().all(|(_, s)| s == "succeeded"), "{:?}", ran.steps);

    let calls = h.engine.calls();
    let order: Vec<&str> = calls.iter().map(|c| c.split(' ').next().unwrap_or_default()).collect();
    let first = |op: &str| order.iter().position(|o| *o == op).unwrap_or(usize::MAX);
    assert!(first("build") < first("start"), "{calls:?}");
    assert!(
        first("push")
            < calls
                .iter()
                .position(|c| c == "start runner-app-production-a")
                .expect("the release starts in slot a"),
        "{calls:?}"
    );

    let digest_ref = format!("registry.test/app@sha256:{SHA}");
    assert_eq!(
        h.engine.containers(),
        [("runner-app-production-a".to_owned(), digest_ref, true)],
        "only the live container is left, running the pushed digest"
    );
    assert_eq!(h.live_answers().await, Some(200));
    let deployment = h.deployment_of(&ran.job).await;
    assert_eq!(deployment.status, DeploymentStatus::Live);
    assert_eq!(deployment.image_ref, format!("registry.test/app:{SHA}"));
    assert_eq!(h.work_dirs_left(), 0, "the job's directories are removed");
    assert!(
        ran.log
            .contains(&format!("deployment {} is live at http://127.0.0.1:", deployment.id)),
        "{}",
        ran.log
    );
}

#[tokio::test]
async fn a_failing_step_ends_the_job_there_and_removes_what_it_started() {
    type Setup = fn(&FakeEngine);
    let cases: [(&str, Setup, &str); 5] = [
        (
            "build",
            |e| e.script(|s| s.fail_on("build", "no space left")),
            "no space left",
        ),
        (
            "smoke",
            |e| e.script(|s| s.unhealthy.push(Role::Smoke)),
            "/health answered 500",
        ),
        ("smoke", |e| e.script(|s| s.fail_on("start", "port busy")), "port busy"),
        (
            "push",
            |e| e.script(|s| s.fail_on("push", "denied: requested access")),
            "denied",
        ),
        (
            "rollout",
            |e| e.script(|s| s.unhealthy.push(Role::Live)),
            "never became healthy",
        ),
    ];
    for (step, setup, says) in cases {
        let h = harness().await;
        setup(&h.engine);
        let ran = h.deploy(SHA).await;
        let failure = ran.result.as_ref().expect_err("the job fails").to_string();
        assert!(failure.starts_with(&format!("{step} failed")), "{step}: {failure}");
        assert!(failure.contains(says), "{step}: {failure}");
        assert_eq!(ran.step(step), "failed", "{step}: {:?}", ran.steps);
        let position = ran.steps.iter().position(|(n, _)| n == step).expect("the step");
        assert!(
            ran.steps[position + 1..].iter().all(|(_, s)| s == "skipped"),
            "{step}: later steps are skipped: {:?}",
            ran.steps
        );
        assert_eq!(h.engine.containers(), [], "{step}: no container is left");
        assert_eq!(h.work_dirs_left(), 0, "{step}: the job's directories are removed");
        // Every failed deploy leaves a failed attempt on the deployments page; only one
        // that got to its rollout names an image.
        let deployment = h.deployment_of(&ran.job).await;
        assert_eq!(deployment.status, DeploymentStatus::Failed, "{step}");
        assert_eq!(
            deployment.image_ref.is_empty(),
            step != "rollout",
            "{step}: {deployment:?}"
        );
        assert!(deployment.error.unwrap_or_default().contains(says), "{step}");
        assert_eq!(h.live_answers().await, None, "{step}: nothing went live");
    }
}

#[tokio::test]
async fn a_cancel_during_any_step_stops_the_job_and_removes_its_containers() {
    // (step, what makes it slow)
    type Setup = fn(&Harness);
    let cases: [(&str, Setup); 4] = [
        ("build", |h| {
            h.engine.script(|s| s.slow_on("build", Duration::from_secs(30)))
        }),
        ("smoke", |h| h.engine.script(|s| s.unhealthy.push(Role::Smoke))),
        ("push", |h| {
            h.engine.script(|s| s.slow_on("push", Duration::from_secs(30)))
        }),
        ("rollout", |h| h.engine.script(|s| s.unhealthy.push(Role::Live))),
    ];
    for (step, setup) in cases {
        let h = harness().await;
        setup(&h);
        assert_cancelled_in(&h, step).await;
    }
    // The checkout is the connector's, not the engine's.
    let h = harness_with(None, |c| c.checkout_delay = Duration::from_secs(30)).await;
    assert_cancelled_in(&h, "checkout").await;
}

/// Returns once the job's `step` is running.
async fn until_running(pool: &crate::store::Store, job: i64, step: &str) {
    loop {
        let steps = steps::list(pool, job).await.unwrap_or_default();
        if steps.iter().any(|s| s.name == step && s.state == StepState::Running) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_cancelled_in(h: &Harness, step: &str) {
    let job = h.job(SHA, Trigger::Push, None).await;
    let cancel = CancellationToken::new();
    let canceller = {
        let (cancel, pool, id, step) = (cancel.clone(), h.ctx.pool.clone(), job.id.get(), step.to_owned());
        tokio::spawn(async move {
            until_running(&pool, id, &step).await;
            // Inside the step, past its first call.
            tokio::time::sleep(Duration::from_millis(150)).await;
            cancel.cancel();
        })
    };
    let ran = h.run_job(job, &cancel).await;
    canceller.await.expect("the canceller ends");
    assert!(
        matches!(ran.result, Err(JobFailure::Cancelled)),
        "{step}: {:?}",
        ran.result
    );
    assert_eq!(ran.step(step), "cancelled", "{step}: {:?}", ran.steps);
    assert_eq!(h.engine.containers(), [], "{step}: nothing is left running");
    assert_eq!(h.work_dirs_left(), 0, "{step}: the job's directories are removed");
}

#[tokio::test]
async fn a_step_past_its_timeout_fails_the_job_as_timed_out() {
    let h = harness().await;
    // The build would take an hour; the clock passes its five-second timeout at once.
    h.engine.script(|s| s.slow_on("build", Duration::from_secs(3600)));
    let job = h.job(SHA, Trigger::Push, None).await;
    let (pool, id, clock) = (h.ctx.pool.clone(), job.id.get(), Arc::clone(&h.clock));
    let timekeeper = tokio::spawn(async move {
        until_running(&pool, id, "build").await;
        clock.advance(Duration::from_secs(4));
        tokio::time::sleep(Duration::from_millis(50)).await;
        clock.advance(Duration::from_secs(1));
    });
    let started = std::time::Instant::now();
    let ran = h.run_job(job, &CancellationToken::new()).await;
    timekeeper.await.expect("the timekeeper ends");
    assert!(
        matches!(ran.result, Err(JobFailure::Step { step: Step::Build, error: StepError::TimedOut(after) }) if after == Duration::from_secs(5)),
        "{:?}",
        ran.result
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the fake clock, not the wall clock, ran out"
    );
    assert_eq!(ran.step("build"), "failed");
    assert_eq!(ran.step("smoke"), "skipped");
    let build = steps::list(&h.ctx.pool, ran.job.id.get())
        .await
        .expect("steps")
        .into_iter()
        .find(|s| s.name == "build")
        .expect("the build step");
    assert_eq!(
        build.finished_at.zip(build.started_at).map(|(end, start)| end - start),
        Some(5_000),
        "the step's recorded time is the clock's"
    );
}

#[tokio::test]
async fn deploys_alternate_slots_and_retire_what_they_replace() {
    let h = harness().await;
    for (n, slot) in [(1, "a"), (2, "b"), (3, "a")] {
        h.deploy(&sha(n)).await.result.expect("the deploy succeeds");
        let containers = h.engine.containers();
        assert_eq!(containers.len(), 1, "deploy {n}: one container is left: {containers:?}");
        assert_eq!(containers[0].0, format!("runner-app-production-{slot}"), "deploy {n}");
        assert!(containers[0].1.ends_with(&sha(n)), "deploy {n}: {containers:?}");
        assert!(containers[0].2, "deploy {n}: it runs");
    }
}

#[tokio::test]
async fn a_new_version_that_never_gets_healthy_leaves_the_old_one_serving_in_its_slot() {
    let h = harness().await;
    h.deploy(&sha(1)).await.result.expect("the first deploy succeeds");
    h.engine.script(|s| s.unhealthy_live_images.push(sha(2)));
    let second = h.deploy(&sha(2)).await;
    let failure = second.result.as_ref().expect_err("the rollout fails").to_string();
    assert!(failure.contains("never became healthy"), "{failure}");
    assert!(failure.contains("the live version keeps serving"), "{failure}");
    let calls = h.engine.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("stop runner-app-production-a") || c.starts_with("stop c0")),
        "the live version was never stopped: {calls:?}"
    );
    let containers = h.engine.containers();
    assert_eq!(containers.len(), 1, "the new version was removed: {containers:?}");
    assert_eq!(containers[0].0, "runner-app-production-a");
    assert!(containers[0].1.ends_with(&sha(1)), "{containers:?}");
    assert_eq!(h.live_answers().await, Some(200), "slot a still answers");
    assert_eq!(h.deployment_of(&second.job).await.status, DeploymentStatus::Failed);
}

#[tokio::test]
async fn a_rollback_puts_the_earlier_digest_live_without_building() {
    let h = harness().await;
    let first = h.deploy(&sha(1)).await;
    first.result.expect("first");
    h.deploy(&sha(2)).await.result.expect("second");
    let target = h.deployment_of(&first.job).await;
    let builds_before = h.engine.calls().iter().filter(|c| c.starts_with("build")).count();

    let job = h.job(&sha(1), Trigger::Rollback, Some(target.id)).await;
    let ran = h.run_job(job, &CancellationToken::new()).await;
    ran.result.as_ref().expect("the rollback succeeds");
    let names: Vec<&str> = ran.steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["rollout", "record"]);
    let builds_after = h.engine.calls().iter().filter(|c| c.starts_with("build")).count();
    assert_eq!(builds_before, builds_after, "a rollback builds nothing");
    let live = h.engine.containers();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].1, format!("registry.test/app@sha256:{}", sha(1)));
    let deployment = h.deployment_of(&ran.job).await;
    assert_eq!(
        (deployment.status, deployment.trigger),
        (DeploymentStatus::Live, Trigger::Rollback)
    );
    assert_eq!(h.live_answers().await, Some(200));
}

const ECS: &str = "target = \"ecs\"\ncluster = \"c\"\nservice = \"s\"\ntimeout_secs = 5";

#[tokio::test]
async fn an_ecs_deploy_registers_a_revision_points_the_service_and_records_it_live() {
    let h = harness_with(Some(ECS), |_| {}).await;
    let ran = h.deploy(SHA).await;
    ran.result.as_ref().expect("the deploy succeeds");
    let calls = h.ecs.calls.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(
        calls,
        [
            format!("register registry.test/app@sha256:{SHA}"),
            "point app:2".to_owned(),
            "stable app:2".to_owned()
        ]
    );
    assert_eq!(h.deployment_of(&ran.job).await.status, DeploymentStatus::Live);
    assert_eq!(h.engine.containers(), [], "an ECS deploy leaves no local container");
}

#[tokio::test]
async fn an_ecs_deploy_that_never_stabilises_puts_the_previous_revision_back() {
    let h = harness_with(Some(ECS), |_| {}).await;
    *h.ecs.unstable.lock().unwrap_or_else(PoisonError::into_inner) = Some("tasks failed to start".into());
    let ran = h.deploy(SHA).await;
    let failure = ran.result.as_ref().expect_err("the deploy fails").to_string();
    assert!(failure.contains("rolled back to app:1"), "{failure}");
    assert_eq!(*h.ecs.current.lock().unwrap_or_else(PoisonError::into_inner), "app:1");
    assert_eq!(h.deployment_of(&ran.job).await.status, DeploymentStatus::RolledBack);

    let without = format!("{ECS}\nrollback_on_failure = false");
    let h = harness_with(Some(&without), |_| {}).await;
    *h.ecs.unstable.lock().unwrap_or_else(PoisonError::into_inner) = Some("tasks failed to start".into());
    let ran = h.deploy(SHA).await;
    assert!(ran.result.is_err());
    assert_eq!(
        *h.ecs.current.lock().unwrap_or_else(PoisonError::into_inner),
        "app:2",
        "the project asked for no rollback"
    );
    assert_eq!(h.deployment_of(&ran.job).await.status, DeploymentStatus::Failed);
}

#[tokio::test]
async fn a_failed_checkout_builds_nothing() {
    let h = harness_with(None, |c| c.checkout_failure = Some("repository not found".into())).await;
    let ran = h.deploy(SHA).await;
    let failure = ran.result.expect_err("fails").to_string();
    assert!(failure.contains("checkout failed: repository not found"), "{failure}");
    assert!(h.engine.calls().is_empty(), "{:?}", h.engine.calls());
    assert_eq!(h.work_dirs_left(), 0);
}

const TERRAFORM: &str = "[projects.terraform]\ndir = \"infra\"\nrequire_approval = true\n\
                         env = { DEPLOY_ONLY = \"deploy\" }\npull_request_env = { PR_ONLY = \"pr\" }\n\
                         plan_pull_requests = true";

async fn terraform_harness() -> Harness {
    harness_full(None, TERRAFORM, |_| {}).await
}

/// [`answer_when_asked`] for a job of the harness.
fn approve_when_asked(h: &Harness, job: &Job, approved: bool) -> JoinHandle<()> {
    answer_when_asked(h.ctx.pool.clone(), job.id, approved)
}

/// Answers job `id`'s approval request once it is made.
fn answer_when_asked(pool: crate::store::Store, id: crate::domain::JobId, approved: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let state = jobs::get(&pool, id).await.ok().flatten().map(|j| j.state);
            if state == Some(JobState::AwaitingApproval) {
                let plan = crate::store::artifacts::get(&pool, id.get(), crate::store::artifacts::PLAN)
                    .await
                    .expect("read the plan")
                    .map(|plan| plan.digest());
                let answer = match &plan {
                    _ if !approved => jobs::approval::Answer::Reject,
                    plan => jobs::approval::Answer::Approve {
                        plan_digest: plan.as_ref().map(|d| d.as_str()),
                    },
                };
                let decision = jobs::approval::decide(&pool, id, answer, now_ms())
                    .await
                    .expect("the answer is recorded");
                assert!(
                    matches!(
                        decision,
                        jobs::approval::Decision::Recorded | jobs::approval::Decision::Released
                    ),
                    "{decision:?}"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test]
async fn a_deploy_with_terraform_plans_waits_for_approval_applies_then_rolls_out() {
    let h = terraform_harness().await;
    let job = h.job(SHA, Trigger::Push, None).await;
    let approver = approve_when_asked(&h, &job, true);
    let ran = h.run_job(job, &CancellationToken::new()).await;
    approver.await.expect("the approver ends");
    ran.result.as_ref().expect("the deploy succeeds");
    let names: Vec<&str> = ran.steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "checkout", "build", "smoke", "push", "plan", "approval", "apply", "rollout", "record"
        ]
    );
    assert!(ran.steps.iter().all(|(_, s)| s == "succeeded"), "{:?}", ran.steps);
    assert_eq!(h.terraform.calls(), ["prepare", "plan", "apply", "outputs"]);
    let (env, locks) = h.terraform.modules.lock().unwrap_or_else(PoisonError::into_inner)[0].clone();
    assert!(
        locks && env.contains_key("DEPLOY_ONLY") && !env.contains_key("PR_ONLY"),
        "{env:?}"
    );
    let deployment = h.deployment_of(&ran.job).await;
    assert_eq!(deployment.status, DeploymentStatus::Live);
    assert_eq!(deployment.outputs.0.expect("outputs")["app_url"], "http://app.test");
}

#[tokio::test]
async fn a_rejected_plan_applies_nothing_and_puts_nothing_live() {
    let h = terraform_harness().await;
    let job = h.job(SHA, Trigger::Push, None).await;
    let approver = approve_when_asked(&h, &job, false);
    let ran = h.run_job(job, &CancellationToken::new()).await;
    approver.await.expect("the approver ends");
    let failure = ran.result.as_ref().expect_err("the deploy fails").to_string();
    assert!(failure.contains("rejected"), "{failure}");
    assert_eq!(ran.step("approval"), "failed");
    assert_eq!((ran.step("apply"), ran.step("rollout")), ("skipped", "skipped"));
    assert_eq!(h.terraform.calls(), ["prepare", "plan"]);
    assert_eq!(h.engine.containers(), [], "nothing went live");
}

#[tokio::test]
async fn a_cancel_during_plan_approval_or_apply_stops_the_job_and_applies_nothing_after() {
    for step in ["plan", "approval", "apply"] {
        let h = terraform_harness().await;
        if step != "approval" {
            let slow = if step == "plan" { "plan" } else { "apply" };
            h.terraform
                .slow
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(slow, Duration::from_secs(30));
        }
        // The job this test runs is the harness's first.
        let first_job = crate::domain::JobId::new(1).expect("an id");
        let approver = (step == "apply").then(|| answer_when_asked(h.ctx.pool.clone(), first_job, true));
        assert_cancelled_in(&h, step).await;
        if let Some(approver) = approver {
            approver.await.expect("the approver ends");
        }
        let calls = h.terraform.calls();
        if step != "apply" {
            assert!(!calls.contains(&"apply".to_owned()), "{step}: {calls:?}");
        }
        assert!(!calls.contains(&"outputs".to_owned()), "{step}: {calls:?}");
    }
}

#[tokio::test]
async fn a_plan_without_changes_skips_approval_and_apply() {
    let h = terraform_harness().await;
    h.terraform.no_changes.store(true, Ordering::Relaxed);
    let ran = h.deploy(SHA).await;
    ran.result.as_ref().expect("the deploy succeeds");
    assert_eq!((ran.step("approval"), ran.step("apply")), ("skipped", "skipped"));
    assert_eq!(ran.step("rollout"), "succeeded");
    assert_eq!(h.terraform.calls(), ["prepare", "plan", "outputs"]);
}

#[tokio::test]
async fn a_stale_plan_is_planned_and_approved_again_before_it_is_applied() {
    let h = terraform_harness().await;
    h.terraform.stale_once.store(true, Ordering::Relaxed);
    let job = h.job(SHA, Trigger::Push, None).await;
    let first = approve_when_asked(&h, &job, true);
    let never = CancellationToken::new();
    let ran = {
        let run = h.run_job(job.clone(), &never);
        let second = async {
            first.await.expect("the first approval");
            // The second request comes once the first plan turned out stale.
            loop {
                let calls = h.terraform.calls();
                if calls.iter().filter(|c| *c == "plan").count() == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            approve_when_asked(&h, &job, true).await.expect("the second approval");
        };
        let (ran, ()) = tokio::join!(run, second);
        ran
    };
    ran.result.as_ref().expect("the deploy succeeds");
    assert_eq!(
        h.terraform.calls(),
        ["prepare", "plan", "apply", "plan", "apply", "outputs"],
        "prepared once, planned and applied twice"
    );
    assert!(ran.log.contains("the saved plan is stale"), "{}", ran.log);
}

#[tokio::test]
async fn a_pull_requests_plan_gets_the_pull_request_environment_and_takes_no_lock() {
    let h = terraform_harness().await;
    let job = h.enqueue(JobKind::Verify, SHA, Trigger::PullRequest, None).await;
    let ran = h.run_job(job, &CancellationToken::new()).await;
    ran.result.as_ref().expect("the verify job succeeds");
    let names: Vec<&str> = ran.steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["checkout", "build", "smoke", "plan"]);
    assert_eq!(h.terraform.calls(), ["prepare", "plan"], "a pull request never applies");
    let (env, locks) = h.terraform.modules.lock().unwrap_or_else(PoisonError::into_inner)[0].clone();
    assert!(!locks, "a pull request's plan takes no state lock");
    assert!(
        env.contains_key("PR_ONLY") && !env.contains_key("DEPLOY_ONLY"),
        "{env:?}"
    );
    assert!(
        h.engine.calls().iter().all(|c| !c.starts_with("push")),
        "a verify job pushes nothing"
    );
}
