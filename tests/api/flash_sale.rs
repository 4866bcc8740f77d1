//! The flash sale: the real server binary on the embedded store, a product with 100 units,
//! 1,000 buyers checking out and paying at once, and the server killed with SIGKILL three
//! times during the run (restarted each time). Nothing oversells, nothing acknowledged is
//! lost, no order is left hanging.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use hexmarket::domain::catalog::{
    Attributes, OpeningHours, Product, Vendor, VendorStatus, Visibility,
};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, ProductId, UserId, VendorId};
use hexmarket::domain::inventory::{Inventory, StockChange};
use hexmarket::domain::money::{Currency, Money};
use hexmarket::domain::order::{OrderRecord, OrderStatus};
use hexmarket::identity::tokens::AccessTokens;
use hexmarket::payments::Payment;
use hexmarket::store::catalog::{CatalogRepo, id_key};
use hexmarket::store::embedded::EmbeddedStore;
use hexmarket::store::typed::Rows;
use hexmarket::store::{SharedStore, Table};
use serde_json::{Value, json};

use crate::helpers::{client, free_port, wait_healthy};

const STOCK: u32 = 100;
const BUYERS: usize = 1_000;
const JWT_SECRET: &str = "flash-sale-test-secret-of-at-least-32-bytes";

/// Writes a store with one product of `units` units straight into the data directory.
pub(crate) async fn stock_the_shop(dir: &std::path::Path, units: u32) -> (ProductId, UserId) {
    let store: SharedStore = Arc::new(EmbeddedStore::open(&dir.join("store")).unwrap());
    let repo = CatalogRepo::new(store.clone());
    let now = Utc::now();
    let owner = UserId::new();
    let location = hexmarket::domain::geo::GeoPoint::new(52.52, 13.405).unwrap();
    let vendor = Vendor {
        id: VendorId::new(),
        owner,
        name: "Flash Sale Shop".into(),
        description: String::new(),
        pickup_address: "Alexanderplatz 1".into(),
        location,
        cell: location.cell().to_string(),
        opening_hours: OpeningHours::default(),
        delivery_radius_km: 10.0,
        status: VendorStatus::Active,
        created_at: now,
        updated_at: now,
    };
    repo.vendors
        .insert(&id_key(vendor.id), &vendor)
        .await
        .unwrap()
        .unwrap();
    repo.owners
        .insert(&id_key(owner), &vendor.id)
        .await
        .unwrap()
        .unwrap();
    let product = Product {
        id: ProductId::new(),
        vendor_id: vendor.id,
        title: "Limited sneakers".into(),
        description: String::new(),
        category_id: CategoryId::new(),
        price: Money::new(9_900, Currency::EUR),
        attributes: Attributes::new(),
        visibility: Visibility::Published,
        images: Vec::new(),
        created_at: now,
        updated_at: now,
        hidden: false,
    };
    repo.products
        .insert(&id_key(product.id), &product)
        .await
        .unwrap()
        .unwrap();
    let mut inventory = Inventory::default();
    inventory
        .adjust(
            "a".into(),
            StockChange::Set(units),
            "drop".into(),
            owner.to_string(),
            now,
        )
        .unwrap();
    let rows: Rows<Inventory> = Rows::new(store, Table::Inventory);
    rows.insert(&id_key(product.id), &inventory)
        .await
        .unwrap()
        .unwrap();
    (product.id, owner)
}

/// The server binary on `dir`'s data, listening on `port`, with `env` on top of the basics.
pub(crate) fn spawn_server(
    dir: &std::path::Path,
    port: u16,
    jwt_secret: &str,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hexmarket"))
        .env_clear()
        .env("HEXMARKET_DATA_DIR", dir)
        .env("HEXMARKET_LISTEN", format!("127.0.0.1:{port}"))
        .env("HEXMARKET_LOG", "warn")
        .env("HEXMARKET_JWT_SECRET", jwt_secret)
        .env("HEXMARKET_IDEMPOTENCY_LEASE_SECS", "2")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts")
}

/// Puts one unit of `product` in the cart (again, after a crash) and checks out under `key`:
/// the answer's status and body, or `None` when the server did not answer.
pub(crate) async fn try_checkout(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    product: ProductId,
    key: &str,
) -> Option<(u16, Value)> {
    let cleared = http
        .delete(format!("{base}/api/v1/cart"))
        .bearer_auth(token)
        .send()
        .await;
    let added = http
        .post(format!("{base}/api/v1/cart/items"))
        .bearer_auth(token)
        .json(&json!({"product_id": product, "quantity": 1}))
        .send()
        .await;
    if !matches!((&cleared, &added), (Ok(c), Ok(a)) if c.status() == 200 && a.status() == 200) {
        return None;
    }
    let response = http
        .post(format!("{base}/api/v1/checkout"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&json!({
            "delivery_address": {"text": "Torstraße 1, Berlin", "lat": 52.53, "lng": 13.40},
            "payment_method": "simulated",
        }))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.ok()?;
    Some((status, body))
}

/// Every payment row of the store (not its index rows or marks).
pub(crate) async fn stored_payments(store: &SharedStore) -> Vec<Payment> {
    let mut payments = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .scan_table(Table::Payments, cursor, 500)
            .await
            .expect("payments scan");
        for row in page.rows {
            // Index rows (by provider reference, by checkout) and marks have a `kind:` prefix.
            if row.key.partition.contains(':') {
                continue;
            }
            payments.push(hexmarket::store::decode(Table::Payments, &row.data).unwrap());
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => return payments,
        }
    }
}

/// What happened to one buyer.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// Checked out (201) and paid: its checkout answer.
    Bought(Value),
    /// Told the product was sold out (409 insufficient_stock).
    SoldOut,
}

