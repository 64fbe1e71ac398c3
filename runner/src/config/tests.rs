use super::*;

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(toml).map_err(|e| ConfigError::Syntax {
        path: "test.toml".into(),
        message: e.to_string(),
    })?;
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Config::resolve(
        raw,
        &move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        Path::new("."),
    )
}

const HELLO: &str = r#"
    [[projects]]
    name = "hello"
    repository = "Codertocat/Hello-World"
    deploy_branches = ["master"]
    webhook_secret_env = "HELLO_SECRET"
"#;

#[test]
fn the_pinned_keys_alone_make_a_valid_project() {
    let config = load(HELLO, &[("HELLO_SECRET", "s3cret")]).expect("valid");
    let project = &config.projects[0];
    let environment = project.default_environment();
    assert_eq!(environment.branches[0].as_str(), "refs/heads/master");
    assert_eq!(environment.name.as_str(), "production");
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.server.database_url, DEFAULT_DATABASE_URL);
    assert_eq!(config.server.max_body_bytes, 25 * 1024 * 1024);
    assert!(
        config
            .project_by_repository(&RepoName::parse("codertocat/hello-world").expect("ok"))
            .is_some()
    );
}

#[test]
fn env_overrides_the_file() {
    let config = load(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        &[
            ("RUNNER_LISTEN", "127.0.0.1:9999"),
            ("RUNNER_DATABASE_URL", "sqlite::memory:"),
        ],
    )
    .expect("valid");
    assert_eq!(config.server.listen.port(), 9999);
    assert_eq!(config.server.database_url, "sqlite::memory:");
}

#[test]
fn a_missing_or_empty_secret_refuses_to_start_and_names_the_variable() {
    let error = load(HELLO, &[]).expect_err("unset").to_string();
    assert!(error.contains("HELLO_SECRET") && error.contains("not set"), "{error}");
    let error = load(HELLO, &[("HELLO_SECRET", "  ")]).expect_err("empty").to_string();
    assert!(error.contains("empty"), "{error}");
}

#[test]
fn the_secret_never_shows_in_debug_output() {
    let config = load(HELLO, &[("HELLO_SECRET", "very-secret-value")]).expect("valid");
    assert!(!format!("{config:?}").contains("very-secret-value"));
}

#[test]
fn every_secret_the_config_holds_is_masked_in_every_encoding() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn\n/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yP\n-----END RSA PRIVATE KEY-----\n";
    std::fs::write(dir.path().join("app.pem"), key).expect("write");
    let toml = format!(
        r#"
[[projects]]
name = "hello"
repository = "o/hello"
deploy_branches = ["main"]
webhook_secret_env = "WEBHOOK"
clone_url = "https://x-access-token:clone-url-token-0001@github.com/o/hello.git"
[projects.build]
image = "hello"
secrets = {{ NPM_TOKEN = "BUILD" }}
[projects.registry]
url = "127.0.0.1:5000"
username_env = "REG_USER"
password_env = "REG_PASSWORD"
[projects.github]
token_env = "GH_TOKEN"

[[projects]]
name = "app"
repository = "o/app"
deploy_branches = ["main"]
webhook_secret_env = "WEBHOOK2"
[projects.github]
app_id = 12
private_key_file = "{pem}"
[projects.terraform]
dir = "infra"
secret_env = {{ AWS_SECRET_ACCESS_KEY = "TF_ENV" }}
secret_vars = {{ db_password = "TF_VAR" }}
pull_request_secret_env = {{ READ_ONLY = "TF_PR" }}
"#,
        pem = dir.path().join("app.pem").display()
    );
    let bin = std::env::current_exe().expect("an executable file");
    let env = [
        ("WEBHOOK", "webhook-secret-0002"),
        ("WEBHOOK2", "webhook-secret-0003"),
        ("BUILD", "build-secret-0004"),
        ("REG_USER", "deployer"),
        ("REG_PASSWORD", "registry-password-0005"),
        ("GH_TOKEN", "ghp_github-token-0006"),
        ("TF_ENV", "terraform-env-secret-0007"),
        ("TF_VAR", "terraform-var-secret-0008"),
        ("TF_PR", "pull-request-secret-0009"),
        ("RUNNER_ADMIN_TOKEN", "admin-token-secret-0010"),
        ("TERRAFORM_BIN", bin.to_str().expect("utf-8")),
    ];
    let config = load(&toml, &env).expect("valid");
    let mask = config.secrets().mask();
    let mut secrets: Vec<&str> = env
        .iter()
        .filter(|(name, _)| !matches!(*name, "REG_USER" | "TERRAFORM_BIN"))
        .map(|(_, value)| *value)
        .collect();
    secrets.push("clone-url-token-0001");
    secrets.extend(key.lines().filter(|l| !l.starts_with("-----")));
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ];
    for secret in secrets {
        let mut forms = vec![
            format!("x {secret} y"),
            serde_json::json!({ "v": format!("\"{secret}\"") }).to_string(),
            format!("?t={}", secret.replace('/', "%2F").replace('+', "%2B")),
        ];
        for prefix in ["", "a", "ab"] {
            for engine in engines {
                forms.push(engine.encode(format!("{prefix}VAR={secret}\0NEXT=1")));
            }
        }
        for form in forms {
            let masked = mask.apply(&form);
            assert!(masked.contains("***"), "{secret} not masked in {form}");
        }
        assert!(!mask.apply(secret).contains(secret), "{secret}");
    }
    assert_eq!(
        mask.apply("deployer pushes"),
        "deployer pushes",
        "a user name is not a secret"
    );
}

