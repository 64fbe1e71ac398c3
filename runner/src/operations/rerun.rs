//! Running a job again because its forge asked (GitHub's *Re-run* button on the job's
//! check run): the same commit, kind and environment, under today's configuration.

use super::{OperationError, Operations};
use crate::config::Project;
use crate::domain::JobId;
use crate::job::{JobKind, Trigger};
use crate::store::deliveries::Action;
use crate::store::jobs::{self, NewJob};
use crate::webhook::event::Rerun;

impl Operations {
    /// What a re-run request delivered as `delivery_id` queues: a copy of the job it names
    /// (trigger `replay`), or nothing, with the reason. A deploy is run again only while no
    /// later deploy of its environment is under way or live (that would move it back; a
    /// redeploy of the commit says so explicitly), and a fork's pull request waits for an
    /// admin again.
    pub async fn rerun(&self, project: &Project, request: &Rerun, delivery_id: &str) -> Result<Action, OperationError> {
        let ignore = |reason: String| Ok(Action::Ignore { reason });
        let Some(id) = request
            .job
            .as_deref()
            .and_then(|id| id.parse::<i64>().ok())
            .and_then(|id| JobId::new(id).ok())
        else {
            return ignore("the check run is not one of this runner's jobs".into());
        };
        let Some(job) = jobs::get(&self.store, id)
            .await?
            .filter(|job| job.project == project.name && job.sha.as_str() == request.head_sha)
        else {
            return ignore(format!("job {id} is not a job of {} at this commit", project.name));
        };
        if !job.state.is_terminal() {
            return ignore(format!("job {id} has not ended yet"));
        }
        if job.kind == JobKind::Deploy
            && let Some(later) =
                jobs::later_deploy(&self.store, job.project.as_str(), job.environment.as_str(), id).await?
        {
            return ignore(format!(
                "job {later} deploys {} after job {id}: running {id} again would move it back (redeploy the commit to mean that)",
                job.environment
            ));
        }
        let Some(environment) = project.environment(job.environment.as_str()) else {
            return ignore(format!("{}/{} is no longer configured", job.project, job.environment));
        };
        crate::pipeline::plan::JobPlan::new(project, environment, job.kind, Trigger::Replay)
            .map_err(|missing| OperationError::Conflict(missing.to_string()))?;
        let again = NewJob {
            project: job.project.clone(),
            environment: job.environment.clone(),
            kind: job.kind,
            trigger: Trigger::Replay,
            git_ref: job.git_ref.clone(),
            sha: job.sha.clone(),
            pull_request: job.pull_request,
            delivery_id: Some(delivery_id.to_owned()),
            commit_message: job.commit_message.clone(),
            commit_author: job.commit_author.clone(),
            ordering_key: self.clock.now_ms(),
            rollback_of: job.rollback_of,
            held_for_approval: job.held_for.is_some(),
            base_sha: job.base_sha.clone(),
            base_branch: job.base_branch.clone(),
        };
        tracing::info!(job_id = %id, delivery_id, "the forge asked to run the job again");
        Ok(Action::Queue(vec![again]))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::domain::{CommitSha, GitRef, Name};
    use crate::job::JobState;
    use crate::store::{Store, now_ms};

    async fn operations(dir: &std::path::Path) -> (Operations, Store, Arc<Config>) {
        let toml = format!(
            "[server]\ndatabase_url = \"sqlite://{}\"\n[[projects]]\nname = \"app\"\nrepository = \"o/app\"\n\
             deploy_branches = [\"main\"]\nwebhook_secret_env = \"S\"\n\
             [projects.build]\nimage = \"app\"\n[projects.smoke]\ncontainer_port = 8000\n\
             [projects.registry]\nkind = \"v2\"\nurl = \"registry.test\"\n\
             [projects.rollout]\ntarget = \"local\"\nhost_port = 8080\nslot_ports = [18081, 18082]\n",
            dir.join("runner.db").display()
        );
        let env = |name: &str| (name == "S").then(|| "webhook-secret".to_owned());
        let config = Arc::new(Config::parse(&toml, &dir.join("runner.toml"), &env).expect("config"));
        let store = crate::store::open(&config.server.database_url).await.expect("database");
        let operations = Operations::new(
            Arc::clone(&config),
            store.clone(),
            Arc::new(crate::adapters::forge::ConfiguredForges::new(Arc::clone(&config))),
            Arc::default(),
            Arc::default(),
            crate::joblog::LogEvents::default(),
            Arc::new(crate::clock::SystemClock),
        );
        (operations, store, config)
    }

    fn job(sha: char) -> NewJob {
        NewJob::deploy(
            Name::parse("app").expect("name"),
            Name::parse("production").expect("name"),
            Trigger::Push,
            GitRef::parse("refs/heads/main").expect("ref"),
            CommitSha::parse(&sha.to_string().repeat(40)).expect("sha"),
            now_ms(),
        )
    }

    /// Queues `job`, runs it nowhere, and records it ended in `state`.
    async fn ended(store: &Store, job: &NewJob, state: JobState) -> JobId {
        jobs::enqueue_now(store, job, now_ms()).await.expect("enqueue");
        let claimed = jobs::claim_next(store, "w", Duration::from_secs(60), 3, None, now_ms())
            .await
            .expect("claim")
            .expect("a job");
        jobs::finish(store, claimed.id, "w", state, None, now_ms())
            .await
            .expect("finish");
        claimed.id
    }

    fn request(job: JobId, sha: char) -> Rerun {
        Rerun {
            action: Some("rerequested".into()),
            job: Some(job.to_string()),
            head_sha: sha.to_string().repeat(40),
        }
    }

    fn reason(action: &Action) -> &str {
        match action {
            Action::Ignore { reason } => reason,
            other => panic!("expected nothing queued, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_deploy_runs_again_only_while_no_later_deploy_of_its_environment_is_under_way_or_live() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (operations, store, config) = operations(dir.path()).await;
        let project = &config.projects[0];
        let failed = ended(&store, &job('a'), JobState::Failed).await;

        let again = operations
            .rerun(project, &request(failed, 'a'), "delivery-1")
            .await
            .expect("rerun");
        let Action::Queue(queued) = &again else {
            panic!("expected a job, got {again:?}")
        };
        assert_eq!(queued.len(), 1);
        let copy = &queued[0];
        assert_eq!(
            (copy.kind, copy.trigger, copy.sha.as_str(), copy.environment.as_str()),
            (JobKind::Deploy, Trigger::Replay, "a".repeat(40).as_str(), "production")
        );
        assert_eq!(copy.delivery_id.as_deref(), Some("delivery-1"));

        // Another commit went live since: running the old one again would move it back.
        let later = ended(&store, &job('b'), JobState::Succeeded).await;
        let refused = operations
            .rerun(project, &request(failed, 'a'), "delivery-2")
            .await
            .expect("rerun");
        assert!(
            reason(&refused).contains(&format!("job {later} deploys production after job {failed}")),
            "{refused:?}"
        );
        // The newest deploy itself may run again.
        assert!(matches!(
            operations.rerun(project, &request(later, 'b'), "delivery-3").await,
            Ok(Action::Queue(_))
        ));
    }

    #[tokio::test]
    async fn a_rerun_names_a_job_of_this_project_at_this_commit_that_ended() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (operations, store, config) = operations(dir.path()).await;
        let project = &config.projects[0];
        let done = ended(&store, &job('a'), JobState::Failed).await;
        let queued = jobs::enqueue_now(&store, &job('c'), now_ms()).await.expect("enqueue");
        for (request, expected) in [
            (request(done, 'f'), "is not a job of app at this commit"),
            (request(queued, 'c'), "has not ended yet"),
            (
                Rerun {
                    job: Some(String::new()),
                    ..request(done, 'a')
                },
                "not one of this runner's jobs",
            ),
            (request(JobId::new(4242).expect("id"), 'a'), "is not a job of app"),
        ] {
            let action = operations.rerun(project, &request, "d").await.expect("rerun");
            assert!(reason(&action).contains(expected), "{request:?}: {action:?}");
        }
    }

    #[tokio::test]
    async fn a_forks_pull_request_waits_for_an_admin_again() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (operations, store, config) = operations(dir.path()).await;
        let verify = NewJob::verify(
            Name::parse("app").expect("name"),
            Name::parse("production").expect("name"),
            7,
            GitRef::parse("refs/pull/7/head").expect("ref"),
            CommitSha::parse(&"d".repeat(40)).expect("sha"),
            now_ms(),
        )
        .held(true);
        let held = jobs::enqueue_now(&store, &verify, now_ms()).await.expect("enqueue");
        jobs::cancel(&store, held, now_ms()).await.expect("cancel");
        let job = jobs::get(&store, held).await.expect("get").expect("job");
        assert!(job.state.is_terminal(), "{:?}", job.state);
        let action = operations
            .rerun(&config.projects[0], &request(held, 'd'), "d")
            .await
            .expect("rerun");
        let Action::Queue(queued) = action else {
            panic!("expected a job")
        };
        assert!(queued[0].held_for_approval);
        assert_eq!((queued[0].kind, queued[0].pull_request), (JobKind::Verify, Some(7)));
    }
}
