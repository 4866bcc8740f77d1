//! `hexmarket-loadgen`: drives couriers and watchers over real WebSockets against a running
//! hexmarket node.
//!
//! Ten scenarios and a sink, each bounded in time and count, loopback only, stopping by itself:
//! - [`live`]: couriers stream positions of assigned orders, customers watch them; measures
//!   ping → watcher latency, ack latency and delivered frames.
//! - [`ingest`]: couriers send location frames as fast as acks come back (one in flight).
//! - [`idle`]: authenticated idle sockets; the server's resident memory per connection.
//! - [`nearby`]: in-process, no server: the courier index's nearest-courier queries.
//! - [`relay`]: `live`'s load shape against a zero-logic WebSocket relay, a peer to compare with.
//! - [`analytics`]: the analytics reports over a year of seeded history, latency per report.
//! - [`http`]: open-loop GETs at a fixed offered rate against any HTTP server (hexmarket or a
//!   peer); latency from each request's due time, and the server's CPU-µs per request.
//! - [`checkout`]: uncontended add-to-cart + checkout loops, then a flash sale of one product
//!   whose stock must sell exactly once.
//! - [`notifications`]: `orders` places paid orders on a node with notifications off (a
//!   backlog); `drain` measures how fast the node, started again with them on, delivers it.
//! - [`smtp`]: `smtp-sink`, an SMTP server on loopback that takes and counts every message.
//!
//! Authentication mints access tokens with the node's own key (the load generator runs with the
//! server's HEXMARKET_* environment) instead of logging thousands of users in: password hashing
//! is slow on purpose and would dominate the setup. This crate is not part of the server's
//! binary, so neither its minting nor its client libraries ship in production.

mod accounts;
mod analytics;
mod api;
mod checkout;
mod http;
mod idle;
mod ingest;
mod live;
mod nearby;
mod notifications;
mod probe;
mod relay;
mod report;
mod smtp;
mod socket;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hexmarket::config::Settings;

/// hexmarket-loadgen: load a running hexmarket node over loopback. Scenarios that act as demo
/// users read the node's HEXMARKET_* environment to sign their tokens with its key.
#[derive(Debug, Parser)]
#[command(name = "hexmarket-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Base URL of the node (plain http, loopback).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's process id: its CPU time and resident memory are read from /proc. Give it
    /// several times (or as a comma list) for a server of several processes: their figures
    /// are added up.
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// A process counted with all its descendants, found again at every sample (a database
    /// that forks a backend per connection); several times or a comma list for several trees.
    /// Adds to --server-pid. Over several processes, memory is their proportional set sizes
    /// added up, so what they share counts once.
    #[arg(long, global = true, value_delimiter = ',')]
    server_tree: Vec<u32>,
    /// Also write the figures as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Couriers on assigned orders stream positions; each order's customer watches it.
    Live(live::LiveArgs),
    /// Couriers send location frames back to back (one in flight each).
    Ingest(ingest::IngestArgs),
    /// Authenticated idle sockets: resident memory per connection.
    Idle(idle::IdleArgs),
    /// In-process nearest-courier queries on the dispatch index (no server).
    Nearby(nearby::NearbyArgs),
    /// The `live` load shape against a zero-logic WebSocket relay (bench/peers/relay), for
    /// comparison: `--url ws://127.0.0.1:PORT`.
    Relay(relay::RelayArgs),
    /// Open-loop GETs at a fixed offered rate against any HTTP server (no tokens, no
    /// HEXMARKET_* settings): `--url http://127.0.0.1:PORT --rate N --path /health`.
    Http(http::HttpArgs),
    /// Uncontended checkouts, then a flash sale of one product (exits non-zero on an oversell).
    Checkout(checkout::CheckoutArgs),
    /// Paid orders as fast as they go (for a node with notifications off: a backlog).
    Orders(notifications::OrdersArgs),
    /// Waits until the node has delivered `--expect` notifications; their throughput.
    Drain(notifications::DrainArgs),
    /// An SMTP server on loopback that takes and counts every message.
    SmtpSink(smtp::SmtpSinkArgs),
    /// Analytics reports over a year of seeded history (`hexmarket seed-analytics`):
    /// latency per report.
    Analytics(analytics::AnalyticsArgs),
}

