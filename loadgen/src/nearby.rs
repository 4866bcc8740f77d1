//! The `nearby` scenario: in-process, no server. Fills the dispatch index with couriers spread
//! uniformly over the demo city's disc (8 km around Alexanderplatz, Berlin) and times
//! nearest-courier queries (3 km, 5 results) from random points of the same disc.

use std::time::Instant;

use clap::Args;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use super::report::{Report, latency_histogram};
use hexmarket::dispatch::index::CourierIndex;
use hexmarket::domain::geo::{GeoPoint, disc_point};
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
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
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
    Ok(report)
}
