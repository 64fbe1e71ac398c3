//! GitHub payloads, parsed only as far as the runner needs, and the decision of what
//! each delivery triggers. Nothing here touches the database or the network.

use serde::Deserialize;

use crate::config::{Project, PullRequestPolicy};
use crate::domain::{CommitSha, GitRef, RefKind, RepoName};
use crate::job::{JobKind, Trigger};
use crate::store::deliveries::Action;
use crate::store::jobs::NewJob;

/// Longest commit message or author name kept on a job.
const MAX_TEXT: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("payload is missing or has an invalid {0}")]
    Field(&'static str),
}

/// Every field the runner reads, from any event, in one typed pass over the body
/// (unknown fields are skipped without being built into a tree).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    repository: Option<RepositoryField>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    after: Option<String>,
    deleted: bool,
    head_commit: Option<HeadCommit>,
    action: Option<String>,
    number: Option<i64>,
    pull_request: Option<PullRequest>,
    hook_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RepositoryField {
    full_name: String,
    /// Integer seconds on push payloads, a timestamp string elsewhere.
    #[serde(default)]
    pushed_at: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct HeadCommit {
    message: Option<String>,
    author: Option<Person>,
}

#[derive(Debug, Deserialize)]
struct Person {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    title: Option<String>,
    user: Option<Login>,
    head: Branch,
    base: Branch,
}

#[derive(Debug, Deserialize)]
struct Login {
    login: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
    /// The repository the branch lives in; `null` when a fork was deleted.
    #[serde(default)]
    repo: Option<BranchRepository>,
}

#[derive(Debug, Deserialize)]
struct BranchRepository {
    full_name: String,
}

/// A delivery's payload, parsed.
#[derive(Debug)]
pub struct Parsed {
    payload: Payload,
    /// `None` for events about an organisation or app rather than a repository.
    pub repository: Option<RepoName>,
    pushed_at: Option<i64>,
}

/// Parses the JSON and the repository it names (every event we act on names one).
pub fn parse(json_text: &[u8]) -> Result<Parsed, PayloadError> {
    let payload: Payload = serde_json::from_slice(json_text).map_err(|e| {
        if e.is_data() {
            describe_data_error(json_text, &e)
        } else {
            PayloadError::Json(e.to_string())
        }
    })?;
    let (repository, pushed_at) = match &payload.repository {
        Some(repo) => (
            Some(RepoName::parse(&repo.full_name).map_err(|_| PayloadError::Field("repository.full_name"))?),
            repo.pushed_at.as_ref().and_then(serde_json::Value::as_i64),
        ),
        None => (None, None),
    };
    Ok(Parsed {
        payload,
        repository,
        pushed_at,
    })
}

/// Valid JSON of the wrong shape: say whether it is not an object or which field is off.
fn describe_data_error(json_text: &[u8], error: &serde_json::Error) -> PayloadError {
    match serde_json::from_slice::<serde_json::Value>(json_text) {
        Ok(value) if !value.is_object() => PayloadError::Json("expected a JSON object".into()),
        _ => {
            let message = error.to_string();
            let field = [
                "repository",
                "pull_request",
                "head_commit",
                "ref",
                "after",
                "number",
                "action",
                "hook_id",
            ]
            .into_iter()
            .find(|f| message.contains(f))
            .unwrap_or("payload");
            PayloadError::Field(field)
        }
    }
}

/// What the delivery says, beyond the decision: recorded on the delivery row.
#[derive(Debug, Default)]
pub struct Facts {
    pub action: Option<String>,
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub hook_id: Option<i64>,
}

/// Decides what a delivery for `project` triggers.
pub fn decide(
    event: &str,
    parsed: &Parsed,
    project: &Project,
    delivery_id: &str,
    now: i64,
) -> Result<(Action, Facts), PayloadError> {
    match event {
        "ping" => {
            let hook_id = parsed.payload.hook_id;
            let reason = match hook_id {
                Some(id) => format!("ping: hook {id} is set up for {}", project.name),
                None => format!("ping: webhook is set up for {}", project.name),
            };
            Ok((
                Action::Ignore { reason },
                Facts {
                    hook_id,
                    ..Facts::default()
                },
            ))
        }
        "push" => decide_push(parsed, project, delivery_id, now),
        "pull_request" => decide_pull_request(parsed, project, delivery_id, now),
        other => Ok((
            ignore(format!("event {:?} does not trigger anything", clip(other, 64))),
            Facts::default(),
        )),
    }
}

fn decide_push(
    parsed: &Parsed,
    project: &Project,
    delivery_id: &str,
    now: i64,
) -> Result<(Action, Facts), PayloadError> {
    let push = &parsed.payload;
    let (Some(raw_ref), Some(after)) = (push.git_ref.as_deref(), push.after.as_deref()) else {
        return Err(PayloadError::Field("ref/after"));
    };
    let mut facts = Facts {
        git_ref: Some(clip(raw_ref, 512)),
        sha: Some(clip(after, 64)),
        ..Facts::default()
    };
    let Ok(git_ref) = GitRef::parse(raw_ref) else {
        return Ok((
            ignore(format!("ref {:?} is not a deploy branch", clip(raw_ref, 80))),
            facts,
        ));
    };
    let sha = CommitSha::parse(after).map_err(|_| PayloadError::Field("after"))?;
    facts.sha = Some(sha.to_string());
    if push.deleted || sha.is_null() {
        return Ok((ignore(format!("{} was deleted", git_ref.short_name())), facts));
    }
    match git_ref.kind() {
        RefKind::Tag if !project.deploy_tags => {
            return Ok((
                ignore(format!(
                    "tag push {} (tags are not deployed for {})",
                    git_ref.short_name(),
                    project.name
                )),
                facts,
            ));
        }
        RefKind::Branch if !project.deploys_ref(&git_ref) => {
            return Ok((
                ignore(format!(
                    "branch {} is not a deploy branch of {}",
                    git_ref.short_name(),
                    project.name
                )),
                facts,
            ));
        }
        RefKind::Other => {
            return Ok((ignore(format!("ref {git_ref} is neither a branch nor a tag")), facts));
        }
        _ => {}
    }
    let head = push.head_commit.as_ref();
    let job = NewJob {
        project: project.name.clone(),
        environment: project.environment.clone(),
        kind: JobKind::Deploy,
        trigger: Trigger::Push,
        git_ref,
        sha,
        pull_request: None,
        delivery_id: Some(delivery_id.to_owned()),
        commit_message: head.and_then(|c| c.message.as_deref()).map(|m| clip(m, MAX_TEXT)),
        commit_author: head
            .and_then(|c| c.author.as_ref())
            .and_then(|a| a.name.as_deref().or(a.username.as_deref()))
            .map(|a| clip(a, 200)),
        rollback_of: None,
        held_for_approval: false,
        // GitHub's push time orders pushes that arrive out of order; it has second
        // resolution, so pushes within one second keep arrival order.
        ordering_key: parsed.pushed_at.map_or(now, |secs| secs.saturating_mul(1000)),
    };
    Ok((Action::Queue(job), facts))
}

fn decide_pull_request(
    parsed: &Parsed,
    project: &Project,
    delivery_id: &str,
    now: i64,
) -> Result<(Action, Facts), PayloadError> {
    let payload = &parsed.payload;
    let (Some(action), Some(number), Some(pr)) =
        (payload.action.as_deref(), payload.number, payload.pull_request.as_ref())
    else {
        return Err(PayloadError::Field("pull_request"));
    };
    let mut facts = Facts {
        action: Some(clip(action, 64)),
        git_ref: Some(format!("refs/pull/{}/head", number)),
        sha: Some(clip(&pr.head.sha, 64)),
        ..Facts::default()
    };
    let base_is_deploy_branch = GitRef::branch(&pr.base.name).is_ok_and(|base| project.deploys_ref(&base));
    if !base_is_deploy_branch {
        return Ok((
            ignore(format!(
                "pull request #{} targets {:?}, not a deploy branch",
                number,
                clip(&pr.base.name, 80)
            )),
            facts,
        ));
    }
    if project.pull_requests == PullRequestPolicy::Off && action != "closed" {
        return Ok((
            ignore(format!(
                "pull requests are off for {} (pull_requests = \"off\")",
                project.name
            )),
            facts,
        ));
    }
    let from_fork = is_from_fork(pr, parsed.repository.as_ref());
    match action {
        "opened" | "synchronize" | "reopened"
            if from_fork && project.pull_requests != PullRequestPolicy::ApproveForks =>
        {
            Ok((ignore("pull request from a fork".to_owned()), facts))
        }
        "opened" | "synchronize" | "reopened" => {
            let sha = CommitSha::parse(&pr.head.sha).map_err(|_| PayloadError::Field("pull_request.head.sha"))?;
            facts.sha = Some(sha.to_string());
            let git_ref =
                GitRef::parse(&format!("refs/pull/{}/head", number)).map_err(|_| PayloadError::Field("number"))?;
            let job = NewJob {
                project: project.name.clone(),
                environment: project.environment.clone(),
                kind: JobKind::Verify,
                trigger: Trigger::PullRequest,
                git_ref,
                sha,
                pull_request: Some(number),
                delivery_id: Some(delivery_id.to_owned()),
                commit_message: pr.title.as_deref().map(|t| clip(t, MAX_TEXT)),
                commit_author: pr.user.as_ref().and_then(|u| u.login.as_deref()).map(|a| clip(a, 200)),
                ordering_key: now,
                rollback_of: None,
                // Each push to a fork's pull request is a new job, so it needs a new approval.
                held_for_approval: from_fork,
            };
            Ok((Action::Queue(job), facts))
        }
        "closed" => Ok((
            Action::CancelPullRequest {
                project: project.name.to_string(),
                number,
            },
            facts,
        )),
        other => Ok((
            ignore(format!(
                "pull_request action {:?} does not trigger anything",
                clip(other, 64)
            )),
            facts,
        )),
    }
}

/// A pull request whose head branch lives in another repository than the one it targets
/// (or in a fork deleted since) carries a stranger's code.
fn is_from_fork(pr: &PullRequest, base_repository: Option<&RepoName>) -> bool {
    let base = pr
        .base
        .repo
        .as_ref()
        .map(|r| r.full_name.as_str())
        .or(base_repository.map(RepoName::as_str));
    match (pr.head.repo.as_ref(), base) {
        (Some(head), Some(base)) => !head.full_name.eq_ignore_ascii_case(base),
        _ => true,
    }
}

fn ignore(reason: String) -> Action {
    Action::Ignore { reason }
}

/// Keeps at most `max` bytes, on a character boundary.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
