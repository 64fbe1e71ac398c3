//! A pull request's build and containers in a trust domain of their own, on the real
//! engine: no layer crosses between deploy and pull request builds, a pull request's
//! `# syntax=` frontend is not used, and neither its build steps nor its smoke container
//! reach the host, the default bridge or other networks, while a deploy's smoke passes.
//! Needs `WEBAPP_STATIC_BIN`, `RUNNER_TEST_REGISTRY` and the base image
//! `local/busybox:1` (scripts/services.sh start makes it); iptables for the closed
//! network's rule (the tests run as root, as the engine's host does).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use crate::common::config;
use crate::common::*;
use serde_json::Value;

const DEPLOY_TOKEN: &str = "deploy-token-5b0e7c21d9";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A runner of `project` building `repo`, with the build secret `DEPLOY_TOKEN`.
async fn start(
    dir_edit: impl FnOnce(&mut config::Config) + Send + 'static,
    project: &str,
    repo: &Path,
    image: &str,
) -> TestRunner {
    start_with_deploy_token(DEPLOY_TOKEN, project, repo, image, dir_edit).await
}

fn commit(repo: &Path, dockerfile: &str, message: &str) -> String {
    std::fs::write(repo.join("Dockerfile"), dockerfile).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "--allow-empty", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

async fn deploy(runner: &TestRunner, sha: &str) -> (Value, String) {
    runner.job_when_ended(runner.push_queued(sha).await).await
}

/// A pull request from the repository itself (verified without approval).
async fn verify(runner: &TestRunner, sha: &str) -> (Value, String) {
    let (job, log) = runner.job_when_ended(runner.pull_request_queued(sha).await).await;
    assert_eq!(job["kind"], "verify");
    (job, log)
}

/// What a step printed after `marker` (BuildKit's lines read `#N <output>`).
fn printed_after<'a>(log: &'a str, marker: &str) -> Vec<&'a str> {
    log.lines()
        .filter_map(|line| line.split_once(marker).map(|(_, rest)| rest.trim()))
        .filter(|rest| !rest.is_empty() && !rest.contains('$'))
        .collect()
}

const APP_TAIL: &str = "COPY webapp /webapp\nENV PORT=5001\nEXPOSE 5001\nENTRYPOINT [\"/webapp\"]\n";

