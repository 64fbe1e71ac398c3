//! The ceiling for the webapp benchmark: the same HTTP stack answering the same two
//! routes with nothing else (no logging, no 404/405/500 handling, no shutdown logic).

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "5002".into());
    let router = Router::new()
        .route("/", get(|| async { "Hello Graylog, my name is Charles!" }))
        .route("/health", get(|| async { "healthy" }));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    axum::serve(listener, router).await
}
