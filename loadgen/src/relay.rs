//! The `relay` scenario: `loadgen live`'s load shape against a zero-logic WebSocket relay
//! (`bench/peers/relay/relay.js`), so that hexmarket's figures have a floor to be read against.
//!
//! One channel per fake order id, with one publisher on `/pub/{channel}` and one subscriber on
//! `/sub/{channel}` (more subscribers than publishers share the channels round-robin). Every
//! subscriber connects before any publisher, because a relay keeps nothing for late joiners.
//! Measure: every publisher sends a location frame shaped like hexmarket's courier → watcher
//! frame at `--rate-hz`, staggered over the period as `live` staggers its couriers; every
//! subscriber records receive time − `recorded_at`. The derived figures — delivered frames per
//! server CPU-second and server memory per socket — are what the comparison is about.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::live::{LATE_TICK, Motion, SPEED_MPS, lag_probe};
use super::report::{Report, Window, latency_histogram, merge, record_us};
use super::socket::{self, ConnectError, Incoming, Ws};
use super::{check_duration, probe};
use hexmarket::seed::DEMO_CENTER;

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Publishers, one per channel, each on its own socket.
    #[arg(long, default_value_t = 5_000)]
    pub publishers: usize,
    /// Subscribers, each on its own socket, spread over the channels round-robin.
    #[arg(long, default_value_t = 5_000)]
    pub subscribers: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Frames per second per publisher (0.1 to 20, the range `live` allows its couriers).
    #[arg(long, default_value_t = 1.0)]
    pub rate_hz: f64,
    /// Handshakes in flight while connecting.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
}

/// Time after the window for frames still in flight.
const GRACE: Duration = Duration::from_secs(3);
/// Sent as the bearer token: the relay reads no header, but the loadgen's connect (shared with
/// the hexmarket scenarios) always sends one.
const NO_TOKEN: &str = "relay";

/// What the whole run is doing; every socket task follows it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Setup,
    Measure(Window),
    Stop,
}

/// What a publisher counted.
struct PublisherStats {
    channel: usize,
    sent: u64,
    /// Frames stamped inside the measured window: what its subscribers should count.
    sent_in_window: u64,
    tick_lateness: Histogram<u64>,
    late_ticks: u64,
    skipped_ticks: u64,
    lost: Option<String>,
}

/// What subscriber tasks counted (one task's, or the sum over all of them).
struct SubscriberStats {
    /// Frames whose `recorded_at` falls in the measured window.
    frames_in_window: u64,
    frames_total: u64,
    latency: Histogram<u64>,
    lost: BTreeMap<String, u64>,
}

