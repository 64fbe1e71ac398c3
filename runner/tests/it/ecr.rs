//! ECR against a real AWS API emulator (moto): repository creation and login.
//! Needs `RUNNER_TEST_AWS_ENDPOINT` (scripts/services.sh start; scripts/test does this).

use crate::common::*;
use runner::adapters::registry::ecr::Ecr;

fn endpoint() -> String {
    required_env("RUNNER_TEST_AWS_ENDPOINT", "start moto with scripts/services.sh start")
}

#[tokio::test]
async fn a_missing_repository_is_created_once_and_found_after() {
    let ecr = Ecr::new(Some("us-east-1".into()), Some(endpoint())).await;
    let name = format!("runner-ecr-{}-{}", std::process::id(), free_port());
    assert_eq!(ecr.find_repository(&name).await.expect("describe"), None);
    let created = ecr.ensure_repository(&name).await.expect("created");
    assert!(created.ends_with(&format!("/{name}")), "{created}");
    let again = ecr.ensure_repository(&name).await.expect("found");
    assert_eq!(again, created, "the existing repository is reused, not created twice");
    assert_eq!(ecr.find_repository(&name).await.expect("describe"), Some(created));
}

#[tokio::test]
async fn login_decodes_the_authorization_token() {
    let ecr = Ecr::new(Some("us-east-1".into()), Some(endpoint())).await;
    let login = ecr.login().await.expect("token");
    assert_eq!(login.auth.username, "AWS");
    assert!(!login.auth.password.is_empty());
    assert!(login.registry_host.contains(".dkr.ecr."), "{}", login.registry_host);
    assert!(!login.registry_host.starts_with("http"), "{}", login.registry_host);
}

#[tokio::test]
async fn an_unreachable_ecr_endpoint_is_a_clear_error() {
    let ecr = Ecr::new(
        Some("us-east-1".into()),
        Some(format!("http://127.0.0.1:{}", free_port())),
    )
    .await;
    let error = ecr.ensure_repository("nothing").await.expect_err("no endpoint");
    let error = error.to_string();
    assert!(error.contains("describing ECR repository nothing"), "{error}");
}

#[tokio::test]
async fn the_login_token_and_its_password_are_masked_wherever_the_runner_writes() {
    use base64::Engine as _;
    let ecr = Ecr::new(Some("us-east-1".into()), Some(endpoint())).await;
    let login = ecr.login().await.expect("token");
    let password = login.auth.password.clone();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    let mask = runner::secrets::SecretMask::default();
    for (what, text) in [
        ("password", format!("docker login --password {password}")),
        ("token", format!("Authorization: Basic {token}")),
    ] {
        let masked = mask.apply(&text);
        assert!(
            !masked.contains(&password) && !masked.contains(&token),
            "the {what} is shown: {masked}"
        );
        assert!(masked.contains("***"), "{masked}");
    }
}

/// Puts an image tagged `tag` into `repository` through ECR's own API (moto takes any
/// manifest); its digest.
async fn put_image(client: &aws_sdk_ecr::Client, repository: &str, tag: &str, content: &str) -> String {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": format!("sha256:{content}") },
        // moto names an image by its layers.
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": format!("sha256:{content}") }]
    })
    .to_string();
    let put = client
        .put_image()
        .repository_name(repository)
        .image_tag(tag)
        .image_manifest(manifest)
        .send()
        .await
        .expect("put_image");
    put.image()
        .and_then(|image| image.image_id())
        .and_then(|id| id.image_digest())
        .expect("a digest")
        .to_owned()
}

#[tokio::test]
async fn retention_and_a_previews_removal_delete_exactly_their_own_tags_from_ecr() {
    use runner::adapters::registry::Registry;
    use runner::adapters::registry::ecr::{EcrRegistry, aws_sdk_config};
    use runner::store::deployments::KeptImages;
    let ecr = std::sync::Arc::new(Ecr::new(Some("us-east-1".into()), Some(endpoint())).await);
    let name = format!("runner-ecr-prune-{}-{}", std::process::id(), free_port());
    ecr.ensure_repository(&name).await.expect("created");
    let client = aws_sdk_ecr::Client::new(&aws_sdk_config(Some("us-east-1".into()), Some(endpoint())).await);
    let (live, old) = ("a".repeat(40), "b".repeat(40));
    let live_digest = put_image(&client, &name, &live, &"1".repeat(64)).await;
    put_image(&client, &name, &old, &"2".repeat(64)).await;
    put_image(&client, &name, &format!("pr-7-{}", "c".repeat(40)), &"3".repeat(64)).await;
    put_image(&client, &name, &format!("pr-8-{}", "d".repeat(40)), &"4".repeat(64)).await;
    // The same image as the live deploy's, under pull request 7's tag.
    put_image(&client, &name, &format!("pr-7-{live}"), &"1".repeat(64)).await;
    let registry = EcrRegistry {
        client: std::sync::Arc::clone(&ecr),
        url: None,
    };
    let log = runner::joblog::JobLog::to_tracing("ecr test".into(), Default::default());
    let keep = KeptImages {
        shas: [live.clone()].into(),
        digests: [live_digest].into(),
    };
    let tags = async || {
        let mut tags: Vec<String> = ecr
            .tagged_images(&name)
            .await
            .expect("list")
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        tags.sort();
        tags
    };

    assert_eq!(
        registry
            .delete_tags(&name, "pr-7-", &keep, &log)
            .await
            .expect("deleted"),
        1
    );
    assert_eq!(
        tags().await,
        [
            live.clone(),
            old.clone(),
            format!("pr-7-{live}"),
            format!("pr-8-{}", "d".repeat(40))
        ],
        "pull request 7's own image went; the one the live deploy shares stayed"
    );
    assert_eq!(registry.prune(&name, &keep, &log).await.expect("pruned"), 1);
    assert_eq!(
        tags().await,
        [live.clone(), format!("pr-7-{live}"), format!("pr-8-{}", "d".repeat(40))],
        "the old deploy's image went; previews' tags are not retention's"
    );
    assert_eq!(
        registry
            .delete_tags("runner-ecr-missing", "pr-1-", &keep, &log)
            .await
            .expect("a missing repository has nothing to delete"),
        0
    );
}
