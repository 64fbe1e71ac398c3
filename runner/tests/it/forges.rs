//! Gitea, Forgejo and GitLab projects beside each other on one runner: their deliveries
//! (real bodies from the forges' own sources and documentation, under
//! `tests/fixtures/gitea-webhooks` and `tests/fixtures/gitlab-webhooks`) arrive at their
//! own routes, are verified their own way, and each project reports to its own server
//! (the stand-ins in `common::fake_forges`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::config::{self, Config};
use crate::common::fake_forges::*;
use crate::common::*;

const GITEA_REPO: &str = "gitea/webhooks";
const FORGEJO_REPO: &str = "forgejo/webhooks";
/// GitLab projects may sit in nested groups.
const GITLAB_REPO: &str = "platform/web/hello";
/// Each forge's project has a secret of its own (GitLab sends its secret in clear, so the
/// config refuses to let another project share it).
const FORGEJO_SECRET: &str = "forgejo-webhook-secret-0123456789";
const GITLAB_SECRET: &str = "gitlab-webhook-secret-0123456789";

fn forge_fixture(folder: &str, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder)
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
        .expect("fixture is JSON")
}

/// Gitea's own push body, moved to `repository`, `git_ref` and `after`.
fn gitea_push(repository: &str, git_ref: &str, after: &str) -> Vec<u8> {
    let mut push = forge_fixture("gitea-webhooks", "push.json");
    push["ref"] = git_ref.into();
    push["after"] = after.into();
    push["repository"]["full_name"] = repository.into();
    serde_json::to_vec(&push).expect("serialise")
}

/// Gitea's pull request body: pull request `number` of `repository`, its head `sha` on a
/// branch of `head_repository`, into master.
fn gitea_pull_request(action: &str, repository: &str, head_repository: &str, number: i64, sha: &str) -> Vec<u8> {
    let mut body = forge_fixture("gitea-webhooks", "pull_request.opened.json");
    body["action"] = action.into();
    body["number"] = number.into();
    body["repository"]["full_name"] = repository.into();
    let pr = &mut body["pull_request"];
    pr["number"] = number.into();
    pr["head"]["sha"] = sha.into();
    pr["head"]["repo"]["full_name"] = head_repository.into();
    pr["base"]["ref"] = "master".into();
    pr["base"]["repo"]["full_name"] = repository.into();
    serde_json::to_vec(&body).expect("serialise")
}

/// GitLab's documented push body, moved to `path`, `git_ref` and `after`.
fn gitlab_push(path: &str, git_ref: &str, after: &str) -> Vec<u8> {
    let mut push = forge_fixture("gitlab-webhooks", "push.json");
    push["ref"] = git_ref.into();
    push["after"] = after.into();
    push["checkout_sha"] = after.into();
    push["project"]["path_with_namespace"] = path.into();
    if let Some(last) = push["commits"].as_array_mut().and_then(|c| c.last_mut()) {
        last["id"] = after.into();
    }
    serde_json::to_vec(&push).expect("serialise")
}

/// GitLab's documented merge request body: `iid` of `path` into master, its last commit
/// `sha`, from project `source_project_id` (the target is 14).
fn gitlab_merge_request(action: &str, path: &str, iid: i64, sha: &str, source_project_id: i64) -> Vec<u8> {
    let mut body = forge_fixture("gitlab-webhooks", "merge_request.json");
    body["project"]["path_with_namespace"] = path.into();
    let attributes = &mut body["object_attributes"];
    attributes["action"] = action.into();
    attributes["iid"] = iid.into();
    attributes["target_branch"] = "master".into();
    attributes["last_commit"]["id"] = sha.into();
    attributes["source_project_id"] = source_project_id.into();
    attributes["target"]["path_with_namespace"] = path.into();
    serde_json::to_vec(&body).expect("serialise")
}

