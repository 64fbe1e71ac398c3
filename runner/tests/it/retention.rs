//! Image retention on the real engine and registry: with `keep_deployments = 2`, four
//! deploys leave the images of the last two (the live one and the one a rollback goes
//! back to); older ones are gone from both, and a rollback to them is refused in a
//! sentence instead of failing later. The disk the kept images use is on /metrics.

use serde_json::Value;

use crate::common::*;
use crate::zero_downtime::environment_with;

fn engine_tags(repository: &str) -> Vec<String> {
    let listed = std::process::Command::new("docker")
        .args(["images", "--format", "{{.Tag}}", repository])
        .output()
        .expect("docker");
    let mut tags: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|t| t.len() == 40)
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

#[tokio::test]
async fn only_the_images_of_the_last_deployments_are_kept_and_rollbacks_to_them_work() {
    let env = environment_with("keep", |config| {
        config.projects[0].retention = Some(config::Retention {
            keep_deployments: Some(2),
        });
    })
    .await;
    let mut deployed = Vec::new();
    for change in ["one", "two", "three", "four"] {
        let (sha, job, _) = env.deploy_live(change).await;
        deployed.push((sha, job["deployment"]["id"].as_i64().expect("a deployment")));
    }
    let mut kept: Vec<String> = deployed[2..].iter().map(|(sha, _)| sha.clone()).collect();
    kept.sort();
    let pushed = format!("{}/{}", env.registry, env.image);
    assert_eq!(engine_tags(&env.image), kept, "the engine keeps the last two builds");
    assert_eq!(engine_tags(&pushed), kept, "and their pushed names");
    let tags: Value = reqwest::get(format!("http://{}/v2/{}/tags/list", env.registry, env.image))
        .await
        .expect("the registry answers")
        .json()
        .await
        .expect("json");
    let mut in_registry: Vec<String> = tags["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    in_registry.sort();
    // The registry still lists a tag whose manifest is deleted only until it is asked for
    // it: what counts is that the old manifests are gone.
    for (sha, _) in &deployed[..2] {
        let manifest = reqwest::Client::new()
            .head(format!("http://{}/v2/{}/manifests/{sha}", env.registry, env.image))
            .header(
                "accept",
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .await
            .expect("the registry answers");
        assert_eq!(
            manifest.status(),
            404,
            "{sha} is gone from the registry ({in_registry:?})"
        );
    }

    let client = reqwest::Client::new();
    let rollback = |deployment: i64| {
        client
            .post(env.runner.url(&format!("/api/deployments/{deployment}/rollback")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let refused = rollback(deployed[0].1).await.expect("the API answers");
    assert_eq!(refused.status(), 409);
    let message = refused.text().await.unwrap_or_default();
    assert!(
        message.contains("no longer kept") && message.contains("keep_deployments"),
        "{message}"
    );
    let accepted = rollback(deployed[2].1).await.expect("the API answers");
    assert_eq!(accepted.status(), 202);
    let job_id = accepted.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    let job = env.runner.wait_for_job_end(job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", env.runner.job_log(job_id).await);

    let metrics = env.runner.get_text("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&format!("runner_images_bytes{{project=\"{}\"}}", env.project)))
        .unwrap_or_else(|| panic!("no image disk metric:\n{metrics}"));
    let bytes: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(bytes > 0.0, "{line}");
    env.runner.stop().await;
}
