//! What a delivery triggers, from real GitHub bodies (tests/fixtures/github-webhooks),
//! changed where a case needs another branch, repository or action.

use std::path::Path;

use serde_json::Value;

use super::{Facts, decide};
use crate::config::{Config, Project};
use crate::job::{JobKind, Trigger};
use crate::store::deliveries::Action;
use crate::store::jobs::NewJob;

const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
const NOW: i64 = 1_700_000_000_000;
/// The commit `push.with-no-username-committer.payload.json` pushed to master.
const PUSHED: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
/// The head of the pull request in the `pull_request.*` bodies.
const PR_HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

/// Codertocat/Hello-World deployed from master, with `settings` added to the project.
fn project(settings: &str) -> Project {
    let toml = format!(
        r#"
[[projects]]
name = "hello"
repository = "Codertocat/Hello-World"
webhook_secret_env = "HELLO_SECRET"
{settings}
"#
    );
    let env = |name: &str| (name == "HELLO_SECRET").then(|| "s3cret".to_owned());
    let config = Config::parse(&toml, Path::new("runner.toml"), &env).expect("valid config");
    config.projects.into_iter().next().expect("one project")
}

fn deployed_from_master() -> Project {
    project(r#"deploy_branches = ["master"]"#)
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github-webhooks")
        .join(name);
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&body).expect("fixture is JSON")
}

/// What `project` decides on a delivery of `event` with this body, read as the webhook
/// reads it.
fn decision(event: &str, body: &Value, project: &Project) -> (Action, Facts) {
    let body = serde_json::to_vec(body).expect("serialise");
    let incoming = crate::webhook::github::parse(event, &body).expect("a valid payload");
    decide(&incoming, project, DELIVERY, NOW).expect("a decision")
}

fn queued(action: Action) -> Vec<NewJob> {
    match action {
        Action::Queue(jobs) => jobs,
        other => panic!("expected jobs to be queued, got {other:?}"),
    }
}

fn ignored(action: Action) -> String {
    match action {
        Action::Ignore { reason } => reason,
        other => panic!("expected the delivery to be ignored, got {other:?}"),
    }
}

fn push_to(git_ref: &str) -> Value {
    let mut push = fixture("push.with-no-username-committer.payload.json");
    push["ref"] = git_ref.into();
    push
}

fn pull_request(action: &str) -> Value {
    let mut body = fixture("pull_request.opened.payload.json");
    body["action"] = action.into();
    body
}

fn from_fork(mut body: Value) -> Value {
    body["pull_request"]["head"]["repo"]["full_name"] = "stranger/Hello-World".into();
    body
}

#[test]
fn a_push_to_a_deploy_branch_queues_a_deploy_of_the_pushed_commit() {
    let (action, facts) = decision("push", &push_to("refs/heads/master"), &deployed_from_master());
    let jobs = queued(action);
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.project.as_str(), "hello");
    assert_eq!(job.environment.as_str(), "production");
    assert_eq!(job.kind, JobKind::Deploy);
    assert_eq!(job.trigger, Trigger::Push);
    assert_eq!(job.git_ref.as_str(), "refs/heads/master");
    assert_eq!(job.sha.as_str(), PUSHED);
    assert_eq!(job.pull_request, None);
    assert_eq!(job.delivery_id.as_deref(), Some(DELIVERY));
    assert_eq!(job.commit_message.as_deref(), Some("Initial commit"));
    assert_eq!(job.commit_author.as_deref(), Some("Codertocat"));
    assert!(!job.held_for_approval);
    // Ordered by GitHub's push time (seconds), not by when it arrived.
    assert_eq!(job.ordering_key, 1_557_933_657_000);
    assert_eq!(facts.git_ref.as_deref(), Some("refs/heads/master"));
    assert_eq!(facts.sha.as_deref(), Some(PUSHED));
}

#[test]
fn a_push_queues_one_deploy_per_environment_its_branch_feeds() {
    let project = project(
        r#"
[[projects.environments]]
name = "staging"
branches = ["master"]
[[projects.environments]]
name = "production"
branches = ["master", "release"]
"#,
    );
    let jobs = queued(decision("push", &push_to("refs/heads/master"), &project).0);
    let environments: Vec<&str> = jobs.iter().map(|j| j.environment.as_str()).collect();
    assert_eq!(environments, ["staging", "production"]);
    let jobs = queued(decision("push", &push_to("refs/heads/release"), &project).0);
    let environments: Vec<&str> = jobs.iter().map(|j| j.environment.as_str()).collect();
    assert_eq!(environments, ["production"]);
}

