//! Builds as users write them, on the real engine: BuildKit Dockerfiles (multi-stage,
//! cache mounts, secret mounts, targets), a shared cache through the registry, an engine
//! reached over TCP, and builds that cannot succeed. Needs `WEBAPP_STATIC_BIN`,
//! `RUNNER_TEST_REGISTRY` and the base image `local/busybox:1` (scripts/services.sh
//! start makes it), and `socat` for the TCP engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::config::{self, Config};
use crate::common::*;
use serde_json::Value;

const BUILD_TOKEN: &str = "build-token-8c1f0e5d9a2b47e3";

/// Shaped like `webapp/Dockerfile`: a build stage on a base image with a shell, a cache
/// mount, a secret mount, then the binary alone in an empty image. `CACHE_ID` keeps this
/// test's cache mount apart from other tests on the same engine.
const WEBAPP_LIKE_DOCKERFILE: &str = r#"FROM local/busybox:1 AS builder
WORKDIR /src
COPY webapp /src/webapp
COPY CHANGES /src/CHANGES
COPY . /context
RUN test ! -e /context/notes.txt && test ! -e /context/docs/draft.md && test -e /context/docs/keep.md \
 && echo "the context follows .dockerignore"
RUN --mount=type=cache,id=CACHE_ID,target=/cache \
    if [ -f /cache/warm ]; then echo "cache mount: warm since $(cat /cache/warm)"; else echo "cache mount: cold"; fi \
 && date +%s > /cache/warm
RUN --mount=type=secret,id=DEPLOY_TOKEN,required=true \
    echo "the token is $(cat /run/secrets/DEPLOY_TOKEN)" \
 && test "$(cat /run/secrets/DEPLOY_TOKEN)" = "EXPECTED" \
 && mkdir -p /out && cp /src/webapp /out/webapp

FROM scratch AS app
ARG APP_COMMIT=unknown
COPY --from=builder /out/webapp /webapp
ENV PORT=5001 APP_COMMIT=${APP_COMMIT}
EXPOSE 5001
ENTRYPOINT ["/webapp"]

FROM local/busybox:1 AS never-built
RUN echo "a stage after the target must not run" && exit 7
"#;

struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Repo {
    fn new(dockerfile: &str) -> Self {
        let webapp_bin = PathBuf::from(required_env(
            "WEBAPP_STATIC_BIN",
            "build it with scripts/build-webapp-static",
        ));
        busybox_image();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        git(&path, &["init", "--quiet", "--initial-branch=master"]);
        std::fs::copy(&webapp_bin, path.join("webapp")).expect("copy the webapp binary");
        std::fs::write(path.join("Dockerfile"), dockerfile).expect("write");
        std::fs::write(path.join("CHANGES"), "first\n").expect("write");
        std::fs::create_dir(path.join("docs")).expect("mkdir");
        for file in ["notes.txt", "docs/draft.md", "docs/keep.md"] {
            std::fs::write(path.join(file), "text\n").expect("write");
        }
        std::fs::write(path.join(".dockerignore"), "notes.txt\ndocs/*\n!docs/keep.md\n").expect("write");
        Self { _dir: dir, path }
    }

    fn commit(&self, changes: &str) -> String {
        std::fs::write(self.path.join("CHANGES"), changes).expect("write");
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "--quiet", "--allow-empty", "-m", changes]);
        git(&self.path, &["rev-parse", "HEAD"])
    }
}

fn unique() -> String {
    format!("{}{}", std::process::id(), free_port())
}

fn env_with_token(name: &str) -> Option<String> {
    match name {
        "TEST_BUILD_TOKEN" => Some(BUILD_TOKEN.to_owned()),
        other => test_env(other),
    }
}

/// A runner building `repo` into `image` (pushed to the test registry) and deploying it
/// on `host_port`, with `edit` applied to the project's build settings.
async fn start_runner(
    repo: &Repo,
    project: &str,
    image: &str,
    host_port: u16,
    edit: impl FnOnce(&mut Config, &mut config::Build),
) -> TestRunner {
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let repo_path = repo.path.clone();
    let (project, image) = (project.to_owned(), image.to_owned());
    TestRunner::start_with_env(
        move |dir| {
            let mut config = config::pipeline_config(dir, &project, &repo_path, &image, &registry, host_port, 15);
            let mut build = config.projects[0].build.take().expect("a build");
            edit(&mut config, &mut build);
            config.projects[0].build = Some(build);
            config
        },
        env_with_token,
    )
    .await
}

