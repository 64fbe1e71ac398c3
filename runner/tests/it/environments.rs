//! One repository feeding two environments (staging from develop, production from
//! master), each with its own route behind the proxy, and a promotion that puts exactly
//! staging's image live in production without building it.

use serde_json::Value;

use crate::common::config::{Rollout, local_rollout};
use crate::common::*;
use crate::dashboard::{csrf_of, log_in, no_redirects, page};

#[tokio::test]
async fn branches_feed_their_environments_and_a_promotion_reuses_stagings_image() {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let unique = format!("{}{}", std::process::id(), free_port());
    let (project, image) = (format!("envs{unique}"), format!("runner-envs-{unique}"));
    let (staging_port, production_port) = (free_port(), free_port());
    let repo = tempfile::tempdir().expect("tempdir");
    let sha = webapp_repo(repo.path(), WEBAPP_DOCKERFILE);
    let _cleanup = [
        EngineCleanup {
            container: format!("runner-{project}-staging"),
            references: vec![
                format!("{image}:*"),
                format!("{registry}/{image}:*"),
                format!("{registry}/{image}@*"),
            ],
        },
        EngineCleanup {
            container: format!("runner-{project}-production"),
            references: vec![],
        },
    ];
    let (config_project, repo_path) = (project.clone(), repo.path().to_owned());
    let environment = |name: &str, branch: &str, rollout: Rollout| config::Environment {
        name: name.to_owned(),
        branches: vec![branch.to_owned()],
        rollout: Some(rollout),
        ..config::Environment::default()
    };
    let runner = TestRunner::start_with(move |dir| {
        let mut config = pipeline_config(dir, &config_project, &repo_path, &image, &registry, staging_port, 15);
        let project = &mut config.projects[0];
        project.deploy_branches.clear();
        project.rollout = None;
        project.environments = vec![
            environment("staging", "develop", local_rollout(staging_port, Some(30))),
            environment("production", "master", local_rollout(production_port, Some(30))),
        ];
        config
    })
    .await;

    // A push to develop deploys staging only.
    let response = runner.deliver("push", &push_body("refs/heads/develop", &sha)).await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = runner.wait_for_job_end(job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", runner.job_log(job_id).await);
    assert_eq!(job["environment"], "staging");
    let staging: Value = reqwest::get(format!("http://127.0.0.1:{staging_port}/version"))
        .await
        .expect("staging answers")
        .json()
        .await
        .expect("json");
    assert_eq!(staging["commit"], sha.as_str());
    assert!(
        reqwest::get(format!("http://127.0.0.1:{production_port}/version"))
            .await
            .is_ok_and(|r| r.status().is_server_error()),
        "production's route has nothing live behind it yet"
    );
    let jobs = runner.get_json(&format!("/api/jobs?project={project}")).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(1), "one job: {jobs}");

    // Promotion: staging's digest goes live in production, nothing is built.
    let client = reqwest::Client::new();
    let bad = client
        .post(runner.url(&format!("/api/projects/{project}/promote")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "from": "staging", "to": "nowhere" }))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(bad.status(), 404, "an unknown environment is refused");
    // The dashboard offers the promotion on staging's live deployment.
    let staging_deployment = job["deployment"]["id"].as_i64().expect("a deployment");
    let cookie = log_in(&runner).await;
    let (_, html) = page(&runner, "/", Some(&cookie)).await;
    let action = format!("/deployments/{staging_deployment}/promote/production");
    assert!(html.contains(&format!("action=\"{action}\"")), "{html}");
    assert!(html.contains("Promote to production"));
    let promoted = no_redirects()
        .post(runner.url(&action))
        .header("cookie", &cookie)
        .header("origin", runner.base.clone())
        .form(&[("csrf", csrf_of(&html))])
        .send()
        .await
        .expect("the dashboard answers");
    assert_eq!(promoted.status(), 303);
    let promotion_job: i64 = promoted.headers()["location"]
        .to_str()
        .ok()
        .and_then(|l| l.strip_prefix("/jobs/"))
        .and_then(|id| id.parse().ok())
        .expect("redirected to the promotion's job");
    let job = runner.wait_for_job_end(promotion_job).await;
    assert_eq!(
        job["state"],
        "succeeded",
        "{job}\n{}",
        runner.job_log(promotion_job).await
    );
    let steps: Vec<&str> = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(steps, ["rollout", "record"], "a promotion builds nothing");
    let production: Value = reqwest::get(format!("http://127.0.0.1:{production_port}/version"))
        .await
        .expect("production answers")
        .json()
        .await
        .expect("json");
    assert_eq!(production["commit"], sha.as_str());
    let deployments = runner.get_json(&format!("/api/deployments?project={project}")).await;
    let items = deployments["items"].as_array().expect("items");
    let of = |environment: &str| {
        items
            .iter()
            .find(|d| d["environment"] == environment && d["status"] == "live")
            .unwrap_or_else(|| panic!("a live deployment in {environment}: {deployments}"))
    };
    assert_eq!(of("production")["trigger"], "promote");
    assert_eq!(of("production")["image_digest"], of("staging")["image_digest"]);
    runner.stop().await;
}
