//! Builds with the engine's BuildKit: `POST /build?version=2` with the context as a tar
//! body, beside a session (`POST /session`, upgraded to HTTP/2) on which the runner
//! answers BuildKit's calls for secrets and registry credentials. The build's status
//! stream becomes job log lines.
//!
//! bollard's own BuildKit build serves no secrets on its session, so these two requests
//! are made here, on connections to the same engine address.

mod dial;
mod progress;
mod session;

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use secrecy::SecretString;
use serde::Deserialize;

pub use dial::DialError;
pub use progress::Progress;
pub use session::SessionData;

use crate::config::EngineHost;
use crate::joblog::JobLog;

#[derive(Debug, thiserror::Error)]
pub enum BuildKitError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("the engine's BuildKit session could not start: {0}")]
    Session(String),
    #[error("the engine refused the build ({status}): {message}")]
    Refused { status: StatusCode, message: String },
    #[error("the connection to the engine broke during the build: {0}")]
    Connection(String),
    #[error("{0}")]
    Failed(String),
}

/// One build's inputs, besides its context.
pub struct BuildKitRequest<'a> {
    pub tag: &'a str,
    pub dockerfile: &'a str,
    pub build_args: &'a HashMap<String, String>,
    pub labels: &'a HashMap<String, String>,
    pub target: Option<&'a str>,
    pub platform: Option<&'a str>,
    pub cache_from: &'a [String],
    pub secrets: &'a BTreeMap<String, SecretString>,
    pub credentials: &'a HashMap<String, (String, SecretString)>,
    pub untrusted: Option<&'a super::engine::UntrustedBuild>,
}

/// Builds `context_tar` on the engine at `host` (Engine API `api_version`); returns the
/// image id.
pub async fn build(
    host: &EngineHost,
    api_version: &str,
    context_tar: Bytes,
    request: &BuildKitRequest<'_>,
    log: &JobLog,
) -> Result<String, BuildKitError> {
    let session_id = random_id();
    let session = SessionData {
        secrets: request.secrets.clone(),
        credentials: request.credentials.clone(),
    };
    let _session = start_session(host, api_version, &session_id, request.tag, session).await?;

    let mut query = vec![
        ("version", "2".to_owned()),
        ("session", session_id),
        ("t", request.tag.to_owned()),
        ("dockerfile", request.dockerfile.to_owned()),
        ("buildargs", json(request.build_args)),
        ("labels", json(request.labels)),
        ("rm", "1".to_owned()),
        ("forcerm", "1".to_owned()),
    ];
    if let Some(target) = request.target {
        query.push(("target", target.to_owned()));
    }
    if let Some(platform) = request.platform {
        query.push(("platform", platform.to_owned()));
    }
    if !request.cache_from.is_empty() {
        query.push(("cachefrom", json(request.cache_from)));
    }
    if let Some(untrusted) = request.untrusted {
        query.push(("nocache", "1".to_owned()));
        // Part of every RUN step's definition, so of its cache key.
        query.push(("extrahosts", format!("{}:127.0.0.1", untrusted.key)));
        if untrusted.network == crate::config::BuildNetwork::None {
            query.push(("networkmode", "none".to_owned()));
        }
    }
    let query = serde_urlencoded::to_string(&query).map_err(|e| BuildKitError::Failed(e.to_string()))?;
    let http_request = Request::post(format!("/v{api_version}/build?{query}"))
        .header(HOST, "docker")
        .header(CONTENT_TYPE, "application/x-tar")
        .body(Full::new(context_tar))
        .map_err(|e| BuildKitError::Failed(e.to_string()))?;

    let mut sender = connect::<Full<Bytes>>(host, false).await?;
    let response = sender
        .send_request(http_request)
        .await
        .map_err(|e| BuildKitError::Connection(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(BuildKitError::Refused {
            status,
            message: engine_message(response.into_body()).await,
        });
    }
    let mut body = response.into_body();

    let mut progress = Progress::default();
    let mut outcome = Outcome::default();
    // One message per line; a status message can be far longer than a log line.
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BuildKitError::Connection(e.to_string()))?;
        let Some(data) = frame.data_ref() else { continue };
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            outcome.read(&String::from_utf8_lossy(&line), &mut progress, log);
        }
    }
    outcome.read(&String::from_utf8_lossy(&pending), &mut progress, log);
    match (outcome.error, outcome.image_id) {
        // The step that failed, in BuildKit's words, says more than the engine's summary.
        (Some(error), _) => Err(BuildKitError::Failed(explain(
            progress.failure().map_or(error, str::to_owned),
        ))),
        (None, Some(id)) => Ok(id),
        (None, None) => Err(BuildKitError::Failed(
            "the build ended without an image (the engine reported no image id)".to_owned(),
        )),
    }
}

