//! Money through the API: a store's rates frozen on its orders, a verified delivery released
//! to the store's and the courier's payable balances, an unverified one held for review,
//! refunds taken back in proportion (from payable after the release), payouts run once, and
//! the ledger balancing and agreeing with the provider; who may read which account.

use std::time::Duration;

use hexmarket::domain::identity::Role;
use serde_json::{Value, json};

use crate::fixtures::user_token;
use crate::helpers::{TestApp, assert_problem, get, ok_json, post, spawn_app_with};
use crate::live::{
    Courier, Shop, WAIT, assigned, dropoff, moved, paid_order, route_start, shop, vendor_step,
};

/// Polls `path` until `check` holds of its JSON, failing after [`WAIT`] twice over.
async fn until(app: &TestApp, token: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let body = ok_json(get(app, token, path).await).await;
        if check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn minor(balance: &Value, field: &str) -> i64 {
    balance[field]
        .as_array()
        .and_then(|a| a.first())
        .map_or(0, |m| m["amount_minor"].as_i64().unwrap())
}

/// Delivers an order assigned to `courier`: ready, picked up, driven to `to`, handed over
/// with the customer's code.
async fn deliver(
    app: &TestApp,
    shop: &Shop,
    customer: &str,
    courier: &mut Courier,
    order: &str,
    to: hexmarket::domain::geo::GeoPoint,
) {
    vendor_step(app, shop, order, "preparing").await;
    vendor_step(app, shop, order, "ready").await;
    courier.drive(shop.vendor.location).await;
    courier.pick_up(order).await;
    courier.drive(to).await;
    let mine = ok_json(get(app, customer, &format!("/api/v1/orders/{order}")).await).await;
    let code = mine["handoff_code"].as_str().unwrap().to_owned();
    courier
        .ws
        .send_json(&json!({"type": "delivered", "order_id": order, "code": code}))
        .await;
    let ack = courier
        .ws
        .expect_where("the ack of delivered", WAIT, |f| {
            f["type"] == "ack" || f["type"] == "error"
        })
        .await;
    assert_eq!(ack["of"], "delivered", "{ack}");
}

#[actix_web::test]
async fn delivered_orders_pay_their_store_and_courier_once_and_the_ledger_balances() {
    // Arrange: a store with its own rates, a courier, a customer and an admin.
    let app = spawn_app_with(|s| {
        s.ledger.hold = Duration::ZERO;
        s.ledger.payout_every = Duration::ZERO;
    })
    .await;
    let shop = shop(&app, "Ledger Deli").await;
    let store = shop.vendor.id;
    let (_, customer) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let rates_path = format!("/api/v1/admin/ledger/rates/stores/{store}");
    let too_much = app
        .client
        .put(app.url(&rates_path))
        .bearer_auth(&admin)
        .json(&json!({"commission_bps": 10_001, "courier_fee_bps": 7000}))
        .send()
        .await
        .unwrap();
    assert_problem(too_much, 422, "validation_failed").await;
    let set = app
        .client
        .put(app.url(&rates_path))
        .bearer_auth(&admin)
        .json(&json!({"commission_bps": 1000, "courier_fee_bps": 7000}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let start = app.clock.now() - chrono::Duration::minutes(1);
    let (courier_id, courier_token) = {
        let mut c = Courier::online(
            &app,
            moved(shop.vendor.location, 0.0, -200.0),
            route_start(&app),
        )
        .await;
        // Act 1: an order delivered at the door.
        let order = assigned(&app, &shop, &customer, &mut c).await;
        deliver(&app, &shop, &customer, &mut c, &order, dropoff(&shop)).await;
        let seen = ok_json(get(&app, &customer, &format!("/api/v1/orders/{order}")).await).await;
        let totals = seen["totals"].clone();
        assert_eq!(seen["rates"]["commission_bps"], 1000, "{seen}");

        // Assert: the store's share (90 % of the goods) and the courier's (70 % of the fee)
        // are payable at once (no hold here).
        let subtotal = totals["subtotal"]["amount_minor"].as_i64().unwrap();
        let fee = totals["delivery_fee"]["amount_minor"].as_i64().unwrap();
        let store_share = subtotal - (subtotal * 1000 + 5000) / 10_000;
        let courier_share = (fee * 7000 + 5000) / 10_000;
        let payable = until(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/ledger/accounts/store_payable:{store}"),
            |b| minor(b, "owed") == store_share,
        )
        .await;
        assert_eq!(minor(&payable, "balance"), -store_share, "{payable}");
        let pending = ok_json(
            get(
                &app,
                &shop.vendor_token,
                &format!("/api/v1/ledger/accounts/store_pending:{store}"),
            )
            .await,
        )
        .await;
        assert_eq!(minor(&pending, "balance"), 0, "{pending}");

        // Act 2: an order handed over 600 m from its drop-off: held for review. (The
        // courier's recorded route runs ahead of real time: move the clock along.)
        app.clock.advance(Duration::from_secs(120));
        let far = assigned(&app, &shop, &customer, &mut c).await;
        deliver(
            &app,
            &shop,
            &customer,
            &mut c,
            &far,
            moved(dropoff(&shop), -600.0, 0.0),
        )
        .await;
        let reviews = until(&app, &admin, "/api/v1/admin/ledger/reviews", |r| {
            r["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["order_id"] == far.as_str())
        })
        .await;
        assert!(
            reviews["items"][0]["due_at"].is_null(),
            "a delivery held for review has no due time: {reviews}"
        );
        let courier_path = |id: &str| format!("/api/v1/ledger/accounts/courier_payable:{id}");
        let (courier_id, courier_token) = (c.id.to_string(), c.token.clone());
        until(&app, &courier_token, &courier_path(&courier_id), |b| {
            minor(b, "owed") == courier_share
        })
        .await;
        let released = post(
            &app,
            &admin,
            &format!("/api/v1/admin/ledger/reviews/{far}/release"),
        )
        .await;
        assert_eq!(released.status(), 202);
        until(&app, &courier_token, &courier_path(&courier_id), |b| {
            minor(b, "owed") == 2 * courier_share
        })
        .await;
        (courier_id, courier_token)
    };

    // Act 3: a paid order its customer cancels: the whole payment goes back.
    let cancelled = paid_order(&app, &shop, &customer).await;
    let cancel = post(
        &app,
        &customer,
        &format!("/api/v1/orders/{cancelled}/cancel"),
    )
    .await;
    assert_eq!(cancel.status(), 200);

    // Act 4: a payout run pays each party its balance, once.
    let run = ok_json(post(&app, &admin, "/api/v1/admin/payouts/runs").await).await;
    let run_path = format!("/api/v1/admin/payouts/runs/{}", run["id"].as_str().unwrap());
    let done = until(&app, &admin, &run_path, |r| r["status"] == "done").await;
    assert_eq!(done["payouts"], 2, "{done}");
    let store_payouts = ok_json(get(&app, &shop.vendor_token, "/api/v1/payouts").await).await;
    let items = store_payouts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{store_payouts}");
    assert_eq!(items[0]["status"], "paid", "{store_payouts}");
    let store_paid = items[0]["amount"]["amount_minor"].as_i64().unwrap();
    let courier_payouts = ok_json(get(&app, &courier_token, "/api/v1/payouts").await).await;
    assert_eq!(
        courier_payouts["items"][0]["account"],
        format!("courier_payable:{courier_id}"),
        "{courier_payouts}"
    );
    let again = ok_json(post(&app, &admin, "/api/v1/admin/payouts/runs").await).await;
    let again_path = format!(
        "/api/v1/admin/payouts/runs/{}",
        again["id"].as_str().unwrap()
    );
    let nothing = until(&app, &admin, &again_path, |r| r["status"] == "done").await;
    assert_eq!(nothing["payouts"], 0, "nothing left to pay: {nothing}");

    // Assert: every balance sums to zero, nothing is pending, the provider agrees.
    let summary = until(&app, &admin, "/api/v1/admin/ledger/summary", |s| {
        s["balanced"] == true
    })
    .await;
    let pending = ok_json(
        get(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/ledger/accounts/store_pending:{store}"),
        )
        .await,
    )
    .await;
    assert_eq!(minor(&pending, "balance"), 0, "{pending} {summary}");
    let payable = ok_json(
        get(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/ledger/accounts/store_payable:{store}"),
        )
        .await,
    )
    .await;
    assert_eq!(minor(&payable, "balance"), 0, "paid out: {payable}");
    assert!(store_paid > 0);
    // The ledger books what happened moments ago within a second or two.
    let to = app.clock.now() + chrono::Duration::minutes(1);
    let path = format!(
        "/api/v1/admin/ledger/reconciliation?from={}&to={}",
        start.format("%Y-%m-%dT%H:%M:%S%.fZ"),
        to.format("%Y-%m-%dT%H:%M:%S%.fZ")
    );
    let report = until(&app, &admin, &path, |r| r["differences"] == json!([])).await;
    assert_eq!(report["differences"], json!([]), "{report}");
    assert_eq!(report["payments"], 3, "{report}");
    assert_eq!(report["payouts"], 2, "{report}");

    // A statement names every movement of the store's payable balance.
    let statement = ok_json(
        get(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/ledger/accounts/store_payable:{store}/entries?limit=1"),
        )
        .await,
    )
    .await;
    assert_eq!(statement["items"][0]["kind"], "release", "{statement}");
    let after = statement["next_after"].as_u64().unwrap();
    let rest = ok_json(
        get(
            &app,
            &shop.vendor_token,
            &format!("/api/v1/ledger/accounts/store_payable:{store}/entries?after={after}"),
        )
        .await,
    )
    .await;
    let kinds: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["release", "payout"], "{rest}");
}

#[actix_web::test]
async fn accounts_are_read_by_their_party_and_admins_only_and_bad_input_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    let shop = shop(&app, "Private Books").await;
    let other = crate::live::shop(&app, "Nosy Neighbour").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let (courier, courier_token) = user_token(&app, Role::Courier);
    let own = format!("/api/v1/ledger/accounts/store_payable:{}", shop.vendor.id);

    assert_eq!(get(&app, &shop.vendor_token, &own).await.status(), 200);
    assert_problem(get(&app, &other.vendor_token, &own).await, 404, "not_found").await;
    assert_problem(get(&app, &customer, &own).await, 404, "not_found").await;
    assert_problem(
        get(
            &app,
            &courier_token,
            "/api/v1/ledger/accounts/provider_clearing",
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let mine = ok_json(get(&app, &courier_token, "/api/v1/ledger/accounts").await).await;
    assert_eq!(
        mine["items"][0]["account"],
        format!("courier_payable:{courier}"),
        "{mine}"
    );
    let theirs = ok_json(get(&app, &customer, "/api/v1/ledger/accounts").await).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    assert_problem(
        get(&app, &shop.vendor_token, "/api/v1/ledger/accounts/bank:1").await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        get(&app, &shop.vendor_token, &format!("{own}/entries?limit=0")).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        get(&app, &shop.vendor_token, "/api/v1/admin/ledger/summary").await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        post(&app, &shop.vendor_token, "/api/v1/admin/payouts/runs").await,
        403,
        "forbidden",
    )
    .await;
    let bad = app
        .client
        .put(app.url("/api/v1/payouts/destination"))
        .bearer_auth(&shop.vendor_token)
        .json(&json!({"destination": "no spaces allowed"}))
        .send()
        .await
        .unwrap();
    assert_problem(bad, 422, "validation_failed").await;
    let set = app
        .client
        .put(app.url("/api/v1/payouts/destination"))
        .bearer_auth(&shop.vendor_token)
        .json(&json!({"destination": "acct_1Nv0FGQ9RKHgCVdK"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let seen = ok_json(get(&app, &shop.vendor_token, "/api/v1/payouts/destination").await).await;
    assert_eq!(seen["destination"], "acct_1Nv0FGQ9RKHgCVdK", "{seen}");
    assert_problem(
        get(&app, &customer, "/api/v1/payouts/destination").await,
        403,
        "forbidden",
    )
    .await;
}
