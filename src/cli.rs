//! The command line: `serve` (the default) and `migrate`.

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::Settings;

/// hexmarket: a real-time delivery marketplace backend. Configured by HEXMARKET_* environment
/// variables (see the README).
#[derive(Debug, Parser)]
#[command(name = "hexmarket", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the ScyllaDB schema (schema/*.cql) that is not applied yet; needs
    /// HEXMARKET_SCYLLA_NODES.
    Migrate,
}

/// Runs a command to completion.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            let scylla = settings
                .scylla
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("HEXMARKET_SCYLLA_NODES: must be set to migrate"))?;
            let applied = crate::store::migrate::run(scylla).await?;
            if applied.is_empty() {
                tracing::info!(keyspace = %scylla.keyspace, "schema is up to date");
            } else {
                tracing::info!(keyspace = %scylla.keyspace, ?applied, "schema migrated");
            }
            Ok(())
        }
    }
}