#[test]
fn a_push_to_another_branch_is_ignored_and_says_why() {
    let (action, facts) = decision("push", &push_to("refs/heads/feature/x"), &deployed_from_master());
    assert_eq!(ignored(action), "branch feature/x is not a deploy branch of hello");
    // The delivery still records what was pushed where.
    assert_eq!(facts.git_ref.as_deref(), Some("refs/heads/feature/x"));
    assert_eq!(facts.sha.as_deref(), Some(PUSHED));
}

#[test]
fn a_tag_is_deployed_only_where_tags_are() {
    let tag = push_to("refs/tags/v1.0.0");
    let reason = ignored(decision("push", &tag, &deployed_from_master()).0);
    assert_eq!(reason, "tag push v1.0.0 (tags are not deployed for hello)");

    let with_tags = project("deploy_branches = [\"master\"]\ndeploy_tags = true");
    let jobs = queued(decision("push", &tag, &with_tags).0);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].git_ref.as_str(), "refs/tags/v1.0.0");
    assert_eq!(jobs[0].kind, JobKind::Deploy);
}

#[test]
fn a_deleted_branch_or_tag_deploys_nothing() {
    let mut deleted = push_to("refs/heads/master");
    deleted["deleted"] = true.into();
    deleted["after"] = "0".repeat(40).into();
    let (action, facts) = decision("push", &deleted, &deployed_from_master());
    assert_eq!(ignored(action), "master was deleted");
    assert_eq!(facts.sha.as_deref(), Some("0".repeat(40).as_str()));

    // GitHub's own body of a deleted tag, even where tags are deployed.
    let with_tags = project("deploy_branches = [\"master\"]\ndeploy_tags = true");
    let reason = ignored(decision("push", &fixture("push.payload.json"), &with_tags).0);
    assert_eq!(reason, "simple-tag was deleted");
}

#[test]
fn a_push_to_a_ref_that_is_neither_branch_nor_tag_is_ignored() {
    let reason = ignored(decision("push", &push_to("refs/notes/commits"), &deployed_from_master()).0);
    assert_eq!(reason, "ref refs/notes/commits is neither a branch nor a tag");
    let reason = ignored(decision("push", &push_to("master"), &deployed_from_master()).0);
    assert_eq!(reason, "ref \"master\" is not a deploy branch");
}

#[test]
fn a_push_without_a_valid_commit_is_a_bad_payload() {
    let mut push = push_to("refs/heads/master");
    push["after"] = "not-a-sha".into();
    let body = serde_json::to_vec(&push).expect("serialise");
    let incoming = crate::webhook::github::parse("push", &body).expect("parses");
    let error = decide(&incoming, &deployed_from_master(), DELIVERY, NOW).expect_err("refused");
    assert_eq!(error.to_string(), "payload is missing or has an invalid after");
}

#[test]
fn an_opened_or_synchronized_pull_request_is_verified_against_its_base_environment() {
    for (event_body, action) in [
        (fixture("pull_request.opened.payload.json"), "opened"),
        (fixture("pull_request.synchronize.payload.json"), "synchronize"),
        (pull_request("reopened"), "reopened"),
    ] {
        let (decided, facts) = decision("pull_request", &event_body, &deployed_from_master());
        let jobs = queued(decided);
        assert_eq!(jobs.len(), 1, "{action}");
        let job = &jobs[0];
        assert_eq!(job.kind, JobKind::Verify, "{action}");
        assert_eq!(job.trigger, Trigger::PullRequest, "{action}");
        assert_eq!(job.environment.as_str(), "production", "{action}");
        assert_eq!(job.git_ref.as_str(), "refs/pull/2/head", "{action}");
        assert_eq!(job.sha.as_str(), PR_HEAD, "{action}");
        assert_eq!(job.pull_request, Some(2), "{action}");
        assert_eq!(
            job.commit_message.as_deref(),
            Some("Update the README with new information."),
            "{action}"
        );
        assert_eq!(job.commit_author.as_deref(), Some("Codertocat"), "{action}");
        assert_eq!(job.ordering_key, NOW, "{action}");
        assert!(!job.held_for_approval, "a branch of the repository itself runs at once");
        assert_eq!(facts.action.as_deref(), Some(action));
        assert_eq!(facts.git_ref.as_deref(), Some("refs/pull/2/head"));
    }
}

#[test]
fn a_closed_pull_request_cancels_its_verify_jobs_under_every_policy() {
    for policy in ["same-repository", "approve-forks", "off"] {
        let project = project(&format!("deploy_branches = [\"master\"]\npull_requests = \"{policy}\""));
        let (action, facts) = decision("pull_request", &fixture("pull_request.closed.payload.json"), &project);
        match action {
            Action::CancelPullRequest {
                project,
                number,
                merged,
            } => {
                assert_eq!((project.as_str(), number, merged), ("hello", 2, false), "{policy}");
            }
            other => panic!("{policy}: expected a cancellation, got {other:?}"),
        }
        assert_eq!(facts.action.as_deref(), Some("closed"));
    }
}

