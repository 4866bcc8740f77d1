//! Moderation: reports of products and stores, the queue, hiding and restoring products,
//! suspending and reinstating stores, the history of decisions and the owner's notices.

use hexmarket::domain::catalog::{Product, Vendor};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::CategoryId;
use serde_json::json;

use crate::fixtures::{berlin, seed_product, seed_vendor, stock_product, user_token};
use crate::helpers::{TestApp, assert_problem, get, notices, ok_json, post_json, spawn_app};

/// A store with one listed, stocked and indexed product, and its owner's token.
struct Shop {
    app: TestApp,
    vendor: Vendor,
    owner: String,
    product: Product,
    admin: String,
}

async fn shop() -> Shop {
    let app = spawn_app().await;
    let (vendor, owner) = seed_vendor(&app, "Gadget Hut", berlin(0.0, 0.0)).await;
    let product = seed_product(&app, &vendor, CategoryId::new(), "Smart Watch", 4_900).await;
    stock_product(&app, &product, 10).await;
    app.catalog.product_changed(product.id).await;
    let admin = app.admin_token().await;
    Shop {
        app,
        vendor,
        owner,
        product,
        admin,
    }
}

async fn searchable(app: &TestApp, product: &Product) -> bool {
    let found = ok_json(app.get("/api/v1/products?q=watch").await).await;
    found["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|hit| hit["id"] == product.id.to_string())
}

#[actix_web::test]
async fn reports_count_once_per_user_and_gather_in_one_queue() {
    // Arrange
    let s = shop().await;
    let app = &s.app;
    let (_, alice) = user_token(app, Role::Customer);
    let (_, bob) = user_token(app, Role::Customer);
    let product_reports = format!("/api/v1/products/{}/reports", s.product.id);

    // Act
    let first = post_json(
        app,
        &alice,
        &product_reports,
        json!({"reason": "counterfeit", "text": "Logo is wrong."}),
    )
    .await;
    let again = post_json(app, &alice, &product_reports, json!({"reason": "fraud"})).await;
    let second = post_json(app, &bob, &product_reports, json!({"reason": "misleading"})).await;
    let store = post_json(
        app,
        &bob,
        &format!("/api/v1/vendors/{}/reports", s.vendor.id),
        json!({"reason": "fraud"}),
    )
    .await;

    // Assert
    assert_eq!(first.status(), 204);
    assert_problem(again, 409, "already_reported").await;
    assert_eq!(second.status(), 204);
    assert_eq!(store.status(), 204);
    let queue = ok_json(get(app, &s.admin, "/api/v1/admin/moderation/queue").await).await;
    let items = queue["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{queue}");
    let product = items.iter().find(|i| i["kind"] == "product").unwrap();
    assert_eq!(product["item"], format!("product:{}", s.product.id));
    assert_eq!(product["reports"], 2);
    assert_eq!(
        product["reasons"],
        json!({"counterfeit": 1, "misleading": 1})
    );
    assert_eq!(product["latest"][0]["reason"], "misleading");
    assert_eq!(product["title"], "Smart Watch");
    assert_eq!(product["hidden"], false);
    let stores =
        ok_json(get(app, &s.admin, "/api/v1/admin/moderation/queue?kind=vendor").await).await;
    assert_eq!(stores["items"].as_array().unwrap().len(), 1);
    assert_eq!(stores["items"][0]["vendor_status"], "active");

    // Bad input and strangers.
    let bad = post_json(
        app,
        &alice,
        &format!("/api/v1/vendors/{}/reports", s.vendor.id),
        json!({"reason": "boring"}),
    )
    .await;
    assert_eq!(bad.status(), 422);
    let missing = post_json(
        app,
        &alice,
        &format!("/api/v1/products/{}/reports", CategoryId::new()),
        json!({"reason": "fraud"}),
    )
    .await;
    assert_problem(missing, 404, "not_found").await;
    assert_problem(
        get(app, &alice, "/api/v1/admin/moderation/queue").await,
        403,
        "forbidden",
    )
    .await;
}

#[actix_web::test]
async fn a_hidden_product_leaves_the_public_and_comes_back_when_restored() {
    // Arrange
    let s = shop().await;
    let app = &s.app;
    let (_, alice) = user_token(app, Role::Customer);
    post_json(
        app,
        &alice,
        &format!("/api/v1/products/{}/reports", s.product.id),
        json!({"reason": "counterfeit"}),
    )
    .await;
    let product_path = format!("/api/v1/products/{}", s.product.id);
    let hide = format!("/api/v1/admin/moderation/products/{}/hide", s.product.id);
    let restore = format!("/api/v1/admin/moderation/products/{}/restore", s.product.id);
    assert!(searchable(app, &s.product).await);

    // Act
    let refused = post_json(app, &s.owner, &hide, json!({"reason": "mine now"})).await;
    let no_reason = post_json(app, &s.admin, &hide, json!({"reason": ""})).await;
    let hidden = post_json(
        app,
        &s.admin,
        &hide,
        json!({"reason": "Counterfeit goods."}),
    )
    .await;

    // Assert
    assert_problem(refused, 403, "forbidden").await;
    assert_problem(no_reason, 422, "validation_failed").await;
    let hidden = ok_json(hidden).await;
    assert_eq!(hidden["hidden"], true);
    assert_eq!(hidden["decision"]["action"], "hide");
    assert_eq!(hidden["decision"]["reports_closed"], 1);
    assert_problem(app.get(&product_path).await, 404, "not_found").await;
    assert!(!searchable(app, &s.product).await);
    let owned = ok_json(get(app, &s.owner, &product_path).await).await;
    assert_eq!(owned["hidden"], true);
    assert_eq!(
        ok_json(get(app, &s.admin, &product_path).await).await["hidden"],
        true
    );
    // The vendor cannot publish it back.
    let republish = app
        .client
        .patch(app.url(&product_path))
        .bearer_auth(&s.owner)
        .json(&json!({"visibility": "published"}))
        .send()
        .await
        .unwrap();
    assert_eq!(republish.status(), 200);
    assert_problem(app.get(&product_path).await, 404, "not_found").await;
    let added = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .bearer_auth(&alice)
        .json(&json!({"product_id": s.product.id, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(added, 422, "product_unavailable").await;
    let twice = post_json(app, &s.admin, &hide, json!({"reason": "again"})).await;
    assert_problem(twice, 409, "conflict").await;
    let queue = ok_json(get(app, &s.admin, "/api/v1/admin/moderation/queue").await).await;
    assert!(
        queue["items"].as_array().unwrap().is_empty(),
        "decided: {queue}"
    );
    let decided = ok_json(
        get(
            app,
            &s.admin,
            "/api/v1/admin/moderation/queue?status=decided",
        )
        .await,
    )
    .await;
    assert_eq!(
        decided["items"][0]["last_decision"],
        hidden["decision"]["id"]
    );

    // Restored.
    let restored = ok_json(
        post_json(
            app,
            &s.admin,
            &restore,
            json!({"reason": "Seller proved it genuine."}),
        )
        .await,
    )
    .await;
    assert_eq!(restored["hidden"], false);
    assert_eq!(ok_json(app.get(&product_path).await).await["hidden"], false);
    assert!(searchable(app, &s.product).await);

    let subject = format!("product:{}", s.product.id);
    let told = notices(app, &s.owner, &subject).await;
    let kinds: Vec<&str> = told.iter().map(|n| n["notice"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["product_restored", "product_hidden"]);
    assert!(
        told[1]["body"]
            .as_str()
            .unwrap()
            .contains("Counterfeit goods.")
    );

    let history = ok_json(
        get(
            app,
            &s.admin,
            &format!("/api/v1/admin/moderation/decisions?item={subject}"),
        )
        .await,
    )
    .await;
    let actions: Vec<&str> = history["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["restore", "hide"]);
    assert_eq!(history["decisions"][1]["reason"], "Counterfeit goods.");
    let trail = ok_json(
        get(
            app,
            &s.admin,
            &format!("/api/v1/admin/audit?target={subject}"),
        )
        .await,
    )
    .await;
    let audited: Vec<&str> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(audited, ["product.restore", "product.hide"], "{trail}");
    assert_eq!(trail["entries"][1]["reason"], "Counterfeit goods.");
    assert_eq!(trail["entries"][1]["after"], json!({"hidden": true}));
}

#[actix_web::test]
async fn a_suspended_store_sells_nothing_until_reinstated() {
    // Arrange
    let s = shop().await;
    let app = &s.app;
    let (_, alice) = user_token(app, Role::Customer);
    let suspend = format!("/api/v1/admin/moderation/vendors/{}/suspend", s.vendor.id);
    let reinstate = format!("/api/v1/admin/moderation/vendors/{}/reinstate", s.vendor.id);
    let add = || async {
        app.client
            .post(app.url("/api/v1/cart/items"))
            .bearer_auth(&alice)
            .json(&json!({"product_id": s.product.id, "quantity": 1}))
            .send()
            .await
            .unwrap()
    };

    // Act
    let suspended = post_json(app, &s.admin, &suspend, json!({"reason": "Fraud reports."})).await;

    // Assert
    let suspended = ok_json(suspended).await;
    assert_eq!(suspended["vendor_status"], "suspended");
    assert_problem(add().await, 422, "product_unavailable").await;
    assert!(!searchable(app, &s.product).await);
    assert_problem(
        app.get(&format!("/api/v1/vendors/{}", s.vendor.id)).await,
        404,
        "not_found",
    )
    .await;
    let reported = post_json(
        app,
        &alice,
        &format!("/api/v1/vendors/{}/reports", s.vendor.id),
        json!({"reason": "fraud"}),
    )
    .await;
    assert_problem(reported, 404, "not_found").await;

    let reinstated =
        ok_json(post_json(app, &s.admin, &reinstate, json!({"reason": "Cleared."})).await).await;
    assert_eq!(reinstated["vendor_status"], "active");
    assert_eq!(add().await.status(), 200);
    assert!(searchable(app, &s.product).await);

    let told = notices(app, &s.owner, &format!("vendor:{}", s.vendor.id)).await;
    let kinds: Vec<&str> = told.iter().map(|n| n["notice"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["store_reinstated", "store_suspended"]);
    assert!(told[1]["body"].as_str().unwrap().contains("Fraud reports."));
    let all = ok_json(get(app, &s.admin, "/api/v1/admin/moderation/decisions").await).await;
    assert_eq!(all["decisions"].as_array().unwrap().len(), 2);
    assert_problem(
        get(
            app,
            &s.admin,
            "/api/v1/admin/moderation/decisions?item=user:1",
        )
        .await,
        400,
        "invalid_query",
    )
    .await;
}

#[actix_web::test]
async fn a_hide_interrupted_before_its_record_is_finished_by_a_retry() {
    // Arrange: the product row says hidden, but no decision was recorded (a process stopped
    // between the two writes).
    let s = shop().await;
    let app = &s.app;
    app.catalog
        .repo
        .products
        .modify(
            &hexmarket::store::catalog::id_key(s.product.id),
            |current| {
                let mut product = current.cloned().unwrap();
                product.hidden = true;
                Ok::<_, ()>(hexmarket::store::typed::Change::Put(product, ()))
            },
        )
        .await
        .unwrap();
    let hide = format!("/api/v1/admin/moderation/products/{}/hide", s.product.id);

    // Act
    let retried = post_json(
        app,
        &s.admin,
        &hide,
        json!({"reason": "Counterfeit goods."}),
    )
    .await;
    let again = post_json(
        app,
        &s.admin,
        &hide,
        json!({"reason": "Counterfeit goods."}),
    )
    .await;

    // Assert
    assert_eq!(ok_json(retried).await["decision"]["action"], "hide");
    assert_problem(again, 409, "conflict").await;
    let history = ok_json(
        get(
            app,
            &s.admin,
            &format!(
                "/api/v1/admin/moderation/decisions?item=product:{}",
                s.product.id
            ),
        )
        .await,
    )
    .await;
    assert_eq!(history["decisions"].as_array().unwrap().len(), 1);
    let told = notices(app, &s.owner, &format!("product:{}", s.product.id)).await;
    assert_eq!(told.len(), 1);
}
