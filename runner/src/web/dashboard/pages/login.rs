//! `/login`: the admin token form.

use maud::{Markup, html};

/// The form; `next` is where a successful login goes, `problem` why the last try failed.
pub fn render(logged_in: bool, next: &str, problem: Option<&str>) -> Markup {
    html! {
        section.narrow {
            h1 { "Log in" }
            @if logged_in { p.notice { "You are logged in." } }
            @if let Some(problem) = problem { p.error role="alert" { (problem) } }
            form method="post" action="/login" class="stack" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Admin token" }
                input #token name="token" type="password" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
            p.muted { "The token is the runner's " code { "RUNNER_ADMIN_TOKEN" } "." }
        }
    }
}
