//! Test configs, built in code with the config file's own types (`runner::config::raw`)
//! and written as the TOML the runner reads: a test states what differs from a base
//! config by setting fields, not by editing text.

use std::collections::BTreeMap;
use std::path::Path;

pub use runner::config::raw::{
    RawBuild as Build, RawConfig as Config, RawEngine as Engine, RawEnvironment as Environment, RawForge as Forge,
    RawGitHub as GitHub, RawProject as Project, RawProjectGitHub as ProjectGitHub, RawProxy as Proxy,
    RawQueue as Queue, RawRegistry as Registry, RawRetention as Retention, RawRollout as Rollout, RawServer as Server,
    RawSmoke as Smoke, RawTerraform as Terraform,
};

use super::{REPOSITORY, free_port};

/// The config as a file's text.
pub fn to_toml(config: &Config) -> String {
    toml::to_string(config).expect("a test config serialises as TOML")
}

/// A runner on port 0 with its database in `dir`, and no project yet.
pub fn runner(dir: &Path) -> Config {
    Config {
        server: Server {
            listen: Some("127.0.0.1:0".to_owned()),
            database_url: Some(super::database::url_for(dir)),
            work_dir: Some(dir.join("work")),
            ..Server::default()
        },
        ..Config::default()
    }
}

/// A project deploying `branches` of `repository`, signed with the secret in `secret_env`.
pub fn project(name: &str, repository: &str, branches: &[&str], secret_env: &str) -> Project {
    Project {
        name: name.to_owned(),
        repository: repository.to_owned(),
        deploy_branches: branches.iter().map(|b| (*b).to_owned()).collect(),
        webhook_secret_env: Some(secret_env.to_owned()),
        ..Project::default()
    }
}

/// The test webapp's smoke test: `/health` on 5001 answers "healthy".
pub fn webapp_smoke(timeout_secs: u64) -> Smoke {
    Smoke {
        container_port: 5001,
        path: Some("/health".to_owned()),
        expect_body: Some("healthy".to_owned()),
        timeout_secs: Some(timeout_secs),
        ..Smoke::default()
    }
}

/// A build of `image` that passes the commit as `APP_COMMIT`.
pub fn build(image: &str) -> Build {
    Build {
        image: image.to_owned(),
        build_args: BTreeMap::from([("APP_COMMIT".to_owned(), "{{sha}}".to_owned())]),
        ..Build::default()
    }
}

pub fn v2_registry(url: &str) -> Registry {
    Registry {
        url: Some(url.to_owned()),
        ..Registry::default()
    }
}

/// The local target on `host_port` (the proxy's), with two free slot ports.
pub fn local_rollout(host_port: u16, timeout_secs: Option<u64>) -> Rollout {
    Rollout {
        target: "local".to_owned(),
        host_port: Some(host_port),
        slot_ports: Some(vec![free_port(), free_port()]),
        drain_secs: Some(1),
        timeout_secs,
        ..Rollout::default()
    }
}

/// Points `config` at a Caddy of this test's own, started now.
pub fn with_proxy(mut config: Config) -> Config {
    config.proxy = Proxy {
        admin_url: Some(super::caddy::for_this_test()),
        health_interval_ms: Some(100),
        check_interval_secs: Some(1),
        ..Proxy::default()
    };
    config
}

/// An ECS service as the target.
pub fn ecs_rollout(cluster: &str, service: &str, endpoint_url: &str, timeout_secs: u64) -> Rollout {
    Rollout {
        target: "ecs".to_owned(),
        cluster: Some(cluster.to_owned()),
        service: Some(service.to_owned()),
        container: Some("app".to_owned()),
        region: Some("us-east-1".to_owned()),
        endpoint_url: Some(endpoint_url.to_owned()),
        timeout_secs: Some(timeout_secs),
        ..Rollout::default()
    }
}

/// The default test runner: Codertocat/Hello-World deploying master and release/v1 from
/// a clone URL that does not exist (jobs fail fast at checkout, which these tests do not
/// need), and a second project, Octocoders/Hello-World.
pub fn default_config(dir: &Path) -> Config {
    let missing = dir.join("no-such-repo").display().to_string();
    let mut config = runner(dir);
    config.server.max_body_bytes = Some(65536);
    config.queue = Queue {
        workers: Some(2),
        lease_secs: Some(5),
        ..Queue::default()
    };
    config.projects = vec![
        Project {
            clone_url: Some(missing.clone()),
            build: Some(Build {
                image: "runner-test-hello".to_owned(),
                ..Build::default()
            }),
            smoke: Some(Smoke {
                container_port: 5001,
                expect_body: Some("healthy".to_owned()),
                timeout_secs: Some(20),
                ..Smoke::default()
            }),
            registry: Some(v2_registry("127.0.0.1:1")),
            rollout: Some(local_rollout(free_port(), None)),
            ..project("hello", REPOSITORY, &["master", "release/v1"], "HELLO_SECRET")
        },
        Project {
            clone_url: Some(missing),
            ..project("other", "Octocoders/Hello-World", &["main"], "OTHER_SECRET")
        },
    ];
    config
}

/// A project with every pipeline step configured, deploying master of `repo` (a git
/// repository on disk) to the local target on `host_port`.
pub fn pipeline_config(
    dir: &Path,
    name: &str,
    repo: &Path,
    image: &str,
    registry: &str,
    host_port: u16,
    smoke_secs: u64,
) -> Config {
    let mut config = with_local_probe(runner(dir));
    config.queue = Queue {
        workers: Some(2),
        lease_secs: Some(3),
        max_attempts: Some(2),
        ..Queue::default()
    };
    config.projects = vec![Project {
        clone_url: Some(repo.display().to_string()),
        build: Some(build(image)),
        smoke: Some(webapp_smoke(smoke_secs)),
        registry: Some(v2_registry(registry)),
        rollout: Some(local_rollout(host_port, Some(30))),
        ..project(name, REPOSITORY, &["master"], "HELLO_SECRET")
    }];
    with_proxy(config)
}

/// The probe image of a pull request's smoke test (and of the start-up metadata check):
/// the local base image, as nothing can be pulled here.
pub fn with_local_probe(mut config: Config) -> Config {
    config.engine.probe_image = Some("local/busybox:1".to_owned());
    config
}

/// Tests read pages and the API without logging in, unless the config they are given
/// says otherwise (the runner's own default is `read_access = "login"`).
pub fn publicly_readable(mut config: Config) -> Config {
    config.dashboard.read_access.get_or_insert_with(|| "public".to_owned());
    config
}

/// Writes `config` (publicly readable unless it says otherwise) where a runner process
/// will read it.
pub fn write(path: &Path, config: Config) {
    std::fs::write(path, to_toml(&publicly_readable(config))).expect("write the config file");
}

/// The test module in `dir` of the repository, with its state in the local file `state`.
pub fn terraform(dir: &str, state: &Path) -> Terraform {
    Terraform {
        dir: dir.to_owned(),
        backend_config: BTreeMap::from([("path".to_owned(), state.display().to_string())]),
        ..Terraform::default()
    }
}
