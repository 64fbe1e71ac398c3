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
