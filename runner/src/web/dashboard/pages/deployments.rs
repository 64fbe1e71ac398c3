//! `/`: what went live where, newest first, with what is running now above.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::PageError;
use super::super::auth::Viewer;
use super::super::html::{self, Nav, action_button, badge, commit_link, duration, headline, select, time};
use super::{PAGE_SIZE, given, links_of};
use crate::job::DeploymentStatus;
use crate::store::Page;
use crate::store::deployments::{self, DeploymentFilter, DeploymentView};
use crate::store::jobs::{self, Job};
use crate::web::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct DeploymentsQuery {
    project: Option<String>,
    environment: Option<String>,
    status: Option<String>,
    before: Option<i64>,
}

struct View<'a> {
    state: &'a AppState,
    csrf: Option<String>,
    filter: DeploymentFilter,
    paged: bool,
    active: Vec<Job>,
    page: Page<DeploymentView>,
}

pub async fn deployments_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<DeploymentsQuery>,
) -> Result<Response, PageError> {
    viewer.may_read(&state, "/")?;
    let filter = DeploymentFilter {
        project: given(query.project.as_ref()),
        environment: given(query.environment.as_ref()),
        status: given(query.status.as_ref()),
    };
    if let Some(status) = &filter.status
        && DeploymentStatus::parse(status).is_none()
    {
        return Err(PageError::BadRequest(format!(
            "There is no deployment status {status:?}."
        )));
    }
    let view = View {
        page: deployments::list_views(&state.pool, &filter, query.before, PAGE_SIZE).await?,
        active: jobs::active(&state.pool, 10).await?,
        csrf: viewer.csrf(),
        filter,
        paged: query.before.is_some(),
        state: &state,
    };
    let content = render(&view);
    Ok(html::respond(
        StatusCode::OK,
        html::page(
            &viewer.frame("Deployments", view.csrf.as_deref(), Nav::Deployments),
            &content,
        ),
    ))
}

/// The other environments of the deployment's project.
fn promotion_targets(view: &View<'_>, deployment: &crate::store::deployments::Deployment) -> Vec<String> {
    view.state
        .config
        .project(deployment.project.as_str())
        .map(|project| {
            project
                .environments
                .iter()
                .filter(|e| e.name != deployment.environment)
                .map(|e| e.name.to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn render(view: &View<'_>) -> Markup {
    let config = &view.state.config;
    let projects: Vec<String> = config.projects.iter().map(|p| p.name.to_string()).collect();
    let mut environments: Vec<String> = config
        .projects
        .iter()
        .flat_map(|p| p.environments.iter().map(|e| e.name.to_string()))
        .collect();
    environments.sort();
    environments.dedup();
    let statuses: Vec<String> = DeploymentStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    let filter = &view.filter;
    let filtered = view.paged || filter.project.is_some() || filter.environment.is_some() || filter.status.is_some();
    html! {
        h1 { "Deployments" }
        @if !view.active.is_empty() {
            section.card {
                h2 { "In progress" }
                ul.jobs {
                    @for job in &view.active {
                        li {
                            (badge(job.state.as_str())) " "
                            a href={ "/jobs/" (job.id) } { "#" (job.id) }
                            " " (job.kind) " of " b { (job.project) } " to " (job.environment) " · "
                            (commit_link(links_of(view.state, &job.project), &job.sha)) " "
                            (headline(job.commit_message.as_deref())) " · " (time(job.created_at))
                        }
                    }
                }
            }
        }
        // Filters: a plain GET form, so every view has a URL.
        form.filters method="get" action="/" {
            (select("project", "Project", &projects, filter.project.as_deref()))
            (select("environment", "Environment", &environments, filter.environment.as_deref()))
            (select("status", "Status", &statuses, filter.status.as_deref()))
            button type="submit" { "Filter" }
        }
        @if view.page.items.is_empty() {
            @if filtered {
                p.empty { "No deployments match. " a href="/" { "Show all" } "." }
            } @else {
                p.empty {
                    "No deployments yet. A push to a deploy branch of a configured project starts one; \
                     so does a redeploy through the API."
                }
            }
        } @else {
            table.list #deployments {
                thead { tr {
                    th { "Status" } th { "Project" } th { "Commit" } th { "Image" } th { "Trigger" }
                    th { "Duration" } th { "When" } th {}
                } }
                tbody {
                    @for row in &view.page.items { (deployment_row(view, row)) }
                }
            }
        }
        (html::pager(
            "/",
            &[
                ("project", filter.project.as_deref()),
                ("environment", filter.environment.as_deref()),
                ("status", filter.status.as_deref()),
            ],
            view.paged,
            view.page.next_before,
        ))
    }
}

fn deployment_row(view: &View<'_>, row: &DeploymentView) -> Markup {
    let d = &row.deployment;
    let attempt = d.image_ref.is_empty();
    let class = if d.status == DeploymentStatus::Live {
        Some("live")
    } else if attempt {
        Some("attempt")
    } else {
        None
    };
    let csrf = view.csrf.as_deref();
    html! {
        tr id={ "deployment-" (d.id) } class=[class] {
            td { (badge(d.status.as_str())) }
            td { b { (d.project) } br; span.muted { (d.environment) } }
            td {
                (commit_link(links_of(view.state, &d.project), &d.sha)) " " (headline(row.commit_message.as_deref()))
                br;
                span.muted {
                    (row.commit_author.as_deref().unwrap_or(""))
                    @if let Some(git_ref) = &row.git_ref { " · " (git_ref.trim_start_matches("refs/heads/")) }
                }
            }
            td.image {
                code {
                    @if attempt { span.muted { "attempt: stopped before its rollout" } } @else { (d.image_ref) }
                }
                @if let Some(digest) = &d.image_digest {
                    br; code.muted title=(digest) { (digest.get(..19).unwrap_or(digest)) }
                }
            }
            td { (d.trigger.as_str()) }
            td { (duration(Some(d.started_at), d.finished_at)) }
            td { (time(d.started_at)) }
            td.actions {
                a href={ "/jobs/" (d.job_id) } { "Job #" (d.job_id) }
                (html::rollback_button(d, csrf))
                // A live deployment can go live, as it is, in the project's other environments.
                @if d.status == DeploymentStatus::Live && d.image_digest.is_some() {
                    @for target in promotion_targets(view, d) {
                        (action_button(
                            &format!("/deployments/{}/promote/{target}", d.id),
                            &format!("Promote to {target}"),
                            csrf,
                            "secondary",
                            Some(&format!("Put this image live in {target}, without rebuilding it?")),
                        ))
                    }
                }
                (action_button(
                    &format!("/deployments/{}/redeploy", d.id),
                    "Redeploy",
                    csrf,
                    "secondary",
                    Some("Build and deploy this commit again?"),
                ))
            }
        }
    }
}
