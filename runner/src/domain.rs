//! Values that arrive from outside (payloads, config, URLs), parsed once into types that
//! can only hold valid data. Everything past the parsing edge takes these, not strings.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("commit SHA must be 40 lowercase hex characters, got {0:?}")]
    CommitSha(String),
    #[error("invalid git ref {0:?}: {1}")]
    GitRef(String, &'static str),
    #[error("repository must look like \"owner/name\" (letters, digits, '-', '_', '.'), got {0:?}")]
    RepoName(String),
    #[error("delivery id must be 1-100 characters of letters, digits and '-', got {0:?}")]
    DeliveryId(String),
    #[error("job id must be a positive integer, got {0:?}")]
    JobId(String),
    #[error(
        "name must be 1-63 characters of lowercase letters, digits, '-' and '_', starting with a letter or digit; got {0:?}"
    )]
    Name(String),
    #[error("invalid image reference {0:?}: {1}")]
    ImageRef(String, &'static str),
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        // Stored as text; read back through `parse`, so a value the database holds that
        // does not parse is an error, not a silently wrong value.
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(Self::parse(&text)?)
            }
        }
        // A parsed value reads as the text it was parsed from wherever text is wanted.
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

/// A full 40-character git object id, normalised to lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitSha(String);
string_newtype!(CommitSha);

impl CommitSha {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() == 40 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(ParseError::CommitSha(truncate(raw)))
        }
    }

    /// GitHub uses the all-zero id for "no commit" (a deleted or newly created ref).
    pub fn is_null(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }

    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

/// A fully qualified git ref (`refs/heads/main`, `refs/tags/v1`) that git itself would
/// accept (`git check-ref-format` rules), with no control characters or shell
/// metacharacters that could be misread anywhere downstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRef(String);
string_newtype!(GitRef);

/// What a ref points at, by namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Tag,
    Other,
}

pub const MAX_REF_LEN: usize = 255;

impl GitRef {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let fail = |why| Err(ParseError::GitRef(truncate(raw), why));
        if raw.is_empty() {
            return fail("empty");
        }
        if raw.len() > MAX_REF_LEN {
            return fail("longer than 255 bytes");
        }
        if !raw.starts_with("refs/") {
            return fail("not a fully qualified ref (refs/...)");
        }
        if raw.ends_with('/') || raw.ends_with('.') || raw.ends_with(".lock") {
            return fail("ends with '/', '.' or '.lock'");
        }
        if raw.contains("..") || raw.contains("//") || raw.contains("@{") || raw.contains("/.") {
            return fail("contains '..', '//', '@{' or a component starting with '.'");
        }
        for c in raw.chars() {
            let forbidden_by_git = c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\');
            let shell_meta = matches!(
                c,
                '$' | '`' | '(' | ')' | ';' | '|' | '&' | '<' | '>' | '"' | '\'' | '!' | '{' | '}'
            );
            if forbidden_by_git || shell_meta {
                return fail("contains a character git or a shell would misread");
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn branch(name: &str) -> Result<Self, ParseError> {
        Self::parse(&format!("refs/heads/{name}"))
    }

    pub fn kind(&self) -> RefKind {
        if self.0.starts_with("refs/heads/") {
            RefKind::Branch
        } else if self.0.starts_with("refs/tags/") {
            RefKind::Tag
        } else {
            RefKind::Other
        }
    }

    /// The branch or tag name without its `refs/heads/` or `refs/tags/` prefix.
    pub fn short_name(&self) -> &str {
        self.0
            .strip_prefix("refs/heads/")
            .or_else(|| self.0.strip_prefix("refs/tags/"))
            .unwrap_or(&self.0)
    }
}

/// A GitHub repository full name, `owner/name`, compared case-insensitively as GitHub does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName(String);
string_newtype!(RepoName);

impl RepoName {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let valid_part = |part: &str| {
            !part.is_empty()
                && part.len() <= 100
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match raw.split_once('/') {
            Some((owner, name)) if valid_part(owner) && valid_part(name) => Ok(Self(raw.to_owned())),
            _ => Err(ParseError::RepoName(truncate(raw))),
        }
    }

    /// A GitLab project's path: `namespace/project`, where the namespace may be nested
    /// groups (`group/subgroup/project`, at most 20 levels deep, as GitLab allows).
    pub fn parse_path(raw: &str) -> Result<Self, ParseError> {
        let parts: Vec<&str> = raw.split('/').collect();
        let valid = (2..=21).contains(&parts.len())
            && raw.len() <= 255
            && parts.iter().all(|part| {
                !part.is_empty()
                    && part.len() <= 100
                    && *part != "."
                    && *part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::RepoName(truncate(raw)))
        }
    }

    /// The lookup key: GitHub treats `Owner/Repo` and `owner/repo` as the same repository.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// GitHub's `X-GitHub-Delivery` id (a UUID today; we accept any short token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryId(String);
string_newtype!(DeliveryId);

impl DeliveryId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if !raw.is_empty() && raw.len() <= 100 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::DeliveryId(truncate(raw)))
        }
    }
}

