//! A local server playing the GitHub REST endpoints the runner uses (paths, methods and
//! fields as GitHub documents them). It records every request, and can fail with 5xx,
//! rate-limit with 403, or hang.

use super::config::{Config, GitHub, ProjectGitHub};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{TestRunner, test_env};

pub const INSTALLATION_TOKEN: &str = "ghs_installationtoken0123456789abcdef";
pub const GITHUB_TOKEN: &str = "ghp_testtoken0123456789abcdefghijklmnop";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub authorization: String,
}

#[derive(Default)]
pub struct Fake {
    pub requests: Vec<Recorded>,
    /// Answer this many reports (POSTs) with 502 first.
    pub fail_next: usize,
    /// Answer the next report (POST) with 403 and an exhausted rate limit resetting in N seconds.
    pub rate_limit_for: Option<u64>,
    pub hang: bool,
    pub branches: HashMap<String, String>,
    pub deliveries: Vec<Value>,
    /// The bearer token the repository endpoints accept (default: GITHUB_TOKEN).
    pub accepted_token: Option<String>,
    pub next_id: i64,
    /// Check runs as GitHub holds them, by id: the last status, conclusion and output,
    /// and every annotation ever added (`annotations`).
    pub check_runs: std::collections::BTreeMap<i64, Value>,
    /// Issue comments as GitHub holds them, by id: the issue's number and the last body.
    pub comments: std::collections::BTreeMap<i64, (i64, String)>,
    /// Pull requests' states (`open`, `closed`) by number; others are unknown (404).
    pub pulls: HashMap<i64, String>,
}

#[derive(Clone, Default)]
pub struct FakeGitHub(Arc<Mutex<Fake>>);

impl FakeGitHub {
    pub fn with<R>(&self, f: impl FnOnce(&mut Fake) -> R) -> R {
        f(&mut self.0.lock().expect("fake state"))
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|f| f.requests.clone())
    }

    pub fn statuses(&self) -> Vec<(String, String, String, String)> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.contains("/statuses/") && !r.path.contains("/deployments/"))
            .map(|r| {
                (
                    r.path.rsplit('/').next().unwrap_or("").to_owned(),
                    r.body["state"].as_str().unwrap_or("").to_owned(),
                    r.body["context"].as_str().unwrap_or("").to_owned(),
                    r.body["description"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    pub fn deployment_statuses(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("/deployments/") && r.path.ends_with("/statuses"))
            .map(|r| r.body)
            .collect()
    }

    /// Every comment on pull request `number`, by id, with its last body.
    pub fn comments_on(&self, number: i64) -> Vec<(i64, String)> {
        self.with(|f| {
            f.comments
                .iter()
                .filter(|(_, (issue, _))| *issue == number)
                .map(|(id, (_, body))| (*id, body.clone()))
                .collect()
        })
    }

    pub fn check_runs(&self) -> Vec<Value> {
        self.with(|f| f.check_runs.values().cloned().collect())
    }

    pub async fn start(&self) -> String {
        super::serve(axum::Router::new().fallback(answer).with_state(self.clone())).await
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "documentation_url": "https://docs.github.com/rest" })),
    )
        .into_response()
}

