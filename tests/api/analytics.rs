//! Analytics through the API: a known history (orders paid, rejected, cancelled, delivered
//! on time and late, refunded; offers declined and accepted) and every figure of the
//! reports checked exactly against the orders' own logs; who may read which report; CSV;
//! bad input refused; and a rebuild from the logs giving the same rollups.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};
use hexmarket::domain::geo::GeoPoint;
use hexmarket::domain::identity::Role;
use serde_json::{Value, json};

use crate::fixtures::user_token;
use crate::helpers::{TestApp, assert_problem, get, ok_json, spawn_app, spawn_peer, until};
use crate::live::{Courier, WAIT, dropoff, moved, paid_order, route_start, shop, vendor_step};

/// An order as its log and row tell it.
struct Known {
    subtotal: i64,
    fee: i64,
    commission_bps: i64,
    courier_bps: i64,
    /// (type, at, refund amount).
    events: Vec<(String, DateTime<Utc>, i64)>,
}

impl Known {
    fn at(&self, kind: &str) -> Option<DateTime<Utc>> {
        self.events.iter().find(|e| e.0 == kind).map(|e| e.1)
    }

    fn refunds(&self) -> Vec<i64> {
        self.events
            .iter()
            .filter(|e| e.0 == "refunded")
            .map(|e| e.2)
            .collect()
    }

    /// Commission and delivery fee kept, unless refunded whole (the history refunds only
    /// whole orders: checked).
    fn revenue(&self) -> (i64, i64, i64) {
        let given: i64 = self.refunds().iter().sum();
        if given > 0 {
            assert_eq!(given, self.subtotal + self.fee, "refunds are whole here");
            return (0, 0, 0);
        }
        let half_up = |x: i64, bps: i64| (x * bps + 5000) / 10_000;
        let commission = half_up(self.subtotal, self.commission_bps);
        let kept = self.fee - half_up(self.fee, self.courier_bps);
        (commission, kept, self.subtotal - commission)
    }
}

async fn known(app: &TestApp, token: &str, order: &str) -> Known {
    let row = ok_json(get(app, token, &format!("/api/v1/orders/{order}")).await).await;
    let log = ok_json(get(app, token, &format!("/api/v1/orders/{order}/events")).await).await;
    Known {
        subtotal: row["totals"]["subtotal"]["amount_minor"].as_i64().unwrap(),
        fee: row["totals"]["delivery_fee"]["amount_minor"]
            .as_i64()
            .unwrap(),
        commission_bps: row["rates"]["commission_bps"].as_i64().unwrap(),
        courier_bps: row["rates"]["courier_fee_bps"].as_i64().unwrap(),
        events: log["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"]["type"].as_str().unwrap().to_owned(),
                    e["at"].as_str().unwrap().parse().unwrap(),
                    e["kind"]["amount"]["amount_minor"].as_i64().unwrap_or(0),
                )
            })
            .collect(),
    }
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_seconds()
}

/// The lower median.
fn median(mut values: Vec<i64>) -> Value {
    values.sort();
    match values.len() {
        0 => Value::Null,
        n => json!(values[(n - 1) / 2]),
    }
}

/// The sales totals the reports must give for `orders`.
fn expected_sales(orders: &[&Known]) -> Value {
    let paid: Vec<&&Known> = orders.iter().filter(|o| o.at("paid").is_some()).collect();
    let count = paid.len() as i64;
    let goods: i64 = paid.iter().map(|o| o.subtotal).sum();
    let fees: i64 = paid.iter().map(|o| o.fee).sum();
    let refunds: i64 = orders.iter().flat_map(|o| o.refunds()).sum();
    let refund_count = orders.iter().map(|o| o.refunds().len()).sum::<usize>();
    let (commission, kept, store_share) = paid
        .iter()
        .map(|o| o.revenue())
        .fold((0, 0, 0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z));
    let count_of = |kind: &str| orders.iter().filter(|o| o.at(kind).is_some()).count() as u64;
    let preparations: Vec<i64> = orders
        .iter()
        .filter_map(|o| Some(secs(o.at("accepted")?, o.at("ready")?)))
        .collect();
    let rate = |n: u64| ((n as f64 / count as f64) * 10_000.0).round() / 10_000.0;
    json!({
        "currency": "EUR",
        "orders": count,
        "gross_sales": goods,
        "discounts": 0,
        "delivery_fees": fees,
        "gmv": goods + fees,
        "refunds": refunds,
        "refund_count": refund_count,
        "net_sales": goods + fees - refunds,
        "average_order_value": (goods + fees) / count,
        "commission": commission,
        "delivery_fees_kept": kept,
        "revenue": commission + kept,
        "store_share": store_share,
        "rejected": count_of("rejected"),
        "cancelled": count_of("cancelled"),
        "rejection_rate": rate(count_of("rejected")),
        "cancellation_rate": rate(count_of("cancelled")),
        "prepared": preparations.len(),
        "preparation_median_s": median(preparations.clone()),
        "preparation_mean_s": if preparations.is_empty() {
            Value::Null
        } else {
            json!(preparations.iter().sum::<i64>() / preparations.len() as i64)
        },
    })
}

