//! GitLab's webhook deliveries (`POST /webhooks/gitlab`): its headers and its push, tag
//! push and merge request payloads read into the runner's own [`Incoming`] event.
//!
//! GitLab signs nothing: `X-Gitlab-Token` is the configured secret itself, compared in
//! constant time ([`super::signature::SecretToken`]). A delivery is named by
//! `Idempotency-Key` (GitLab 17.4 on; the same across its retries), else by
//! `X-Gitlab-Event-UUID` (14.8 on).

use axum::http::HeaderMap;
use serde::Deserialize;

use super::event::{Change, Event, Incoming, PayloadError, PullRequest, Push, read_payload};
use super::github::required_header;
use crate::domain::{DeliveryId, RepoName};

pub const TOKEN_HEADER: &str = "X-Gitlab-Token";
pub const EVENT_HEADER: &str = "X-Gitlab-Event";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub const EVENT_UUID_HEADER: &str = "X-Gitlab-Event-UUID";

/// The event name (`Push Hook`, ...) and delivery id a (verified) delivery carries.
pub fn envelope(headers: &HeaderMap) -> Result<(String, DeliveryId), String> {
    let event = required_header(headers, EVENT_HEADER)?;
    if event.is_empty() || event.len() > 64 || !event.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') {
        return Err(format!("{EVENT_HEADER} {event:?} is not a GitLab event name"));
    }
    let (name, id) = match headers.get(IDEMPOTENCY_HEADER) {
        Some(_) => (IDEMPOTENCY_HEADER, required_header(headers, IDEMPOTENCY_HEADER)?),
        None => (
            EVENT_UUID_HEADER,
            required_header(headers, EVENT_UUID_HEADER).map_err(|_| {
                format!(
                    "missing {IDEMPOTENCY_HEADER} and {EVENT_UUID_HEADER} headers (GitLab 14.8 or later sends them)"
                )
            })?,
        ),
    };
    let delivery_id = DeliveryId::parse(id).map_err(|e| format!("{name}: {e}"))?;
    Ok((event.to_owned(), delivery_id))
}

/// The event as the runner records it: `push`, `tag_push`, `merge_request` (the payload's
/// `object_kind`), or `gitlab:` and the header's words for the rest, which a replay then
/// reads as the same event it ignored ([`header_of`]).
pub fn event_name(header: &str) -> String {
    match header {
        "Push Hook" => "push".to_owned(),
        "Tag Push Hook" => "tag_push".to_owned(),
        "Merge Request Hook" => "merge_request".to_owned(),
        other => format!("gitlab:{}", other.to_ascii_lowercase().replace(' ', "_")),
    }
}

/// The `X-Gitlab-Event` header of an event as [`event_name`] records it.
pub fn header_of(recorded: &str) -> &str {
    match recorded {
        "push" => "Push Hook",
        "tag_push" => "Tag Push Hook",
        "merge_request" => "Merge Request Hook",
        other => other,
    }
}

/// Reads the payload of a delivery of `event` (the `X-Gitlab-Event` header).
pub fn parse(event: &str, json_text: &[u8]) -> Result<Incoming, PayloadError> {
    let payload: Payload = read_payload(json_text, FIELDS)?;
    let repository = payload
        .project
        .as_ref()
        .map(|p| {
            RepoName::parse_path(&p.path_with_namespace).map_err(|_| PayloadError::Field("project.path_with_namespace"))
        })
        .transpose()?;
    let event = match event {
        "Push Hook" | "Tag Push Hook" => {
            // The commit the ref points at is the last one listed; GitLab lists at most 20.
            let head = payload
                .commits
                .iter()
                .find(|c| payload.after.as_deref() == Some(c.id.as_str()));
            Event::Push(Push {
                git_ref: payload.git_ref,
                before: payload.before,
                after: payload.after,
                // A deleted ref's `after` is all zeros, which `decide` reads as deleted.
                deleted: false,
                message: head.and_then(|c| c.message.clone()),
                author: head
                    .and_then(|c| c.author.as_ref())
                    .and_then(|a| a.name.clone())
                    .or(payload.user_name),
                pushed_at: None,
            })
        }
        "Merge Request Hook" => {
            let attributes = payload
                .object_attributes
                .ok_or(PayloadError::Field("object_attributes"))?;
            let action = attributes.action.as_deref().and_then(|action| match action {
                "open" => Some("opened"),
                "reopen" => Some("reopened"),
                // New commits on the source branch: GitLab says so with `oldrev`.
                "update" if attributes.oldrev.is_some() => Some("synchronize"),
                "update" => Some("edited"),
                "close" | "merge" => Some("closed"),
                _ => None,
            });
            let action = action.map(str::to_owned).or_else(|| attributes.action.clone());
            let merged = attributes.action.as_deref() == Some("merge") || attributes.state.as_deref() == Some("merged");
            let target = attributes.target.as_ref().map(|t| t.path_with_namespace.clone());
            // Another project's branch is a fork's, whatever its path says.
            let source = match (attributes.source_project_id, attributes.target_project_id) {
                (Some(source), Some(target_id)) if source == target_id => target.clone(),
                _ => Some(attributes.source.as_ref().map_or_else(
                    || "(another project)".to_owned(),
                    |s| format!("{} (a fork)", s.path_with_namespace),
                )),
            };
            Event::PullRequest(PullRequest {
                action,
                number: attributes.iid,
                change: attributes.last_commit.map(|commit| Change {
                    title: attributes.title,
                    author: payload.user.and_then(|u| u.username.or(u.name)),
                    head_sha: commit.id,
                    base_branch: attributes.target_branch.unwrap_or_default(),
                    // The payload does not name the target branch's commit.
                    base_sha: String::new(),
                    head_repository: source,
                    base_repository: target,
                    merged,
                }),
            })
        }
        other => Event::Other(event_name(other)),
    };
    Ok(Incoming { repository, event })
}