#[test]
fn mistakes_are_named() {
    let cases = [
        ("[server]\nlisten = \"nope\"", "server.listen"),
        (
            "[server]\ndatabase_url = \"mysql://x\"",
            "neither a sqlite: URL nor a postgres:// URL",
        ),
        ("[server]\ndatabase_url = \"postgres://x\"", "server.work_dir: required"),
        (
            "[server]\ndatabase_url = \"postgres://u:pw@/db\"\nwork_dir = \"w\"",
            "names no host",
        ),
        ("[queue]\nlabels = [\"has space\"]", "queue.labels"),
        (
            "[[projects]]\nname = \"a\"\nrepository = \"a/b\"\ndeploy_branches = [\"main\"]\nwebhook_secret_env = \"S\"\nruns_on = [\"$(x)\"]",
            "projects[0].runs_on",
        ),
        ("[queue]\nworkers = 0", "queue.workers"),
        ("[server]\nlistn = \"x\"", "unknown field"),
        (
            "[[projects]]\nname = \"Bad Name\"\nrepository = \"a/b\"\ndeploy_branches = [\"main\"]\nwebhook_secret_env = \"S\"",
            "projects[0].name",
        ),
        (
            "[[projects]]\nname = \"a\"\nrepository = \"a/b\"\ndeploy_branches = [\"$(id)\"]\nwebhook_secret_env = \"S\"",
            "projects[0].deploy_branches",
        ),
        (
            "[[projects]]\nname = \"a\"\nrepository = \"a/b\"\ndeploy_branches = []\nwebhook_secret_env = \"S\"",
            "at least one branch",
        ),
    ];
    for (toml, expected) in cases {
        let error = load(toml, &[("S", "x")]).expect_err(toml).to_string();
        assert!(error.contains(expected), "{toml}: {error}");
    }
    let twice = format!("{HELLO}\n{}", HELLO.replace("hello\"", "other\""));
    let error = load(&twice, &[("HELLO_SECRET", "x")])
        .expect_err("dup repo")
        .to_string();
    assert!(error.contains("configured twice"), "{error}");
}

#[test]
fn a_short_admin_token_is_refused() {
    let error = load("", &[("RUNNER_ADMIN_TOKEN", "short")])
        .expect_err("short")
        .to_string();
    assert!(error.contains("RUNNER_ADMIN_TOKEN"), "{error}");
}

