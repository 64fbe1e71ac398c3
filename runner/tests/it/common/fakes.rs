//! Stand-ins for the outside systems a test does not exercise.

use std::net::SocketAddr;
use std::time::Duration;

use runner::adapters::engine::{
    BuildRequest, ContainerEngine, ContainerSpec, EngineError, ManagedContainer, PodSpec, RegistryAuth, Started,
    StoredImage, TaskSpec,
};
use runner::adapters::probe::Answer;
use runner::joblog::JobLog;
use runner::proxy::{Applied, Proxy, ProxyError, Route};

/// A proxy that takes every route and serves none.
pub struct NoProxy;

#[async_trait::async_trait]
impl Proxy for NoProxy {
    async fn ensure(&self, _route: &Route) -> Result<Applied, ProxyError> {
        Ok(Applied::Unchanged)
    }

    async fn in_flight(&self, _upstream: SocketAddr) -> Result<u64, ProxyError> {
        Ok(0)
    }

    async fn remove(&self, _route: &Route) -> Result<(), ProxyError> {
        Ok(())
    }

    async fn check(&self) -> Result<(), ProxyError> {
        Ok(())
    }

    async fn serving(&self, _route: &Route) -> Result<Option<SocketAddr>, ProxyError> {
        Ok(None)
    }
}

/// An engine that answers but can do nothing: each job of a test on it ends before its
/// build (its checkout fails first), and anything that reaches the engine fails saying
/// so.
pub struct IdleEngine;

fn nothing<T>() -> Result<T, EngineError> {
    Err(EngineError::Engine("this test's engine runs nothing".into()))
}

#[async_trait::async_trait]
impl ContainerEngine for IdleEngine {
    async fn build(&self, _: bytes::Bytes, _: &BuildRequest, _: &JobLog) -> Result<String, EngineError> {
        nothing()
    }
    async fn start(&self, _: &ContainerSpec) -> Result<Started, EngineError> {
        nothing()
    }
    async fn logs(&self, _: &str) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }
    async fn remove(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    async fn push(&self, _: &str, _: &str, _: Option<RegistryAuth>, _: &JobLog) -> Result<String, EngineError> {
        nothing()
    }
    async fn tag(&self, _: &str, _: &str, _: &str) -> Result<(), EngineError> {
        nothing()
    }
    async fn find(&self, _: &str) -> Result<Option<String>, EngineError> {
        Ok(None)
    }
    async fn stop(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    async fn restart(&self, _: &str) -> Result<(), EngineError> {
        nothing()
    }
    async fn images(&self, _: &[String]) -> Result<Vec<StoredImage>, EngineError> {
        Ok(Vec::new())
    }
    async fn remove_image(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    async fn containers(&self, _: &[(&str, &str)]) -> Result<Vec<ManagedContainer>, EngineError> {
        Ok(Vec::new())
    }
    async fn rename(&self, _: &str, _: &str) -> Result<(), EngineError> {
        nothing()
    }
    async fn start_prober(&self, _: &str, _: &str, _: i64, _: Duration) -> Result<String, EngineError> {
        nothing()
    }
    async fn ask_inside(&self, _: &str, _: u16, _: &str) -> Result<Answer, EngineError> {
        nothing()
    }
    async fn start_task(&self, _: &TaskSpec) -> Result<String, EngineError> {
        nothing()
    }
    async fn start_pod(&self, _: &PodSpec) -> Result<String, EngineError> {
        nothing()
    }
    async fn follow_task(&self, _: &str, _: &JobLog) -> Result<i64, EngineError> {
        nothing()
    }
    async fn read_file(&self, _: &str, _: &str, _: u64) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(None)
    }
}
