//! The Jobs page: every job, deploy and verify, newest first, with where a failed one
//! stopped and why, filtered by project, kind and state, keyset-paged.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::PageError;
use super::auth::Viewer;
use super::html::{self, Nav, badge, commit_link, esc, headline, select, time};
use crate::job::{JobKind, JobState};
use crate::store::jobs::{self, JobFilter};
use crate::web::AppState;

const PAGE_SIZE: usize = 50;

#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    project: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    before: Option<i64>,
}

pub async fn jobs_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<JobsQuery>,
) -> Result<Response, PageError> {
    viewer.may_read(&state, "/jobs")?;
    let given = |value: &Option<String>| value.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
    let (project, kind, job_state) = (given(&query.project), given(&query.kind), given(&query.state));
    let filter = JobFilter {
        project: project.clone(),
        kind: match &kind {
            Some(k) => {
                Some(JobKind::parse(k).ok_or_else(|| PageError::BadRequest(format!("There is no job kind {k:?}.")))?)
            }
            None => None,
        },
        state: match &job_state {
            Some(s) => {
                Some(JobState::parse(s).ok_or_else(|| PageError::BadRequest(format!("There is no job state {s:?}.")))?)
            }
            None => None,
        },
    };
    let page = jobs::list(&state.pool, &filter, query.before, PAGE_SIZE).await?;

    let mut body = String::with_capacity(32 * 1024);
    body.push_str("<h1>Jobs</h1><form class=\"filters\" method=\"get\" action=\"/jobs\">");
    let projects: Vec<String> = state.config.projects.iter().map(|p| p.name.to_string()).collect();
    let kinds: Vec<String> = JobKind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    let states: Vec<String> = JobState::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    body.push_str(&select("project", "Project", &projects, project.as_deref()));
    body.push_str(&select("kind", "Kind", &kinds, kind.as_deref()));
    body.push_str(&select("state", "State", &states, job_state.as_deref()));
    body.push_str("<button type=\"submit\">Filter</button></form>");

    if page.items.is_empty() {
        body.push_str(if query.before.is_some() || project.is_some() || kind.is_some() || job_state.is_some() {
            "<p class=\"empty\">No jobs match. <a href=\"/jobs\">Show all</a>.</p>"
        } else {
            "<p class=\"empty\">No jobs yet. A push to a deploy branch or a pull request against one starts one.</p>"
        });
    } else {
        body.push_str(
            "<table class=\"list\" id=\"jobs\"><thead><tr><th>State</th><th>Job</th><th>Project</th><th>Commit</th>\
             <th>Trigger</th><th>Failed at</th><th>Queued</th></tr></thead><tbody>",
        );
        for summary in &page.items {
            let job = &summary.job;
            let links = state.config.project(&job.project).map(|p| &p.links);
            let error = job
                .error
                .as_deref()
                .and_then(|e| e.lines().next())
                .map(|line| format!("<br><span class=\"error-line\">{}</span>", esc(&headline(Some(line)))))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr id=\"job-{id}\"><td>{state}</td><td><a href=\"/jobs/{id}\">#{id}</a> {kind}</td>\
                 <td><b>{project}</b><br><span class=\"muted\">{env}</span></td><td>{sha} {msg}</td>\
                 <td>{trigger}</td><td>{step}{error}</td><td>{when}</td></tr>",
                id = job.id,
                state = badge(job.state.as_str()),
                kind = job.kind,
                project = esc(&job.project),
                env = esc(&job.environment),
                sha = commit_link(links, &job.sha),
                msg = esc(&headline(job.commit_message.as_deref())),
                trigger = esc(job.trigger.as_str()),
                step = summary
                    .failed_step
                    .as_deref()
                    .map(|s| format!("<b>{}</b>", esc(s)))
                    .unwrap_or_default(),
                when = time(job.created_at),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(&html::pager(
        "/jobs",
        &[
            ("project", project.as_deref()),
            ("kind", kind.as_deref()),
            ("state", job_state.as_deref()),
        ],
        query.before.is_some(),
        page.next_before,
    ));
    let csrf = viewer.csrf();
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame("Jobs", csrf.as_deref(), Nav::Jobs), &body),
    ))
}
