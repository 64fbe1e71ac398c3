//! Gitea's and Forgejo's webhook deliveries (`POST /webhooks/gitea`): their headers and
//! their payloads read into the runner's own [`Incoming`] event.
//!
//! Gitea sends GitHub's headers too (`X-GitHub-Event`, `X-Hub-Signature-256`), and Forgejo
//! sends Gitea's beside its own: a delivery is classified by Forgejo's headers first, then
//! Gitea's, and a body on this route is only ever read as Gitea's format.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::event::{Event, Incoming, PayloadError, PullRequest, Push, read_payload};
use super::github::{HeadCommit, PullRequestField, RepositoryField};
use super::signature::{Signature, SignatureError};
use crate::domain::{DeliveryId, RepoName};

/// The headers one of the two forges names a delivery's parts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub forge: &'static str,
    pub event: &'static str,
    pub delivery: &'static str,
    pub signature: &'static str,
}

pub const FORGEJO: Headers = Headers {
    forge: "Forgejo",
    event: "X-Forgejo-Event",
    delivery: "X-Forgejo-Delivery",
    signature: "X-Forgejo-Signature",
};

pub const GITEA: Headers = Headers {
    forge: "Gitea",
    event: "X-Gitea-Event",
    delivery: "X-Gitea-Delivery",
    signature: "X-Gitea-Signature",
};

/// Which forge's headers the delivery carries: Forgejo's when it has its event header,
/// else Gitea's.
pub fn headers_of(headers: &HeaderMap) -> Headers {
    if headers.contains_key(FORGEJO.event) {
        FORGEJO
    } else {
        GITEA
    }
}

/// The delivery's signature: the HMAC-SHA256 of the raw body, bare hex.
pub fn signature(headers: &HeaderMap, names: Headers) -> Result<Signature, SignatureError> {
    Signature::parse_hex(headers.get(names.signature).map(|v| v.as_bytes()), names.signature)
}

/// The event name and delivery id a (signed) delivery carries in its headers.
pub fn envelope(headers: &HeaderMap, names: Headers) -> Result<(String, DeliveryId), String> {
    let event = super::github::required_header(headers, names.event)?;
    if event.is_empty() || event.len() > 64 || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(format!("{} {event:?} is not a {} event name", names.event, names.forge));
    }
    let delivery_id = DeliveryId::parse(super::github::required_header(headers, names.delivery)?)
        .map_err(|e| format!("{}: {e}", names.delivery))?;
    Ok((event.to_owned(), delivery_id))
}

/// Reads the payload of a delivery of `event` (the `X-Gitea-Event` header).
pub fn parse(event: &str, json_text: &[u8]) -> Result<Incoming, PayloadError> {
    let payload: Payload = read_payload(json_text, FIELDS)?;
    let repository = payload
        .repository
        .as_ref()
        .map(|repo| RepoName::parse(&repo.full_name).map_err(|_| PayloadError::Field("repository.full_name")))
        .transpose()?;
    let event = match event {
        "push" => {
            let head = payload.head_commit.as_ref();
            Event::Push(Push {
                git_ref: payload.git_ref,
                before: payload.before,
                after: payload.after,
                // A deleted branch is a `delete` event; a push never deletes.
                deleted: false,
                message: head.and_then(|c| c.message.clone()),
                author: head.and_then(HeadCommit::author_name),
                // Gitea says when it received the push nowhere in the payload: arrival
                // orders pushes.
                pushed_at: None,
            })
        }
        "pull_request" => Event::PullRequest(PullRequest {
            // Gitea's "synchronized" is GitHub's "synchronize": new commits on the head.
            action: payload.action.map(|action| match action.as_str() {
                "synchronized" => "synchronize".to_owned(),
                _ => action,
            }),
            number: payload.number,
            change: payload.pull_request.map(PullRequestField::into_change),
        }),
        other => Event::Other(other.to_owned()),
    };
    Ok(Incoming { repository, event })
}

const FIELDS: &[&str] = &[
    "repository",
    "pull_request",
    "head_commit",
    "ref",
    "after",
    "number",
    "action",
];

/// Every field the runner reads, from any event, in one typed pass over the body. Gitea
/// writes its repository, head commit and pull request as GitHub does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    repository: Option<RepositoryField>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
    head_commit: Option<HeadCommit>,
    action: Option<String>,
    number: Option<i64>,
    pull_request: Option<PullRequestField>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gitea-webhooks")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    #[test]
    fn giteas_push_names_its_repository_ref_and_commits() {
        let incoming = parse("push", &fixture("push.json")).expect("parses");
        assert_eq!(incoming.repository.expect("a repository").as_str(), "gitea/webhooks");
        let Event::Push(push) = incoming.event else {
            panic!("a push")
        };
        assert_eq!(push.git_ref.as_deref(), Some("refs/heads/develop"));
        assert_eq!(push.after.as_deref(), Some("bffeb74224043ba2feb48d137756c8a9331c449a"));
    }

    #[test]
    fn giteas_synchronized_is_a_new_push_and_a_merged_close_says_so() {
        let Event::PullRequest(synced) = parse("pull_request", &fixture("pull_request.synchronized.json"))
            .expect("parses")
            .event
        else {
            panic!("a pull request")
        };
        assert_eq!(synced.action.as_deref(), Some("synchronize"));
        let Event::PullRequest(merged) = parse("pull_request", &fixture("pull_request.closed.merged.json"))
            .expect("parses")
            .event
        else {
            panic!("a pull request")
        };
        assert_eq!(merged.action.as_deref(), Some("closed"));
        assert!(merged.change.expect("its branches").merged);
    }

    #[test]
    fn forgejos_headers_are_read_before_giteas() {
        let mut headers = HeaderMap::new();
        headers.insert("x-gitea-event", "push".parse().expect("value"));
        assert_eq!(headers_of(&headers), GITEA);
        headers.insert("x-forgejo-event", "push".parse().expect("value"));
        assert_eq!(headers_of(&headers), FORGEJO);
    }
}