async fn push_and_wait(runner: &TestRunner, sha: &str) -> (Value, String) {
    let response = runner.deliver("push", &push_body("refs/heads/master", sha)).await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("id");
    for _ in 0..1800 {
        let job = runner.get_json(&format!("/api/jobs/{job_id}")).await;
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            let log = runner.job_log(job_id).await;
            return (job, log);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} did not finish in 180 s");
}

async fn live_commit(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/version"))
        .await
        .expect("the environment's port answers")
        .json::<Value>()
        .await
        .expect("json")["commit"]
        .clone()
}

fn cleanup(project: &str, image: &str) -> EngineCleanup {
    let registry = std::env::var("RUNNER_TEST_REGISTRY").unwrap_or_default();
    EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![format!("{image}:*"), format!("{registry}/{image}:*")],
    }
}

fn webapp_like_dockerfile(cache_id: &str) -> String {
    WEBAPP_LIKE_DOCKERFILE
        .replace("CACHE_ID", cache_id)
        .replace("EXPECTED", BUILD_TOKEN)
}

fn token_secret(build: &mut config::Build) {
    build.secrets = BTreeMap::from([("DEPLOY_TOKEN".to_owned(), "TEST_BUILD_TOKEN".to_owned())]);
}

/// Every byte of the image as the engine exports it (layers, config, history).
fn saved_image(reference: &str) -> Vec<u8> {
    let saved = Command::new("docker")
        .args(["save", reference])
        .output()
        .expect("docker save");
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    saved.stdout
}

