//! The service over real HTTP, started in-process on port 0.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::sync::oneshot;
use webapp::{Application, Settings};

struct TestApp {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn test_settings() -> Settings {
    let mut settings = Settings::from_lookup(|name| match name {
        "PORT" => Some("0".into()),
        "APP_COMMIT" => Some("0123456789abcdef0123456789abcdef01234567".into()),
        _ => None,
    })
    .expect("test settings are valid");
    settings.host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    settings
}

async fn spawn_app_with(settings: Settings, extra: Router) -> TestApp {
    let app = Application::build_with_routes(&settings, extra)
        .await
        .expect("bind a free port");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        stop: Some(stop),
        server,
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings(), Router::new()).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn index_greets_in_plain_text() {
    let app = spawn_app().await;
    let response = client().get(format!("{}/", app.base)).send().await.expect("GET /");
    assert_eq!(response.status(), 200);
    assert!(
        content_type(&response).starts_with("text/plain"),
        "{}",
        content_type(&response)
    );
    assert_eq!(
        response.text().await.expect("body"),
        "Hello Graylog, my name is Charles!"
    );
}

#[tokio::test]
async fn health_says_healthy() {
    let app = spawn_app().await;
    let response = client()
        .get(format!("{}/health", app.base))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/plain"));
    assert_eq!(response.text().await.expect("body"), "healthy");
}

#[tokio::test]
async fn version_reports_crate_version_and_commit() {
    let app = spawn_app().await;
    let response = client()
        .get(format!("{}/version", app.base))
        .send()
        .await
        .expect("GET /version");
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["commit"], "0123456789abcdef0123456789abcdef01234567");
}

#[tokio::test]
async fn unknown_paths_are_a_plain_text_404() {
    let app = spawn_app().await;
    for path in ["/nope", "/health/extra", "/%3Cscript%3E", "/a/b/c?x=1"] {
        let response = client().get(format!("{}{path}", app.base)).send().await.expect("GET");
        assert_eq!(response.status(), 404, "{path}");
        assert!(content_type(&response).starts_with("text/plain"));
        assert_eq!(response.text().await.expect("body"), "404 page not found");
    }
}

#[tokio::test]
async fn head_works_wherever_get_does() {
    let app = spawn_app().await;
    for path in ["/", "/health", "/version"] {
        let response = client().head(format!("{}{path}", app.base)).send().await.expect("HEAD");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.expect("body"), "", "HEAD has no body");
    }
}

#[tokio::test]
async fn other_methods_on_known_paths_are_405_with_allow() {
    let app = spawn_app().await;
    for path in ["/", "/health", "/version"] {
        for method in [reqwest::Method::POST, reqwest::Method::DELETE, reqwest::Method::PUT] {
            let response = client()
                .request(method.clone(), format!("{}{path}", app.base))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 405, "{method} {path}");
            let allow = response
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
                .to_str()
                .expect("ascii")
                .to_owned();
            assert!(allow.contains("GET") && allow.contains("HEAD"), "Allow: {allow}");
            assert!(content_type(&response).starts_with("text/plain"));
        }
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let extra = Router::new().route(
        "/explode",
        get(|| async {
            if std::hint::black_box(true) {
                panic!("forced failure for the test");
            }
            "unreachable"
        }),
    );
    let app = spawn_app_with(test_settings(), extra).await;
    for _ in 0..3 {
        let response = client().get(format!("{}/explode", app.base)).send().await.expect("GET");
        assert_eq!(response.status(), 500);
        assert!(content_type(&response).starts_with("text/plain"));
        assert_eq!(response.text().await.expect("body"), "500 internal server error");
    }
    let response = client().get(format!("{}/health", app.base)).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert!(!app.server.is_finished());
}

fn slow_route(delay: Duration) -> Router {
    Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "done"
        }),
    )
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let mut app = spawn_app_with(test_settings(), slow_route(Duration::from_millis(700))).await;
    let url = format!("{}/slow", app.base);
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.stop
        .take()
        .expect("not yet stopped")
        .send(())
        .expect("server listening");

    let response = in_flight.await.expect("join").expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "done");

    let result = tokio::time::timeout(Duration::from_secs(5), app.server)
        .await
        .expect("server stops after its last request")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    let refused = client().get(format!("{}/health", app.base)).send().await;
    assert!(refused.is_err(), "a stopped server accepts no connections");
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    let mut settings = test_settings();
    settings.shutdown_grace = Duration::from_millis(300);
    let mut app = spawn_app_with(settings, slow_route(Duration::from_secs(60))).await;
    let url = format!("{}/slow", app.base);
    let _stuck = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.stop
        .take()
        .expect("not yet stopped")
        .send(())
        .expect("server listening");
    let result = tokio::time::timeout(Duration::from_secs(20), app.server)
        .await
        .expect("the server gives up on a 60 s request after its grace period")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn settings_reject_bad_values_with_a_clear_message() {
    let error = Settings::from_lookup(|name| (name == "PORT").then(|| "http".to_owned())).expect_err("bad port");
    assert!(error.to_string().contains("PORT"), "{error}");
    let error = Settings::from_lookup(|name| (name == "PORT").then(|| "70000".to_owned())).expect_err("bad port");
    assert!(error.to_string().contains("70000"), "{error}");
    let defaults = Settings::from_lookup(|_| None).expect("defaults");
    assert_eq!(defaults.port, 5001);
    assert_eq!(defaults.host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(defaults.shutdown_grace, Duration::from_secs(10));
}