const TERRAFORM_PROJECT: &str = r#"
[[projects]]
name = "app"
repository = "o/app"
deploy_branches = ["main"]
webhook_secret_env = "S"
[projects.terraform]
dir = "terraform"
require_approval = true
[projects.rollout]
target = "ecs"
cluster = "c"
service = "s"
"#;

#[test]
fn a_terraform_step_without_a_terraform_executable_refuses_to_start() {
    let error = load(TERRAFORM_PROJECT, &[("S", "secret-value"), ("PATH", "/nonexistent")])
        .expect_err("no terraform")
        .to_string();
    assert!(error.contains("TERRAFORM_BIN"), "{error}");
    assert!(error.contains("project app"), "{error}");
    let bad = load(
        TERRAFORM_PROJECT,
        &[("S", "secret-value"), ("TERRAFORM_BIN", "/nonexistent/terraform")],
    );
    assert!(bad.is_err());
    // A project without terraform needs none.
    assert!(load("", &[("PATH", "/nonexistent")]).is_ok());
}

#[test]
fn terraform_and_ecs_settings_are_read_with_their_defaults() {
    let bin = std::env::current_exe().expect("an executable file");
    let config = load(
        TERRAFORM_PROJECT,
        &[("S", "secret-value"), ("TERRAFORM_BIN", bin.to_str().expect("utf-8"))],
    )
    .expect("valid");
    let project = &config.projects[0];
    let terraform = project.terraform.as_ref().expect("terraform");
    assert_eq!(terraform.image_var, "image_url");
    assert_eq!(terraform.workspace, "default");
    assert!(terraform.require_approval);
    let Some(Target::Ecs(ecs)) = &project.default_environment().target else {
        panic!("an ECS target: {:?}", project.default_environment().target);
    };
    assert_eq!((ecs.cluster.as_str(), ecs.container.as_str()), ("c", "app"));
    assert!(ecs.rollback_on_failure);
    let escape = TERRAFORM_PROJECT.replace("dir = \"terraform\"", "dir = \"../elsewhere\"");
    let error = load(
        &escape,
        &[("S", "secret-value"), ("TERRAFORM_BIN", bin.to_str().expect("utf-8"))],
    )
    .expect_err("outside the repository")
    .to_string();
    assert!(error.contains("terraform.dir"), "{error}");
    let missing = TERRAFORM_PROJECT.replace("service = \"s\"\n", "");
    let error = load(
        &missing,
        &[("S", "secret-value"), ("TERRAFORM_BIN", bin.to_str().expect("utf-8"))],
    )
    .expect_err("no service")
    .to_string();
    assert!(error.contains("rollout.service"), "{error}");
}

const TWO_ENVIRONMENTS: &str = r#"
    [[projects]]
    name = "app"
    repository = "o/app"
    webhook_secret_env = "S"
    [[projects.environments]]
    name = "staging"
    branches = ["develop"]
    [projects.environments.rollout]
    target = "local"
    host_port = 9001
    slot_ports = [19001, 19002]
    [[projects.environments]]
    name = "production"
    branches = ["main"]
    tags = true
    [projects.environments.rollout]
    target = "local"
    hostname = "app.example.com"
    slot_ports = [19003, 19004]
"#;

#[test]
fn environments_are_read_with_their_branches_and_routes() {
    let config = load(TWO_ENVIRONMENTS, &[("S", "x")]).expect("valid");
    let project = &config.projects[0];
    let names: Vec<&str> = project.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["staging", "production"]);
    let develop = crate::domain::GitRef::branch("develop").expect("ref");
    let deployed: Vec<&str> = project.environments_for(&develop).map(|e| e.name.as_str()).collect();
    assert_eq!(deployed, ["staging"]);
    let Some(Target::Local(production)) = &project.environment("production").expect("production").target else {
        panic!("a local target");
    };
    assert_eq!(
        production.url(),
        "https://app.example.com",
        "a hostname gets TLS by default"
    );
    assert_eq!(config.proxy.admin_url, DEFAULT_ADMIN_URL);
}

