//! Amazon ECR as the registry: the repository is created when missing (as the original
//! deploy workflow did), and the engine logs in with a token from
//! `GetAuthorizationToken`, cached until shortly before it expires.

use std::time::{Duration, SystemTime};

use aws_sdk_ecr::types::ImageScanningConfiguration;
use base64::Engine as _;
use tokio::sync::Mutex;

use super::{Destination, Registry, RegistryError};
use crate::adapters::engine::RegistryAuth;
use crate::joblog::JobLog;
use crate::store::deployments::KeptImages;

/// A token is refreshed this long before ECR says it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// ECR tokens last 12 hours; never trust one for longer.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A registry login and the host it is for.
#[derive(Clone)]
pub struct EcrLogin {
    pub auth: RegistryAuth,
    /// `<account>.dkr.ecr.<region>.amazonaws.com`, from the token's proxy endpoint.
    pub registry_host: String,
}

struct Cached {
    login: EcrLogin,
    valid_until: SystemTime,
}

/// Until when a token may be reused: shortly before its expiry, at most 12 hours from now.
/// `None` when it is already too close to expiring to cache.
pub fn cache_until(now: SystemTime, expires_at: Option<SystemTime>) -> Option<SystemTime> {
    let cap = now + MAX_TOKEN_LIFETIME;
    let until = expires_at
        .and_then(|e| e.checked_sub(REFRESH_MARGIN))
        .map_or(cap, |e| e.min(cap));
    (until > now).then_some(until)
}

/// The standard AWS configuration chain (env, profile, instance role), with an optional
/// region and endpoint (or `AWS_ENDPOINT_URL`) of its own.
pub async fn aws_sdk_config(region: Option<String>, endpoint_url: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(endpoint_url) = endpoint_url {
        loader = loader.endpoint_url(endpoint_url);
    }
    loader.load().await
}

/// Masks the credentials the SDK's chain resolves for `client` (from the environment, a
/// profile or an instance role), which the configuration does not know: the chain caches
/// them, and an instance role's are replaced hourly, each new set held as it is resolved.
async fn hold_resolved_credentials(provider: Option<&aws_sdk_ecr::config::SharedCredentialsProvider>) {
    use aws_sdk_ecr::config::ProvideCredentials as _;
    let Some(provider) = provider else {
        return;
    };
    match provider.provide_credentials().await {
        Ok(credentials) => {
            crate::secrets::hold(credentials.secret_access_key());
            if let Some(token) = credentials.session_token() {
                crate::secrets::hold(token);
            }
        }
        // The request that follows fails with the reason, in the job's log.
        Err(error) => tracing::debug!(%error, "no AWS credentials resolved yet"),
    }
}

pub struct Ecr {
    client: aws_sdk_ecr::Client,
    credentials: Option<aws_sdk_ecr::config::SharedCredentialsProvider>,
    cached: Mutex<Option<Cached>>,
}

impl Ecr {
    /// Uses the standard AWS configuration chain (env, profile, instance role) for
    /// credentials; `endpoint_url` (or `AWS_ENDPOINT_URL`) points it at another endpoint.
    pub async fn new(region: Option<String>, endpoint_url: Option<String>) -> Self {
        let config = aws_sdk_config(region, endpoint_url).await;
        Self {
            client: aws_sdk_ecr::Client::new(&config),
            credentials: config.credentials_provider(),
            cached: Mutex::new(None),
        }
    }