/// Posts a delivery as Gitea (or Forgejo, with `forgejo`) sends it: its own headers, and
/// GitHub's beside them, signed with `secret`.
async fn deliver_gitea(
    runner: &TestRunner,
    route: &str,
    forgejo: bool,
    event: &str,
    body: &[u8],
    secret: &str,
    delivery: &str,
) -> reqwest::Response {
    let signature = sign(secret, body);
    let bare = signature.trim_start_matches("sha256=").to_owned();
    let mut request = runner
        .client
        .post(runner.url(route))
        .header("content-type", "application/json")
        .header("x-gitea-event", event)
        .header("x-gitea-event-type", event)
        .header("x-gitea-delivery", delivery)
        .header("x-gitea-signature", &bare)
        .header("x-gogs-event", event)
        .header("x-gogs-delivery", delivery)
        .header("x-gogs-signature", &bare)
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", &signature);
    if forgejo {
        request = request
            .header("x-forgejo-event", event)
            .header("x-forgejo-event-type", event)
            .header("x-forgejo-delivery", delivery)
            .header("x-forgejo-signature", &bare);
    }
    request.body(body.to_vec()).send().await.expect("POST gitea delivery")
}

/// Posts a delivery as GitLab sends it: the secret itself as `X-Gitlab-Token`.
async fn deliver_gitlab(
    runner: &TestRunner,
    event: &str,
    body: &[u8],
    token: &str,
    delivery: &str,
) -> reqwest::Response {
    runner
        .client
        .post(runner.url("/webhooks/gitlab"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", event)
        .header("x-gitlab-token", token)
        .header("x-gitlab-event-uuid", delivery)
        .header("idempotency-key", delivery)
        .header("user-agent", "GitLab/17.6.0")
        .body(body.to_vec())
        .send()
        .await
        .expect("POST gitlab delivery")
}

fn forge_env(name: &str) -> Option<String> {
    match name {
        "GITEA_TOKEN_FOR_TESTS" => Some(GITEA_TOKEN.to_owned()),
        "GITLAB_TOKEN_FOR_TESTS" => Some(GITLAB_TOKEN.to_owned()),
        "FORGEJO_SECRET" => Some(FORGEJO_SECRET.to_owned()),
        "GITLAB_SECRET" => Some(GITLAB_SECRET.to_owned()),
        other => test_env(other),
    }
}

/// Three forge instances: `gitea` (kind from its name), `codeberg` (a Forgejo) and
/// `gitlab`, at the stand-ins' addresses.
fn with_forges(config: &mut Config, gitea: &str, forgejo: &str, gitlab: &str) {
    let forge = |kind: Option<&str>, url: &str, token: &str| config::Forge {
        kind: kind.map(str::to_owned),
        url: url.to_owned(),
        token_env: Some(token.to_owned()),
        token_file: None,
    };
    config.forges = BTreeMap::from([
        ("gitea".to_owned(), forge(None, gitea, "GITEA_TOKEN_FOR_TESTS")),
        (
            "codeberg".to_owned(),
            forge(Some("forgejo"), forgejo, "GITEA_TOKEN_FOR_TESTS"),
        ),
        ("gitlab".to_owned(), forge(None, gitlab, "GITLAB_TOKEN_FOR_TESTS")),
    ]);
}

/// The job a delivery was answered 202 for.
async fn queued_job(runner: &TestRunner, (status, answer): (u16, Value)) -> Value {
    assert_eq!(status, 202, "{answer}");
    runner.get_json(&format!("/api/jobs/{}", job_id_of(&answer))).await
}

fn job_id_of(answer: &Value) -> i64 {
    answer["job_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("a job id: {answer}"))
}

async fn answer_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_forgejo_and_gitlab_projects_deploy_and_report_through_one_runner() {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let unique = format!("{}{}", std::process::id(), free_port());
    let repo = tempfile::tempdir().expect("tempdir");
    let sha = webapp_repo(repo.path(), WEBAPP_DOCKERFILE);
    let (gitea, forgejo, gitlab) = (
        FakeForge::new(Flavour::Gitea),
        FakeForge::new(Flavour::Gitea),
        FakeForge::new(Flavour::GitLab),
    );
    for forge in [&gitea, &forgejo, &gitlab] {
        forge.with(|f| {
            f.commits.insert(sha.clone());
        });
    }
    let (gitea_url, forgejo_url, gitlab_url) = (gitea.start().await, forgejo.start().await, gitlab.start().await);
    let projects = [
        ("gitea", GITEA_REPO, format!("fg{unique}"), "HELLO_SECRET"),
        ("codeberg", FORGEJO_REPO, format!("ff{unique}"), "FORGEJO_SECRET"),
        ("gitlab", GITLAB_REPO, format!("fl{unique}"), "GITLAB_SECRET"),
    ];
    let ports = [free_port(), free_port(), free_port()];
    let _cleanup: Vec<EngineCleanup> = projects
        .iter()
        .map(|(_, _, name, _)| EngineCleanup {
            container: format!("runner-{name}-production"),
            references: vec![
                format!("runner-{name}:*"),
                format!("{registry}/runner-{name}:*"),
                format!("{registry}/runner-{name}@*"),
            ],
        })
        .collect();
    let repo_path = repo.path().to_owned();
    let (configured, urls) = (projects.clone(), (gitea_url, forgejo_url, gitlab_url));
    let runner = TestRunner::start_with_env(
        move |dir| {
            let mut config = config::pipeline_config(dir, "unused", &repo_path, "unused", &registry, ports[0], 15);
            let template = config.projects.remove(0);
            config.projects = configured
                .iter()
                .zip(ports)
                .map(|((forge, repository, name, secret), port)| config::Project {
                    name: name.clone(),
                    repository: (*repository).to_owned(),
                    forge: Some((*forge).to_owned()),
                    webhook_secret_env: Some((*secret).to_owned()),
                    build: Some(config::build(&format!("runner-{name}"))),
                    rollout: Some(config::local_rollout(port, Some(30))),
                    ..template.clone()
                })
                .collect();
            with_forges(&mut config, &urls.0, &urls.1, &urls.2);
            config
        },
        forge_env,
    )
    .await;

    let gitea_job = {
        let response = deliver_gitea(
            &runner,
            "/webhooks/gitea",
            false,
            "push",
            &gitea_push(GITEA_REPO, "refs/heads/master", &sha),
            SECRET,
            &unique_delivery_id(),
        )
        .await;
        let (status, answer) = answer_of(response).await;
        assert_eq!(status, 202, "{answer}");
        job_id_of(&answer)
    };
    let forgejo_job = {
        let response = deliver_gitea(
            &runner,
            "/webhooks/gitea",
            true,
            "push",
            &gitea_push(FORGEJO_REPO, "refs/heads/master", &sha),
            FORGEJO_SECRET,
            &unique_delivery_id(),
        )
        .await;
        let (status, answer) = answer_of(response).await;
        assert_eq!(status, 202, "{answer}");
        job_id_of(&answer)
    };
    let gitlab_job = {
        let response = deliver_gitlab(
            &runner,
            "Push Hook",
            &gitlab_push(GITLAB_REPO, "refs/heads/master", &sha),
            GITLAB_SECRET,
            &unique_delivery_id(),
        )
        .await;
        let (status, answer) = answer_of(response).await;
        assert_eq!(status, 202, "{answer}");
        job_id_of(&answer)
    };

    for ((job_id, port), (_, _, name, _)) in [gitea_job, forgejo_job, gitlab_job]
        .into_iter()
        .zip(ports)
        .zip(&projects)
    {
        let job = runner.wait_for_job_end(job_id).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", runner.job_log(job_id).await);
        assert_eq!(job["project"], name.as_str());
        let live: Value = reqwest::get(format!("http://127.0.0.1:{port}/version"))
            .await
            .expect("the project answers")
            .json()
            .await
            .expect("json");
        assert_eq!(live["commit"], sha.as_str(), "{name} serves the pushed commit");
    }

    // Each project told its own server, in that server's words: pending, then success.
    for (forge, flavour_success) in [(&gitea, "success"), (&forgejo, "success"), (&gitlab, "success")] {
        let statuses = eventually("a final status", || {
            let s = forge.statuses();
            s.iter().any(|(_, state, _, _)| state == flavour_success).then_some(s)
        })
        .await;
        assert_eq!(statuses[0].1, "pending", "{statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|(s, _, context, _)| *s == sha && context == "runner/deploy (production)"),
            "{statuses:?}"
        );
        assert_eq!(statuses.last().map(|s| s.3.as_str()), Some("deployed to production"));
    }
    let gitea_paths: Vec<String> = gitea.requests().into_iter().map(|r| r.path).collect();
    assert!(
        gitea_paths
            .iter()
            .all(|p| p.starts_with(&format!("/api/v1/repos/{GITEA_REPO}/"))),
        "{gitea_paths:?}"
    );
    assert!(
        forgejo
            .requests()
            .iter()
            .all(|r| r.path.starts_with(&format!("/api/v1/repos/{FORGEJO_REPO}/"))),
        "the Forgejo project reports to its own server only"
    );
    assert!(
        !gitea_paths.iter().any(|p| p.contains("deployments")),
        "Gitea keeps no deployments: none asked for"
    );
    // GitLab: the project by its encoded path, and a deployment that ends in success.
    let encoded = GITLAB_REPO.replace('/', "%2F");
    assert!(
        gitlab
            .requests()
            .iter()
            .all(|r| r.path.starts_with(&format!("/api/v4/projects/{encoded}/"))),
        "{:?}",
        gitlab.requests()
    );
    let deployment = eventually("GitLab's deployment to succeed", || {
        gitlab.with(|f| f.deployments.values().find(|d| d["status"] == "success").cloned())
    })
    .await;
    assert_eq!(deployment["environment"], "production");
    assert_eq!(
        deployment["history"],
        serde_json::json!(["running", "success"]),
        "created running, then succeeded: no transition GitLab refuses"
    );
    assert_eq!(deployment["ref"], "master");
    assert_eq!(deployment["tag"], false);
    assert_eq!(deployment["sha"], sha.as_str());

    // The job pages link to each forge's own commit page.
    let gitlab_page = runner.get_text(&format!("/jobs/{gitlab_job}")).await;
    assert!(
        gitlab_page.contains(&format!("/{GITLAB_REPO}/-/commit/{sha}")),
        "GitLab's commit link"
    );
    let gitea_page = runner.get_text(&format!("/jobs/{gitea_job}")).await;
    assert!(
        gitea_page.contains(&format!("/{GITEA_REPO}/commit/{sha}")),
        "Gitea's commit link"
    );
    runner.stop().await;
}

#[tokio::test]
async fn each_forges_route_verifies_its_own_way_and_reads_only_its_own_format() {
    let (gitea, forgejo, gitlab) = (
        FakeForge::new(Flavour::Gitea),
        FakeForge::new(Flavour::Gitea),
        FakeForge::new(Flavour::GitLab),
    );
    let sha = "c".repeat(40);
    for forge in [&gitea, &forgejo, &gitlab] {
        forge.with(|f| {
            f.commits.insert(sha.clone());
        });
    }
    let urls = (gitea.start().await, forgejo.start().await, gitlab.start().await);
    let runner = TestRunner::start_on_fakes_with_env(
        |dir| {
            // Beside a GitHub project, whose secret the Gitea project shares.
            let mut config = default_config(dir);
            config.projects.truncate(1);
            let template = config.projects[0].clone();
            for (forge, repository, name, secret) in [
                ("gitea", GITEA_REPO, "on-gitea", "HELLO_SECRET"),
                ("codeberg", FORGEJO_REPO, "on-forgejo", "FORGEJO_SECRET"),
                ("gitlab", GITLAB_REPO, "on-gitlab", "GITLAB_SECRET"),
            ] {
                config.projects.push(config::Project {
                    name: name.to_owned(),
                    repository: repository.to_owned(),
                    forge: Some(forge.to_owned()),
                    webhook_secret_env: Some(secret.to_owned()),
                    pull_requests: Some("approve-forks".to_owned()),
                    rollout: Some(config::local_rollout(free_port(), None)),
                    ..template.clone()
                });
            }
            with_forges(&mut config, &urls.0, &urls.1, &urls.2);
            config
        },
        forge_env,
    )
    .await;
    let gitea_body = gitea_push(GITEA_REPO, "refs/heads/master", &sha);
    let forgejo_body = gitea_push(FORGEJO_REPO, "refs/heads/master", &sha);
    let gitlab_body = gitlab_push(GITLAB_REPO, "refs/heads/master", &sha);
    let gitea_says = |forgejo: bool, event: &str, body: &[u8], secret: &str| {
        let (event, body, secret) = (event.to_owned(), body.to_vec(), secret.to_owned());
        let runner = &runner;
        async move {
            answer_of(
                deliver_gitea(
                    runner,
                    "/webhooks/gitea",
                    forgejo,
                    &event,
                    &body,
                    &secret,
                    &unique_delivery_id(),
                )
                .await,
            )
            .await
        }
    };
    let gitlab_says = |event: &str, body: &[u8], token: &str| {
        let (event, body, token) = (event.to_owned(), body.to_vec(), token.to_owned());
        let runner = &runner;
        async move { answer_of(deliver_gitlab(runner, &event, &body, &token, &unique_delivery_id()).await).await }
    };

    // Wrong secrets are 401, each naming its forge's header, and queue nothing.
    let (status, answer) = gitea_says(false, "push", &gitea_body, "wrong").await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.to_string().contains("X-Gitea-Signature"), "{answer}");
    let (status, answer) = gitea_says(true, "push", &forgejo_body, "wrong").await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.to_string().contains("X-Forgejo-Signature"),
        "Forgejo's own header is read: {answer}"
    );
    assert_eq!(gitlab_says("Push Hook", &gitlab_body, "wrong").await.0, 401);
    assert_eq!(
        gitlab_says("Push Hook", &gitlab_body, &format!("{GITLAB_SECRET}x"))
            .await
            .0,
        401,
        "a token is the whole secret, not a prefix of it"
    );
    // One project's secret does not open another's: the Gitea project's on the Forgejo
    // project's repository, the Forgejo project's as GitLab's token.
    let (status, answer) = gitea_says(true, "push", &forgejo_body, SECRET).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.to_string().contains(FORGEJO_REPO), "{answer}");
    assert_eq!(gitlab_says("Push Hook", &gitlab_body, FORGEJO_SECRET).await.0, 401);
    assert_eq!(runner.count("jobs").await, 0);

    // A Gitea delivery carries GitHub's headers too, signed with a secret the GitHub
    // project shares: the GitHub route still does not take it, as no GitHub project has
    // that repository; nor does the Gitea route take a GitHub project's delivery.
    let (status, answer) = answer_of(
        runner
            .deliver_signed("push", &gitea_body, Some(SECRET), &unique_delivery_id())
            .await,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = gitea_says(false, "push", &push_body("refs/heads/master", &sha), SECRET).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(runner.count("jobs").await, 0);

    // Deleted branches, tags the project does not deploy, Gitea's `delete` and events
    // GitLab names in words of its own queue nothing; a push naming no repository is
    // no project's.
    let (status, answer) = gitlab_says(
        "Push Hook",
        &gitlab_push(GITLAB_REPO, "refs/heads/master", &"0".repeat(40)),
        GITLAB_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["ignored"].as_str().is_some_and(|r| r.contains("deleted")),
        "{answer}"
    );
    let mut tag = forge_fixture("gitlab-webhooks", "tag_push.json");
    tag["project"]["path_with_namespace"] = GITLAB_REPO.into();
    let (status, answer) = gitlab_says(
        "Tag Push Hook",
        &serde_json::to_vec(&tag).expect("serialise"),
        GITLAB_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["ignored"].as_str().is_some_and(|r| r.contains("tag")),
        "{answer}"
    );
    let mut deleted = forge_fixture("gitea-webhooks", "create.json");
    deleted["repository"]["full_name"] = GITEA_REPO.into();
    let (status, answer) = gitea_says(
        false,
        "delete",
        &serde_json::to_vec(&deleted).expect("serialise"),
        SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["ignored"].is_string(), "{answer}");
    let oddly_named = unique_delivery_id();
    let (status, answer) = answer_of(
        deliver_gitlab(
            &runner,
            "push",
            &gitlab_push(GITLAB_REPO, "refs/heads/master", &"e".repeat(40)),
            GITLAB_SECRET,
            &oddly_named,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["ignored"].is_string(), "{answer}");
    let replayed = runner
        .client
        .post(runner.url(&format!("/api/deliveries/{oddly_named}/replay")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("POST replay");
    assert_eq!(replayed.status(), 409, "an ignored event replays as ignored");
    let mut anonymous: Value = serde_json::from_slice(&gitlab_body).expect("json");
    anonymous.as_object_mut().expect("an object").remove("project");
    let (status, answer) = gitlab_says(
        "Push Hook",
        &serde_json::to_vec(&anonymous).expect("serialise"),
        GITLAB_SECRET,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = gitlab_says("Push Hook", b"{not json", GITLAB_SECRET).await;
    assert_eq!(status, 400, "malformed JSON on a verified delivery: {answer}");
    assert_eq!(runner.count("jobs").await, 0);

    // The right secret queues a deploy; the same delivery again is a duplicate.
    let delivery = unique_delivery_id();
    let (status, first) = answer_of(
        deliver_gitea(
            &runner,
            "/webhooks/gitea",
            false,
            "push",
            &gitea_body,
            SECRET,
            &delivery,
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = answer_of(
        deliver_gitea(
            &runner,
            "/webhooks/gitea",
            false,
            "push",
            &gitea_body,
            SECRET,
            &delivery,
        )
        .await,
    )
    .await;
    assert_eq!((status, &again["duplicate"]), (200, &Value::Bool(true)), "{again}");
    assert_eq!(again["job_id"], first["job_id"]);
    let gitlab_delivery = unique_delivery_id();
    let (status, first) =
        answer_of(deliver_gitlab(&runner, "Push Hook", &gitlab_body, GITLAB_SECRET, &gitlab_delivery).await).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) =
        answer_of(deliver_gitlab(&runner, "Push Hook", &gitlab_body, GITLAB_SECRET, &gitlab_delivery).await).await;
    assert_eq!((status, &again["duplicate"]), (200, &Value::Bool(true)), "{again}");

    // A deploy that fails (nothing to clone here) reports failure to its forge, and its
    // GitLab deployment goes from running to failed.
    let job = runner.wait_for_job_end(job_id_of(&first)).await;
    assert_eq!(job["state"], "failed");
    let statuses = eventually("GitLab's failure status", || {
        let s = gitlab.statuses();
        s.iter().any(|(_, state, _, _)| state == "failed").then_some(s)
    })
    .await;
    assert_eq!(statuses[0].1, "pending", "{statuses:?}");
    let deployment = eventually("GitLab's deployment to fail", || {
        gitlab.with(|f| f.deployments.values().find(|d| d["status"] == "failed").cloned())
    })
    .await;
    assert_eq!(deployment["ref"], "master");
    assert_eq!(deployment["history"], serde_json::json!(["running", "failed"]));
    let gitea_job = runner.get_json("/api/jobs?project=on-gitea").await["items"][0]["id"]
        .as_i64()
        .expect("the Gitea project's job");
    let gitea_job = runner.wait_for_job_end(gitea_job).await;
    assert_eq!(gitea_job["state"], "failed");
    eventually("Gitea's failure status", || {
        gitea
            .statuses()
            .iter()
            .any(|(_, state, _, _)| state == "failure")
            .then_some(())
    })
    .await;

    // A stored delivery replays as its own forge's format, for its own project.
    for (delivery, project) in [(&delivery, "on-gitea"), (&gitlab_delivery, "on-gitlab")] {
        let response = runner
            .client
            .post(runner.url(&format!("/api/deliveries/{delivery}/replay")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("POST replay");
        let (status, answer) = answer_of(response).await;
        assert_eq!(status, 202, "{answer}");
        let replayed = runner.get_json(&format!("/api/jobs/{}", job_id_of(&answer))).await;
        assert_eq!(
            (replayed["trigger"].as_str(), replayed["project"].as_str()),
            (Some("replay"), Some(project)),
            "{replayed}"
        );
    }

    // Pull and merge requests verify; a fork's waits for an admin, including a Gitea
    // pull request whose head repository is gone and a merge request that names no
    // project ids.
    let (status, answer) = gitea_says(
        true,
        "pull_request",
        &gitea_pull_request("synchronized", FORGEJO_REPO, FORGEJO_REPO, 3, &sha),
        FORGEJO_SECRET,
    )
    .await;
    assert_eq!(
        status, 202,
        "Gitea's \"synchronized\" is a new push to the pull request: {answer}"
    );
    let verify = runner.get_json(&format!("/api/jobs/{}", job_id_of(&answer))).await;
    assert_eq!(
        (
            verify["kind"].as_str(),
            verify["state"].as_str() != Some("awaiting_approval")
        ),
        (Some("verify"), true)
    );
    assert_eq!(verify["git_ref"], "refs/pull/3/head");
    let held = queued_job(
        &runner,
        gitea_says(
            false,
            "pull_request",
            &gitea_pull_request("opened", GITEA_REPO, "stranger/webhooks", 4, &sha),
            SECRET,
        )
        .await,
    )
    .await;
    assert_eq!(
        held["state"], "awaiting_approval",
        "a fork's pull request waits: {held}"
    );
    let mut orphan: Value =
        serde_json::from_slice(&gitea_pull_request("opened", GITEA_REPO, GITEA_REPO, 5, &sha)).expect("json");
    orphan["pull_request"]["head"]["repo"] = Value::Null;
    let held = queued_job(
        &runner,
        gitea_says(
            false,
            "pull_request",
            &serde_json::to_vec(&orphan).expect("serialise"),
            SECRET,
        )
        .await,
    )
    .await;
    assert_eq!(
        held["state"], "awaiting_approval",
        "a deleted fork's pull request waits: {held}"
    );

    let verify = queued_job(
        &runner,
        gitlab_says(
            "Merge Request Hook",
            &gitlab_merge_request("open", GITLAB_REPO, 5, &sha, 14),
            GITLAB_SECRET,
        )
        .await,
    )
    .await;
    assert_eq!(verify["kind"], "verify");
    assert_ne!(verify["state"], "awaiting_approval", "{verify}");
    assert_eq!(verify["git_ref"], "refs/merge-requests/5/head");
    let held = queued_job(
        &runner,
        gitlab_says(
            "Merge Request Hook",
            &gitlab_merge_request("open", GITLAB_REPO, 6, &sha, 99),
            GITLAB_SECRET,
        )
        .await,
    )
    .await;
    assert_eq!(
        held["state"], "awaiting_approval",
        "another project's source branch is a fork's: {held}"
    );
    let mut unnamed: Value =
        serde_json::from_slice(&gitlab_merge_request("open", GITLAB_REPO, 7, &sha, 14)).expect("json");
    let attributes = unnamed["object_attributes"].as_object_mut().expect("an object");
    attributes.remove("source_project_id");
    attributes.remove("target_project_id");
    let held = queued_job(
        &runner,
        gitlab_says(
            "Merge Request Hook",
            &serde_json::to_vec(&unnamed).expect("serialise"),
            GITLAB_SECRET,
        )
        .await,
    )
    .await;
    assert_eq!(
        held["state"], "awaiting_approval",
        "without project ids, it counts as a fork's: {held}"
    );
    // An edit of the title brings no commit: nothing to verify.
    let (status, answer) = gitlab_says(
        "Merge Request Hook",
        &gitlab_merge_request("update", GITLAB_REPO, 5, &sha, 14),
        GITLAB_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["ignored"].is_string(), "{answer}");

    // Each delivery names its forge, in the API and on the deliveries page.
    let deliveries = runner.get_json("/api/deliveries").await;
    let items = deliveries["items"].as_array().expect("items");
    let events: std::collections::BTreeSet<&str> = items.iter().filter_map(|d| d["event"].as_str()).collect();
    assert!(
        events.contains("merge_request") && events.contains("push"),
        "{events:?}"
    );
    let forges: std::collections::BTreeSet<&str> = items.iter().filter_map(|d| d["forge"].as_str()).collect();
    assert_eq!(
        forges,
        ["forgejo", "gitea", "gitlab"].into_iter().collect(),
        "each delivery names its forge"
    );
    let page = runner.get_text("/deliveries").await;
    assert!(
        page.contains("GitLab") && page.contains("Forgejo"),
        "the deliveries page names the forges"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_project_whose_forge_has_no_instance_is_refused_at_start_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = default_config(dir.path());
    config.projects[0].forge = Some("gitea".to_owned());
    let path = dir.path().join("runner.toml");
    std::fs::write(&path, config::to_toml(&config)).expect("write");
    let error = runner::config::Config::load_with(Some(&path), &test_env).expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("projects[0].forge"), "{message}");
    assert!(message.contains("[forges.gitea]"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_branch_head_that_no_delivery_announced_is_deployed() {
    let gitea = FakeForge::new(Flavour::Gitea);
    let head = "d".repeat(40);
    gitea.with(|f| {
        f.branches.insert("master".into(), head.clone());
        f.commits.insert(head.clone());
    });
    let (gitea_url, unused) = (gitea.start().await, "http://127.0.0.1:1".to_owned());
    let runner = TestRunner::start_on_fakes_with_env(
        |dir| {
            let mut config = default_config(dir);
            let template = config.projects.remove(0);
            config.projects.push(config::Project {
                name: "on-gitea".to_owned(),
                repository: GITEA_REPO.to_owned(),
                forge: Some("gitea".to_owned()),
                ..template
            });
            with_forges(&mut config, &gitea_url, &unused, &unused);
            config
        },
        forge_env,
    )
    .await;
    let job = eventually("a reconcile deploy", || {
        let jobs = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(runner.get_json("/api/jobs?kind=deploy"))
        });
        jobs["items"].as_array().and_then(|items| items.first().cloned())
    })
    .await;
    assert_eq!(job["trigger"], "reconcile", "{job}");
    assert_eq!(job["sha"], head.as_str());
    assert_eq!(job["project"], "on-gitea");
    assert!(
        gitea
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == format!("/api/v1/repos/{GITEA_REPO}/branches/master")),
        "{:?}",
        gitea.requests()
    );
    runner.stop().await;
}
