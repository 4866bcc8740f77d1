//! The `live` scenario: couriers on assigned orders stream positions, each order's customer
//! watches it on `/ws/orders/{id}`.
//!
//! Setup: every courier connects, goes online and reports one position next to a store;
//! one order per watcher is placed through the REST API (cart, checkout, simulated payment,
//! vendor accept), which starts dispatch; couriers accept every offer. Measure: every courier
//! sends a position at `--rate-hz`, every watcher records receive time − `recorded_at` of the
//! location frames it gets. Everything is torn down at the end of the measured window.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::accounts::{demo_users, demo_uuid, encode};
use super::api::refused_code;
use super::report::{Report, Window, latency_histogram, merge, record_us};
use super::socket::{self, ConnectError, Incoming, Ws};
use super::{Target, check_duration, probe};
use hexmarket::domain::geo::{GeoPoint, disc_point, flat_offset};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::UserId;
use hexmarket::seed::DEMO_CENTER;

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Couriers online, each on its own socket.
    #[arg(long, default_value_t = 5_000)]
    pub couriers: usize,
    /// Orders placed, each watched by its customer on its own socket.
    #[arg(long, default_value_t = 5_000)]
    pub watchers: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Positions per second per courier (0.1 to 20: the courier rate limit).
    #[arg(long, default_value_t = 1.0)]
    pub rate_hz: f64,
    /// Where the stores are looked for (`lat,lng`; default: the demo city's centre).
    #[arg(long, value_parser = GeoPoint::parse_pair)]
    pub near: Option<GeoPoint>,
    #[arg(long, default_value_t = 20.0)]
    pub radius_km: f64,
    /// Requests and handshakes in flight during setup.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,
    /// Longest the setup (connects, orders, dispatch) may take.
    #[arg(long, default_value_t = 300)]
    pub setup_timeout_secs: u64,
}

/// `--near` as the API takes it: `lat,lng`.
fn near_pair(args: &LiveArgs) -> String {
    let near = args.near.unwrap_or(DEMO_CENTER);
    format!("{},{}", near.lat, near.lng)
}

/// Courier speed while moving: well under the server's 70 m/s plausibility limit.
pub(super) const SPEED_MPS: f64 = 6.0;
/// Reported GPS accuracy, in metres.
pub(super) const ACCURACY_M: f64 = 10.0;
/// A tick this late counts as late (the load generator falling behind).
pub(super) const LATE_TICK: Duration = Duration::from_millis(20);
/// How long the setup waits for the next assignment before measuring with what it has.
const DISPATCH_STALL: Duration = Duration::from_secs(45);
/// Time after the window for frames and acks still in flight.
const GRACE: Duration = Duration::from_secs(3);

/// What the whole run is doing; every socket task follows it.
#[derive(Debug, Clone)]
enum Phase {
    Setup,
    Measure(Window),
    /// Couriers pick up and deliver their orders (handoff code by order id), so that the
    /// seeded couriers are free for the next run.
    Finish(Arc<HashMap<String, String>>),
    Stop,
}

/// A store orders are placed at.
#[derive(Debug, Clone)]
struct Store {
    id: String,
    owner: UserId,
    lat: f64,
    lng: f64,
    /// In-stock products and the units the run may still take of each.
    products: Vec<(String, u32)>,
}

/// A moving courier: position and direction.
#[derive(Debug, Clone, Copy)]
pub(super) struct Motion {
    pub lat: f64,
    pub lng: f64,
    pub bearing_deg: f64,
    last_at: Option<DateTime<Utc>>,
}

impl Motion {
    pub fn new(lat: f64, lng: f64) -> Self {
        Motion {
            lat,
            lng,
            bearing_deg: rand::random::<f64>() * 360.0,
            last_at: None,
        }
    }

    /// A random point within `radius_m` of `center`.
    pub fn around(center: GeoPoint, radius_m: f64) -> Self {
        let (lat, lng) = disc_point(center, radius_m, rand::random(), rand::random());
        Motion::new(lat, lng)
    }

    /// The next point, recorded at `now`: moved at [`SPEED_MPS`] for the time since the
    /// previous one, turning a little, at least a millisecond after it (the node measures the
    /// time between points in whole milliseconds).
    pub fn advance(&mut self, now: DateTime<Utc>) -> Value {
        let at = match self.last_at {
            Some(last) if now < last + chrono::Duration::milliseconds(1) => {
                last + chrono::Duration::milliseconds(1)
            }
            _ => now,
        };
        if let Some(last) = self.last_at {
            let dt = (at - last).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            self.bearing_deg =
                (self.bearing_deg + (rand::random::<f64>() - 0.5) * 20.0).rem_euclid(360.0);
            let (dlat, dlng) = flat_offset(self.lat, SPEED_MPS * dt.min(5.0), self.bearing_deg);
            self.lat += dlat;
            self.lng += dlng;
        }
        self.last_at = Some(at);
        json!({
            "lat": self.lat,
            "lng": self.lng,
            "accuracy_m": ACCURACY_M,
            "heading_deg": self.bearing_deg,
            "speed_mps": SPEED_MPS,
            "recorded_at": at.to_rfc3339_opts(SecondsFormat::Micros, true),
        })
    }
}