const FIELDS: &[&str] = &[
    "project",
    "object_attributes",
    "commits",
    "ref",
    "after",
    "before",
    "iid",
    "last_commit",
    "action",
];

/// Every field the runner reads, from any event, in one typed pass over the body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    project: Option<ProjectField>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
    user_name: Option<String>,
    commits: Vec<Commit>,
    user: Option<User>,
    object_attributes: Option<MergeRequestAttributes>,
}

#[derive(Debug, Deserialize)]
struct ProjectField {
    path_with_namespace: String,
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
    message: Option<String>,
    author: Option<Author>,
}

#[derive(Debug, Deserialize)]
struct Author {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MergeRequestAttributes {
    iid: Option<i64>,
    action: Option<String>,
    state: Option<String>,
    title: Option<String>,
    target_branch: Option<String>,
    source_project_id: Option<i64>,
    target_project_id: Option<i64>,
    source: Option<ProjectField>,
    target: Option<ProjectField>,
    last_commit: Option<LastCommit>,
    /// Present when the update brought new commits.
    oldrev: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LastCommit {
    id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gitlab-webhooks")
            .join(name);
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
            .expect("JSON")
    }

    fn merge_request(edit: impl FnOnce(&mut serde_json::Value)) -> PullRequest {
        let mut body = fixture("merge_request.json");
        edit(&mut body["object_attributes"]);
        let bytes = serde_json::to_vec(&body).expect("serialise");
        match parse("Merge Request Hook", &bytes).expect("parses").event {
            Event::PullRequest(pull_request) => pull_request,
            other => panic!("a merge request, not {other:?}"),
        }
    }

    #[test]
    fn a_push_takes_its_message_from_the_commit_the_ref_points_at() {
        let body = serde_json::to_vec(&fixture("push.json")).expect("serialise");
        let incoming = parse("Push Hook", &body).expect("parses");
        assert_eq!(incoming.repository.expect("a project").as_str(), "mike/diaspora");
        let Event::Push(push) = incoming.event else {
            panic!("a push")
        };
        assert_eq!(push.after.as_deref(), Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"));
        assert!(push.message.is_some_and(|m| m.starts_with("fixed readme")));
        let tag = serde_json::to_vec(&fixture("tag_push.json")).expect("serialise");
        let Event::Push(tag) = parse("Tag Push Hook", &tag).expect("parses").event else {
            panic!("a push")
        };
        assert!(tag.git_ref.is_some_and(|r| r.starts_with("refs/tags/")));
    }

    #[test]
    fn merge_request_actions_read_as_pull_request_actions() {
        let opened = merge_request(|_| {});
        assert_eq!(opened.action.as_deref(), Some("opened"));
        let change = opened.change.expect("its branches");
        assert_eq!(change.head_sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
        assert_eq!(
            change.head_repository, change.base_repository,
            "same project ids: not a fork"
        );
        let pushed = merge_request(|a| {
            a["action"] = "update".into();
            a["oldrev"] = "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327".into();
        });
        assert_eq!(pushed.action.as_deref(), Some("synchronize"));
        assert_eq!(
            merge_request(|a| a["action"] = "update".into()).action.as_deref(),
            Some("edited")
        );
        let merged = merge_request(|a| a["action"] = "merge".into());
        assert_eq!(merged.action.as_deref(), Some("closed"));
        assert!(merged.change.expect("its branches").merged);
        let forked = merge_request(|a| a["source_project_id"] = 99.into())
            .change
            .expect("its branches");
        assert_ne!(
            forked.head_repository, forked.base_repository,
            "another project's branch is a fork's"
        );
    }

    #[test]
    fn a_delivery_is_named_by_its_idempotency_key_first() {
        let mut headers = HeaderMap::new();
        headers.insert("x-gitlab-event", "Push Hook".parse().expect("value"));
        assert!(envelope(&headers).is_err(), "no id: refused");
        headers.insert(
            "x-gitlab-event-uuid",
            "11111111-2222-3333-4444-555555555555".parse().expect("value"),
        );
        assert_eq!(
            envelope(&headers).expect("named").1.as_str(),
            "11111111-2222-3333-4444-555555555555"
        );
        headers.insert(
            "idempotency-key",
            "aaaaaaaa-2222-3333-4444-555555555555".parse().expect("value"),
        );
        assert_eq!(
            envelope(&headers).expect("named").1.as_str(),
            "aaaaaaaa-2222-3333-4444-555555555555"
        );
    }
}
