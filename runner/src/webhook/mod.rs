//! Webhook deliveries: each forge's format read into the runner's own terms
//! ([`event::Incoming`]: [`github`] for GitHub's), their HMAC signatures, the decision of
//! what a delivery triggers, and the durable ingest writer. The HTTP handler is
//! `web::webhook`.

pub mod event;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod ingest;
pub mod signature;

use crate::config::ForgeKind;

/// Reads a stored delivery's JSON body as the forge of `kind` wrote it; `event` is the
/// event as recorded on the delivery.
pub fn parse_stored(kind: ForgeKind, event: &str, json_text: &[u8]) -> Result<event::Incoming, event::PayloadError> {
    match kind {
        ForgeKind::GitHub => github::parse(event, json_text),
        ForgeKind::Gitea | ForgeKind::Forgejo => gitea::parse(event, json_text),
        ForgeKind::GitLab => gitlab::parse(gitlab::header_of(event), json_text),
    }
}