#[test]
fn environment_and_route_mistakes_are_refused_with_the_key_named() {
    let cases = [
        (
            TWO_ENVIRONMENTS.replace("name = \"staging\"", "name = \"Staging Env\""),
            "projects[0].environments[0].name",
        ),
        (
            TWO_ENVIRONMENTS.replace("name = \"staging\"", "name = \"production\""),
            "projects[0].environments[1].name",
        ),
        (
            TWO_ENVIRONMENTS.replace("app.example.com", "-bad_host"),
            "projects[0].environments[1].rollout.hostname",
        ),
        (
            TWO_ENVIRONMENTS.replace("slot_ports = [19003, 19004]", "slot_ports = [19001, 19005]"),
            "projects[0] (app/production).rollout",
        ),
        (
            TWO_ENVIRONMENTS.replace("slot_ports = [19001, 19002]\n", ""),
            "projects[0].environments[0].rollout.slot_ports",
        ),
        (
            TWO_ENVIRONMENTS.replace(
                "webhook_secret_env = \"S\"",
                "webhook_secret_env = \"S\"\n    deploy_branches = [\"main\"]",
            ),
            "projects[0].deploy_branches",
        ),
        (
            TWO_ENVIRONMENTS.replace(
                "hostname = \"app.example.com\"",
                "hostname = \"app.example.com\"\n    tls = \"maybe\"",
            ),
            "projects[0].environments[1].rollout.tls",
        ),
    ];
    for (toml, key) in cases {
        let error = load(&toml, &[("S", "x")]).expect_err(key).to_string();
        assert!(error.starts_with(key), "{key}: {error}");
    }
    let bad_proxy = format!("[proxy]\nadmin_url = \"not a url\"\n{TWO_ENVIRONMENTS}");
    let error = load(&bad_proxy, &[("S", "x")]).expect_err("proxy").to_string();
    assert!(error.starts_with("proxy.admin_url"), "{error}");
}

#[test]
fn a_postgres_url_is_accepted_and_its_password_never_shown() {
    let config = load(
        "[server]\ndatabase_url = \"postgres://runner:hunter2secret@db.internal:5432/runner\"\nwork_dir = \"/srv/runner-a\"",
        &[],
    )
    .expect("valid");
    assert_eq!(config.server.work_dir, std::path::PathBuf::from("/srv/runner-a"));
    let shown = toml::to_string(&config.server).expect("serialises");
    assert!(shown.contains("db.internal:5432/runner"), "{shown}");
    assert!(!shown.contains("hunter2secret"), "{shown}");
    let error = load(
        "[server]\ndatabase_url = \"postgres://runner:hunter2secret@\"\nwork_dir = \"w\"",
        &[],
    )
    .expect_err("no host")
    .to_string();
    assert!(!error.contains("hunter2secret"), "{error}");
}

#[test]
fn labels_pick_the_projects_a_runner_claims() {
    let two = format!(
        "[queue]\nlabels = [\"host-engine\"]\n{HELLO}\nruns_on = [\"host-engine\"]\n{}\nruns_on = [\"gpu\"]",
        HELLO.replace("hello\"", "other\"").replace("Hello-World", "Other")
    );
    let config = load(&two, &[("HELLO_SECRET", "x")]).expect("valid");
    assert_eq!(config.runnable_projects(), Some(vec!["hello".to_owned()]));
    let from_env = load(&two, &[("HELLO_SECRET", "x"), ("RUNNER_LABELS", "gpu, host-engine")]).expect("valid");
    assert_eq!(
        from_env.runnable_projects(),
        Some(vec!["hello".to_owned(), "other".to_owned()])
    );
    let plain = load(HELLO, &[("HELLO_SECRET", "x")]).expect("valid");
    assert_eq!(
        plain.runnable_projects(),
        None,
        "no project asks for a label: all are claimed"
    );
}

