//! Checkout: one order per store and one payment, exactly once per Idempotency-Key; payment
//! outcomes move the orders and the stock.

use hexmarket::domain::catalog::Product;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, UserId};
use hexmarket::domain::inventory::StockChange;
use serde_json::{Value, json};

use crate::fixtures::{berlin, seed_product, seed_vendor, user_token};
use crate::helpers::{TestApp, assert_problem, spawn_app};

async fn stocked(app: &TestApp, product: &Product, units: u32) {
    app.catalog
        .inventory
        .adjust(
            product.id,
            StockChange::Set(units),
            "delivery".into(),
            UserId::new(),
        )
        .await
        .unwrap();
}

async fn available(app: &TestApp, product: &Product) -> u32 {
    app.catalog
        .inventory
        .get(product.id)
        .await
        .unwrap()
        .available
}

async fn add(app: &TestApp, token: &str, product: &Product, quantity: u32) {
    let response = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .bearer_auth(token)
        .json(&json!({"product_id": product.id, "quantity": quantity}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn checkout(app: &TestApp, token: &str, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

fn to_berlin() -> Value {
    json!({
        "delivery_address": {"text": "Torstraße 1, Berlin", "lat": 52.521, "lng": 13.41},
        "payment_method": "simulated",
    })
}

#[actix_web::test]
async fn a_cart_becomes_one_order_per_store_and_one_payment_and_paying_sells_the_stock() {
    let app = spawn_app().await;
    let (shop_a, _) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let (shop_b, _) = seed_vendor(&app, "Florist", berlin(0.005, 0.0)).await;
    let category = CategoryId::new();
    let bread = seed_product(&app, &shop_a, category, "Bread", 300).await;
    let roses = seed_product(&app, &shop_b, category, "Roses", 1500).await;
    stocked(&app, &bread, 5).await;
    stocked(&app, &roses, 2).await;
    let (_, customer) = user_token(&app, Role::Customer);
    add(&app, &customer, &bread, 2).await;
    add(&app, &customer, &roses, 1).await;

    let created = checkout(&app, &customer, Some("purchase-1"), to_berlin()).await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    let orders = body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2);
    for order in orders {
        assert_eq!(order["status"], "pending_payment");
        assert!(
            order["totals"]["delivery_fee"]["amount_minor"]
                .as_i64()
                .unwrap()
                >= 199
        );
    }
    let total: i64 = orders
        .iter()
        .map(|o| o["totals"]["total"]["amount_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(body["payment"]["amount"]["amount_minor"], total);
    assert_eq!(body["payment"]["provider"], "simulated");
    assert_eq!(
        (available(&app, &bread).await, available(&app, &roses).await),
        (3, 1)
    );
    // The cart was emptied.
    let cart: Value = app
        .get_authed("/api/v1/cart", &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cart["item_count"], 0);

    // The same key and body replay the answer; another body with the key is refused.
    let again = checkout(&app, &customer, Some("purchase-1"), to_berlin()).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["checkout_id"], body["checkout_id"]);
    let mut other = to_berlin();
    other["delivery_address"]["text"] = json!("Elsewhere 2");
    assert_problem(
        checkout(&app, &customer, Some("purchase-1"), other).await,
        422,
        "idempotency_key_reused",
    )
    .await;

    // Paying moves every order to paid and sells the held units.
    let payment = body["payment"]["id"].as_str().unwrap();
    let paid = app
        .client
        .post(app.url(&format!("/api/v1/payments/{payment}/simulate")))
        .bearer_auth(&customer)
        .json(&json!({"outcome": "succeed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    for order in orders {
        let id = order["id"].as_str().unwrap();
        let seen: Value = app
            .get_authed(&format!("/api/v1/orders/{id}"), &customer)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(seen["status"], "paid", "{seen}");
    }
    let bread_stock = app.catalog.inventory.get(bread.id).await.unwrap();
    assert_eq!(
        (bread_stock.stock, bread_stock.held, bread_stock.sold_total),
        (3, 0, 2)
    );
}

#[actix_web::test]
async fn a_failed_payment_releases_the_stock() {
    let app = spawn_app().await;
    let (shop, _) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    stocked(&app, &bread, 4).await;
    let (_, customer) = user_token(&app, Role::Customer);
    add(&app, &customer, &bread, 3).await;
    let body: Value = checkout(&app, &customer, Some("k"), to_berlin())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(available(&app, &bread).await, 1);
    let payment = body["payment"]["id"].as_str().unwrap();
    app.client
        .post(app.url(&format!("/api/v1/payments/{payment}/simulate")))
        .bearer_auth(&customer)
        .json(&json!({"outcome": "fail"}))
        .send()
        .await
        .unwrap();
    let order = body["orders"][0]["id"].as_str().unwrap();
    let seen: Value = app
        .get_authed(&format!("/api/v1/orders/{order}"), &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["status"], "payment_failed");
    assert_eq!(available(&app, &bread).await, 4);
}

#[actix_web::test]
async fn concurrent_checkouts_with_one_key_make_one_checkout() {
    let app = spawn_app().await;
    let (shop, _) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    stocked(&app, &bread, 10).await;
    let (_, customer) = user_token(&app, Role::Customer);
    add(&app, &customer, &bread, 2).await;
    let attempts: Vec<_> = (0..8)
        .map(|_| checkout(&app, &customer, Some("same-key"), to_berlin()))
        .collect();
    let mut checkouts = std::collections::BTreeSet::new();
    for response in futures_util::future::join_all(attempts).await {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if status == 201 {
            checkouts.insert(body["checkout_id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(
                (status, body["code"].as_str()),
                (409, Some("request_in_progress"))
            );
        }
    }
    assert_eq!(checkouts.len(), 1);
    assert_eq!(available(&app, &bread).await, 8, "the stock was held once");
}

#[actix_web::test]
async fn checkouts_that_cannot_be_served_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (shop, _) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    let cake = seed_product(&app, &shop, CategoryId::new(), "Cake", 900).await;
    stocked(&app, &bread, 1).await;
    stocked(&app, &cake, 5).await;
    let (_, customer) = user_token(&app, Role::Customer);

    assert_problem(
        checkout(&app, &customer, Some("k0"), to_berlin()).await,
        422,
        "cart_empty",
    )
    .await;
    add(&app, &customer, &cake, 1).await;
    add(&app, &customer, &bread, 2).await;
    assert_problem(
        checkout(&app, &customer, None, to_berlin()).await,
        400,
        "idempotency_key_required",
    )
    .await;
    let short = checkout(&app, &customer, Some("k1"), to_berlin()).await;
    let problem = assert_problem(short, 409, "insufficient_stock").await;
    assert_eq!(problem["errors"][0]["field"], format!("items.{}", bread.id));
    assert_eq!(
        available(&app, &cake).await,
        5,
        "all or nothing: the cake was not held"
    );

    let far = json!({
        "delivery_address": {"text": "Potsdam", "lat": 52.39, "lng": 13.06},
        "payment_method": "simulated",
    });
    assert_problem(
        checkout(&app, &customer, Some("k2"), far).await,
        422,
        "outside_delivery_area",
    )
    .await;
    let bad = json!({
        "delivery_address": {"text": "Nowhere", "lat": 95.0, "lng": 13.0},
        "payment_method": "simulated",
    });
    assert_problem(
        checkout(&app, &customer, Some("k3"), bad).await,
        422,
        "validation_failed",
    )
    .await;
    let stripe = json!({
        "delivery_address": {"text": "Torstraße 1", "lat": 52.521, "lng": 13.41},
        "payment_method": "stripe",
    });
    assert_problem(
        checkout(&app, &customer, Some("k4"), stripe).await,
        422,
        "payment_method_unavailable",
    )
    .await;
    let (_, vendor) = user_token(&app, Role::Vendor);
    assert_problem(
        checkout(&app, &vendor, Some("k5"), to_berlin()).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(available(&app, &bread).await, 1);
    let mine: Value = app
        .get_authed("/api/v1/orders", &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(0), "{mine}");
}

async fn read(app: &TestApp, token: &str, path: &str) -> Value {
    app.get_authed(path, token).await.json().await.unwrap()
}

async fn paid_checkout(app: &TestApp, customer: &str, key: &str) -> Value {
    let body: Value = checkout(app, customer, Some(key), to_berlin())
        .await
        .json()
        .await
        .unwrap();
    let payment = body["payment"]["id"].as_str().unwrap();
    let paid = app
        .client
        .post(app.url(&format!("/api/v1/payments/{payment}/simulate")))
        .bearer_auth(customer)
        .json(&json!({"outcome": "succeed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    body
}

#[actix_web::test]
async fn a_rejected_paid_order_is_refunded_and_admins_refund_chosen_lines() {
    let app = spawn_app().await;
    let (shop, vendor) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    let cake = seed_product(&app, &shop, CategoryId::new(), "Cake", 900).await;
    stocked(&app, &bread, 10).await;
    stocked(&app, &cake, 10).await;
    let (_, customer) = user_token(&app, Role::Customer);

    // The vendor turns a paid order down: the money goes back at once.
    add(&app, &customer, &bread, 1).await;
    let first = paid_checkout(&app, &customer, "p1").await;
    let order = first["orders"][0]["id"].as_str().unwrap();
    let rejected: Value = app
        .client
        .post(app.url(&format!("/api/v1/orders/{order}/reject")))
        .bearer_auth(&vendor)
        .json(&json!({"reason": "oven broke"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["status"], "refunded", "{rejected}");
    let payment = first["payment"]["id"].as_str().unwrap();
    let seen: Value = app
        .get_authed(&format!("/api/v1/payments/{payment}"), &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["status"], "refunded");
    assert_eq!(
        seen["refunded_minor"],
        first["payment"]["amount"]["amount_minor"]
    );

    // An admin refunds one line of another order, once per key.
    add(&app, &customer, &bread, 2).await;
    add(&app, &customer, &cake, 1).await;
    let second = paid_checkout(&app, &customer, "p2").await;
    let order = second["orders"][0]["id"].as_str().unwrap();
    let admin = app.admin_token().await;
    let refund = |body: Value, key: &'static str| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/admin/orders/{order}/refund")))
            .bearer_auth(&admin)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let refunded = refund(json!({"lines": [cake.id]}), "r1").await;
    assert_eq!(refunded.status(), 200);
    let payment = second["payment"]["id"].as_str().unwrap();
    let seen: Value = app
        .get_authed(&format!("/api/v1/payments/{payment}"), &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&seen["status"], &seen["refunded_minor"]),
        (&json!("partially_refunded"), &json!(900))
    );
    // A partial refund keeps the order's status and lists the refunded lines.
    let seen = read(&app, &customer, &format!("/api/v1/orders/{order}")).await;
    assert_eq!(seen["status"], "paid", "{seen}");
    assert_eq!(seen["refunded"]["amount_minor"], 900);
    assert_eq!(seen["refunds"][0]["amount"]["amount_minor"], 900);
    assert_eq!(seen["refunds"][0]["lines"], json!([cake.id]));
    // The same key again refunds nothing more; the same line under another key is refused.
    let again: Value = refund(json!({"lines": [cake.id]}), "r1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["refunds"].as_array().map(Vec::len),
        Some(1),
        "{again}"
    );
    assert_problem(
        refund(json!({"lines": [cake.id]}), "r1b").await,
        409,
        "already_refunded",
    )
    .await;
    assert_problem(
        refund(json!({"lines": [uuid::Uuid::now_v7()]}), "r2").await,
        422,
        "validation_failed",
    )
    .await;
    // What is left goes back: only now is the order refunded.
    let total = second["orders"][0]["totals"]["total"]["amount_minor"]
        .as_i64()
        .unwrap();
    let rest: Value = refund(json!({}), "r4").await.json().await.unwrap();
    assert_eq!(rest["status"], "refunded", "{rest}");
    assert_eq!(rest["refunded"]["amount_minor"], total);
    assert_eq!(rest["refunds"][1]["amount"]["amount_minor"], total - 900);
    let seen = read(&app, &customer, &format!("/api/v1/payments/{payment}")).await;
    assert_eq!(
        (&seen["status"], &seen["refunded_minor"]),
        (&json!("refunded"), &json!(total))
    );
    assert_problem(refund(json!({}), "r5").await, 409, "already_refunded").await;
    let (_, stranger) = user_token(&app, Role::Customer);
    let response = app
        .client
        .post(app.url(&format!("/api/v1/admin/orders/{order}/refund")))
        .bearer_auth(&stranger)
        .header("Idempotency-Key", "r3")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "forbidden").await;
}

#[actix_web::test]
async fn a_stripe_checkout_answers_the_client_secret_and_the_webhook_pays_the_orders() {
    let fake = crate::payments::FakeStripe::start();
    let base = fake.base.clone();
    let app = crate::helpers::spawn_app_with(|s| {
        s.stripe = Some(hexmarket::config::StripeSettings {
            api_base: base,
            secret_key: "sk_test_hexmarket".to_owned(),
            webhook_secret: crate::payments::WEBHOOK_SECRET.to_owned(),
        });
    })
    .await;
    let (shop, _) = seed_vendor(&app, "Bakery", berlin(0.0, 0.0)).await;
    let bread = seed_product(&app, &shop, CategoryId::new(), "Bread", 300).await;
    stocked(&app, &bread, 5).await;
    let (_, customer) = user_token(&app, Role::Customer);
    add(&app, &customer, &bread, 2).await;
    let mut body = to_berlin();
    body["payment_method"] = json!("stripe");
    let created = checkout(&app, &customer, Some("stripe-1"), body).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["payment"]["provider"], "stripe");
    let secret = created["payment"]["client_secret"].as_str().unwrap();
    assert!(secret.contains("_secret_"), "{secret}");

    // Stripe tells us the intent succeeded: the order is paid and its stock sold.
    let intent = created["payment"]["provider_ref"].as_str().unwrap();
    let event = crate::payments::event(
        "evt_checkout_1",
        "payment_intent.succeeded",
        json!({ "id": intent, "object": "payment_intent" }),
    );
    let signature = hexmarket::payments::webhook::sign(
        crate::payments::WEBHOOK_SECRET,
        app.clock.now().timestamp(),
        &event,
    );
    let delivered = app
        .client
        .post(app.url("/api/v1/payments/stripe/webhook"))
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 200);
    let order = created["orders"][0]["id"].as_str().unwrap();
    let seen: Value = app
        .get_authed(&format!("/api/v1/orders/{order}"), &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["status"], "paid");
    let stock = app.catalog.inventory.get(bread.id).await.unwrap();
    assert_eq!((stock.stock, stock.sold_total), (3, 2));
}
