//! Property tests of the signature and payload path: no input makes it panic, and only
//! the exact signature of the exact body verifies.

use crate::common::config;
use proptest::prelude::*;
use runner::Config;
use runner::config::Project;
use runner::domain::GitRef;
use runner::webhook::signature::{Signature, SignatureKey};
use runner::webhook::{event, github};

fn project() -> Project {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runner.toml");
    let file = config::Config {
        projects: vec![config::project("hello", "Codertocat/Hello-World", &["master"], "S")],
        ..config::Config::default()
    };
    std::fs::write(&path, config::to_toml(&file)).expect("write");
    let config = Config::load_with(Some(&path), &|name| (name == "S").then(|| "secret".to_owned())).expect("config");
    config.projects[0].clone()
}

fn push_fixture() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,300}".prop_map(serde_json::Value::from),
        "refs/(heads|tags|pull)/[ -~]{0,80}".prop_map(serde_json::Value::from),
        "[0-9a-f]{38,42}".prop_map(serde_json::Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_signature_headers_never_panic_and_never_verify(header in proptest::collection::vec(any::<u8>(), 0..100), body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let key = SignatureKey::new(b"secret");
        if let Ok(signature) = Signature::parse(Some(&header)) {
            // Only the one correct header verifies; a random one matching is 2^-256.
            prop_assert_eq!(key.verifies(&body, &signature), key.sign(&body).as_bytes() == header.as_slice());
        }
    }

    #[test]
    fn the_right_signature_verifies_and_any_flipped_bit_does_not(body in proptest::collection::vec(any::<u8>(), 0..500), bit in 0usize..256) {
        let key = SignatureKey::new(b"It's a Secret to Everybody");
        let header = key.sign(&body);
        let signature = Signature::parse(Some(header.as_bytes())).expect("own signature parses");
        prop_assert!(key.verifies(&body, &signature));
        let mut digest = hex::decode(&header[7..]).expect("hex");
        digest[bit / 8] ^= 1 << (bit % 8);
        let flipped = format!("sha256={}", hex::encode(digest));
        prop_assert!(!key.verifies(&body, &Signature::parse(Some(flipped.as_bytes())).expect("parses")));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_payload_parser(body in proptest::collection::vec(any::<u8>(), 0..2000), event_name in "[a-z_]{1,20}") {
        let project = project();
        if let Ok(parsed) = github::parse(&event_name, &body) {
            let _ = event::decide(&parsed, &project, "d", 0);
        }
    }

    #[test]
    fn mutated_push_payloads_never_panic_and_only_deploy_valid_refs(field in prop_oneof![Just("ref"), Just("after"), Just("deleted"), Just("head_commit"), Just("repository")], value in json_leaf()) {
        let project = project();
        let mut push = push_fixture();
        push[field] = value;
        let body = serde_json::to_vec(&push).expect("json");
        if let Ok(parsed) = github::parse("push", &body)
            && let Ok((runner::store::deliveries::Action::Queue(jobs), _)) = event::decide(&parsed, &project, "d", 0)
        {
            prop_assert_eq!(jobs.len(), 1, "one environment, one job");
            let job = &jobs[0];
            prop_assert!(GitRef::parse(job.git_ref.as_str()).is_ok());
            prop_assert_eq!(job.git_ref.as_str(), "refs/heads/master");
            prop_assert!(!job.sha.is_null());
        }
    }
}