/// Longest any timed phase may be asked to last.
const MAX_DURATION_SECS: u64 = 3_600;

fn main() -> ExitCode {
    let args = Cli::parse();
    // One thread, as when this ran inside the server's binary: the generator is pinned to a
    // core of its own next to the server's, and its figures were taken that way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => Err(anyhow::Error::new(e).context("starting the runtime")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hexmarket-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one scenario, prints its summary and writes the JSON when asked.
async fn run(args: Cli) -> anyhow::Result<()> {
    let report = match &args.scenario {
        Scenario::Nearby(s) => nearby::run(s)?,
        Scenario::Live(s) => live::run(&Target::new(&args)?, s).await?,
        Scenario::Ingest(s) => ingest::run(&Target::new(&args)?, s).await?,
        Scenario::Idle(s) => idle::run(&Target::new(&args)?, s).await?,
        Scenario::Relay(s) => relay::run(&args.url, one_server_pid(&args)?, s).await?,
        Scenario::Http(s) => http::run(&args.url, one_server_pid(&args)?, s).await?,
        Scenario::Checkout(s) => {
            checkout::run(&Target::new(&args)?, s, args.json.as_deref()).await?
        }
        Scenario::Orders(s) => notifications::orders(&Target::new(&args)?, s).await?,
        Scenario::Drain(s) => notifications::drain(&Target::new(&args)?, s).await?,
        Scenario::SmtpSink(s) => smtp::run(s).await?,
        Scenario::Analytics(s) => analytics::run(&Target::new(&args)?, s).await?,
    };
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The node under load: its REST client, the token minter and the server process probe.
#[derive(Clone)]
struct Target {
    pub api: api::Api,
    pub ws_base: String,
    pub minter: std::sync::Arc<accounts::Minter>,
    pub probe: Option<std::sync::Arc<probe::Probe>>,
}

impl Target {
    /// The node at `--url`, with the token minter of the node's HEXMARKET_* environment.
    fn new(args: &Cli) -> anyhow::Result<Self> {
        let settings = Settings::from_env()
            .map_err(|e| anyhow::anyhow!("invalid HEXMARKET_* configuration: {e}"))?;
        let base = args.url.trim_end_matches('/').to_owned();
        let ws_base = match base.strip_prefix("http://") {
            Some(rest) => format!("ws://{rest}"),
            None => anyhow::bail!("--url: only plain http:// URLs are supported, not {base}"),
        };
        Ok(Target {
            api: api::Api::new(&base)?,
            ws_base,
            minter: std::sync::Arc::new(accounts::Minter::from_settings(&settings)?),
            probe: probe::Probe::of(&args.server_pid, &args.server_tree).map(std::sync::Arc::new),
        })
    }

    /// The server's counters now, when `--server-pid` was given (a failed read is reported
    /// and skipped).
    pub fn probe_sample(&self) -> Option<probe::Sample> {
        let probe = self.probe.as_ref()?;
        match probe.sample() {
            Ok(sample) => Some(sample),
            Err(e) => {
                eprintln!("hexmarket-loadgen: {e:#}");
                None
            }
        }
    }
}

/// The one server process of the scenarios that measure a single one (`relay`, `http`).
fn one_server_pid(args: &Cli) -> anyhow::Result<Option<u32>> {
    match (args.server_pid.as_slice(), args.server_tree.is_empty()) {
        ([], true) => Ok(None),
        ([pid], true) => Ok(Some(*pid)),
        _ => anyhow::bail!(
            "this scenario measures one server process: give one --server-pid and no --server-tree"
        ),
    }
}

fn check_duration(name: &str, secs: u64) -> anyhow::Result<std::time::Duration> {
    anyhow::ensure!(
        (1..=MAX_DURATION_SECS).contains(&secs),
        "{name}: must be 1 to {MAX_DURATION_SECS} seconds"
    );
    Ok(std::time::Duration::from_secs(secs))
}