    /// The repository's URI, if it exists.
    pub async fn find_repository(&self, name: &str) -> Result<Option<String>, RegistryError> {
        match self.client.describe_repositories().repository_names(name).send().await {
            Ok(found) => Ok(found.repositories().first().and_then(|r| r.repository_uri()).map(str::to_owned)),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesError::is_repository_not_found_exception) =>
            {
                Ok(None)
            }
            Err(error) => Err(RegistryError::unreachable(format!("describing ECR repository {name}"), error)),
        }
    }

    /// Creates the repository (scan on push) unless it exists; returns its URI.
    pub async fn ensure_repository(&self, name: &str) -> Result<String, RegistryError> {
        if let Some(uri) = self.find_repository(name).await? {
            return Ok(uri);
        }
        let created = self
            .client
            .create_repository()
            .repository_name(name)
            .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(true).build())
            .send()
            .await
            .map_err(|error| RegistryError::unreachable(format!("creating ECR repository {name}"), error))?;
        tracing::info!(repository = name, "created ECR repository");
        created
            .repository()
            .and_then(|r| r.repository_uri())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Unexpected(format!("ECR created {name} but returned no URI")))
    }

    /// The repository's tagged images, as (tag, digest); none when it does not exist.
    pub async fn tagged_images(&self, repository: &str) -> Result<Vec<(String, String)>, RegistryError> {
        use aws_sdk_ecr::types::{ListImagesFilter, TagStatus};
        let mut pages = self
            .client
            .list_images()
            .repository_name(repository)
            .filter(ListImagesFilter::builder().tag_status(TagStatus::Tagged).build())
            .into_paginator()
            .send();
        let mut images = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(error)
                    if error.as_service_error().is_some_and(
                        aws_sdk_ecr::operation::list_images::ListImagesError::is_repository_not_found_exception,
                    ) =>
                {
                    return Ok(Vec::new());
                }
                Err(error) => {
                    return Err(RegistryError::unreachable(
                        format!("listing the images of {repository}"),
                        error,
                    ));
                }
            };
            images.extend(
                page.image_ids()
                    .iter()
                    .filter_map(|id| Some((id.image_tag()?.to_owned(), id.image_digest()?.to_owned()))),
            );
        }
        Ok(images)
    }

    /// Deletes the images `digests` names (with all their tags); returns how many went.
    pub async fn delete_images(&self, repository: &str, digests: &[String]) -> Result<usize, RegistryError> {
        let mut deleted = 0;
        // ECR takes at most 100 image ids a request.
        for batch in digests.chunks(100) {
            let ids = batch
                .iter()
                .map(|digest| {
                    aws_sdk_ecr::types::ImageIdentifier::builder()
                        .image_digest(digest)
                        .build()
                })
                .collect();
            let answer = self
                .client
                .batch_delete_image()
                .repository_name(repository)
                .set_image_ids(Some(ids))
                .send()
                .await
                .map_err(|error| RegistryError::unreachable(format!("deleting images of {repository}"), error))?;
            deleted += answer.image_ids().len();
        }
        Ok(deleted)
    }

    /// A login for the engine, from the cache while it is valid.
    pub async fn login(&self) -> Result<EcrLogin, RegistryError> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(entry) = cached.as_ref()
            && entry.valid_until > now
        {
            return Ok(entry.login.clone());
        }
        hold_resolved_credentials(self.credentials.as_ref()).await;
        let answer = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|error| RegistryError::unreachable("getting an ECR authorization token", error))?;
        let unexpected = |what: &str| RegistryError::Unexpected(format!("ECR's authorization token: {what}"));
        let data = answer
            .authorization_data()
            .first()
            .ok_or_else(|| unexpected("no authorization data"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().ok_or_else(|| unexpected("no token"))?)
            .map_err(|_| unexpected("not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| unexpected("not text"))?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| unexpected("not user:password"))?;
        // The token and the password inside it log anyone into the registry for 12 hours.
        if let Some(token) = data.authorization_token() {
            crate::secrets::hold(token);
        }
        crate::secrets::hold(password);
        let registry_host = data
            .proxy_endpoint()
            .map(|e| {
                e.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .ok_or_else(|| unexpected("no proxy endpoint"))?;
        let login = EcrLogin {
            auth: RegistryAuth {
                username: username.to_owned(),
                password: password.to_owned(),
                server: registry_host.clone(),
            },
            registry_host,
        };
        let expires_at = data.expires_at().and_then(|t| SystemTime::try_from(*t).ok());
        *cached = cache_until(now, expires_at).map(|valid_until| Cached {
            login: login.clone(),
            valid_until,
        });
        Ok(login)
    }

    /// Whether a token is cached now (for tests and the job log).
    pub async fn has_cached_token(&self) -> bool {
        self.cached
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| c.valid_until > SystemTime::now())
    }
}

/// ECR as a push destination: the repository is created when missing; `url` overrides
/// the registry host the token names (a mirror or proxy in front of ECR).
pub struct EcrRegistry {
    pub client: std::sync::Arc<Ecr>,
    pub url: Option<String>,
}

impl EcrRegistry {
    /// Deletes the images of `image`'s tags that `wanted` picks, but none `keep` names.
    async fn delete_tags_where(
        &self,
        image: &str,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        keep: &KeptImages,
    ) -> Result<usize, RegistryError> {
        let tagged = self.client.tagged_images(image).await?;
        // An image another tag still needs stays, whatever else it is tagged with.
        let needed: std::collections::HashSet<&str> = tagged
            .iter()
            .filter(|(tag, digest)| !wanted(tag) || keep.digests.contains(digest))
            .map(|(_, digest)| digest.as_str())
            .collect();
        let mut doomed: Vec<String> = tagged
            .iter()
            .filter(|(tag, digest)| wanted(tag) && !needed.contains(digest.as_str()))
            .map(|(_, digest)| digest.clone())
            .collect();
        doomed.sort();
        doomed.dedup();
        if doomed.is_empty() {
            return Ok(0);
        }
        self.client.delete_images(image, &doomed).await
    }
}

#[async_trait::async_trait]
impl Registry for EcrRegistry {
    async fn destination(&self, image: &str, log: &JobLog) -> Result<Destination, RegistryError> {
        let uri = self.client.ensure_repository(image).await?;
        log.system(format!("ECR repository {uri}"));
        let login = self.client.login().await?;
        let host = self.url.clone().unwrap_or_else(|| login.registry_host.clone());
        let mut auth = login.auth;
        auth.server.clone_from(&host);
        Ok(Destination {
            repository: format!("{host}/{image}"),
            auth: Some(auth),
        })
    }

    async fn prune(&self, image: &str, keep: &KeptImages, _log: &JobLog) -> Result<usize, RegistryError> {
        // Only the runner's own tags (commit SHAs) are candidates.
        let ours =
            |tag: &str| tag.len() == 40 && tag.bytes().all(|b| b.is_ascii_hexdigit()) && !keep.shas.contains(tag);
        self.delete_tags_where(image, &ours, keep).await
    }

    async fn delete_tags(
        &self,
        image: &str,
        prefix: &str,
        keep: &KeptImages,
        _log: &JobLog,
    ) -> Result<usize, RegistryError> {
        self.delete_tags_where(image, &|tag: &str| tag.starts_with(prefix), keep)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_cached_until_shortly_before_expiry_and_never_past_twelve_hours() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let in_12h = now + Duration::from_secs(12 * 3600);
        assert_eq!(cache_until(now, Some(in_12h)), Some(in_12h - REFRESH_MARGIN));
        assert_eq!(
            cache_until(now, Some(now + Duration::from_secs(48 * 3600))),
            Some(in_12h)
        );
        assert_eq!(cache_until(now, None), Some(in_12h));
        assert_eq!(
            cache_until(now, Some(now + Duration::from_secs(60))),
            None,
            "about to expire: not cached"
        );
        assert_eq!(
            cache_until(now, Some(now - Duration::from_secs(60))),
            None,
            "already expired: not cached"
        );
    }
}
