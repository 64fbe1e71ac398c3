//! A delivery in the runner's own terms, whatever forge sent it (each forge's format is
//! read by a module of its own, [`super::github`] for GitHub), and the decision of what
//! it triggers. Nothing here touches the database or the network.

use crate::config::{Project, PullRequestPolicy};
use crate::domain::{CommitSha, GitRef, RefKind, RepoName};
use crate::job::Trigger;
use crate::store::deliveries::Action;
use crate::store::jobs::NewJob;

#[cfg(test)]
mod tests;

/// Longest commit message or author name kept on a job.
const MAX_TEXT: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("payload is missing or has an invalid {0}")]
    Field(&'static str),
}

/// Valid JSON of the wrong shape: says whether it is not an object, or which of `fields`
/// (the ones the forge's reader reads) is off.
pub(super) fn describe_data_error(
    json_text: &[u8],
    error: &serde_json::Error,
    fields: &[&'static str],
) -> PayloadError {
    match serde_json::from_slice::<serde_json::Value>(json_text) {
        Ok(value) if !value.is_object() => PayloadError::Json("expected a JSON object".into()),
        _ => {
            let message = error.to_string();
            let field = fields
                .iter()
                .find(|f| message.contains(*f))
                .copied()
                .unwrap_or("payload");
            PayloadError::Field(field)
        }
    }
}

/// Reads `json_text` as `T`, saying which field is off when it does not fit.
pub(super) fn read_payload<T: serde::de::DeserializeOwned>(
    json_text: &[u8],
    fields: &[&'static str],
) -> Result<T, PayloadError> {
    serde_json::from_slice(json_text).map_err(|e| {
        if e.is_data() {
            describe_data_error(json_text, &e, fields)
        } else {
            PayloadError::Json(e.to_string())
        }
    })
}

/// A delivery's payload: the repository it is about and what happened.
#[derive(Debug)]
pub struct Incoming {
    /// `None` for events about an organisation or app rather than a repository.
    pub repository: Option<RepoName>,
    pub event: Event,
}

#[derive(Debug)]
pub enum Event {
    /// The forge checks the webhook is set up.
    Ping {
        hook_id: Option<i64>,
    },
    Push(Push),
    PullRequest(PullRequest),
    /// Someone asked the forge to run one of the runner's checks again (GitHub's *Re-run*
    /// button on a check run). What it queues depends on the job named, which the
    /// operations look up.
    Rerun(Rerun),
    /// Any other event, by its name: it triggers nothing.
    Other(String),
}

/// Commits pushed to a ref. Fields are as the forge sent them; [`decide`] checks them.
#[derive(Debug, Default)]
pub struct Push {
    pub git_ref: Option<String>,
    /// The commit the ref pointed at before the push (all zeros for a new ref).
    pub before: Option<String>,
    /// The commit the ref points at now.
    pub after: Option<String>,
    /// The ref was deleted.
    pub deleted: bool,
    pub message: Option<String>,
    pub author: Option<String>,
    /// When the forge received the push, in seconds: orders pushes that arrive out of order.
    pub pushed_at: Option<i64>,
}

#[derive(Debug, Default)]
pub struct PullRequest {
    /// `opened`, `synchronize`, `reopened`, `closed`, ...
    pub action: Option<String>,
    pub number: Option<i64>,
    pub change: Option<Change>,
}

/// A request to run a job again.
#[derive(Debug, Default)]
pub struct Rerun {
    /// `rerequested` asks for a re-run; `created`, `completed` and the rest only tell.
    pub action: Option<String>,
    /// The runner's job id, as the check run carries it (`external_id`).
    pub job: Option<String>,
    pub head_sha: String,
    /// The check run's name: the job's status context.
    pub name: Option<String>,
    /// The GitHub App whose check run it is.
    pub app_id: Option<u64>,
}

/// The pull request's branches.
#[derive(Debug)]
pub struct Change {
    pub title: Option<String>,
    pub author: Option<String>,
    pub head_sha: String,
    /// The branch it would merge into (a short name), and its commit then.
    pub base_branch: String,
    pub base_sha: String,
    /// `owner/name` of the repositories the branches live in; `None` when the forge does
    /// not say (a deleted fork).
    pub head_repository: Option<String>,
    pub base_repository: Option<String>,
    /// A closed pull request's branch was merged.
    pub merged: bool,
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
    incoming: &Incoming,
    project: &Project,
    delivery_id: &str,
    now: i64,
) -> Result<(Action, Facts), PayloadError> {
    match &incoming.event {
        Event::Ping { hook_id } => {
            let hook_id = *hook_id;
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
        Event::Push(push) => decide_push(push, project, delivery_id, now),
        Event::PullRequest(pull_request) => {
            decide_pull_request(pull_request, incoming.repository.as_ref(), project, delivery_id, now)
        }
        // Answered with the job it names: see `Operations::rerun`.
        Event::Rerun(rerun) => Ok((
            ignore(format!(
                "check_run {}: only a re-run request asks for anything",
                clip(rerun.action.as_deref().unwrap_or("without action"), 32)
            )),
            // No `sha`: a check run's commit is not one a push announced (the reconciler
            // counts deliveries naming a commit as seen pushes).
            Facts {
                action: rerun.action.as_deref().map(|a| clip(a, 32)),
                ..Facts::default()
            },
        )),
        Event::Other(other) => Ok((
            ignore(format!("event {:?} does not trigger anything", clip(other, 64))),
            Facts::default(),
        )),
    }
}

fn decide_push(push: &Push, project: &Project, delivery_id: &str, now: i64) -> Result<(Action, Facts), PayloadError> {
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
        RefKind::Tag if !project.deploys_ref(&git_ref) => {
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
    if let Some(reason) = push.message.as_deref().and_then(crate::runfile::skip_ci) {
        return Ok((ignore(format!("{reason}: {} is not deployed", sha.short())), facts));
    }
    // A new ref's `before` is all zeros: nothing to compare with.
    let before = push
        .before
        .as_deref()
        .and_then(|before| CommitSha::parse(before).ok())
        .filter(|before| !before.is_null());
    // One deploy per environment the ref feeds, each ordered among its environment's.
    let jobs = project
        .environments_for(&git_ref)
        .map(|environment| {
            // GitHub's push time orders pushes that arrive out of order; it has second
            // resolution, so pushes within one second keep arrival order.
            let ordering_key = push.pushed_at.map_or(now, |secs| secs.saturating_mul(1000));
            NewJob::deploy(
                project.name.clone(),
                environment.name.clone(),
                Trigger::Push,
                git_ref.clone(),
                sha.clone(),
                ordering_key,
            )
            .from_delivery(delivery_id)
            .described(
                push.message.as_deref().map(|m| clip(m, MAX_TEXT)),
                push.author.as_deref().map(|a| clip(a, 200)),
            )
            .based_on(before.clone(), None)
        })
        .collect();
    Ok((Action::Queue(jobs), facts))
}

fn decide_pull_request(
    payload: &PullRequest,
    repository: Option<&RepoName>,
    project: &Project,
    delivery_id: &str,
    now: i64,
) -> Result<(Action, Facts), PayloadError> {
    let (Some(action), Some(number), Some(pr)) = (payload.action.as_deref(), payload.number, payload.change.as_ref())
    else {
        return Err(PayloadError::Field("pull_request"));
    };
    // Where the forge keeps the pull request's head, for a checkout that cannot fetch by SHA.
    let head_ref = match project.links.kind() {
        crate::config::ForgeKind::GitLab => format!("refs/merge-requests/{number}/head"),
        _ => format!("refs/pull/{number}/head"),
    };
    let mut facts = Facts {
        action: Some(clip(action, 64)),
        git_ref: Some(head_ref.clone()),
        sha: Some(clip(&pr.head_sha, 64)),
        ..Facts::default()
    };
    // Closing ends what the pull request has, whatever its base branch is now.
    if action == "closed" {
        return Ok((
            Action::CancelPullRequest {
                project: project.name.to_string(),
                number,
                merged: pr.merged,
            },
            facts,
        ));
    }
    // A pull request is verified for the environment its base branch feeds.
    let base_environment = GitRef::branch(&pr.base_branch)
        .ok()
        .and_then(|base| project.environments_for(&base).next().map(|e| e.name.clone()));
    let Some(base_environment) = base_environment else {
        return Ok((
            ignore(format!(
                "pull request #{} targets {:?}, not a deploy branch",
                number,
                clip(&pr.base_branch, 80)
            )),
            facts,
        ));
    };
    if project.pull_requests == PullRequestPolicy::Off {
        return Ok((
            ignore(format!(
                "pull requests are off for {} (pull_requests = \"off\")",
                project.name
            )),
            facts,
        ));
    }
    let from_fork = is_from_fork(pr, repository);
    match action {
        "opened" | "synchronize" | "reopened"
            if from_fork && project.pull_requests != PullRequestPolicy::ApproveForks =>
        {
            Ok((ignore("pull request from a fork".to_owned()), facts))
        }
        "opened" | "synchronize" | "reopened" => {
            let sha = CommitSha::parse(&pr.head_sha).map_err(|_| PayloadError::Field("pull_request.head.sha"))?;
            facts.sha = Some(sha.to_string());
            let git_ref = GitRef::parse(&head_ref).map_err(|_| PayloadError::Field("number"))?;
            let job = NewJob::verify(project.name.clone(), base_environment, number, git_ref, sha, now)
                .from_delivery(delivery_id)
                .described(
                    pr.title.as_deref().map(|t| clip(t, MAX_TEXT)),
                    pr.author.as_deref().map(|a| clip(a, 200)),
                )
                .based_on(CommitSha::parse(&pr.base_sha).ok(), Some(clip(&pr.base_branch, 255)))
                // Each push to a fork's pull request is a new job, so it needs a new approval.
                .held(from_fork);
            Ok((Action::Queue(vec![job]), facts))
        }
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
fn is_from_fork(pr: &Change, base_repository: Option<&RepoName>) -> bool {
    let base = pr.base_repository.as_deref().or(base_repository.map(RepoName::as_str));
    match (pr.head_repository.as_deref(), base) {
        (Some(head), Some(base)) => !head.eq_ignore_ascii_case(base),
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
