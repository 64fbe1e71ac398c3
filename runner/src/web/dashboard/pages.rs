//! The read pages: deployments, a job, deliveries.

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::PageError;
use super::auth::Viewer;
use super::html::{self, Nav, badge, commit_link, duration, esc, headline, select, time};
use crate::store::deployments::{self, DeploymentFilter};
use crate::store::{deliveries, jobs, logs, steps};
use crate::web::AppState;

const PAGE_SIZE: usize = 50;
/// A job page shows this many of the newest log lines; the plain-text log has them all.
const LOG_TAIL: usize = 5_000;
use crate::job::{DeploymentStatus, StepState};

#[derive(Debug, Default, Deserialize)]
pub struct DeploymentsQuery {
    project: Option<String>,
    environment: Option<String>,
    status: Option<String>,
    before: Option<i64>,
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}

fn links_of<'a>(state: &'a AppState, project: &str) -> Option<&'a crate::config::RepoLinks> {
    state.config.project(project).map(|p| &p.links)
}

/// The class a log line is shown with, by the stream it came from.
fn stream_class(stream: &str) -> &'static str {
    match stream {
        "stderr" => "err",
        "system" => "sys",
        _ => "out",
    }
}

fn action_button(action: &str, label: &str, csrf: Option<&str>, class: &str, confirm: Option<&str>) -> String {
    let Some(csrf) = csrf else { return String::new() };
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"{}><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button class=\"{}\">{}</button></form>",
        esc(action),
        confirm.map_or(String::new(), |c| format!(" data-confirm=\"{}\"", esc(c))),
        esc(csrf),
        class,
        esc(label)
    )
}

