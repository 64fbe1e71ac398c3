use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use webapp::logging::{self, LogFormat};
use webapp::{Application, Settings, probe};

const USAGE: &str = "\
usage: webapp [serve | healthcheck | --help | --version]

  serve        run the HTTP service (the default)
  healthcheck  probe http://127.0.0.1:$PORT/health; exit 0 when healthy, 1 otherwise

environment:
  PORT                 port to listen on (default 5001)
  HOST                 address to listen on (default 0.0.0.0)
  SHUTDOWN_GRACE_SECS  time in-flight requests get after SIGTERM (default 10)
  APP_COMMIT           commit reported by /version (default: baked in at build time)
  LOG_FORMAT=json      JSON log lines instead of readable ones
  RUST_LOG             log filter (default info)";

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        None | Some("serve") => serve(),
        Some("healthcheck") => healthcheck(),
        Some("--version" | "-V") => {
            println!("webapp {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("webapp: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let _log_guard = logging::init(LogFormat::from_env());
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!("invalid settings: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = Application::build(&settings).await?;
        tracing::info!(addr = %app.local_addr(), commit = %settings.commit, "listening");
        app.run_until_stopped(webapp::shutdown_signal()).await
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("server error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck() -> ExitCode {
    let port = match Settings::from_env() {
        Ok(settings) => settings.port,
        Err(error) => {
            eprintln!("healthcheck: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    match probe::check(addr, Duration::from_secs(3)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}
