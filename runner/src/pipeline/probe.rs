//! Health probing of a started container over HTTP.

use std::time::{Duration, Instant};

use crate::config::SmokeSettings;

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
                let body = response.text().await.unwrap_or_default();
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
