//! The `ingest` scenario: couriers online, each sending location frames back to back (one in
//! flight: the next goes when the previous is acked), `--batch` points a frame.
//!
//! The server closes a courier session that sends more than 20 frames/s (burst 40) with 1008
//! `rate_limited`, so each courier is paced to `--max-frames-per-sec` (19 by default); the
//! report says how often pacing, not the server, held a courier back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::accounts::demo_users;
use super::live::{Motion, last_position};
use super::report::{Report, latency_histogram, merge, record_us};
use super::socket::{self, Incoming, Ws};
use super::{Target, check_duration, probe};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::UserId;
use hexmarket::seed::DEMO_CENTER;

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[arg(long, default_value_t = 200)]
    pub couriers: usize,
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Points per location frame (1 to 50).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Pace each courier to at most this many frames per second (0: no pacing; the server's
    /// limit is 20/s).
    #[arg(long, default_value_t = 19.0)]
    pub max_frames_per_sec: f64,
}

struct Totals {
    frames_acked: u64,
    points_accepted: u64,
    points_dropped: u64,
    paced_waits: u64,
    ack_latency: Histogram<u64>,
    lost: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Totals {
    fn new() -> Self {
        Totals {
            frames_acked: 0,
            points_accepted: 0,
            points_dropped: 0,
            paced_waits: 0,
            ack_latency: latency_histogram(),
            lost: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, other: &Totals) {
        self.frames_acked += other.frames_acked;
        self.points_accepted += other.points_accepted;
        self.points_dropped += other.points_dropped;
        self.paced_waits += other.paced_waits;
        merge(&mut self.ack_latency, &other.ack_latency);
        for (k, v) in &other.lost {
            *self.lost.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

pub async fn run(target: &Target, args: &IngestArgs) -> anyhow::Result<Report> {
    let duration = check_duration("--duration-secs", args.duration_secs)?;
    anyhow::ensure!((1..=50).contains(&args.batch), "--batch: must be 1 to 50");
    anyhow::ensure!(
        (1..=100_000).contains(&args.couriers),
        "--couriers: must be 1 to 100000"
    );
    anyhow::ensure!(
        args.max_frames_per_sec >= 0.0 && args.max_frames_per_sec.is_finite(),
        "--max-frames-per-sec: must be 0 or more"
    );
    target.api.wait_healthy(Duration::from_secs(10)).await?;
    let couriers = demo_users(&target.api, &target.minter, Role::Courier, args.couriers).await?;

    // Connect everyone first, then start together.
    let handshakes = Arc::new(Semaphore::new(64));
    let shared = Arc::new(target.clone());
    let connects: Vec<_> = couriers
        .iter()
        .map(|user| {
            let target = Arc::clone(&shared);
            let handshakes = Arc::clone(&handshakes);
            let user = *user;
            tokio::spawn(async move {
                let _permit = handshakes.acquire().await?;
                online(&target, user).await
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(couriers.len());
    let mut connect_failures: BTreeMap<String, u64> = BTreeMap::new();
    for task in connects {
        match task.await {
            Ok(Ok(socket)) => sockets.push(socket),
            Ok(Err(e)) => {
                let text = format!("{e:#}");
                if text.contains("EMFILE") {
                    anyhow::bail!("{text}");
                }
                if connect_failures.is_empty() {
                    eprintln!("loadgen ingest: a courier failed to come online: {text}");
                }
                *connect_failures
                    .entry(text.chars().take(80).collect())
                    .or_default() += 1;
            }
            Err(e) => *connect_failures.entry(e.to_string()).or_default() += 1,
        }
    }
    anyhow::ensure!(!sockets.is_empty(), "no courier came online");

    let before = target.probe_sample();
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + duration;
    let pace = (args.max_frames_per_sec > 0.0)
        .then(|| Duration::from_secs_f64(1.0 / args.max_frames_per_sec));
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|(ws, motion)| tokio::spawn(stream(ws, motion, args.batch, pace, start, end)))
        .collect();
    tokio::time::sleep_until(end).await;
    let after = target.probe_sample();
    let mut totals = Totals::new();
    let mut unfinished = 0u64;
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(t)) => totals.absorb(&t),
            _ => unfinished += 1,
        }
    }

    let seconds = duration.as_secs_f64();
    let mut report = Report::new("ingest");
    report.count(
        "couriers_online",
        couriers.len() as u64 - connect_failures.values().sum::<u64>(),
    );
    report.add(
        "connect_failures",
        json!(connect_failures),
        format!("{connect_failures:?}"),
    );
    report.add(
        "batch",
        args.batch as u64,
        format!(
            "{} point(s) per frame, one frame in flight per courier",
            args.batch
        ),
    );
    report.add(
        "acked_points_per_s",
        totals.points_accepted as f64 / seconds,
        format!(
            "{:.0} points/s accepted ({} frames acked, {:.0} frames/s; {} points dropped by cleaning)",
            totals.points_accepted as f64 / seconds,
            totals.frames_acked,
            totals.frames_acked as f64 / seconds,
            totals.points_dropped
        ),
    );
    report.count("points_accepted", totals.points_accepted);
    report.count("points_dropped", totals.points_dropped);
    report.latency("ack_latency", &totals.ack_latency);
    report.add(
        "paced_waits",
        totals.paced_waits,
        format!(
            "{} of {} frames waited for the client-side pace of {} frames/s",
            totals.paced_waits, totals.frames_acked, args.max_frames_per_sec
        ),
    );
    report.add(
        "couriers_lost",
        json!(totals.lost),
        format!("{:?}", totals.lost),
    );
    report.add(
        "error_frames",
        json!(totals.errors),
        format!("{:?}", totals.errors),
    );
    report.count("tasks_unfinished", unfinished);
    if let (Some(before), Some(after)) = (before, after) {
        report.add(
            "server",
            probe::delta_json(before, after, seconds),
            probe::delta_human(before, after, seconds),
        );
    }
    Ok(report)
}

/// Connects a courier and brings it online; also gives where it should start from.
async fn online(target: &Target, user: UserId) -> anyhow::Result<(Ws, Motion)> {
    let token = target.minter.mint(user, Role::Courier)?;
    let motion = match last_position(target, &token).await {
        Some((lat, lng)) => Motion::new(lat, lng),
        None => Motion::around(DEMO_CENTER, 6_000.0),
    };
    let mut ws = socket::connect(&format!("{}/ws/courier", target.ws_base), &token).await?;
    socket::send(&mut ws, &json!({"type": "go_online"})).await?;
    socket::expect(&mut ws, Duration::from_secs(30), "the go_online ack", |f| {
        f["type"] == "ack" && f["of"] == "go_online"
    })
    .await?;
    Ok((ws, motion))
}

/// Sends frames back to back until `end`, each after the previous one's ack.
async fn stream(
    mut ws: Ws,
    mut motion: Motion,
    batch: usize,
    pace: Option<Duration>,
    start: Instant,
    end: Instant,
) -> Totals {
    let mut totals = Totals::new();
    tokio::time::sleep_until(start).await;
    let mut next_send = start;
    while Instant::now() < end {
        if let Some(pace) = pace {
            if Instant::now() < next_send {
                totals.paced_waits += 1;
                tokio::time::sleep_until(next_send).await;
            }
            next_send = Instant::now().max(next_send) + pace;
        }
        let frame = location_frame(&mut motion, batch);
        let sent = Instant::now();
        if let Err(e) = socket::send(&mut ws, &frame).await {
            totals.lost.insert(format!("{e:#}"), 1);
            return totals;
        }
        // Wait for this frame's ack, skipping offers and other frames.
        loop {
            let remaining =
                (end + Duration::from_secs(10)).saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, socket::next(&mut ws)).await {
                Err(_) => {
                    totals.lost.insert("no ack".into(), 1);
                    return totals;
                }
                Ok(Incoming::Frame(f)) if f["type"] == "ack" && f["of"] == "location" => {
                    totals.frames_acked += 1;
                    totals.points_accepted += f["accepted"].as_u64().unwrap_or(0);
                    totals.points_dropped += f["dropped"].as_u64().unwrap_or(0);
                    record_us(&mut totals.ack_latency, sent.elapsed().as_micros() as i64);
                    break;
                }
                Ok(Incoming::Frame(f)) if f["type"] == "error" => {
                    let code = f["code"].as_str().unwrap_or("?").to_owned();
                    *totals.errors.entry(code).or_default() += 1;
                    // An error answers the frame: it was refused whole.
                    break;
                }
                Ok(Incoming::Frame(_)) | Ok(Incoming::Other) => {}
                Ok(Incoming::Closed(close)) => {
                    let reason = match close {
                        Some((code, reason)) => format!("closed {code} {reason}"),
                        None => "connection lost".into(),
                    };
                    totals.lost.insert(reason, 1);
                    return totals;
                }
            }
        }
    }
    socket::close(ws).await;
    totals
}

/// A location frame of `batch` points recorded up to now, a millisecond apart (the node reads
/// time between points in whole milliseconds: closer points would look infinitely fast).
fn location_frame(motion: &mut Motion, batch: usize) -> Value {
    if batch == 1 {
        return json!({"type": "location", "point": motion.advance(Utc::now())});
    }
    let now = Utc::now();
    let points: Vec<Value> = (0..batch)
        .map(|k| {
            let back = (batch - 1 - k) as i64;
            motion.advance(now - chrono::Duration::milliseconds(back))
        })
        .collect();
    json!({"type": "location", "points": points})
}
