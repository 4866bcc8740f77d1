//! The `checkout` scenario, against a node seeded by `seed-demo`, paid with the simulated
//! provider. Two phases in one run:
//!
//! 1. *Uncontended*: `--concurrency` workers, each a loop of "add one unit of a product to a
//!    customer's cart, check the cart out with a fresh `Idempotency-Key`", for
//!    `--duration-secs`. Products go round-robin over `--products` products of stores near the
//!    delivery address, each stocked with a million units by its vendor, so no product is hot.
//!    Customers are split between the workers (a customer is only ever used by one worker, so
//!    carts never mix) and cycled; cart and checkout routes have no per-user rate limit (only
//!    sign-in and OTP do), so cycling a few hundred customers throttles nothing.
//! 2. *Flash sale*: one other product gets `--stock` units from its vendor; `--buyers` customers
//!    each put it in an emptied cart, then all check out at once, `--concurrency` at a time.
//!    Exactly `min(stock, buyers)` checkouts must succeed and the rest be refused. The winners
//!    then pay (simulated success), after which the product's stock must read 0 and its sold
//!    total must have grown by the units sold. An oversell, or stock that does not add up, is
//!    reported and fails the run.
//!
//! Tokens are minted with the node's key, as in the other scenarios.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use uuid::Uuid;

use super::accounts::demo_users;
use super::api::{Api, refused_code};
use super::report::{Report, latency_histogram, record_us};
use super::{Target, check_duration, probe};
use hexmarket::domain::geo::GeoPoint;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::UserId;
use hexmarket::seed::DEMO_CENTER;

#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// Requests in flight: workers of the uncontended phase, and the flash sale's concurrency.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Demo customers to act as (`customer0..`); they must exist.
    #[arg(long, default_value_t = 500)]
    pub customers: usize,
    /// Length of the uncontended phase.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Products the uncontended phase spreads its checkouts over.
    #[arg(long, default_value_t = 100)]
    pub products: usize,
    /// Units of the flash sale's product.
    #[arg(long, default_value_t = 200)]
    pub stock: u32,
    /// Customers in the flash sale, each buying one unit (default: 2000 or every customer,
    /// whichever is fewer).
    #[arg(long)]
    pub buyers: Option<usize>,
}

/// The delivery address: Alexanderplatz, the demo city's centre.
const ADDRESS: GeoPoint = DEMO_CENTER;
/// Products come from stores this close to the address (every demo store delivers ≥ 5 km).
const STORE_RADIUS_KM: u32 = 4;
/// Stock of each product of the uncontended phase (the most a product may have).
const PLENTY: u32 = 1_000_000;
/// How long the flash sale's stock may take to settle once everything is paid.
const SETTLE: Duration = Duration::from_secs(20);

/// A product on sale and the token of the vendor who owns it.
pub(crate) struct Stocked {
    pub(crate) id: String,
    vendor_token: String,
}