/// Whether a build step printed a line starting with `text` (not merely a step whose
/// command holds it): BuildKit's lines read `#N <output>`.
fn printed(log: &str, text: &str) -> bool {
    log.lines().any(|line| {
        line.split_once(" #")
            .and_then(|(_, rest)| rest.split_once(' '))
            .is_some_and(|(number, output)| number.bytes().all(|b| b.is_ascii_digit()) && output.starts_with(text))
    })
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_dockerfile_shaped_like_the_webapps_builds_with_buildkit_smokes_and_goes_live() {
    let id = unique();
    let (project, image, host_port) = (format!("bk{id}"), format!("runner-bk-{id}"), free_port());
    let _cleanup = cleanup(&project, &image);
    let repo = Repo::new(&webapp_like_dockerfile(&format!("runner-test-{id}")));
    let runner = start_runner(&repo, &project, &image, host_port, |_, build| {
        token_secret(build);
        build.target = Some("app".to_owned());
        build.platform = Some("linux/amd64".to_owned());
    })
    .await;

    let first = repo.commit("first\n");
    let (job, log) = push_and_wait(&runner, &first).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(log.contains("builder: BuildKit"), "the builder is named:\n{log}");
    assert!(
        printed(&log, "cache mount: cold"),
        "the first build fills the cache mount:\n{log}"
    );
    // BuildKit's progress as readable lines: numbered steps, their output, their times.
    assert!(log.contains("[builder 8/8] RUN --mount=type=secret"), "{log}");
    assert!(printed(&log, "the context follows .dockerignore"), "{log}");
    assert!(log.lines().any(|l| l.contains("DONE ") && l.ends_with('s')), "{log}");
    assert!(!log.contains("moby.buildkit.trace"), "no raw engine messages:\n{log}");
    // The secret reached the build (the step checks its value), and is masked in the log.
    assert!(printed(&log, "the token is ***"), "{log}");
    assert!(!log.contains(BUILD_TOKEN), "the secret is in the log:\n{log}");
    // The target stage is what was built: the later stage would have failed the build.
    assert!(!log.contains("must not run"), "{log}");
    assert_eq!(live_commit(host_port).await, first.as_str());

    // The secret is in no layer, no history entry and no config of the image.
    let saved = saved_image(&format!("{image}:{first}"));
    assert!(!contains(&saved, BUILD_TOKEN), "the image holds the build secret");
    let stored = runner.get_text(&format!("/api/jobs/{}/logs", job["id"])).await;
    assert!(!stored.contains(BUILD_TOKEN));

    // A second commit reruns the cached step, which finds the cache mount as the first
    // job left it.
    let second = repo.commit("second\n");
    let (job, log) = push_and_wait(&runner, &second).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(
        printed(&log, "cache mount: warm since"),
        "the cache mount persisted across jobs:\n{log}"
    );
    assert!(
        log.contains("CACHED"),
        "unchanged steps come from the layer cache:\n{log}"
    );
    assert_eq!(live_commit(host_port).await, second.as_str());
    runner.stop().await;
}

/// A pull request's Dockerfile is a stranger's code: its build is offered no secret, and
/// it neither sees nor fills the cache mounts that deploy builds use.
#[tokio::test]
async fn a_pull_requests_build_gets_no_build_secret_and_no_deploy_cache_mount() {
    let id = unique();
    let (project, image) = (format!("bkpr{id}"), format!("runner-bkpr-{id}"));
    let _cleanup = cleanup(&project, &image);
    let repo = Repo::new(&webapp_like_dockerfile(&format!("runner-test-{id}")));
    // A pull request from the repository itself is verified (built and smoke-tested).
    let runner = start_runner(&repo, &project, &image, free_port(), |_, build| {
        token_secret(build);
        build.target = Some("app".to_owned());
    })
    .await;
    let deployed = repo.commit("deployed\n");
    let (job, log) = push_and_wait(&runner, &deployed).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");

    // The pull request also tries to leave something in the cache mount for deploys.
    let dockerfile = webapp_like_dockerfile(&format!("runner-test-{id}"));
    std::fs::write(
        repo.path.join("Dockerfile"),
        dockerfile.replace("date +%s > /cache/warm", "echo poisoned > /cache/warm"),
    )
    .expect("write");
    let proposed = repo.commit("proposed\n");
    let mut body = fixture_json("pull_request.opened.payload.json");
    body["pull_request"]["head"]["sha"] = proposed.as_str().into();
    let response = runner
        .deliver("pull_request", &serde_json::to_vec(&body).expect("json"))
        .await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
    let job_id = response.json::<Value>().await.expect("json")["job_id"]
        .as_i64()
        .expect("a job");
    let job = runner.wait_for_job_end(job_id).await;
    let log = runner.job_log(job_id).await;
    assert_eq!(job["kind"], "verify", "{job}");
    assert!(
        printed(&log, "cache mount: cold") && !printed(&log, "cache mount: warm"),
        "the deploy build's cache mount is not the pull request's:\n{log}"
    );
    // The Dockerfile demands the secret; without it the build fails at that step.
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    assert!(
        log.contains("build secrets withheld from this pull request's build: DEPLOY_TOKEN"),
        "{log}"
    );
    let error = job["error"].as_str().expect("error");
    assert!(error.contains("DEPLOY_TOKEN"), "the failure names the secret: {error}");

    // And what the pull request's build put in its cache mount is not seen by the next
    // deploy build.
    std::fs::write(repo.path.join("Dockerfile"), &dockerfile).expect("write");
    let next = repo.commit("next deploy\n");
    let (job, log) = push_and_wait(&runner, &next).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(
        printed(&log, "cache mount: warm since") && !printed(&log, "cache mount: warm since poisoned"),
        "the deploy build found its own cache mount, untouched:\n{log}"
    );
    runner.stop().await;
}

/// A case name, its Dockerfile, its build settings, and words its error must say.
type BadBuild = (
    &'static str,
    &'static str,
    fn(&mut config::Build),
    &'static [&'static str],
);