/// A project with previews on port ranges, beside an environment on port 9001.
const WITH_PREVIEWS: &str = r#"
    [[projects]]
    name = "app"
    repository = "o/app"
    deploy_branches = ["main"]
    webhook_secret_env = "S"
    [projects.build]
    image = "app"
    [projects.smoke]
    container_port = 5001
    [projects.registry]
    kind = "v2"
    url = "127.0.0.1:5000"
    [projects.rollout]
    target = "local"
    host_port = 9001
    slot_ports = [19001, 19002]
    [projects.previews]
    host_ports = [20100, 20104]
    slot_ports = [20200, 20209]
    max_previews = 5
    env = { APP_ENV = "preview" }
"#;

#[test]
fn previews_take_a_seat_of_their_ranges_and_only_their_own_variables() {
    let config = load(WITH_PREVIEWS, &[("S", "x")]).expect("valid");
    let previews = config.projects[0].previews.as_ref().expect("previews");
    let third = previews.rollout(2, 42);
    assert_eq!(third.url(), "http://127.0.0.1:20102");
    assert_eq!(third.slot_ports, [20204, 20205]);
    assert_eq!(third.env, [("APP_ENV".to_owned(), "preview".to_owned())]);
    assert_eq!(previews.ttl, std::time::Duration::from_secs(72 * 3600));
    let named = load(
        &WITH_PREVIEWS.replace(
            "host_ports = [20100, 20104]",
            "hostname = \"pr-{number}.preview.example.com\"",
        ),
        &[("S", "x")],
    )
    .expect("valid");
    let rollout = named.projects[0].previews.as_ref().expect("previews").rollout(0, 7);
    assert_eq!(rollout.url(), "https://pr-7.preview.example.com");
}

#[test]
fn preview_mistakes_are_refused_at_start_with_the_key_named() {
    let cases = [
        (
            WITH_PREVIEWS.replace("host_ports = [20100, 20104]", "hostname = \"preview.example.com\""),
            "projects[0].previews.hostname",
        ),
        (
            WITH_PREVIEWS.replace(
                "host_ports = [20100, 20104]",
                "hostname = \"{number}.{number}.example.com\"",
            ),
            "projects[0].previews.hostname",
        ),
        (
            WITH_PREVIEWS.replace("host_ports = [20100, 20104]", "hostname = \"pr_{number}.example.com\""),
            "projects[0].previews.hostname",
        ),
        (
            WITH_PREVIEWS.replace("host_ports = [20100, 20104]\n", ""),
            "projects[0].previews.hostname",
        ),
        (
            WITH_PREVIEWS.replace("slot_ports = [20200, 20209]", "slot_ports = [20200, 20205]"),
            "projects[0].previews.slot_ports",
        ),
        (
            WITH_PREVIEWS.replace("slot_ports = [20200, 20209]", "slot_ports = [20104, 20113]"),
            "projects[0].previews.slot_ports",
        ),
        (
            WITH_PREVIEWS.replace("host_port = 9001", "host_port = 20103"),
            "projects[0] (app/production).rollout",
        ),
        (
            WITH_PREVIEWS.replace(
                "deploy_branches = [\"main\"]",
                "deploy_branches = [\"main\"]\n    environment = \"pr-1\"",
            ),
            "projects[0].environment",
        ),
        (
            WITH_PREVIEWS.replace(
                "webhook_secret_env = \"S\"",
                "webhook_secret_env = \"S\"\n    pull_requests = \"off\"",
            ),
            "projects[0].pull_requests",
        ),
        (
            WITH_PREVIEWS.replace("env = { APP_ENV = \"preview\" }", "env = { \"APP-ENV\" = \"x\" }"),
            "projects[0].previews.env",
        ),
        (
            format!("[engine]\nuntrusted_host = \"tcp://10.0.0.2:2375\"\n{WITH_PREVIEWS}"),
            "projects[0].previews",
        ),
        (
            format!(
                "{WITH_PREVIEWS}{}",
                WITH_PREVIEWS
                    .replace("name = \"app\"", "name = \"other\"")
                    .replace("o/app", "o/other")
                    .replace("host_port = 9001", "host_port = 9002")
                    .replace("[19001, 19002]", "[19003, 19004]")
                    .replace("[20100, 20104]", "[20150, 20154]")
                    .replace("[20200, 20209]", "[20205, 20214]")
            ),
            "projects[1].previews",
        ),
    ];
    for (toml, key) in cases {
        let error = load(&toml, &[("S", "x")]).expect_err(key).to_string();
        assert!(error.contains(key), "expected {key}, got: {error}\n{toml}");
    }
    // An environment's host name the previews' template would make is refused too.
    let toml = WITH_PREVIEWS
        .replace("host_ports = [20100, 20104]", "hostname = \"pr-{number}.example.com\"")
        .replace("host_port = 9001", "hostname = \"pr-1.example.com\"");
    let error = load(&toml, &[("S", "x")]).expect_err("collides").to_string();
    assert!(error.contains("rollout.hostname"), "{error}");
}

