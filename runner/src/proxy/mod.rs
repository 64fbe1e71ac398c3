//! The proxy boundary: the Caddy in front of local environments. Each environment is a
//! route (a port, or a hostname) over two slots; the version in the first slot takes the
//! traffic whenever it is healthy, the one in the second otherwise. So a switch needs no
//! change to the proxy's configuration: Caddy 2.6 drops requests on every configuration
//! reload, while its health checks move traffic without a gap. The route's configuration
//! is written once, and again only when it differs from what the runner's record says.

pub mod caddy;

/// The request header that asks a route which slot served it, and the answer's.
pub const PROBE_HEADER: &str = "X-Runner-Probe";
pub const SERVED_BY_HEADER: &str = "X-Runner-Served-By";

use std::net::SocketAddr;

pub use caddy::Caddy;

/// An environment's route and the two slots behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `runner-<project>-<environment>`: the route's id in the proxy.
    pub id: String,
    pub listen: Listen,
    /// The first is preferred while healthy.
    pub slots: [SocketAddr; 2],
    pub health: HealthCheck,
    /// A request through the route carrying this in `X-Runner-Probe` is answered with the
    /// slot that served it (see [`Proxy::serving`]); others see nothing of the slots.
    pub probe_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Everything arriving on this address.
    Port(SocketAddr),
    /// Requests for this host name; with `tls`, over HTTPS with a certificate Caddy obtains.
    Host { name: String, tls: bool },
}

/// What the proxy asks of a slot before it sends it traffic: the smoke test's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub expect_status: u16,
    pub expect_body: Option<String>,
    pub interval: std::time::Duration,
}

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The proxy already had the route as given; nothing was reloaded.
    Unchanged,
    Written,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "Caddy's admin API at {url} does not answer ({cause}); start Caddy (`caddy run`, or `docker compose up -d caddy`) or point [proxy] admin_url at it"
    )]
    Unreachable { url: String, cause: String },
    #[error("Caddy refused {what}: {message}")]
    Refused { what: String, message: String },
    /// The runner speaks no TLS to a route: an HTTPS route cannot be asked which slot
    /// serves it.
    #[error("an HTTPS route cannot be asked which slot serves it")]
    CannotAsk,
}

#[async_trait::async_trait]
pub trait Proxy: Send + Sync {
    /// Makes `route` exist as given, writing (and so reloading) only when it differs.
    async fn ensure(&self, route: &Route) -> Result<Applied, ProxyError>;
    /// Removes `route`, if the proxy has it.
    async fn remove(&self, route: &Route) -> Result<(), ProxyError>;
    /// Requests the proxy is forwarding to `upstream` right now.
    async fn in_flight(&self, upstream: SocketAddr) -> Result<u64, ProxyError>;
    /// Whether the admin API answers.
    async fn check(&self) -> Result<(), ProxyError>;
    /// The slot the route sends a request to now, asked through the route itself (a GET
    /// of its health check's path); `None` when no slot answered.
    async fn serving(&self, route: &Route) -> Result<Option<SocketAddr>, ProxyError>;
}