/// The courier's last accepted position (`GET /couriers/me`), if the node knows one. The node
/// judges every new point against it (implied speed ≤ 70 m/s), so a courier must resume from
/// there: a jump to elsewhere would be dropped, and every point after it with it.
pub(super) async fn last_position(target: &Target, token: &str) -> Option<(f64, f64)> {
    let me = target
        .api
        .get("/api/v1/couriers/me", Some(token))
        .await
        .ok()?;
    Some((
        me["position"]["lat"].as_f64()?,
        me["position"]["lng"].as_f64()?,
    ))
}

/// What a courier task tells the coordinator during setup.
enum CourierNews {
    Ready,
    Failed(String),
    Assigned { order_id: String, at: Instant },
}

/// What courier tasks counted (one task's, or the sum over all of them).
struct CourierStats {
    pings_sent: u64,
    pings_acked: u64,
    points_dropped: u64,
    ack_latency: Histogram<u64>,
    tick_lateness: Histogram<u64>,
    late_ticks: u64,
    skipped_ticks: u64,
    reconnects: u64,
    /// Why sockets ended before the run did.
    lost: BTreeMap<String, u64>,
    /// Error frames by code.
    errors: BTreeMap<String, u64>,
    offers: u64,
    /// Assignment frames received, and the distinct orders they named.
    assignment_frames: u64,
    assigned: HashSet<String>,
    /// Orders picked up and delivered at the end of the run, and why others were not.
    delivered: u64,
    delivery_failures: BTreeMap<String, u64>,
}

