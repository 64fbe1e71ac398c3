//! `/jobs/{id}`: one job: where it stands, its steps, its deployment, its plan, and its
//! log (live while it runs).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, PreEscaped, html};

use super::super::auth::Viewer;
use super::super::html::{self, Nav, action_button, badge, commit_link, duration, headline, time};
use super::super::{PageError, Path};
use super::{links_of, stream_class};
use crate::config::RepoLinks;
use crate::domain::JobId;
use crate::job::{JobState, StepState};
use crate::store::artifacts::Artifact;
use crate::store::deployments::{self, Deployment};
use crate::store::jobs::{self, Job};
use crate::store::logs::{self, LogLine};
use crate::store::steps::{self, Step};
use crate::web::AppState;

/// A job page shows this many of the newest log lines; the plain-text log has them all.
const LOG_TAIL: usize = 5_000;

struct View<'a> {
    job: Job,
    links: Option<&'a RepoLinks>,
    csrf: Option<String>,
    steps: Vec<Step>,
    deployment: Option<Deployment>,
    /// Why GitHub was not told about the job, when it was not.
    report_error: Option<String>,
    plan_text: Option<Artifact>,
    /// The failed step and its last lines, when the job failed in one.
    failure: Option<(Step, Vec<LogLine>)>,
    lines: Vec<LogLine>,
    total_lines: i64,
}

pub async fn job_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<JobId>,
) -> Result<Response, PageError> {
    viewer.may_read(&state, &format!("/jobs/{id}"))?;
    let job = jobs::get(&state.pool, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no job {id}.")))?;
    let steps = steps::list(&state.pool, id.get()).await?;
    let failure = match steps.iter().find(|s| s.state == StepState::Failed) {
        Some(failed) if job.state == JobState::Failed => Some((
            failed.clone(),
            logs::step_tail(&state.pool, id, &failed.name, 60).await?,
        )),
        _ => None,
    };
    let plan_text = match &job.plan_summary {
        Some(_) => crate::store::artifacts::get(&state.pool, id.get(), "plan.txt").await?,
        None => None,
    };
    let view = View {
        links: links_of(&state, &job.project),
        csrf: viewer.csrf(),
        deployment: deployments::for_job(&state.pool, id.get()).await?,
        report_error: crate::store::reports::error_of(&state.pool, id.get()).await?,
        total_lines: jobs::log_line_count(&state.pool, id).await?,
        lines: logs::tail(&state.pool, id, LOG_TAIL).await?,
        plan_text,
        failure,
        steps,
        job,
    };
    let title = format!("Job #{id}");
    let content = render(&view);
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame(&title, view.csrf.as_deref(), Nav::None), &content),
    ))
}

fn render(view: &View<'_>) -> Markup {
    let job = &view.job;
    let id = job.id;
    let csrf = view.csrf.as_deref();
    let after = view.lines.last().map_or(0, |l| l.seq);
    html! {
        h1 { "Job #" (id) " " span #job-state { (badge(job.state.as_str())) } }
        p.lead {
            (job.kind) " of " b { (job.project) } " to " b { (job.environment) } " · "
            (commit_link(view.links, &job.sha)) " " (headline(job.commit_message.as_deref()))
        }
        @if job.held_for.is_some() && job.state == JobState::AwaitingApproval {
            section.card #held {
                p.notice {
                    "This pull request comes from a fork. Nothing of it runs, not even the checkout, until an \
                     admin approves it. Read its changes first: approving runs its Dockerfile and its code on \
                     this runner's engine."
                }
                (action_button(&format!("/jobs/{id}/approve"), "Approve and run", csrf, "", Some("Run this pull request's code on the runner?")))
                (action_button(&format!("/jobs/{id}/reject"), "Reject", csrf, "danger", None))
            }
        }
        @if !job.state.is_terminal() {
            span #cancel-job {
                (action_button(&format!("/jobs/{id}/cancel"), "Cancel job", csrf, "danger", Some("Cancel this job?")))
            }
        }
        dl.meta {
            @for (name, value) in facts(view) {
                dt { (name) }
                dd id={ "job-" (name.to_ascii_lowercase().replace(' ', "-")) } { (value) }
            }
        }
        p #job-error .error hidden[job.error.is_none()] { (job.error.as_deref().unwrap_or("")) }
        @if let Some(d) = &view.deployment { (deployment_card(d, csrf)) }
        @if let Some(problem) = &view.report_error { p.warning #report-error { (problem) } }
        (plan_card(view))
        // A failed job opens with where it failed and that step's last lines.
        @if let Some((failed, lines)) = &view.failure {
            section.card.failure #failure {
                h2 { "Failed at " (failed.name) }
                p.error { (failed.error.as_deref().or(job.error.as_deref()).unwrap_or("")) }
                details open {
                    summary { "The last lines of " (failed.name) }
                    pre.step-log {
                        @for line in lines {
                            span class={ "l " (stream_class(&line.stream)) } { (line.line) } "\n"
                        }
                    }
                }
            }
        }
        h2 { "Steps" }
        @if view.steps.is_empty() {
            p.empty #no-steps { "No steps yet: the job has not started." }
        }
        table.list #steps {
            thead { tr { th { "Step" } th { "State" } th { "Duration" } th {} } }
            tbody {
                @for step in &view.steps {
                    tr data-step=(step.name) id={ "step-" (step.name) } {
                        td { (step.name) }
                        td { (badge(step.state.as_str())) }
                        td { (duration(step.started_at, step.finished_at)) }
                        td { (step_words(step)) }
                    }
                }
            }
        }
        h2 { "Log " a.small href={ "/api/jobs/" (id) "/logs" } { "plain text" } }
        @if view.total_lines > view.lines.len() as i64 {
            p.muted { "Showing the last " (view.lines.len()) " of " (view.total_lines) " lines." }
        }
        pre #log data-job=(id) data-after=(after) data-live=(!job.state.is_terminal()) {
            @for line in &view.lines {
                span class={ "l " (stream_class(&line.stream)) } data-seq=(line.seq) {
                    time data-ms=(line.at) class="t" {}
                    (line.line)
                }
                "\n"
            }
        }
        @if view.lines.is_empty() { p.empty #no-log { "No log lines yet." } }
    }
}

