//! The `hexmarket` binary: parse the command line and settings, set up logging, run.

use std::process::ExitCode;

use clap::Parser as _;
use hexmarket::cli::{self, Cli};
use hexmarket::config::Settings;

/// jemalloc rather than the C library's allocator: under GPS ingest the store writer and the
/// trail drainer allocate and free millions of small buffers a second, and glibc's malloc
/// spent a quarter of the node's CPU on them (README, Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("hexmarket: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(cli::Command::Demo(_)))
        && std::env::var_os("HEXMARKET_LOG").is_none()
    {
        // The demo talks to a person at a terminal: its banner and status lines, not the
        // node's log of every request, unless HEXMARKET_LOG asks for that.
        settings.log_filter = hexmarket::demo::LOG_FILTER.to_owned();
    }
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
