//! A flash sale with late payers: the real server binary with a two-second payment timeout,
//! a product with 30 units, 100 buyers of whom every other one pays three to four and a half
//! seconds after checking out (after the order expired), buyers told "sold out" trying again
//! for a while (so expired units find new buyers), and the server killed with SIGKILL three
//! times during the run (restarted each time). Afterwards, straight from the store: units
//! sold = units of paid orders ≤ stock, and every captured payment is attached to paid orders
//! or given back: Σ captured − Σ refunded = Σ totals of paid orders.
//!
//! The counts are printed (`cargo test --test api late_payments -- --nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::ProductId;
use hexmarket::domain::inventory::Inventory;
use hexmarket::domain::order::{OrderRecord, OrderStatus};
use hexmarket::identity::tokens::AccessTokens;
use hexmarket::payments::{Payment, PaymentStatus};
use hexmarket::store::catalog::id_key;
use hexmarket::store::embedded::EmbeddedStore;
use hexmarket::store::typed::Rows;
use hexmarket::store::{SharedStore, Table};
use serde_json::{Value, json};

use crate::flash_sale::{spawn_server, stock_the_shop, stored_payments, try_checkout};
use crate::helpers::{client, free_port, wait_healthy};

const STOCK: u32 = 30;
const BUYERS: usize = 100;
const JWT_SECRET: &str = "late-payments-test-secret-of-at-least-32-bytes";
/// How long sold-out buyers keep trying.
const TRYING_FOR: Duration = Duration::from_secs(7);

/// What one buyer was told.
#[derive(Debug)]
enum Fate {
    /// Checked out and told the payment succeeded: the checkout answer.
    Told(Value),
    SoldOut,
}

struct Buyer {
    token: String,
    /// Waits this long after checking out before paying (0: pays at once).
    pay_after: Duration,
    starts_after: Duration,
}