/// A step's test summary and error, in one cell.
fn step_words(step: &steps::Step) -> String {
    match (step.summary.as_deref(), step.error.as_deref()) {
        (Some(summary), Some(error)) if error.contains(summary) => error.to_owned(),
        (Some(summary), Some(error)) => format!("{summary}; {error}"),
        (Some(text), None) | (None, Some(text)) => text.to_owned(),
        (None, None) => String::new(),
    }
}

/// The job's facts, by name, those that have a value.
fn facts(view: &View<'_>) -> Vec<(&'static str, Markup)> {
    let job = &view.job;
    let mut facts = vec![
        ("Trigger", html! { (job.trigger.as_str()) }),
        ("Ref", html! { (job.git_ref) }),
        ("Commit", html! { code { (job.sha) } }),
        ("Author", html! { (job.commit_author.as_deref().unwrap_or("")) }),
    ];
    if let Some(pr) = job.pull_request {
        facts.push((
            "Pull request",
            match view.links {
                Some(links) => html! { a href=(links.pull_request(pr)) { "#" (pr) } },
                None => html! { "#" (pr) },
            },
        ));
    }
    if let Some(delivery) = &job.delivery_id {
        facts.push((
            "Delivery",
            html! { a href={ "/deliveries#d-" (delivery) } { (delivery) } },
        ));
    }
    if let Some(target) = job.rollback_of {
        facts.push(("Rolls back to", html! { "deployment " (target) }));
    }
    if let Some(newer) = job.superseded_by {
        facts.push((
            "Superseded by",
            html! { a href={ "/jobs/" (newer) } { "job #" (newer) } },
        ));
    }
    facts.push(("Queued", time(job.created_at)));
    facts.push(("Started", job.started_at.map(time).unwrap_or_default()));
    facts.push(("Finished", job.finished_at.map(time).unwrap_or_default()));
    facts.push((
        "Duration",
        match html::took(job.started_at, job.finished_at) {
            None => html! { "not started" },
            Some(_) => duration(job.started_at, job.finished_at),
        },
    ));
    if job.attempts > 1 {
        facts.push(("Attempts", html! { (job.attempts) }));
    }
    facts.retain(|(_, value)| !value.0.is_empty());
    facts
}

fn deployment_card(d: &Deployment, csrf: Option<&str>) -> Markup {
    html! {
        section.card {
            h2 { "Deployment " (d.id) " " (badge(d.status.as_str())) }
            dl.meta {
                dt { "Image" } dd { code { (d.image_ref) } }
                @if let Some(digest) = &d.image_digest { dt { "Digest" } dd { code { (digest) } } }
                @if let Some(url) = &d.url { dt { "URL" } dd { (html::outside_link(url)) } }
                @if let Some(replaced) = d.replaced_id { dt { "Replaced" } dd { "deployment " (replaced) } }
                @if let Some(by) = d.replaced_by { dt { "Replaced by" } dd { "deployment " (by) } }
                @if let Some(error) = &d.error { dt { "Error" } dd { (error) } }
                @for (name, value) in d.outputs.0.as_ref().and_then(|o| o.as_object()).into_iter().flatten() {
                    dt { (name) }
                    dd { code { (value.as_str().map_or_else(|| value.to_string(), str::to_owned)) } }
                }
            }
            (html::rollback_button(d, csrf))
        }
    }
}

fn plan_card(view: &View<'_>) -> Markup {
    let job = &view.job;
    let Some(summary) = &job.plan_summary else {
        return PreEscaped(String::new());
    };
    let id = job.id;
    let csrf = view.csrf.as_deref();
    html! {
        section.card #plan {
            h2 { "Terraform plan: " (summary["headline"].as_str().unwrap_or("")) }
            @if job.state == JobState::AwaitingApproval && job.approval.is_none() {
                p.notice { "This deploy waits for approval of the plan." }
                // The approval names the plan shown below: one planned again since is refused.
                @let digest = view.plan_text.as_ref().map(|plan| plan.digest());
                @let approve = match &digest {
                    Some(digest) => format!("/jobs/{id}/approve?plan_digest={}", digest.as_str()),
                    None => format!("/jobs/{id}/approve"),
                };
                (action_button(&approve, "Approve and apply", csrf, "", Some("Apply this plan?")))
                (action_button(&format!("/jobs/{id}/reject"), "Reject", csrf, "danger", None))
            }
            @if let Some(answer) = &job.approval { p { "Plan " (answer) "." } }
            ul.changes {
                @for change in summary["resources"].as_array().into_iter().flatten() {
                    @let actions: Vec<&str> = change["actions"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
                    li { code { (actions.join("/")) } " " (change["address"].as_str().unwrap_or("")) }
                }
            }
            @if let Some(plan) = &view.plan_text {
                details { summary { "Plan text" } pre.plan { (plan.content) } }
            }
        }
    }
}
