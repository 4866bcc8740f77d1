//! The `http` scenario: open-loop GETs at a fixed offered rate against any HTTP server (a
//! hexmarket node or a peer), to compare servers' CPU cost per request at the same load.
//!
//! Request `i` is due at `start + i / rate`, whatever happened to the ones before it; its
//! latency runs from that due time to the last byte of the answer, so a stalled server (or a
//! full connection pool) shows as latency instead of silently lowering the offered load
//! (no coordinated omission). At most `--connections` requests are in flight; a request due
//! while all are busy waits for one, its clock running. When the generator itself falls behind
//! its schedule, the report counts the late starts, so a rate the load generator cannot offer
//! is visible rather than mistaken for the server's limit.
//!
//! No tokens are minted and no HEXMARKET_* setting is read: only `--url` and the paths.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use reqwest::Client;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::report::{Report, latency_histogram, record_us};
use super::{check_duration, probe};

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// A path to GET, e.g. `/health` (repeat for several; used round-robin with `--paths`).
    #[arg(long = "path")]
    pub path: Vec<String>,
    /// A file of paths to GET, one per line (blank lines skipped), used round-robin.
    #[arg(long)]
    pub paths: Option<PathBuf>,
    /// Offered load: requests started per second, whatever the answers do.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Load offered at the same rate before the measured window, not counted (0: none).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Most requests in flight, which is also the keep-alive pool's size.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Per-request timeout in seconds (a timed-out request counts as an error).
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// Highest offered rate accepted.
const MAX_RATE: u64 = 1_000_000;
/// A request that starts later than this after its due time is a late start.
const LATE: Duration = Duration::from_millis(2);

/// What the measured requests did.
struct Totals {
    ok: u64,
    latency: Histogram<u64>,
    /// Due time → sent, for every measured request (the generator's and the pool's delay).
    send_lag: Histogram<u64>,
    /// Sent → answered, for successful requests: the server's part of `latency`.
    service_time: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    late_starts: u64,
    waited_for_connection: u64,
    bytes: u64,
    last_answer: Option<Instant>,
}

