//! A checkout cut off at every one of its writes, as a node killed mid-request leaves it, then
//! retried with the same key on a fresh node: it completes once, with its stock held once and
//! one payment that pays every order.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hexmarket::config::Settings;
use hexmarket::domain::catalog::Product;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::CategoryId;
use hexmarket::store::{
    Cas, Key, Page, Row, ScanRange, SharedStore, Store, StoreError, StoreResult, Table, Version,
};
use serde_json::{Value, json};

use crate::fixtures::{berlin, seed_product, seed_vendor, stock_product, user_token};
use crate::helpers::{TestApp, spawn_app_with, spawn_on_store};

/// Writes let through before the cut when the store is not armed.
const UNARMED: i64 = i64::MAX;

/// A store that a crash cuts off: once armed with `n`, the first `n - 1` writes land, the
/// `n`-th is the one the crash falls on (it lands with its answer lost, or does not land), and
/// no later write lands. Reads always answer, as they would on the surviving nodes.
struct CutStore {
    inner: SharedStore,
    left: AtomicI64,
    /// Whether the write the crash falls on lands.
    cut_write_lands: bool,
}

/// What happens to one write.
enum Fate {
    Lands,
    /// The crash falls on this write.
    Cut,
    Lost,
}

impl CutStore {
    fn new(inner: SharedStore, cut_write_lands: bool) -> Self {
        CutStore {
            inner,
            left: AtomicI64::new(UNARMED),
            cut_write_lands,
        }
    }

    fn arm(&self, writes: i64) {
        self.left.store(writes, Ordering::SeqCst);
    }

    fn fate(&self) -> Fate {
        match self.left.fetch_sub(1, Ordering::SeqCst) {
            left if left > 1 => Fate::Lands,
            1 => Fate::Cut,
            _ => Fate::Lost,
        }
    }

    /// Runs one write according to its fate.
    async fn write<T>(
        &self,
        write: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match self.fate() {
            Fate::Lands => write.await,
            Fate::Cut if self.cut_write_lands => {
                write.await?;
                Err(StoreError::Timeout)
            }
            Fate::Cut | Fate::Lost => Err(StoreError::Unavailable("the node was killed".into())),
        }
    }

    fn cut(&self) -> bool {
        self.left.load(Ordering::SeqCst) <= 0
    }
}