/// Latencies and failures of one kind of call.
struct Calls {
    ok: u64,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Calls {
    fn new() -> Self {
        Calls {
            ok: 0,
            latency: latency_histogram(),
            errors: BTreeMap::new(),
        }
    }

    /// Counts one call that started at `sent`; successes go into the latency histogram.
    fn record<T>(&mut self, sent: Instant, result: &anyhow::Result<T>) {
        match result {
            Ok(_) => {
                self.ok += 1;
                record_us(&mut self.latency, sent.elapsed().as_micros() as i64);
            }
            Err(e) => *self.errors.entry(failure(e)).or_default() += 1,
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A failed call as `HTTP 409 insufficient_stock`, or `transport` when nothing answered.
fn failure(e: &anyhow::Error) -> String {
    match refused_code(e) {
        Some((status, code)) => format!("HTTP {} {code}", status.as_u16()),
        None => "transport".into(),
    }
}

pub async fn run(
    target: &Target,
    args: &CheckoutArgs,
    json_out: Option<&Path>,
) -> anyhow::Result<Report> {
    let duration = check_duration("--duration-secs", args.duration_secs)?;
    anyhow::ensure!(
        (1..=10_000).contains(&args.concurrency),
        "--concurrency: must be 1 to 10000"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.customers),
        "--customers: must be 1 to 1000000"
    );
    anyhow::ensure!(
        (1..=1_000).contains(&args.products),
        "--products: must be 1 to 1000"
    );
    anyhow::ensure!(
        (1..=PLENTY).contains(&args.stock),
        "--stock: must be 1 to {PLENTY}"
    );
    let buyers = args.buyers.unwrap_or(args.customers.min(2_000));
    anyhow::ensure!(
        (1..=args.customers).contains(&buyers),
        "--buyers: must be 1 to --customers ({})",
        args.customers
    );
    target.api.wait_healthy(Duration::from_secs(10)).await?;

    let customers = demo_users(&target.api, &target.minter, Role::Customer, args.customers).await?;
    let tokens: Vec<String> = customers
        .iter()
        .map(|c| target.minter.mint(*c, Role::Customer))
        .collect::<anyhow::Result<_>>()?;
    let mut listed = nearby_products(target, args.products + 1).await?;
    anyhow::ensure!(
        listed.len() >= 2,
        "only {} products are listed within {STORE_RADIUS_KM} km of the delivery address",
        listed.len()
    );
    let flash = listed.remove(0);
    for product in &listed {
        set_stock(&target.api, product, PLENTY).await?;
    }

    let mut report = Report::new("checkout");
    report.add(
        "customers",
        tokens.len() as u64,
        format!(
            "{} demo customers, each used by one worker at a time (cart and checkout have no \
             per-user rate limit)",
            tokens.len()
        ),
    );
    report.count("concurrency", args.concurrency as u64);
    uncontended(target, args, duration, &tokens, &listed, &mut report).await?;
    let verdict = flash_sale(target, args, &tokens[..buyers], &flash, &mut report).await?;
    if let Err(problem) = verdict {
        print!("{}", report.text());
        if let Some(path) = json_out {
            let text = serde_json::to_string_pretty(&report.json())?;
            std::fs::write(path, text + "\n")
                .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
        }
        anyhow::bail!("flash sale: {problem}");
    }
    Ok(report)
}

/// Phase 1: add-then-check-out loops for `duration`, `--concurrency` at a time.
async fn uncontended(
    target: &Target,
    args: &CheckoutArgs,
    duration: Duration,
    tokens: &[String],
    products: &[Stocked],
    report: &mut Report,
) -> anyhow::Result<()> {
    let workers = args.concurrency.min(tokens.len());
    let adds = Mutex::new(Calls::new());
    let checkouts = Mutex::new(Calls::new());
    let next_product = AtomicUsize::new(0);
    let before = target.probe_sample();
    let started = Instant::now();
    let end = started + duration;
    let body = checkout_body();
    join_all((0..workers).map(|w| {
        let (adds, checkouts, next_product, body) = (&adds, &checkouts, &next_product, &body);
        async move {
            // This worker's customers: w, w + workers, w + 2 × workers, …
            let mine: Vec<&String> = tokens.iter().skip(w).step_by(workers).collect();
            let mut turn = 0usize;
            while Instant::now() < end {
                let token = mine[turn % mine.len()];
                turn += 1;
                let product =
                    &products[next_product.fetch_add(1, Ordering::Relaxed) % products.len()];
                let add = json!({"product_id": product.id, "quantity": 1});
                let sent = Instant::now();
                let added = target.api.post("/api/v1/cart/items", token, &add).await;
                adds.lock().record(sent, &added);
                if added.is_err() {
                    continue;
                }
                let sent = Instant::now();
                let done = check_out(&target.api, token, body).await;
                checkouts.lock().record(sent, &done);
            }
        }
    }))
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let after = target.probe_sample();
    let (adds, checkouts) = (adds.into_inner(), checkouts.into_inner());

    report.add(
        "uncontended_checkouts_per_s",
        checkouts.ok as f64 / seconds,
        format!(
            "{:.0} checkouts/s ({} in {seconds:.1} s, {} workers, {} products round-robin, \
             each after a one-unit cart add)",
            checkouts.ok as f64 / seconds,
            checkouts.ok,
            workers,
            products.len()
        ),
    );
    report.count("uncontended_checkouts", checkouts.ok);
    report.latency("checkout_latency", &checkouts.latency);
    report.latency("cart_add_latency", &adds.latency);
    report.add(
        "checkout_errors",
        json!(checkouts.errors),
        format!("{} {:?}", checkouts.error_count(), checkouts.errors),
    );
    report.add(
        "cart_add_errors",
        json!(adds.errors),
        format!("{} {:?}", adds.error_count(), adds.errors),
    );
    if let (Some(before), Some(after)) = (before, after) {
        report.server_cost(
            "uncontended_server",
            (before, after),
            seconds,
            (
                "server_cpu_us_per_checkout",
                "checkout (its cart add included)",
                checkouts.ok,
            ),
        );
    }
    Ok(())
}

/// Phase 2: the flash sale. `Ok(Err(problem))` when the figures do not add up (an oversell).
async fn flash_sale(
    target: &Target,
    args: &CheckoutArgs,
    buyers: &[String],
    product: &Stocked,
    report: &mut Report,
) -> anyhow::Result<Result<(), String>> {
    let api = &target.api;
    let inventory_path = format!("/api/v1/products/{}/inventory", product.id);
    set_stock(api, product, args.stock).await?;
    let before = api
        .get(&inventory_path, Some(&product.vendor_token))
        .await?;
    let sold_before = before["sold_total"].as_u64().unwrap_or(0);

    // Every buyer's cart holds exactly one unit of the product.
    let slots = Semaphore::new(args.concurrency);
    let add = json!({"product_id": product.id, "quantity": 1});
    let prepared = join_all(buyers.iter().map(|token| {
        let (slots, add) = (&slots, &add);
        async move {
            let _slot = slots.acquire().await?;
            api.call(Method::DELETE, "/api/v1/cart", Some(token), None, &[])
                .await?;
            api.post("/api/v1/cart/items", token, add).await
        }
    }))
    .await;
    if let Some(Err(e)) = prepared.iter().find(|r| r.is_err()) {
        anyhow::bail!("filling the flash sale buyers' carts: {e:#}");
    }

    let probe_before = target.probe_sample();
    let body = checkout_body();
    let calls = Mutex::new(Calls::new());
    let started = Instant::now();
    let answers = join_all(buyers.iter().map(|token| {
        let (slots, body, calls) = (&slots, &body, &calls);
        async move {
            let _slot = slots.acquire().await.ok()?;
            let sent = Instant::now();
            let result = check_out(api, token, body).await;
            calls.lock().record(sent, &result);
            let payment = result.ok()?["payment"]["id"].as_str()?.to_owned();
            Some((token, payment))
        }
    }))
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let probe_after = target.probe_sample();
    let calls = calls.into_inner();
    let winners: Vec<(&String, String)> = answers.into_iter().flatten().collect();
    let sold = calls.ok;
    let expected = u64::from(args.stock).min(buyers.len() as u64);
    let held = api
        .get(&inventory_path, Some(&product.vendor_token))
        .await?;

    // The winners pay; then the stock must be gone and sold.
    let paid = join_all(winners.iter().map(|(token, payment)| {
        let slots = &slots;
        async move {
            let _slot = slots.acquire().await?;
            api.post(
                &format!("/api/v1/payments/{payment}/simulate"),
                token,
                &json!({"outcome": "succeed"}),
            )
            .await
        }
    }))
    .await;
    let payment_failures = paid.iter().filter(|p| p.is_err()).count();
    let settle_by = Instant::now() + SETTLE;
    let settled = loop {
        let now = api
            .get(&inventory_path, Some(&product.vendor_token))
            .await?;
        let done = now["held"].as_u64() == Some(0)
            && now["sold_total"].as_u64().unwrap_or(0) >= sold_before + sold;
        if done || Instant::now() >= settle_by {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stock_after = settled["stock"].as_u64().unwrap_or(u64::MAX);
    let sold_total = settled["sold_total"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(sold_before);

    report.add(
        "flash_sale_stock",
        args.stock,
        format!(
            "{} units of one product, {} buyers of one unit each, {} at a time",
            args.stock,
            buyers.len(),
            args.concurrency
        ),
    );
    report.add(
        "flash_sale_seconds",
        seconds,
        format!(
            "{:.3} s from the first checkout sent to the last answer",
            seconds
        ),
    );
    report.add(
        "flash_sale_checkouts_per_s",
        sold as f64 / seconds,
        format!(
            "{:.0} successful checkouts/s ({:.0} answers/s)",
            sold as f64 / seconds,
            (calls.ok + calls.error_count()) as f64 / seconds
        ),
    );
    report.count("flash_sale_sold", sold);
    report.add(
        "flash_sale_refused",
        json!(calls.errors),
        format!("{} {:?}", calls.error_count(), calls.errors),
    );
    report.latency("flash_sale_latency", &calls.latency);
    report.add(
        "flash_sale_available_after_sale",
        held["available"].clone(),
        format!(
            "{} available, {} held right after the sale",
            held["available"], held["held"]
        ),
    );
    report.count("flash_sale_payment_failures", payment_failures as u64);
    report.add(
        "flash_sale_stock_after",
        stock_after,
        format!("{stock_after} in stock once paid (expected 0 when buyers ≥ stock)"),
    );
    report.add(
        "flash_sale_sold_total",
        sold_total,
        format!("{sold_total} units added to the product's sold total"),
    );
    if let (Some(before), Some(after)) = (probe_before, probe_after) {
        report.add(
            "flash_sale_server",
            probe::delta_json(before, after, seconds),
            probe::delta_human(before, after, seconds),
        );
    }
    let mut problems = Vec::new();
    if sold != expected {
        problems.push(format!("{sold} checkouts succeeded, expected {expected}"));
    }
    if sold > u64::from(args.stock) || sold_total > u64::from(args.stock) {
        problems.push(format!(
            "OVERSOLD: {sold} sold, {sold_total} units counted, of {} in stock",
            args.stock
        ));
    }
    if payment_failures == 0 && stock_after != u64::from(args.stock) - expected {
        problems.push(format!(
            "stock reads {stock_after} after the sale, expected {}",
            u64::from(args.stock) - expected
        ));
    }
    if payment_failures == 0 && sold_total != sold {
        problems.push(format!(
            "{sold_total} units counted as sold, but {sold} checkouts succeeded"
        ));
    }
    let verdict = if problems.is_empty() {
        "sold == stock: every unit sold once, the rest refused".to_owned()
    } else {
        problems.join("; ")
    };
    report.add(
        "flash_sale_ok",
        problems.is_empty(),
        problems.is_empty().to_string(),
    );
    report.add("flash_sale_verdict", verdict.clone(), verdict.clone());
    Ok(if problems.is_empty() {
        Ok(())
    } else {
        Err(verdict)
    })
}

/// The checkout request body every customer sends.
pub(crate) fn checkout_body() -> Value {
    json!({
        "delivery_address": {"text": "Alexanderplatz 1, Berlin", "lat": ADDRESS.lat, "lng": ADDRESS.lng},
        "payment_method": "simulated",
    })
}

/// Checks the caller's cart out with a fresh idempotency key.
pub(crate) async fn check_out(api: &Api, token: &str, body: &Value) -> anyhow::Result<Value> {
    let key = Uuid::new_v4().simple().to_string();
    api.call(
        Method::POST,
        "/api/v1/checkout",
        Some(token),
        Some(body),
        &[("Idempotency-Key", &key)],
    )
    .await
}

/// Up to `count` listed products of stores near the delivery address, with their vendors'
/// tokens.
pub(crate) async fn nearby_products(target: &Target, count: usize) -> anyhow::Result<Vec<Stocked>> {
    let mut hits: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    while hits.len() < count {
        let mut path = format!(
            "/api/v1/products?near={},{}&radius_km={STORE_RADIUS_KM}&limit=100",
            ADDRESS.lat, ADDRESS.lng
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", super::accounts::encode(c)));
        }
        let page = target.api.get(&path, None).await?;
        for hit in page["items"].as_array().into_iter().flatten() {
            if let (Some(id), Some(vendor)) = (hit["id"].as_str(), hit["vendor_id"].as_str()) {
                hits.push((id.to_owned(), vendor.to_owned()));
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    hits.truncate(count);
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut products = Vec::with_capacity(hits.len());
    for (id, vendor) in hits {
        let token = match owners.get(&vendor) {
            Some(token) => token.clone(),
            None => {
                let store = target
                    .api
                    .get(&format!("/api/v1/vendors/{vendor}"), None)
                    .await?;
                let owner: UserId = store["owner"]
                    .as_str()
                    .and_then(|o| o.parse().ok())
                    .with_context(|| format!("vendor {vendor}: no owner in {store}"))?;
                let token = target.minter.mint(owner, Role::Vendor)?;
                owners.insert(vendor, token.clone());
                token
            }
        };
        products.push(Stocked {
            id,
            vendor_token: token,
        });
    }
    Ok(products)
}

/// Sets a product's stock, as its vendor.
pub(crate) async fn set_stock(api: &Api, product: &Stocked, stock: u32) -> anyhow::Result<()> {
    api.call(
        Method::PUT,
        &format!("/api/v1/products/{}/inventory", product.id),
        Some(&product.vendor_token),
        Some(&json!({"stock": stock, "reason": "benchmark"})),
        &[],
    )
    .await
    .with_context(|| format!("stocking product {}", product.id))?;
    Ok(())
}
