//! Stock, adjustments and reservations.

use std::time::Duration;

use hexmarket::domain::catalog::{Product, Vendor};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, ProductId};
use serde_json::{Value, json};

use crate::fixtures::{berlin, seed_product, seed_vendor, user_token};
use crate::helpers::{TestApp, assert_problem, spawn_app};

/// A vendor with one product, and the vendor's token.
async fn vendor_with_product(app: &TestApp) -> (Vendor, Product, String) {
    let (vendor, token) = seed_vendor(app, "Corner Bakery", berlin(0.0, 0.0)).await;
    let product = seed_product(app, &vendor, CategoryId::new(), "Sourdough loaf", 450).await;
    (vendor, product, token)
}

fn inventory_path(product: ProductId) -> String {
    format!("/api/v1/products/{product}/inventory")
}

async fn get_inventory(app: &TestApp, token: &str, product: ProductId) -> reqwest::Response {
    app.client
        .get(app.url(&inventory_path(product)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn put_inventory(
    app: &TestApp,
    token: &str,
    product: ProductId,
    body: Value,
) -> reqwest::Response {
    app.client
        .put(app.url(&inventory_path(product)))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn inventory_history(
    app: &TestApp,
    token: &str,
    product: ProductId,
    query: &str,
) -> reqwest::Response {
    let path = format!("{}/history{query}", inventory_path(product));
    app.client
        .get(app.url(&path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_vendor_sets_and_adjusts_stock_and_the_history_lists_every_change() {
    // Arrange
    let app = spawn_app().await;
    let (_, product, token) = vendor_with_product(&app).await;

    // Act
    let set = put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 10, "reason": "first count"}),
    )
    .await;
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    let adjusted = put_inventory(
        &app,
        &token,
        product.id,
        json!({"delta": -3, "reason": "dropped a tray"}),
    )
    .await;
    assert_eq!(adjusted.status(), 200);
    let adjusted: Value = adjusted.json().await.unwrap();
    let restocked = put_inventory(
        &app,
        &token,
        product.id,
        json!({"delta": 5, "reason": "delivery"}),
    )
    .await;
    assert_eq!(restocked.status(), 200);

    // Assert
    assert_eq!(set["inventory"]["stock"], 10);
    assert_eq!(set["adjustment"]["change"], json!({"set": 10}));
    assert_eq!(set["adjustment"]["stock_before"], 0);
    assert_eq!(set["adjustment"]["stock_after"], 10);
    assert_eq!(adjusted["inventory"]["available"], 7);
    assert_eq!(adjusted["adjustment"]["change"], json!({"delta": -3}));
    assert_eq!(adjusted["adjustment"]["reason"], "dropped a tray");

    let view = get_inventory(&app, &token, product.id).await;
    assert_eq!(view.status(), 200);
    let view: Value = view.json().await.unwrap();
    assert_eq!(view["stock"], 12);
    assert_eq!(view["held"], 0);
    assert_eq!(view["available"], 12);
    assert_eq!(view["sold_total"], 0);
    assert_eq!(view["recent_adjustments"].as_array().unwrap().len(), 3);

    // Two pages of two, oldest first.
    let first = inventory_history(&app, &token, product.id, "?limit=2").await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let reasons: Vec<&str> = first["adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["first count", "dropped a tray"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = inventory_history(
        &app,
        &token,
        product.id,
        &format!("?limit=2&cursor={cursor}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(second["adjustments"].as_array().unwrap().len(), 1);
    assert_eq!(second["adjustments"][0]["reason"], "delivery");
    assert_eq!(second["adjustments"][0]["stock_after"], 12);
    assert_eq!(second["next_cursor"], Value::Null);

    let all: Value = inventory_history(&app, &token, product.id, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["adjustments"].as_array().unwrap().len(), 3);
    assert_eq!(all["next_cursor"], Value::Null);
}

#[actix_web::test]
async fn checkouts_show_as_held_and_stock_cannot_drop_below_them() {
    // Arrange
    let app = spawn_app().await;
    let (_, product, token) = vendor_with_product(&app).await;
    put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 5, "reason": "count"}),
    )
    .await;
    app.catalog
        .inventory
        .reserve("checkout-1", &[(product.id, 3)], Duration::from_secs(600))
        .await
        .unwrap();

    // Act
    let view: Value = get_inventory(&app, &token, product.id)
        .await
        .json()
        .await
        .unwrap();
    let below = put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 2, "reason": "recount"}),
    )
    .await;

    // Assert
    assert_eq!(
        (view["stock"].clone(), view["held"].clone()),
        (json!(5), json!(3))
    );
    assert_eq!(view["available"], 2);
    assert_problem(below, 409, "stock_below_reserved").await;
    let at_held = put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 3, "reason": "recount"}),
    )
    .await;
    assert_eq!(at_held.status(), 200);

    // Once the checkout lapses its units are free again.
    app.clock.advance(Duration::from_secs(601));
    let view: Value = get_inventory(&app, &token, product.id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["held"].clone(), view["available"].clone()),
        (json!(0), json!(3))
    );
}

