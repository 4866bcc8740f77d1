//! Notification throughput, in two steps run against two starts of one node:
//!
//! 1. `orders`: `--orders` paid orders (one-unit cart add, checkout, simulated payment), by
//!    demo customers from stores near the demo centre, `--concurrency` at a time, on a node
//!    started with `HEXMARKET_NOTIFICATIONS=false`: the order journal fills, nothing is sent.
//! 2. `drain`: on the node started again with notifications on (and its email going to
//!    `smtp-sink` on loopback), polls `/metrics` until the consumer and the sender have
//!    delivered `--expect` notifications (in-app entries written, messages sent or skipped),
//!    and reports how fast: the outbox's sustained throughput on the embedded store, from the
//!    backlog's first notification to its last, and the server's CPU per notification.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use futures_util::future::join_all;
use serde_json::json;
use tokio::time::Instant;

use super::Target;
use super::accounts::demo_users;
use super::checkout::{check_out, checkout_body, nearby_products, set_stock};
use super::report::Report;
use hexmarket::domain::identity::Role;

#[derive(Debug, Args)]
pub struct OrdersArgs {
    /// Paid orders to place.
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Orders in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Demo customers to act as (`customer0..`); they must exist.
    #[arg(long, default_value_t = 500)]
    pub customers: usize,
    /// Products the orders spread over.
    #[arg(long, default_value_t = 100)]
    pub products: usize,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Notifications to wait for.
    #[arg(long)]
    pub expect: u64,
    /// Give up after this long.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

/// Units each product is stocked with.
const PLENTY: u32 = 1_000_000;

pub async fn orders(target: &Target, args: &OrdersArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.orders),
        "--orders: 1 to 1000000"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.concurrency),
        "--concurrency: 1 to 10000"
    );
    target.api.wait_healthy(Duration::from_secs(10)).await?;
    let customers = demo_users(&target.api, &target.minter, Role::Customer, args.customers).await?;
    let tokens: Vec<String> = customers
        .iter()
        .map(|c| target.minter.mint(*c, Role::Customer))
        .collect::<anyhow::Result<_>>()?;
    let products = nearby_products(target, args.products).await?;
    anyhow::ensure!(!products.is_empty(), "no products near the demo centre");
    for product in &products {
        set_stock(&target.api, product, PLENTY).await?;
    }
    let workers = args.concurrency.min(tokens.len());
    let next = AtomicUsize::new(0);
    let paid = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let body = checkout_body();
    let started = Instant::now();
    join_all((0..workers).map(|w| {
        let (next, paid, failed, body, tokens, products) =
            (&next, &paid, &failed, &body, &tokens, &products);
        async move {
            let mine: Vec<&String> = tokens.iter().skip(w).step_by(workers).collect();
            let mut turn = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.orders {
                    return;
                }
                let token = mine[turn % mine.len()];
                turn += 1;
                let product = &products[n % products.len()];
                let placed = async {
                    let add = json!({"product_id": product.id, "quantity": 1});
                    target.api.post("/api/v1/cart/items", token, &add).await?;
                    let checkout = check_out(&target.api, token, body).await?;
                    let payment = checkout["payment"]["id"]
                        .as_str()
                        .ok_or_else(|| anyhow::anyhow!("no payment in {checkout}"))?
                        .to_owned();
                    target
                        .api
                        .post(
                            &format!("/api/v1/payments/{payment}/simulate"),
                            token,
                            &json!({"outcome": "succeed"}),
                        )
                        .await
                };
                match placed.await {
                    Ok(_) => paid.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }))
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut report = Report::new("orders");
    let paid = paid.into_inner();
    report.count("paid_orders", paid);
    report.count("failed_orders", failed.into_inner());
    report.add(
        "orders_per_s",
        paid as f64 / seconds,
        format!(
            "{:.0} paid orders/s ({paid} in {seconds:.1} s)",
            paid as f64 / seconds
        ),
    );
    Ok(report)
}

/// Notifications delivered so far, by the node's counters: in-app entries written, and outbox
/// messages sent or skipped.
async fn delivered(target: &Target) -> anyhow::Result<u64> {
    let text = target.api.text("/metrics").await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("hexmarket_notifications_total{"))
        .filter(|l| {
            l.contains("outcome=\"written\"")
                || l.contains("outcome=\"sent\"")
                || l.contains("outcome=\"skipped\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

pub async fn drain(target: &Target, args: &DrainArgs) -> anyhow::Result<Report> {
    let limit = super::check_duration("--timeout-secs", args.timeout_secs)?;
    target.api.wait_healthy(Duration::from_secs(10)).await?;
    let start = Instant::now();
    let before = target.probe_sample();
    let mut first: Option<(Instant, u64)> = None;
    let mut last = (start, 0);
    loop {
        let now = delivered(target).await?;
        let at = Instant::now();
        if now > 0 && first.is_none() {
            first = Some((at, now));
        }
        if now > last.1 {
            last = (at, now);
        }
        if now >= args.expect || at - start > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = target.probe_sample();
    let (first_at, first_count) = first.unwrap_or((start, 0));
    let seconds = (last.0 - first_at).as_secs_f64().max(1e-3);
    let rate = (last.1 - first_count) as f64 / seconds;
    let mut report = Report::new("notifications");
    report.count("delivered", last.1);
    report.count("expected", args.expect);
    report.add(
        "notifications_per_s",
        rate,
        format!(
            "{rate:.0} notifications/s ({} between the backlog's first and last, in {seconds:.1} s)",
            last.1 - first_count
        ),
    );
    report.add(
        "start_to_first_s",
        (first_at - start).as_secs_f64(),
        format!(
            "{:.1} s from start to the first notification (lease, catch-up)",
            (first_at - start).as_secs_f64()
        ),
    );
    if let (Some(before), Some(after)) = (before, after) {
        report.server_cost(
            "server",
            (before, after),
            (last.0 - start).as_secs_f64(),
            ("server_cpu_us_per_notification", "notification", last.1),
        );
    }
    anyhow::ensure!(
        last.1 >= args.expect,
        "only {} of {} notifications were delivered within {limit:?}",
        last.1,
        args.expect
    );
    Ok(report)
}