#[async_trait]
impl Store for CutStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Row>> {
        self.inner.get(table, key).await
    }

    async fn insert(
        &self,
        table: Table,
        key: &Key,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas> {
        self.write(self.inner.insert(table, key, data, ttl)).await
    }

    async fn update(
        &self,
        table: Table,
        key: &Key,
        expected: Version,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas> {
        self.write(self.inner.update(table, key, expected, data, ttl))
            .await
    }

    async fn delete(&self, table: Table, key: &Key, expected: Version) -> StoreResult<Cas> {
        self.write(self.inner.delete(table, key, expected)).await
    }

    async fn put(
        &self,
        table: Table,
        rows: Vec<(Key, Bytes)>,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        self.write(self.inner.put(table, rows, ttl)).await
    }

    async fn scan(&self, table: Table, partition: &str, range: ScanRange) -> StoreResult<Page> {
        self.inner.scan(table, partition, range).await
    }

    async fn scan_table(
        &self,
        table: Table,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<Page> {
        self.inner.scan_table(table, cursor, limit).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

async fn stock(app: &TestApp, product: &Product) -> (u32, u32) {
    let stock = app.catalog.inventory.get(product.id).await.unwrap();
    (stock.available, stock.held)
}

async fn checkout(app: &TestApp, customer: &str, key: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(customer)
        .header("Idempotency-Key", key)
        .json(&json!({
            "delivery_address": {"text": "Torstraße 1, Berlin", "lat": 52.521, "lng": 13.41},
            "payment_method": "simulated",
        }))
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_checkout_cut_off_at_any_write_completes_once_when_retried() {
    // The first node seeds the catalog; every later node shares its store, as ScyllaDB is
    // shared. Retries take over a dead request's claim at once.
    let seeder = spawn_app_with(|s| {
        s.secret_key = Some("a shared secret of the test cluster, 32+ bytes".into());
        s.idempotency_lease = Duration::ZERO;
    })
    .await;
    let store = seeder.catalog.repo.products.store().clone();
    let settings: Settings = seeder.settings.clone();
    let (bakery, _) = seed_vendor(&seeder, "Bakery", berlin(0.0, 0.0)).await;
    let (florist, _) = seed_vendor(&seeder, "Florist", berlin(0.005, 0.0)).await;
    let category = CategoryId::new();
    let bread = seed_product(&seeder, &bakery, category, "Bread", 300).await;
    let roses = seed_product(&seeder, &florist, category, "Roses", 1500).await;
    stock_product(&seeder, &bread, 10_000).await;
    stock_product(&seeder, &roses, 10_000).await;

    let mut cuts = 0;
    for cut_write_lands in [false, true] {
        for writes in 1.. {
            let before = (stock(&seeder, &bread).await, stock(&seeder, &roses).await);
            let cut = Arc::new(CutStore::new(store.clone(), cut_write_lands));
            let doomed = spawn_on_store(settings.clone(), cut.clone()).await;
            let (_, customer) = user_token(&doomed, Role::Customer);
            for (product, quantity) in [(&bread, 2), (&roses, 1)] {
                let added = doomed
                    .client
                    .post(doomed.url("/api/v1/cart/items"))
                    .bearer_auth(&customer)
                    .json(&json!({"product_id": product.id, "quantity": quantity}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(added.status(), 200);
            }
            let key = format!("cut-{cut_write_lands}-{writes}");
            cut.arm(writes);
            let first = checkout(&doomed, &customer, &key).await;
            let was_cut = cut.cut();
            let _ = doomed.stop().await;
            if !was_cut {
                assert_eq!(first.status(), 201, "a checkout no crash reached");
                assert!(writes > 8, "a checkout writes more than {writes} times");
                break;
            }
            // What the node answered is lost with it (a write that failed after the orders and
            // the payment, such as emptying the cart, may not have stopped it answering).
            let first_answer: Option<Value> = if first.status() == 201 {
                first.json().await.ok()
            } else {
                None
            };
            cuts += 1;

            // The client retries on another node.
            let node = spawn_on_store(settings.clone(), store.clone()).await;
            let retried = checkout(&node, &customer, &key).await;
            let status = retried.status();
            let placed: Value = retried.json().await.unwrap();
            assert_eq!(status, 201, "retry after a cut at write {writes}: {placed}");
            if let Some(first) = first_answer {
                assert_eq!(first["checkout_id"], placed["checkout_id"]);
                assert_eq!(first["payment"]["id"], placed["payment"]["id"]);
            }
            let orders = placed["orders"].as_array().unwrap();
            assert_eq!(orders.len(), 2, "{placed}");
            let after = (stock(&node, &bread).await, stock(&node, &roses).await);
            assert_eq!(
                (
                    before.0.0 - after.0.0,
                    after.0.1 - before.0.1,
                    before.1.0 - after.1.0,
                    after.1.1 - before.1.1
                ),
                (2, 2, 1, 1),
                "stock held once after a cut at write {writes} (lands: {cut_write_lands})"
            );
            let total: i64 = orders
                .iter()
                .map(|o| o["totals"]["total"]["amount_minor"].as_i64().unwrap())
                .sum();
            assert_eq!(placed["payment"]["amount"]["amount_minor"], total);
            let cart: Value = node
                .get_authed("/api/v1/cart", &customer)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(cart["item_count"], 0, "the cart was emptied");

            // Once more: the same answer, replayed.
            let again = checkout(&node, &customer, &key).await;
            assert_eq!(again.status(), 201);
            let again: Value = again.json().await.unwrap();
            assert_eq!(again["checkout_id"], placed["checkout_id"]);
            assert_eq!(again["payment"]["id"], placed["payment"]["id"]);

            // The one payment pays every order.
            let payment = placed["payment"]["id"].as_str().unwrap();
            let paid = node
                .client
                .post(node.url(&format!("/api/v1/payments/{payment}/simulate")))
                .bearer_auth(&customer)
                .json(&json!({"outcome": "succeed"}))
                .send()
                .await
                .unwrap();
            assert_eq!(paid.status(), 200, "paying after a cut at write {writes}");
            for order in orders {
                let id = order["id"].as_str().unwrap();
                let seen: Value = node
                    .get_authed(&format!("/api/v1/orders/{id}"), &customer)
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    seen["status"], "paid",
                    "after a cut at write {writes}: {seen}"
                );
            }
            let sold = (stock(&node, &bread).await, stock(&node, &roses).await);
            assert_eq!(
                (sold.0.1, sold.1.1),
                (before.0.1, before.1.1),
                "the held units were sold"
            );
            let _ = node.stop().await;
        }
    }
    assert!(cuts > 16, "{cuts} crash points tried");
}