async fn buy(base: String, buyer: Arc<Buyer>, product: ProductId, started: Instant) -> Fate {
    let http = client();
    let token = &buyer.token;
    let mut key = uuid::Uuid::new_v4().to_string();
    let pause = || tokio::time::sleep(Duration::from_millis(150));
    tokio::time::sleep(buyer.starts_after).await;
    let deadline = started + Duration::from_secs(60);
    let mut checkout: Option<Value> = None;
    while Instant::now() < deadline {
        if checkout.is_none() {
            let Some((status, body)) = try_checkout(&http, &base, token, product, &key).await
            else {
                pause().await;
                continue;
            };
            match (status, body["code"].as_str()) {
                (201, _) => {
                    checkout = Some(body);
                    tokio::time::sleep(buyer.pay_after).await;
                }
                (409, Some("insufficient_stock")) if started.elapsed() < TRYING_FOR => {
                    // Units come back as orders expire: try again under a new key (a refused
                    // checkout is answered the same way on a retry with its key).
                    key = uuid::Uuid::new_v4().to_string();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (409, Some("insufficient_stock")) => return Fate::SoldOut,
                _ => pause().await,
            }
            continue;
        }
        let Some(body) = &checkout else { continue };
        let payment = body["payment"]["id"].as_str().unwrap_or_default();
        let paid = http
            .post(format!("{base}/api/v1/payments/{payment}/simulate"))
            .bearer_auth(token)
            .json(&json!({"outcome": "succeed"}))
            .send()
            .await;
        match paid {
            Ok(r) if r.status() == 200 => return Fate::Told(body.clone()),
            _ => pause().await,
        }
    }
    panic!("a buyer did not finish before the deadline");
}

/// Whether the order a buyer was told about has settled: paid, or its payment given back and
/// refunded.
async fn settled(base: &str, token: &str, told: &Value) -> bool {
    let http = client();
    let order = told["orders"][0]["id"].as_str().unwrap_or_default();
    let payment = told["payment"]["id"].as_str().unwrap_or_default();
    let get = |path: String| {
        let request = http.get(format!("{base}{path}")).bearer_auth(token);
        async move {
            match request.send().await {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                _ => None,
            }
        }
    };
    let Some(order) = get(format!("/api/v1/orders/{order}")).await else {
        return false;
    };
    if order["status"] == "paid" {
        return true;
    }
    if order["payment_returned"].is_null() {
        return false;
    }
    get(format!("/api/v1/payments/{payment}"))
        .await
        .is_some_and(|p| p["status"] == "refunded")
}

#[actix_web::test]
async fn late_payers_in_a_flash_sale_through_kill_9s_are_served_or_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let (product, _) = stock_the_shop(dir.path(), STOCK).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let spawn_server = || {
        spawn_server(
            dir.path(),
            port,
            JWT_SECRET,
            &[("HEXMARKET_ORDER_PAYMENT_TIMEOUT_SECS", "2")],
        )
    };
    let mut server = spawn_server();
    wait_healthy(&base, Duration::from_secs(30)).await;

    let tokens = AccessTokens::new(JWT_SECRET.as_bytes());
    let now = Utc::now();
    let buyers: Vec<Arc<Buyer>> = (0..BUYERS)
        .map(|i| {
            let id = hexmarket::domain::ids::UserId::new();
            let late = i % 2 == 1;
            Arc::new(Buyer {
                token: tokens.issue(id, Role::Customer, now, None, now).unwrap(),
                pay_after: if late {
                    Duration::from_millis(3_000 + (i as u64 * 137) % 1_500)
                } else {
                    Duration::ZERO
                },
                starts_after: Duration::from_millis((i as u64 % 10) * 300),
            })
        })
        .collect();

    let started = Instant::now();
    let runs: Vec<_> = buyers
        .iter()
        .map(|b| actix_web::rt::spawn(buy(base.clone(), Arc::clone(b), product, started)))
        .collect();
    for at in [
        Duration::from_millis(1_200),
        Duration::from_millis(3_500),
        Duration::from_millis(5_800),
    ] {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        server.kill().await.expect("server killed");
        server = spawn_server();
        wait_healthy(&base, Duration::from_secs(30)).await;
    }
    let mut fates = Vec::with_capacity(BUYERS);
    for run in runs {
        fates.push(run.await.expect("buyer task"));
    }

    // Every buyer told their payment succeeded ends served or refunded (the sweep finishes
    // what the kills cut short).
    let told: Vec<(&Arc<Buyer>, &Value)> = buyers
        .iter()
        .zip(&fates)
        .filter_map(|(b, f)| match f {
            Fate::Told(body) => Some((b, body)),
            Fate::SoldOut => None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (buyer, body) in &told {
        while !settled(&base, &buyer.token, body).await {
            assert!(Instant::now() < deadline, "never settled: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    server.kill().await.expect("server killed");

    // Straight from the store.
    let store: SharedStore = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let payments = stored_payments(&store).await;
    let orders: Rows<OrderRecord> = Rows::new(store.clone(), Table::Orders);
    let (orders, more) = orders.scan_table(None, 1_000).await.unwrap();
    assert!(more.is_none());
    let orders: Vec<OrderRecord> = orders.into_iter().map(|(_, o)| o.value).collect();
    let inventory: Rows<Inventory> = Rows::new(store.clone(), Table::Inventory);
    let inventory = inventory
        .get(&id_key(product))
        .await
        .unwrap()
        .unwrap()
        .value;

    let captured: Vec<&Payment> = payments
        .iter()
        .filter(|p| !matches!(p.status, PaymentStatus::Pending | PaymentStatus::Failed))
        .collect();
    let captured_minor: i64 = captured.iter().map(|p| p.amount.amount_minor).sum();
    let refunded_minor: i64 = payments.iter().map(|p| p.refunded_minor).sum();
    let paid: Vec<&OrderRecord> = orders
        .iter()
        .filter(|o| o.paid_at.is_some() && o.status() == OrderStatus::Paid)
        .collect();
    let paid_minor: i64 = paid
        .iter()
        .map(|o| o.totals.unwrap().total.amount_minor)
        .sum();
    let paid_units: u64 = paid
        .iter()
        .flat_map(|o| o.order.lines.iter().map(|l| u64::from(l.quantity)))
        .sum();
    let revived = paid.iter().filter(|o| o.paid_at > o.expires_at).count();
    let returned = orders
        .iter()
        .filter(|o| o.payment_returned.is_some())
        .count();
    let late_told = told
        .iter()
        .filter(|(b, _)| b.pay_after > Duration::ZERO)
        .count();
    eprintln!(
        "late payments: {BUYERS} buyers, {} told paid ({late_told} of them late payers), \
         {} sold out; {} orders paid ({revived} revived after their deadline), {} units sold of \
         {STOCK}; {returned} payments given back ({} of {} minor units captured refunded)",
        told.len(),
        BUYERS - told.len(),
        paid.len(),
        inventory.sold_total,
        refunded_minor,
        captured_minor,
    );

    assert!(
        late_told > 0,
        "some late payer was told the payment succeeded"
    );
    assert_eq!(
        captured.len(),
        told.len(),
        "one captured payment per buyer told so"
    );
    assert_eq!(
        inventory.sold_total, paid_units,
        "units sold = units of paid orders"
    );
    assert!(paid_units <= u64::from(STOCK), "never more than the stock");
    assert_eq!(
        u64::from(inventory.stock) + inventory.sold_total,
        u64::from(STOCK),
        "every unit is on sale or sold"
    );
    assert_eq!(
        captured_minor - refunded_minor,
        paid_minor,
        "Σ captured − Σ refunded = Σ totals of paid orders"
    );
    // Each captured payment: its order is paid, or the whole payment went back.
    for payment in &captured {
        let order = orders
            .iter()
            .find(|o| o.order.checkout_id == payment.checkout_id)
            .unwrap();
        match order.status() {
            OrderStatus::Paid => assert_eq!(payment.refunded_minor, 0, "{payment:?}"),
            _ => {
                assert!(order.payment_returned.is_some(), "{order:?}");
                assert_eq!(payment.status, PaymentStatus::Refunded, "{payment:?}");
            }
        }
    }
}