pub async fn run(url: &str, server_pid: Option<u32>, args: &HttpArgs) -> anyhow::Result<Report> {
    let duration = check_duration("--duration-secs", args.duration_secs)?;
    anyhow::ensure!(
        args.warmup_secs <= super::MAX_DURATION_SECS,
        "--warmup-secs: must be 0 to {} seconds",
        super::MAX_DURATION_SECS
    );
    let timeout = check_duration("--timeout-secs", args.timeout_secs)?;
    anyhow::ensure!(
        (1..=MAX_RATE).contains(&args.rate),
        "--rate: must be 1 to {MAX_RATE} requests/s"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.connections),
        "--connections: must be 1 to 10000"
    );
    let base = url.trim_end_matches('/').to_owned();
    anyhow::ensure!(
        base.starts_with("http://"),
        "--url: only plain http:// URLs are supported, not {base}"
    );
    let urls = request_urls(&base, args)?;
    let probe = server_pid.map(probe::Probe::new);
    let sample = || {
        probe.as_ref().and_then(|p| match p.sample() {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("loadgen: {e:#}");
                None
            }
        })
    };

    // As in api.rs: rustls is linked without a provider of its own, and building the client
    // needs one installed even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(args.connections)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    // One request first: a server that does not answer at all is a setup error, not a figure.
    let first = client
        .get(&urls[0])
        .send()
        .await
        .with_context(|| format!("GET {}", urls[0]))?;
    anyhow::ensure!(
        first.status().is_success(),
        "GET {}: HTTP {}",
        urls[0],
        first.status()
    );
    let _ = first.bytes().await;

    let interval_ns = 1e9 / args.rate as f64;
    let warmup_requests = args.warmup_secs * args.rate;
    let measured_requests = args.rate * duration.as_secs();
    let total_requests = warmup_requests + measured_requests;
    let slots = Arc::new(Semaphore::new(args.connections));
    let totals = Arc::new(Mutex::new(Totals {
        ok: 0,
        latency: latency_histogram(),
        send_lag: latency_histogram(),
        service_time: latency_histogram(),
        errors: BTreeMap::new(),
        late_starts: 0,
        waited_for_connection: 0,
        bytes: 0,
        last_answer: None,
    }));

    let start = Instant::now() + Duration::from_millis(100);
    let measure_start = start + Duration::from_secs(args.warmup_secs);
    let mut before = None;
    for i in 0..total_requests {
        let due = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
        let measured = i >= warmup_requests;
        if i == warmup_requests {
            tokio::time::sleep_until(due).await;
            before = sample();
        } else if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if measured {
                    totals.lock().waited_for_connection += 1;
                }
                Arc::clone(&slots).acquire_owned().await?
            }
        };
        let lag = Instant::now().saturating_duration_since(due);
        if measured {
            let mut t = totals.lock();
            record_us(&mut t.send_lag, lag.as_micros() as i64);
            if lag > LATE {
                t.late_starts += 1;
            }
        }
        let request = client.get(&urls[i as usize % urls.len()]);
        let totals = Arc::clone(&totals);
        tokio::spawn(async move {
            let _slot = slot;
            let sent = Instant::now();
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(body) if status.is_success() => Ok(body.len() as u64),
                        Ok(_) => Err(format!("HTTP {}", status.as_u16())),
                        Err(e) => Err(transport_error(&e)),
                    }
                }
                Err(e) => Err(transport_error(&e)),
            };
            if !measured {
                return;
            }
            let answered = Instant::now();
            let mut t = totals.lock();
            t.last_answer = Some(t.last_answer.map_or(answered, |l| l.max(answered)));
            match outcome {
                Ok(bytes) => {
                    t.ok += 1;
                    t.bytes += bytes;
                    record_us(
                        &mut t.latency,
                        answered.saturating_duration_since(due).as_micros() as i64,
                    );
                    record_us(
                        &mut t.service_time,
                        answered.saturating_duration_since(sent).as_micros() as i64,
                    );
                }
                Err(kind) => *t.errors.entry(kind).or_default() += 1,
            }
        });
    }
    // Every request has been started; wait for the last answers (all slots free again).
    let drained = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        slots.acquire_many(args.connections as u32),
    )
    .await;
    let after = sample();
    let scheduled_end = measure_start + duration;
    let t = totals.lock();
    let unfinished = match drained {
        Ok(Ok(_)) => 0,
        _ => args.connections - slots.available_permits(),
    };
    let window_end = t.last_answer.unwrap_or(scheduled_end).max(scheduled_end);
    let window = window_end
        .saturating_duration_since(measure_start)
        .as_secs_f64();
    let errors: u64 = t.errors.values().sum();
    let answered = t.ok + errors;

    let mut report = Report::new("http");
    report.add(
        "paths",
        urls.len() as u64,
        format!(
            "{} path(s) round-robin, first {}",
            urls.len(),
            urls[0].trim_start_matches(&base)
        ),
    );
    report.add(
        "offered_rate",
        args.rate,
        format!(
            "{} req/s for {} s (after {} s warm-up), at most {} in flight",
            args.rate,
            duration.as_secs(),
            args.warmup_secs,
            args.connections
        ),
    );
    report.add(
        "achieved_rate",
        t.ok as f64 / window,
        format!(
            "{:.0} successful answers/s ({} in {:.2} s, from the window's start to its last answer)",
            t.ok as f64 / window,
            t.ok,
            window
        ),
    );
    report.count("requests", measured_requests);
    report.count("completed", t.ok);
    report.add(
        "errors",
        json!(t.errors),
        format!("{errors} (non-2xx or transport) {:?}", t.errors),
    );
    report.count("unfinished", unfinished as u64);
    report.latency("latency", &t.latency);
    report.latency("service_time", &t.service_time);
    report.latency("send_lag", &t.send_lag);
    report.add(
        "late_starts",
        t.late_starts,
        format!(
            "{} of {} requests started over {} ms after their due time ({} waited for a free \
             connection{})",
            t.late_starts,
            measured_requests,
            LATE.as_millis(),
            t.waited_for_connection,
            if t.late_starts > measured_requests / 10 && t.waited_for_connection == 0 {
                "; over 10% late: the load generator could not keep to this rate"
            } else {
                ""
            }
        ),
    );
    report.count("waited_for_connection", t.waited_for_connection);
    let mean_body = t.bytes.checked_div(t.ok).unwrap_or(0);
    report.add("mean_body_bytes", mean_body, format!("{mean_body} bytes"));
    if let (Some(before), Some(after)) = (before, after) {
        report.server_cost(
            "server",
            (before, after),
            window,
            ("server_cpu_us_per_request", "answered request", answered),
        );
    }
    Ok(report)
}

/// The full URLs to request, in round-robin order.
fn request_urls(base: &str, args: &HttpArgs) -> anyhow::Result<Vec<String>> {
    let mut paths = args.path.clone();
    if let Some(file) = &args.paths {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("--paths {}", file.display()))?;
        paths.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    anyhow::ensure!(
        !paths.is_empty(),
        "give at least one --path or a --paths file"
    );
    paths
        .into_iter()
        .map(|p| {
            anyhow::ensure!(p.starts_with('/'), "path {p:?}: must start with /");
            Ok(format!("{base}{p}"))
        })
        .collect()
}

/// A short name for a transport failure, to count failures by kind.
fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "body".into()
    } else {
        "transport".into()
    }
}