#[tokio::test]
async fn no_layer_crosses_between_deploy_and_pull_request_builds_and_a_pull_requests_frontend_is_not_used() {
    busybox_image();
    let id = format!("{}{}", std::process::id(), free_port());
    let (project, image) = (format!("trustcache{id}"), format!("runner-trustcache-{id}"));
    let registry = std::env::var("RUNNER_TEST_REGISTRY").unwrap_or_default();
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![format!("{image}:*"), format!("{registry}/{image}:*")],
    };
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path();
    // A test-unique first step keeps other tests' cache out of this one.
    let base = format!("FROM local/busybox:1\nRUN echo {id} > /test-id\n");
    let secret_step = "RUN --mount=type=secret,id=DEPLOY_TOKEN,required=true cp /run/secrets/DEPLOY_TOKEN /private\n";
    webapp_repo(repo, &format!("{base}{secret_step}{APP_TAIL}"));
    // With the engine's default network for its steps, as deploy builds have: the
    // network mode alone (part of a step's key too) does not tell the builds apart.
    let runner = start(
        |config| {
            let build = config.projects[0].build.as_mut().expect("a build");
            build.pull_request_build_network = Some("default".to_owned());
        },
        &project,
        repo,
        &image,
    )
    .await;

    // A deploy build writes its secret into a layer (what the secret mount is not for,
    // and what a Dockerfile can do).
    let deployed = commit(repo, &format!("{base}{secret_step}{APP_TAIL}"), "deploy");
    let (job, log) = deploy(&runner, &deployed).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");

    // A pull request with the very same step, and a step that prints the file.
    let spaced: String = DEPLOY_TOKEN.chars().flat_map(|c| [c, ' ']).collect();
    let leak = "RUN echo \"leaked: $(sed 's/./& /g' /private)\"\n";
    let proposed = commit(repo, &format!("{base}{secret_step}{leak}{APP_TAIL}"), "leak");
    let (job, log) = verify(&runner, &proposed).await;
    assert!(
        !log.contains(spaced.trim_end()),
        "the deploy's secret reached the pull request:\n{log}"
    );
    assert!(!log.contains(DEPLOY_TOKEN) && !log.contains("leaked: "), "{log}");
    // Its step ran again, without the secret, which it cannot have.
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    let error = job["error"].as_str().expect("error");
    assert!(error.contains("DEPLOY_TOKEN"), "{error}");
    let verify_image = format!("{image}:verify-{}-1", job["id"]);
    assert!(
        !Command::new("docker")
            .args(["image", "inspect", &verify_image])
            .output()
            .expect("docker")
            .status
            .success(),
        "no image of the pull request is left"
    );

    // A pull request whose steps a later deploy repeats, with a frontend of its choosing
    // (an image that does not exist: the build would fail on it).
    let stamp = "RUN echo \"stamp $(cat /proc/sys/kernel/random/uuid)\" | tee /stamp\n";
    let later = format!("{base}{stamp}{APP_TAIL}");
    let proposed = commit(repo, &format!("# syntax=local/no-such-frontend:1\n{later}"), "stamp");
    let (job, log) = verify(&runner, &proposed).await;
    assert_eq!(
        job["state"], "succeeded",
        "the built-in frontend built it: {job}\n{log}"
    );
    assert!(
        log.contains("chooses its frontend (line 1: # syntax=local/no-such-frontend:1)"),
        "{log}"
    );
    let verify_stamps = printed_after(&log, "stamp ");
    assert_eq!(
        verify_stamps.len(),
        1,
        "the pull request's step ran once: {verify_stamps:?}\n{log}"
    );
    let verify_image = format!("{image}:verify-{}-1", job["id"]);
    assert!(
        !Command::new("docker")
            .args(["image", "inspect", &verify_image])
            .output()
            .expect("docker")
            .status
            .success(),
        "the pull request's image went with its job"
    );

    let merged = commit(repo, &later, "merge");
    let (job, log) = deploy(&runner, &merged).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    let deploy_stamps = printed_after(&log, "stamp ");
    assert_eq!(
        deploy_stamps.len(),
        1,
        "the deploy ran the step itself rather than take the pull request's layer:\n{log}"
    );
    assert_ne!(deploy_stamps, verify_stamps);
    let in_image = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &format!("{image}:{merged}"),
        "/stamp",
    ]);
    assert_eq!(format!("stamp {}", in_image.trim_start_matches("stamp ")), in_image);
    assert!(
        !verify_stamps.iter().any(|s| in_image.contains(s)),
        "{in_image} came from the pull request"
    );
    runner.stop().await;
}

/// A container answering `text` on port 8080 (`docker run` arguments before the image).
fn listener_container(name: &str, network: &str, text: &str) -> IpAddr {
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "local/busybox:1",
        "sh",
        "-c",
        &format!("while true; do echo {text} | nc -l -p 8080; done"),
    ]);
    docker(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        name,
    ])
    .parse()
    .expect("an address")
}

struct Removal(Vec<String>, Vec<String>);

impl Drop for Removal {
    fn drop(&mut self) {
        for container in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", container]).output();
        }
        for network in &self.1 {
            let _ = Command::new("docker").args(["network", "rm", network]).output();
        }
    }
}

