//! Webhook deliveries from GitHub: their headers, signature and payloads, read into the
//! runner's own terms (an [`event::Parsed`] event and the job it asks for), and the
//! durable ingest writer. The HTTP handler is `web::webhook`.

pub mod event;
pub mod ingest;
pub mod signature;

pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

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