/// Each build below cannot succeed: the job fails at the build step with one sentence
/// saying why, and leaves no container behind.
#[tokio::test]
async fn builds_that_cannot_succeed_fail_the_build_step_with_the_reason() {
    let id = unique();
    let cases: [BadBuild; 3] = [
        (
            "parse",
            "FROM local/busybox:1\nFORM scratch\n",
            |_| {},
            &["unknown instruction", "FORM"],
        ),
        (
            "target",
            "FROM local/busybox:1 AS app\nRUN true\n",
            |build| build.target = Some("release".to_owned()),
            &["release"],
        ),
        (
            "secret",
            "FROM local/busybox:1\nRUN --mount=type=secret,id=NOT_CONFIGURED,required=true cat /run/secrets/NOT_CONFIGURED\n",
            |_| {},
            &["NOT_CONFIGURED", "[projects.build] secrets"],
        ),
    ];
    for (name, dockerfile, edit, expected) in cases {
        let (project, image) = (format!("bkbad{name}{id}"), format!("runner-bkbad-{name}-{id}"));
        let _cleanup = cleanup(&project, &image);
        let repo = Repo::new(dockerfile);
        let sha = repo.commit("only\n");
        let runner = start_runner(&repo, &project, &image, free_port(), |_, build| edit(build)).await;
        let (job, log) = push_and_wait(&runner, &sha).await;
        assert_eq!(job["state"], "failed", "{name}: {job}\n{log}");
        let build_step = job["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["name"] == "build")
            .expect("a build step")
            .clone();
        assert_eq!(build_step["state"], "failed", "{name}: {job}");
        let error = job["error"].as_str().expect("error");
        assert!(!error.contains('\n'), "{name}: one sentence: {error:?}");
        for word in expected {
            assert!(error.contains(word), "{name}: {error:?} does not say {word:?}\n{log}");
        }
        let left = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=runner-{project}-")])
            .output()
            .expect("docker");
        runner.stop().await;
        assert!(
            String::from_utf8_lossy(&left.stdout).trim().is_empty(),
            "{name}: a container was left"
        );
    }
}

#[tokio::test]
async fn a_build_reuses_the_cache_another_runner_pushed_to_the_registry() {
    let id = unique();
    let registry = required_env(
        "RUNNER_TEST_REGISTRY",
        "start a registry with scripts/services.sh start",
    );
    let (project, image) = (format!("bkcache{id}"), format!("runner-bkcache-{id}"));
    let _cleanup = cleanup(&project, &image);
    let repo = Repo::new(&webapp_like_dockerfile(&format!("runner-test-{id}")));
    let sha = repo.commit("cached\n");

    // The first runner pushes its image with the build cache inline.
    let first = start_runner(&repo, &project, &image, free_port(), |_, build| {
        token_secret(build);
        build.target = Some("app".to_owned());
        build.cache_to = Some("inline".to_owned());
    })
    .await;
    let (job, log) = push_and_wait(&first, &sha).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    first.stop().await;
    let pushed = format!("{registry}/{image}:{sha}");
    let config_blob = image_config_in_registry(&registry, &image, &sha).await;
    assert!(
        config_blob.contains("moby.buildkit.cache.v0"),
        "the pushed image carries its build cache: {config_blob}"
    );

    // Another runner names that image as its cache source: BuildKit reads the cache from
    // the registry.
    let other_project = format!("{project}b");
    let _other_cleanup = cleanup(&other_project, &image);
    let second = start_runner(&repo, &other_project, &image, free_port(), |_, build| {
        token_secret(build);
        build.target = Some("app".to_owned());
        build.cache_from = vec![pushed.clone()];
    })
    .await;
    let (job, log) = push_and_wait(&second, &sha).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(
        log.contains(&format!("importing cache manifest from {pushed}")),
        "the build read the registry's cache:\n{log}"
    );
    second.stop().await;
}

/// The image config the registry holds for `image:tag`.
async fn image_config_in_registry(registry: &str, image: &str, tag: &str) -> String {
    let client = reqwest::Client::new();
    let manifest: Value = client
        .get(format!("http://{registry}/v2/{image}/manifests/{tag}"))
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .expect("registry answers")
        .json()
        .await
        .expect("a manifest");
    let digest = manifest["config"]["digest"].as_str().expect("a config digest");
    client
        .get(format!("http://{registry}/v2/{image}/blobs/{digest}"))
        .send()
        .await
        .expect("registry answers")
        .text()
        .await
        .expect("text")
}

/// One deploy of the webapp-like Dockerfile (with its secret) through the engine that
/// `engine` names; the job must succeed, its secret step must have read the secret, and
/// the new version must be live. The runner stays up for more deploys.
struct EngineDeploy {
    runner: TestRunner,
    repo: Repo,
    host_port: u16,
    log: String,
    _cleanup: EngineCleanup,
}

async fn deploy_through(kind: &str, engine: config::Engine) -> EngineDeploy {
    let id = unique();
    let (project, image, host_port) = (format!("bk{kind}{id}"), format!("runner-bk{kind}-{id}"), free_port());
    let cleanup = cleanup(&project, &image);
    let repo = Repo::new(&webapp_like_dockerfile(&format!("runner-test-{id}")));
    let sha = repo.commit(&format!("over {kind}\n"));
    let runner = start_runner(&repo, &project, &image, host_port, |config, build| {
        token_secret(build);
        build.target = Some("app".to_owned());
        config.engine = engine;
    })
    .await;
    let (job, log) = push_and_wait(&runner, &sha).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(log.contains("builder: BuildKit"), "{log}");
    assert!(
        printed(&log, "the token is ***"),
        "the secret session works over {kind}:\n{log}"
    );
    assert_eq!(live_commit(host_port).await, sha.as_str());
    EngineDeploy {
        runner,
        repo,
        host_port,
        log,
        _cleanup: cleanup,
    }
}

/// The engine on another address (127.0.0.2, a TCP port, as a remote engine would be):
/// the whole pipeline runs through it, and the smoke test reaches the container there.
#[tokio::test]
async fn the_pipeline_runs_on_an_engine_reached_over_tcp() {
    let socat = which("socat").unwrap_or_else(|| panic!("socat is missing: install it (scripts/services.sh install)"));
    let engine_port = free_port();
    let mut forward = Command::new(socat)
        .args([
            &format!("TCP-LISTEN:{engine_port},bind=127.0.0.2,reuseaddr,fork"),
            "UNIX-CONNECT:/var/run/docker.sock",
        ])
        .spawn()
        .expect("socat starts");
    let _stop_forward = KillOnDrop(&mut forward);
    wait_for_port("127.0.0.2", engine_port).await;

    let deploy = deploy_through(
        "tcp",
        config::Engine {
            host: Some(format!("tcp://127.0.0.2:{engine_port}")),
            ..config::Engine::default()
        },
    )
    .await;
    assert!(
        deploy.log.contains("waiting for http://127.0.0.2:"),
        "the smoke test goes to the engine's address:\n{}",
        deploy.log
    );
    deploy.runner.stop().await;
}

/// The engine behind TLS with client certificates, as `dockerd --tlsverify` serves it:
/// the runner proves itself with `cert.pem` and checks the engine against `ca.pem`.
#[tokio::test]
async fn the_pipeline_runs_on_an_engine_reached_over_tls() {
    let stunnel =
        which("stunnel4").unwrap_or_else(|| panic!("stunnel4 is missing: install it (scripts/services.sh install)"));
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path(), "127.0.0.2");
    let engine_port = free_port();
    let pem = |name: &str| certs.path().join(name).display().to_string();
    let stunnel_config = certs.path().join("stunnel.conf");
    std::fs::write(
        &stunnel_config,
        format!(
            "foreground = yes\npid =\n[engine]\naccept = 127.0.0.2:{engine_port}\nconnect = /var/run/docker.sock\n\
             cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\n",
            pem("server-cert.pem"),
            pem("server-key.pem"),
            pem("ca.pem")
        ),
    )
    .expect("write");
    let mut forward = Command::new(stunnel)
        .arg(&stunnel_config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stunnel starts");
    let _stop_forward = KillOnDrop(&mut forward);
    wait_for_port("127.0.0.2", engine_port).await;

    let deploy = deploy_through(
        "tls",
        config::Engine {
            host: Some(format!("tcp://127.0.0.2:{engine_port}")),
            tls_cert_dir: Some(certs.path().to_owned()),
            ..config::Engine::default()
        },
    )
    .await;
    deploy.runner.stop().await;
}

/// A CA, a server certificate for `ip` and a client certificate, laid out as Docker
/// expects (`ca.pem`, `cert.pem`, `key.pem`), plus the server's pair.
fn make_certificates(dir: &Path, ip: &str) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl is missing ({e}): install it (scripts/services.sh install)"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=test CA",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
            ][..],
            &key[..],
        ]
        .concat(),
    );
    for (name, subject, extension) in [
        ("server", "/CN=engine", format!("subjectAltName=IP:{ip}")),
        ("client", "/CN=runner", "extendedKeyUsage=clientAuth".to_owned()),
    ] {
        let [key_file, request, cert_file, extensions] =
            ["-key.pem", ".csr", "-cert.pem", ".ext"].map(|suffix| format!("{name}{suffix}"));
        std::fs::write(dir.join(&extensions), format!("{extension}\n")).expect("write");
        openssl(
            &[
                &["req", "-new", "-subj", subject, "-keyout", &key_file, "-out", &request][..],
                &key[..],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &request,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-extfile",
            &extensions,
            "-out",
            &cert_file,
        ]);
    }
    std::fs::copy(dir.join("client-cert.pem"), dir.join("cert.pem")).expect("copy");
    std::fs::copy(dir.join("client-key.pem"), dir.join("key.pem")).expect("copy");
}

