//! Health probing of a started container over HTTP.

use std::time::{Duration, Instant};

use crate::config::SmokeSettings;

/// The most of a health response that is read: an app's answer is a word, and the app is
/// the code under test, so it does not get to make the runner read without end.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body's first `max` bytes, as text; the rest is never read.
async fn read_at_most(mut response: reqwest::Response, max: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Asks `url` until it answers the expected status (and body, when configured) or
/// `budget` runs out. The error says what was seen last ("503", "connection refused").
pub async fn until_healthy(
    http: &reqwest::Client,
    url: &str,
    expect: &SmokeSettings,
    budget: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + budget;
    loop {
        let last;
        match http.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = read_at_most(response, MAX_BODY_BYTES).await;
                let body_ok = expect.expect_body.as_deref().is_none_or(|want| body.trim() == want);
                if status == expect.expect_status && body_ok {
                    return Ok(());
                }
                let shown: String = body.trim().chars().take(80).collect();
                last = if status == expect.expect_status {
                    format!(
                        "{status} with body {shown:?}, expected {:?}",
                        expect.expect_body.as_deref().unwrap_or_default()
                    )
                } else {
                    format!("{status}, expected {}", expect.expect_status)
                };
            }
            Err(error) => {
                last = if error.is_connect() {
                    "nothing: connection refused".to_owned()
                } else if error.is_timeout() {
                    "nothing within 2 s".to_owned()
                } else {
                    format!("with an error: {error}")
                };
            }
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
