//! Operations on a job that exists: cancelling it, answering what it waits for.

use super::{OperationError, Operations};
use crate::domain::JobId;
use crate::store::jobs::approval::{self, Answer, Decision};
use crate::store::jobs::{self, CancelOutcome};

impl Operations {
    /// Cancels a queued or waiting job at once; asks a running one's worker to stop.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, OperationError> {
        let outcome = jobs::cancel(&self.store, id, self.clock.now_ms()).await?;
        match outcome {
            CancelOutcome::NotFound => Err(OperationError::NotFound(format!("job {id} does not exist"))),
            CancelOutcome::AlreadyFinished => Err(OperationError::Conflict(format!("job {id} has already finished"))),
            CancelOutcome::Cancelled => {
                // A job waiting for approval is held by a worker, which stops waiting now.
                self.cancellations.cancel(id);
                self.log_events.stored(id);
                Ok(outcome)
            }
            CancelOutcome::Requested => {
                self.cancellations.cancel(id);
                Ok(outcome)
            }
        }
    }

    /// Approves or rejects what a job waits for: running at all (a fork's pull request),
    /// or applying its plan. Approving a plan takes the digest of the plan the approver read.
    pub async fn decide(&self, id: JobId, answer: Answer<'_>) -> Result<(), OperationError> {
        let approved = matches!(answer, Answer::Approve { .. });
        match approval::decide(&self.store, id, answer, self.clock.now_ms()).await? {
            Decision::Released => {
                tracing::info!(job_id = %id, approved, "held pull request job answered");
                if approved {
                    self.job_queued.notify_one();
                }
                self.log_events.stored(id);
                Ok(())
            }
            Decision::Recorded => {
                tracing::info!(job_id = %id, approved, "plan decision recorded");
                self.log_events.stored(id);
                Ok(())
            }
            Decision::NotWaiting => Err(OperationError::Conflict(format!(
                "job {id} is not waiting for approval (or was already answered)"
            ))),
            Decision::NotFound => Err(OperationError::NotFound(format!("job {id} does not exist"))),
            Decision::PlanDigestMissing => Err(OperationError::Invalid(format!(
                "plan_digest is required to approve job {id}'s plan: send the plan_digest of the plan you read \
                 (GET /api/jobs/{id} shows it, GET /api/jobs/{id}/plan sends it as X-Plan-Digest)"
            ))),
            Decision::PlanChanged => {
                tracing::warn!(job_id = %id, "approval of a plan that was planned again since it was read");
                Err(OperationError::Conflict("the plan changed, read it again".into()))
            }
            Decision::NoPlan => Err(OperationError::Conflict(format!(
                "job {id} waits on a plan whose text was not kept, so nobody can have read it: reject or cancel it"
            ))),
        }
    }
}
