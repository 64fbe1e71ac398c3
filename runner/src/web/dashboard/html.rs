//! HTML building blocks: escaping, the page frame, times and badges.
//!
//! Pages are written with `write!` into a `String`; every value that did not come from
//! this file goes through [`esc`] (text and attribute values alike).

use crate::config::RepoLinks;
use std::fmt::{self, Display, Write};

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attribute values.
pub struct Esc<'a>(pub &'a str);

pub fn esc(text: &str) -> Esc<'_> {
    Esc(text)
}

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(position) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..position])?;
            f.write_str(match rest.as_bytes()[position] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[position + 1..];
        }
        f.write_str(rest)
    }
}

/// Percent-encodes a query-string value.
pub fn url_value(text: &str) -> String {
    crate::percent::encode(text)
}

/// A `<select>` of a GET filter form, "all" first; `chosen` stays selected.
pub fn select(name: &str, label: &str, options: &[String], chosen: Option<&str>) -> String {
    let mut out = format!("<label>{label} <select name=\"{name}\"><option value=\"\">all</option>");
    for option in options {
        let selected = if chosen == Some(option.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{}</option>", esc(option));
    }
    out.push_str("</select></label>");
    out
}

/// The pager of a newest-first list at `path`: "← Newest" once the list is paged back,
/// "Older →" while older rows remain; the list's filters stay in both links.
pub fn pager(path: &str, filters: &[(&str, Option<&str>)], paged: bool, next_before: Option<i64>) -> String {
    let keep: String = filters
        .iter()
        .filter_map(|(name, value)| value.map(|v| format!("&{name}={}", url_value(v))))
        .collect();
    let mut out = String::from("<nav class=\"pager\">");
    if paged {
        let query = keep.trim_start_matches('&');
        let separator = if query.is_empty() { "" } else { "?" };
        let _ = write!(out, "<a href=\"{path}{separator}{query}\">← Newest</a>");
    }
    if let Some(next) = next_before {
        let _ = write!(out, "<a href=\"{path}?before={next}{keep}\">Older →</a>");
    }
    out.push_str("</nav>");
    out
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
    None,
}

pub fn page(frame: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let active = |nav: Nav| if frame.nav == nav { " class=\"active\"" } else { "" };
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · runner</title><link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head><body>\
         <header><a class=\"brand\" href=\"/\">runner</a><nav>\
         <a href=\"/\"{}>Deployments</a><a href=\"/jobs\"{}>Jobs</a><a href=\"/deliveries\"{}>Deliveries</a></nav>\
         <div class=\"who\">",
        esc(frame.title),
        active(Nav::Deployments),
        active(Nav::Jobs),
        active(Nav::Deliveries),
    );
    match (frame.logged_in, frame.csrf) {
        (true, Some(csrf)) => {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button class=\"link\">Log out</button></form>",
                esc(csrf)
            );
        }
        _ => out.push_str("<a href=\"/login\">Log in</a>"),
    }
    out.push_str("</div></header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

pub fn respond(status: StatusCode, html: String) -> Response {
    (status, [(axum::http::header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// A time the browser shows in the viewer's zone (and as "3 min ago"); the UTC text is
/// what shows without script.
pub fn time(ms: i64) -> String {
    format!(
        "<time datetime=\"{iso}\" data-ms=\"{ms}\">{iso}</time>",
        iso = crate::telemetry::format_ms(ms)
    )
}

pub fn duration(start: Option<i64>, end: Option<i64>) -> String {
    let (Some(start), Some(end)) = (start, end) else {
        return if start.is_some() {
            "<span class=\"muted\">running</span>".to_owned()
        } else {
            String::new()
        };
    };
    let secs = (end - start).max(0) / 1000;
    if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}.{}s", secs, ((end - start).max(0) % 1000) / 100)
    }
}

pub fn badge(state: &str) -> String {
    format!("<span class=\"badge s-{0}\">{0}</span>", esc(state))
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

/// The commit's short SHA, linked to the commit's page on the forge when the project is known.
pub fn commit_link(links: Option<&RepoLinks>, sha: &str) -> String {
    let short = sha.get(..7).unwrap_or(sha);
    match links {
        Some(links) => format!(
            "<a class=\"sha\" href=\"{}\">{}</a>",
            esc(&links.commit(sha)),
            esc(short)
        ),
        None => format!("<code class=\"sha\">{}</code>", esc(short)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\" & 'y')</script>").to_string(),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(esc("plain").to_string(), "plain");
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(url_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