#[actix_web::test]
async fn only_the_products_vendor_and_admins_see_or_change_its_stock() {
    // Arrange
    let app = spawn_app().await;
    let (_, product, token) = vendor_with_product(&app).await;
    put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 4, "reason": "count"}),
    )
    .await;
    let (_, other_vendor) = seed_vendor(&app, "Rival Bakery", berlin(0.01, 0.0)).await;
    let (_, customer) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let change = json!({"stock": 100, "reason": "mine now"});

    // Act & Assert
    for stranger in [&other_vendor, &customer] {
        assert_problem(
            get_inventory(&app, stranger, product.id).await,
            404,
            "not_found",
        )
        .await;
        assert_problem(
            put_inventory(&app, stranger, product.id, change.clone()).await,
            404,
            "not_found",
        )
        .await;
        assert_problem(
            inventory_history(&app, stranger, product.id, "").await,
            404,
            "not_found",
        )
        .await;
    }
    let anonymous = app
        .client
        .get(app.url(&inventory_path(product.id)))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401, "unauthenticated").await;
    assert_problem(
        get_inventory(&app, &token, ProductId::new()).await,
        404,
        "not_found",
    )
    .await;

    let by_admin = put_inventory(
        &app,
        &admin,
        product.id,
        json!({"delta": 1, "reason": "audit"}),
    )
    .await;
    assert_eq!(by_admin.status(), 200);
    let view: Value = get_inventory(&app, &admin, product.id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["stock"], 5);
}

#[actix_web::test]
async fn malformed_stock_changes_are_refused_and_change_nothing() {
    // Arrange
    let app = spawn_app().await;
    let (_, product, token) = vendor_with_product(&app).await;
    put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 5, "reason": "count"}),
    )
    .await;
    let cases = [
        (
            json!({"stock": 3, "delta": 1, "reason": "both"}),
            422,
            "validation_failed",
        ),
        (json!({"reason": "neither"}), 422, "validation_failed"),
        (
            json!({"stock": -1, "reason": "negative"}),
            422,
            "validation_failed",
        ),
        (
            json!({"stock": 1_000_001, "reason": "too many"}),
            422,
            "validation_failed",
        ),
        (
            json!({"delta": -6, "reason": "below zero"}),
            422,
            "stock_out_of_range",
        ),
        (
            json!({"delta": 2_000_000, "reason": "too many"}),
            422,
            "stock_out_of_range",
        ),
        (
            json!({"stock": 3, "reason": "x".repeat(201)}),
            422,
            "validation_failed",
        ),
        (
            json!({"stock": 3, "reason": "   "}),
            422,
            "validation_failed",
        ),
        (json!({"stock": 3}), 422, "validation_failed"),
        (
            json!({"stock": 3, "reason": "ok", "note": "?"}),
            400,
            "unknown_field",
        ),
        (
            json!({"stock": "3", "reason": "text"}),
            422,
            "validation_failed",
        ),
    ];

    // Act & Assert
    for (body, status, code) in cases {
        let response = put_inventory(&app, &token, product.id, body.clone()).await;
        let problem = assert_problem(response, status, code).await;
        assert!(problem["detail"].is_string(), "{body}: {problem}");
    }
    let both: Value = put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 3, "delta": 1, "reason": "both"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(both["errors"][0]["field"], "stock");
    let not_json = app
        .client
        .put(app.url(&inventory_path(product.id)))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"stock\": ")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, 400, "malformed_json").await;

    let view: Value = get_inventory(&app, &token, product.id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["stock"], 5);
    assert_eq!(view["recent_adjustments"].as_array().unwrap().len(), 1);
    let history: Value = inventory_history(&app, &token, product.id, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["adjustments"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn history_pages_must_be_1_to_100_with_a_real_cursor() {
    let app = spawn_app().await;
    let (_, product, token) = vendor_with_product(&app).await;

    for query in ["?limit=0", "?limit=101"] {
        let response = inventory_history(&app, &token, product.id, query).await;
        assert_problem(response, 422, "validation_failed").await;
    }
    let bad_cursor = inventory_history(&app, &token, product.id, "?cursor=not-an-id").await;
    assert_problem(bad_cursor, 400, "invalid_cursor").await;
    let unknown = inventory_history(&app, &token, product.id, "?page=2").await;
    assert_problem(unknown, 400, "invalid_query").await;

    let empty = inventory_history(&app, &token, product.id, "?limit=100").await;
    assert_eq!(empty.status(), 200);
    let empty: Value = empty.json().await.unwrap();
    assert_eq!(empty, json!({"adjustments": [], "next_cursor": null}));
}

#[actix_web::test]
async fn a_thousand_buyers_on_one_node_get_exactly_the_stock() {
    // Arrange
    let app = spawn_app().await;
    let (_, product, token) = vendor_with_product(&app).await;
    put_inventory(
        &app,
        &token,
        product.id,
        json!({"stock": 300, "reason": "flash sale"}),
    )
    .await;

    // Act
    let buyers: Vec<_> = (0..1000)
        .map(|i| {
            let inventory = app.catalog.inventory.clone();
            tokio::spawn(async move {
                inventory
                    .reserve(
                        &format!("buyer-{i}"),
                        &[(product.id, 1)],
                        Duration::from_secs(600),
                    )
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut sold = 0;
    for buyer in buyers {
        sold += usize::from(buyer.await.unwrap());
    }

    // Assert
    assert_eq!(sold, 300);
    let view: Value = get_inventory(&app, &token, product.id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["held"].clone(), view["available"].clone()),
        (json!(300), json!(0))
    );
}
