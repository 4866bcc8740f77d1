//! Money through the API: a store's rates frozen on its orders, a verified delivery released
//! to the store's and the courier's payable balances, an unverified one held for review,
//! refunds taken back in proportion (from payable after the release), payouts run once, and
//! the ledger balancing and agreeing with the provider; who may read which account.

use std::time::Duration;

use hexmarket::domain::identity::Role;
use serde_json::{Value, json};

use crate::fixtures::user_token;
use crate::helpers::{TestApp, assert_problem, get, ok_json, post, spawn_app_with, until};
use crate::live::{
    Courier, Shop, WAIT, assigned, dropoff, moved, paid_order, route_start, shop, vendor_step,
};

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
            WAIT * 2,
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
        let reviews = until(
            &app,
            &admin,
            "/api/v1/admin/ledger/reviews",
            WAIT * 2,
            |r| {
                r["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["order_id"] == far.as_str())
            },
        )
        .await;
        assert!(
            reviews["items"][0]["due_at"].is_null(),
            "a delivery held for review has no due time: {reviews}"
        );
        let courier_path = |id: &str| format!("/api/v1/ledger/accounts/courier_payable:{id}");
        let (courier_id, courier_token) = (c.id.to_string(), c.token.clone());
        until(
            &app,
            &courier_token,
            &courier_path(&courier_id),
            WAIT * 2,
            |b| minor(b, "owed") == courier_share,
        )
        .await;
        let released = post(
            &app,
            &admin,
            &format!("/api/v1/admin/ledger/reviews/{far}/release"),
        )
        .await;
        assert_eq!(released.status(), 202);
        until(
            &app,
            &courier_token,
            &courier_path(&courier_id),
            WAIT * 2,
            |b| minor(b, "owed") == 2 * courier_share,
        )
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
    let done = until(&app, &admin, &run_path, WAIT * 2, |r| r["status"] == "done").await;
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
    let nothing = until(&app, &admin, &again_path, WAIT * 2, |r| {
        r["status"] == "done"
    })
    .await;
    assert_eq!(nothing["payouts"], 0, "nothing left to pay: {nothing}");

    // Assert: every balance sums to zero, nothing is pending, the provider agrees.
    let summary = until(
        &app,
        &admin,
        "/api/v1/admin/ledger/summary",
        WAIT * 2,
        |s| s["balanced"] == true,
    )
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
    let report = until(&app, &admin, &path, WAIT * 2, |r| {
        r["differences"] == json!([])
    })
    .await;
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

/// Puts one unit of the shop's product in the customer's cart.
async fn fill_cart(app: &TestApp, customer: &str, shop: &Shop) {
    let added = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .bearer_auth(customer)
        .json(&json!({"product_id": shop.product.id, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
}

/// Checks the cart out with `coupon`: the status and the body.
async fn checkout_with(app: &TestApp, customer: &str, shop: &Shop, coupon: &str) -> (u16, Value) {
    let to = dropoff(shop);
    let response = app
        .client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(customer)
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(&json!({
            "delivery_address": {"text": "Drop-off 7, Berlin", "lat": to.lat, "lng": to.lng},
            "payment_method": "simulated",
            "coupon_code": coupon,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[actix_web::test]
async fn a_coupon_is_redeemed_at_most_its_limit_and_an_unpaid_checkout_gives_it_back() {
    // Arrange: a platform coupon of 10 % for five customers, once each.
    let app = spawn_app_with(|s| {
        s.order_payment_timeout = Duration::from_secs(60);
    })
    .await;
    let shop = shop(&app, "Coupon Corner").await;
    let admin = app.admin_token().await;
    let create = |body: Value, token: String| {
        let request = app
            .client
            .post(app.url("/api/v1/coupons"))
            .bearer_auth(token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let made = create(
        json!({"code": "ten-off", "percent_bps": 1000, "total_limit": 5,
               "min_spend": {"amount_minor": 1000, "currency": "EUR"}}),
        admin.clone(),
    )
    .await;
    assert_eq!(made.status(), 201);
    let again = create(
        json!({"code": "TEN-OFF", "percent_bps": 500, "total_limit": 5}),
        admin.clone(),
    )
    .await;
    assert_problem(again, 409, "coupon_code_taken").await;
    let (_, someone) = user_token(&app, Role::Customer);
    let refused = create(
        json!({"code": "MINE", "percent_bps": 500, "total_limit": 5}),
        someone.clone(),
    )
    .await;
    assert_problem(refused, 403, "forbidden").await;
    let big = create(
        json!({"code": "BIG-SPENDER", "amount": {"amount_minor": 500, "currency": "EUR"},
               "min_spend": {"amount_minor": 100000, "currency": "EUR"}, "total_limit": 5}),
        shop.vendor_token.clone(),
    )
    .await;
    assert_eq!(big.status(), 201);
    let big: Value = big.json().await.unwrap();
    assert_eq!(
        (&big["funded_by"], &big["store_id"]),
        (&json!("store"), &json!(shop.vendor.id)),
        "{big}"
    );

    // The cart shows what a coupon takes off, or why it does not apply.
    fill_cart(&app, &someone, &shop).await;
    let priced = ok_json(get(&app, &someone, "/api/v1/cart?coupon_code=ten-off").await).await;
    assert_eq!(
        priced["coupon"]["discount"]["amount_minor"], 145,
        "{priced}"
    );
    for (code, status, problem) in [
        ("NOPE", 422, "coupon_unknown"),
        ("BIG-SPENDER", 422, "coupon_min_spend"),
        ("no spaces", 422, "validation_failed"),
    ] {
        let path = format!("/api/v1/cart?coupon_code={}", code.replace(' ', "%20"));
        assert_problem(get(&app, &someone, &path).await, status, problem).await;
    }

    // Act: twelve customers check out with it at once.
    let mut customers = Vec::new();
    for _ in 0..12 {
        let (_, token) = user_token(&app, Role::Customer);
        fill_cart(&app, &token, &shop).await;
        customers.push(token);
    }
    let outcomes = futures_util::future::join_all(
        customers
            .iter()
            .map(|c| checkout_with(&app, c, &shop, "TEN-OFF")),
    )
    .await;

    // Assert: five got it, the rest were told it is exhausted; a discounted order's total.
    let placed: Vec<(&String, &Value)> = customers
        .iter()
        .zip(&outcomes)
        .filter(|(_, (s, _))| *s == 201)
        .map(|(c, (_, b))| (c, b))
        .collect();
    assert_eq!(placed.len(), 5, "{outcomes:?}");
    for (status, body) in outcomes.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*status, body["code"].as_str()),
            (409, Some("coupon_exhausted")),
            "{body}"
        );
    }
    let order = &placed[0].1["orders"][0];
    assert_eq!(order["discount"]["amount"]["amount_minor"], 145, "{order}");
    assert_eq!(
        order["totals"]["total"]["amount_minor"].as_i64().unwrap(),
        order["totals"]["subtotal"]["amount_minor"]
            .as_i64()
            .unwrap()
            + order["totals"]["delivery_fee"]["amount_minor"]
                .as_i64()
                .unwrap()
            - 145,
        "{order}"
    );
    let coupon = ok_json(get(&app, &admin, "/api/v1/coupons/TEN-OFF").await).await;
    assert_eq!((&coupon["held"], &coupon["used"]), (&json!(5), &json!(0)));

    // Four pay; the fifth lets its order expire, which gives the redemption back.
    for (customer, checkout) in &placed[..4] {
        crate::fixtures::pay(&app, customer, checkout).await;
    }
    app.clock.advance(Duration::from_secs(61));
    let freed = until(&app, &admin, "/api/v1/coupons/TEN-OFF", WAIT * 2, |c| {
        c["held"] == 0 && c["used"] == 4
    })
    .await;
    assert_eq!(freed["total_limit"], 5, "{freed}");
    let latecomer = customers
        .iter()
        .find(|c| !placed.iter().any(|(p, _)| p == c))
        .unwrap();
    let (status, body) = checkout_with(&app, latecomer, &shop, "ten-off").await;
    assert_eq!(status, 201, "the place given back is taken: {body}");

    // The platform's discounts are in the ledger: 4 × 1.45 given.
    let discounts = until(
        &app,
        &admin,
        "/api/v1/ledger/accounts/discounts",
        WAIT * 2,
        |b| minor(b, "balance") == 4 * 145,
    )
    .await;
    assert_eq!(discounts["account"], "discounts");
}

/// Every transaction of the ledger, as an admin reads it from `app`.
async fn transactions(app: &TestApp, admin: &str) -> Vec<Value> {
    let page = ok_json(get(app, admin, "/api/v1/admin/ledger/transactions?limit=1000").await).await;
    page["items"].as_array().unwrap().clone()
}

#[actix_web::test]
async fn two_nodes_book_each_event_once_and_one_takes_over_when_the_other_stops() {
    // Arrange: two nodes on one store, orders paid through each, one cancelled on each.
    let first = crate::helpers::spawn_app().await;
    let second = crate::helpers::spawn_peer(&first, |_| {}).await;
    let shop = shop(&first, "Twin Kitchen").await;
    for app in [&first, &second] {
        for n in 0..3 {
            let (_, customer) = user_token(app, Role::Customer);
            let order = paid_order(app, &shop, &customer).await;
            if n == 0 {
                let cancel = post(app, &customer, &format!("/api/v1/orders/{order}/cancel")).await;
                assert_eq!(cancel.status(), 200);
            }
        }
    }
    let admin = second.admin_token().await;

    // Act + assert: six payments and two refunds, each booked once, whichever node books.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while transactions(&second, &admin).await.len() < 8 {
        assert!(tokio::time::Instant::now() < deadline, "never booked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The first node stops; the second takes the ledger over once its lease runs out.
    first.stop().await;
    for _ in 0..2 {
        let (_, customer) = user_token(&second, Role::Customer);
        paid_order(&second, &shop, &customer).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let booked = loop {
        let booked = transactions(&second, &admin).await;
        if booked.len() >= 10 {
            break booked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not taken over: {booked:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut keys: Vec<&str> = booked.iter().map(|t| t["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 10, "{keys:?}");
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 10, "a key booked twice");
    let kinds = booked.iter().filter(|t| t["kind"] == "refund").count();
    assert_eq!(kinds, 2);
    let summary = ok_json(get(&second, &admin, "/api/v1/admin/ledger/summary").await).await;
    assert_eq!(summary["balanced"], true, "{summary}");
}