#[tokio::test]
async fn a_pull_requests_build_steps_and_smoke_container_reach_neither_the_host_nor_other_containers() {
    busybox_image();
    let id = format!("{}{}", std::process::id(), free_port());
    let (project, image) = (format!("trustnet{id}"), format!("runner-trustnet-{id}"));
    let registry = std::env::var("RUNNER_TEST_REGISTRY").unwrap_or_default();
    let _cleanup = EngineCleanup {
        container: format!("runner-{project}-production"),
        references: vec![format!("{image}:*"), format!("{registry}/{image}:*")],
    };
    // The neighbours: a container on the default bridge publishing nothing, a listener on
    // the host's own address, and a stand-in for the metadata address on a network of its own.
    let (bridged, metadata, other_network) = (
        format!("trustnet-bridged-{id}"),
        format!("trustnet-meta-{id}"),
        format!("trustnet-other-{id}"),
    );
    let _removal = Removal(vec![bridged.clone(), metadata.clone()], vec![other_network.clone()]);
    let bridged_ip = listener_container(&bridged, "bridge", "bridged-neighbour");
    docker(&["network", "create", &other_network]);
    let metadata_ip = listener_container(&metadata, &other_network, "instance-credentials");
    let host_ip = host_address();
    let host_listener = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .expect("bind");
    let host_port = host_listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = host_listener.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"host-listener\n").await;
        }
    });

    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path();
    webapp_repo(repo, "FROM scratch\n");
    // The runner's API on all addresses, as `listen = "0.0.0.0:..."` serves it.
    let runner = start(
        |config| config.server.listen = Some("0.0.0.0:0".to_owned()),
        &project,
        repo,
        &image,
    )
    .await;
    let api_port: u16 = runner
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the runner's port");
    let targets = [
        ("runner-api", format!("{host_ip} {api_port}")),
        ("bridged-container", format!("{bridged_ip} 8080")),
        ("host-listener", format!("{host_ip} {host_port}")),
        ("metadata-stand-in", format!("{metadata_ip} 8080")),
    ];
    let probe: String = targets
        .iter()
        .map(|(name, address)| {
            format!("if nc -w 2 {address} </dev/null >/dev/null 2>&1; then echo \"$1 reached {name}\"; else echo \"$1 blocked {name}\"; fi\n")
        })
        .collect();
    std::fs::write(repo.join("probe.sh"), probe).expect("write");
    let dockerfile = format!(
        "FROM local/busybox:1\nCOPY probe.sh /probe.sh\nRUN sh /probe.sh build-{id}\nCOPY webapp /webapp\nENV PORT=5001\nEXPOSE 5001\n\
         ENTRYPOINT [\"sh\", \"-c\", \"sh /probe.sh smoke; exec /webapp\"]\n"
    );
    let sha = commit(repo, &dockerfile, "probe the neighbours");

    let (job, log) = verify(&runner, &sha).await;
    assert_eq!(
        job["state"], "succeeded",
        "the runner reached the closed smoke container: {job}\n{log}"
    );
    for (name, _) in &targets {
        assert!(
            log.contains(&format!("build-{id} blocked {name}")),
            "the build step: {name}\n{log}"
        );
        assert!(
            log.contains(&format!("smoke blocked {name}")),
            "the smoke container: {name}\n{log}"
        );
    }
    assert!(!log.contains(" reached "), "{log}");

    // A deploy of the same commit: its smoke test passes, and its containers do reach
    // the neighbours (which therefore answer: the checks above can fail).
    let (job, log) = deploy(&runner, &sha).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(log.contains(&format!("build-{id} reached host-listener")), "{log}");
    assert!(log.contains("smoke reached bridged-container"), "{log}");
    runner.stop().await;
}

