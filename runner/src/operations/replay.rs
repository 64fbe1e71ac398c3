//! Replaying a stored delivery: what it asks for, decided under today's configuration.

use super::{OperationError, Operations};
use crate::config::ForgeKind;
use crate::domain::{DeliveryId, JobId};
use crate::job::Trigger;
use crate::store::deliveries::{self, Action};
use crate::webhook::{event, github};

impl Operations {
    /// Queues again what a stored delivery asks for (trigger `replay`), one job per
    /// environment it feeds; answers the first.
    pub async fn replay(&self, delivery_id: &str) -> Result<JobId, OperationError> {
        let delivery_id = DeliveryId::parse(delivery_id).map_err(|e| OperationError::Invalid(e.to_string()))?;
        let delivery = deliveries::get(&self.store, delivery_id.as_str())
            .await?
            .ok_or_else(|| OperationError::NotFound(format!("delivery {delivery_id} does not exist")))?;
        let (content_type, body) = deliveries::body(&self.store, delivery_id.as_str())
            .await?
            .ok_or_else(|| {
                OperationError::Conflict(format!(
                    "the body of delivery {delivery_id} is no longer kept (see server.delivery_body_retention_days)"
                ))
            })?;
        let json_text = if content_type == "application/x-www-form-urlencoded" {
            github::form_payload(&body)
                .map_err(OperationError::Invalid)?
                .into_bytes()
        } else {
            body
        };
        // Read as the forge of the project it was recorded for wrote it.
        let recorded_for = delivery.project.as_deref().and_then(|name| self.config.project(name));
        let kind = recorded_for.map_or(ForgeKind::GitHub, |p| p.links.kind());
        let parsed = crate::webhook::parse_stored(kind, &delivery.event, &json_text)
            .map_err(|e| OperationError::Conflict(format!("stored body: {e}")))?;
        let project = parsed
            .repository
            .as_ref()
            .and_then(|repository| {
                self.config
                    .projects
                    .iter()
                    .find(|p| p.links.kind() == kind && p.repository.key() == repository.key())
            })
            .ok_or_else(|| {
                OperationError::Conflict(format!("delivery {delivery_id} names no configured repository"))
            })?;
        let now = self.clock.now_ms();
        let (action, _) = event::decide(&parsed, project, delivery_id.as_str(), now)
            .map_err(|e| OperationError::Conflict(format!("stored body: {e}")))?;
        let queued = match action {
            Action::Queue(jobs) if !jobs.is_empty() => jobs,
            _ => {
                return Err(OperationError::Conflict(format!(
                    "delivery {delivery_id} ({} event) queues nothing under the current configuration",
                    delivery.event
                )));
            }
        };
        let mut first = None;
        for mut job in queued {
            job.trigger = Trigger::Replay;
            job.ordering_key = now;
            let job_id = self.enqueue(&job).await?;
            tracing::info!(delivery_id = %delivery_id, job_id = %job_id, environment = %job.environment, "delivery replayed");
            first.get_or_insert(job_id);
        }
        first.ok_or_else(|| OperationError::Internal(anyhow::anyhow!("a replay queued no job")))
    }
}
