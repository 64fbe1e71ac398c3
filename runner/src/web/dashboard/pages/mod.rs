//! One file per page: each loads what it shows into a view, then renders the view.

mod deliveries;
mod deployments;
mod job;
mod jobs;
pub mod login;
mod previews;

pub use deliveries::deliveries_page;
pub use deployments::deployments_page;
pub use job::job_page;
pub use jobs::jobs_page;
pub use previews::previews_page;

use crate::config::RepoLinks;
use crate::web::AppState;

/// Newest-first lists show this many rows a page.
const PAGE_SIZE: usize = 50;

/// A query parameter that was given and is not blank.
fn given(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}

fn links_of<'a>(state: &'a AppState, project: &str) -> Option<&'a RepoLinks> {
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
