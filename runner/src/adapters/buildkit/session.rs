//! A build's session: the gRPC services BuildKit calls back on while it builds, served
//! on a connection the engine upgrades from `POST /session`. The engine is the gRPC
//! client here; the runner answers for the build's secrets and registry credentials.
//! The session ends with the build (the connection is closed), never outliving it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard_buildkit_proto::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse, GetTokenAuthorityRequest,
    GetTokenAuthorityResponse, VerifyTokenAuthorityRequest, VerifyTokenAuthorityResponse,
};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

/// The methods the session offers; BuildKit calls only what is announced.
pub const METHODS: [&str; 3] = [
    "/grpc.health.v1.Health/Check",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/moby.filesync.v1.Auth/Credentials",
];

/// What the build may ask for.
#[derive(Clone, Default)]
pub struct SessionData {
    /// `RUN --mount=type=secret,id=NAME` reads `secrets[NAME]`.
    pub secrets: BTreeMap<String, SecretString>,
    /// Registry host → (username, password), for pulling `cache_from` images.
    pub credentials: HashMap<String, (String, SecretString)>,
}

/// The session's gRPC routes.
pub fn routes(data: SessionData) -> tonic::service::Routes {
    let data = Arc::new(data);
    tonic::service::Routes::new(HealthServer::new(AlwaysServing))
        .add_service(SecretsServer::new(SecretStore(data.clone())))
        .add_service(AuthServer::new(CredentialStore(data)))
}

struct AlwaysServing;

#[tonic::async_trait]
impl Health for AlwaysServing {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(&self, _: Request<HealthListRequest>) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("not offered"))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not offered"))
    }
}

struct SecretStore(Arc<SessionData>);

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(&self, request: Request<GetSecretRequest>) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.0.secrets.get(id) {
            Some(value) => Ok(Response::new(GetSecretResponse {
                data: value.expose_secret().as_bytes().to_vec(),
            })),
            // BuildKit's own wording, so a Dockerfile author recognises it.
            None => Err(Status::not_found(format!(
                "secret {id} not found: it is not in [projects.build] secrets, or this build may not have it"
            ))),
        }
    }
}

struct CredentialStore(Arc<SessionData>);

#[tonic::async_trait]
impl Auth for CredentialStore {
    async fn credentials(&self, request: Request<CredentialsRequest>) -> Result<Response<CredentialsResponse>, Status> {
        // An unknown host gets empty credentials: an anonymous pull.
        let response = match self.0.credentials.get(&request.get_ref().host) {
            Some((username, password)) => CredentialsResponse {
                username: username.clone(),
                secret: password.expose_secret().to_owned(),
            },
            None => CredentialsResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn fetch_token(&self, _: Request<FetchTokenRequest>) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("not offered"))
    }

    async fn get_token_authority(
        &self,
        _: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("not offered"))
    }

    async fn verify_token_authority(
        &self,
        _: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("not offered"))
    }
}
