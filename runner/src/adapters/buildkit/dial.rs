//! Connections to the engine for the requests bollard does not make for us (a BuildKit
//! build and its session): the same address bollard uses, as a byte stream.

use std::pin::Pin;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::EngineHost;

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

pub type Connection = Pin<Box<dyn Stream>>;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to the engine at {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("cannot read the engine's TLS certificates in {dir}: {reason}")]
    Certificates { dir: String, reason: String },
}

/// Opens a new connection to the engine.
pub async fn dial(host: &EngineHost) -> Result<Connection, DialError> {
    match host {
        EngineHost::Unix { path } => tokio::net::UnixStream::connect(path)
            .await
            .map(|s| Box::pin(s) as Connection)
            .map_err(|source| DialError::Connect {
                address: path.display().to_string(),
                source,
            }),
        EngineHost::Tcp { host, port } => tcp(host, *port).await.map(|s| Box::pin(s) as Connection),
        EngineHost::Tls { host, port, cert_dir } => {
            let config = tls_config(cert_dir)?;
            let tcp = tcp(host, *port).await?;
            let name = ServerName::try_from(host.clone()).map_err(|e| DialError::Certificates {
                dir: cert_dir.display().to_string(),
                reason: format!("{host:?} is not a name a certificate can hold: {e}"),
            })?;
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map(|s| Box::pin(s) as Connection)
                .map_err(|source| DialError::Connect {
                    address: format!("{host}:{port} (TLS)"),
                    source,
                })
        }
        EngineHost::Ssh(destination) => Err(DialError::Connect {
            address: format!("ssh://{}", destination.host),
            source: std::io::Error::other("an SSH engine is dialled through its tunnel's socket"),
        }),
    }
}

async fn tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, DialError> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|source| DialError::Connect {
            address: format!("{host}:{port}"),
            source,
        })?;
    // Build progress is many small messages; do not hold them back.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Docker's layout: `ca.pem` signs the engine's certificate; `cert.pem` and `key.pem`
/// are ours.
fn tls_config(dir: &std::path::Path) -> Result<tokio_rustls::rustls::ClientConfig, DialError> {
    let failed = |reason: String| DialError::Certificates {
        dir: dir.display().to_string(),
        reason,
    };
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).map_err(|e| failed(format!("ca.pem: {e}")))? {
        let cert = cert.map_err(|e| failed(format!("ca.pem: {e}")))?;
        roots.add(cert).map_err(|e| failed(format!("ca.pem: {e}")))?;
    }
    let chain = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .map_err(|e| failed(format!("cert.pem: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(format!("cert.pem: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).map_err(|e| failed(format!("key.pem: {e}")))?;
    tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| failed(e.to_string()))
}
