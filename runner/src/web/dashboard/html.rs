//! The pieces every page is made of: the page frame, times, badges, links, filter forms,
//! pagers and action buttons. Pages are `maud` templates, which escape every value they
//! are given unless it is already `Markup`.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::utf8_percent_encode;

use crate::config::RepoLinks;

/// Percent-encodes a query-string value.
pub fn url_value(text: &str) -> String {
    utf8_percent_encode(text, crate::percent::NON_UNRESERVED).to_string()
}

/// What the page frame needs to know about who is looking.
pub struct Frame<'a> {
    pub title: &'a str,
    pub logged_in: bool,
    pub csrf: Option<&'a str>,
    pub nav: Nav,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Deployments,
    Jobs,
    Deliveries,
    Previews,
    None,
}

pub fn page(frame: &Frame<'_>, content: &Markup) -> Markup {
    let active = |nav: Nav| (frame.nav == nav).then_some("active");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (frame.title) " · runner" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "runner" }
                    nav {
                        a href="/" class=[active(Nav::Deployments)] { "Deployments" }
                        a href="/jobs" class=[active(Nav::Jobs)] { "Jobs" }
                        a href="/deliveries" class=[active(Nav::Deliveries)] { "Deliveries" }
                        a href="/previews" class=[active(Nav::Previews)] { "Previews" }
                    }
                    div.who {
                        @match (frame.logged_in, frame.csrf) {
                            (true, Some(csrf)) => {
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.link { "Log out" }
                                }
                            }
                            _ => { a href="/login" { "Log in" } }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
}

pub fn respond(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Html(page.into_string()),
    )
        .into_response()
}

/// A time the browser shows in the viewer's zone (and as "3 min ago"); the UTC text is
/// what shows without script.
pub fn time(ms: i64) -> Markup {
    let iso = crate::telemetry::format_ms(ms);
    html! { time datetime=(iso) data-ms=(ms) { (iso) } }
}

pub use crate::domain::took;

/// A duration cell: the time taken, "running" once started, nothing before.
pub fn duration(start: Option<i64>, end: Option<i64>) -> Markup {
    html! {
        @match took(start, end) {
            Some(text) if text.is_empty() => span.muted { "running" },
            Some(text) => (text),
            None => {},
        }
    }
}

pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge s-" (state) } { (state) } }
}

/// The first line of a commit message, shortened for a table cell.
pub fn headline(message: Option<&str>) -> String {
    let line = message.and_then(|m| m.lines().next()).unwrap_or("");
    let mut short: String = line.chars().take(90).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

/// A URL from outside the runner (a deployment's URL, a terraform output): a link only
/// when it is a web address, else plain text that nothing follows.
pub fn outside_link(url: &str) -> Markup {
    html! {
        @if crate::domain::is_web_url(url) { a href=(url) rel="noopener noreferrer" { (url) } } @else { code { (url) } }
    }
}

/// The commit's short SHA, linked to the commit's page on the forge when the project is known.
pub fn commit_link(links: Option<&RepoLinks>, sha: &str) -> Markup {
    let short = sha.get(..7).unwrap_or(sha);
    html! {
        @match links {
            Some(links) => a.sha href=(links.commit(sha)) { (short) },
            None => code.sha { (short) },
        }
    }
}

/// A `<select>` of a GET filter form, "all" first; `chosen` stays selected.
pub fn select(name: &str, label: &str, options: &[String], chosen: Option<&str>) -> Markup {
    html! {
        label {
            (label) " "
            select name=(name) {
                option value="" { "all" }
                @for option in options {
                    option selected[chosen == Some(option.as_str())] { (option) }
                }
            }
        }
    }
}

/// The pager of a newest-first list at `path`: "← Newest" once the list is paged back,
/// "Older →" while older rows remain; the list's filters stay in both links.
pub fn pager(path: &str, filters: &[(&str, Option<&str>)], paged: bool, next_before: Option<i64>) -> Markup {
    let keep: String = filters
        .iter()
        .filter_map(|(name, value)| value.map(|v| format!("&{name}={}", url_value(v))))
        .collect();
    let newest = match keep.trim_start_matches('&') {
        "" => path.to_owned(),
        query => format!("{path}?{query}"),
    };
    html! {
        nav.pager {
            @if paged { a href=(newest) { "← Newest" } }
            @if let Some(next) = next_before { a href={ (path) "?before=" (next) (keep) } { "Older →" } }
        }
    }
}

/// A button that posts to `action` with the session's CSRF token; nothing without a
/// session. `confirm` is asked first (by the page's script).
pub fn action_button(action: &str, label: &str, csrf: Option<&str>, class: &str, confirm: Option<&str>) -> Markup {
    html! {
        @if let Some(csrf) = csrf {
            form method="post" action=(action) class="inline" data-confirm=[confirm] {
                input type="hidden" name="csrf" value=(csrf);
                button class=(class) { (label) }
            }
        }
    }
}

/// "Roll back to this" for a deployment that was replaced and whose image is pinned.
pub fn rollback_button(deployment: &crate::store::deployments::Deployment, csrf: Option<&str>) -> Markup {
    let possible = deployment.status == crate::job::DeploymentStatus::Replaced && deployment.image_digest.is_some();
    html! {
        @if possible {
            (action_button(
                &format!("/deployments/{}/rollback", deployment.id),
                "Roll back to this",
                csrf,
                "secondary",
                Some("Put this deployment's image live again?"),
            ))
        }
    }
}

/// A page of one message: errors, refusals.
pub fn message_page(title: &str, message: &str, login_link: bool) -> Markup {
    page(
        &Frame {
            title,
            logged_in: false,
            csrf: None,
            nav: Nav::None,
        },
        &html! {
            section.narrow {
                h1 { (title) }
                p.error role="alert" { (message) }
                @if login_link { p { a.button href="/login" { "Log in" } } }
                p { a href="/" { "Back to deployments" } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_text_and_attributes() {
        let hostile = "<script>alert(\"x\" & 'y')</script>";
        let markup = action_button(hostile, hostile, Some(hostile), "secondary", Some(hostile)).into_string();
        assert!(!markup.contains("<script>"), "{markup}");
        assert!(
            markup.contains("&lt;script&gt;alert(&quot;x&quot; &amp; 'y')&lt;/script&gt;"),
            "{markup}"
        );
        assert!(!badge(hostile).into_string().contains("<script>"));
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(url_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn durations_read_in_seconds_or_minutes() {
        assert_eq!(took(Some(0), Some(3_250)).as_deref(), Some("3.2s"));
        assert_eq!(took(Some(0), Some(65_000)).as_deref(), Some("1m 05s"));
        assert_eq!(took(Some(0), None).as_deref(), Some(""));
        assert_eq!(took(None, None), None);
    }
}
