//! `/previews`: pull requests' own environments, open ones first, with a *Remove* action.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::super::PageError;
use super::super::auth::Viewer;
use super::super::html::{self, Nav, action_button, badge, commit_link, time};
use super::links_of;
use crate::job::PreviewState;
use crate::store::previews::Preview;
use crate::web::AppState;

pub async fn previews_page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    viewer.may_read(&state, "/previews")?;
    let previews = state.operations.previews().await?;
    let csrf = viewer.csrf();
    let content = render(&state, &previews, csrf.as_deref());
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame("Previews", csrf.as_deref(), Nav::Previews), &content),
    ))
}

fn render(state: &AppState, previews: &[Preview], csrf: Option<&str>) -> Markup {
    let configured = state.config.projects.iter().any(|p| p.previews.is_some());
    html! {
        h1 { "Previews" }
        @if previews.is_empty() {
            p.empty {
                @if configured {
                    "No previews yet. A pull request whose verify job passes gets one, at its own address."
                } @else {
                    "No project has previews: add [projects.previews] to a project's config to give each pull request its own environment."
                }
            }
        } @else {
            table.list #previews {
                thead { tr {
                    th { "State" } th { "Project" } th { "Pull request" } th { "Commit" } th { "Address" }
                    th { "Last push" } th {}
                } }
                tbody {
                    @for preview in previews { (row(state, preview, csrf)) }
                }
            }
        }
    }
}

fn row(state: &AppState, preview: &Preview, csrf: Option<&str>) -> Markup {
    let links = links_of(state, &preview.project);
    let open = matches!(preview.state, PreviewState::Deploying | PreviewState::Live);
    html! {
        tr id={ "preview-" (preview.project) "-" (preview.number) } {
            td {
                (badge(preview.state.as_str()))
                @if let Some(removal) = preview.removal { br; span.muted { (removal.describe()) } }
            }
            td { b { (preview.project) } br; span.muted { (preview.environment()) } }
            td {
                @match links {
                    Some(links) => a href=(links.pull_request(preview.number)) { "#" (preview.number) },
                    None => { "#" (preview.number) }
                }
            }
            td { @if let Some(sha) = &preview.sha { (commit_link(links, sha)) } }
            td {
                @if preview.state == PreviewState::Live && crate::domain::is_web_url(&preview.url) {
                    a href=(preview.url) { (preview.url) }
                } @else {
                    span.muted { (preview.url) }
                }
            }
            td { (time(preview.pushed_at)) }
            td.actions {
                @if let Some(job) = preview.job_id { a href={ "/jobs/" (job) } { "Job #" (job) } }
                @if open {
                    (action_button(
                        &format!("/projects/{}/previews/{}/remove", preview.project, preview.number),
                        "Remove",
                        csrf,
                        "secondary",
                        Some("Remove this preview (its containers, route and images)?"),
                    ))
                }
            }
        }
    }
}
