//! `/jobs`: every job, deploy and verify, newest first, with where a failed one stopped
//! and why, filtered by project, kind and state, keyset-paged.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::PageError;
use super::super::auth::Viewer;
use super::super::html::{self, Nav, badge, commit_link, headline, select, time};
use super::{PAGE_SIZE, given, links_of};
use crate::job::{JobKind, JobState};
use crate::store::Page;
use crate::store::jobs::{self, JobFilter, JobSummary};
use crate::web::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    project: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    before: Option<i64>,
}

struct View<'a> {
    state: &'a AppState,
    project: Option<String>,
    kind: Option<String>,
    job_state: Option<String>,
    paged: bool,
    page: Page<JobSummary>,
}

pub async fn jobs_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<JobsQuery>,
) -> Result<Response, PageError> {
    viewer.may_read(&state, "/jobs")?;
    let (project, kind, job_state) = (
        given(query.project.as_ref()),
        given(query.kind.as_ref()),
        given(query.state.as_ref()),
    );
    let filter = JobFilter {
        project: project.clone(),
        kind: kind
            .as_deref()
            .map(|k| JobKind::parse(k).ok_or_else(|| PageError::BadRequest(format!("There is no job kind {k:?}."))))
            .transpose()?,
        state: job_state
            .as_deref()
            .map(|s| JobState::parse(s).ok_or_else(|| PageError::BadRequest(format!("There is no job state {s:?}."))))
            .transpose()?,
    };
    let view = View {
        page: jobs::list(&state.pool, &filter, query.before, PAGE_SIZE).await?,
        state: &state,
        project,
        kind,
        job_state,
        paged: query.before.is_some(),
    };
    let content = render(&view);
    let csrf = viewer.csrf();
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame("Jobs", csrf.as_deref(), Nav::Jobs), &content),
    ))
}

fn render(view: &View<'_>) -> Markup {
    let projects: Vec<String> = view.state.config.projects.iter().map(|p| p.name.to_string()).collect();
    let kinds: Vec<String> = JobKind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    let states: Vec<String> = JobState::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    let filtered = view.paged || view.project.is_some() || view.kind.is_some() || view.job_state.is_some();
    html! {
        h1 { "Jobs" }
        form.filters method="get" action="/jobs" {
            (select("project", "Project", &projects, view.project.as_deref()))
            (select("kind", "Kind", &kinds, view.kind.as_deref()))
            (select("state", "State", &states, view.job_state.as_deref()))
            button type="submit" { "Filter" }
        }
        @if view.page.items.is_empty() {
            @if filtered {
                p.empty { "No jobs match. " a href="/jobs" { "Show all" } "." }
            } @else {
                p.empty { "No jobs yet. A push to a deploy branch or a pull request against one starts one." }
            }
        } @else {
            table.list #jobs {
                thead { tr {
                    th { "State" } th { "Job" } th { "Project" } th { "Commit" } th { "Trigger" } th { "Failed at" } th { "Queued" }
                } }
                tbody {
                    @for summary in &view.page.items {
                        @let job = &summary.job;
                        tr id={ "job-" (job.id) } {
                            td { (badge(job.state.as_str())) }
                            td { a href={ "/jobs/" (job.id) } { "#" (job.id) } " " (job.kind) }
                            td { b { (job.project) } br; span.muted { (job.environment) } }
                            td {
                                (commit_link(links_of(view.state, &job.project), &job.sha)) " "
                                (headline(job.commit_message.as_deref()))
                            }
                            td { (job.trigger.as_str()) }
                            td {
                                @if let Some(step) = &summary.failed_step { b { (step) } }
                                @if let Some(line) = job.error.as_deref().and_then(|e| e.lines().next()) {
                                    br; span.error-line { (headline(Some(line))) }
                                }
                            }
                            td { (time(job.created_at)) }
                        }
                    }
                }
            }
        }
        (html::pager(
            "/jobs",
            &[
                ("project", view.project.as_deref()),
                ("kind", view.kind.as_deref()),
                ("state", view.job_state.as_deref()),
            ],
            view.paged,
            view.page.next_before,
        ))
    }
}
