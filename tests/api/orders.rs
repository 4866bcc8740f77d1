//! Orders: the state machine over HTTP, who may see what, the event log, payment expiry (also
//! across a restart) and rolling a row forward from its log.

use std::time::Duration;

use chrono::Utc;
use hexmarket::actors::order::{OrderDeps, apply_command, create};
use hexmarket::bus::Delivery;
use hexmarket::domain::catalog::{Product, Vendor};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, CheckoutId, OrderId, UserId};
use hexmarket::domain::inventory::StockChange;
use hexmarket::domain::order::{
    Order, OrderCommand, OrderEvent, OrderEventKind, OrderLine, OrderRecord, OrderStatus,
};
use hexmarket::store::orders::{DueTimer, OrderRepo};
use serde_json::Value;

use crate::fixtures::{berlin, seed_product, seed_vendor, user_token};
use crate::helpers::{TestApp, assert_problem, get, ok_json, post, spawn_app, spawn_in};

const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

struct Shop {
    vendor: Vendor,
    vendor_token: String,
    product: Product,
}

async fn shop(app: &TestApp) -> Shop {
    let (vendor, vendor_token) = seed_vendor(app, "Pasta Place", berlin(0.0, 0.0)).await;
    let product = seed_product(app, &vendor, CategoryId::new(), "Lasagne", 1250).await;
    Shop {
        vendor,
        vendor_token,
        product,
    }
}

fn deps(app: &TestApp) -> OrderDeps {
    OrderDeps {
        repo: repo(app),
        bus: app.catalog.bus.clone(),
        inventory: app.catalog.inventory.clone(),
        clock: app.clock.clone(),
        settings: hexmarket::settings::SettingsView::fixed(
            hexmarket::domain::settings::PlatformSettings {
                payment_timeout_secs: FIFTEEN_MINUTES.as_secs(),
                ..app.settings.platform_defaults()
            },
        ),
        feed: hexmarket::store::live::VendorFeedRepo::new(store(app)),
        open: hexmarket::store::live::OpenOrdersRepo::new(store(app)),
        dispatch: hexmarket::dispatch::queue::DispatchQueue::new(store(app), app.clock.clone()),
        coupons: hexmarket::store::coupons::CouponRepo::new(store(app)),
    }
}

fn store(app: &TestApp) -> hexmarket::store::SharedStore {
    app.catalog.repo.products.store().clone()
}

fn repo(app: &TestApp) -> OrderRepo {
    OrderRepo::new(app.catalog.repo.products.store().clone())
}

/// A new order of two units of the shop's product, awaiting payment for fifteen minutes.
async fn new_order(app: &TestApp, shop: &Shop, customer: UserId) -> OrderRecord {
    let now = app.clock.now();
    let order = Order {
        id: OrderId::new(),
        checkout_id: CheckoutId::new(),
        customer_id: customer,
        vendor_id: shop.vendor.id,
        status: OrderStatus::PendingPayment,
        lines: vec![OrderLine {
            product_id: shop.product.id,
            title: shop.product.title.clone(),
            quantity: 2,
            unit_price: shop.product.price,
        }],
        created_at: now,
        updated_at: now,
    };
    let record = OrderRecord {
        expires_at: None,
        ..OrderRecord::pending(order, now)
    };
    create(&deps(app), record).await.unwrap().value
}

/// A paid order of two units (two more units are put in stock for it: paid means sold).
async fn paid_order(app: &TestApp, shop: &Shop, customer: UserId) -> OrderRecord {
    let order = new_order(app, shop, customer).await;
    app.catalog
        .inventory
        .adjust(
            shop.product.id,
            StockChange::Delta(2),
            "delivery".into(),
            shop.vendor.owner,
        )
        .await
        .unwrap();
    apply_command(&deps(app), order.id(), OrderCommand::MarkPaid)
        .await
        .unwrap()
}

/// Puts `stock` units on the shop's product and holds two of them for `order`.
async fn stock_and_reserve(app: &TestApp, shop: &Shop, order: OrderId, stock: u32) {
    let inventory = &app.catalog.inventory;
    inventory
        .adjust(
            shop.product.id,
            StockChange::Set(stock),
            "delivery".into(),
            shop.vendor.owner,
        )
        .await
        .unwrap();
    inventory
        .reserve(
            &order.to_string(),
            &[(shop.product.id, 2)],
            Duration::from_secs(6 * 3600),
        )
        .await
        .unwrap();
}

async fn available(app: &TestApp, shop: &Shop) -> u32 {
    app.catalog
        .inventory
        .get(shop.product.id)
        .await
        .unwrap()
        .available
}

