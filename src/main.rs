//! The `keyward` binary: parse the command line, set up logging, run, and turn any error into
//! one line on stderr and the exit code of its kind (`keyward help exit-codes`).

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, json_errors) = match keyward::cli::parse() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let filter = EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("KEYWARD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    match keyward::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => keyward::cli::exit::report(&error, json_errors),
    }
}