impl SubscriberStats {
    fn new() -> Self {
        SubscriberStats {
            frames_in_window: 0,
            frames_total: 0,
            latency: latency_histogram(),
            lost: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, other: &SubscriberStats) {
        self.frames_in_window += other.frames_in_window;
        self.frames_total += other.frames_total;
        merge(&mut self.latency, &other.latency);
        for (reason, n) in &other.lost {
            *self.lost.entry(reason.clone()).or_default() += n;
        }
    }
}

/// Drives the relay at `url` (`ws://host:port`, or `http://`, taken as `ws://`).
pub async fn run(url: &str, server_pid: Option<u32>, args: &RelayArgs) -> anyhow::Result<Report> {
    let duration = check_duration("--duration-secs", args.duration_secs)?;
    anyhow::ensure!(
        (0.1..=20.0).contains(&args.rate_hz),
        "--rate-hz: must be 0.1 to 20 (as for live)"
    );
    anyhow::ensure!(
        (1..=100_000).contains(&args.publishers) && (1..=100_000).contains(&args.subscribers),
        "--publishers and --subscribers: must be 1 to 100000"
    );
    let base = ws_base(url)?;
    let probe = server_pid.map(probe::Probe::new);
    let sample = || {
        let probe = probe.as_ref()?;
        probe.sample().map_err(|e| eprintln!("loadgen: {e:#}")).ok()
    };
    let channels: Vec<String> = (0..args.publishers)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let before_connect = sample();

    // Subscribers first: a frame published before its subscriber joined is gone.
    let connect_started = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let handshakes = Arc::new(Semaphore::new(args.connect_concurrency.clamp(1, 1024)));
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let subscribing = (0..args.subscribers).map(|j| {
        let url = format!("{base}/sub/{}", channels[j % channels.len()]);
        open(url, Arc::clone(&handshakes))
    });
    let mut subscriber_tasks = Vec::with_capacity(args.subscribers);
    // Which channel each open subscriber listens on, to count what it should get.
    let mut subscribed: Vec<usize> = Vec::with_capacity(args.subscribers);
    for (j, opened) in futures_util::future::join_all(subscribing)
        .await
        .into_iter()
        .enumerate()
    {
        match opened {
            Ok(ws) => {
                subscribed.push(j % channels.len());
                subscriber_tasks.push(tokio::spawn(subscribe(ws, phase_rx.clone())));
            }
            Err(e) => note_failure(&mut failures, &e),
        }
    }
    let publishing = channels
        .iter()
        .map(|channel| open(format!("{base}/pub/{channel}"), Arc::clone(&handshakes)));
    let mut publisher_sockets = Vec::with_capacity(args.publishers);
    for (i, opened) in futures_util::future::join_all(publishing)
        .await
        .into_iter()
        .enumerate()
    {
        match opened {
            Ok(ws) => publisher_sockets.push((i, ws)),
            Err(e) => note_failure(&mut failures, &e),
        }
    }
    let connect_took = connect_started.elapsed();
    let sockets = subscriber_tasks.len() + publisher_sockets.len();
    eprintln!(
        "loadgen relay: {} subscribers and {} publishers connected in {:.1} s ({} failed); measuring for {} s",
        subscriber_tasks.len(),
        publisher_sockets.len(),
        connect_took.as_secs_f64(),
        failures.values().sum::<u64>(),
        duration.as_secs()
    );
    if failures.keys().any(|reason| reason.starts_with("EMFILE")) {
        let _ = phase_tx.send(Phase::Stop);
        anyhow::bail!(
            "out of file descriptors (EMFILE) after {sockets} sockets: raise the limit \
             (`ulimit -n 65536`) and retry"
        );
    }
    anyhow::ensure!(
        !publisher_sockets.is_empty() && !subscriber_tasks.is_empty(),
        "no publisher or no subscriber could connect to {base}: {failures:?}"
    );
    let publisher_count = publisher_sockets.len();
    let period = Duration::from_secs_f64(1.0 / args.rate_hz);
    let publisher_tasks: Vec<_> = publisher_sockets
        .into_iter()
        .map(|(i, ws)| {
            let publisher = Publisher {
                channel: i,
                // Where `live`'s couriers ride: around its default `--near`.
                motion: Motion::around(DEMO_CENTER, 5_000.0),
                period,
                stagger: i as f64 / args.publishers as f64,
                phase: phase_rx.clone(),
            };
            tokio::spawn(publisher.run(ws))
        })
        .collect();
    // Let the handshakes' garbage settle before reading what the sockets hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = sample();

    // Measure.
    let before = sample();
    let window = Window::opening_soon(duration)?;
    let _ = phase_tx.send(Phase::Measure(window));
    let lag = tokio::spawn(lag_probe(window.start, window.end));
    tokio::time::sleep_until(window.end).await;
    let after = sample();
    tokio::time::sleep(GRACE).await;
    let _ = phase_tx.send(Phase::Stop);

    let mut unfinished = 0u64;
    let mut sent_per_channel = vec![0u64; channels.len()];
    let mut sent = 0u64;
    let mut tick_lateness = latency_histogram();
    let (mut late_ticks, mut skipped_ticks) = (0u64, 0u64);
    let mut publishers_lost: BTreeMap<String, u64> = BTreeMap::new();
    for task in publisher_tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(stats)) => {
                sent_per_channel[stats.channel] += stats.sent_in_window;
                sent += stats.sent;
                merge(&mut tick_lateness, &stats.tick_lateness);
                late_ticks += stats.late_ticks;
                skipped_ticks += stats.skipped_ticks;
                if let Some(reason) = stats.lost {
                    *publishers_lost.entry(reason).or_default() += 1;
                }
            }
            _ => unfinished += 1,
        }
    }
    let mut subscribers_total = SubscriberStats::new();
    for task in subscriber_tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(stats)) => subscribers_total.absorb(&stats),
            _ => unfinished += 1,
        }
    }
    let (lag, late_probes) = lag.await.unwrap_or_else(|_| (latency_histogram(), 0));

    let seconds = duration.as_secs_f64();
    // Every subscriber should get every frame its channel's publisher sent in the window.
    let expected: u64 = subscribed.iter().map(|&c| sent_per_channel[c]).sum();
    let delivered = subscribers_total.frames_in_window;
    let mut report = Report::new("relay");
    report.add(
        "relay_url",
        base.as_str(),
        format!("{base}/pub|sub/{{channel}}"),
    );
    report.count("publishers_connected", publisher_count as u64);
    report.count("subscribers_connected", subscribed.len() as u64);
    report.add("connect_failures", json!(failures), format!("{failures:?}"));
    report.add(
        "connect_s",
        connect_took.as_secs_f64(),
        format!("{:.2} s to open them all", connect_took.as_secs_f64()),
    );
    report.add(
        "duration_s",
        seconds,
        format!("{seconds} s at {} Hz per publisher", args.rate_hz),
    );
    report.count("frames_sent", sent);
    report.add(
        "frames_delivered",
        delivered,
        format!(
            "{delivered} of {expected} expected ({:.2}%; {:.1} per subscriber)",
            percent(delivered, expected),
            delivered as f64 / subscribed.len().max(1) as f64
        ),
    );
    report.count("frames_expected", expected);
    report.count("frames_total", subscribers_total.frames_total);
    report.latency("publish_to_subscriber_latency", &subscribers_total.latency);
    report.add(
        "subscribers_lost",
        json!(subscribers_total.lost),
        format!("{:?}", subscribers_total.lost),
    );
    report.add(
        "publishers_lost",
        json!(publishers_lost),
        format!("{publishers_lost:?}"),
    );
    report.add(
        "loadgen_late_ticks",
        json!({"late": late_ticks, "skipped": skipped_ticks,
               "late_threshold_ms": LATE_TICK.as_millis() as u64}),
        format!(
            "{late_ticks} ticks later than {} ms, {skipped_ticks} skipped (tick lateness p99 {:.2} ms)",
            LATE_TICK.as_millis(),
            tick_lateness.value_at_quantile(0.99) as f64 / 1_000.0
        ),
    );
    report.add(
        "loadgen_scheduler_lag",
        json!({"p99_us": lag.value_at_quantile(0.99), "max_us": lag.max(), "late_probes": late_probes}),
        format!(
            "p99 {:.2} ms, max {:.2} ms ({late_probes} of {} probes > {} ms)",
            lag.value_at_quantile(0.99) as f64 / 1_000.0,
            lag.max() as f64 / 1_000.0,
            lag.len(),
            LATE_TICK.as_millis()
        ),
    );
    report.count("tasks_unfinished", unfinished);
    if let (Some(before), Some(after)) = (before, after) {
        report.add(
            "server",
            probe::delta_json(before, after, seconds),
            probe::delta_human(before, after, seconds),
        );
        let cpu_s = after.cpu_s - before.cpu_s;
        let per_cpu_s = if cpu_s > 0.0 {
            delivered as f64 / cpu_s
        } else {
            0.0
        };
        report.add(
            "delivered_frames_per_server_cpu_s",
            per_cpu_s,
            format!("{per_cpu_s:.0} frames per CPU second ({delivered} in {cpu_s:.2} CPU s)"),
        );
    }
    if let (Some(empty), Some(connected)) = (before_connect, connected) {
        let per = (connected.rss_kib as f64 - empty.rss_kib as f64) / sockets.max(1) as f64;
        report.add(
            "server_rss_kib",
            json!({"before_connect": empty.rss_kib, "connected": connected.rss_kib}),
            format!(
                "{} → {} KiB (before connecting, all {sockets} sockets connected)",
                empty.rss_kib, connected.rss_kib
            ),
        );
        report.add(
            "rss_per_connection_kib",
            per,
            format!("{per:.1} KiB per socket ({sockets} sockets)"),
        );
    }
    Ok(report)
}