/// The engine on a host reached over SSH (OpenSSH's sshd on 127.0.0.2, a key pair and a
/// known host key made for the test): the runner forwards the engine's socket with `ssh`
/// and runs the whole pipeline through it.
#[tokio::test]
async fn the_pipeline_runs_on_an_engine_reached_over_ssh() {
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "sshd is missing: install openssh-server (scripts/services.sh install)"
    );
    let keys = tempfile::tempdir().expect("tempdir");
    let key = |name: &str| keys.path().join(name);
    for name in ["host_key", "client_key"] {
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(key(name))
            .output()
            .expect("ssh-keygen runs (install openssh-client)");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
    let ssh_port = free_port();
    std::fs::copy(key("client_key.pub"), key("authorized_keys")).expect("copy");
    let host_key = std::fs::read_to_string(key("host_key.pub")).expect("read");
    std::fs::write(key("known_hosts"), format!("[127.0.0.2]:{ssh_port} {host_key}")).expect("write");
    std::fs::write(
        key("sshd_config"),
        format!(
            "Port {ssh_port}\nListenAddress 127.0.0.2\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             StrictModes no\nUsePAM no\nAllowStreamLocalForwarding yes\n",
            key("host_key").display(),
            key("authorized_keys").display()
        ),
    )
    .expect("write");
    std::fs::create_dir_all("/run/sshd").expect("sshd's privilege separation directory");
    let mut server = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(key("sshd_config"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sshd starts");
    let _stop_server = KillOnDrop(&mut server);
    wait_for_port("127.0.0.2", ssh_port).await;

    let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
    let deploy = deploy_through(
        "ssh",
        config::Engine {
            host: Some(format!("ssh://{user}@127.0.0.2:{ssh_port}")),
            ssh_identity_file: Some(key("client_key")),
            ssh_known_hosts_file: Some(key("known_hosts")),
            ..config::Engine::default()
        },
    )
    .await;
    assert!(
        deploy.log.contains("waiting for http://127.0.0.2:"),
        "the smoke test goes to the engine's host:\n{}",
        deploy.log
    );

    // The SSH connection drops: the runner opens the forward again, and the next deploy
    // goes through it.
    let forward_pattern = format!("ssh -nNT .*-p {ssh_port} ");
    let first_forward = pids_matching(&forward_pattern);
    assert_eq!(first_forward.len(), 1, "one ssh forward: {first_forward:?}");
    let killed = Command::new("kill").arg(&first_forward[0]).status().expect("kill");
    assert!(killed.success());
    eventually("the forward opened again", || {
        let now = pids_matching(&forward_pattern);
        (now.len() == 1 && now != first_forward).then_some(())
    })
    .await;
    let sha = deploy.repo.commit("after the connection dropped\n");
    let (job, log) = push_and_wait(&deploy.runner, &sha).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert_eq!(live_commit(deploy.host_port).await, sha.as_str());
    deploy.runner.stop().await;
}

fn pids_matching(pattern: &str) -> Vec<String> {
    let found = Command::new("pgrep").args(["-f", pattern]).output().expect("pgrep");
    String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_unreachable_engine_fails_the_build_with_what_to_do() {
    let id = unique();
    let (project, image) = (format!("bknone{id}"), format!("runner-bknone-{id}"));
    let repo = Repo::new("FROM local/busybox:1\n");
    let sha = repo.commit("nowhere\n");
    let closed = free_port();
    let runner = start_runner(&repo, &project, &image, free_port(), |config, _| {
        config.engine.host = Some(format!("tcp://127.0.0.1:{closed}"));
    })
    .await;
    let (job, log) = push_and_wait(&runner, &sha).await;
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    let error = job["error"].as_str().expect("error");
    assert!(error.contains("Docker engine"), "{error}");
    runner.stop().await;
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_port(host: &str, port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {host}:{port}");
}
