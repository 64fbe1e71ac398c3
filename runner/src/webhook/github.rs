//! GitHub's webhook deliveries: its headers, its form encoding, and its payloads read
//! into the runner's own [`Incoming`] event, as far as the runner needs them. Another
//! forge's deliveries would be a file like this one, and a route of their own.

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::Deserialize;

use super::event::{Change, Event, Incoming, PayloadError, PullRequest, Push, Rerun};
use super::signature::{Signature, SignatureError};
use crate::domain::{DeliveryId, RepoName};

pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The signature GitHub put on the delivery (`X-Hub-Signature-256`).
pub fn signature(headers: &HeaderMap) -> Result<Signature, SignatureError> {
    Signature::parse(headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()))
}

/// The event name and delivery id a (signed) delivery carries in its headers.
pub fn envelope(headers: &HeaderMap) -> Result<(String, DeliveryId), String> {
    let event = required_header(headers, EVENT_HEADER)?;
    if event.is_empty() || event.len() > 64 || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(format!("{EVENT_HEADER} {event:?} is not a GitHub event name"));
    }
    let delivery_id =
        DeliveryId::parse(required_header(headers, DELIVERY_HEADER)?).map_err(|e| format!("{DELIVERY_HEADER}: {e}"))?;
    Ok((event.to_owned(), delivery_id))
}

/// The payload's JSON text, in either of GitHub's encodings, and the content type it came
/// in (kept with the delivery, for a replay).
pub fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<(String, Bytes), String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json_text = match content_type.as_str() {
        "application/json" => body.clone(),
        "application/x-www-form-urlencoded" => Bytes::from(form_payload(body)?),
        "" => {
            return Err(
                "missing Content-Type; GitHub sends application/json or application/x-www-form-urlencoded".into(),
            );
        }
        other => {
            return Err(format!(
                "unsupported Content-Type {other:?}; set the webhook to application/json or application/x-www-form-urlencoded"
            ));
        }
    };
    Ok((content_type, json_text))
}

pub(super) fn required_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, String> {
    headers
        .get(name)
        .ok_or_else(|| format!("missing {name} header"))?
        .to_str()
        .map_err(|_| format!("{name} header is not visible ASCII"))
}

/// GitHub's form encoding puts the JSON in a single `payload` field.
pub fn form_payload(body: &[u8]) -> Result<String, String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| format!("form body is not valid application/x-www-form-urlencoded: {e}"))?;
    fields
        .into_iter()
        .find(|(name, _)| name == "payload")
        .map(|(_, value)| value)
        .ok_or_else(|| "form body has no payload field".to_owned())
}

/// Reads the payload of a delivery of `event` (the `X-GitHub-Event` header).
pub fn parse(event: &str, json_text: &[u8]) -> Result<Incoming, PayloadError> {
    let payload: Payload = serde_json::from_slice(json_text).map_err(|e| {
        if e.is_data() {
            describe_data_error(json_text, &e)
        } else {
            PayloadError::Json(e.to_string())
        }
    })?;
    let repository = payload
        .repository
        .as_ref()
        .map(|repo| RepoName::parse(&repo.full_name).map_err(|_| PayloadError::Field("repository.full_name")))
        .transpose()?;
    let event = match event {
        "ping" => Event::Ping {
            hook_id: payload.hook_id,
        },
        "push" => {
            let head = payload.head_commit.as_ref();
            Event::Push(Push {
                git_ref: payload.git_ref,
                before: payload.before,
                after: payload.after,
                deleted: payload.deleted,
                message: head.and_then(|c| c.message.clone()),
                author: head.and_then(HeadCommit::author_name),
                pushed_at: payload
                    .repository
                    .as_ref()
                    .and_then(|r| r.pushed_at.as_ref())
                    .and_then(serde_json::Value::as_i64),
            })
        }
        "pull_request" => Event::PullRequest(PullRequest {
            action: payload.action,
            number: payload.number,
            change: payload.pull_request.map(PullRequestField::into_change),
        }),
        "check_run" => {
            let check_run = payload.check_run.ok_or(PayloadError::Field("check_run"))?;
            Event::Rerun(Rerun {
                action: payload.action,
                job: check_run.external_id,
                head_sha: check_run.head_sha,
                name: check_run.name,
                app_id: check_run.app.and_then(|app| app.id),
            })
        }
        other => Event::Other(other.to_owned()),
    };
    Ok(Incoming { repository, event })
}

/// Every field the runner reads, from any event, in one typed pass over the body
/// (unknown fields are skipped without being built into a tree).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    repository: Option<RepositoryField>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
    deleted: bool,
    head_commit: Option<HeadCommit>,
    action: Option<String>,
    number: Option<i64>,
    pull_request: Option<PullRequestField>,
    hook_id: Option<i64>,
    check_run: Option<CheckRunField>,
}

#[derive(Debug, Deserialize)]
struct CheckRunField {
    head_sha: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    app: Option<AppField>,
}

#[derive(Debug, Deserialize)]
struct AppField {
    id: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RepositoryField {
    pub(super) full_name: String,
    /// Integer seconds on push payloads, a timestamp string elsewhere.
    #[serde(default)]
    pushed_at: Option<serde_json::Value>,
}

/// A push's head commit, as GitHub and Gitea both write it.
#[derive(Debug, Deserialize)]
pub(super) struct HeadCommit {
    pub(super) message: Option<String>,
    author: Option<Person>,
}

impl HeadCommit {
    pub(super) fn author_name(&self) -> Option<String> {
        let author = self.author.as_ref()?;
        author.name.clone().or_else(|| author.username.clone())
    }
}

#[derive(Debug, Deserialize)]
struct Person {
    name: Option<String>,
    username: Option<String>,
}

/// A pull request, as GitHub and Gitea both write it.
#[derive(Debug, Deserialize)]
pub(super) struct PullRequestField {
    title: Option<String>,
    user: Option<Login>,
    head: Branch,
    base: Branch,
    #[serde(default)]
    merged: Option<bool>,
}

impl PullRequestField {
    pub(super) fn into_change(self) -> Change {
        Change {
            title: self.title,
            author: self.user.and_then(|u| u.login),
            head_sha: self.head.sha,
            base_branch: self.base.name,
            base_sha: self.base.sha,
            head_repository: self.head.repo.map(|r| r.full_name),
            base_repository: self.base.repo.map(|r| r.full_name),
            merged: self.merged.unwrap_or(false),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Login {
    login: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
    /// The repository the branch lives in; `null` when a fork was deleted.
    #[serde(default)]
    repo: Option<BranchRepository>,
}

#[derive(Debug, Deserialize)]
struct BranchRepository {
    full_name: String,
}

/// Valid JSON of the wrong shape: say whether it is not an object or which field is off.
fn describe_data_error(json_text: &[u8], error: &serde_json::Error) -> PayloadError {
    super::event::describe_data_error(
        json_text,
        error,
        &[
            "repository",
            "pull_request",
            "head_commit",
            "ref",
            "after",
            "number",
            "action",
            "hook_id",
            "check_run",
        ],
    )
}
