//! `/deliveries`: every webhook delivery the runner answered, what it made of it, and a
//! replay button for those whose body is still kept.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::PageError;
use super::super::auth::Viewer;
use super::super::html::{self, Nav, action_button, badge, commit_link, time};
use super::{PAGE_SIZE, links_of};
use crate::store::Page;
use crate::store::deliveries::{self, Delivery};
use crate::web::AppState;

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
    let content = render(&state, &page, csrf.as_deref(), query.before.is_some());
    Ok(html::respond(
        StatusCode::OK,
        html::page(&viewer.frame("Deliveries", csrf.as_deref(), Nav::Deliveries), &content),
    ))
}

fn render(state: &AppState, page: &Page<Delivery>, csrf: Option<&str>, paged: bool) -> Markup {
    html! {
        h1 { "Deliveries" }
        @if page.items.is_empty() {
            p.empty {
                "No webhook deliveries yet. Point the repository's webhook at " code { "/webhooks/github" } ", "
                code { "/webhooks/gitea" } " (Gitea, Forgejo) or " code { "/webhooks/gitlab" }
                " (content type application/json, the project's secret, push and pull request events)."
            }
        } @else {
            table.list #deliveries {
                thead { tr {
                    th { "Received" } th { "Event" } th { "Repository" } th { "Ref" } th { "Outcome" } th { "Job" } th {}
                } }
                tbody {
                    @for d in &page.items {
                        @let replayable = d.body_kept
                            && matches!(d.event.as_str(), "push" | "pull_request" | "tag_push" | "merge_request");
                        tr id={ "d-" (d.delivery_id) } {
                            td { (time(d.received_at)) }
                            td {
                                (d.event)
                                @if let Some(action) = &d.action { " " span.muted { (action) } }
                                br; code.muted { (d.delivery_id) }
                            }
                            td {
                                (d.repository.as_deref().unwrap_or(""))
                                @if let Some(forge) = d.project.as_deref().and_then(|p| state.config.project(p)).map(|p| p.links.kind()) {
                                    br; span.muted { (forge) }
                                }
                            }
                            td {
                                (d.git_ref.as_deref().unwrap_or(""))
                                @if let Some(sha) = &d.sha {
                                    " " (commit_link(d.project.as_deref().and_then(|p| links_of(state, p)), sha))
                                }
                            }
                            td { (badge(&d.outcome)) br; span.muted { (d.reason.as_deref().unwrap_or("")) } }
                            td { @if let Some(job) = d.job_id { a href={ "/jobs/" (job) } { "#" (job) } } }
                            td.actions {
                                @if replayable {
                                    (action_button(
                                        &format!("/deliveries/{}/replay", d.delivery_id),
                                        "Replay",
                                        csrf,
                                        "secondary",
                                        Some("Queue what this delivery asks for again?"),
                                    ))
                                }
                            }
                        }
                    }
                }
            }
        }
        (html::pager("/deliveries", &[], paged, page.next_before))
    }
}
