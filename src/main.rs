//! The `hexmarket` binary: parse the command line and settings, set up logging, run.

use std::process::ExitCode;

use clap::Parser as _;
use hexmarket::cli::{self, Cli};
use hexmarket::config::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("hexmarket: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    hexmarket::telemetry::init(&settings);
    match actix_web::rt::System::new().block_on(cli::run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hexmarket failed");
            eprintln!("hexmarket: {e:#}");
            ExitCode::FAILURE
        }
    }
}