/// Waits until the product's available stock reads `expected`: an order's stock is released
/// just after its new status is stored, so a reader can see the status first.
async fn eventually_available(app: &TestApp, shop: &Shop, expected: u32) -> u32 {
    let mut now = available(app, shop).await;
    for _ in 0..100 {
        if now == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = available(app, shop).await;
    }
    now
}

/// Waits until no payment timer is due at `deadline`; returns those still due at the end.
async fn eventually_no_timer_due(app: &TestApp, deadline: chrono::DateTime<Utc>) -> Vec<DueTimer> {
    let repo = repo(app);
    let mut due = repo
        .due_timers(deadline, app.clock.now(), 100)
        .await
        .unwrap();
    for _ in 0..100 {
        if due.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        due = repo
            .due_timers(deadline, app.clock.now(), 100)
            .await
            .unwrap();
    }
    due
}

/// Waits until the stored order reaches `status`.
async fn eventually_status(app: &TestApp, id: OrderId, status: OrderStatus) -> OrderRecord {
    let repo = repo(app);
    for _ in 0..100 {
        if let Some(row) = repo.load(id).await.unwrap()
            && row.value.status() == status
        {
            return row.value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {id} never became {status}");
}

#[actix_web::test]
async fn a_vendor_accepts_prepares_and_readies_a_paid_order_and_the_customer_follows() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, customer_token) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, customer).await;
    let id = order.id();
    let mut live = app
        .catalog
        .bus
        .subscribe(&format!("order.{id}"))
        .await
        .unwrap();

    assert_problem(
        post(
            &app,
            &customer_token,
            &format!("/api/v1/orders/{id}/accept"),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    for (step, status) in [
        ("accept", "accepted"),
        ("preparing", "preparing"),
        ("ready", "ready_for_pickup"),
    ] {
        let body = ok_json(
            post(
                &app,
                &shop.vendor_token,
                &format!("/api/v1/orders/{id}/{step}"),
            )
            .await,
        )
        .await;
        assert_eq!(body["status"], status);
    }

    let published = tokio::time::timeout(Duration::from_secs(5), live.recv())
        .await
        .unwrap();
    let Some(Delivery::Message(payload)) = published else {
        panic!("expected an event on the bus, got {published:?}");
    };
    let published: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(published["order_id"], id.to_string());
    assert_eq!(published["seq"], 3);
    assert_eq!(published["kind"]["type"], "accepted");

    let seen = ok_json(get(&app, &customer_token, &format!("/api/v1/orders/{id}")).await).await;
    assert_eq!(seen["status"], "ready_for_pickup");
    assert_eq!(seen["seq"], 5);

    let log = ok_json(
        get(
            &app,
            &customer_token,
            &format!("/api/v1/orders/{id}/events"),
        )
        .await,
    )
    .await;
    let seqs: Vec<u64> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let types: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["created", "paid", "accepted", "preparing", "ready"]);

    let tail = ok_json(
        get(
            &app,
            &customer_token,
            &format!("/api/v1/orders/{id}/events?after_seq=3&limit=1"),
        )
        .await,
    )
    .await;
    assert_eq!(tail["events"][0]["seq"], 4);
    assert_eq!(tail["events"][0]["status_after"], "preparing");
    assert_eq!(tail["next_after_seq"], 4);
}

#[actix_web::test]
async fn an_illegal_transition_is_a_409_naming_both_statuses() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, _) = user_token(&app, Role::Customer);
    let unpaid = new_order(&app, &shop, customer).await;

    let response = post(
        &app,
        &shop.vendor_token,
        &format!("/api/v1/orders/{}/accept", unpaid.id()),
    )
    .await;
    let problem = assert_problem(response, 409, "illegal_transition").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("pending_payment") && detail.contains("accepted"),
        "{detail}"
    );

    let response = post(
        &app,
        &shop.vendor_token,
        &format!("/api/v1/orders/{}/ready", unpaid.id()),
    )
    .await;
    assert_problem(response, 409, "illegal_transition").await;
    assert_eq!(
        repo(&app)
            .load(unpaid.id())
            .await
            .unwrap()
            .unwrap()
            .value
            .seq,
        1,
        "refused commands record nothing"
    );
}

