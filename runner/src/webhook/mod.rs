//! Webhook deliveries: each forge's format read into the runner's own terms
//! ([`event::Incoming`]: [`github`] for GitHub's), their HMAC signatures, the decision of
//! what a delivery triggers, and the durable ingest writer. The HTTP handler is
//! `web::webhook`.

pub mod event;
pub mod github;
pub mod ingest;
pub mod signature;
