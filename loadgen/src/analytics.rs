//! The `analytics` scenario: report latency over a seeded history (`hexmarket
//! seed-analytics`). Workers ask, back to back, a mix of the reports over a whole year: a
//! random seeded store's sales per day and per month and its top products, the platform's
//! sales, top stores and top products, every courier's counts, and a day of supply and
//! demand; each kind's latency is reported apart, and all together.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Days, Utc};
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::Rng as _;
use tokio::time::Instant;

use super::Target;
use super::report::{Report, latency_histogram, merge, record_us};

#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// Stores seeded (their analytics are asked at random).
    #[arg(long, default_value_t = 1_000)]
    pub stores: u32,
    /// Days each report covers (ending tomorrow), at most 366.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
}

const KINDS: [&str; 8] = [
    "store_sales_daily",
    "store_sales_monthly",
    "store_top_products",
    "platform_sales",
    "platform_top_stores",
    "platform_top_products",
    "couriers",
    "supply_demand_day",
];

fn path(kind: &str, store: uuid::Uuid, range: &str) -> String {
    match kind {
        "store_sales_daily" => format!("/api/v1/analytics/stores/{store}/sales?{range}"),
        "store_sales_monthly" => {
            format!("/api/v1/analytics/stores/{store}/sales?{range}&granularity=month")
        }
        "store_top_products" => {
            format!("/api/v1/analytics/stores/{store}/products/top-selling?{range}")
        }
        "platform_sales" => format!("/api/v1/analytics/platform/sales?{range}&granularity=week"),
        "platform_top_stores" => {
            format!("/api/v1/analytics/platform/stores/top-selling?{range}")
        }
        "platform_top_products" => {
            format!("/api/v1/analytics/platform/products/top-selling?{range}")
        }
        "couriers" => format!("/api/v1/analytics/couriers?{range}&limit=100"),
        _ => "/api/v1/analytics/supply-demand?resolution=8".to_owned(),
    }
}

pub async fn run(target: &Target, args: &AnalyticsArgs) -> anyhow::Result<Report> {
    anyhow::ensure!((1..=366).contains(&args.days), "--days: must be 1 to 366");
    let duration = super::check_duration("--duration-secs", args.duration_secs)?;
    let token = target.minter.admin()?;
    let to = Utc::now().date_naive() + Days::new(1);
    let from = to - Days::new(args.days);
    let range = format!("from={from}&to={to}");
    let histograms: Arc<Mutex<BTreeMap<&'static str, Histogram<u64>>>> = Arc::new(Mutex::new(
        KINDS.iter().map(|k| (*k, latency_histogram())).collect(),
    ));
    let errors = Arc::new(Mutex::new(0u64));
    let before = target.probe_sample();
    let started = Instant::now();
    let end = started + duration;
    let mut workers = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let api = target.api.clone();
        let token = token.clone();
        let range = range.clone();
        let histograms = histograms.clone();
        let errors = errors.clone();
        let stores = args.stores.max(1);
        workers.push(tokio::spawn(async move {
            let mut i = worker;
            while Instant::now() < end {
                let kind = KINDS[i % KINDS.len()];
                i += 1;
                let n = rand::rng().random_range(0..stores);
                let store = hexmarket::analytics::rebuild::seeded_store(n).as_uuid();
                let at = Instant::now();
                match api.get(&path(kind, store, &range), Some(&token)).await {
                    Ok(_) => {
                        let us = at.elapsed().as_micros() as i64;
                        if let Some(h) = histograms.lock().get_mut(kind) {
                            record_us(h, us);
                        }
                    }
                    Err(e) => {
                        let mut errors = errors.lock();
                        *errors += 1;
                        if *errors <= 5 {
                            eprintln!("hexmarket-loadgen: {kind}: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = target.probe_sample();
    let mut report = Report::new("analytics");
    let histograms = histograms.lock();
    let mut all = latency_histogram();
    let mut requests = 0;
    for (kind, h) in histograms.iter() {
        requests += h.len();
        merge(&mut all, h);
        report.latency(&format!("{kind}_latency"), h);
    }
    report.latency("all_latency", &all);
    report.count("requests", requests);
    report.count("errors", *errors.lock());
    report.add(
        "requests_per_s",
        (requests as f64 / seconds).round(),
        format!("{:.0}", requests as f64 / seconds),
    );
    if let (Some(before), Some(after)) = (before, after) {
        report.server_cost(
            "server",
            (before, after),
            seconds,
            ("cpu_us_per_request", "request", requests),
        );
    }
    Ok(report)
}
