//! Rollback and promotion: a deploy job that puts an image that was live before live
//! (again, or in another environment) without rebuilding it.

use super::{OperationError, Operations};
use crate::config::{Environment, Project};
use crate::domain::{CommitSha, GitRef, JobId};
use crate::job::Trigger;
use crate::store::deployments::{self, Deployment};
use crate::store::jobs::{self, NewJob};

impl Operations {
    /// Queues a job that puts exactly this deployment's image digest live again.
    pub async fn rollback(&self, deployment_id: i64) -> Result<JobId, OperationError> {
        let target = deployments::get(&self.store, deployment_id)
            .await?
            .ok_or_else(|| OperationError::NotFound(format!("deployment {deployment_id} does not exist")))?;
        if !matches!(target.status.as_str(), "live" | "replaced") || target.image_digest.is_none() {
            return Err(OperationError::Conflict(format!(
                "deployment {deployment_id} never went live (status {}); only a deployment that was live can be rolled back to",
                target.status
            )));
        }
        let project = self
            .config
            .project(&target.project)
            .ok_or_else(|| OperationError::Conflict(format!("project {} is no longer configured", target.project)))?;
        if !deployments::within_kept(&self.store, &target, project.keep_deployments).await? {
            return Err(OperationError::Conflict(format!(
                "deployment {deployment_id}'s image is no longer kept: each environment keeps the images of its last {} deployments ([projects.retention] keep_deployments)",
                project.keep_deployments
            )));
        }
        let environment = project.environment(&target.environment).ok_or_else(|| {
            OperationError::Conflict(format!(
                "environment {} of project {} is no longer configured",
                target.environment, target.project
            ))
        })?;
        let job = self
            .redelivery(project, environment, &target, Trigger::Rollback)
            .await?;
        let job_id = self.enqueue(&job).await?;
        tracing::info!(deployment = deployment_id, job_id = %job_id, "rollback queued");
        Ok(job_id)
    }

    /// Queues a job that puts exactly the image digest live in `from` live in `to` as
    /// well, without rebuilding it (trigger `promote`). Answers the job and the deployment
    /// it promotes.
    pub async fn promote(&self, project_name: &str, from: &str, to: &str) -> Result<(JobId, i64), OperationError> {
        let project = self
            .config
            .project(project_name)
            .ok_or_else(|| OperationError::NotFound(format!("project {project_name:?} is not configured")))?;
        let environment = |name: &str| {
            project
                .environment(name)
                .ok_or_else(|| OperationError::NotFound(format!("project {project_name} has no environment {name:?}")))
        };
        let (source_environment, target_environment) = (environment(from)?, environment(to)?);
        if source_environment.name == target_environment.name {
            return Err(OperationError::Invalid(format!(
                "promote from one environment to another: both are {from:?}"
            )));
        }
        let source = deployments::live(&self.store, project.name.as_str(), from)
            .await?
            .filter(|d| d.image_digest.is_some())
            .ok_or_else(|| OperationError::Conflict(format!("nothing is live in {project_name}/{from} to promote")))?;
        let job = self
            .redelivery(project, target_environment, &source, Trigger::Promote)
            .await?;
        let job_id = self.enqueue(&job).await?;
        tracing::info!(deployment = source.id, from, to, job_id = %job_id, "promotion queued");
        Ok((job_id, source.id))
    }

    /// A deploy job (`trigger`: rollback or promote) that puts exactly `source`'s image
    /// live in `environment`, under the commit, branch and message of the job that built it.
    async fn redelivery(
        &self,
        project: &Project,
        environment: &Environment,
        source: &Deployment,
        trigger: Trigger,
    ) -> Result<NewJob, OperationError> {
        let built_by = JobId::new(source.job_id).map_err(|e| OperationError::Internal(e.into()))?;
        let original = jobs::get(&self.store, built_by).await?;
        let git_ref = original
            .as_ref()
            .and_then(|j| GitRef::parse(&j.git_ref).ok())
            .unwrap_or_else(|| project.default_branch());
        let sha = CommitSha::parse(&source.sha).map_err(|e| OperationError::Internal(e.into()))?;
        let (message, author) = original.map_or((None, None), |j| (j.commit_message, j.commit_author));
        Ok(NewJob::redelivery(
            project.name.clone(),
            environment.name.clone(),
            trigger,
            git_ref,
            sha,
            source.id,
            self.clock.now_ms(),
        )
        .described(message, author))
    }
}