/// The endpoints used, as GitHub's REST documentation describes them.
async fn answer(
    State(fake): State<FakeGitHub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (hang, fail, limited) = fake.with(|f| {
        f.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            body: body.clone(),
            authorization: authorization.clone(),
        });
        let is_report = method == Method::POST;
        let fail = is_report && f.fail_next > 0;
        if fail {
            f.fail_next -= 1;
        }
        let limited = if is_report { f.rate_limit_for.take() } else { None };
        (f.hang, fail, limited)
    });
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    // GitHub App endpoints take the app's JWT (three base64url parts).
    let is_jwt = authorization
        .strip_prefix("Bearer ")
        .is_some_and(|t| t.split('.').count() == 3 && t.len() > 100);
    if path.starts_with("/app/installations/") && path.ends_with("/access_tokens") && method == Method::POST {
        if !is_jwt {
            return error(StatusCode::UNAUTHORIZED, "A JSON web token could not be decoded");
        }
        return (
            StatusCode::CREATED,
            Json(json!({
                "token": INSTALLATION_TOKEN,
                "expires_at": "2099-01-01T00:00:00Z",
                "permissions": { "statuses": "write", "deployments": "write", "repository_hooks": "write" },
                "repository_selection": "selected"
            })),
        )
            .into_response();
    }
    if path.ends_with("/installation") && method == Method::GET {
        return if is_jwt {
            Json(json!({ "id": 77, "app_id": 1234 })).into_response()
        } else {
            error(StatusCode::UNAUTHORIZED, "A JSON web token could not be decoded")
        };
    }
    let accepted = fake
        .with(|f| f.accepted_token.clone())
        .unwrap_or_else(|| GITHUB_TOKEN.to_owned());
    if authorization != format!("Bearer {accepted}") {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(seconds) = limited {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + seconds;
        let mut response = error(StatusCode::FORBIDDEN, "API rate limit exceeded");
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", "5000".parse().expect("header"));
        headers.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        headers.insert("x-ratelimit-reset", reset.to_string().parse().expect("header"));
        return response;
    }
    if fail {
        return error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["repos", _, _, "statuses", sha]) => {
            let valid = matches!(
                body["state"].as_str(),
                Some("error" | "failure" | "pending" | "success")
            ) && sha.len() == 40
                && body["description"].as_str().is_none_or(|d| d.chars().count() <= 140);
            if !valid {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            (
                StatusCode::CREATED,
                Json(json!({ "state": body["state"], "context": body["context"] })),
            )
                .into_response()
        }
        ("POST", ["repos", _, _, "deployments"]) => {
            if body["ref"].as_str().is_none() {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            let id = fake.with(|f| {
                f.next_id += 1;
                f.next_id
            });
            (
                StatusCode::CREATED,
                Json(json!({ "id": id, "sha": body["ref"], "environment": body["environment"] })),
            )
                .into_response()
        }
        ("POST", ["repos", _, _, "deployments", _, "statuses"]) => {
            let valid = matches!(
                body["state"].as_str(),
                Some("error" | "failure" | "inactive" | "in_progress" | "queued" | "pending" | "success")
            );
            if !valid {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            (StatusCode::CREATED, Json(json!({ "state": body["state"] }))).into_response()
        }
        ("GET", ["repos", _, _, "hooks", _, "deliveries"]) => {
            // Newest first, `per_page` at a time, the next page named by an opaque cursor
            // in the Link header, as GitHub pages hook deliveries.
            let query: HashMap<String, String> = uri
                .query()
                .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
                .unwrap_or_default();
            let per_page: usize = query
                .get("per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(30)
                .min(100);
            let start: usize = query
                .get("cursor")
                .and_then(|c| c.strip_prefix("v1_"))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let mut all = fake.with(|f| f.deliveries.clone());
            all.sort_by_key(|d| std::cmp::Reverse(d["id"].as_i64().unwrap_or(0)));
            let page: Vec<Value> = all.iter().skip(start).take(per_page).cloned().collect();
            let mut response = Json(Value::Array(page)).into_response();
            if start + per_page < all.len() {
                let next = format!(
                    "<http://github.test{}?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
                    uri.path(),
                    start + per_page
                );
                response
                    .headers_mut()
                    .insert("link", next.parse().expect("header value"));
            }
            response
        }
        ("POST", ["repos", _, _, "hooks", _, "deliveries", _, "attempts"]) => {
            (StatusCode::ACCEPTED, Json(json!({}))).into_response()
        }
        ("POST", ["repos", _, _, "check-runs"]) => check_run(&fake, &authorization, None, &body),
        ("PATCH", ["repos", _, _, "check-runs", id]) => check_run(&fake, &authorization, Some(id), &body),
        ("GET", ["repos", _, _, "commits", sha, "check-runs"]) => {
            let query: HashMap<String, String> = uri
                .query()
                .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
                .unwrap_or_default();
            let runs: Vec<Value> = fake
                .check_runs()
                .into_iter()
                .filter(|run| run["head_sha"] == *sha)
                .filter(|run| query.get("check_name").is_none_or(|name| run["name"] == name.as_str()))
                .collect();
            Json(json!({ "total_count": runs.len(), "check_runs": runs })).into_response()
        }
        ("POST", ["repos", _, _, "issues", number, "comments"]) => {
            let (Ok(number), Some(text)) = (number.parse::<i64>(), body["body"].as_str()) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            };
            if text.chars().count() > 65_536 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Body is too long (maximum is 65536 characters)",
                );
            }
            let id = fake.with(|f| {
                f.next_id += 1;
                f.comments.insert(f.next_id, (number, text.to_owned()));
                f.next_id
            });
            (StatusCode::CREATED, Json(json!({ "id": id, "body": text }))).into_response()
        }
        ("PATCH", ["repos", _, _, "issues", "comments", id]) => {
            let Some(text) = body["body"].as_str() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            };
            let id: i64 = id.parse().unwrap_or(-1);
            let edited = fake.with(|f| match f.comments.get_mut(&id) {
                Some((_, stored)) => {
                    *stored = text.to_owned();
                    true
                }
                None => false,
            });
            if !edited {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            Json(json!({ "id": id, "body": text })).into_response()
        }
        ("GET", ["repos", _, _, "pulls", number]) => {
            let number: i64 = number.parse().unwrap_or(-1);
            match fake.with(|f| f.pulls.get(&number).cloned()) {
                Some(state) => Json(json!({ "number": number, "state": state })).into_response(),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("GET", ["repos", _, _, "branches", branch]) => match fake.with(|f| f.branches.get(*branch).cloned()) {
            Some(sha) => Json(json!({ "name": branch, "commit": { "sha": sha } })).into_response(),
            None => error(StatusCode::NOT_FOUND, "Branch not found"),
        },
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// `config` with GitHub reporting to `api` for its first project (and reconciling hook
/// 42 when `hook`).
pub fn with_github(mut config: Config, api: &str, hook: bool) -> Config {
    config.github = GitHub {
        api_url: Some(api.to_owned()),
        reconcile_interval_secs: Some(3600),
        ..GitHub::default()
    };
    config.dashboard.public_url = Some("https://ci.example.test".to_owned());
    config.projects[0].github = Some(ProjectGitHub {
        token_env: Some("GITHUB_TOKEN_FOR_TESTS".to_owned()),
        hook_id: hook.then_some(42),
        ..ProjectGitHub::default()
    });
    config
}

/// A new RSA private key for a GitHub App, as PEM in `dir`.
pub fn app_key(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("app.pem");
    let generated = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    key
}

/// `config` reporting for its first project to `api` as GitHub App 1234 (installation
/// found through the API) with the private key at `key`; the fake must be told to accept
/// [`INSTALLATION_TOKEN`].
pub fn as_app(config: &mut Config, api: &str, key: &Path) {
    *config = with_github(std::mem::take(config), api, false);
    let github = config.projects[0].github.as_mut().expect("github");
    github.token_env = None;
    github.app_id = Some(1234);
    github.private_key_file = Some(key.to_path_buf());
}

/// A real `check_run` `rerequested` body (GitHub's *Re-run* button) for the runner's job
/// `job_id` at `sha` of `repository`, whose check run `name` App 1234 wrote.
pub fn rerun_request(repository: &str, sha: &str, job_id: i64, name: &str) -> Vec<u8> {
    let mut body = super::fixture_json("check_run.rerequested.payload.json");
    body["check_run"]["name"] = name.into();
    body["check_run"]["app"]["id"] = 1234.into();
    body["repository"]["full_name"] = repository.into();
    body["check_run"]["head_sha"] = sha.into();
    body["check_run"]["check_suite"]["head_sha"] = sha.into();
    body["check_run"]["external_id"] = job_id.to_string().into();
    serde_json::to_vec(&body).expect("serialise")
}

pub async fn start_runner(make: impl FnOnce(&Path) -> Config) -> TestRunner {
    TestRunner::start_with_env(make, github_env).await
}

/// A runner reporting to the stand-in, on no other outside system (see
/// [`TestRunner::start_on_fakes`]).
pub async fn start_runner_on_fakes(make: impl FnOnce(&Path) -> Config) -> TestRunner {
    TestRunner::start_on_fakes_with_env(make, github_env).await
}

fn github_env(name: &str) -> Option<String> {
    match name {
        "GITHUB_TOKEN_FOR_TESTS" => Some(GITHUB_TOKEN.to_owned()),
        other => test_env(other),
    }
}

/// The Checks API: only a GitHub App may write check runs; GitHub's documented limits (a
/// summary of 65,535 bytes, 50 annotations per request) are refused with 422. `id` names
/// the check run a PATCH updates; a POST creates one.
fn check_run(fake: &FakeGitHub, authorization: &str, id: Option<&str>, body: &Value) -> Response {
    if authorization != format!("Bearer {INSTALLATION_TOKEN}") {
        return error(StatusCode::FORBIDDEN, "You must authenticate via a GitHub App.");
    }
    let status = body["status"].as_str().unwrap_or("queued");
    let conclusion = body["conclusion"].as_str();
    let output = &body["output"];
    let annotations = output["annotations"].as_array().cloned().unwrap_or_default();
    let annotation_ok = |a: &Value| {
        a["path"].as_str().is_some_and(|p| !p.is_empty() && !p.starts_with('/'))
            && a["start_line"].as_u64().is_some_and(|l| l >= 1)
            && a["end_line"].as_u64() >= a["start_line"].as_u64()
            && matches!(a["annotation_level"].as_str(), Some("notice" | "warning" | "failure"))
            && a["message"].as_str().is_some()
            && a["title"].as_str().is_none_or(|t| t.chars().count() <= 255)
    };
    let valid = matches!(status, "queued" | "in_progress" | "completed")
        && (status == "completed") == conclusion.is_some()
        && conclusion.is_none_or(|c| {
            matches!(
                c,
                "action_required" | "cancelled" | "failure" | "neutral" | "success" | "skipped" | "stale" | "timed_out"
            )
        })
        && (output.is_null()
            || (output["title"].as_str().is_some() && output["summary"].as_str().is_some_and(|s| s.len() <= 65_535)))
        && annotations.len() <= 50
        && annotations.iter().all(annotation_ok);
    if !valid {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let created = id.is_none();
    fake.with(|f| {
        let id = match id {
            None => {
                if body["name"].as_str().is_none_or(str::is_empty)
                    || body["head_sha"].as_str().is_none_or(|sha| sha.len() != 40)
                {
                    return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
                }
                f.next_id += 1;
                let mut run = body.clone();
                run["id"] = f.next_id.into();
                run["annotations"] = json!([]);
                f.check_runs.insert(f.next_id, run);
                f.next_id
            }
            Some(id) => match id.parse::<i64>().ok().filter(|id| f.check_runs.contains_key(id)) {
                Some(id) => id,
                None => return error(StatusCode::NOT_FOUND, "Not Found"),
            },
        };
        let run = f.check_runs.get_mut(&id).expect("check run");
        for field in ["status", "conclusion", "details_url"] {
            if !body[field].is_null() {
                run[field] = body[field].clone();
            }
        }
        if !output.is_null() {
            run["output"] = output.clone();
        }
        run["annotations"]
            .as_array_mut()
            .expect("annotations")
            .extend(annotations);
        let code = if created { StatusCode::CREATED } else { StatusCode::OK };
        (code, Json(run.clone())).into_response()
    })
}