/// Starts the runner binary with containers' metadata address at `address`, and returns
/// its log once the start-up check has said what it found.
async fn metadata_check_log(address: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config::runner(dir.path());
    config.engine.probe_image = Some("local/busybox:1".to_owned());
    config.engine.metadata_address = Some(address.to_owned());
    let path = dir.path().join("runner.toml");
    config::write(&path, config);
    let mut runner = crate::common::process::Runner::start_with_env(&path, &[("RUST_LOG", "info,runner=debug")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let log = loop {
        let log = runner.log_text();
        if log.contains("metadata address") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the start-up metadata check never said: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    runner.terminate();
    log
}

#[tokio::test]
async fn the_runner_warns_at_start_when_a_container_reaches_the_metadata_address() {
    busybox_image();
    // A stand-in for the metadata address, where containers can reach it: the host.
    let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("bind");
    let reachable = format!("{}:{}", host_address(), listener.local_addr().expect("addr").port());
    let log = metadata_check_log(&reachable).await;
    assert!(
        log.contains("reaches the cloud metadata address: block it for containers"),
        "{log}"
    );
    drop(listener);
    // Nobody answers there: no warning.
    let closed = format!("{}:{}", host_address(), free_port());
    let log = metadata_check_log(&closed).await;
    assert!(log.contains("do not reach the metadata address"), "{log}");
    assert!(!log.contains("block it for containers"), "{log}");
}

/// A second Docker engine on this host, in a network namespace of its own: like a
/// rootless engine's or another host's, its containers' addresses lead nowhere from the
/// runner. Stopped (its containers with it) and removed when dropped.
struct EngineOutOfReach {
    dir: tempfile::TempDir,
    daemon: std::process::Child,
}

impl EngineOutOfReach {
    fn start() -> Self {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        assert!(
            is_root,
            "a second engine in its own network namespace needs root (unshare, dockerd)"
        );
        // Short: the engine's sockets live under it, within the kernel's 108-byte limit.
        let dir = tempfile::Builder::new()
            .prefix("eng")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let root = dir.path().display().to_string();
        // Its own (empty) daemon.json: the host's may name a data root of its own.
        std::fs::write(dir.path().join("daemon.json"), "{}").expect("write");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let daemon = Command::new("unshare")
            .args(["--net", "--fork", "--kill-child", "sh", "-c"])
            .arg(format!(
                "ip link set lo up && exec dockerd --config-file {root}/daemon.json --data-root {root}/data \
                 --exec-root {root}/exec --pidfile {root}/dockerd.pid -H unix://{root}/docker.sock"
            ))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("unshare and dockerd run (apt-get install util-linux iproute2 docker.io)");
        let engine = Self { dir, daemon };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !engine.docker_ok(&["info"]) {
            assert!(
                std::time::Instant::now() < deadline,
                "the second engine did not start: {}",
                std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let loaded = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save local/busybox:1 | docker -H {} load",
                engine.host()
            ))
            .output()
            .expect("sh");
        assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.path().display())
    }

    fn docker_ok(&self, args: &[&str]) -> bool {
        Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn docker(&self, args: &[&str]) -> String {
        docker(&[&["-H", &self.host()], args].concat())
    }
}

impl Drop for EngineOutOfReach {
    fn drop(&mut self) {
        // A stopped engine stops its containers and unmounts their layers.
        let pid = std::fs::read_to_string(self.dir.path().join("dockerd.pid")).unwrap_or_default();
        let _ = Command::new("kill").arg(pid.trim()).output();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline && matches!(self.daemon.try_wait(), Ok(None)) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[tokio::test]
async fn a_pull_requests_smoke_test_asks_from_inside_on_an_engine_the_runner_has_no_route_to() {
    busybox_image();
    let engine = EngineOutOfReach::start();
    let id = format!("{}{}", std::process::id(), free_port());
    let (project, image) = (format!("trustfar{id}"), format!("runner-trustfar-{id}"));

    // The premise: a container of that engine does not answer the runner at its address.
    let port = free_port().to_string();
    let listener = engine.docker(&[
        "run",
        "-d",
        "local/busybox:1",
        "sh",
        "-c",
        &format!("while true; do echo here | nc -l -p {port}; done"),
    ]);
    let address = engine.docker(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", &listener]);
    let reached = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(format!("{address}:{port}")),
    )
    .await;
    assert!(
        !matches!(reached, Ok(Ok(_))),
        "the runner reaches {address}:{port} on the second engine: the test shows nothing"
    );
    engine.docker(&["rm", "-f", &listener]);

    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path();
    webapp_repo(repo, "FROM scratch\n");
    let untrusted_host = engine.host();
    let runner = start(
        move |config| {
            config.engine.untrusted_host = Some(untrusted_host);
            let smoke = config.projects[0].smoke.as_mut().expect("smoke");
            smoke.timeout_secs = Some(5);
        },
        &project,
        repo,
        &image,
    )
    .await;

    let healthy = commit(repo, &format!("FROM local/busybox:1\n{APP_TAIL}"), "the app");
    let (job, log) = verify(&runner, &healthy).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(log.contains("asked from inside the container's own network"), "{log}");

    // An app that answers, but not what the smoke test expects: the answer is read, body and all.
    std::fs::create_dir_all(repo.join("www")).expect("mkdir");
    std::fs::write(repo.join("www/health"), "sick\n").expect("write");
    let sick = commit(
        repo,
        "FROM local/busybox:1\nCOPY www /www\nEXPOSE 5001\nENTRYPOINT [\"httpd\", \"-f\", \"-p\", \"5001\", \"-h\", \"/www\"]\n",
        "a sick app",
    );
    let (job, log) = verify(&runner, &sick).await;
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains("/health answered 200 with body \"sick\", expected \"healthy\""),
        "{error}"
    );

    // Neither the smoke containers nor their probers are left on that engine.
    let left = engine.docker(&["ps", "-aq", "--filter", "label=io.runner.managed"]);
    assert_eq!(left, "", "containers left on the second engine");
    runner.stop().await;
    drop(engine);
}
