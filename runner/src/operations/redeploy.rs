//! Deploying a branch head or a commit again, on an operator's word.

use super::{OperationError, Operations};
use crate::config::Project;
use crate::domain::{CommitSha, GitRef, JobId};
use crate::job::Trigger;
use crate::store::jobs::{self, NewJob};

/// What to deploy again: a branch (resolved to its head now) or an exact commit.
pub enum Revision {
    Ref(String),
    Sha(String),
}

impl Operations {
    /// Deploys a branch head or a commit again (trigger `redeploy`) to `environment`;
    /// without one, to the first environment the branch feeds (a bare commit: the first
    /// environment).
    pub async fn redeploy(
        &self,
        project_name: &str,
        target: Revision,
        environment: Option<&str>,
    ) -> Result<(JobId, CommitSha), OperationError> {
        let project = self
            .config
            .project(project_name)
            .ok_or_else(|| OperationError::NotFound(format!("project {project_name:?} is not configured")))?;
        let named = environment
            .map(|name| {
                project.environment(name).ok_or_else(|| {
                    OperationError::NotFound(format!("project {project_name} has no environment {name:?}"))
                })
            })
            .transpose()?;
        let (git_ref, sha) = match target {
            Revision::Sha(sha) => {
                let sha = CommitSha::parse(&sha).map_err(|e| OperationError::Invalid(e.to_string()))?;
                let branch = named.unwrap_or(project.default_environment()).default_branch().cloned();
                (branch.unwrap_or_else(|| project.default_branch()), sha)
            }
            Revision::Ref(raw) => {
                let git_ref = if raw.starts_with("refs/") {
                    GitRef::parse(&raw)
                } else {
                    GitRef::branch(&raw)
                }
                .map_err(|e| OperationError::Invalid(e.to_string()))?;
                let sha = self.resolve(project, &git_ref).await?;
                (git_ref, sha)
            }
        };
        let environment = named
            .or_else(|| project.environments_for(&git_ref).next())
            .unwrap_or(project.default_environment());
        // Keep what a push told us about this commit, when we have seen it.
        let known = jobs::latest_for_sha(&self.store, project.name.as_str(), sha.as_str()).await?;
        let (message, author) = known.map_or((None, None), |j| (j.commit_message, j.commit_author));
        let job = NewJob::deploy(
            project.name.clone(),
            environment.name.clone(),
            Trigger::Redeploy,
            git_ref,
            sha,
            self.clock.now_ms(),
        )
        .described(message, author);
        let job_id = self.enqueue(&job).await?;
        Ok((job_id, job.sha))
    }

    /// The commit `git_ref` points at now. A branch's is asked of the project's forge (an
    /// API call) when the project has one and clones from it; a tag, a project that clones
    /// from a `clone_url` of its own (which the checkout then reads), and a forge that does
    /// not answer are asked of the repository itself (`git ls-remote`).
    async fn resolve(&self, project: &Project, git_ref: &GitRef) -> Result<CommitSha, OperationError> {
        let unresolved =
            |why: &dyn std::fmt::Display| OperationError::Conflict(format!("cannot resolve {git_ref}: {why}"));
        if let Some(branch) = git_ref.as_str().strip_prefix("refs/heads/")
            && project.clone_url.is_none()
            && let Some(Ok(forge)) = self.forges.connect(project).await
        {
            match forge.branch_head(branch).await {
                Ok(head) => return CommitSha::parse(&head).map_err(|e| unresolved(&e)),
                Err(error) => {
                    tracing::info!(%error, %git_ref, "the forge did not name the branch's head; asking the repository");
                }
            }
        }
        let url = crate::adapters::checkout::clone_url(project);
        crate::adapters::checkout::resolve_ref(&url, git_ref)
            .await
            .map_err(|e| unresolved(&e))
    }
}
