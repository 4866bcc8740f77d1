//! The `idle` scenario: authenticated idle sockets and what each costs the server in resident
//! memory. Couriers connect to `/ws/courier` and never go online, the cheapest session there
//! is (no index entry, no dispatch, no fan-out); tungstenite answers the server's pings, so the
//! sessions stay open for the hold. Run it on a fresh server: memory freed by earlier load stays
//! in the allocator and new sessions reuse it without growing the resident set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::accounts::demo_users;
use super::report::{Report, latency_histogram, record_us};
use super::socket::{self, ConnectError, Incoming};
use super::{Target, check_duration};
use hexmarket::domain::identity::Role;

#[derive(Debug, Args)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 5_000)]
    pub connections: usize,
    /// How long the sockets stay open once all are connected.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Handshakes in flight while connecting.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
}

pub async fn run(target: &Target, args: &IdleArgs) -> anyhow::Result<Report> {
    let hold = check_duration("--hold-secs", args.hold_secs)?;
    anyhow::ensure!(
        (1..=100_000).contains(&args.connections),
        "--connections: must be 1 to 100000"
    );
    anyhow::ensure!(
        target.probe.is_some(),
        "the idle scenario measures the server's memory: give --server-pid"
    );
    target.api.wait_healthy(Duration::from_secs(10)).await?;
    let couriers = demo_users(&target.api, &target.minter, Role::Courier, args.connections).await?;
    // Let the server settle (a previous scenario's sessions closing) before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = target.probe_sample();

    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(args.connect_concurrency.clamp(1, 1024)));
    let shared = Arc::new(target.clone());
    let tasks: Vec<_> = couriers
        .iter()
        .map(|user| {
            let target = Arc::clone(&shared);
            let handshakes = Arc::clone(&handshakes);
            let mut stop = stop_rx.clone();
            let user = *user;
            tokio::spawn(async move {
                let token = target.minter.mint(user, Role::Courier)?;
                // Timed from the permit, so the figure is the handshake, not the queue for one.
                let (mut ws, took) = {
                    let _permit = handshakes.acquire().await?;
                    let began = Instant::now();
                    let ws =
                        socket::connect(&format!("{}/ws/courier", target.ws_base), &token).await?;
                    (ws, began.elapsed())
                };
                // Hold: keep reading (which answers pings) until told to stop.
                let held = tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.changed() => { socket::close(ws).await; return None; }
                            incoming = socket::next(&mut ws) => if let Incoming::Closed(close) = incoming {
                                return Some(close);
                            }
                        }
                    }
                });
                anyhow::Ok((took, held))
            })
        })
        .collect();
    let mut holders = Vec::with_capacity(tasks.len());
    let mut handshake = latency_histogram();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut emfile = false;
    for task in tasks {
        match task.await {
            Ok(Ok((took, held))) => {
                record_us(&mut handshake, took.as_micros() as i64);
                holders.push(held);
            }
            Ok(Err(e)) => {
                let reason = match e.downcast_ref::<ConnectError>() {
                    Some(ConnectError::TooManyOpenFiles(_)) => {
                        emfile = true;
                        "EMFILE".to_owned()
                    }
                    Some(ConnectError::Refused { status, .. }) => format!("HTTP {status}"),
                    _ => format!("{e:#}").chars().take(80).collect(),
                };
                *failures.entry(reason).or_default() += 1;
            }
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let connect_took = started.elapsed();
    let open = holders.len();
    eprintln!(
        "loadgen idle: {open} sockets open in {:.1} s ({} failed); holding {} s",
        connect_took.as_secs_f64(),
        failures.values().sum::<u64>(),
        hold.as_secs()
    );
    if emfile {
        let _ = stop_tx.send(true);
        anyhow::bail!(
            "out of file descriptors (EMFILE) after {open} sockets: raise the limit \
             (`ulimit -n 65536`; bench/live.sh does) and retry"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_connect = target.probe_sample();
    tokio::time::sleep(hold).await;
    let after_hold = target.probe_sample();
    let _ = stop_tx.send(true);
    let mut closed_early: BTreeMap<String, u64> = BTreeMap::new();
    for held in holders {
        if let Ok(Ok(Some(close))) = tokio::time::timeout(Duration::from_secs(5), held).await {
            let reason = match close {
                Some((code, reason)) => format!("closed {code} {reason}"),
                None => "connection lost".into(),
            };
            *closed_early.entry(reason).or_default() += 1;
        }
    }

    let mut report = Report::new("idle");
    report.count("connections_open", open as u64);
    report.add("connect_failures", json!(failures), format!("{failures:?}"));
    report.add(
        "connect_s",
        connect_took.as_secs_f64(),
        format!("{:.2} s to open them all", connect_took.as_secs_f64()),
    );
    report.latency("handshake_latency", &handshake);
    report.add(
        "closed_during_hold",
        json!(closed_early),
        format!("{closed_early:?}"),
    );
    if let (Some(before), Some(connected), Some(held)) = (before, after_connect, after_hold) {
        let per = |after: u64| (after as f64 - before.rss_kib as f64) / (open.max(1) as f64);
        report.add(
            "server_rss_kib",
            json!({"before": before.rss_kib, "connected": connected.rss_kib, "after_hold": held.rss_kib}),
            format!(
                "{} → {} → {} KiB (before, all connected, after {} s)",
                before.rss_kib,
                connected.rss_kib,
                held.rss_kib,
                hold.as_secs()
            ),
        );
        report.add(
            "rss_per_connection_kib",
            per(held.rss_kib),
            format!(
                "{:.1} KiB after the hold ({:.1} KiB right after connecting)",
                per(held.rss_kib),
                per(connected.rss_kib)
            ),
        );
        report.add(
            "server_cpu_s",
            held.cpu_s - before.cpu_s,
            format!(
                "{:.2} CPU s to accept and hold them",
                held.cpu_s - before.cpu_s
            ),
        );
    }
    Ok(report)
}