/// The relay's base as a WebSocket URL, without a trailing slash.
fn ws_base(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    if url.starts_with("ws://") {
        Ok(url.to_owned())
    } else if let Some(rest) = url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else {
        anyhow::bail!("--url: the relay is reached with ws:// (or http://), not {url}")
    }
}

async fn open(url: String, handshakes: Arc<Semaphore>) -> anyhow::Result<Ws> {
    let _permit = handshakes.acquire().await?;
    Ok(socket::connect(&url, NO_TOKEN).await?)
}

fn note_failure(failures: &mut BTreeMap<String, u64>, e: &anyhow::Error) {
    let reason = match e.downcast_ref::<ConnectError>() {
        Some(ConnectError::TooManyOpenFiles(_)) => "EMFILE".to_owned(),
        Some(ConnectError::Refused { status, .. }) => format!("HTTP {status}"),
        _ => format!("{e:#}").chars().take(80).collect(),
    };
    *failures.entry(reason).or_default() += 1;
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// One channel's publisher: a fake courier moving at [`SPEED_MPS`].
struct Publisher {
    channel: usize,
    motion: Motion,
    period: Duration,
    /// Where in the period this publisher's ticks fall (0..1), so frames spread evenly.
    stagger: f64,
    phase: watch::Receiver<Phase>,
}

impl Publisher {
    async fn run(mut self, mut ws: Ws) -> PublisherStats {
        let mut stats = PublisherStats {
            channel: self.channel,
            sent: 0,
            sent_in_window: 0,
            tick_lateness: latency_histogram(),
            late_ticks: 0,
            skipped_ticks: 0,
            lost: None,
        };
        let mut ticker: Option<(tokio::time::Interval, Instant)> = None;
        let mut last_tick: Option<Instant> = None;
        // Whether the measured window's ticks have been started (and maybe finished).
        let mut measured = false;
        // Seconds to the drop-off, counting down as hexmarket's ETA does while on the way.
        let mut eta_s: u32 = 900;
        loop {
            let phase = *self.phase.borrow();
            match phase {
                Phase::Stop => break,
                Phase::Measure(window) if !measured => {
                    measured = true;
                    // 1 ms in, so that no frame is stamped before the window's wall-clock start.
                    let first =
                        window.start + Duration::from_millis(1) + self.period.mul_f64(self.stagger);
                    let mut interval = tokio::time::interval_at(first, self.period);
                    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    ticker = Some((interval, window.end));
                }
                _ => {}
            }
            let tick = async {
                match ticker.as_mut() {
                    Some((interval, end)) if Instant::now() < *end => interval.tick().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                scheduled = tick => {
                    if let Some((_, end)) = &ticker && scheduled >= *end {
                        ticker = None;
                        continue;
                    }
                    let late = Instant::now().saturating_duration_since(scheduled);
                    record_us(&mut stats.tick_lateness, late.as_micros() as i64);
                    if late > LATE_TICK {
                        stats.late_ticks += 1;
                    }
                    if let Some(previous) = last_tick {
                        let gap = scheduled.saturating_duration_since(previous).as_secs_f64();
                        let missed = (gap / self.period.as_secs_f64()).round() as u64;
                        stats.skipped_ticks += missed.saturating_sub(1);
                    }
                    last_tick = Some(scheduled);
                    eta_s = eta_s.saturating_sub(1).max(60);
                    let now = Utc::now();
                    let frame = location_frame(&mut self.motion, now, eta_s);
                    if let Err(e) = socket::send(&mut ws, &frame).await {
                        stats.lost = Some(format!("{e:#}").chars().take(80).collect());
                        return stats;
                    }
                    stats.sent += 1;
                    // Subscribers count by `recorded_at`; a tick due just before the end that
                    // fires late is stamped after it, and is expected by no one.
                    if let Phase::Measure(window) = phase
                        && now >= window.start_wall
                        && now < window.end_wall
                    {
                        stats.sent_in_window += 1;
                    }
                }
                // The relay sends publishers nothing; reading answers pings and sees a close.
                incoming = socket::next(&mut ws) => {
                    if let Incoming::Closed(close) = incoming {
                        stats.lost = Some(lost_reason(close));
                        return stats;
                    }
                }
            }
        }
        socket::close(ws).await;
        stats
    }
}

/// The frame hexmarket sends a watcher for a courier's position (`LocationFrame` plus its
/// `type`), with `recorded_at` = now to the microsecond, as `live`'s couriers stamp it.
fn location_frame(motion: &mut Motion, now: DateTime<Utc>, eta_s: u32) -> Value {
    let point = motion.advance(now);
    json!({
        "type": "location",
        "lat": point["lat"],
        "lng": point["lng"],
        "heading_deg": point["heading_deg"],
        "speed_mps": SPEED_MPS,
        "recorded_at": point["recorded_at"],
        "eta_s": eta_s,
    })
}

fn lost_reason(close: Option<(u16, String)>) -> String {
    match close {
        Some((code, reason)) => format!("closed {code} {reason}"),
        None => "connection lost".into(),
    }
}

/// Reads frames until the run stops; frames recorded in the window give latency samples.
async fn subscribe(mut ws: Ws, mut phase: watch::Receiver<Phase>) -> SubscriberStats {
    let mut stats = SubscriberStats::new();
    loop {
        let current = *phase.borrow();
        if matches!(current, Phase::Stop) {
            break;
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            incoming = socket::next(&mut ws) => {
                let received = Utc::now();
                match incoming {
                    // The phase as it is now: a frame can win the race with the phase change
                    // that announced its window.
                    Incoming::Frame(frame) => on_frame(&frame, received, *phase.borrow(), &mut stats),
                    Incoming::Other => {}
                    Incoming::Closed(close) => {
                        stats.lost.insert(lost_reason(close), 1);
                        return stats;
                    }
                }
            }
        }
    }
    socket::close(ws).await;
    stats
}

fn on_frame(frame: &Value, received: DateTime<Utc>, phase: Phase, stats: &mut SubscriberStats) {
    if frame["type"] != "location" {
        return;
    }
    stats.frames_total += 1;
    let window = match phase {
        Phase::Measure(window) => Some((window.start_wall, window.end_wall)),
        _ => None,
    };
    if let Some(us) = super::report::delay_in_window(frame, received, window) {
        stats.frames_in_window += 1;
        record_us(&mut stats.latency, us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_has_the_fields_of_hexmarkets_location_frame() {
        let mut motion = Motion::new(DEMO_CENTER.lat, DEMO_CENTER.lng);
        let frame = location_frame(&mut motion, Utc::now(), 600);
        let mut keys: Vec<&str> = frame
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "eta_s",
                "heading_deg",
                "lat",
                "lng",
                "recorded_at",
                "speed_mps",
                "type"
            ]
        );
        let recorded_at = frame["recorded_at"].as_str().expect("a string");
        // Microseconds: "…:SS.ffffffZ".
        assert_eq!(recorded_at.rsplit('.').next().map(str::len), Some(7));
    }

    #[test]
    fn the_relay_url_may_be_given_as_ws_or_http() {
        assert_eq!(
            ws_base("ws://127.0.0.1:18390/").expect("ws"),
            "ws://127.0.0.1:18390"
        );
        assert_eq!(
            ws_base("http://127.0.0.1:18390").expect("http"),
            "ws://127.0.0.1:18390"
        );
        assert!(ws_base("https://example.org").is_err());
    }
}
