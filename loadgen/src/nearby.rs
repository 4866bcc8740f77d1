//! The `nearby` scenario: in-process, no server. Fills the dispatch index with couriers spread
//! uniformly over the demo city's disc (8 km around Alexanderplatz, Berlin) and times
//! nearest-courier queries (3 km, 5 results) from random points of the same disc.
//!
//! Then the combined load, against the H3 index and against an R-tree peer ([`RTreeIndex`]):
//! from the same start, every courier moves once per simulated second (a few metres, as on a
//! bike) and `--combined-queries` queries a second are spread evenly among the moves. Both
//! indexes run the very same operations in the same order; a third, untimed pass runs them side
//! by side and compares every answer.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::RwLock;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rstar::RTree;
use rstar::primitives::GeomWithData;
use serde_json::{Value, json};

use super::report::{Report, latency_histogram};
use hexmarket::dispatch::index::{Candidate, CourierIndex};
use hexmarket::domain::geo::{GeoPoint, MAX_RADIUS_KM, disc_point, flat_offset};
use hexmarket::domain::ids::UserId;
use hexmarket::seed::{DEMO_CENTER, DEMO_RADIUS_KM};

#[derive(Debug, Args)]
pub struct NearbyArgs {
    #[arg(long, default_value_t = 10_000)]
    pub couriers: usize,
    #[arg(long, default_value_t = 100_000)]
    pub queries: usize,
    /// Search radius in metres.
    #[arg(long, default_value_t = 3_000.0)]
    pub radius_m: f64,
    /// Candidates asked for.
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
    /// Seed of the random positions (runs with one seed see the same city).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Simulated seconds of the combined load (every courier moves once in each); 0 skips it.
    #[arg(long, default_value_t = 5)]
    pub combined_secs: u64,
    /// Queries per simulated second of the combined load, spread evenly among the moves.
    #[arg(long, default_value_t = 1_000)]
    pub combined_queries: usize,
    /// Timed runs of the combined load on each index; the fastest of each is reported.
    #[arg(long, default_value_t = 3)]
    pub combined_rounds: u32,
}

