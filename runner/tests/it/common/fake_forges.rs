//! Local servers playing the Gitea/Forgejo (`/api/v1`) and GitLab (`/api/v4`) REST
//! endpoints the runner uses, with the rules their sources and documentation give:
//!
//! - Gitea and Forgejo take `Authorization: token X` or `Bearer X` (either case); a commit
//!   status's state is one of pending, success, error, failure, warning, skipped; a
//!   status on a commit the repository lacks fails (500, as Gitea's `GetCommit` error
//!   does).
//! - GitLab takes `PRIVATE-TOKEN: X` or `Authorization: Bearer X`; a status's state is
//!   one of pending, running, success, failed, canceled, skipped; its description and
//!   target URL are at most 255 characters; an unknown commit is `404 Commit Not Found`;
//!   the state a status already has is refused with 400 ("Cannot transition status");
//!   a deployment needs environment, sha, ref, tag and a status of running, success,
//!   failed or canceled, and changes status only as GitLab's state machine allows
//!   (running from created; success, failed, canceled from created or running).
//!
//! Every request is recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const GITEA_TOKEN: &str = "gitea-token-0123456789abcdef";
pub const GITLAB_TOKEN: &str = "glpat-0123456789abcdefghij";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Gitea,
    GitLab,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
pub struct Forge {
    pub requests: Vec<Recorded>,
    /// Commits the repository has.
    pub commits: HashSet<String>,
    pub branches: HashMap<String, String>,
    /// Pull (merge) requests' states by number.
    pub pulls: HashMap<i64, String>,
    /// The last state of each (sha, context) status.
    pub statuses: HashMap<(String, String), String>,
    /// Deployments by id: their last status.
    pub deployments: BTreeMap<i64, Value>,
    /// Comments (notes) by id: (number, body).
    pub comments: BTreeMap<i64, (i64, String)>,
    pub next_id: i64,
}

#[derive(Clone)]
pub struct FakeForge {
    flavour: Flavour,
    state: Arc<Mutex<Forge>>,
}

