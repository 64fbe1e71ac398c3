//! Command-line interface of the `runner` binary.

pub mod ops;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::{Application, shutdown_signal};

/// Exit codes scripts can rely on.
pub mod exit {
    pub const OK: u8 = 0;
    /// The runner or the operation failed at run time.
    pub const FAILURE: u8 = 1;
    /// The configuration (file, environment or arguments) is invalid.
    pub const CONFIG: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version,
    about = "Self-hosted push-to-deploy runner for GitHub repositories"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve webhooks, the API and the workers until SIGTERM or SIGINT.
    Serve(ConfigArg),
    /// Validate the configuration and print it resolved, with secrets redacted.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate(ConfigArg),
    /// Run the whole loop locally: a git repository with the webapp, a registry, the
    /// runner, a signed push, followed until the app answers.
    Demo(crate::demo::DemoArgs),
    /// List recent jobs (from a running runner with --url, or from the database).
    Jobs(ops::JobsArgs),
    /// List recent deployments (from a running runner with --url, or from the database).
    Deployments(ops::Source),
    /// List pull requests' previews, or remove one (`previews remove N`, needs
    /// RUNNER_ADMIN_TOKEN).
    Previews(ops::PreviewsArgs),
    /// Deploy a branch head or a commit SHA of a project (needs RUNNER_ADMIN_TOKEN).
    Deploy {
        /// Project name, as configured.
        project: String,
        /// A branch (`main`), a full ref (`refs/heads/main`) or a 40-character commit SHA.
        #[arg(name = "ref")]
        target: String,
        #[command(flatten)]
        remote: ops::Remote,
    },
    /// Put exactly the image live in one environment live in another, without
    /// rebuilding it (needs RUNNER_ADMIN_TOKEN).
    Promote {
        /// Project name, as configured.
        project: String,
        /// The environment whose live image goes (e.g. staging).
        #[arg(long)]
        from: String,
        /// The environment it goes live in (e.g. production).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        remote: ops::Remote,
    },
    /// Put a deployment's image live again (needs RUNNER_ADMIN_TOKEN).
    Rollback {
        /// Deployment id (see `runner deployments`).
        deployment: u64,
        #[command(flatten)]
        remote: ops::Remote,
    },
    /// Queue again what a stored webhook delivery asked for (needs RUNNER_ADMIN_TOKEN).
    Replay {
        /// The delivery's X-GitHub-Delivery id (see GET /api/deliveries).
        delivery: String,
        #[command(flatten)]
        remote: ops::Remote,
    },
    /// Approve what a job waits for: running a pull request from a fork, or applying its
    /// terraform plan (needs RUNNER_ADMIN_TOKEN).
    /// A plan is approved by its digest: the plan is fetched and shown (stderr) and that
    /// plan approved, or give the digest of one read before with --plan-digest. A plan made
    /// again in between is refused, not applied.
    Approve {
        /// Job id (see `runner jobs`).
        job: u64,
        /// The plan_digest of the plan you read (GET /api/jobs/{id}), instead of fetching it.
        #[arg(long)]
        plan_digest: Option<String>,
        #[command(flatten)]
        remote: ops::Remote,
    },
    /// Reject what a job waits for; the job ends without it (needs RUNNER_ADMIN_TOKEN).
    Reject {
        /// Job id (see `runner jobs`).
        job: u64,
        #[command(flatten)]
        remote: ops::Remote,
    },
    /// Cancel a queued, held or running job (needs RUNNER_ADMIN_TOKEN).
    Cancel {
        /// Job id (see `runner jobs`).
        job: u64,
        #[command(flatten)]
        remote: ops::Remote,
    },
    /// Exit 0 if the runner answers /healthz on its listen address (RUNNER_LISTEN or the
    /// config): the container image's HEALTHCHECK.
    Healthcheck(ConfigArg),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// TOML config file; without it, defaults plus RUNNER_* environment variables.
    #[arg(long, short, env = "RUNNER_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub(crate) fn load(&self) -> Result<Config, ExitCode> {
        Config::load(self.config.as_deref()).map_err(|error| {
            eprintln!("runner: invalid configuration: {error}");
            ExitCode::from(exit::CONFIG)
        })
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("runner: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match cli.command {
        Command::Serve(arg) => {
            let config = match arg.load() {
                Ok(config) => config,
                Err(code) => return code,
            };
            crate::telemetry::init(config.server.log_format, config.secrets().mask());
            runtime.block_on(serve(config))
        }
        Command::CheckConfig { config, json } => match config.load() {
            Ok(config) => {
                print_config(&config, json);
                ExitCode::from(exit::OK)
            }
            Err(code) => code,
        },
        Command::Demo(args) => runtime.block_on(async {
            match crate::demo::run(args).await {
                Ok(()) => ExitCode::from(exit::OK),
                Err(error) => {
                    if let Some(prerequisite) = error.downcast_ref::<crate::demo::Prerequisite>() {
                        eprintln!("runner demo: {prerequisite}");
                        ExitCode::from(exit::CONFIG)
                    } else {
                        eprintln!("runner demo: {error:#}");
                        ExitCode::from(exit::FAILURE)
                    }
                }
            }
        }),
        Command::Jobs(args) => ops_exit(runtime.block_on(ops::jobs(&args))),
        Command::Deployments(source) => ops_exit(runtime.block_on(ops::deployments(&source))),
        Command::Previews(args) => ops_exit(runtime.block_on(ops::previews(&args))),
        Command::Promote {
            project,
            from,
            to,
            remote,
        } => ops_exit(runtime.block_on(ops::promote(&remote, &project, &from, &to))),
        Command::Deploy {
            project,
            target,
            remote,
        } => ops_exit(runtime.block_on(ops::deploy(&remote, &project, &target))),
        Command::Rollback { deployment, remote } => ops_exit(runtime.block_on(ops::rollback(&remote, deployment))),
        Command::Replay { delivery, remote } => ops_exit(runtime.block_on(ops::replay(&remote, &delivery))),
        Command::Approve {
            job,
            plan_digest,
            remote,
        } => ops_exit(runtime.block_on(ops::approve(&remote, job, plan_digest))),
        Command::Reject { job, remote } => ops_exit(runtime.block_on(ops::reject(&remote, job))),
        Command::Cancel { job, remote } => ops_exit(runtime.block_on(ops::cancel(&remote, job))),
        Command::Healthcheck(arg) => {
            let listen = match std::env::var("RUNNER_LISTEN").ok().and_then(|v| v.parse().ok()) {
                Some(listen) => listen,
                None => match arg.load() {
                    Ok(config) => config.server.listen,
                    Err(code) => return code,
                },
            };
            match runtime.block_on(ops::healthcheck(listen)) {
                Ok(()) => ExitCode::from(exit::OK),
                Err(error) => {
                    eprintln!("runner: unhealthy: {error:#}");
                    ExitCode::from(exit::FAILURE)
                }
            }
        }
        Command::Migrate(arg) => {
            let config = match arg.load() {
                Ok(config) => config,
                Err(code) => return code,
            };
            runtime.block_on(async {
                match crate::store::open(&config.server.database_url).await {
                    Ok(pool) => {
                        pool.close().await;
                        println!(
                            "database {} is up to date",
                            crate::secrets::redact_url(&config.server.database_url)
                        );
                        ExitCode::from(exit::OK)
                    }
                    Err(error) => {
                        eprintln!("runner: {error}");
                        ExitCode::from(exit::FAILURE)
                    }
                }
            })
        }
    }
}