async fn buy(base: String, token: String, product: ProductId, deadline: Instant) -> Fate {
    let http = client();
    let key = uuid::Uuid::new_v4().to_string();
    let pause = || tokio::time::sleep(Duration::from_millis(100));
    let mut checkout: Option<Value> = None;
    while Instant::now() < deadline {
        if checkout.is_none() {
            let Some((status, body)) = try_checkout(&http, &base, &token, product, &key).await
            else {
                pause().await;
                continue;
            };
            match (status, body["code"].as_str()) {
                (201, _) => checkout = Some(body),
                (409, Some("insufficient_stock")) => return Fate::SoldOut,
                (status, code) => {
                    if std::env::var("FLASH_DEBUG").is_ok() {
                        eprintln!("checkout answered {status} {code:?}: {body}");
                    }
                    pause().await;
                    continue;
                }
            }
        }
        let Some(body) = &checkout else { continue };
        let payment = body["payment"]["id"].as_str().unwrap_or_default();
        let paid = http
            .post(format!("{base}/api/v1/payments/{payment}/simulate"))
            .bearer_auth(&token)
            .json(&json!({"outcome": "succeed"}))
            .send()
            .await;
        match paid {
            Ok(r) if r.status() == 200 => return Fate::Bought(body.clone()),
            Ok(r) => {
                if std::env::var("FLASH_DEBUG").is_ok() {
                    let status = r.status();
                    eprintln!("simulate answered {status}: {:?}", r.text().await);
                }
                pause().await
            }
            _ => pause().await,
        }
    }
    panic!("a buyer did not finish before the deadline");
}

#[actix_web::test]
async fn a_flash_sale_through_three_kill_9s_sells_exactly_the_stock() {
    let dir = tempfile::tempdir().unwrap();
    let (product, owner) = stock_the_shop(dir.path(), STOCK).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let spawn_server = || spawn_server(dir.path(), port, JWT_SECRET, &[]);
    let mut server = spawn_server();
    wait_healthy(&base, Duration::from_secs(30)).await;

    let tokens = AccessTokens::new(JWT_SECRET.as_bytes());
    let now = Utc::now();
    let buyers: Vec<(UserId, String)> = (0..BUYERS)
        .map(|_| {
            let id = UserId::new();
            (
                id,
                tokens.issue(id, Role::Customer, now, None, now).unwrap(),
            )
        })
        .collect();

    // Watch availability all along: it must never read negative.
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let watcher = {
        let (base, lowest) = (base.clone(), Arc::clone(&lowest));
        actix_web::rt::spawn(async move {
            let http = client();
            loop {
                if let Ok(r) = http
                    .get(format!("{base}/api/v1/products/{product}"))
                    .send()
                    .await
                    && let Ok(body) = r.json::<Value>().await
                    && let Some(available) = body["available"].as_i64()
                {
                    lowest.fetch_min(available, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(240);
    let started = Instant::now();
    let runs: Vec<_> = buyers
        .iter()
        .map(|(_, token)| actix_web::rt::spawn(buy(base.clone(), token.clone(), product, deadline)))
        .collect();

    // Three kill -9s while the buyers run, each followed by a restart.
    for at in [
        Duration::from_millis(700),
        Duration::from_millis(1_800),
        Duration::from_millis(3_200),
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
    watcher.abort();
    let bought: Vec<&Value> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::Bought(body) => Some(body),
            Fate::SoldOut => None,
        })
        .collect();
    assert_eq!(bought.len(), STOCK as usize, "exactly the stock was sold");
    let lowest = lowest.load(Ordering::SeqCst);
    assert!(lowest != i64::MAX, "availability was read during the sale");
    assert!(lowest >= 0, "available never read negative");

    // Every buyer with a 201 has its (paid) order; every sold-out buyer has none.
    let http = client();
    for ((_, token), fate) in buyers.iter().zip(&fates) {
        let mine: Value = http
            .get(format!("{base}/api/v1/orders"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let orders = mine["items"].as_array().cloned().unwrap_or_default();
        match fate {
            Fate::Bought(body) => {
                assert_eq!(orders.len(), 1, "{mine}");
                assert_eq!(orders[0]["id"], body["orders"][0]["id"]);
                assert_eq!(orders[0]["status"], "paid");
            }
            Fate::SoldOut => assert!(orders.is_empty(), "a sold-out buyer has an order: {mine}"),
        }
    }
    let vendor_token = tokens.issue(owner, Role::Vendor, now, None, now).unwrap();
    let stock: Value = http
        .get(format!("{base}/api/v1/products/{product}/inventory"))
        .bearer_auth(&vendor_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            &stock["stock"],
            &stock["held"],
            &stock["available"],
            &stock["sold_total"]
        ),
        (&json!(0), &json!(0), &json!(0), &json!(STOCK))
    );

    // Straight from the store: one payment per checkout, and no order left hanging.
    server.kill().await.expect("server killed");
    let store: SharedStore = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let mut payments_per_checkout: HashMap<String, usize> = HashMap::new();
    for payment in stored_payments(&store).await {
        *payments_per_checkout
            .entry(payment.checkout_id.to_string())
            .or_default() += 1;
    }
    assert_eq!(payments_per_checkout.len(), STOCK as usize);
    assert!(
        payments_per_checkout.values().all(|n| *n == 1),
        "{payments_per_checkout:?}"
    );
    let orders: Rows<OrderRecord> = Rows::new(store, Table::Orders);
    let (rows, _) = orders.scan_table(None, 1_000).await.unwrap();
    assert_eq!(rows.len(), STOCK as usize);
    for (_, order) in rows {
        assert_eq!(
            order.value.order.status,
            OrderStatus::Paid,
            "order {}",
            order.value.order.id
        );
    }
}
