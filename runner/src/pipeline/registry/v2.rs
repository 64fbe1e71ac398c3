//! Any Docker Registry HTTP API v2, with optional basic auth.

use secrecy::{ExposeSecret, SecretString};

use super::{Destination, Registry};
use crate::pipeline::engine::RegistryAuth;
use crate::pipeline::joblog::JobLog;

pub struct V2Registry {
    /// `host[:port][/path]`, without a scheme.
    url: String,
    login: Option<(String, SecretString)>,
}

impl V2Registry {
    pub fn new(url: String, username: Option<String>, password: Option<SecretString>) -> Self {
        let login = username.map(|username| (username, password.unwrap_or_else(|| SecretString::from(""))));
        Self { url, login }
    }
}

#[async_trait::async_trait]
impl Registry for V2Registry {
    async fn destination(&self, image: &str, _log: &JobLog) -> Result<Destination, String> {
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
}