impl CourierStats {
    fn new() -> Self {
        CourierStats {
            pings_sent: 0,
            pings_acked: 0,
            points_dropped: 0,
            ack_latency: latency_histogram(),
            tick_lateness: latency_histogram(),
            late_ticks: 0,
            skipped_ticks: 0,
            reconnects: 0,
            lost: BTreeMap::new(),
            errors: BTreeMap::new(),
            offers: 0,
            assignment_frames: 0,
            assigned: HashSet::new(),
            delivered: 0,
            delivery_failures: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, other: &CourierStats) {
        self.pings_sent += other.pings_sent;
        self.pings_acked += other.pings_acked;
        self.points_dropped += other.points_dropped;
        merge(&mut self.ack_latency, &other.ack_latency);
        merge(&mut self.tick_lateness, &other.tick_lateness);
        self.late_ticks += other.late_ticks;
        self.skipped_ticks += other.skipped_ticks;
        self.reconnects += other.reconnects;
        add_counts(&mut self.lost, &other.lost);
        add_counts(&mut self.errors, &other.errors);
        self.offers += other.offers;
        self.assignment_frames += other.assignment_frames;
        self.assigned.extend(other.assigned.iter().cloned());
        self.delivered += other.delivered;
        add_counts(&mut self.delivery_failures, &other.delivery_failures);
    }
}

/// What watcher tasks counted (one task's, or the sum over all of them).
struct WatcherStats {
    /// Location frames whose `recorded_at` falls in the measured window.
    frames_in_window: u64,
    frames_total: u64,
    events: u64,
    snapshots: u64,
    latency: Histogram<u64>,
    reconnects: u64,
    lost: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl WatcherStats {
    fn new() -> Self {
        WatcherStats {
            frames_in_window: 0,
            frames_total: 0,
            events: 0,
            snapshots: 0,
            latency: latency_histogram(),
            reconnects: 0,
            lost: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, other: &WatcherStats) {
        self.frames_in_window += other.frames_in_window;
        self.frames_total += other.frames_total;
        self.events += other.events;
        self.snapshots += other.snapshots;
        merge(&mut self.latency, &other.latency);
        self.reconnects += other.reconnects;
        add_counts(&mut self.lost, &other.lost);
        add_counts(&mut self.errors, &other.errors);
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (key, n) in from {
        *into.entry(key.clone()).or_default() += n;
    }
}

/// How a socket's session ended.
enum Ended {
    /// The run is over.
    Done,
    /// Closed with 4001 at the token's expiry: reconnect with a fresh token.
    TokenExpired,
    /// Closed or failed for another reason.
    Lost(String),
}

fn closed(close: Option<(u16, String)>) -> Ended {
    match close {
        Some((4001, _)) => Ended::TokenExpired,
        Some((code, reason)) => Ended::Lost(format!("closed {code} {reason}")),
        None => Ended::Lost("connection lost".into()),
    }
}

pub async fn run(target: &Target, args: &LiveArgs) -> anyhow::Result<Report> {
    let duration = check_duration("--duration-secs", args.duration_secs)?;
    let setup_timeout = check_duration("--setup-timeout-secs", args.setup_timeout_secs)?;
    anyhow::ensure!(
        (0.1..=20.0).contains(&args.rate_hz),
        "--rate-hz: must be 0.1 to 20 (the courier inbound limit is 20 frames/s)"
    );
    anyhow::ensure!(args.couriers >= 1, "--couriers: at least 1");
    anyhow::ensure!(
        args.couriers <= 100_000 && args.watchers <= 100_000,
        "--couriers and --watchers: at most 100000"
    );
    let concurrency = args.setup_concurrency.clamp(1, 1024);
    let api = &target.api;
    api.wait_healthy(Duration::from_secs(10)).await?;
    let setup_started = Instant::now();

    let couriers = demo_users(api, &target.minter, Role::Courier, args.couriers).await?;
    let customers = demo_users(api, &target.minter, Role::Customer, args.watchers).await?;
    let stores = load_stores(target, args, concurrency).await?;
    anyhow::ensure!(
        !stores.is_empty(),
        "no store with products in stock within {} km of {}: run seed-demo",
        args.radius_km,
        near_pair(args)
    );
    // The seed numbers its stores; counting them tells a demo city from another data set.
    let demo_ids: HashSet<String> = (0..stores.len() * 2)
        .map(|n| demo_uuid("vendor", n).to_string())
        .collect();
    let seeded = stores.iter().filter(|s| demo_ids.contains(&s.id)).count();
    eprintln!(
        "loadgen live: {} couriers, {} customers, {} stores with stock ({seeded} seeded by seed-demo)",
        couriers.len(),
        customers.len(),
        stores.len()
    );

    // Couriers: connect, go online, one position next to a store each.
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    // Room for every message the run can produce (one Ready or Failed per courier, one
    // Assigned per order), so a courier never waits on the coordinator and no news is lost.
    let (news_tx, mut news_rx) =
        mpsc::channel::<(usize, CourierNews)>(args.couriers + args.watchers + 1_024);
    let handshakes = Arc::new(Semaphore::new(concurrency));
    let target = Arc::new(target.clone());
    let mut courier_tasks = Vec::with_capacity(couriers.len());
    for (i, courier) in couriers.iter().enumerate() {
        let store = &stores[i % stores.len()];
        let task = CourierTask {
            index: i,
            user: *courier,
            motion: Motion::around(
                GeoPoint {
                    lat: store.lat,
                    lng: store.lng,
                },
                300.0,
            ),
            resume_from: None,
            rate_hz: args.rate_hz,
            stagger: i as f64 / couriers.len() as f64,
            target: Arc::clone(&target),
            phase: phase_rx.clone(),
            news: news_tx.clone(),
            handshakes: Arc::clone(&handshakes),
        };
        courier_tasks.push(tokio::spawn(task.run()));
    }
    drop(news_tx);
    let mut ready = 0usize;
    let mut courier_failures: Vec<String> = Vec::new();
    let mut early_assignments: Vec<(String, Instant)> = Vec::new();
    let deadline = setup_started + setup_timeout;
    while ready + courier_failures.len() < couriers.len() {
        match tokio::time::timeout_at(deadline, news_rx.recv()).await {
            Ok(Some((_, CourierNews::Ready))) => ready += 1,
            Ok(Some((i, CourierNews::Failed(e)))) => {
                if matches!(courier_failures.len(), 0..=4) {
                    eprintln!("loadgen live: courier{i}: {e}");
                }
                if e.contains("EMFILE") {
                    let _ = phase_tx.send(Phase::Stop);
                    anyhow::bail!("{e}");
                }
                courier_failures.push(e);
            }
            Ok(Some((_, CourierNews::Assigned { order_id, at }))) => {
                early_assignments.push((order_id, at))
            }
            Ok(None) | Err(_) => break,
        }
    }
    eprintln!(
        "loadgen live: {ready} couriers online ({} failed) after {:.1} s",
        courier_failures.len(),
        setup_started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(ready > 0, "no courier came online");

    // Orders: one per watcher, each watched by its customer once the vendor accepted it.
    let orders_started = Instant::now();
    let plans = plan_orders(&customers, stores);
    let placed: Vec<anyhow::Result<Placed>> = futures_util::stream::iter(plans)
        .map(|plan| place_order(&target, plan))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut order_failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut accepted_at: HashMap<String, Instant> = HashMap::new();
    // Order id → (customer, vendor owner).
    let mut parties: HashMap<String, (UserId, UserId)> = HashMap::new();
    let mut watcher_tasks = Vec::new();
    for result in placed {
        match result {
            Ok(placed) => {
                accepted_at.insert(placed.order_id.clone(), placed.accepted_at);
                parties.insert(placed.order_id.clone(), (placed.customer, placed.vendor));
                let task = WatcherTask {
                    customer: placed.customer,
                    order_id: placed.order_id,
                    target: Arc::clone(&target),
                    phase: phase_rx.clone(),
                    handshakes: Arc::clone(&handshakes),
                };
                watcher_tasks.push(tokio::spawn(task.run()));
            }
            Err(e) => {
                let key = match refused_code(&e) {
                    Some((status, code)) => format!("{} {code}", status.as_u16()),
                    None => format!("{e:#}").chars().take(120).collect(),
                };
                if order_failures.is_empty() {
                    eprintln!("loadgen live: an order failed: {e:#}");
                }
                *order_failures.entry(key).or_default() += 1;
            }
        }
    }
    let orders_placed = accepted_at.len();
    eprintln!(
        "loadgen live: {orders_placed} orders placed and accepted in {:.1} s ({} failed)",
        orders_started.elapsed().as_secs_f64(),
        order_failures.values().sum::<u64>()
    );

    // Dispatch: wait until every placed order has a courier (or the setup time is up).
    let mut dispatch = latency_histogram();
    let mut assigned: HashMap<String, Instant> = HashMap::new();
    let mut note_assignment =
        |order_id: String, at: Instant, assigned: &mut HashMap<String, Instant>| {
            // Only this run's orders (a courier may carry one from an earlier run).
            if let Some(accepted) = accepted_at.get(&order_id) {
                record_us(
                    &mut dispatch,
                    at.saturating_duration_since(*accepted).as_micros() as i64,
                );
                assigned.insert(order_id, at);
            }
        };
    for (order_id, at) in early_assignments {
        note_assignment(order_id, at, &mut assigned);
    }
    let dispatch_deadline = deadline.max(Instant::now() + Duration::from_secs(30));
    // Dispatch retries a declined or expired offer after the offer timeout (20 s by default);
    // no progress for longer than a couple of those means the rest will not be assigned.
    let mut stalled_at = Instant::now() + DISPATCH_STALL;
    while assigned.len() < orders_placed {
        match tokio::time::timeout_at(dispatch_deadline.min(stalled_at), news_rx.recv()).await {
            Ok(Some((_, CourierNews::Assigned { order_id, at }))) => {
                note_assignment(order_id, at, &mut assigned);
                stalled_at = Instant::now() + DISPATCH_STALL;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let orders_assigned = assigned.len();
    eprintln!(
        "loadgen live: {orders_assigned} of {orders_placed} orders assigned; setup took {:.1} s; measuring for {} s",
        setup_started.elapsed().as_secs_f64(),
        duration.as_secs()
    );

    // Measure.
    let before = target.probe_sample();
    let window = Window::opening_soon(duration)?;
    let _ = phase_tx.send(Phase::Measure(window));
    let lag = tokio::spawn(lag_probe(window.start, window.end));
    tokio::time::sleep_until(window.end).await;
    let after = target.probe_sample();
    // Assignments that arrive during the window still count for the report.
    tokio::time::sleep(GRACE).await;
    while let Ok((_, news)) = news_rx.try_recv() {
        if let CourierNews::Assigned { order_id, at } = news {
            note_assignment(order_id, at, &mut assigned);
        }
    }

    // Finish: deliver every order, so the couriers are free for the next run.
    let codes = ready_for_pickup(&target, &parties, assigned.keys(), concurrency).await;
    let _ = phase_tx.send(Phase::Finish(Arc::new(codes)));
    let mut couriers_total = CourierStats::new();
    let mut unfinished = 0u64;
    for task in courier_tasks {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(stats)) => couriers_total.absorb(&stats),
            _ => unfinished += 1,
        }
    }
    let _ = phase_tx.send(Phase::Stop);
    let mut watchers_total = WatcherStats::new();
    for task in watcher_tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(stats)) => watchers_total.absorb(&stats),
            _ => unfinished += 1,
        }
    }
    let (lag, late_probes) = lag.await.unwrap_or_else(|_| (latency_histogram(), 0));

    let seconds = duration.as_secs_f64();
    let per_watcher = args.rate_hz.min(1.0) * seconds;
    let expected = (per_watcher * orders_assigned as f64).round() as u64;
    let mut report = Report::new("live");
    report.count("couriers_online", ready as u64);
    report.count("courier_connect_failures", courier_failures.len() as u64);
    report.count("orders_placed", orders_placed as u64);
    report.add(
        "order_failures",
        json!(order_failures),
        format!("{order_failures:?}"),
    );
    report.count("orders_assigned", orders_assigned as u64);
    report.latency("dispatch_latency_accept_to_assignment", &dispatch);
    report.add(
        "duration_s",
        seconds,
        format!("{seconds} s at {} Hz per courier", args.rate_hz),
    );
    report.count("pings_sent", couriers_total.pings_sent);
    report.add(
        "pings_acked",
        couriers_total.pings_acked,
        format!(
            "{} ({:.2}% of sent; {} points dropped by cleaning)",
            couriers_total.pings_acked,
            percent(couriers_total.pings_acked, couriers_total.pings_sent),
            couriers_total.points_dropped
        ),
    );
    report.latency("ack_latency", &couriers_total.ack_latency);
    report.add(
        "location_frames_delivered",
        watchers_total.frames_in_window,
        format!(
            "{} of {expected} expected ({:.2}%; {:.1} per watcher, expected ≤ {per_watcher:.0})",
            watchers_total.frames_in_window,
            percent(watchers_total.frames_in_window, expected),
            watchers_total.frames_in_window as f64 / orders_assigned.max(1) as f64
        ),
    );
    report.count("location_frames_expected", expected);
    report.count("location_frames_total", watchers_total.frames_total);
    report.latency("ping_to_watcher_latency", &watchers_total.latency);
    report.count("watcher_snapshots", watchers_total.snapshots);
    report.count("watcher_events", watchers_total.events);
    report.add(
        "watchers_lost",
        json!(watchers_total.lost),
        format!("{:?}", watchers_total.lost),
    );
    report.add(
        "watcher_error_frames",
        json!(watchers_total.errors),
        format!("{:?}", watchers_total.errors),
    );
    report.add(
        "couriers_lost",
        json!(couriers_total.lost),
        format!("{:?}", couriers_total.lost),
    );
    report.count(
        "reconnects_after_token_expiry",
        couriers_total.reconnects + watchers_total.reconnects,
    );
    report.add(
        "courier_error_frames",
        json!(couriers_total.errors),
        format!("{:?}", couriers_total.errors),
    );
    report.count("offers_seen", couriers_total.offers);
    report.add(
        "assignment_frames",
        json!({"frames": couriers_total.assignment_frames, "distinct_orders": couriers_total.assigned.len()}),
        format!(
            "{} frames naming {} distinct orders",
            couriers_total.assignment_frames,
            couriers_total.assigned.len()
        ),
    );
    report.add(
        "loadgen_late_ticks",
        json!({"late": couriers_total.late_ticks, "skipped": couriers_total.skipped_ticks,
               "late_threshold_ms": LATE_TICK.as_millis() as u64}),
        format!(
            "{} ticks later than {} ms, {} skipped (tick lateness p99 {:.2} ms)",
            couriers_total.late_ticks,
            LATE_TICK.as_millis(),
            couriers_total.skipped_ticks,
            couriers_total.tick_lateness.value_at_quantile(0.99) as f64 / 1_000.0
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
    report.add(
        "orders_delivered_at_end",
        json!({"delivered": couriers_total.delivered, "failures": couriers_total.delivery_failures}),
        format!(
            "{} (failures: {:?})",
            couriers_total.delivered, couriers_total.delivery_failures
        ),
    );
    report.count("tasks_unfinished", unfinished);
    if let (Some(before), Some(after)) = (before, after) {
        report.add(
            "server",
            probe::delta_json(before, after, seconds),
            probe::delta_human(before, after, seconds),
        );
        // The figure `loadgen relay` reports too, for comparing with a bare relay.
        let cpu_s = after.cpu_s - before.cpu_s;
        let delivered = watchers_total.frames_in_window;
        let per_cpu_s = if cpu_s > 0.0 {
            delivered as f64 / cpu_s
        } else {
            0.0
        };
        report.add(
            "delivered_frames_per_server_cpu_s",
            per_cpu_s,
            format!("{per_cpu_s:.0} location frames per CPU second ({delivered} in {cpu_s:.2} CPU s; includes ingest, acks and trail writes)"),
        );
    }
    Ok(report)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Stores near `--near` with their in-stock products.
async fn load_stores(
    target: &Target,
    args: &LiveArgs,
    concurrency: usize,
) -> anyhow::Result<Vec<Store>> {
    let api = &target.api;
    let mut stores = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!(
            "/api/v1/vendors?near={}&radius_km={}&limit=100",
            encode(&near_pair(args)),
            args.radius_km
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = api.get(&path, None).await?;
        for v in page["items"].as_array().into_iter().flatten() {
            let (Some(id), Some(owner), Some(lat), Some(lng)) = (
                v["id"].as_str(),
                v["owner"].as_str().and_then(|s| s.parse::<UserId>().ok()),
                v["location"]["lat"].as_f64(),
                v["location"]["lng"].as_f64(),
            ) else {
                continue;
            };
            stores.push(Store {
                id: id.to_owned(),
                owner,
                lat,
                lng,
                products: Vec::new(),
            });
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        // Enough stores for every order to find stock is plenty.
        if cursor.is_none() || stores.len() >= args.watchers.max(1) {
            break;
        }
    }
    let with_products: Vec<anyhow::Result<Store>> = futures_util::stream::iter(stores)
        .map(|mut store| async move {
            let page = api
                .get(
                    &format!(
                        "/api/v1/products?vendor={}&in_stock=true&limit=100",
                        store.id
                    ),
                    None,
                )
                .await?;
            store.products = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let available = p["available"].as_u64().unwrap_or(0);
                    // Leave a unit for others; stock may have moved since indexing.
                    let usable = available.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                    Some((p["id"].as_str()?.to_owned(), usable)).filter(|_| usable > 0)
                })
                .collect();
            Ok(store)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut stores: Vec<Store> = with_products
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .filter(|s| !s.products.is_empty())
        .collect();
    stores.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(stores)
}

/// One order to place.
struct Plan {
    customer: UserId,
    store: Arc<Store>,
    /// Products to try, best first.
    products: Vec<String>,
    lat: f64,
    lng: f64,
}

/// Spreads the orders over the stores round-robin, each taking a unit of a product with
/// stock left; the delivery address is 1–3 km from the store.
fn plan_orders(customers: &[UserId], mut stores: Vec<Store>) -> Vec<Plan> {
    let mut plans = Vec::with_capacity(customers.len());
    let mut next_product = vec![0usize; stores.len()];
    let shared: Vec<Arc<Store>> = stores.iter().cloned().map(Arc::new).collect();
    for (j, customer) in customers.iter().enumerate() {
        let s = j % stores.len();
        let store = &mut stores[s];
        let count = store.products.len();
        let mut products = Vec::new();
        for k in 0..count {
            let p = (next_product[s] + k) % count;
            if store.products[p].1 > 0 {
                products.push(store.products[p].0.clone());
            }
        }
        if let Some(first) = products.first()
            && let Some(entry) = store.products.iter_mut().find(|(id, _)| id == first)
        {
            entry.1 -= 1;
        }
        next_product[s] += 1;
        let distance = 1_000.0 + 2_000.0 * rand::random::<f64>();
        let (dlat, dlng) = flat_offset(store.lat, distance, rand::random::<f64>() * 360.0);
        plans.push(Plan {
            customer: *customer,
            store: Arc::clone(&shared[s]),
            products: products.into_iter().take(3).collect(),
            lat: store.lat + dlat,
            lng: store.lng + dlng,
        });
    }
    plans
}

/// An order placed, paid and accepted.
struct Placed {
    customer: UserId,
    vendor: UserId,
    order_id: String,
    accepted_at: Instant,
}

/// Cart → checkout → simulated payment → vendor accept.
async fn place_order(target: &Target, plan: Plan) -> anyhow::Result<Placed> {
    let api = &target.api;
    let token = target.minter.mint(plan.customer, Role::Customer)?;
    let mut last_error = anyhow::anyhow!("no product in stock at store {}", plan.store.id);
    for product in &plan.products {
        // A cart left over from an earlier run would add its lines to this checkout.
        let _ = api
            .call(Method::DELETE, "/api/v1/cart", Some(&token), None, &[])
            .await;
        api.post(
            "/api/v1/cart/items",
            &token,
            &json!({"product_id": product, "quantity": 1}),
        )
        .await?;
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "delivery_address": {"text": "Loadgen Straße 1, Berlin", "lat": plan.lat, "lng": plan.lng},
            "payment_method": "simulated",
        });
        let checkout = match api
            .call(
                Method::POST,
                "/api/v1/checkout",
                Some(&token),
                Some(&body),
                &[("Idempotency-Key", &key)],
            )
            .await
        {
            Ok(checkout) => checkout,
            Err(e) if matches!(refused_code(&e), Some((s, _)) if s == StatusCode::CONFLICT) => {
                // Sold out since the index was read: try the next product.
                last_error = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        let order_id = checkout["orders"][0]["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("checkout answer without an order: {checkout}"))?
            .to_owned();
        let payment = checkout["payment"]["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("checkout answer without a payment: {checkout}"))?;
        api.post(
            &format!("/api/v1/payments/{payment}/simulate"),
            &token,
            &json!({"outcome": "succeed"}),
        )
        .await?;
        let vendor = target.minter.mint(plan.store.owner, Role::Vendor)?;
        let accept = format!("/api/v1/orders/{order_id}/accept");
        // The payment outcome reaches the order asynchronously: retry while it is not paid.
        let mut attempts = 0;
        loop {
            match api.post(&accept, &vendor, &Value::Null).await {
                Ok(_) => break,
                Err(e)
                    if attempts < 50
                        && matches!(refused_code(&e), Some((s, _)) if s == StatusCode::CONFLICT) =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(Placed {
            customer: plan.customer,
            vendor: plan.store.owner,
            order_id,
            accepted_at: Instant::now(),
        });
    }
    Err(last_error)
}

/// Has each order's vendor mark it preparing and ready (pickup needs `ready_for_pickup`), and
/// reads its handoff code as the customer sees it.
async fn ready_for_pickup<'a>(
    target: &Target,
    parties: &HashMap<String, (UserId, UserId)>,
    orders: impl Iterator<Item = &'a String>,
    concurrency: usize,
) -> HashMap<String, String> {
    let lookups: Vec<Option<(String, String)>> = futures_util::stream::iter(orders)
        .map(|order_id| async move {
            let (customer, vendor) = parties.get(order_id)?;
            let vendor = target.minter.mint(*vendor, Role::Vendor).ok()?;
            for step in ["preparing", "ready"] {
                let path = format!("/api/v1/orders/{order_id}/{step}");
                // A refusal (already past this step) is fine; the pickup will tell.
                let _ = target.api.post(&path, &vendor, &Value::Null).await;
            }
            let token = target.minter.mint(*customer, Role::Customer).ok()?;
            let order = target
                .api
                .get(&format!("/api/v1/orders/{order_id}"), Some(&token))
                .await
                .ok()?;
            let code = order["handoff_code"].as_str()?.to_owned();
            Some((order_id.clone(), code))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    lookups.into_iter().flatten().collect()
}

/// Measures how late the runtime wakes a sleeping task (the load generator's own lag).
pub(super) async fn lag_probe(start: Instant, end: Instant) -> (Histogram<u64>, u64) {
    const PERIOD: Duration = Duration::from_millis(10);
    let mut lag = latency_histogram();
    let mut late = 0;
    tokio::time::sleep_until(start).await;
    while Instant::now() < end {
        let asked = Instant::now() + PERIOD;
        tokio::time::sleep_until(asked).await;
        let behind = Instant::now().saturating_duration_since(asked);
        if behind > LATE_TICK {
            late += 1;
        }
        record_us(&mut lag, behind.as_micros() as i64);
    }
    (lag, late)
}

struct CourierTask {
    index: usize,
    user: UserId,
    motion: Motion,
    /// The node's last accepted position of this courier, when near enough to start from.
    resume_from: Option<(f64, f64)>,
    rate_hz: f64,
    /// Where in the period this courier's ticks fall (0..1), so pings spread evenly.
    stagger: f64,
    target: Arc<Target>,
    phase: watch::Receiver<Phase>,
    news: mpsc::Sender<(usize, CourierNews)>,
    handshakes: Arc<Semaphore>,
}

impl CourierTask {
    async fn run(mut self) -> CourierStats {
        let mut stats = CourierStats::new();
        let mut first = true;
        loop {
            let ws = match self.open(first).await {
                Ok(ws) => ws,
                Err(e) => {
                    if first {
                        let _ = self
                            .news
                            .send((self.index, CourierNews::Failed(format!("{e:#}"))))
                            .await;
                    } else {
                        stats
                            .lost
                            .insert(format!("reconnect: {}", connect_reason(&e)), 1);
                    }
                    return stats;
                }
            };
            if first {
                let _ = self.news.send((self.index, CourierNews::Ready)).await;
                first = false;
            }
            match self.session(ws, &mut stats).await {
                Ended::Done => return stats,
                Ended::TokenExpired => stats.reconnects += 1,
                Ended::Lost(reason) => {
                    stats.lost.insert(reason, 1);
                    return stats;
                }
            }
        }
    }

    /// Connects (with a fresh token), goes online and, the first time, reports a position.
    async fn open(&mut self, first: bool) -> anyhow::Result<Ws> {
        let token = self.target.minter.mint(self.user, Role::Courier)?;
        let mut ws = {
            let _permit = self.handshakes.acquire().await?;
            if first {
                self.set_profile(&token).await;
                // Resume from the last accepted position when it is within reach of the store
                // this courier was placed at (dispatch looks 8 km around a store by default).
                self.resume_from =
                    last_position(&self.target, &token)
                        .await
                        .filter(|&(lat, lng)| {
                            let (dlat, dlng) = (
                                lat - self.motion.lat,
                                (lng - self.motion.lng) * lat.to_radians().cos(),
                            );
                            (dlat * dlat + dlng * dlng).sqrt() * 111_320.0 < 4_000.0
                        });
            }
            socket::connect(&format!("{}/ws/courier", self.target.ws_base), &token).await?
        };
        let timeout = Duration::from_secs(30);
        socket::send(&mut ws, &json!({"type": "go_online"})).await?;
        socket::expect(&mut ws, timeout, "the go_online ack", |f| {
            f["type"] == "ack" && f["of"] == "go_online"
        })
        .await?;
        if first {
            if let Some((lat, lng)) = self.resume_from {
                self.motion = Motion::new(lat, lng);
            }
            let point = self.motion.advance(Utc::now());
            socket::send(&mut ws, &json!({"type": "location", "point": point})).await?;
            socket::expect(&mut ws, timeout, "the first location ack", |f| {
                f["type"] == "ack" && f["of"] == "location"
            })
            .await?;
        }
        Ok(ws)
    }

    /// One order at a time per courier, so that every order gets its own courier.
    async fn set_profile(&self, token: &str) {
        let body = json!({"vehicle": "bicycle", "max_concurrent_orders": 1});
        if let Err(e) = self
            .target
            .api
            .call(
                Method::PUT,
                "/api/v1/couriers/me/profile",
                Some(token),
                Some(&body),
                &[],
            )
            .await
            && self.index == 0
        {
            eprintln!("loadgen live: courier profile not set (couriers keep their default): {e:#}");
        }
    }

    async fn session(&mut self, mut ws: Ws, stats: &mut CourierStats) -> Ended {
        let period = Duration::from_secs_f64(1.0 / self.rate_hz);
        let mut ticker: Option<(tokio::time::Interval, Instant)> = None;
        let mut last_tick: Option<Instant> = None;
        // Whether this session has started (and maybe finished) the measured window's ticks.
        let mut measured = false;
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        loop {
            let phase = self.phase.borrow().clone();
            if let Phase::Finish(codes) = &phase {
                self.deliver(&mut ws, codes, stats).await;
                socket::close(ws).await;
                return Ended::Done;
            }
            if ticker.is_none()
                && !measured
                && let Phase::Measure(window) = phase
            {
                measured = true;
                // 1 ms in, so that no ping is stamped before the window's wall-clock start.
                let first = window.start + Duration::from_millis(1) + period.mul_f64(self.stagger);
                let mut interval = tokio::time::interval_at(first, period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                ticker = Some((interval, window.end));
            }
            if matches!(phase, Phase::Stop) {
                socket::close(ws).await;
                return Ended::Done;
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
                        socket::close(ws).await;
                        return Ended::Done;
                    }
                }
                scheduled = tick => {
                    if let Some((_, end)) = &ticker && scheduled >= *end {
                        // The window closed while this tick was pending.
                        ticker = None;
                        continue;
                    }
                    let now = Instant::now();
                    let late = now.saturating_duration_since(scheduled);
                    record_us(&mut stats.tick_lateness, late.as_micros() as i64);
                    if late > LATE_TICK {
                        stats.late_ticks += 1;
                    }
                    if let Some(previous) = last_tick {
                        let gap = scheduled.saturating_duration_since(previous).as_secs_f64();
                        let missed = (gap / period.as_secs_f64()).round() as u64;
                        stats.skipped_ticks += missed.saturating_sub(1);
                    }
                    last_tick = Some(scheduled);
                    let point = self.motion.advance(Utc::now());
                    if let Err(e) = socket::send(&mut ws, &json!({"type": "location", "point": point})).await {
                        return Ended::Lost(format!("{e:#}"));
                    }
                    stats.pings_sent += 1;
                    in_flight.push_back(Instant::now());
                }
                incoming = socket::next(&mut ws) => match incoming {
                    Incoming::Frame(frame) => {
                        if let Some(ended) = self.on_frame(&mut ws, frame, stats, &mut in_flight).await {
                            return ended;
                        }
                    }
                    Incoming::Other => {}
                    Incoming::Closed(close) => return closed(close),
                }
            }
        }
    }

    /// Picks up and delivers every order this courier was assigned.
    async fn deliver(
        &mut self,
        ws: &mut Ws,
        codes: &HashMap<String, String>,
        stats: &mut CourierStats,
    ) {
        let timeout = Duration::from_secs(30);
        let mut orders: Vec<String> = stats.assigned.iter().cloned().collect();
        orders.sort();
        for order_id in orders {
            let Some(code) = codes.get(&order_id) else {
                *stats
                    .delivery_failures
                    .entry("no handoff code".into())
                    .or_default() += 1;
                continue;
            };
            let steps = async {
                socket::send(ws, &json!({"type": "picked_up", "order_id": order_id})).await?;
                socket::expect(ws, timeout, "the picked_up ack", |f| {
                    f["type"] == "ack" && f["of"] == "picked_up"
                })
                .await?;
                socket::send(
                    ws,
                    &json!({"type": "delivered", "order_id": order_id, "code": code}),
                )
                .await?;
                socket::expect(ws, timeout, "the delivered ack", |f| {
                    f["type"] == "ack" && f["of"] == "delivered"
                })
                .await
            };
            match steps.await {
                Ok(_) => stats.delivered += 1,
                Err(e) => {
                    let reason: String = format!("{e:#}").chars().take(100).collect();
                    *stats.delivery_failures.entry(reason).or_default() += 1;
                }
            }
        }
    }

    async fn on_frame(
        &mut self,
        ws: &mut Ws,
        frame: Value,
        stats: &mut CourierStats,
        in_flight: &mut VecDeque<Instant>,
    ) -> Option<Ended> {
        match frame["type"].as_str().unwrap_or("") {
            "ack" if frame["of"] == "location" => {
                if let Some(sent) = in_flight.pop_front() {
                    stats.pings_acked += 1;
                    record_us(&mut stats.ack_latency, sent.elapsed().as_micros() as i64);
                }
                stats.points_dropped += frame["dropped"].as_u64().unwrap_or(0);
            }
            "offer" => {
                stats.offers += 1;
                let answer = json!({"type": "offer_response", "offer_id": frame["offer_id"], "accept": true});
                if let Err(e) = socket::send(ws, &answer).await {
                    return Some(Ended::Lost(format!("{e:#}")));
                }
            }
            "assignment" => {
                stats.assignment_frames += 1;
                if let Some(order_id) = frame["order_id"].as_str()
                    && stats.assigned.insert(order_id.to_owned())
                {
                    let news = CourierNews::Assigned {
                        order_id: order_id.to_owned(),
                        at: Instant::now(),
                    };
                    // The coordinator may be done listening; the count is then final anyway.
                    let _ = self.news.try_send((self.index, news));
                }
            }
            "error" => {
                let code = frame["code"].as_str().unwrap_or("?").to_owned();
                *stats.errors.entry(code).or_default() += 1;
            }
            _ => {}
        }
        None
    }
}

/// A short, groupable reason for a failed connect.
fn connect_reason(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ConnectError>() {
        Some(ConnectError::TooManyOpenFiles(_)) => "EMFILE: out of file descriptors".into(),
        Some(ConnectError::Refused { status, .. }) => format!("upgrade refused with HTTP {status}"),
        Some(ConnectError::Other { .. }) => "connect failed".into(),
        None => format!("{e:#}").chars().take(80).collect(),
    }
}

struct WatcherTask {
    customer: UserId,
    order_id: String,
    target: Arc<Target>,
    phase: watch::Receiver<Phase>,
    handshakes: Arc<Semaphore>,
}

impl WatcherTask {
    async fn run(mut self) -> WatcherStats {
        let mut stats = WatcherStats::new();
        let mut last_seq: Option<u64> = None;
        loop {
            let ws = match self.open(last_seq).await {
                Ok(ws) => ws,
                Err(e) => {
                    stats.lost.insert(connect_reason(&e), 1);
                    return stats;
                }
            };
            match self.session(ws, &mut stats, &mut last_seq).await {
                Ended::Done => return stats,
                Ended::TokenExpired => stats.reconnects += 1,
                Ended::Lost(reason) => {
                    stats.lost.insert(reason, 1);
                    return stats;
                }
            }
        }
    }

    /// Connects with a fresh token, resuming after the last event seen.
    async fn open(&self, after_seq: Option<u64>) -> anyhow::Result<Ws> {
        let token = self.target.minter.mint(self.customer, Role::Customer)?;
        let mut url = format!("{}/ws/orders/{}", self.target.ws_base, self.order_id);
        if let Some(seq) = after_seq {
            url.push_str(&format!("?after_seq={seq}"));
        }
        let _permit = self.handshakes.acquire().await?;
        Ok(socket::connect(&url, &token).await?)
    }

    async fn session(
        &mut self,
        mut ws: Ws,
        stats: &mut WatcherStats,
        last_seq: &mut Option<u64>,
    ) -> Ended {
        loop {
            let phase = self.phase.borrow().clone();
            if matches!(phase, Phase::Stop) {
                socket::close(ws).await;
                return Ended::Done;
            }
            tokio::select! {
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        socket::close(ws).await;
                        return Ended::Done;
                    }
                }
                incoming = socket::next(&mut ws) => {
                    let received = Utc::now();
                    match incoming {
                        Incoming::Frame(frame) => on_watched(&frame, received, &phase, stats, last_seq),
                        Incoming::Other => {}
                        Incoming::Closed(close) => return closed(close),
                    }
                }
            }
        }
    }
}

/// Counts one frame of `/ws/orders/{id}`; location frames recorded in the window give a
/// latency sample.
fn on_watched(
    frame: &Value,
    received: DateTime<Utc>,
    phase: &Phase,
    stats: &mut WatcherStats,
    last_seq: &mut Option<u64>,
) {
    if let Some(seq) = frame["seq"].as_u64() {
        *last_seq = Some(last_seq.map_or(seq, |s| s.max(seq)));
    }
    match frame["type"].as_str().unwrap_or("") {
        "snapshot" => stats.snapshots += 1,
        "event" => stats.events += 1,
        "location" => {
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
        "error" => {
            let code = frame["code"].as_str().unwrap_or("?").to_owned();
            *stats.errors.entry(code).or_default() += 1;
        }
        _ => {}
    }
}