#[test]
fn forge_servers_are_named_by_projects_and_their_mistakes_are_named() {
    const SERVERS: &str = "[forges.gitea]\nurl = \"https://gitea.example.com/\"\ntoken_env = \"GITEA_TOKEN\"\n\
        [forges.work]\nkind = \"gitlab\"\nurl = \"https://gitlab.example.com\"\n";
    let project = |forge: &str, repository: &str| {
        format!(
            "[[projects]]\nname = \"p\"\nrepository = \"{repository}\"\nforge = \"{forge}\"\n\
             deploy_branches = [\"main\"]\nwebhook_secret_env = \"S\"\n"
        )
    };
    let env = [("S", "secret"), ("GITEA_TOKEN", "gitea-token-value")];
    let config = load(&format!("{SERVERS}{}", project("gitea", "owner/app")), &env).expect("valid");
    let on_gitea = &config.projects[0];
    let instance = on_gitea.forge.as_ref().expect("on a forge");
    assert_eq!(
        (instance.kind, instance.url.as_str()),
        (ForgeKind::Gitea, "https://gitea.example.com")
    );
    assert!(on_gitea.reports_to_forge());
    assert_eq!(
        on_gitea.links.pull_request(3),
        "https://gitea.example.com/owner/app/pulls/3"
    );
    let masked = config.secrets().mask().apply("Authorization: token gitea-token-value");
    assert!(
        !masked.contains("gitea-token-value"),
        "the server's token is masked: {masked}"
    );

    // GitLab: nested groups, its own links, and no token means nothing is reported.
    let config = load(&format!("{SERVERS}{}", project("work", "group/sub/app")), &env).expect("valid");
    let on_gitlab = &config.projects[0];
    assert_eq!(on_gitlab.repository.as_str(), "group/sub/app");
    assert_eq!(
        on_gitlab.links.commit("abc"),
        "https://gitlab.example.com/group/sub/app/-/commit/abc"
    );
    assert!(!on_gitlab.reports_to_forge());
    // A nested path is GitLab's alone.
    let error = load(&format!("{SERVERS}{}", project("gitea", "group/sub/app")), &env).expect_err("refused");
    assert!(error.to_string().contains("projects[0].repository"), "{error}");

    for (toml, key) in [
        (project("nowhere", "owner/app"), "projects[0].forge"),
        (
            format!(
                "{SERVERS}[forges.mine]\nurl = \"https://git.example.com\"\n{}",
                project("mine", "o/a")
            ),
            "forges.mine.kind",
        ),
        (
            format!("[forges.gitea]\nurl = \"ftp://x\"\n{}", project("gitea", "o/a")),
            "forges.gitea.url",
        ),
        (
            format!(
                "[forges.github]\nurl = \"https://github.com\"\n{}",
                project("github", "o/a")
            ),
            "forges.github",
        ),
        (
            format!(
                "{SERVERS}{}[projects.github]\ntoken_env = \"S\"\n",
                project("gitea", "o/a")
            ),
            "projects[0].github",
        ),
    ] {
        let error = load(&toml, &env).expect_err(key);
        assert!(error.to_string().contains(key), "{key}: {error}");
    }
}