impl FakeForge {
    pub fn new(flavour: Flavour) -> Self {
        Self {
            flavour,
            state: Arc::default(),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Forge) -> R) -> R {
        f(&mut self.state.lock().expect("fake forge state"))
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|f| f.requests.clone())
    }

    /// Every accepted commit status, in order: (sha, state, context, description).
    pub fn statuses(&self) -> Vec<(String, String, String, String)> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.contains("/statuses/"))
            .map(|r| {
                let context = r.body["context"].as_str().or(r.body["name"].as_str()).unwrap_or("");
                (
                    r.path.rsplit('/').next().unwrap_or("").to_owned(),
                    r.body["state"].as_str().unwrap_or("").to_owned(),
                    context.to_owned(),
                    r.body["description"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    pub async fn start(&self) -> String {
        super::serve(axum::Router::new().fallback(answer).with_state(self.clone())).await
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn authorised(flavour: Flavour, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authorization = header("authorization");
    let scheme_token = authorization.split_once(' ');
    match flavour {
        Flavour::Gitea => scheme_token.is_some_and(|(scheme, token)| {
            (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) && token == GITEA_TOKEN
        }),
        Flavour::GitLab => header("private-token") == GITLAB_TOKEN || authorization == format!("Bearer {GITLAB_TOKEN}"),
    }
}

async fn answer(
    State(fake): State<FakeForge>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The raw path: a GitLab project path arrives URL-encoded (`group%2Fproject`).
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.with(|f| {
        f.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            body: body.clone(),
        })
    });
    if !authorised(fake.flavour, &headers) {
        return error(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match fake.flavour {
        Flavour::Gitea => gitea(&fake, &method, &parts, &body),
        Flavour::GitLab => gitlab(&fake, &method, &parts, &body),
    }
}

/// `/api/v1/repos/{owner}/{repo}/...`
fn gitea(fake: &FakeForge, method: &Method, parts: &[&str], body: &Value) -> Response {
    let ["api", "v1", "repos", _owner, _repo, rest @ ..] = parts else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    match (method.as_str(), rest) {
        ("POST", ["statuses", sha]) => {
            let state = body["state"].as_str().unwrap_or("");
            if !["pending", "success", "error", "failure", "warning", "skipped"].contains(&state) {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid state");
            }
            if !fake.with(|f| f.commits.contains(*sha)) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "GetCommit: object does not exist");
            }
            (
                StatusCode::CREATED,
                Json(json!({ "state": state, "context": body["context"] })),
            )
                .into_response()
        }
        ("GET", ["branches", branch]) => match fake.with(|f| f.branches.get(*branch).cloned()) {
            Some(sha) => Json(json!({ "name": branch, "commit": { "id": sha } })).into_response(),
            None => error(StatusCode::NOT_FOUND, "branch does not exist"),
        },
        ("GET", ["pulls", number]) => pull(fake, number, |state| json!({ "state": state, "merged": false })),
        ("POST", ["issues", number, "comments"]) => create_comment(fake, number, body),
        ("PATCH", ["issues", "comments", id]) => edit_comment(fake, id, body),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `/api/v4/projects/{url-encoded path}/...`
fn gitlab(fake: &FakeForge, method: &Method, parts: &[&str], body: &Value) -> Response {
    let ["api", "v4", "projects", project, rest @ ..] = parts else {
        return error(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if !project.contains("%2F") {
        return error(StatusCode::NOT_FOUND, "404 Project Not Found");
    }
    let too_long = |field: &str| body[field].as_str().is_some_and(|t| t.chars().count() > 255);
    match (method.as_str(), rest) {
        ("POST", ["statuses", sha]) => {
            let state = body["state"].as_str().unwrap_or("");
            if !["pending", "running", "success", "failed", "canceled", "skipped"].contains(&state) {
                return error(StatusCode::BAD_REQUEST, "state does not have a valid value");
            }
            if too_long("description") || too_long("target_url") {
                return error(StatusCode::BAD_REQUEST, "is too long (maximum is 255 characters)");
            }
            if !fake.with(|f| f.commits.contains(*sha)) {
                return error(StatusCode::NOT_FOUND, "404 Commit Not Found");
            }
            let name = body["name"].as_str().unwrap_or("default").to_owned();
            let previous = fake.with(|f| f.statuses.insert(((*sha).to_owned(), name.clone()), state.to_owned()));
            if previous.as_deref() == Some(state) && ["pending", "running"].contains(&state) {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Cannot transition status via :enqueue from :{state}"),
                );
            }
            (StatusCode::CREATED, Json(json!({ "status": state, "name": name }))).into_response()
        }
        ("POST", ["deployments"]) => {
            let valid = ["environment", "sha", "ref"].iter().all(|f| body[*f].is_string())
                && body["tag"].is_boolean()
                && ["running", "success", "failed", "canceled"].contains(&body["status"].as_str().unwrap_or(""));
            if !valid {
                return error(
                    StatusCode::BAD_REQUEST,
                    "environment, sha, ref, tag and status are required",
                );
            }
            if !fake.with(|f| f.commits.contains(body["sha"].as_str().unwrap_or(""))) {
                return error(StatusCode::BAD_REQUEST, "The commit does not exist");
            }
            let id = fake.with(|f| {
                f.next_id += 1;
                let mut deployment = body.clone();
                deployment["history"] = json!([body["status"]]);
                f.deployments.insert(f.next_id, deployment);
                f.next_id
            });
            (StatusCode::CREATED, Json(json!({ "id": id, "status": body["status"] }))).into_response()
        }
        ("PUT", ["deployments", id]) => {
            let status = body["status"].as_str().unwrap_or("");
            if !["running", "success", "failed", "canceled"].contains(&status) {
                return error(StatusCode::BAD_REQUEST, "status does not have a valid value");
            }
            let id: i64 = id.parse().unwrap_or(-1);
            let Some(current) = fake.with(|f| {
                f.deployments
                    .get(&id)
                    .map(|d| d["status"].as_str().unwrap_or("").to_owned())
            }) else {
                return error(StatusCode::NOT_FOUND, "404 Not found");
            };
            // GitLab's deployment state machine: `run` only from created, `succeed`,
            // `drop` and `cancel` only from created or running.
            let allowed = match status {
                "running" => current == "created",
                _ => ["created", "running"].contains(&current.as_str()),
            };
            if !allowed {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Cannot transition status via :{status} from :{current}"),
                );
            }
            fake.with(|f| {
                if let Some(d) = f.deployments.get_mut(&id) {
                    d["status"] = status.into();
                    if let Some(history) = d["history"].as_array_mut() {
                        history.push(status.into());
                    }
                }
            });
            Json(json!({ "id": id, "status": status })).into_response()
        }
        ("GET", ["repository", "branches", branch]) => {
            let branch = branch.replace("%2F", "/");
            match fake.with(|f| f.branches.get(&branch).cloned()) {
                Some(sha) => Json(json!({ "name": branch, "commit": { "id": sha } })).into_response(),
                None => error(StatusCode::NOT_FOUND, "404 Branch Not Found"),
            }
        }
        ("GET", ["merge_requests", iid]) => pull(fake, iid, |state| json!({ "state": state })),
        ("POST", ["merge_requests", iid, "notes"]) => create_comment(fake, iid, body),
        ("PUT", ["merge_requests", _iid, "notes", id]) => edit_comment(fake, id, body),
        _ => error(StatusCode::NOT_FOUND, "404 Not Found"),
    }
}

fn pull(fake: &FakeForge, number: &str, shown: impl Fn(&str) -> Value) -> Response {
    let number: i64 = number.parse().unwrap_or(-1);
    match fake.with(|f| f.pulls.get(&number).cloned()) {
        Some(state) => Json(shown(&state)).into_response(),
        None => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn create_comment(fake: &FakeForge, number: &str, body: &Value) -> Response {
    let (Ok(number), Some(text)) = (number.parse::<i64>(), body["body"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "body is required");
    };
    let id = fake.with(|f| {
        f.next_id += 1;
        f.comments.insert(f.next_id, (number, text.to_owned()));
        f.next_id
    });
    (StatusCode::CREATED, Json(json!({ "id": id, "body": text }))).into_response()
}

fn edit_comment(fake: &FakeForge, id: &str, body: &Value) -> Response {
    let (Ok(id), Some(text)) = (id.parse::<i64>(), body["body"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "body is required");
    };
    let found = fake.with(|f| f.comments.get_mut(&id).map(|c| c.1 = text.to_owned()));
    match found {
        Some(()) => Json(json!({ "id": id, "body": text })).into_response(),
        None => error(StatusCode::NOT_FOUND, "not found"),
    }
}