#[actix_web::test]
async fn a_customer_cancels_before_acceptance_releasing_stock_and_not_after() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, token) = user_token(&app, Role::Customer);

    let order = new_order(&app, &shop, customer).await;
    stock_and_reserve(&app, &shop, order.id(), 5).await;
    assert_eq!(available(&app, &shop).await, 3);
    let body = ok_json(
        post(
            &app,
            &token,
            &format!("/api/v1/orders/{}/cancel", order.id()),
        )
        .await,
    )
    .await;
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancelled_by"], "customer");
    assert_eq!(
        available(&app, &shop).await,
        5,
        "the reservation is released"
    );

    let accepted = paid_order(&app, &shop, customer).await;
    ok_json(
        post(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/orders/{}/accept", accepted.id()),
        )
        .await,
    )
    .await;
    let response = post(
        &app,
        &token,
        &format!("/api/v1/orders/{}/cancel", accepted.id()),
    )
    .await;
    let problem = assert_problem(response, 409, "illegal_transition").await;
    assert!(problem["detail"].as_str().unwrap().contains("accepted"));

    let admin = app.admin_token().await;
    let body = ok_json(
        post(
            &app,
            &admin,
            &format!("/api/v1/admin/orders/{}/cancel", accepted.id()),
        )
        .await,
    )
    .await;
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancelled_by"], "admin");
}

#[actix_web::test]
async fn strangers_get_404_for_an_order_they_have_no_part_in() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let other_shop = self::shop(&app).await;
    let (customer, _) = user_token(&app, Role::Customer);
    let (_, stranger) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, customer).await;
    let path = format!("/api/v1/orders/{}", order.id());

    assert_problem(get(&app, &stranger, &path).await, 404, "not_found").await;
    assert_problem(
        get(&app, &stranger, &format!("{path}/events")).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        post(&app, &stranger, &format!("{path}/cancel")).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        get(&app, &other_shop.vendor_token, &path).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        post(&app, &other_shop.vendor_token, &format!("{path}/accept")).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        get(
            &app,
            &stranger,
            &format!("/api/v1/orders/{}", OrderId::new()),
        )
        .await,
        404,
        "not_found",
    )
    .await;

    let admin = app.admin_token().await;
    ok_json(get(&app, &admin, &path).await).await;
    ok_json(get(&app, &shop.vendor_token, &path).await).await;
}

#[actix_web::test]
async fn order_lists_page_and_filter() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, token) = user_token(&app, Role::Customer);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(paid_order(&app, &shop, customer).await.id());
    }
    ok_json(
        post(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/orders/{}/accept", ids[1]),
        )
        .await,
    )
    .await;

    let first = ok_json(get(&app, &token, "/api/v1/orders?limit=2").await).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["id"], ids[0].to_string());
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = ok_json(
        get(
            &app,
            &token,
            &format!("/api/v1/orders?limit=2&cursor={cursor}"),
        )
        .await,
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["id"], ids[2].to_string());
    assert!(second["next_cursor"].is_null());

    let queue = ok_json(
        get(
            &app,
            &shop.vendor_token,
            "/api/v1/vendor/orders?status=paid",
        )
        .await,
    )
    .await;
    let queued: Vec<&str> = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(queued, [ids[0].to_string(), ids[2].to_string()]);

    let admin = app.admin_token().await;
    let accepted = ok_json(
        get(
            &app,
            &admin,
            &format!(
                "/api/v1/admin/orders?status=accepted&vendor_id={}",
                shop.vendor.id
            ),
        )
        .await,
    )
    .await;
    assert_eq!(accepted["items"].as_array().unwrap().len(), 1);
    assert_eq!(accepted["items"][0]["id"], ids[1].to_string());
    let everything = ok_json(get(&app, &admin, "/api/v1/admin/orders?limit=100").await).await;
    assert_eq!(everything["items"].as_array().unwrap().len(), 3);
    assert_problem(
        get(&app, &token, "/api/v1/admin/orders").await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        get(&app, &token, "/api/v1/orders?limit=0").await,
        422,
        "validation_failed",
    )
    .await;
}

#[actix_web::test]
async fn an_unpaid_order_expires_and_its_stock_comes_back() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, _) = user_token(&app, Role::Customer);
    let order = new_order(&app, &shop, customer).await;
    stock_and_reserve(&app, &shop, order.id(), 4).await;
    let paid = paid_order(&app, &shop, customer).await;

    app.clock.advance(FIFTEEN_MINUTES + Duration::from_secs(60));
    let expired = eventually_status(&app, order.id(), OrderStatus::Expired).await;
    assert_eq!(expired.seq, 2);
    assert_eq!(
        eventually_available(&app, &shop, 4).await,
        4,
        "the reservation is released"
    );
    assert_eq!(
        repo(&app)
            .load(paid.id())
            .await
            .unwrap()
            .unwrap()
            .value
            .status(),
        OrderStatus::Paid,
        "a paid order does not expire"
    );
    // The timer is deleted after the order's other side effects (the stock released above),
    // so it may still be going when they are seen: wait for it as for them.
    for deadline in [order.expires_at, paid.expires_at] {
        let due = eventually_no_timer_due(&app, deadline.unwrap()).await;
        assert!(due.is_empty(), "settled timers are deleted: {due:?}");
    }
}

