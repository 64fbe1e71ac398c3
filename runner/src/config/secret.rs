//! Secrets in the config: read from the environment variable (or file) the config names,
//! by the one reader every section uses; printed only as `[redacted]`, or by their names.

use std::collections::BTreeMap;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

use super::{ConfigError, invalid};

/// Where secrets come from while a config is resolved.
#[derive(Clone, Copy)]
pub(super) struct SecretReader<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Relative `*_file` paths are relative to the config file's directory.
    pub base_dir: &'a Path,
}

impl SecretReader<'_> {
    /// The value of the environment variable `var`, which must be set and not empty;
    /// `field` is the config key that named it.
    pub fn env_var(&self, var: &str, field: &str) -> Result<SecretString, ConfigError> {
        match (self.env)(var) {
            None => Err(invalid(field, format!("environment variable {var} is not set"))),
            Some(value) if value.trim().is_empty() => {
                Err(invalid(field, format!("environment variable {var} is empty")))
            }
            Some(value) => Ok(SecretString::from(value)),
        }
    }

    /// The contents of `file` without its trailing line break.
    pub fn file(&self, file: &Path, field: &str) -> Result<SecretString, ConfigError> {
        let path = self.base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
        let value = text.trim_end_matches(['\r', '\n']);
        if value.trim().is_empty() {
            return Err(invalid(field, format!("{} is empty", path.display())));
        }
        Ok(SecretString::from(value.to_owned()))
    }

    /// `<key>_env` or `<key>_file`, at most one of them: `None` when neither is given.
    pub fn env_or_file(
        &self,
        var: Option<&str>,
        file: Option<&Path>,
        key: &str,
    ) -> Result<Option<SecretString>, ConfigError> {
        match (var, file) {
            (Some(var), None) => self.env_var(var, &format!("{key}_env")).map(Some),
            (None, Some(file)) => self.file(file, &format!("{key}_file")).map(Some),
            (Some(_), Some(_)) => Err(invalid(
                format!("{key}_env"),
                format!("set {key}_env or {key}_file, not both"),
            )),
            (None, None) => Ok(None),
        }
    }

    /// `NAME = "ENV_VAR"` pairs: each value from the named environment variable.
    pub fn map(
        &self,
        names: BTreeMap<String, String>,
        field: &str,
    ) -> Result<BTreeMap<String, SecretString>, ConfigError> {
        names
            .into_iter()
            .map(|(name, var)| Ok((name.clone(), self.env_var(&var, &format!("{field}.{name}"))?)))
            .collect()
    }
}

/// A secret as `check-config` prints it.
pub(super) fn redacted<S: Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("[redacted]")
}

pub(super) fn redacted_option<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}

/// A map of secrets as its names only.
pub(super) fn names<S: Serializer>(secrets: &BTreeMap<String, SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(secrets.keys())
}

/// A URL that may carry credentials, with them removed.
pub(super) fn redacted_url<S: Serializer>(url: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(&crate::secrets::redact_url(url.expose_secret())),
        None => serializer.serialize_none(),
    }
}

/// A duration in whole seconds (the unit of every `*_secs` key).
pub(super) fn secs<S: Serializer>(duration: &std::time::Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_secs())
}
