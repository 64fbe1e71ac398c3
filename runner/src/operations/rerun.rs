//! Running a job again because its forge asked (GitHub's *Re-run* button on the job's
//! check run): the same commit, kind and environment, under today's configuration.

use super::{OperationError, Operations};
use crate::config::Project;
use crate::domain::JobId;
use crate::job::{JobKind, Trigger};
use crate::pipeline::plan::JobPlan;
use crate::store::deliveries::Action;
use crate::store::jobs::{self, NewJob};
use crate::webhook::event::Rerun;

impl Operations {
    /// What a re-run request delivered as `delivery_id` queues: a copy of the job it names
    /// (trigger `replay`, ordered as the job was, so ingest drops it as stale when a later
    /// deploy of its environment is queued, running or live), or nothing, with the reason.
    /// Only this runner's check runs count (its App's, named as the job's status), only
    /// jobs a push or pull request started (an admin's redeploy, rollback or promotion is
    /// run again from the dashboard), only while today's configuration would still run
    /// them; a fork's pull request waits for an admin again.
    pub async fn rerun(&self, project: &Project, request: &Rerun, delivery_id: &str) -> Result<Action, OperationError> {
        let ignore = |reason: String| Ok(Action::Ignore { reason });
        let ours = matches!(
            project.github.as_ref().map(|github| &github.auth),
            Some(crate::config::GitHubAuth::App { app_id, .. }) if request.app_id == Some(*app_id)
        );
        let Some(id) = request
            .job
            .as_deref()
            .and_then(|id| id.parse::<i64>().ok())
            .and_then(|id| JobId::new(id).ok())
            .filter(|_| ours)
        else {
            return ignore("the check run is not one of this runner's".into());
        };
        let Some(job) = jobs::get(&self.store, id)
            .await?
            .filter(|job| job.project == project.name && job.sha.as_str() == request.head_sha)
        else {
            return ignore(format!("job {id} is not a job of {} at this commit", project.name));
        };
        let context = self.config.github.job_context(job.kind, job.environment.as_str());
        if request.name.as_deref() != Some(context.as_str()) {
            return ignore(format!("the check run is not job {id}'s ({context})"));
        }
        if !job.state.is_terminal() {
            return ignore(format!("job {id} has not ended yet"));
        }
        if matches!(job.trigger, Trigger::Redeploy | Trigger::Rollback | Trigger::Promote) {
            return ignore(format!(
                "job {id} was an admin's {}: run it again from the dashboard",
                job.trigger
            ));
        }
        let environment = project
            .environment(job.environment.as_str())
            .filter(|environment| job.kind == JobKind::Verify || environment.deploys_ref(&job.git_ref));
        let Some(environment) = environment else {
            return ignore(format!(
                "{}/{} no longer deploys {}",
                job.project, job.environment, job.git_ref
            ));
        };
        if let Err(missing) = JobPlan::new(project, environment, job.kind, Trigger::Replay) {
            return ignore(missing.to_string());
        }
        let Some(ordering_key) = jobs::ordering_key(&self.store, id).await? else {
            return ignore(format!("job {id} is gone"));
        };
        // Approving a fork's pull request clears its hold; the answer stays on the job.
        let from_fork = job.held_for.is_some() || (job.kind == JobKind::Verify && job.approval.is_some());
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
            ordering_key,
            rollback_of: None,
            held_for_approval: from_fork,
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

    use tokio::sync::Notify;

    use super::*;
    use crate::config::Config;
    use crate::domain::{CommitSha, GitRef, Name};
    use crate::job::JobState;
    use crate::store::deliveries::{NewDelivery, Recorded};
    use crate::store::{Store, now_ms};
    use crate::webhook::ingest::IngestWriter;

    const APP_ID: u64 = 1234;

    /// Project `app` (reporting as GitHub App 1234) and project `other`.
    async fn operations(dir: &std::path::Path) -> (Operations, Store, Arc<Config>) {
        let project = |name: &str, port: u16| {
            format!(
                "[[projects]]\nname = \"{name}\"\nrepository = \"o/{name}\"\ndeploy_branches = [\"main\"]\n\
                 webhook_secret_env = \"S\"\n[projects.build]\nimage = \"{name}\"\n\
                 [projects.smoke]\ncontainer_port = 8000\n[projects.registry]\nkind = \"v2\"\nurl = \"registry.test\"\n\
                 [projects.rollout]\ntarget = \"local\"\nhost_port = {port}\nslot_ports = [{}, {}]\n",
                port + 1,
                port + 2
            )
        };
        let toml = format!(
            "[server]\ndatabase_url = \"sqlite://{}\"\n{}[projects.github]\napp_id = {APP_ID}\nprivate_key_env = \"K\"\n{}",
            dir.join("runner.db").display(),
            project("app", 18080),
            project("other", 18090),
        );
        let env = |name: &str| match name {
            "S" => Some("webhook-secret".to_owned()),
            "K" => Some("-----BEGIN PRIVATE KEY-----\nnot used here\n-----END PRIVATE KEY-----\n".to_owned()),
            _ => None,
        };
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

    fn deploy(project: &str, sha: char, trigger: Trigger, ordering_key: i64) -> NewJob {
        NewJob::deploy(
            Name::parse(project).expect("name"),
            Name::parse("production").expect("name"),
            trigger,
            GitRef::parse("refs/heads/main").expect("ref"),
            CommitSha::parse(&sha.to_string().repeat(40)).expect("sha"),
            ordering_key,
        )
    }

    /// Queues `job`, runs it nowhere, and records it ended in `state`.
    async fn ended(store: &Store, job: &NewJob, state: JobState) -> JobId {
        let id = jobs::enqueue_now(store, job, now_ms()).await.expect("enqueue");
        let claimed = jobs::claim_next(store, "w", Duration::from_secs(60), 3, None, now_ms())
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(claimed.id, id);
        jobs::finish(store, id, "w", state, None, now_ms())
            .await
            .expect("finish");
        id
    }

    fn request(job: JobId, sha: char, kind: &str) -> Rerun {
        Rerun {
            action: Some("rerequested".into()),
            job: Some(job.to_string()),
            head_sha: sha.to_string().repeat(40),
            name: Some(format!("runner/{kind} (production)")),
            app_id: Some(APP_ID),
        }
    }

    fn reason(action: &Action) -> &str {
        match action {
            Action::Ignore { reason } => reason,
            other => panic!("expected nothing queued, got {other:?}"),
        }
    }

    /// What ingest makes of the re-run's action, as the webhook route records it.
    async fn record(store: &Store, delivery: &str, action: Action) -> Recorded {
        let writer = IngestWriter::start(store, Arc::new(Notify::new()))
            .await
            .expect("writer");
        writer
            .record(NewDelivery::push_for_test(delivery, "app"), action)
            .await
            .expect("recorded")
    }

    #[tokio::test]
    async fn a_deploy_runs_again_in_its_place_and_never_moves_its_environment_back() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (operations, store, config) = operations(dir.path()).await;
        let app = &config.projects[0];
        let failed = ended(&store, &deploy("app", 'a', Trigger::Push, 1_000_000), JobState::Failed).await;

        let again = operations
            .rerun(app, &request(failed, 'a', "deploy"), "delivery-1")
            .await
            .expect("rerun");
        let Action::Queue(queued) = &again else {
            panic!("expected a job, got {again:?}")
        };
        let copy = &queued[0];
        assert_eq!(
            (copy.kind, copy.trigger, copy.sha.as_str(), copy.ordering_key),
            (JobKind::Deploy, Trigger::Replay, "a".repeat(40).as_str(), 1_000_000)
        );
        assert_eq!(copy.delivery_id.as_deref(), Some("delivery-1"));
        assert!(matches!(
            record(&store, "delivery-1", again).await,
            Recorded::Queued { .. }
        ));

        // A later push is queued now: the old commit's re-run would move production back.
        jobs::enqueue_now(&store, &deploy("app", 'b', Trigger::Push, 9_000_000), now_ms())
            .await
            .expect("enqueue");
        let again = operations
            .rerun(app, &request(failed, 'a', "deploy"), "delivery-2")
            .await
            .expect("rerun");
        match record(&store, "delivery-2", again).await {
            Recorded::Ignored { reason } => assert!(reason.contains("stale"), "{reason}"),
            other => panic!("expected the re-run dropped as stale, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn only_this_runners_check_run_of_a_job_a_push_started_runs_again() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (operations, store, config) = operations(dir.path()).await;
        let app = &config.projects[0];
        let done = ended(&store, &deploy("app", 'a', Trigger::Push, now_ms()), JobState::Failed).await;
        let redeploy = ended(
            &store,
            &deploy("app", 'a', Trigger::Redeploy, now_ms()),
            JobState::Failed,
        )
        .await;
        let others = ended(&store, &deploy("other", 'a', Trigger::Push, now_ms()), JobState::Failed).await;
        let queued = jobs::enqueue_now(&store, &deploy("app", 'c', Trigger::Push, now_ms()), now_ms())
            .await
            .expect("enqueue");
        for (request, expected) in [
            (request(done, 'f', "deploy"), "is not a job of app at this commit"),
            (request(others, 'a', "deploy"), "is not a job of app at this commit"),
            (request(queued, 'c', "deploy"), "has not ended yet"),
            (request(redeploy, 'a', "deploy"), "was an admin's redeploy"),
            (request(done, 'a', "verify"), "is not job"),
            (
                Rerun {
                    app_id: Some(APP_ID + 1),
                    ..request(done, 'a', "deploy")
                },
                "not one of this runner's",
            ),
            (
                Rerun {
                    job: Some(String::new()),
                    ..request(done, 'a', "deploy")
                },
                "not one of this runner's",
            ),
            (
                request(JobId::new(4242).expect("id"), 'a', "deploy"),
                "is not a job of app",
            ),
        ] {
            let action = operations.rerun(app, &request, "d").await.expect("rerun");
            assert!(reason(&action).contains(expected), "{request:?}: {action:?}");
        }
        assert!(matches!(
            operations.rerun(app, &request(done, 'a', "deploy"), "d").await,
            Ok(Action::Queue(_))
        ));
    }

    #[tokio::test]
    async fn a_forks_pull_request_waits_for_an_admin_again_even_once_approved() {
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
        jobs::approval::decide(
            &store,
            held,
            jobs::approval::Answer::Approve { plan_digest: None },
            now_ms(),
        )
        .await
        .expect("approve");
        let claimed = jobs::claim_next(&store, "w", Duration::from_secs(60), 3, None, now_ms())
            .await
            .expect("claim")
            .expect("the approved job");
        jobs::finish(&store, claimed.id, "w", JobState::Succeeded, None, now_ms())
            .await
            .expect("finish");
        let job = jobs::get(&store, held).await.expect("get").expect("job");
        assert_eq!(job.held_for, None, "approving released the hold");
        let action = operations
            .rerun(&config.projects[0], &request(held, 'd', "verify"), "d")
            .await
            .expect("rerun");
        let Action::Queue(queued) = action else {
            panic!("expected a job")
        };
        assert!(queued[0].held_for_approval, "held again");
        assert_eq!((queued[0].kind, queued[0].pull_request), (JobKind::Verify, Some(7)));
    }
}