#[test]
fn a_forks_pull_request_is_ignored_unless_forks_are_approved() {
    let fork = from_fork(fixture("pull_request.opened.payload.json"));
    let reason = ignored(decision("pull_request", &fork, &deployed_from_master()).0);
    assert_eq!(reason, "pull request from a fork");

    let approve_forks = project("deploy_branches = [\"master\"]\npull_requests = \"approve-forks\"");
    let jobs = queued(decision("pull_request", &fork, &approve_forks).0);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].kind, JobKind::Verify);
    assert!(jobs[0].held_for_approval, "a stranger's code waits for an admin");

    // The same repository's branches are not held under approve-forks either.
    let own = fixture("pull_request.synchronize.payload.json");
    let jobs = queued(decision("pull_request", &own, &approve_forks).0);
    assert!(!jobs[0].held_for_approval);
}

#[test]
fn a_pull_request_whose_head_repository_is_gone_counts_as_a_fork() {
    let mut deleted_fork = fixture("pull_request.synchronize.payload.json");
    deleted_fork["pull_request"]["head"]["repo"] = Value::Null;
    let reason = ignored(decision("pull_request", &deleted_fork, &deployed_from_master()).0);
    assert_eq!(reason, "pull request from a fork");
}

#[test]
fn the_same_repository_in_another_case_is_not_a_fork() {
    let mut body = fixture("pull_request.opened.payload.json");
    body["pull_request"]["head"]["repo"]["full_name"] = "codertocat/hello-world".into();
    let jobs = queued(decision("pull_request", &body, &deployed_from_master()).0);
    assert!(!jobs[0].held_for_approval);
}

#[test]
fn pull_requests_off_run_nothing() {
    let off = project("deploy_branches = [\"master\"]\npull_requests = \"off\"");
    let reason = ignored(decision("pull_request", &fixture("pull_request.opened.payload.json"), &off).0);
    assert_eq!(reason, "pull requests are off for hello (pull_requests = \"off\")");
}

#[test]
fn a_pull_request_against_a_branch_that_is_not_deployed_is_ignored() {
    let mut body = fixture("pull_request.opened.payload.json");
    body["pull_request"]["base"]["ref"] = "experiments".into();
    let reason = ignored(decision("pull_request", &body, &deployed_from_master()).0);
    assert_eq!(reason, "pull request #2 targets \"experiments\", not a deploy branch");
}

#[test]
fn other_pull_request_actions_trigger_nothing() {
    for action in ["labeled", "edited", "assigned"] {
        let (decided, facts) = decision("pull_request", &pull_request(action), &deployed_from_master());
        assert_eq!(
            ignored(decided),
            format!("pull_request action \"{action}\" does not trigger anything")
        );
        assert_eq!(facts.action.as_deref(), Some(action));
    }
}

#[test]
fn events_the_runner_does_not_act_on_are_ignored() {
    // GitHub's own bodies: a tag created, then deleted (the push events of the same tag
    // are what a deploy follows).
    for (event, body) in [("create", "create.payload.json"), ("delete", "delete.payload.json")] {
        let (action, facts) = decision(event, &fixture(body), &deployed_from_master());
        assert_eq!(ignored(action), format!("event \"{event}\" does not trigger anything"));
        assert!(facts.git_ref.is_none() && facts.sha.is_none(), "{event}: {facts:?}");
    }
}

#[test]
fn a_ping_confirms_the_hook_and_records_its_id() {
    let (action, facts) = decision("ping", &fixture("ping.payload.json"), &deployed_from_master());
    assert_eq!(ignored(action), "ping: hook 109948940 is set up for hello");
    assert_eq!(facts.hook_id, Some(109_948_940));
}

#[test]
fn a_push_whose_head_commit_says_skip_ci_queues_nothing_and_says_why() {
    let mut body = push_to("refs/heads/master");
    body["head_commit"]["message"] = "Fix the README\n\n[skip ci]".into();
    let (action, facts) = decision("push", &body, &deployed_from_master());
    assert_eq!(
        ignored(action),
        "the commit message says [skip ci]: 6113728 is not deployed"
    );
    assert_eq!(facts.sha.as_deref(), Some(PUSHED));
    // Anywhere else in the message, the marker must be exact.
    body["head_commit"]["message"] = "Explain how to skip ci".into();
    assert_eq!(queued(decision("push", &body, &deployed_from_master()).0).len(), 1);
}