/// A project or environment name: used in URLs, container names and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);
string_newtype!(Name);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if is_plain_name(raw, 63) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::Name(truncate(raw)))
        }
    }
}

/// 1 to `max_len` lowercase letters, digits, `-` and `_`, starting with a letter or a
/// digit: a name that is safe as it is in container names, labels, URLs and status
/// contexts (a project's, an environment's, a pipeline step's).
pub fn is_plain_name(raw: &str, max_len: usize) -> bool {
    let bytes = raw.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max_len
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A job's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobId(i64);

impl JobId {
    pub fn new(raw: i64) -> Result<Self, ParseError> {
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err(ParseError::JobId(raw.to_string()))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::str::FromStr for JobId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>()
            .ok()
            .and_then(|raw| Self::new(raw).ok())
            .ok_or_else(|| ParseError::JobId(truncate(s)))
    }
}

/// A number (JSON) or its decimal text (a URL's path or query), made a `JobId` by
/// [`JobId::new`]: anything but a positive integer fails with its [`ParseError`].
impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JobIdVisitor;

        impl de::Visitor<'_> for JobIdVisitor {
            type Value = JobId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job id (a positive integer)")
            }

            fn visit_i64<E: de::Error>(self, raw: i64) -> Result<JobId, E> {
                JobId::new(raw).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, raw: u64) -> Result<JobId, E> {
                let raw = i64::try_from(raw).map_err(|_| E::custom(ParseError::JobId(raw.to_string())))?;
                self.visit_i64(raw)
            }

            fn visit_str<E: de::Error>(self, raw: &str) -> Result<JobId, E> {
                raw.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(JobIdVisitor)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A container image reference: `[registry[:port]/]path[:tag][@sha256:digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef(String);
string_newtype!(ImageRef);

impl ImageRef {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let fail = |why| Err(ParseError::ImageRef(truncate(raw), why));
        if raw.is_empty() || raw.len() > 512 {
            return fail("must be 1-512 characters");
        }
        let (name_and_tag, digest) = match raw.split_once('@') {
            Some((head, digest)) => (head, Some(digest)),
            None => (raw, None),
        };
        if let Some(digest) = digest {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return fail("digest must be sha256:<64 hex>");
            }
        }
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].find(':') {
            Some(i) => (
                &name_and_tag[..last_slash + i],
                Some(&name_and_tag[last_slash + i + 1..]),
            ),
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                && !tag.starts_with(['.', '-']);
            if !ok {
                return fail("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
            }
        }
        let mut components = name.split('/').peekable();
        let mut first = true;
        while let Some(component) = components.next() {
            let is_registry =
                first && components.peek().is_some() && (component.contains(['.', ':']) || component == "localhost");
            first = false;
            let ok = if is_registry {
                component
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
            } else {
                !component.is_empty()
                    && component
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            };
            if !ok {
                return fail("repository path must be lowercase letters, digits and separators");
            }
        }
        Ok(Self(raw.to_owned()))
    }
}

/// Whether `url` is a web address (`http:` or `https:`) and so may become a link. A URL
/// from outside (a terraform output, a target's answer) could be `javascript:` or `data:`:
/// such a one is shown as text, never followed.
pub fn is_web_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && rest.starts_with("//")
        && !url.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn truncate(raw: &str) -> String {
    const LIMIT: usize = 120;
    if raw.len() <= LIMIT {
        raw.to_owned()
    } else {
        let mut end = LIMIT;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &raw[..end])
    }
}

/// RFC 3339 UTC for a Unix-millisecond timestamp.
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// How long from `start` to `end`: "1m 05s", "3.2s"; empty while running (no end),
/// `None` before the start.
pub fn took(start: Option<i64>, end: Option<i64>) -> Option<String> {
    let start = start?;
    let Some(end) = end else {
        return Some(String::new());
    };
    let ms = (end - start).max(0);
    let secs = ms / 1000;
    Some(if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}.{}s", secs, (ms % 1000) / 100)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_http_and_https_urls_are_web_urls() {
        for url in ["http://app.example", "HTTPS://app.example/x?y=1"] {
            assert!(super::is_web_url(url), "{url}");
        }
        for url in [
            "javascript:alert(1)",
            "JavaScript://%0aalert(1)",
            "data:text/html,<script>",
            " https://app.example",
            "java\tscript:alert(1)",
            "https:app.example",
            "/relative",
            "",
        ] {
            assert!(!super::is_web_url(url), "{url}");
        }
    }

    use super::*;

    #[test]
    fn commit_sha_is_exactly_forty_hex() {
        let sha = CommitSha::parse("6113728F27AE82C7B1A177C8D03F9E96E0ADF246").expect("valid");
        assert_eq!(sha.as_str(), "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
        assert_eq!(sha.short(), "6113728");
        assert!(CommitSha::parse("6113728").is_err());
        assert!(CommitSha::parse("g113728f27ae82c7b1a177c8d03f9e96e0adf246").is_err());
        assert!(CommitSha::parse(&"0".repeat(40)).expect("zeros parse").is_null());
    }

    #[test]
    fn git_refs_follow_git_rules_and_refuse_shell_metacharacters() {
        for ok in [
            "refs/heads/main",
            "refs/heads/feature/x-1.2",
            "refs/tags/v1.0.0",
            "refs/heads/ünïcode",
        ] {
            assert!(GitRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "main",
            "refs/heads/$(rm -rf ~)",
            "refs/heads/`id`",
            "refs/heads/a;b",
            "refs/heads/a b",
            "refs/heads/a..b",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/x/",
            "refs/heads/a\u{7}b",
            "refs/heads/a\nb",
            "refs/heads/@{-1}",
            &format!("refs/heads/{}", "a".repeat(300)),
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad:?}");
        }
        let tag = GitRef::parse("refs/tags/v1").expect("tag");
        assert_eq!((tag.kind(), tag.short_name()), (RefKind::Tag, "v1"));
    }

    #[test]
    fn repo_names_are_owner_slash_name() {
        assert!(RepoName::parse("Codertocat/Hello-World").is_ok());
        assert_eq!(
            RepoName::parse("Codertocat/Hello-World").expect("ok").key(),
            "codertocat/hello-world"
        );
        for bad in ["", "owner", "owner/", "/name", "a/b/c", "a/..", "a/b c", "a/b;rm"] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_delivery_ids() {
        assert!(Name::parse("hello-world_2").is_ok());
        assert!(Name::parse("Hello").is_err());
        assert!(Name::parse("-x").is_err());
        assert!(DeliveryId::parse("72d3162e-cc78-11e3-81ab-4c9367dc0958").is_ok());
        assert!(DeliveryId::parse("../../etc").is_err());
        assert!(DeliveryId::parse("").is_err());
    }

    #[test]
    fn image_refs() {
        for ok in [
            "webapp",
            "127.0.0.1:5000/webapp:abc",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v1",
            "localhost/a/b",
            &format!("r.io/web@sha256:{}", "a".repeat(64)),
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web", "web:", "web:-x", "web@sha256:12", "a//b", "web:$(id)"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_job_id_deserializes_from_a_positive_number_or_its_text_only() {
        let id = |json: &str| serde_json::from_str::<JobId>(json).map_err(|e| e.to_string());
        assert_eq!(id("7"), Ok(JobId(7)));
        assert_eq!(id("\"7\""), Ok(JobId(7)));
        for bad in ["0", "-3", "\"0\"", "\"abc\"", "\"7 \"", "18446744073709551615"] {
            let error = id(bad).expect_err(bad);
            assert!(
                error.starts_with("job id must be a positive integer, got"),
                "{bad}: {error}"
            );
        }
        assert!(id("1.5").is_err());
        assert!(id("null").is_err());
    }

    #[test]
    fn long_hostile_input_is_truncated_in_errors() {
        let long = "é".repeat(500);
        let message = CommitSha::parse(&long).expect_err("invalid").to_string();
        assert!(message.len() < 300);
    }
}