/// A failure as the Dockerfile's author can act on it.
fn explain(failure: String) -> String {
    if failure.contains("secret ") && failure.contains("not found") {
        format!("{failure}; a build gets only the secrets in [projects.build] secrets, and a pull request's build none")
    } else {
        failure
    }
}

/// What the engine's messages said so far.
#[derive(Default)]
struct Outcome {
    image_id: Option<String>,
    error: Option<String>,
}

/// One JSON message of the build's response stream.
#[derive(Deserialize)]
struct EngineMessage {
    id: Option<String>,
    aux: Option<serde_json::Value>,
    stream: Option<String>,
    error: Option<String>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

impl Outcome {
    fn read(&mut self, line: &str, progress: &mut Progress, log: &JobLog) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let Ok(message) = serde_json::from_str::<EngineMessage>(line) else {
            log.stdout(line);
            return;
        };
        if let Some(error) = message.error_detail.and_then(|d| d.message).or(message.error) {
            log.stdout(&format!("ERROR: {error}"));
            self.error.get_or_insert(error);
            return;
        }
        match (message.id.as_deref(), message.aux) {
            (Some("moby.buildkit.trace"), Some(serde_json::Value::String(encoded))) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .ok()
                    .and_then(|bytes| {
                        bollard_buildkit_proto::moby::buildkit::v1::StatusResponse::decode(bytes.as_slice()).ok()
                    });
                match decoded {
                    Some(status) => {
                        for text in progress.apply(status) {
                            log.stdout(&text);
                        }
                    }
                    None => tracing::debug!("an undecodable BuildKit status message"),
                }
            }
            (Some("moby.image.id"), Some(aux)) => {
                if let Some(id) = aux.get("ID").and_then(|id| id.as_str()) {
                    self.image_id = Some(id.to_owned());
                }
            }
            _ => {
                if let Some(text) = message.stream {
                    for part in text.lines().filter(|l| !l.trim().is_empty()) {
                        log.stdout(part);
                    }
                }
            }
        }
    }
}

/// Ends the session (its connection closes) when the build is over or dropped.
struct SessionGuard(tokio::task::JoinHandle<()>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn start_session(
    host: &EngineHost,
    api_version: &str,
    id: &str,
    shared_key: &str,
    data: SessionData,
) -> Result<SessionGuard, BuildKitError> {
    let mut builder = Request::post(format!("/v{api_version}/session"))
        .header(HOST, "docker")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "h2c")
        .header("X-Docker-Expose-Session-Uuid", id)
        .header("X-Docker-Expose-Session-Name", "runner")
        .header("X-Docker-Expose-Session-Sharedkey", shared_key);
    for method in session::METHODS {
        builder = builder.header("X-Docker-Expose-Session-Grpc-Method", method);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| BuildKitError::Session(e.to_string()))?;
    let mut sender = connect::<Empty<Bytes>>(host, true).await?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| BuildKitError::Session(e.to_string()))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        return Err(BuildKitError::Session(format!(
            "{status}: {}",
            engine_message(response.into_body()).await
        )));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| BuildKitError::Session(e.to_string()))?;
    let service = hyper_util::service::TowerToHyperService::new(session::routes(data));
    let served = tokio::spawn(async move {
        let connection =
            hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(upgraded, service);
        if let Err(error) = connection.await {
            tracing::debug!(%error, "the build session's connection ended");
        }
    });
    Ok(SessionGuard(served))
}

/// An HTTP/1.1 connection to the engine, driven by a task of its own.
async fn connect<B>(
    host: &EngineHost,
    upgrades: bool,
) -> Result<hyper::client::conn::http1::SendRequest<B>, BuildKitError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = dial::dial(host).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BuildKitError::Connection(e.to_string()))?;
    tokio::spawn(async move {
        let result = if upgrades {
            connection.with_upgrades().await
        } else {
            connection.await
        };
        if let Err(error) = result {
            tracing::debug!(%error, "a connection to the engine ended");
        }
    });
    Ok(sender)
}

/// The engine's error body is `{"message": "..."}`.
async fn engine_message(body: hyper::body::Incoming) -> String {
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned())
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// A session id as BuildKit makes them: 25 base-36 characters.
fn random_id() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 25];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}