#[actix_web::test]
async fn expiry_still_happens_after_a_restart() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, _) = user_token(&app, Role::Customer);
    let order = new_order(&app, &shop, customer).await;
    stock_and_reserve(&app, &shop, order.id(), 3).await;
    let dir = app.stop().await;

    let app = spawn_in(dir, |_| {}).await;
    assert_eq!(available(&app, &shop).await, 1);
    app.clock.advance(FIFTEEN_MINUTES + Duration::from_secs(60));
    eventually_status(&app, order.id(), OrderStatus::Expired).await;
    assert_eq!(
        eventually_available(&app, &shop, 3).await,
        3,
        "the reservation is released"
    );
}

#[actix_web::test]
async fn paying_sells_the_reserved_stock() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, _) = user_token(&app, Role::Customer);
    let order = new_order(&app, &shop, customer).await;
    stock_and_reserve(&app, &shop, order.id(), 5).await;

    apply_command(&deps(&app), order.id(), OrderCommand::MarkPaid)
        .await
        .unwrap();

    let stock = app.catalog.inventory.get(shop.product.id).await.unwrap();
    assert_eq!((stock.stock, stock.held, stock.available), (3, 0, 3));
}

#[actix_web::test]
async fn a_row_behind_its_event_log_is_rolled_forward() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, token) = user_token(&app, Role::Customer);
    let repo = repo(&app);

    // Never activated: the first read rolls the row forward.
    let fresh = new_order(&app, &shop, customer).await;
    let paid = OrderEvent {
        seq: 2,
        at: Utc::now(),
        kind: OrderEventKind::Paid,
        status_after: OrderStatus::Paid,
    };
    repo.append_event(fresh.id(), &paid).await.unwrap().unwrap();
    assert!(
        repo.append_event(fresh.id(), &paid).await.unwrap().is_err(),
        "a sequence number is taken once"
    );
    let seen = ok_json(get(&app, &token, &format!("/api/v1/orders/{}", fresh.id())).await).await;
    assert_eq!(seen["status"], "paid");
    let row = repo.load(fresh.id()).await.unwrap().unwrap().value;
    assert_eq!((row.status(), row.seq), (OrderStatus::Paid, 2));

    // Live actor: its next command finds the log ahead, rolls forward and decides again.
    let live = paid_order(&app, &shop, customer).await;
    ok_json(
        get(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/orders/{}", live.id()),
        )
        .await,
    )
    .await;
    let accepted = OrderEvent {
        seq: 3,
        at: Utc::now(),
        kind: OrderEventKind::Accepted,
        status_after: OrderStatus::Accepted,
    };
    repo.append_event(live.id(), &accepted)
        .await
        .unwrap()
        .unwrap();
    let body = ok_json(
        post(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/orders/{}/preparing", live.id()),
        )
        .await,
    )
    .await;
    assert_eq!(body["status"], "preparing");
    assert_eq!(body["seq"], 4);
    let (events, _) = repo.events_after(live.id(), 0, 100).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

#[actix_web::test]
async fn a_vendor_rejects_a_paid_order_with_a_reason() {
    let app = spawn_app().await;
    let shop = shop(&app).await;
    let (customer, token) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, customer).await;
    let path = format!("/api/v1/orders/{}/reject", order.id());
    let reject = |reason: &str| {
        app.client
            .post(app.url(&path))
            .bearer_auth(&shop.vendor_token)
            .json(&serde_json::json!({ "reason": reason }))
            .send()
    };

    assert_problem(reject("  ").await.unwrap(), 422, "validation_failed").await;
    let body = ok_json(reject("out of lasagne").await.unwrap()).await;
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["rejection_reason"], "out of lasagne");

    let log = ok_json(
        get(
            &app,
            &token,
            &format!("/api/v1/orders/{}/events?after_seq=2", order.id()),
        )
        .await,
    )
    .await;
    assert_eq!(
        log["events"][0]["kind"],
        serde_json::json!({"type": "rejected", "reason": "out of lasagne"})
    );
    assert!(log["next_after_seq"].is_null());
}
