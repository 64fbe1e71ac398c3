//! Any Docker Registry HTTP API v2, with optional basic auth.

use secrecy::{ExposeSecret, SecretString};

use super::{Destination, Registry, RegistryError};
use crate::adapters::engine::RegistryAuth;
use crate::joblog::JobLog;
use crate::store::deployments::KeptImages;

pub struct V2Registry {
    /// `host[:port][/path]`, without a scheme.
    url: String,
    login: Option<(String, SecretString)>,
}

/// Manifest kinds a registry may hold for a pushed image.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

impl V2Registry {
    /// The repository's API base: plain HTTP on loopback (as the engine allows), else HTTPS.
    fn api(&self, image: &str) -> String {
        let host = self.url.split('/').next().unwrap_or_default();
        let loopback = host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
        let path = self.url[host.len()..].trim_matches('/');
        let repository = if path.is_empty() {
            image.to_owned()
        } else {
            format!("{path}/{image}")
        };
        format!("{}://{host}/v2/{repository}", if loopback { "http" } else { "https" })
    }

    fn request(&self, client: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = client.request(method, url);
        match &self.login {
            Some((username, password)) => request.basic_auth(username, Some(password.expose_secret())),
            None => request,
        }
    }

    pub fn new(url: String, username: Option<String>, password: Option<SecretString>) -> Self {
        let login = username.map(|username| (username, password.unwrap_or_else(|| SecretString::from(""))));
        Self { url, login }
    }
}

#[async_trait::async_trait]
impl Registry for V2Registry {
    async fn destination(&self, image: &str, _log: &JobLog) -> Result<Destination, RegistryError> {
        let auth = self.login.as_ref().map(|(username, password)| RegistryAuth {
            username: username.clone(),
            password: password.expose_secret().to_owned(),
            server: self.url.split('/').next().unwrap_or_default().to_owned(),
        });
        Ok(Destination {
            repository: format!("{}/{image}", self.url),
            auth,
        })
    }

    async fn prune(&self, image: &str, keep: &KeptImages, log: &JobLog) -> Result<usize, RegistryError> {
        // Only the runner's own tags (commit SHAs) are candidates.
        let ours =
            |tag: &str| tag.len() == 40 && tag.bytes().all(|b| b.is_ascii_hexdigit()) && !keep.shas.contains(tag);
        self.delete_tags_where(image, &ours, keep, log).await
    }

    async fn delete_tags(
        &self,
        image: &str,
        prefix: &str,
        keep: &KeptImages,
        log: &JobLog,
    ) -> Result<usize, RegistryError> {
        self.delete_tags_where(image, &|tag: &str| tag.starts_with(prefix), keep, log)
            .await
    }
}

impl V2Registry {
    /// Deletes the manifests of `image`'s tags that `wanted` picks, but none `keep` names.
    async fn delete_tags_where(
        &self,
        image: &str,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        keep: &KeptImages,
        log: &JobLog,
    ) -> Result<usize, RegistryError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| RegistryError::unreachable("preparing an HTTP client", e))?;
        let base = self.api(image);
        let listed = self
            .request(&client, reqwest::Method::GET, format!("{base}/tags/list"))
            .send()
            .await
            .map_err(|e| RegistryError::unreachable("listing the registry's tags", e.without_url()))?;
        if !listed.status().is_success() {
            return Ok(0);
        }
        let tags: serde_json::Value = listed
            .json()
            .await
            .map_err(|e| RegistryError::unreachable("reading the registry's tags", e.without_url()))?;
        let mut deleted = 0;
        let picked = tags["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .filter(|t| wanted(t));
        for tag in picked {
            let head = self
                .request(&client, reqwest::Method::HEAD, format!("{base}/manifests/{tag}"))
                .header("accept", MANIFEST_TYPES)
                .send()
                .await
                .map_err(|e| RegistryError::unreachable(format!("asking for {tag}'s manifest"), e.without_url()))?;
            let Some(digest) = head
                .headers()
                .get("docker-content-digest")
                .and_then(|d| d.to_str().ok())
                .map(str::to_owned)
            else {
                continue;
            };
            if keep.digests.contains(&digest) {
                continue;
            }
            let removed = self
                .request(&client, reqwest::Method::DELETE, format!("{base}/manifests/{digest}"))
                .send()
                .await
                .map_err(|e| RegistryError::unreachable(format!("deleting {tag}"), e.without_url()))?;
            match removed.status().as_u16() {
                200..=299 | 404 => deleted += 1,
                405 => {
                    log.system("retention: the registry does not allow deletes; its images are kept");
                    break;
                }
                status => {
                    return Err(RegistryError::Refused {
                        doing: format!("deleting {tag}"),
                        status,
                    });
                }
            }
        }
        Ok(deleted)
    }
}
