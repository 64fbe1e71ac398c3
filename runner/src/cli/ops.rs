//! Operator commands: list jobs and deployments, and ask a running runner to deploy, roll
//! back or replay. Reads come from a running runner's API (`--url`) or straight from the
//! database of a config; actions always go through the API, with the admin token.

use std::time::Duration;

use anyhow::{Context, bail};
use percent_encoding::utf8_percent_encode;
use serde_json::{Value, json};

use crate::config::Config;
use crate::store::deployments::DeploymentFilter;
use crate::store::jobs::JobFilter;

#[derive(Debug, clap::Args)]
pub struct Source {
    /// Base URL of a running runner (e.g. http://127.0.0.1:8080); without it, the database
    /// of --config is read directly.
    #[arg(long, env = "RUNNER_URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Rows to show, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub limit: u16,
    /// Only this project.
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct Remote {
    /// Base URL of the running runner.
    #[arg(long, env = "RUNNER_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Wait until the queued job ends; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why an operator command failed; the exit code follows from it.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?)
}

fn admin_token() -> Result<String, OpsError> {
    std::env::var("RUNNER_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OpsError::Usage("set RUNNER_ADMIN_TOKEN to the runner's admin token".into()))
}

async fn api_get(url: &str, path: &str) -> anyhow::Result<Value> {
    answer(send_get(url, path).await?).await
}

/// `GET url+path`, with the admin token when one is set (reads may need a login).
async fn send_get(url: &str, path: &str) -> anyhow::Result<reqwest::Response> {
    let mut request = client()?.get(format!("{}{path}", url.trim_end_matches('/')));
    if let Ok(token) = std::env::var("RUNNER_ADMIN_TOKEN")
        && !token.is_empty()
    {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .with_context(|| format!("cannot reach the runner at {url}"))
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the runner answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(body)
}

/// The newest `resource` rows (`jobs` or `deployments`): from a running runner's API when
/// `--url` is given, else from `local` reading the database.
async fn newest<F>(source: &Source, resource: &str, local: F) -> Result<Vec<Value>, OpsError>
where
    F: AsyncFnOnce(&crate::store::Store) -> Result<Vec<Value>, crate::store::StoreError>,
{
    newest_with(source, resource, "", local).await
}

/// [`newest`], with `extra` (`&name=value` pairs) added to the API query.
async fn newest_with<F>(source: &Source, resource: &str, extra: &str, local: F) -> Result<Vec<Value>, OpsError>
where
    F: AsyncFnOnce(&crate::store::Store) -> Result<Vec<Value>, crate::store::StoreError>,
{
    match &source.url {
        Some(url) => {
            let mut path = format!("/api/{resource}?limit={}{extra}", source.limit);
            if let Some(project) = &source.project {
                path.push_str(&format!(
                    "&project={}",
                    utf8_percent_encode(project, crate::percent::NON_UNRESERVED)
                ));
            }
            Ok(api_get(url, &path).await?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default())
        }
        None => {
            let pool = open_database(source).await?;
            Ok(local(&pool).await.with_context(|| format!("reading {resource}"))?)
        }
    }
}

/// As JSON with `--json`, else as a table of `columns`.
fn show(source: &Source, items: Vec<Value>, columns: &[&str], row: impl Fn(&Value) -> Vec<String>) {
    if source.json {
        println!("{}", Value::Array(items));
    } else {
        print_table(columns, items.iter().map(row));
    }
}

/// `runner jobs`: the common listing options and the job filters.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub source: Source,
    /// Only jobs of this kind.
    #[arg(long, value_parser = ["deploy", "verify"])]
    pub kind: Option<String>,
    /// Only jobs in this state (queued, running, awaiting_approval, succeeded, failed, cancelled, superseded).
    #[arg(long)]
    pub state: Option<String>,
    /// Show this job and its steps (the repository's own among them) instead of a list.
    #[arg(value_name = "JOB")]
    pub job: Option<u64>,
}

pub async fn jobs(args: &JobsArgs) -> Result<(), OpsError> {
    let source = &args.source;
    if let Some(id) = args.job {
        return job_steps(source, id).await;
    }
    let state = args
        .state
        .as_deref()
        .map(|s| {
            crate::job::JobState::parse(s).ok_or_else(|| {
                OpsError::Usage(format!(
                    "--state {s:?} is not one of: {}",
                    crate::job::JobState::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        })
        .transpose()?;
    let filter = JobFilter {
        project: source.project.clone(),
        kind: args.kind.as_deref().and_then(crate::job::JobKind::parse),
        state,
    };
    let mut query = String::new();
    if let Some(kind) = &args.kind {
        query.push_str(&format!("&kind={kind}"));
    }
    if let Some(state) = state {
        query.push_str(&format!("&state={state}"));
    }
    let items = newest_with(source, "jobs", &query, async |pool| {
        let page = crate::store::jobs::list(pool, &filter, None, usize::from(source.limit)).await?;
        Ok(page.items.into_iter().map(|j| json!(j)).collect())
    })
    .await?;
    show(
        source,
        items,
        &[
            "ID",
            "STATE",
            "KIND",
            "PROJECT",
            "ENV",
            "SHA",
            "TRIGGER",
            "CREATED",
            "FAILED AT",
            "ERROR",
        ],
        |j| {
            vec![
                j["id"].to_string(),
                text(&j["state"]),
                text(&j["kind"]),
                text(&j["project"]),
                text(&j["environment"]),
                text(&j["sha"]).chars().take(7).collect(),
                text(&j["trigger"]),
                j["created_at"]
                    .as_i64()
                    .map(crate::telemetry::format_ms)
                    .unwrap_or_default(),
                text(&j["failed_step"]),
                text(&j["error"])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect(),
            ]
        },
    );
    Ok(())
}

/// `runner jobs JOB`: one line about the job, then a row per step: its state, how long it
/// took, and what it said (a test summary, why it was skipped, why it failed).
async fn job_steps(source: &Source, id: u64) -> Result<(), OpsError> {
    let job_id = i64::try_from(id)
        .ok()
        .and_then(|id| crate::domain::JobId::new(id).ok())
        .ok_or_else(|| OpsError::Usage(format!("job id must be a positive integer, got {id}")))?;
    let job = match &source.url {
        Some(url) => api_get(url, &format!("/api/jobs/{job_id}")).await?,
        None => {
            let pool = open_database(source).await?;
            let job = crate::store::jobs::get(&pool, job_id)
                .await
                .context("reading the job")?
                .ok_or_else(|| OpsError::Usage(format!("job {job_id} does not exist")))?;
            let steps = crate::store::steps::list(&pool, job_id.get())
                .await
                .context("reading the job's steps")?;
            let mut job = json!(job);
            job["steps"] = json!(steps);
            job
        }
    };
    if source.json {
        println!("{job}");
        return Ok(());
    }
    println!(
        "job {} {} {} of {} to {} at {}{}",
        job["id"],
        text(&job["state"]),
        text(&job["kind"]),
        text(&job["project"]),
        text(&job["environment"]),
        text(&job["sha"]).chars().take(7).collect::<String>(),
        job["error"]
            .as_str()
            .map(|error| format!(": {error}"))
            .unwrap_or_default()
    );
    let steps = job["steps"].as_array().cloned().unwrap_or_default();
    print_table(
        &["STEP", "STATE", "DURATION", "RESULT"],
        steps.iter().map(|step| {
            let duration =
                crate::domain::took(step["started_at"].as_i64(), step["finished_at"].as_i64()).unwrap_or_default();
            let said = [&step["summary"], &step["error"]]
                .iter()
                .filter_map(|value| value.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                text(&step["name"]),
                text(&step["state"]),
                duration,
                said.chars().take(100).collect(),
            ]
        }),
    );
    Ok(())
}

pub async fn deployments(source: &Source) -> Result<(), OpsError> {
    let filter = DeploymentFilter {
        project: source.project.clone(),
        ..DeploymentFilter::default()
    };
    let items = newest(source, "deployments", async |pool| {
        let page = crate::store::deployments::list_views(pool, &filter, None, usize::from(source.limit)).await?;
        Ok(page.items.into_iter().map(|d| json!(d)).collect())
    })
    .await?;
    show(
        source,
        items,
        &[
            "ID", "STATUS", "PROJECT", "ENV", "SHA", "TRIGGER", "JOB", "STARTED", "IMAGE",
        ],
        |d| {
            vec![
                d["id"].to_string(),
                text(&d["status"]),
                text(&d["project"]),
                text(&d["environment"]),
                text(&d["sha"]).chars().take(7).collect(),
                text(&d["trigger"]),
                d["job_id"].to_string(),
                d["started_at"]
                    .as_i64()
                    .map(crate::telemetry::format_ms)
                    .unwrap_or_default(),
                text(&d["image_ref"]),
            ]
        },
    );
    Ok(())
}

/// `runner previews`: the list, or `remove N`.
#[derive(Debug, clap::Args)]
pub struct PreviewsArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(subcommand)]
    pub action: Option<PreviewAction>,
}

#[derive(Debug, clap::Subcommand)]
pub enum PreviewAction {
    /// Remove pull request N's preview: its containers, route and images go.
    Remove {
        /// The pull request's number.
        number: u64,
    },
}

pub async fn previews(args: &PreviewsArgs) -> Result<(), OpsError> {
    let source = &args.source;
    let listed = match &source.url {
        Some(url) => api_get(url, "/api/previews").await?["previews"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        None => {
            let pool = open_database(source).await?;
            crate::store::previews::list(&pool, i64::from(source.limit))
                .await
                .context("reading previews")?
                .into_iter()
                .map(|p| json!(p))
                .collect()
        }
    };
    let listed: Vec<Value> = listed
        .into_iter()
        .filter(|p| source.project.as_deref().is_none_or(|project| p["project"] == project))
        .collect();
    if let Some(PreviewAction::Remove { number }) = &args.action {
        return remove_preview(source, &listed, *number).await;
    }
    show(
        source,
        listed,
        &["STATE", "PROJECT", "PR", "SHA", "URL", "LAST PUSH", "REMOVED BECAUSE"],
        |p| {
            vec![
                text(&p["state"]),
                text(&p["project"]),
                format!("#{}", p["number"]),
                text(&p["sha"]).chars().take(7).collect(),
                text(&p["url"]),
                p["pushed_at"]
                    .as_i64()
                    .map(crate::telemetry::format_ms)
                    .unwrap_or_default(),
                text(&p["removal"]),
            ]
        },
    );
    Ok(())
}

/// Asks the running runner to remove pull request `number`'s open preview (of `--project`,
/// needed only when two projects have one for that number).
async fn remove_preview(source: &Source, listed: &[Value], number: u64) -> Result<(), OpsError> {
    let url = source.url.as_deref().unwrap_or("http://127.0.0.1:8080");
    let open: Vec<&Value> = listed
        .iter()
        .filter(|p| p["number"].as_u64() == Some(number) && matches!(p["state"].as_str(), Some("deploying" | "live")))
        .collect();
    let project = match (source.project.as_deref(), open.as_slice()) {
        (Some(project), _) => project.to_owned(),
        (None, [only]) => text(&only["project"]),
        (None, []) => return Err(OpsError::Usage(format!("pull request #{number} has no open preview"))),
        (None, _) => {
            return Err(OpsError::Usage(format!(
                "several projects have a preview of #{number}: name one with --project"
            )));
        }
    };
    let response = client()?
        .post(format!(
            "{}/api/projects/{}/previews/{number}/remove",
            url.trim_end_matches('/'),
            utf8_percent_encode(&project, crate::percent::NON_UNRESERVED)
        ))
        .bearer_auth(admin_token()?)
        .send()
        .await
        .with_context(|| format!("cannot reach the runner at {url}"))?;
    let answered = answer(response).await?;
    if source.json {
        println!("{answered}");
    } else {
        println!("removing the preview of #{number} ({project})");
    }
    Ok(())
}

async fn open_database(source: &Source) -> Result<crate::store::Store, OpsError> {
    let config = Config::load(source.config.config.as_deref())
        .map_err(|e| OpsError::Usage(format!("invalid configuration: {e}")))?;
    Ok(crate::store::open(&config.server.database_url)
        .await
        .context("opening the database")?)
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&mut headers.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// POSTs an action, prints the job it concerns (`done`: what happened to it), and with
/// `--wait` follows the job to its end.
async fn act(remote: &Remote, path: &str, body: Option<Value>, done: &str) -> Result<(), OpsError> {
    let token = admin_token()?;
    let mut request = client()?
        .post(format!("{}{path}", remote.url.trim_end_matches('/')))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the runner at {}", remote.url))?;
    let queued = answer(response).await?;
    let job_id = queued["job_id"].as_i64().context("the runner did not name a job")?;
    if !remote.wait {
        if remote.json {
            println!("{queued}");
        } else {
            println!("{done} job {job_id}");
        }
        return Ok(());
    }
    let job = loop {
        let job = api_get(&remote.url, &format!("/api/jobs/{job_id}")).await?;
        if !matches!(job["state"].as_str(), Some("queued" | "running" | "awaiting_approval")) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if remote.json {
        println!("{job}");
    } else {
        println!(
            "job {job_id} {}{}",
            text(&job["state"]),
            job["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    if job["state"] == "succeeded" {
        Ok(())
    } else {
        Err(OpsError::Failed(anyhow::anyhow!("job {job_id} did not succeed")))
    }
}

pub async fn deploy(remote: &Remote, project: &str, target: &str) -> Result<(), OpsError> {
    let is_sha = target.len() == 40 && target.bytes().all(|b| b.is_ascii_hexdigit());
    let body = if is_sha {
        json!({ "sha": target })
    } else {
        json!({ "ref": target })
    };
    act(remote, &format!("/api/projects/{project}/deploy"), Some(body), "queued").await
}

pub async fn promote(remote: &Remote, project: &str, from: &str, to: &str) -> Result<(), OpsError> {
    let body = json!({ "from": from, "to": to });
    act(
        remote,
        &format!("/api/projects/{project}/promote"),
        Some(body),
        "queued",
    )
    .await
}

pub async fn rollback(remote: &Remote, deployment: u64) -> Result<(), OpsError> {
    act(
        remote,
        &format!("/api/deployments/{deployment}/rollback"),
        None,
        "queued",
    )
    .await
}

pub async fn replay(remote: &Remote, delivery: &str) -> Result<(), OpsError> {
    let delivery = crate::domain::DeliveryId::parse(delivery).map_err(|e| OpsError::Usage(e.to_string()))?;
    act(remote, &format!("/api/deliveries/{delivery}/replay"), None, "queued").await
}

/// Approves what a job waits for: running a fork's pull request, or applying its plan.
/// A plan is approved by its digest: `plan_digest` (of a plan read before), or else the
/// plan is fetched, shown on stderr, and approved as shown. Either way a plan made again
/// since is refused by the runner (409), not applied.
pub async fn approve(remote: &Remote, job: u64, plan_digest: Option<String>) -> Result<(), OpsError> {
    let plan_digest = match plan_digest {
        Some(digest) => Some(digest),
        None => show_plan(remote, job).await?,
    };
    let body = plan_digest.map(|digest| json!({ "plan_digest": digest }));
    act(remote, &format!("/api/jobs/{job}/approve"), body, "approved").await
}

/// Prints job `job`'s plan to stderr and returns its digest; `None` when it has none (a
/// fork's held pull request waits for approval to run at all).
async fn show_plan(remote: &Remote, job: u64) -> Result<Option<String>, OpsError> {
    let response = send_get(&remote.url, &format!("/api/jobs/{job}/plan")).await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        answer(response).await?;
        return Ok(None);
    }
    let digest = response
        .headers()
        .get(crate::web::api::PLAN_DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.context("reading the plan")?;
    // The digest of what is shown here, not what the header claims: the two agree unless
    // something between rewrote the body, and then the runner refuses the approval.
    let shown = crate::store::artifacts::ContentDigest::of(&text);
    if digest.as_deref().is_some_and(|d| !shown.matches(d)) {
        eprintln!("warning: the plan's digest header does not match its text");
    }
    eprintln!("{text}");
    eprintln!("approving this plan (digest {})", shown.as_str());
    Ok(Some(shown.as_str().to_owned()))
}

/// Rejects what a job waits for; the job ends without running it.
pub async fn reject(remote: &Remote, job: u64) -> Result<(), OpsError> {
    act(remote, &format!("/api/jobs/{job}/reject"), None, "rejected").await
}

pub async fn cancel(remote: &Remote, job: u64) -> Result<(), OpsError> {
    act(remote, &format!("/api/jobs/{job}/cancel"), None, "cancel requested for").await
}

/// Exit status 0 when the runner at `listen` answers `/healthz`: Docker's HEALTHCHECK.
pub async fn healthcheck(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let host = if listen.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        listen.ip()
    };
    let url = format!("http://{}/healthz", std::net::SocketAddr::new(host, listen.port()));
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} does not answer"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    Ok(())
}