pub async fn deployments_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<DeploymentsQuery>,
) -> Result<Response, PageError> {
    viewer.may_read(&state, "/")?;
    let filter = DeploymentFilter {
        project: non_empty(query.project.as_ref()),
        environment: non_empty(query.environment.as_ref()),
        status: non_empty(query.status.as_ref()),
    };
    if let Some(status) = &filter.status
        && DeploymentStatus::parse(status).is_none()
    {
        return Err(PageError::BadRequest(format!(
            "There is no deployment status {status:?}."
        )));
    }
    let page = deployments::list_views(&state.pool, &filter, query.before, PAGE_SIZE).await?;
    let active = jobs::active(&state.pool, 10).await?;
    let csrf = viewer.csrf();

    let mut body = String::with_capacity(32 * 1024);
    body.push_str("<h1>Deployments</h1>");
    if !active.is_empty() {
        body.push_str("<section class=\"card\"><h2>In progress</h2><ul class=\"jobs\">");
        for job in &active {
            let _ = write!(
                body,
                "<li>{} <a href=\"/jobs/{id}\">#{id}</a> {kind} of <b>{project}</b> to {env} · {sha} {msg} · {when}</li>",
                badge(job.state.as_str()),
                id = job.id,
                kind = job.kind,
                project = esc(&job.project),
                env = esc(&job.environment),
                sha = commit_link(links_of(&state, &job.project), &job.sha),
                msg = esc(&headline(job.commit_message.as_deref())),
                when = time(job.created_at),
            );
        }
        body.push_str("</ul></section>");
    }

    // Filters: plain GET form, so every view has a URL.
    body.push_str("<form class=\"filters\" method=\"get\" action=\"/\">");
    let projects: Vec<String> = state.config.projects.iter().map(|p| p.name.to_string()).collect();
    let mut environments: Vec<String> = state
        .config
        .projects
        .iter()
        .map(|p| p.environment.to_string())
        .collect();
    environments.sort();
    environments.dedup();
    let statuses: Vec<String> = DeploymentStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    body.push_str(&select("project", "Project", &projects, filter.project.as_deref()));
    body.push_str(&select(
        "environment",
        "Environment",
        &environments,
        filter.environment.as_deref(),
    ));
    body.push_str(&select("status", "Status", &statuses, filter.status.as_deref()));
    body.push_str("<button type=\"submit\">Filter</button></form>");

    if page.items.is_empty() {
        body.push_str(
            if query.before.is_some()
                || filter.project.is_some()
                || filter.environment.is_some()
                || filter.status.is_some()
            {
                "<p class=\"empty\">No deployments match. <a href=\"/\">Show all</a>.</p>"
            } else {
                "<p class=\"empty\">No deployments yet. A push to a deploy branch of a configured project starts one; \
             so does a redeploy through the API.</p>"
            },
        );
    } else {
        body.push_str(
            "<table class=\"list\" id=\"deployments\"><thead><tr><th>Status</th><th>Project</th><th>Commit</th>\
             <th>Image</th><th>Trigger</th><th>Duration</th><th>When</th><th></th></tr></thead><tbody>",
        );
        for view in &page.items {
            let d = &view.deployment;
            let is_live = d.status == DeploymentStatus::Live;
            let attempt = d.image_ref.is_empty();
            let digest = d
                .image_digest
                .as_deref()
                .map(|g| {
                    format!(
                        "<br><code class=\"muted\" title=\"{0}\">{1}</code>",
                        esc(g),
                        esc(g.get(..19).unwrap_or(g))
                    )
                })
                .unwrap_or_default();
            let mut actions = String::new();
            if d.status == DeploymentStatus::Replaced && d.image_digest.is_some() {
                actions.push_str(&action_button(
                    &format!("/deployments/{}/rollback", d.id),
                    "Roll back to this",
                    csrf.as_deref(),
                    "secondary",
                    Some("Put this deployment's image live again?"),
                ));
            }
            actions.push_str(&action_button(
                &format!("/deployments/{}/redeploy", d.id),
                "Redeploy",
                csrf.as_deref(),
                "secondary",
                Some("Build and deploy this commit again?"),
            ));
            let _ = write!(
                body,
                "<tr id=\"deployment-{id}\"{live_class}><td>{status}</td>\
                 <td><b>{project}</b><br><span class=\"muted\">{env}</span></td>\
                 <td>{sha} {msg}<br><span class=\"muted\">{author}{git_ref}</span></td>\
                 <td class=\"image\"><code>{image}</code>{digest}</td><td>{trigger}</td><td>{duration}</td>\
                 <td>{when}</td><td class=\"actions\"><a href=\"/jobs/{job}\">Job #{job}</a>{actions}</td></tr>",
                id = d.id,
                live_class = if is_live {
                    " class=\"live\""
                } else if attempt {
                    " class=\"attempt\""
                } else {
                    ""
                },
                status = badge(d.status.as_str()),
                project = esc(&d.project),
                env = esc(&d.environment),
                sha = commit_link(links_of(&state, &d.project), &d.sha),
                msg = esc(&headline(view.commit_message.as_deref())),
                author = esc(view.commit_author.as_deref().unwrap_or("")),
                git_ref = view
                    .git_ref
                    .as_deref()
                    .map(|r| format!(" · {}", esc(r.trim_start_matches("refs/heads/"))))
                    .unwrap_or_default(),
                image = if attempt {
                    "<span class=\"muted\">attempt: stopped before its rollout</span>".to_owned()
                } else {
                    esc(&d.image_ref).to_string()
                },
                trigger = esc(d.trigger.as_str()),
                duration = duration(Some(d.started_at), d.finished_at),
                when = time(d.started_at),
                job = d.job_id,
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(&html::pager(
        "/",
        &[
            ("project", filter.project.as_deref()),
            ("environment", filter.environment.as_deref()),
            ("status", filter.status.as_deref()),
        ],
        query.before.is_some(),
        page.next_before,
    ));
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame("Deployments", csrf.as_deref(), Nav::Deployments), &body),
    ))
}