pub fn run(args: &NearbyArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (1..=10_000_000).contains(&args.couriers),
        "--couriers: must be 1 to 10000000"
    );
    anyhow::ensure!(
        (1..=100_000_000).contains(&args.queries),
        "--queries: must be 1 to 100000000"
    );
    anyhow::ensure!(
        (args.combined_secs as u128) * (args.couriers + args.combined_queries) as u128
            <= 100_000_000,
        "--combined-secs × (--couriers + --combined-queries): at most 100000000 operations"
    );
    anyhow::ensure!(
        (1..=20).contains(&args.combined_rounds),
        "--combined-rounds: must be 1 to 20"
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut point = || -> anyhow::Result<GeoPoint> {
        let (lat, lng) = disc_point(
            DEMO_CENTER,
            DEMO_RADIUS_KM * 1_000.0,
            rng.random(),
            rng.random(),
        );
        GeoPoint::new(lat, lng).map_err(anyhow::Error::msg)
    };

    let index = CourierIndex::new();
    let couriers: Vec<(UserId, GeoPoint)> = (0..args.couriers)
        .map(|_| Ok((UserId::new(), point()?)))
        .collect::<anyhow::Result<_>>()?;
    let fill_started = Instant::now();
    for (courier, at) in &couriers {
        index.upsert(*courier, *at, 0, 2);
    }
    let fill = fill_started.elapsed();
    let origins: Vec<GeoPoint> = (0..args.queries)
        .map(|_| point())
        .collect::<anyhow::Result<_>>()?;

    let no_one = |_: UserId| false;
    let mut latency = latency_histogram();
    let mut found = 0u64;
    let started = Instant::now();
    for from in &origins {
        let asked = Instant::now();
        let candidates = index.nearest(*from, args.radius_m, args.limit, &no_one);
        let took = asked.elapsed();
        found += candidates.len() as u64;
        // Nanoseconds, so sub-microsecond queries are not all rounded to one value.
        latency.saturating_record((took.as_nanos() as u64).max(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(index);

    let us = |q: f64| latency.value_at_quantile(q) as f64 / 1_000.0;
    let mut report = Report::new("nearby");
    report.count("couriers", args.couriers as u64);
    report.add(
        "fill_upserts_per_s",
        args.couriers as f64 / fill.as_secs_f64().max(1e-9),
        format!(
            "{:.0} upserts/s ({:.1} ms for {})",
            args.couriers as f64 / fill.as_secs_f64().max(1e-9),
            fill.as_secs_f64() * 1e3,
            args.couriers
        ),
    );
    report.count("queries", args.queries as u64);
    report.add(
        "queries_per_s",
        args.queries as f64 / elapsed,
        format!(
            "{:.0} queries/s on one thread (radius {} m, limit {})",
            args.queries as f64 / elapsed,
            args.radius_m,
            args.limit
        ),
    );
    report.add(
        "query_latency_us",
        json!({"p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "max": latency.max() as f64 / 1_000.0}),
        format!(
            "p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            us(0.5),
            us(0.9),
            us(0.99),
            latency.max() as f64 / 1_000.0
        ),
    );
    report.add(
        "mean_candidates",
        found as f64 / args.queries as f64,
        format!(
            "{:.2} couriers per answer",
            found as f64 / args.queries as f64
        ),
    );
    if args.combined_secs > 0 {
        combined(args, &couriers, &mut report)?;
    }
    Ok(report)
}

// --- The combined load --------------------------------------------------------------------------

/// How far a courier moves in a simulated second, in metres: a bike in town, from waiting at a
/// light (GPS jitter) to riding fast.
const STEP_M: std::ops::Range<f64> = 2.0..15.0;
/// How much a courier's heading may turn between two moves, in degrees either way.
const TURN_DEG: f64 = 30.0;
/// Mixed into `--seed` for the combined load's own random stream, so the query-only figures
/// keep their points whatever the combined load asks for.
const COMBINED_STREAM: u64 = 0x636f_6d62_696e_6564;

/// One operation of the combined load.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// A courier's new position (a GPS ping).
    Move { courier: UserId, to: GeoPoint },
    /// Up to `limit` couriers within the radius of `from`.
    Query { from: GeoPoint },
}

/// The combined load: the couriers' starting points, then every operation in order.
struct Workload {
    start: Vec<(UserId, GeoPoint)>,
    ops: Vec<Op>,
    moves: u64,
    queries: u64,
}

impl Workload {
    /// `secs` simulated seconds: in each, every courier moves once (in an order shuffled anew
    /// each second) and `queries` queries from random points of the disc are spread evenly
    /// among the moves.
    fn new(
        start: &[(UserId, GeoPoint)],
        secs: u64,
        queries: usize,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed ^ COMBINED_STREAM);
        let mut at: Vec<GeoPoint> = start.iter().map(|(_, point)| *point).collect();
        let mut heading: Vec<f64> = start.iter().map(|_| rng.random_range(0.0..360.0)).collect();
        let mut order: Vec<usize> = (0..start.len()).collect();
        let per_second = (start.len() + queries) as u64;
        let mut ops = Vec::with_capacity((secs * per_second) as usize);
        for _ in 0..secs {
            order.shuffle(&mut rng);
            let mut next = order.iter();
            for slot in 0..per_second {
                // Slot j holds a query when ⌊(j + 1)·Q / total⌋ steps up: Q of them, evenly.
                let q = queries as u64;
                if (slot + 1) * q / per_second > slot * q / per_second {
                    let (lat, lng) = disc_point(
                        DEMO_CENTER,
                        DEMO_RADIUS_KM * 1_000.0,
                        rng.random(),
                        rng.random(),
                    );
                    let from = GeoPoint::new(lat, lng).map_err(anyhow::Error::msg)?;
                    ops.push(Op::Query { from });
                } else if let Some(&i) = next.next() {
                    let to = ride(&mut rng, at[i], &mut heading[i])?;
                    at[i] = to;
                    ops.push(Op::Move {
                        courier: start[i].0,
                        to,
                    });
                }
            }
        }
        Ok(Workload {
            start: start.to_vec(),
            moves: secs * start.len() as u64,
            queries: secs * queries as u64,
            ops,
        })
    }
}

/// A courier's position a second after `from`: a few metres on, the heading turned a little,
/// back towards the centre when the move would leave the disc.
fn ride(rng: &mut StdRng, from: GeoPoint, heading: &mut f64) -> anyhow::Result<GeoPoint> {
    let metres = rng.random_range(STEP_M);
    let turn = rng.random_range(-TURN_DEG..=TURN_DEG);
    let step = |bearing: f64| {
        let (dlat, dlng) = flat_offset(from.lat, metres, bearing);
        GeoPoint::new(from.lat + dlat, from.lng + dlng).map_err(anyhow::Error::msg)
    };
    let mut to = step(*heading + turn)?;
    if DEMO_CENTER.distance_m(to) > DEMO_RADIUS_KM * 1_000.0 {
        let north = DEMO_CENTER.lat - from.lat;
        let east = (DEMO_CENTER.lng - from.lng) * from.lat.to_radians().cos();
        *heading = east.atan2(north).to_degrees();
        to = step(*heading + turn)?;
    }
    *heading = (*heading + turn).rem_euclid(360.0);
    Ok(to)
}

/// What the combined load needs of an index.
trait Couriers {
    fn upsert(&self, courier: UserId, at: GeoPoint);
    fn nearest(&self, from: GeoPoint, radius_m: f64, limit: usize) -> Vec<Candidate>;
}

impl Couriers for CourierIndex {
    fn upsert(&self, courier: UserId, at: GeoPoint) {
        CourierIndex::upsert(self, courier, at, 0, 2);
    }

    fn nearest(&self, from: GeoPoint, radius_m: f64, limit: usize) -> Vec<Candidate> {
        CourierIndex::nearest(self, from, radius_m, limit, &|_| false)
    }
}

/// A courier in the R-tree: the position on the unit sphere, with the id and the position in
/// degrees (to measure the answer's distances exactly as the H3 index does).
type TreeCourier = GeomWithData<[f64; 3], (UserId, GeoPoint)>;

/// The in-process peer: couriers as points of an R*-tree (the `rstar` crate), keyed by
/// courier id, behind a read-write lock as the H3 index is.
///
/// Points are the couriers' positions on the unit sphere in three dimensions: the straight-line
/// (chord) distance between two of them grows with their great-circle distance, so the tree's
/// nearest-neighbour order is the great-circle order anywhere on Earth, with no map projection
/// to distort it. The couriers it finds are measured and ranked with the same haversine
/// distance as the H3 index (ties by id), so both answer the same question exactly.
#[derive(Default)]
struct RTreeIndex {
    state: RwLock<RTreeState>,
}

#[derive(Default)]
struct RTreeState {
    tree: RTree<TreeCourier>,
    /// Each courier's element in `tree`, to find and remove it when the courier moves.
    at: HashMap<UserId, TreeCourier>,
}

/// The mean Earth radius of the haversine distance `GeoPoint::distance_m` uses (GRS 80).
const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// Rounding allowance on chord lengths of the unit sphere (about 6 µm on Earth): far above the
/// float error of a chord or a haversine distance, far below any real gap between couriers.
const CHORD_SLACK: f64 = 1e-12;

fn on_unit_sphere(point: GeoPoint) -> [f64; 3] {
    let (lat, lng) = (point.lat.to_radians(), point.lng.to_radians());
    let (sin_lat, cos_lat) = lat.sin_cos();
    let (sin_lng, cos_lng) = lng.sin_cos();
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

impl Couriers for RTreeIndex {
    fn upsert(&self, courier: UserId, at: GeoPoint) {
        let element = TreeCourier::new(on_unit_sphere(at), (courier, at));
        let mut guard = self.state.write();
        let state = &mut *guard;
        if let Some(left) = state.at.insert(courier, element) {
            state.tree.remove(&left);
        }
        state.tree.insert(element);
    }

    fn nearest(&self, from: GeoPoint, radius_m: f64, limit: usize) -> Vec<Candidate> {
        if limit == 0 || radius_m.is_nan() || radius_m < 0.0 {
            return Vec::new();
        }
        let radius_m = radius_m.min(MAX_RADIUS_KM * 1_000.0);
        let origin = on_unit_sphere(from);
        // The chord of an arc of `radius_m`, then of the `limit`-th courier once there are
        // that many: nothing beyond either (rounding aside) can make the list.
        let radius_chord = 2.0 * (radius_m / (2.0 * EARTH_RADIUS_M)).sin() + CHORD_SLACK;
        let mut reach_2 = radius_chord * radius_chord;
        let mut kept: Vec<Candidate> = Vec::with_capacity(limit + 1);
        let state = self.state.read();
        for (element, chord_2) in state.tree.nearest_neighbor_iter_with_distance_2(&origin) {
            if chord_2 > reach_2 {
                break;
            }
            let (courier, point) = element.data;
            let distance_m = from.distance_m(point);
            if distance_m > radius_m {
                continue;
            }
            kept.push(Candidate {
                courier,
                distance_m,
                load: 0,
            });
            if kept.len() == limit {
                let last = chord_2.sqrt() + CHORD_SLACK;
                reach_2 = reach_2.min(last * last);
            }
        }
        drop(state);
        kept.sort_unstable_by(|a, b| {
            a.distance_m
                .total_cmp(&b.distance_m)
                .then(a.courier.cmp(&b.courier))
        });
        kept.truncate(limit);
        kept
    }
}

/// One timed run of the workload on a freshly filled index: wall time, and per-operation
/// latencies (nanoseconds) when asked for.
struct Run {
    elapsed: Duration,
    queries: Histogram<u64>,
    moves: Histogram<u64>,
}

fn run_workload<I: Couriers>(
    index: &I,
    workload: &Workload,
    (radius_m, limit): (f64, usize),
    per_op: bool,
) -> Run {
    for (courier, at) in &workload.start {
        index.upsert(*courier, *at);
    }
    let mut run = Run {
        elapsed: Duration::ZERO,
        queries: latency_histogram(),
        moves: latency_histogram(),
    };
    let started = Instant::now();
    if per_op {
        for op in &workload.ops {
            let asked = Instant::now();
            match *op {
                Op::Move { courier, to } => {
                    index.upsert(courier, to);
                    let took = asked.elapsed().as_nanos() as u64;
                    run.moves.saturating_record(took.max(1));
                }
                Op::Query { from } => {
                    black_box(index.nearest(from, radius_m, limit));
                    let took = asked.elapsed().as_nanos() as u64;
                    run.queries.saturating_record(took.max(1));
                }
            }
        }
    } else {
        for op in &workload.ops {
            match *op {
                Op::Move { courier, to } => index.upsert(courier, to),
                Op::Query { from } => {
                    black_box(index.nearest(from, radius_m, limit));
                }
            }
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// Runs the workload on both indexes side by side and compares every answer.
struct Agreement {
    compared: u64,
    identical: u64,
    candidates: u64,
    first_difference: Option<String>,
}

fn agreement(workload: &Workload, (radius_m, limit): (f64, usize)) -> Agreement {
    let (h3, tree) = (CourierIndex::new(), RTreeIndex::default());
    for (courier, at) in &workload.start {
        Couriers::upsert(&h3, *courier, *at);
        tree.upsert(*courier, *at);
    }
    let mut outcome = Agreement {
        compared: 0,
        identical: 0,
        candidates: 0,
        first_difference: None,
    };
    for op in &workload.ops {
        match *op {
            Op::Move { courier, to } => {
                Couriers::upsert(&h3, courier, to);
                tree.upsert(courier, to);
            }
            Op::Query { from } => {
                let ours = Couriers::nearest(&h3, from, radius_m, limit);
                let theirs = tree.nearest(from, radius_m, limit);
                outcome.compared += 1;
                outcome.candidates += ours.len() as u64;
                if ours == theirs {
                    outcome.identical += 1;
                } else if outcome.first_difference.is_none() {
                    outcome.first_difference =
                        Some(format!("from {from:?}: H3 {ours:?}, R-tree {theirs:?}"));
                }
            }
        }
    }
    outcome
}

/// One index's figures on the combined load.
fn figures(workload: &Workload, best: Duration, timed: &Run, couriers: usize) -> Value {
    let seconds = best.as_secs_f64().max(1e-9);
    let percentiles = |h: &Histogram<u64>| {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        json!({
            "p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p999": us(0.999),
            "max": h.max() as f64 / 1_000.0, "mean": h.mean() / 1_000.0,
        })
    };
    // What one core could answer while taking every courier's ping once a second, from the
    // mean cost of each kind of operation (so for any mix, not only the one run).
    let move_s = timed.moves.mean() / 1e9;
    let query_s = timed.queries.mean() / 1e9;
    let capacity = (query_s > 0.0).then(|| ((1.0 - couriers as f64 * move_s) / query_s).max(0.0));
    json!({
        "seconds": seconds,
        "ops_per_s": workload.ops.len() as f64 / seconds,
        "queries_per_s": workload.queries as f64 / seconds,
        "updates_per_s": workload.moves as f64 / seconds,
        "query_latency_us": percentiles(&timed.queries),
        "update_latency_us": percentiles(&timed.moves),
        "queries_per_s_beside_1hz_updates": capacity,
    })
}

fn combined(
    args: &NearbyArgs,
    couriers: &[(UserId, GeoPoint)],
    report: &mut Report,
) -> anyhow::Result<()> {
    let workload = Workload::new(
        couriers,
        args.combined_secs,
        args.combined_queries,
        args.seed,
    )?;
    let ask = (args.radius_m, args.limit);
    // Alternate the two, so drifting machine load touches both alike; keep each one's best.
    let (mut h3_best, mut tree_best) = (Duration::MAX, Duration::MAX);
    for _ in 0..args.combined_rounds {
        let run = run_workload(&CourierIndex::new(), &workload, ask, false);
        h3_best = h3_best.min(run.elapsed);
        let run = run_workload(&RTreeIndex::default(), &workload, ask, false);
        tree_best = tree_best.min(run.elapsed);
    }
    let h3_timed = run_workload(&CourierIndex::new(), &workload, ask, true);
    let tree_timed = run_workload(&RTreeIndex::default(), &workload, ask, true);
    let agree = agreement(&workload, ask);

    let h3 = figures(&workload, h3_best, &h3_timed, couriers.len());
    let tree = figures(&workload, tree_best, &tree_timed, couriers.len());
    let ops = |f: &Value| f["ops_per_s"].as_f64().unwrap_or(0.0);
    let ratio = ops(&h3) / ops(&tree).max(1e-9);
    let share = agree.identical as f64 / (agree.compared.max(1)) as f64;
    let line = |name: &str, f: &Value| {
        format!(
            "{name}: {:.0} ops/s ({:.0} queries/s + {:.0} updates/s); query p50 {:.1} µs p99 {:.1} µs, \
             update p50 {:.2} µs p99 {:.2} µs; {:.0} queries/s possible beside 1 Hz updates",
            ops(f),
            f["queries_per_s"].as_f64().unwrap_or(0.0),
            f["updates_per_s"].as_f64().unwrap_or(0.0),
            f["query_latency_us"]["p50"].as_f64().unwrap_or(0.0),
            f["query_latency_us"]["p99"].as_f64().unwrap_or(0.0),
            f["update_latency_us"]["p50"].as_f64().unwrap_or(0.0),
            f["update_latency_us"]["p99"].as_f64().unwrap_or(0.0),
            f["queries_per_s_beside_1hz_updates"]
                .as_f64()
                .unwrap_or(0.0),
        )
    };
    let human = format!(
        "{} couriers moving {}–{} m once per simulated second, {} queries a second among them, \
         {} s ({} operations); H3 / R-tree {ratio:.2}×\n    {}\n    {}\n    \
         answers identical: {} of {} ({:.2} couriers per answer){}",
        couriers.len(),
        STEP_M.start,
        STEP_M.end,
        args.combined_queries,
        args.combined_secs,
        workload.ops.len(),
        line("H3    ", &h3),
        line("R-tree", &tree),
        agree.identical,
        agree.compared,
        agree.candidates as f64 / agree.compared.max(1) as f64,
        agree
            .first_difference
            .as_deref()
            .map(|d| format!("; first difference {d}"))
            .unwrap_or_default(),
    );
    report.add(
        "combined",
        json!({
            "workload": {
                "couriers": couriers.len(),
                "simulated_seconds": args.combined_secs,
                "updates_per_simulated_second": couriers.len(),
                "queries_per_simulated_second": args.combined_queries,
                "step_m": [STEP_M.start, STEP_M.end],
                "turn_deg": TURN_DEG,
                "radius_m": args.radius_m,
                "limit": args.limit,
                "seed": args.seed,
                "operations": workload.ops.len(),
                "rounds": args.combined_rounds,
            },
            "h3": h3,
            "rtree": tree,
            "ratio_ops_per_s": ratio,
            "agreement": {
                "queries_compared": agree.compared,
                "identical": agree.identical,
                "share": share,
                "mean_candidates": agree.candidates as f64 / agree.compared.max(1) as f64,
                "first_difference": agree.first_difference,
            },
        }),
        human,
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn city(n: usize, seed: u64) -> Vec<(UserId, GeoPoint)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let (lat, lng) = disc_point(DEMO_CENTER, 8_000.0, rng.random(), rng.random());
                (UserId::new(), GeoPoint::new(lat, lng).unwrap())
            })
            .collect()
    }

    #[test]
    fn the_workload_moves_everyone_once_a_second_among_evenly_spread_queries() {
        let start = city(300, 1);
        let workload = Workload::new(&start, 3, 40, 9).unwrap();
        assert_eq!(workload.ops.len(), 3 * 340);
        assert_eq!((workload.moves, workload.queries), (900, 120));
        for second in workload.ops.chunks(340) {
            let mut moved: Vec<UserId> = second
                .iter()
                .filter_map(|op| match op {
                    Op::Move { courier, .. } => Some(*courier),
                    Op::Query { .. } => None,
                })
                .collect();
            moved.sort_unstable();
            moved.dedup();
            assert_eq!(moved.len(), 300);
            // No two queries in a row, and the gaps between them differ by one at most.
            let at: Vec<usize> = (0..second.len())
                .filter(|i| matches!(second[*i], Op::Query { .. }))
                .collect();
            assert_eq!(at.len(), 40);
            let gaps: Vec<usize> = at.windows(2).map(|w| w[1] - w[0]).collect();
            let (lo, hi) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
            assert!(hi - lo <= 1, "{gaps:?}");
        }
        // Moves are short and stay on the disc.
        let mut last: HashMap<UserId, GeoPoint> = start.iter().copied().collect();
        for op in &workload.ops {
            if let Op::Move { courier, to } = op {
                let step = last[courier].distance_m(*to);
                assert!((1.9..15.1).contains(&step), "{step}");
                assert!(DEMO_CENTER.distance_m(*to) <= 8_000.0 + 15.0);
                last.insert(*courier, *to);
            }
        }
    }

    #[test]
    fn the_r_tree_answers_as_the_h3_index_does() {
        let start = city(2_000, 3);
        let workload = Workload::new(&start, 2, 200, 5).unwrap();
        for ask in [(3_000.0, 5), (300.0, 20), (50.0, 3), (10_000.0, 1)] {
            let outcome = agreement(&workload, ask);
            assert_eq!(outcome.compared, 400);
            assert_eq!(outcome.identical, 400, "{:?}", outcome.first_difference);
            assert!(outcome.candidates > 0);
        }
    }

    #[test]
    fn a_move_replaces_the_courier_in_the_r_tree() {
        let tree = RTreeIndex::default();
        let courier = UserId::new();
        let here = GeoPoint::new(52.52, 13.405).unwrap();
        let there = GeoPoint::new(52.53, 13.405).unwrap();
        tree.upsert(courier, here);
        tree.upsert(courier, there);
        assert_eq!(tree.state.read().tree.size(), 1);
        assert!(tree.nearest(here, 500.0, 5).is_empty());
        let found = tree.nearest(there, 500.0, 5);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].courier, courier);
    }
}
