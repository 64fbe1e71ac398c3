//! The web service the runner deploys.
//!
//! It answers exactly like the original Flask service (`/`, `/health`, plain-text 404 and
//! 500 pages) and adds what a container on ECS needs: `/version` to verify a rollout from
//! outside, graceful shutdown on SIGTERM, and a self-probe for `HEALTHCHECK`.

pub mod logging;
pub mod probe;
mod routes;
mod settings;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use routes::{GREETING, HEALTHY, NOT_FOUND, SERVER_ERROR, routes};
pub use settings::{Settings, SettingsError};

/// A bound, not yet serving, instance of the service.
pub struct Application {
    listener: TcpListener,
    router: Router,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds the listener; port 0 picks a free port (see [`Application::port`]).
    pub async fn build(settings: &Settings) -> io::Result<Self> {
        Self::build_with_routes(settings, Router::new()).await
    }

    /// Like [`Application::build`], with extra routes merged in under the same error
    /// handling (used by tests to exercise panics and slow requests).
    pub async fn build_with_routes(settings: &Settings, extra: Router) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(settings.host, settings.port)).await?;
        let router = routes::with_error_handling(routes::routes(settings.version_info()).merge(extra));
        Ok(Self {
            listener,
            router,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener always has a local address")
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives in-flight
    /// requests up to the configured grace period to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown requested; finishing in-flight requests");
            let _ = signalled_tx.send(());
        };
        let server = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(signal)
            .into_future();
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result,
            signalled = signalled_rx => {
                if signalled.is_err() {
                    return server.await;
                }
                match tokio::time::timeout(self.shutdown_grace, server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace = ?self.shutdown_grace, "requests still running after the grace period; exiting anyway");
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Resolves on SIGTERM (what Docker and ECS send) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