fn ops_exit(result: Result<(), ops::OpsError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(ops::OpsError::Usage(message)) => {
            eprintln!("runner: {message}");
            ExitCode::from(exit::CONFIG)
        }
        Err(ops::OpsError::Failed(error)) => {
            eprintln!("runner: {error:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    if config.projects.is_empty() {
        tracing::warn!("no projects configured: every delivery will be refused (add [[projects]] to the config file)");
    }
    let listen = config.server.listen;
    let database = crate::secrets::redact_url(&config.server.database_url);
    let projects: Vec<String> = config
        .projects
        .iter()
        .map(|p| format!("{} ({})", p.name, p.repository))
        .collect();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cannot start");
            eprintln!("runner: cannot start: {error:#}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    tracing::info!(addr = %app.local_addr(), requested = %listen, database = %database, projects = ?projects, "listening");
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::from(exit::OK)
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "server failed");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn print_config(config: &Config, as_json: bool) {
    // Every config type prints its own redacted form.
    let resolved = serde_json::to_value(config).unwrap_or_default();
    if as_json {
        println!("{resolved:#}");
    } else {
        println!("configuration is valid");
        match toml::to_string_pretty(config) {
            Ok(text) => println!("{text}"),
            Err(_) => println!("{resolved:#}"),
        }
    }
}