pub async fn job_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(raw_id): Path<String>,
) -> Result<Response, PageError> {
    let id = super::job_id(&raw_id)?;
    viewer.may_read(&state, &format!("/jobs/{id}"))?;
    let job = jobs::get(&state.pool, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no job {id}.")))?;
    let steps = steps::list(&state.pool, id.get()).await?;
    let deployment = deployments::for_job(&state.pool, id.get()).await?;
    let total_lines = jobs::log_line_count(&state.pool, id).await?;
    let lines = logs::tail(&state.pool, id, LOG_TAIL).await?;
    let csrf = viewer.csrf();
    let links = links_of(&state, &job.project);

    let mut body = String::with_capacity(64 * 1024 + lines.len() * 120);
    let _ = write!(
        body,
        "<h1>Job #{id} <span id=\"job-state\">{state}</span></h1>\
         <p class=\"lead\">{kind} of <b>{project}</b> to <b>{env}</b> · {sha} {msg}</p>",
        state = badge(job.state.as_str()),
        kind = job.kind,
        project = esc(&job.project),
        env = esc(&job.environment),
        sha = commit_link(links, &job.sha),
        msg = esc(&headline(job.commit_message.as_deref())),
    );
    if job.held_for.is_some() && job.state == crate::job::JobState::AwaitingApproval {
        body.push_str(
            "<section class=\"card\" id=\"held\"><p class=\"notice\">This pull request comes from a fork. \
             Nothing of it runs, not even the checkout, until an admin approves it. Read its changes first: \
             approving runs its Dockerfile and its code on this runner's engine.</p>",
        );
        body.push_str(&action_button(
            &format!("/jobs/{id}/approve"),
            "Approve and run",
            csrf.as_deref(),
            "",
            Some("Run this pull request's code on the runner?"),
        ));
        body.push_str(&action_button(
            &format!("/jobs/{id}/reject"),
            "Reject",
            csrf.as_deref(),
            "danger",
            None,
        ));
        body.push_str("</section>");
    }
    if !job.state.is_terminal() {
        body.push_str("<span id=\"cancel-job\">");
        body.push_str(&action_button(
            &format!("/jobs/{id}/cancel"),
            "Cancel job",
            csrf.as_deref(),
            "danger",
            Some("Cancel this job?"),
        ));
        body.push_str("</span>");
    }
    body.push_str("<dl class=\"meta\">");
    let mut item = |name: &str, value: String| {
        if !value.is_empty() {
            let id = name.to_ascii_lowercase().replace(' ', "-");
            let _ = write!(body, "<dt>{name}</dt><dd id=\"job-{id}\">{value}</dd>");
        }
    };
    item("Trigger", esc(job.trigger.as_str()).to_string());
    item("Ref", esc(&job.git_ref).to_string());
    item("Commit", format!("<code>{}</code>", esc(&job.sha)));
    item("Author", esc(job.commit_author.as_deref().unwrap_or("")).to_string());
    if let Some(pr) = job.pull_request {
        item(
            "Pull request",
            match links {
                Some(links) => format!("<a href=\"{}\">#{pr}</a>", esc(&links.pull_request(pr))),
                None => format!("#{pr}"),
            },
        );
    }
    if let Some(delivery) = &job.delivery_id {
        item(
            "Delivery",
            format!("<a href=\"/deliveries#d-{0}\">{0}</a>", esc(delivery)),
        );
    }
    if let Some(target) = job.rollback_of {
        item("Rolls back to", format!("deployment {target}"));
    }
    if let Some(newer) = job.superseded_by {
        item("Superseded by", format!("<a href=\"/jobs/{newer}\">job #{newer}</a>"));
    }
    item("Queued", time(job.created_at));
    item("Started", job.started_at.map(time).unwrap_or_default());
    item("Finished", job.finished_at.map(time).unwrap_or_default());
    let took = duration(job.started_at, job.finished_at);
    item(
        "Duration",
        if took.is_empty() {
            "not started".to_owned()
        } else {
            took
        },
    );
    if job.attempts > 1 {
        item("Attempts", job.attempts.to_string());
    }
    body.push_str("</dl>");
    let _ = write!(
        body,
        "<p id=\"job-error\" class=\"error\"{}>{}</p>",
        if job.error.is_none() { " hidden" } else { "" },
        esc(job.error.as_deref().unwrap_or(""))
    );

    if let Some(d) = &deployment {
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Deployment {id} {status}</h2><dl class=\"meta\"><dt>Image</dt><dd><code>{image}</code></dd>",
            id = d.id,
            status = badge(d.status.as_str()),
            image = esc(&d.image_ref),
        );
        if let Some(digest) = &d.image_digest {
            let _ = write!(body, "<dt>Digest</dt><dd><code>{}</code></dd>", esc(digest));
        }
        if let Some(url) = &d.url {
            let _ = write!(body, "<dt>URL</dt><dd><a href=\"{0}\">{0}</a></dd>", esc(url));
        }
        if let Some(replaced) = d.replaced_id {
            let _ = write!(body, "<dt>Replaced</dt><dd>deployment {replaced}</dd>");
        }
        if let Some(by) = d.replaced_by {
            let _ = write!(body, "<dt>Replaced by</dt><dd>deployment {by}</dd>");
        }
        if let Some(error) = &d.error {
            let _ = write!(body, "<dt>Error</dt><dd>{}</dd>", esc(error));
        }
        for (name, value) in d.outputs.as_ref().and_then(|o| o.as_object()).into_iter().flatten() {
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            let _ = write!(body, "<dt>{}</dt><dd><code>{}</code></dd>", esc(name), esc(&text));
        }
        body.push_str("</dl>");
        if d.status == DeploymentStatus::Replaced && d.image_digest.is_some() {
            body.push_str(&action_button(
                &format!("/deployments/{}/rollback", d.id),
                "Roll back to this",
                csrf.as_deref(),
                "secondary",
                Some("Put this deployment's image live again?"),
            ));
        }
        body.push_str("</section>");
    }

    if let Some(problem) = crate::store::reports::error_of(&state.pool, id.get()).await? {
        let _ = write!(body, "<p class=\"warning\" id=\"report-error\">{}</p>", esc(&problem));
    }
    if let Some(summary) = &job.plan_summary {
        let _ = write!(
            body,
            "<section class=\"card\" id=\"plan\"><h2>Terraform plan: {}</h2>",
            esc(summary["headline"].as_str().unwrap_or(""))
        );
        if job.state == crate::job::JobState::AwaitingApproval && job.approval.is_none() {
            body.push_str("<p class=\"notice\">This deploy waits for approval of the plan.</p>");
            body.push_str(&action_button(
                &format!("/jobs/{id}/approve"),
                "Approve and apply",
                csrf.as_deref(),
                "",
                Some("Apply this plan?"),
            ));
            body.push_str(&action_button(
                &format!("/jobs/{id}/reject"),
                "Reject",
                csrf.as_deref(),
                "danger",
                None,
            ));
        }
        if let Some(answer) = &job.approval {
            let _ = write!(body, "<p>Plan {}.</p>", esc(answer));
        }
        body.push_str("<ul class=\"changes\">");
        for change in summary["resources"].as_array().into_iter().flatten() {
            let actions: Vec<&str> = change["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .collect();
            let _ = write!(
                body,
                "<li><code>{}</code> {}</li>",
                esc(&actions.join("/")),
                esc(change["address"].as_str().unwrap_or(""))
            );
        }
        body.push_str("</ul>");
        if let Some(plan) = crate::store::artifacts::get(&state.pool, id.get(), "plan.txt").await? {
            let _ = write!(
                body,
                "<details><summary>Plan text</summary><pre class=\"plan\">{}</pre></details>",
                esc(&plan.content)
            );
        }
        body.push_str("</section>");
    }
    // A failed job opens with where it failed and that step's last lines.
    if job.state == crate::job::JobState::Failed
        && let Some(failed) = steps.iter().find(|s| s.state == StepState::Failed)
    {
        let step_lines = logs::step_tail(&state.pool, id, &failed.name, 60).await?;
        let _ = write!(
            body,
            "<section class=\"card failure\" id=\"failure\"><h2>Failed at {name}</h2><p class=\"error\">{error}</p>\
             <details open><summary>The last lines of {name}</summary><pre class=\"step-log\">",
            name = esc(&failed.name),
            error = esc(failed.error.as_deref().or(job.error.as_deref()).unwrap_or("")),
        );
        for line in &step_lines {
            let _ = writeln!(
                body,
                "<span class=\"l {}\">{}</span>",
                stream_class(&line.stream),
                esc(&line.line)
            );
        }
        body.push_str("</pre></details></section>");
    }
    body.push_str("<h2>Steps</h2>");
    if steps.is_empty() {
        body.push_str("<p class=\"empty\" id=\"no-steps\">No steps yet: the job has not started.</p>");
    }
    body.push_str(
        "<table class=\"list\" id=\"steps\"><thead><tr><th>Step</th><th>State</th><th>Duration</th><th></th></tr></thead><tbody>",
    );
    for step in &steps {
        let _ = write!(
            body,
            "<tr data-step=\"{name}\"><td>{name}</td><td>{state}</td><td>{duration}</td><td>{error}</td></tr>",
            name = esc(&step.name),
            state = badge(step.state.as_str()),
            duration = duration(step.started_at, step.finished_at),
            error = esc(step.error.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table>");

    let _ = write!(
        body,
        "<h2>Log <a class=\"small\" href=\"/api/jobs/{id}/logs\">plain text</a></h2>"
    );
    if total_lines > lines.len() as i64 {
        let _ = write!(
            body,
            "<p class=\"muted\">Showing the last {} of {} lines.</p>",
            lines.len(),
            total_lines
        );
    }
    let after = lines.last().map_or(0, |l| l.seq);
    let _ = write!(
        body,
        "<pre id=\"log\" data-job=\"{id}\" data-after=\"{after}\" data-live=\"{}\">",
        !job.state.is_terminal()
    );
    for line in &lines {
        let _ = writeln!(
            body,
            "<span class=\"l {}\" data-seq=\"{}\"><time data-ms=\"{}\" class=\"t\"></time>{}</span>",
            stream_class(&line.stream),
            line.seq,
            line.at,
            esc(&line.line)
        );
    }
    body.push_str("</pre>");
    if lines.is_empty() {
        body.push_str("<p class=\"empty\" id=\"no-log\">No log lines yet.</p>");
    }
    let title = format!("Job #{id}");
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame(&title, csrf.as_deref(), Nav::None), &body),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveriesQuery {
    before: Option<i64>,
}

pub async fn deliveries_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Response, PageError> {
    viewer.may_read(&state, "/deliveries")?;
    let page = deliveries::list(&state.pool, query.before, PAGE_SIZE).await?;
    let csrf = viewer.csrf();
    let mut body = String::with_capacity(32 * 1024);
    body.push_str("<h1>Deliveries</h1>");
    if page.items.is_empty() {
        body.push_str(
            "<p class=\"empty\">No webhook deliveries yet. Point a GitHub webhook at <code>/webhooks/github</code> \
             (content type application/json, the project's secret, push and pull request events).</p>",
        );
    } else {
        body.push_str(
            "<table class=\"list\" id=\"deliveries\"><thead><tr><th>Received</th><th>Event</th><th>Repository</th>\
             <th>Ref</th><th>Outcome</th><th>Job</th><th></th></tr></thead><tbody>",
        );
        for d in &page.items {
            let event = match &d.action {
                Some(action) => format!("{} <span class=\"muted\">{}</span>", esc(&d.event), esc(action)),
                None => esc(&d.event).to_string(),
            };
            let replayable = d.body_kept && matches!(d.event.as_str(), "push" | "pull_request");
            let _ = write!(
                body,
                "<tr id=\"d-{did}\"><td>{when}</td><td>{event}<br><code class=\"muted\">{did}</code></td>\
                 <td>{repo}</td><td>{git_ref}{sha}</td><td>{outcome}<br><span class=\"muted\">{reason}</span></td>\
                 <td>{job}</td><td class=\"actions\">{replay}</td></tr>",
                did = esc(&d.delivery_id),
                when = time(d.received_at),
                repo = esc(d.repository.as_deref().unwrap_or("")),
                git_ref = esc(d.git_ref.as_deref().unwrap_or("")),
                sha = d
                    .sha
                    .as_deref()
                    .map(|s| format!(
                        " {}",
                        commit_link(d.project.as_deref().and_then(|p| links_of(&state, p)), s)
                    ))
                    .unwrap_or_default(),
                outcome = badge(&d.outcome),
                reason = esc(d.reason.as_deref().unwrap_or("")),
                job = d
                    .job_id
                    .map(|j| format!("<a href=\"/jobs/{j}\">#{j}</a>"))
                    .unwrap_or_default(),
                replay = if replayable {
                    action_button(
                        &format!("/deliveries/{}/replay", d.delivery_id),
                        "Replay",
                        csrf.as_deref(),
                        "secondary",
                        Some("Queue what this delivery asks for again?"),
                    )
                } else {
                    String::new()
                },
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(&html::pager(
        "/deliveries",
        &[],
        query.before.is_some(),
        page.next_before,
    ));
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame("Deliveries", csrf.as_deref(), Nav::Deliveries), &body),
    ))
}