/// The totals row of a sales report, without its period.
fn totals(report: &Value) -> Value {
    let mut row = report["totals"][0].clone();
    if let Some(map) = row.as_object_mut() {
        map.remove("period");
    }
    row
}

/// Hands `order` over with the customer's code.
async fn hand_over(app: &TestApp, customer: &str, courier: &mut Courier, order: &str) {
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

async fn answer(courier: &mut Courier, order: &str, accept: bool) {
    let offer = courier.ws.expect_type("offer", WAIT).await;
    assert_eq!(offer["order_id"], order, "{offer}");
    courier
        .ws
        .send_json(
            &json!({"type": "offer_response", "offer_id": offer["offer_id"], "accept": accept}),
        )
        .await;
    if accept {
        courier.ws.expect_type("assignment", WAIT).await;
    } else {
        courier
            .ws
            .expect_where("the ack of the declined offer", WAIT, |f| {
                f["type"] == "ack" && f["of"] == "offer_response"
            })
            .await;
    }
}

/// Waiting seconds of an order from `from` to `to`, split at whole hours (as the rollups
/// count them), per hour.
fn waits(from: DateTime<Utc>, to: DateTime<Utc>, into: &mut BTreeMap<DateTime<Utc>, (u64, i64)>) {
    let mut at = from;
    loop {
        let hour = at
            .with_minute(0)
            .unwrap()
            .with_second(0)
            .unwrap()
            .with_nanosecond(0)
            .unwrap();
        let end = hour + chrono::Duration::hours(1);
        let until = to.min(end);
        let e = into.entry(hour).or_default();
        e.0 += 1;
        e.1 += (until - at).num_seconds();
        if to <= end {
            return;
        }
        at = end;
    }
}

fn cell(point: GeoPoint, res: h3o::Resolution) -> String {
    point.cell_at(res).to_string()
}

#[actix_web::test]
async fn analytics_count_a_known_history_exactly_for_their_owners_only_and_a_rebuild_agrees() {
    // Arrange: two stores at the same spot, a customer, an admin, a courier 200 m away.
    let app = spawn_app().await;
    let a = shop(&app, "Analytics Noodles").await;
    let b = shop(&app, "Analytics Dumplings").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let start = route_start(&app);
    let near = moved(a.vendor.location, 0.0, -200.0);
    let mut c1 = Courier::online(&app, near, start).await;

    // Act: order 1 prepared, taken, delivered on time.
    let o1 = paid_order(&app, &a, &customer).await;
    vendor_step(&app, &a, &o1, "accept").await;
    answer(&mut c1, &o1, true).await;
    vendor_step(&app, &a, &o1, "preparing").await;
    vendor_step(&app, &a, &o1, "ready").await;
    c1.drive(a.vendor.location).await;
    c1.pick_up(&o1).await;
    c1.drive(dropoff(&a)).await;
    hand_over(&app, &customer, &mut c1, &o1).await;

    // Order 2 rejected by the store, order 3 cancelled by the customer, order 5 of the
    // other store paid and left waiting for it.
    let o2 = paid_order(&app, &a, &customer).await;
    let rejected = app
        .client
        .post(app.url(&format!("/api/v1/orders/{o2}/reject")))
        .bearer_auth(&a.vendor_token)
        .json(&json!({"reason": "out of noodles"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 200);
    let o3 = paid_order(&app, &a, &customer).await;
    let cancelled = app
        .client
        .post(app.url(&format!("/api/v1/orders/{o3}/cancel")))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        cancelled.status(),
        200,
        "{}",
        cancelled.text().await.unwrap()
    );
    let o5 = paid_order(&app, &b, &customer).await;

    // Order 4: a second courier nearer the store declines it, the first takes it, drives
    // back, picks it up and hands it over late; then it is refunded whole.
    let mut c2 = Courier::online(&app, moved(a.vendor.location, 0.0, 100.0), app.clock.now()).await;
    let o4 = paid_order(&app, &a, &customer).await;
    vendor_step(&app, &a, &o4, "accept").await;
    answer(&mut c2, &o4, false).await;
    answer(&mut c1, &o4, true).await;
    vendor_step(&app, &a, &o4, "preparing").await;
    vendor_step(&app, &a, &o4, "ready").await;
    // The ride back is recorded a minute ahead: let the clock catch up with it.
    app.clock.advance(Duration::from_secs(60));
    c1.drive(a.vendor.location).await;
    c1.pick_up(&o4).await;
    app.clock.advance(Duration::from_secs(180));
    hand_over(&app, &customer, &mut c1, &o4).await;
    let refunded = app
        .client
        .post(app.url(&format!("/api/v1/admin/orders/{o4}/refund")))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "analytics-refund-4")
        .json(&json!({"lines": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refunded.status(), 200, "{}", refunded.text().await.unwrap());

    let k: Vec<Known> = {
        let mut k = Vec::new();
        for order in [&o1, &o2, &o3, &o4, &o5] {
            k.push(known(&app, &customer, order).await);
        }
        k
    };
    let store_a = a.vendor.id.as_uuid();
    let store_b = b.vendor.id.as_uuid();
    let day = |t: DateTime<Utc>| t.date_naive();
    let from = day(start) - chrono::Days::new(1);
    let to = day(app.clock.now()) + chrono::Days::new(1);
    let range = format!("from={from}&to={to}");

    // Assert: store A's sales, once analytics caught up with the refund of order 4.
    let expected_a = expected_sales(&[&k[0], &k[1], &k[2], &k[3]]);
    let path = format!("/api/v1/analytics/stores/{store_a}/sales?{range}&granularity=month");
    let sales_a = until(&app, &a.vendor_token, &path, WAIT * 4, |r| {
        totals(r) == expected_a
    })
    .await;
    assert_eq!(sales_a["scope"], format!("store:{store_a}"));
    let expected_b = expected_sales(&[&k[4]]);
    let path_b = format!("/api/v1/analytics/stores/{store_b}/sales?{range}");
    let sales_b = ok_json(get(&app, &b.vendor_token, &path_b).await).await;
    assert_eq!(totals(&sales_b), expected_b, "{sales_b}");
    let all: Vec<&Known> = k.iter().collect();
    let platform = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/analytics/platform/sales?{range}&granularity=week"),
        )
        .await,
    )
    .await;
    assert_eq!(totals(&platform), expected_sales(&all), "{platform}");
    // The alias answers the caller's own scope.
    let mine = ok_json(
        get(
            &app,
            &a.vendor_token,
            &format!("/api/v1/analytics/sales?{range}&granularity=month"),
        )
        .await,
    )
    .await;
    assert_eq!(mine, sales_a);
    let revenue = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/analytics/revenue?{range}&granularity=week"),
        )
        .await,
    )
    .await;
    assert_eq!(revenue, platform);

    // Top products and stores: four of A's product (paid), one of B's.
    let top = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/analytics/platform/products/top-selling?{range}"),
        )
        .await,
    )
    .await;
    let items = top["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{top}");
    assert_eq!(
        (
            &items[0]["product_id"],
            &items[0]["units"],
            &items[0]["sales"]
        ),
        (
            &json!(a.product.id.as_uuid()),
            &json!(4),
            &json!(4 * k[0].subtotal)
        ),
        "{top}"
    );
    assert_eq!(
        (&items[1]["product_id"], &items[1]["units"]),
        (&json!(b.product.id.as_uuid()), &json!(1))
    );
    let own_top = ok_json(
        get(
            &app,
            &a.vendor_token,
            &format!("/api/v1/analytics/products/top-selling?{range}"),
        )
        .await,
    )
    .await;
    assert_eq!(own_top["items"].as_array().unwrap().len(), 1, "{own_top}");
    assert_eq!(own_top["items"][0]["title"], "Ramen");
    let stores = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/analytics/platform/stores/top-selling?{range}"),
        )
        .await,
    )
    .await;
    assert_eq!(
        stores["items"],
        json!([
            {"store_id": store_a, "currency": "EUR", "orders": 4, "gmv": 4 * (k[0].subtotal + k[0].fee)},
            {"store_id": store_b, "currency": "EUR", "orders": 1, "gmv": k[4].subtotal + k[4].fee},
        ]),
    );

    // Couriers: the first was offered two orders and took both, one on time (a ride of a
    // few seconds against a minute's ETA) and one late (three minutes); the second
    // declined one.
    let assigned = |o: &Known| o.at("courier_assigned").unwrap();
    let picked = |o: &Known| o.at("picked_up").unwrap();
    let delivered = |o: &Known| o.at("delivered").unwrap();
    let c1_report = ok_json(
        get(
            &app,
            &c1.token,
            &format!("/api/v1/analytics/couriers/{}?{range}", c1.id),
        )
        .await,
    )
    .await;
    let mut total = c1_report["total"].clone();
    total.as_object_mut().unwrap().remove("period");
    assert_eq!(
        total,
        json!({
            "offers": 2, "accepted": 2, "declined": 0, "expired": 0, "acceptance_rate": 1.0,
            "deliveries": 2, "on_time": 1, "late": 1, "on_time_rate": 0.5,
            "accept_to_pickup_median_s": median(vec![secs(assigned(&k[0]), picked(&k[0])), secs(assigned(&k[3]), picked(&k[3]))]),
            "pickup_to_delivery_median_s": median(vec![secs(picked(&k[0]), delivered(&k[0])), secs(picked(&k[3]), delivered(&k[3]))]),
        }),
        "{c1_report}"
    );
    let list =
        ok_json(get(&app, &admin, &format!("/api/v1/analytics/couriers?{range}")).await).await;
    assert_eq!(
        list["items"][0]["courier_id"],
        json!(c1.id.as_uuid()),
        "{list}"
    );
    assert_eq!(
        list["items"][1]["courier_id"],
        json!(c2.id.as_uuid()),
        "{list}"
    );
    assert_eq!(
        (
            &list["items"][1]["offers"],
            &list["items"][1]["declined"],
            &list["items"][1]["acceptance_rate"]
        ),
        (&json!(1), &json!(1), &json!(0.0))
    );

    // Supply and demand: five orders paid in the stores' cell, two waited for a courier
    // (acceptance → assignment), the first courier online where they started.
    let window = format!(
        "from={}&to={}",
        (start - chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ"),
        (app.clock.now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let sd = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/analytics/supply-demand?resolution=8&{window}"),
        )
        .await,
    )
    .await;
    let store_cell = cell(a.vendor.location, h3o::Resolution::Eight);
    let rows: Vec<&Value> = sd["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["cell"] == store_cell.as_str())
        .collect();
    let paid_there: u64 = rows
        .iter()
        .map(|r| r["orders_paid"].as_u64().unwrap())
        .sum();
    assert_eq!(paid_there, 5, "{sd}");
    let mut expected_waits = BTreeMap::new();
    for o in [&k[0], &k[3]] {
        waits(o.at("accepted").unwrap(), assigned(o), &mut expected_waits);
    }
    let got_waits: BTreeMap<DateTime<Utc>, (u64, i64)> = rows
        .iter()
        .filter(|r| r["orders_waiting"].as_u64().unwrap() > 0)
        .map(|r| {
            (
                r["hour"].as_str().unwrap().parse().unwrap(),
                (
                    r["orders_waiting"].as_u64().unwrap(),
                    r["waiting_s"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got_waits, expected_waits, "{sd}");
    let start_cell = cell(near, h3o::Resolution::Eight);
    let start_hour = start
        .with_minute(0)
        .unwrap()
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    let online = sd["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["cell"] == start_cell.as_str()
                && r["hour"]
                    .as_str()
                    .unwrap()
                    .parse::<DateTime<Utc>>()
                    .unwrap()
                    == start_hour
        })
        .unwrap_or_else(|| panic!("no supply where the courier started: {sd}"));
    assert!(online["couriers_online"].as_u64().unwrap() >= 1, "{online}");
    let coarse = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/analytics/supply-demand?resolution=7&{window}"),
        )
        .await,
    )
    .await;
    let parent = cell(a.vendor.location, h3o::Resolution::Seven);
    let paid7: u64 = coarse["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["cell"] == parent.as_str())
        .map(|r| r["orders_paid"].as_u64().unwrap())
        .sum();
    assert_eq!(paid7, 5, "{coarse}");

    // CSV, by header and by parameter.
    let csv = app
        .client
        .get(app.url(&path))
        .bearer_auth(&a.vendor_token)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("period,currency,orders,gross_sales"),
        "{text}"
    );
    assert!(lines.next().unwrap().contains(",EUR,4,"), "{text}");
    let by_param = get(
        &app,
        &admin,
        &format!("/api/v1/analytics/couriers?{range}&format=csv"),
    )
    .await;
    let text = by_param.text().await.unwrap();
    assert!(text.starts_with("courier_id,offers,accepted"), "{text}");

    // Ownership: another store's owner, a customer and another courier learn nothing.
    assert_problem(get(&app, &b.vendor_token, &path).await, 404, "not_found").await;
    assert_problem(get(&app, &customer, &path).await, 404, "not_found").await;
    assert_problem(
        get(
            &app,
            &c2.token,
            &format!("/api/v1/analytics/couriers/{}", c1.id),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        get(&app, &a.vendor_token, "/api/v1/analytics/platform/sales").await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        get(&app, &c1.token, "/api/v1/analytics/supply-demand").await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        get(&app, &customer, "/api/v1/analytics/sales").await,
        403,
        "forbidden",
    )
    .await;

    // Bad input: refused with its code, at the edge.
    let sales = format!("/api/v1/analytics/stores/{store_a}/sales");
    assert_problem(
        get(
            &app,
            &admin,
            &format!("{sales}?from=2026-02-01&to=2026-01-01"),
        )
        .await,
        422,
        "invalid_range",
    )
    .await;
    assert_problem(
        get(
            &app,
            &admin,
            &format!("{sales}?from=2024-01-01&to=2026-01-01"),
        )
        .await,
        422,
        "range_too_long",
    )
    .await;
    assert_problem(
        get(&app, &admin, &format!("{sales}?granularity=hour")).await,
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        get(&app, &admin, &format!("{sales}?from=yesterday")).await,
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        get(&app, &admin, &format!("{sales}?colour=red")).await,
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        get(&app, &admin, "/api/v1/analytics/supply-demand?resolution=9").await,
        422,
        "invalid_resolution",
    )
    .await;
    assert_problem(
        get(
            &app,
            &admin,
            "/api/v1/analytics/supply-demand?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
        )
        .await,
        422,
        "range_too_long",
    )
    .await;
    assert_problem(
        get(
            &app,
            &admin,
            "/api/v1/analytics/platform/products/top-selling?limit=0",
        )
        .await,
        422,
        "validation_failed",
    )
    .await;

    // A node that only answers reports (it folds nothing) reads the same.
    let reader = spawn_peer(&app, |s| s.analytics = false).await;
    let reader_admin = reader.admin_token().await;
    assert_eq!(
        ok_json(get(&reader, &reader_admin, &path).await).await,
        sales_a
    );

    // A rebuild from the logs gives the same rollups, and reports read it from then on.
    let store = app.catalog.repo.products.store().clone();
    let analytics = hexmarket::analytics::Analytics::new(
        store.clone(),
        app.settings.ledger.rates,
        uuid::Uuid::new_v4(),
    );
    // A comparison only leaves nothing behind: its rows and facts go once compared.
    let checked = analytics.rebuild(false).await.unwrap();
    assert!(checked.differences.is_empty(), "{:?}", checked.differences);
    assert!(!checked.switched, "{checked:?}");
    assert_eq!(checked.removed_rows, checked.rows as u64 + checked.orders);
    let rebuilt = analytics.rebuild(true).await.unwrap();
    assert!(rebuilt.differences.is_empty(), "{:?}", rebuilt.differences);
    assert!(rebuilt.switched && rebuilt.orders == 5, "{rebuilt:?}");
    // The replaced generation is gone once every node has moved on.
    let repo = hexmarket::store::analytics::AnalyticsRepo::new(store);
    assert!(rebuilt.removed_rows >= rebuilt.rows as u64, "{rebuilt:?}");
    let previous = repo.all_cells(rebuilt.previous_generation).await.unwrap();
    assert!(previous.is_empty(), "{previous:?}");
    assert_eq!(
        repo.all_cells(rebuilt.generation).await.unwrap().len(),
        rebuilt.rows
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = ok_json(get(&app, &a.vendor_token, &path).await).await;
    assert_eq!(again, sales_a);
    // The answering node moved to the new generation before the old one went.
    let read_there = ok_json(get(&reader, &reader_admin, &path).await).await;
    assert_eq!(read_there, sales_a);
    let _ = (o5, c2.ws);
}
