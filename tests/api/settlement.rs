//! Settling payments with orders: a payment that arrives after its order expired revives the
//! order when the stock is still there and is given back when it is not; paid orders that
//! are cancelled or rejected put their units back on sale once (also across a restart);
//! orders name their payment.

use std::time::Duration;

use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, OrderId, ProductId};
use hexmarket::domain::inventory::Restocked;
use serde_json::{Value, json};

use crate::fixtures::{
    berlin, checkout_one, pay, seed_product, seed_vendor, stock_product, user_token,
};
use crate::helpers::{TestApp, get, ok_json, post, spawn_app, spawn_app_with, spawn_in};

/// A node whose unpaid orders expire after one second.
async fn impatient_app() -> TestApp {
    spawn_app_with(|s| s.order_payment_timeout = Duration::from_secs(1)).await
}

/// Waits until the order (as its customer reads it) satisfies `done`.
async fn eventually(
    app: &TestApp,
    token: &str,
    order: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = ok_json(get(app, token, &format!("/api/v1/orders/{order}")).await).await;
        if done(&seen) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {order} never got there: {seen}");
}

async fn event_types(app: &TestApp, token: &str, order: &str) -> Vec<String> {
    let log = ok_json(get(app, token, &format!("/api/v1/orders/{order}/events")).await).await;
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn payment(app: &TestApp, token: &str, checkout: &Value) -> Value {
    let id = checkout["payment"]["id"].as_str().unwrap();
    ok_json(get(app, token, &format!("/api/v1/payments/{id}")).await).await
}

async fn stock(app: &TestApp, product: ProductId) -> (u32, u64) {
    let view = app.catalog.inventory.get(product).await.unwrap();
    (view.stock, view.sold_total)
}

#[actix_web::test]
async fn a_payment_after_expiry_revives_the_order_when_its_stock_is_still_there() {
    // Arrange
    let app = impatient_app().await;
    let (shop, _) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    stock_product(&app, &bread, 3).await;
    let (_, customer) = user_token(&app, Role::Customer);
    let checkout = checkout_one(&app, &customer, &bread, berlin(0.001, 0.0)).await;
    let order = checkout["orders"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        checkout["orders"][0]["payment_id"],
        checkout["payment"]["id"]
    );
    eventually(&app, &customer, &order, |o| o["status"] == "expired").await;

    // Act
    pay(&app, &customer, &checkout).await;

    // Assert
    let seen = eventually(&app, &customer, &order, |o| o["status"] == "paid").await;
    assert_eq!(seen["payment_id"], checkout["payment"]["id"]);
    assert!(seen.get("payment_returned").is_none(), "{seen}");
    assert_eq!(
        event_types(&app, &customer, &order).await,
        ["created", "expired", "paid"]
    );
    assert_eq!(stock(&app, bread.id).await, (2, 1), "the unit is sold");
    assert_eq!(
        payment(&app, &customer, &checkout).await["status"],
        "succeeded"
    );
}

#[actix_web::test]
async fn a_payment_after_expiry_is_given_back_when_someone_else_bought_the_stock() {
    // Arrange: the last unit expires on one customer and is bought by another.
    let app = impatient_app().await;
    let (shop, _) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    stock_product(&app, &bread, 1).await;
    let (_, late) = user_token(&app, Role::Customer);
    let (_, quick) = user_token(&app, Role::Customer);
    let first = checkout_one(&app, &late, &bread, berlin(0.001, 0.0)).await;
    let order = first["orders"][0]["id"].as_str().unwrap().to_owned();
    eventually(&app, &late, &order, |o| o["status"] == "expired").await;
    let second = checkout_one(&app, &quick, &bread, berlin(0.001, 0.0)).await;
    pay(&app, &quick, &second).await;

    // Act
    pay(&app, &late, &first).await;

    // Assert: not paid, the money is back, and the customer is told on the order.
    let seen = eventually(&app, &late, &order, |o| !o["payment_returned"].is_null()).await;
    assert_eq!(seen["status"], "expired");
    assert_eq!(seen["payment_returned"], first["payment"]["amount"]);
    assert_eq!(
        event_types(&app, &late, &order).await,
        ["created", "expired", "payment_returned"]
    );
    let money = payment(&app, &late, &first).await;
    assert_eq!(money["status"], "refunded");
    assert_eq!(
        money["refunded_minor"],
        first["payment"]["amount"]["amount_minor"]
    );
    assert_eq!(
        stock(&app, bread.id).await,
        (0, 1),
        "only the quick customer's unit is sold"
    );
    let other = second["orders"][0]["id"].as_str().unwrap();
    assert_eq!(
        ok_json(get(&app, &quick, &format!("/api/v1/orders/{other}")).await).await["status"],
        "paid"
    );
}

#[actix_web::test]
async fn cancelled_and_rejected_paid_orders_restock_once_also_across_a_restart() {
    // Arrange
    let app = spawn_app().await;
    let (shop, vendor) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    stock_product(&app, &bread, 5).await;
    let (_, customer) = user_token(&app, Role::Customer);
    let cancelled = checkout_one(&app, &customer, &bread, berlin(0.001, 0.0)).await;
    pay(&app, &customer, &cancelled).await;
    let rejected = checkout_one(&app, &customer, &bread, berlin(0.001, 0.0)).await;
    pay(&app, &customer, &rejected).await;
    assert_eq!(stock(&app, bread.id).await, (3, 2));

    // Act: the customer cancels one, the store rejects the other.
    let one = cancelled["orders"][0]["id"].as_str().unwrap().to_owned();
    let two = rejected["orders"][0]["id"].as_str().unwrap().to_owned();
    let body = ok_json(post(&app, &customer, &format!("/api/v1/orders/{one}/cancel")).await).await;
    assert_eq!(body["status"], "refunded", "{body}");
    let body = ok_json(
        app.client
            .post(app.url(&format!("/api/v1/orders/{two}/reject")))
            .bearer_auth(&vendor)
            .json(&json!({"reason": "oven broke"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["status"], "refunded", "{body}");

    // Assert: both units are on sale again, the money is back, and nothing adds them twice.
    assert_eq!(stock(&app, bread.id).await, (5, 0));
    for checkout in [&cancelled, &rejected] {
        assert_eq!(
            payment(&app, &customer, checkout).await["status"],
            "refunded"
        );
    }
    let dir = app.stop().await;
    let app = spawn_in(dir, |_| {}).await;
    for order in [&one, &two] {
        let seen = ok_json(get(&app, &customer, &format!("/api/v1/orders/{order}")).await).await;
        assert_eq!(seen["status"], "refunded");
        let again = app
            .catalog
            .inventory
            .restock(&order.parse::<OrderId>().unwrap().to_string(), &[bread.id])
            .await
            .unwrap();
        assert_eq!(again, vec![(bread.id, Restocked::Already)]);
    }
    assert_eq!(stock(&app, bread.id).await, (5, 0));
}
