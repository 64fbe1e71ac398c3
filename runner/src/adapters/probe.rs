//! Health probing of a started container over HTTP.

use std::time::Duration;

use tokio::time::Instant;

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

/// What one request to a health endpoint got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer: its status and the first [`MAX_BODY_BYTES`] of its body.
    Http { status: u16, body: String },
    /// Nothing listens on the port (yet).
    Refused,
    /// Connected, and no answer came in time.
    Silent,
    /// Anything else, in a few words.
    Failed(String),
}

/// How long one request may take before it counts as [`Answer::Silent`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One GET of `url` from the runner itself, following no redirect.
pub async fn ask_over_http(http: &reqwest::Client, url: &str) -> Answer {
    match http.get(url).timeout(REQUEST_TIMEOUT).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = read_at_most(response, MAX_BODY_BYTES).await;
            Answer::Http { status, body }
        }
        Err(error) if error.is_connect() => Answer::Refused,
        Err(error) if error.is_timeout() => Answer::Silent,
        Err(error) => Answer::Failed(error.to_string()),
    }
}

/// Asks (through `ask`) until the answer is the expected status (and body, when
/// configured) or `budget` runs out. The error says what was seen last ("503",
/// "connection refused").
pub async fn until_healthy<F, Fut>(mut ask: F, expect: &SmokeSettings, budget: Duration) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let deadline = Instant::now() + budget;
    loop {
        let last = match ask().await {
            Answer::Http { status, body } => {
                let body_ok = expect.expect_body.as_deref().is_none_or(|want| body.trim() == want);
                if status == expect.expect_status && body_ok {
                    return Ok(());
                }
                let shown: String = body.trim().chars().take(80).collect();
                if status == expect.expect_status {
                    format!(
                        "{status} with body {shown:?}, expected {:?}",
                        expect.expect_body.as_deref().unwrap_or_default()
                    )
                } else {
                    format!("{status}, expected {}", expect.expect_status)
                }
            }
            Answer::Refused => "nothing: connection refused".to_owned(),
            Answer::Silent => format!("nothing within {} s", REQUEST_TIMEOUT.as_secs()),
            Answer::Failed(error) => format!("with an error: {error}"),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An app whose health endpoint answers 200 with a body that never ends.
    async fn endless_app(sent: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let sent = Arc::clone(&sent);
                tokio::spawn(async move {
                    let mut request = [0_u8; 1024];
                    let _ = stream.read(&mut request).await;
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10000000000\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    while stream.write_all(&chunk).await.is_ok() {
                        sent.fetch_add(chunk.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        format!("http://{addr}/health")
    }

    #[tokio::test]
    async fn an_endless_health_answer_is_read_no_further_than_the_limit() {
        let sent = Arc::new(AtomicUsize::new(0));
        let url = endless_app(Arc::clone(&sent)).await;
        let expect = SmokeSettings {
            container_port: 5001,
            path: "/health".into(),
            expect_status: 200,
            expect_body: Some("healthy".into()),
            timeout: Duration::from_millis(100),
        };
        let http = reqwest::Client::new();
        let error = until_healthy(|| ask_over_http(&http, &url), &expect, Duration::from_millis(100))
            .await
            .expect_err("the body is not \"healthy\"");
        assert!(error.starts_with("200 with body \"xxxx"), "{error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // What the app got out before the runner hung up: the limit plus what the
        // sockets' buffers held, far from the seconds' worth a loopback link carries.
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent < 32 * 1024 * 1024, "{sent} bytes were sent");
    }
}
