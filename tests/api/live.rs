//! Live delivery over WebSockets, against the protocol contract: couriers going online and
//! sending GPS, dispatch offering an order nearest-first, customers tracking their order (with
//! resume after a disconnect), who may open which stream, how bad frames are answered, the
//! vendor feed, the admin ops view and the per-user connection cap.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hexmarket::domain::catalog::{Product, Vendor};
use hexmarket::domain::geo::GeoPoint;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::CategoryId;
use serde_json::{Value, json};

use crate::fixtures::{
    berlin, checkout_one, pay, seed_product, seed_vendor, stock_product, user_token,
};
use crate::helpers::{
    TestApp, assert_problem, get, ok_json, post, spawn_app, spawn_app_with, spawn_in, spawn_peer,
};
use crate::ws_client::{Refused, WsClient, ws_base};

/// Upper bound for anything the server should do promptly.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// How long a frame that must not come is waited for.
const QUIET: Duration = Duration::from_secs(1);
/// Real time between a driving courier's pings.
const PACE: Duration = Duration::from_millis(250);
/// Recorded time between a driving courier's pings (positions 100-125 m apart: ~20-25 m/s).
const DRIVE_STEP: Duration = Duration::from_secs(5);
const DRIVE_STEP_M: f64 = 125.0;
const METRES_PER_DEGREE: f64 = 111_195.0;

// ---------------------------------------------------------------------------------------------
// Arrange: a shop, orders, couriers and sockets.

pub(crate) struct Shop {
    pub(crate) vendor: Vendor,
    pub(crate) vendor_token: String,
    pub(crate) product: Product,
}

/// A vendor at the centre of Berlin selling a stocked product.
pub(crate) async fn shop(app: &TestApp, name: &str) -> Shop {
    let (vendor, vendor_token) = seed_vendor(app, name, berlin(0.0, 0.0)).await;
    let product = seed_product(app, &vendor, CategoryId::new(), "Ramen", 1450).await;
    stock_product(app, &product, 50).await;
    Shop {
        vendor,
        vendor_token,
        product,
    }
}

/// Where the orders go: 1.5 km north of the vendor.
pub(crate) fn dropoff(shop: &Shop) -> GeoPoint {
    moved(shop.vendor.location, 1500.0, 0.0)
}

/// A paid order of one product for `customer`; its id.
pub(crate) async fn paid_order(app: &TestApp, shop: &Shop, customer: &str) -> String {
    let checkout = checkout_one(app, customer, &shop.product, dropoff(shop)).await;
    pay(app, customer, &checkout).await;
    checkout["orders"][0]["id"].as_str().unwrap().to_owned()
}

/// `from` moved by the given metres north and east.
pub(crate) fn moved(from: GeoPoint, north_m: f64, east_m: f64) -> GeoPoint {
    let lat = from.lat + north_m / METRES_PER_DEGREE;
    let lng = from.lng + east_m / (METRES_PER_DEGREE * from.lat.to_radians().cos());
    GeoPoint::new(lat, lng).unwrap()
}

fn heading_deg(from: GeoPoint, to: GeoPoint) -> f64 {
    let north = (to.lat - from.lat) * METRES_PER_DEGREE;
    let east = (to.lng - from.lng) * METRES_PER_DEGREE * from.lat.to_radians().cos();
    east.atan2(north).to_degrees().rem_euclid(360.0)
}

fn ws_url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", ws_base(&app.address))
}

/// Opens `path` with `token`, failing the test if the handshake is refused.
async fn open(app: &TestApp, path: &str, token: &str) -> WsClient {
    match WsClient::connect(&ws_url(app, path), Some(token)).await {
        Ok(client) => client,
        Err(Refused { status, body }) => panic!("{path} refused with {status}: {body}"),
    }
}

/// Opens `path` expecting the handshake to be refused with `status` and problem `code`.
async fn assert_refused(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    code: &str,
) {
    match WsClient::try_connect(&ws_url(app, path), headers).await {
        Ok(_) => panic!("{path} with {headers:?} was upgraded; expected HTTP {status} {code}"),
        Err(refused) => {
            assert_eq!(
                (refused.status, refused.body["code"].as_str()),
                (status, Some(code)),
                "{path} with {headers:?}: body {}",
                refused.body
            );
        }
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Moves the order on as its vendor (`accept`, `preparing`, `ready`).
pub(crate) async fn vendor_step(app: &TestApp, shop: &Shop, order: &str, step: &str) -> Value {
    ok_json(
        post(
            app,
            &shop.vendor_token,
            &format!("/api/v1/orders/{order}/{step}"),
        )
        .await,
    )
    .await
}

/// Waits until the order's REST event log holds an event of `kind`.
async fn eventually_logged(app: &TestApp, token: &str, order: &str, kind: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = ok_json(
            get(
                app,
                token,
                &format!("/api/v1/orders/{order}/events?limit=100"),
            )
            .await,
        )
        .await;
        if log["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"]["type"] == kind)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} event in the log of {order}: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_event(frame: &Value, kind: &str) -> bool {
    frame["type"] == "event" && frame["kind"]["type"] == kind
}

fn seq_of(frame: &Value) -> u64 {
    frame["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {frame}"))
}

fn close_to(frame: &Value, point: GeoPoint) -> bool {
    let (Some(lat), Some(lng)) = (frame["lat"].as_f64(), frame["lng"].as_f64()) else {
        return false;
    };
    (lat - point.lat).abs() < 1e-5 && (lng - point.lng).abs() < 1e-5
}

/// A courier on `/ws/courier` and the last point it sent.
pub(crate) struct Courier {
    pub(crate) id: hexmarket::domain::ids::UserId,
    pub(crate) token: String,
    pub(crate) ws: WsClient,
    at: GeoPoint,
    recorded: DateTime<Utc>,
}

impl Courier {
    /// Connects a fresh courier, goes online and reports one point at `at`, recorded at
    /// `recorded`.
    pub(crate) async fn online(app: &TestApp, at: GeoPoint, recorded: DateTime<Utc>) -> Courier {
        let (id, token) = user_token(app, Role::Courier);
        let mut ws = open(app, "/ws/courier", &token).await;
        ws.send_json(&json!({"type": "go_online"})).await;
        let ack = ws.expect_type("ack", WAIT).await;
        assert_eq!(
            (&ack["of"], &ack["online"]),
            (&json!("go_online"), &json!(true)),
            "{ack}"
        );
        let mut courier = Courier {
            id,
            token,
            ws,
            at,
            recorded,
        };
        courier.report(at, recorded, 0.0, 0.0).await;
        courier
    }

    /// Sends one point and waits for its ack, which must accept it.
    async fn report(&mut self, at: GeoPoint, recorded: DateTime<Utc>, heading: f64, speed: f64) {
        self.ws
            .send_json(&json!({
                "type": "location",
                "point": {
                    "lat": at.lat,
                    "lng": at.lng,
                    "accuracy_m": 10.0,
                    "heading_deg": heading,
                    "speed_mps": speed,
                    "recorded_at": recorded.to_rfc3339(),
                },
            }))
            .await;
        let ack = self
            .ws
            .expect_where("the location ack", WAIT, |f| {
                f["type"] == "ack" && f["of"] == "location"
            })
            .await;
        assert_eq!(
            (&ack["accepted"], &ack["dropped"]),
            (&json!(1), &json!(0)),
            "a plausible point at {at:?} recorded {recorded} was not accepted: {ack}"
        );
        self.at = at;
        self.recorded = recorded;
    }

    /// Moves to `to`, `step` of recorded time later.
    async fn ping(&mut self, to: GeoPoint, step: Duration) {
        let from = self.at;
        let speed = from.distance_m(to) / step.as_secs_f64();
        let recorded = self.recorded + chrono::Duration::from_std(step).unwrap();
        self.report(to, recorded, heading_deg(from, to), speed)
            .await;
    }

    /// Drives in a straight line to `to`: a ping every [`DRIVE_STEP_M`] or less, each
    /// [`DRIVE_STEP`] of recorded time and [`PACE`] of real time after the last.
    pub(crate) async fn drive(&mut self, to: GeoPoint) {
        let from = self.at;
        let legs = (from.distance_m(to) / DRIVE_STEP_M).ceil().max(1.0);
        for leg in 1..=legs as u32 {
            let share = f64::from(leg) / legs;
            let next = GeoPoint::new(
                from.lat + (to.lat - from.lat) * share,
                from.lng + (to.lng - from.lng) * share,
            )
            .unwrap();
            self.ping(next, DRIVE_STEP).await;
            tokio::time::sleep(PACE).await;
        }
    }

    pub(crate) async fn pick_up(&mut self, order: &str) {
        self.ws
            .send_json(&json!({"type": "picked_up", "order_id": order}))
            .await;
        let ack = self
            .ws
            .expect_where("the ack of picked_up", WAIT, |f| {
                f["type"] == "ack" || f["type"] == "error"
            })
            .await;
        assert_eq!(
            (&ack["of"], &ack["order_id"]),
            (&json!("picked_up"), &json!(order)),
            "{ack}"
        );
    }

    async fn answer_offer(&mut self, offer: &Value, accept: bool) -> Value {
        self.ws
            .send_json(
                &json!({"type": "offer_response", "offer_id": offer["offer_id"], "accept": accept}),
            )
            .await;
        if accept {
            self.ws.expect_type("assignment", WAIT).await
        } else {
            self.ws
                .expect_where("the ack of the declined offer", WAIT, |f| {
                    f["type"] == "ack" && f["of"] == "offer_response"
                })
                .await
        }
    }
}

/// When a test's couriers start: a minute ago, so that routes with realistic speeds (recorded
/// time running ahead of real time) stay within the server's 30 s tolerance for the future.
pub(crate) fn route_start(app: &TestApp) -> DateTime<Utc> {
    app.clock.now() - chrono::Duration::seconds(60)
}

#[actix_web::test]
async fn a_courier_who_declined_is_offered_the_order_again_once_nobody_else_can_take_it() {
    // Arrange: one courier near, who turns the order down.
    let app = spawn_app().await;
    let shop = shop(&app, "Second Chance").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, &customer).await;
    let near = moved(shop.vendor.location, 0.0, -200.0);
    let mut courier = Courier::online(&app, near, route_start(&app)).await;
    vendor_step(&app, &shop, &order, "accept").await;
    let offer = courier.ws.expect_type("offer", WAIT).await;
    courier.answer_offer(&offer, false).await;

    // Act + assert: not asked again at once; two minutes on, with nobody else, asked again.
    courier.ws.assert_no_frame_of_type("offer", QUIET).await;
    app.clock.advance(Duration::from_secs(121));
    let now = app.clock.now();
    courier.report(near, now, 0.0, 0.0).await;
    let again = courier
        .ws
        .expect_type("offer", Duration::from_secs(40))
        .await;
    assert_eq!(again["order_id"], order.as_str(), "{again}");
    assert_ne!(again["offer_id"], offer["offer_id"], "{again}");
    let assignment = courier.answer_offer(&again, true).await;
    assert_eq!(assignment["order_id"], order.as_str(), "{assignment}");
}

/// A paid order, accepted by its vendor and assigned to `courier`, the only one online.
pub(crate) async fn assigned(
    app: &TestApp,
    shop: &Shop,
    customer: &str,
    courier: &mut Courier,
) -> String {
    let order = paid_order(app, shop, customer).await;
    vendor_step(app, shop, &order, "accept").await;
    let offer = courier.ws.expect_type("offer", WAIT).await;
    assert_eq!(offer["order_id"], order.as_str(), "{offer}");
    let assignment = courier.answer_offer(&offer, true).await;
    assert_eq!(assignment["order_id"], order.as_str(), "{assignment}");
    order
}

// ---------------------------------------------------------------------------------------------
// 1. End to end.

#[actix_web::test]
async fn an_order_is_offered_nearest_first_and_tracked_live_until_the_handoff() {
    // Arrange: a paid order and three couriers at 200 m, 600 m and 3 km from the vendor.
    let app = spawn_app().await;
    let shop = shop(&app, "Noodle Bar").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, &customer).await;
    let pickup = shop.vendor.location;
    let start = route_start(&app);
    let mut near = Courier::online(&app, moved(pickup, 0.0, -200.0), start).await;
    let mut second = Courier::online(&app, moved(pickup, -600.0, 0.0), start).await;
    let mut far = Courier::online(&app, moved(pickup, 0.0, 3000.0), start).await;

    // Act + assert: accepting starts dispatch, which asks the nearest courier first.
    vendor_step(&app, &shop, &order, "accept").await;
    let first_offer = near.ws.expect_type("offer", WAIT).await;
    assert_eq!(first_offer["order_id"], order.as_str(), "{first_offer}");
    assert_eq!(first_offer["summary"]["vendor_name"], "Noodle Bar");
    assert_eq!(first_offer["summary"]["items"], 1);
    assert!(
        first_offer["summary"]["total"]["amount_minor"].is_i64(),
        "{first_offer}"
    );
    assert!(close_to(&first_offer["pickup"], pickup), "{first_offer}");
    assert!(
        close_to(&first_offer["dropoff"], dropoff(&shop)),
        "{first_offer}"
    );
    assert!(first_offer["distance_m"].is_number(), "{first_offer}");
    let expires_at = first_offer["expires_at"].as_str().unwrap();
    DateTime::parse_from_rfc3339(expires_at).unwrap();
    second.ws.assert_no_frame_of_type("offer", QUIET).await;
    far.ws
        .assert_no_frame_of_type("offer", Duration::ZERO)
        .await;

    // Declined: the second nearest is asked; the far one still is not.
    near.answer_offer(&first_offer, false).await;
    let second_offer = second.ws.expect_type("offer", WAIT).await;
    assert_eq!(second_offer["order_id"], order.as_str());
    assert_ne!(second_offer["offer_id"], first_offer["offer_id"]);
    far.ws.assert_no_frame_of_type("offer", QUIET).await;
    let assignment = second.answer_offer(&second_offer, true).await;
    assert_eq!(assignment["order_id"], order.as_str(), "{assignment}");
    assert!(close_to(&assignment["pickup"], pickup), "{assignment}");
    assert!(
        close_to(&assignment["dropoff"], dropoff(&shop)),
        "{assignment}"
    );

    // The customer starts watching: a snapshot with the assigned courier's position.
    let mut watcher = open(&app, &format!("/ws/orders/{order}"), &customer).await;
    let snapshot = watcher.next_json(WAIT).await.expect("a first frame");
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["order_id"], order.as_str());
    assert_eq!(snapshot["status"], "accepted", "{snapshot}");
    assert!(close_to(&snapshot["courier"], second.at), "{snapshot}");
    let snapshot_seq = seq_of(&snapshot);

    vendor_step(&app, &shop, &order, "preparing").await;
    vendor_step(&app, &shop, &order, "ready").await;

    // To the vendor: the pickup geofence (75 m) fires.
    second.drive(pickup).await;
    watcher
        .expect_where("the arrived_at_pickup event", WAIT, |f| {
            is_event(f, "arrived_at_pickup")
        })
        .await;
    let tracking =
        ok_json(get(&app, &customer, &format!("/api/v1/orders/{order}/tracking")).await).await;
    assert_eq!(tracking["status"], "ready_for_pickup", "{tracking}");
    assert!(close_to(&tracking["courier"], second.at), "{tracking}");
    assert!(tracking["eta_s"].is_number(), "{tracking}");
    second.pick_up(&order).await;

    // Towards the drop-off, to 200 m from it: the arriving geofence (300 m) fires.
    second.drive(moved(dropoff(&shop), -200.0, 0.0)).await;
    watcher
        .expect_where("the arriving event", WAIT, |f| is_event(f, "arriving"))
        .await;

    // The handoff: only the customer sees the code, and only the right code delivers.
    let mine = ok_json(get(&app, &customer, &format!("/api/v1/orders/{order}")).await).await;
    let code = mine["handoff_code"]
        .as_str()
        .unwrap_or_else(|| panic!("no handoff_code for the customer: {mine}"))
        .to_owned();
    let theirs =
        ok_json(get(&app, &shop.vendor_token, &format!("/api/v1/orders/{order}")).await).await;
    assert!(
        theirs.get("handoff_code").is_none_or(Value::is_null),
        "{theirs}"
    );
    let wrong = format!("{:04}", (code.parse::<u32>().unwrap() + 1) % 10_000);
    second
        .ws
        .send_json(&json!({"type": "delivered", "order_id": order, "code": wrong}))
        .await;
    let refused = second.ws.expect_type("error", WAIT).await;
    assert_eq!(refused["code"], "wrong_code", "{refused}");
    second
        .ws
        .send_json(&json!({"type": "delivered", "order_id": order, "code": code}))
        .await;
    let ack = second
        .ws
        .expect_where("the ack of delivered", WAIT, |f| {
            f["type"] == "ack" || f["type"] == "error"
        })
        .await;
    assert_eq!(
        (&ack["of"], &ack["order_id"]),
        (&json!("delivered"), &json!(order)),
        "{ack}"
    );
    watcher
        .expect_where("the delivered event", WAIT, |f| is_event(f, "delivered"))
        .await;

    // Delivered: the courier keeps moving but the customer sees no more of it.
    let keep_pinging = async {
        for _ in 0..4 {
            let next = moved(second.at, 5.0, 0.0);
            second.ping(next, Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
    };
    let quiet = watcher.assert_no_frame_of_type("location", Duration::from_secs(2));
    tokio::join!(keep_pinging, quiet);
    assert_problem(
        get(&app, &customer, &format!("/api/v1/orders/{order}/tracking")).await,
        410,
        "tracking_ended",
    )
    .await;

    // Everything the customer saw after the snapshot: each status event once, in order, no
    // gaps; positions with a shrinking ETA; nothing located after the delivery.
    let frames = &watcher.received[1..];
    let events: Vec<&Value> = frames.iter().filter(|f| f["type"] == "event").collect();
    let seqs: Vec<u64> = events.iter().map(|e| seq_of(e)).collect();
    let expected_seqs: Vec<u64> = (snapshot_seq + 1..=snapshot_seq + 6).collect();
    assert_eq!(
        seqs, expected_seqs,
        "event seqs after snapshot {snapshot_seq}"
    );
    let story: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"]["type"].as_str().unwrap_or("?"),
                e["status_after"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        story,
        [
            ("preparing", "preparing"),
            ("ready", "ready_for_pickup"),
            ("arrived_at_pickup", "ready_for_pickup"),
            ("picked_up", "picked_up"),
            ("arriving", "picked_up"),
            ("delivered", "delivered"),
        ]
    );
    let delivered_at = frames
        .iter()
        .position(|f| is_event(f, "delivered"))
        .unwrap();
    assert!(
        frames[delivered_at..]
            .iter()
            .all(|f| f["type"] != "location"),
        "a location frame came after the delivered event"
    );
    let etas: Vec<f64> = frames
        .iter()
        .filter(|f| f["type"] == "location")
        .map(|f| {
            f["eta_s"]
                .as_f64()
                .unwrap_or_else(|| panic!("a location frame without eta_s: {f}"))
        })
        .collect();
    assert!(
        etas.len() >= 2,
        "the customer saw {} location frames",
        etas.len()
    );
    assert!(
        etas[etas.len() - 1] < etas[0],
        "the ETA did not shrink over the route: {etas:?}"
    );
    for location in frames.iter().filter(|f| f["type"] == "location") {
        DateTime::parse_from_rfc3339(location["recorded_at"].as_str().unwrap()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Resume.

#[actix_web::test]
async fn a_watcher_that_reconnects_after_a_seq_gets_every_later_event_then_the_live_position() {
    let app = spawn_app().await;
    let shop = shop(&app, "Dumpling House").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let pickup = shop.vendor.location;
    let mut courier = Courier::online(&app, moved(pickup, -600.0, 0.0), route_start(&app)).await;
    let order = assigned(&app, &shop, &customer, &mut courier).await;
    vendor_step(&app, &shop, &order, "preparing").await;
    vendor_step(&app, &shop, &order, "ready").await;
    let path = format!("/ws/orders/{order}");

    // Watching until the courier reaches the vendor, then gone.
    let mut watcher = open(&app, &path, &customer).await;
    watcher.expect_type("snapshot", WAIT).await;
    courier.drive(pickup).await;
    let arrived = watcher
        .expect_where("the arrived_at_pickup event", WAIT, |f| {
            is_event(f, "arrived_at_pickup")
        })
        .await;
    let last_seen = seq_of(&arrived);
    watcher.close().await;

    // Meanwhile: pickup, and most of the way to the drop-off.
    courier.pick_up(&order).await;
    courier.drive(moved(dropoff(&shop), -200.0, 0.0)).await;
    eventually_logged(&app, &customer, &order, "arriving").await;

    // Back: the snapshot, every event missed in order, then the live position.
    let mut watcher = open(&app, &format!("{path}?after_seq={last_seen}"), &customer).await;
    let snapshot = watcher.next_json(WAIT).await.expect("a first frame");
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["status"], "picked_up", "{snapshot}");
    let current = seq_of(&snapshot);
    assert!(current >= last_seen + 2, "{snapshot} after seq {last_seen}");
    let mut replayed = Vec::new();
    while replayed.len() < (current - last_seen) as usize {
        let frame = watcher
            .next_json(WAIT)
            .await
            .unwrap_or_else(|| panic!("replay stopped after {replayed:?}, snapshot at {current}"));
        assert_eq!(frame["type"], "event", "a {frame} before the replay ended");
        replayed.push(frame);
    }
    let seqs: Vec<u64> = replayed.iter().map(seq_of).collect();
    assert_eq!(seqs, (last_seen + 1..=current).collect::<Vec<_>>());
    let kinds: Vec<&str> = replayed
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["picked_up", "arriving"]);

    let next = moved(courier.at, 50.0, 0.0);
    courier.ping(next, DRIVE_STEP).await;
    let live = watcher.expect_type("location", WAIT).await;
    assert!(live["eta_s"].is_number(), "{live}");
    let later_events: Vec<&Value> = watcher
        .received
        .iter()
        .filter(|f| f["type"] == "event")
        .collect();
    assert_eq!(
        later_events.len(),
        replayed.len(),
        "events repeated: {later_events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Privacy.

const ALLOWED_ORIGIN: &str = "https://shop.hexmarket.test";

#[actix_web::test]
async fn only_the_parties_of_an_order_may_watch_it_and_sockets_check_role_origin_and_tickets() {
    let app = spawn_app_with(|s| s.live.ws_allowed_origins = vec![ALLOWED_ORIGIN.to_owned()]).await;
    let shop = shop(&app, "Taqueria").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, &customer).await;
    let path = format!("/ws/orders/{order}");

    // The customer may watch.
    let mut own = open(&app, &path, &customer).await;
    assert_eq!(
        own.expect_type("snapshot", WAIT).await["order_id"],
        order.as_str()
    );
    own.close().await;

    // Nobody else may.
    let (_, stranger) = user_token(&app, Role::Customer);
    let (_, rival_vendor) = seed_vendor(&app, "Rival", berlin(0.01, 0.01)).await;
    let (_, other_courier) = user_token(&app, Role::Courier);
    for (who, token) in [
        ("another customer", &stranger),
        ("another vendor", &rival_vendor),
        ("an unassigned courier", &other_courier),
    ] {
        match WsClient::connect(&ws_url(&app, &path), Some(token.as_str())).await {
            Ok(_) => panic!("{who} could watch the order"),
            Err(refused) => assert_eq!(
                (refused.status, refused.body["code"].as_str()),
                (404, Some("not_found")),
                "{who}: {}",
                refused.body
            ),
        }
    }
    assert_refused(&app, &path, &[], 401, "unauthenticated").await;
    assert_refused(
        &app,
        &path,
        &[("authorization", "Bearer not-a-token")],
        401,
        "unauthenticated",
    )
    .await;

    // Role-bound endpoints.
    let as_customer = bearer(&customer);
    assert_refused(
        &app,
        "/ws/courier",
        &[("authorization", as_customer.as_str())],
        403,
        "forbidden",
    )
    .await;
    assert_refused(
        &app,
        "/ws/admin/ops",
        &[("authorization", as_customer.as_str())],
        403,
        "forbidden",
    )
    .await;
    // An administrator's token without the second factor opens no admin stream, by header or
    // by ticket; one with it does.
    let (_, weak_admin) = user_token(&app, Role::Admin);
    assert_refused(
        &app,
        "/ws/admin/ops",
        &[("authorization", bearer(&weak_admin).as_str())],
        403,
        "second_factor_required",
    )
    .await;
    let ticket = |token: String| {
        let app = &app;
        async move {
            let issued = ok_json(post(app, &token, "/api/v1/ws/ticket").await).await;
            format!(
                "/ws/admin/ops?ticket={}",
                issued["ticket"].as_str().unwrap()
            )
        }
    };
    let weak_ticket = ticket(weak_admin.clone()).await;
    assert_refused(&app, &weak_ticket, &[], 403, "second_factor_required").await;
    let admin_ticket = ticket(app.admin_token().await).await;
    WsClient::try_connect(&ws_url(&app, &admin_ticket), &[])
        .await
        .unwrap_or_else(|r| panic!("an admin with the second factor was refused: {}", r.body))
        .close()
        .await;
    assert_refused(
        &app,
        "/ws/vendor",
        &[("authorization", as_customer.as_str())],
        403,
        "forbidden",
    )
    .await;

    // Browser origins: only the allowed one.
    assert_refused(
        &app,
        &path,
        &[
            ("authorization", as_customer.as_str()),
            ("origin", "https://evil.example"),
        ],
        403,
        "origin_not_allowed",
    )
    .await;
    let mut from_browser = WsClient::try_connect(
        &ws_url(&app, &path),
        &[
            ("authorization", as_customer.as_str()),
            ("origin", ALLOWED_ORIGIN),
        ],
    )
    .await
    .unwrap_or_else(|r| panic!("the allowed origin was refused: {} {}", r.status, r.body));
    from_browser.expect_type("snapshot", WAIT).await;
    from_browser.close().await;

    // A ticket opens one socket, once.
    let unauthenticated = app
        .client
        .post(app.url("/api/v1/ws/ticket"))
        .send()
        .await
        .unwrap();
    assert_problem(unauthenticated, 401, "unauthenticated").await;
    let ticket = ok_json(post(&app, &customer, "/api/v1/ws/ticket").await).await;
    assert_eq!(ticket["expires_in_s"], 30, "{ticket}");
    let ticket = ticket["ticket"].as_str().unwrap();
    let with_ticket = format!("{path}?ticket={ticket}");
    let mut by_ticket = WsClient::try_connect(&ws_url(&app, &with_ticket), &[])
        .await
        .unwrap_or_else(|r| panic!("a fresh ticket was refused: {} {}", r.status, r.body));
    by_ticket.expect_type("snapshot", WAIT).await;
    by_ticket.close().await;
    assert_refused(&app, &with_ticket, &[], 401, "unauthenticated").await;
}

// ---------------------------------------------------------------------------------------------
// 4. Bad frames.

async fn expect_error(courier: &mut WsClient, code: &str, after: &str) {
    let error = courier.expect_type("error", WAIT).await;
    assert_eq!(error["code"], code, "after {after}: {error}");
    assert!(error["message"].is_string(), "{error}");
}

#[actix_web::test]
async fn bad_courier_frames_get_error_frames_or_a_close_and_the_node_keeps_serving() {
    let app = spawn_app().await;
    let shop = shop(&app, "Kebab Corner").await;
    let (_, courier_token) = user_token(&app, Role::Courier);
    let mut courier = open(&app, "/ws/courier", &courier_token).await;
    let now = app.clock.now().to_rfc3339();

    // Error frames, and the session stays open.
    courier.send_text("{\"type\": \"go_online\"").await;
    expect_error(&mut courier, "invalid_json", "truncated JSON").await;
    courier.send_json(&json!({"type": "teleport"})).await;
    expect_error(&mut courier, "unknown_type", "an unknown type").await;
    courier
        .send_json(&json!({"type": "location", "point": {
            "lat": 91.0, "lng": 13.4, "accuracy_m": 10.0, "recorded_at": now,
        }}))
        .await;
    expect_error(&mut courier, "invalid_location", "lat 91").await;
    courier
        .send_text(&format!(
            "{{\"type\":\"location\",\"point\":{{\"lat\":NaN,\"lng\":13.4,\"accuracy_m\":10,\"recorded_at\":\"{now}\"}}}}"
        ))
        .await;
    expect_error(&mut courier, "invalid_json", "a NaN latitude").await;
    courier.send_raw_bytes(&[0x01, 0x02, 0x03]).await;
    expect_error(&mut courier, "unsupported_frame", "a binary frame").await;
    courier.send_json(&json!({"type": "go_online"})).await;
    let ack = courier.expect_type("ack", WAIT).await;
    assert_eq!(ack["of"], "go_online", "{ack}");

    // A frame over 64 KiB closes the session with 1009.
    courier.send_text(&"x".repeat(65 * 1024)).await;
    assert_eq!(
        courier.expect_close(WAIT).await,
        Some(1009),
        "after a 65 KiB frame: {:?}",
        courier.ended
    );

    // A flood closes the session with 1008.
    let (_, flooder_token) = user_token(&app, Role::Courier);
    let mut flooder = open(&app, "/ws/courier", &flooder_token).await;
    flooder
        .flood((0..300).map(|_| json!({"type": "go_offline"}).to_string()))
        .await;
    assert_eq!(
        flooder.expect_close(WAIT).await,
        Some(1008),
        "after 300 frames at once: {:?}",
        flooder.ended
    );

    // Others are served as before.
    let mut fresh = Courier::online(&app, berlin(0.002, 0.0), app.clock.now()).await;
    fresh
        .ping(berlin(0.0025, 0.0), Duration::from_secs(10))
        .await;
    let (_, customer) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, &customer).await;
    let mut watcher = open(&app, &format!("/ws/orders/{order}"), &customer).await;
    let snapshot = watcher.expect_type("snapshot", WAIT).await;
    assert_eq!(snapshot["status"], "paid", "{snapshot}");
}

// ---------------------------------------------------------------------------------------------
// 5. Vendor stream.

#[actix_web::test]
async fn the_vendor_stream_carries_paid_orders_and_resumes_after_a_feed_seq() {
    let app = spawn_app().await;
    let shop = shop(&app, "Pizza Oven").await;
    let mut stream = open(&app, "/ws/vendor", &shop.vendor_token).await;
    let hello = stream.next_json(WAIT).await.expect("a first frame");
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["vendor_id"], shop.vendor.id.to_string());
    assert!(hello["seq"].is_u64(), "{hello}");

    // An unpaid order stays off the feed; a paid one is on it.
    let (_, hesitant) = user_token(&app, Role::Customer);
    let unpaid = checkout_one(&app, &hesitant, &shop.product, dropoff(&shop)).await;
    let unpaid = unpaid["orders"][0]["id"].as_str().unwrap().to_owned();
    let (_, customer) = user_token(&app, Role::Customer);
    let order = paid_order(&app, &shop, &customer).await;
    let paid = stream
        .expect_where("the paid order_event", WAIT, |f| {
            f["type"] == "order_event"
                && f["order_id"] == order.as_str()
                && f["kind"]["type"] == "paid"
        })
        .await;
    assert_eq!(paid["status_after"], "paid", "{paid}");
    assert_eq!(paid["order_seq"], 2, "{paid}");
    let last_seen = seq_of(&paid);
    stream.close().await;

    // Offline meanwhile: the order is accepted and prepared.
    vendor_step(&app, &shop, &order, "accept").await;
    vendor_step(&app, &shop, &order, "preparing").await;

    // Back: hello, the entries after the last one seen in order, then live.
    let mut stream = open(
        &app,
        &format!("/ws/vendor?after_seq={last_seen}"),
        &shop.vendor_token,
    )
    .await;
    let hello = stream.next_json(WAIT).await.expect("a first frame");
    assert_eq!(hello["type"], "hello", "{hello}");
    let current = seq_of(&hello);
    assert!(
        current >= last_seen + 2,
        "{hello} after feed seq {last_seen}"
    );
    let mut replayed = Vec::new();
    while replayed.len() < (current - last_seen) as usize {
        let frame = stream
            .next_json(WAIT)
            .await
            .unwrap_or_else(|| panic!("replay stopped after {replayed:?}, feed at {current}"));
        assert_eq!(frame["type"], "order_event", "{frame}");
        replayed.push(frame);
    }
    let seqs: Vec<u64> = replayed.iter().map(seq_of).collect();
    assert_eq!(seqs, (last_seen + 1..=current).collect::<Vec<_>>());
    let kinds: Vec<&str> = replayed
        .iter()
        .filter(|f| f["order_id"] == order.as_str())
        .map(|f| f["kind"]["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["accepted", "preparing"]);

    vendor_step(&app, &shop, &order, "ready").await;
    let ready = stream
        .expect_where("the live ready order_event", WAIT, |f| {
            f["type"] == "order_event" && f["kind"]["type"] == "ready"
        })
        .await;
    assert_eq!(seq_of(&ready), current + 1, "{ready}");
    assert_eq!(ready["status_after"], "ready_for_pickup");
    assert!(
        stream
            .received
            .iter()
            .all(|f| f["order_id"] != unpaid.as_str()),
        "the unpaid order {unpaid} was on the feed: {:?}",
        stream.received
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Admin ops.

#[actix_web::test]
async fn the_admin_ops_stream_counts_an_online_courier_in_its_cell() {
    let app = spawn_app().await;
    let at = berlin(0.003, 0.002);
    let courier = Courier::online(&app, at, app.clock.now()).await;
    let cell = at.cell_at(h3o::Resolution::Seven).to_string();

    let (_, courier_token) = user_token(&app, Role::Courier);
    assert_refused(
        &app,
        "/ws/admin/ops",
        &[("authorization", bearer(&courier_token).as_str())],
        403,
        "forbidden",
    )
    .await;
    let admin = app.admin_token().await;
    let mut ops = open(&app, "/ws/admin/ops", &admin).await;
    let frame = ops
        .expect_where(
            &format!("an ops frame listing cell {cell}"),
            Duration::from_secs(4),
            |f| {
                f["type"] == "ops"
                    && f["cells"].as_array().is_some_and(|cells| {
                        cells.iter().any(|c| {
                            c["cell"]
                                .as_str()
                                .is_some_and(|s| s.eq_ignore_ascii_case(&cell))
                                && c["available_couriers"].as_u64() >= Some(1)
                        })
                    })
            },
        )
        .await;
    assert!(frame["unassigned"].is_array(), "{frame}");
    DateTime::parse_from_rfc3339(frame["at"].as_str().unwrap()).unwrap();
    drop(courier);
}

// ---------------------------------------------------------------------------------------------
// 7. Connection cap.

#[actix_web::test]
async fn a_user_holds_at_most_the_configured_number_of_sockets_on_a_node() {
    let app = spawn_app_with(|s| s.live.ws_max_per_user = 2).await;
    let (_, courier) = user_token(&app, Role::Courier);
    let first = open(&app, "/ws/courier", &courier).await;
    let _second = open(&app, "/ws/courier", &courier).await;
    let as_courier = bearer(&courier);
    let auth = [("authorization", as_courier.as_str())];
    assert_refused(&app, "/ws/courier", &auth, 429, "too_many_connections").await;

    // Another user is not affected; a closed socket frees its place.
    let (_, other) = user_token(&app, Role::Courier);
    open(&app, "/ws/courier", &other).await;
    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match WsClient::try_connect(&ws_url(&app, "/ws/courier"), &auth).await {
            Ok(_) => break,
            Err(refused) => {
                assert_eq!(refused.status, 429, "{}", refused.body);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed socket's place was not freed within {WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. The upgraded connection, byte by byte: a session runs on the bare socket once the handshake
// is answered, so what a client sends with its handshake, a refused handshake and a socket that
// just goes away are checked on raw TCP.

/// Connects to `app` and writes a GET of `/ws/courier` asking for a WebSocket, with `extra`
/// header lines, then `with` (frames sent in the same write).
async fn send_handshake(app: &TestApp, extra: &str, with: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let host = app.address.trim_start_matches("http://");
    let mut bytes = format!(
        "GET /ws/courier HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(with);
    let mut tcp = tokio::net::TcpStream::connect(host)
        .await
        .expect("connects");
    tcp.write_all(&bytes).await.expect("writes");
    tcp
}

/// A client's text frame: final, masked, shorter than 126 bytes.
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let len = u8::try_from(text.len()).expect("a short frame");
    assert!(len < 126);
    let mut frame = vec![0x81, 0x80 | len];
    frame.extend(mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads the response head (through the blank line) and answers it with what followed it.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(end + 4);
            return (String::from_utf8(got).expect("an ASCII head"), rest);
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("the response head within the wait")
            .expect("a readable socket");
        assert!(
            n > 0,
            "the connection closed before the head ended: {got:?}"
        );
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one unmasked text frame from the server (`pending` holds bytes already read).
async fn read_text(tcp: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> Value {
    use tokio::io::AsyncReadExt as _;
    let mut chunk = [0u8; 4096];
    loop {
        if pending.len() >= 2 {
            assert_eq!(pending[0], 0x81, "a final text frame: {pending:?}");
            // The payload's start and length, once the header is all here.
            let frame = match pending[1] {
                126 => pending
                    .get(2..4)
                    .map(|len| (4, usize::from(u16::from_be_bytes([len[0], len[1]])))),
                len => Some((2, usize::from(len))),
            };
            if let Some((start, len)) = frame
                && pending.len() >= start + len
            {
                let payload: Vec<u8> = pending.drain(..start + len).skip(start).collect();
                return serde_json::from_slice(&payload).expect("a JSON frame");
            }
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a frame within the wait")
            .expect("a readable socket");
        assert!(n > 0, "the connection closed before a whole frame came");
        pending.extend_from_slice(&chunk[..n]);
    }
}

#[actix_web::test]
async fn a_session_reads_frames_sent_with_its_handshake_and_a_refused_or_vanished_socket_is_let_go()
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app_with(|s| s.live.ws_max_per_user = 1).await;
    let (_, courier) = user_token(&app, Role::Courier);
    let auth = format!("Authorization: Bearer {courier}\r\n");

    // The handshake and the first frame in one write: the frame is not lost behind the head.
    let mut tcp = send_handshake(&app, &auth, &masked_text(r#"{"type":"go_online"}"#)).await;
    let (head, mut pending) = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "the accept key of RFC 6455's example: {head}"
    );
    let ack = read_text(&mut tcp, &mut pending).await;
    assert_eq!(
        (ack["type"].as_str(), ack["of"].as_str()),
        (Some("ack"), Some("go_online")),
        "{ack}"
    );
    // Then frame by frame, one byte per write.
    for byte in masked_text(r#"{"type":"go_offline"}"#) {
        tcp.write_all(&[byte]).await.expect("writes");
        tcp.flush().await.expect("flushes");
    }
    let ack = read_text(&mut tcp, &mut pending).await;
    assert_eq!(ack["of"].as_str(), Some("go_offline"), "{ack}");

    // The user's one place is taken: a second handshake is refused whole (a problem body of its
    // stated length, `connection: close`) and the server closes that connection.
    let mut refused = send_handshake(&app, &auth, &[]).await;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, refused.read_to_end(&mut answer))
        .await
        .expect("the refused connection is closed by the server")
        .expect("a readable socket");
    let answer = String::from_utf8(answer).expect("a text answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let problem: Value = serde_json::from_str(body).expect("a JSON problem");
    assert_eq!(problem["code"], "too_many_connections");

    // A socket that goes away without a close frame ends its session: its place is freed.
    drop(tcp);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = send_handshake(&app, &auth, &[]).await;
        let (head, _) = read_head(&mut again).await;
        if head.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the vanished socket's place was not freed within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Across nodes: two nodes sharing one store (as they would share ScyllaDB) and one Redis.

#[actix_web::test]
async fn a_watcher_on_one_node_follows_a_courier_connected_to_another_through_redis() {
    let prefix = format!("test_{}", uuid::Uuid::new_v4().simple());
    let a = spawn_app_with(|s| {
        s.redis_url = Some("redis://127.0.0.1:6379".into());
        s.redis_prefix = prefix.clone();
        s.secret_key = Some("a-secret-both-nodes-share-for-this-test-0123456789".into());
    })
    .await;
    let shop = shop(&a, "Two Node Noodles").await;
    let b = spawn_peer(&a, |_| {}).await;
    let (_, customer) = user_token(&a, Role::Customer);

    // The courier is connected to node A, close to the shop.
    let start = route_start(&a);
    let mut courier = Courier::online(&a, moved(shop.vendor.location, 150.0, 0.0), start).await;

    // The order is paid on A and accepted on B: B's dispatcher knows the courier only from
    // A's presence announcements, and its offer reaches the socket on A through Redis.
    let order = paid_order(&a, &shop, &customer).await;
    vendor_step(&b, &shop, &order, "accept").await;
    // B hears of the courier at A's next presence announcement (every 5 s), so the offer may
    // take that long plus the dispatch itself.
    let offer = courier.ws.expect_type("offer", WAIT * 3).await;
    assert_eq!(offer["order_id"], order.as_str(), "{offer}");
    let assignment = courier.answer_offer(&offer, true).await;
    assert_eq!(assignment["order_id"], order.as_str(), "{assignment}");

    // The customer watches on B while the courier drives on A.
    let mut watcher = open(&b, &format!("/ws/orders/{order}"), &customer).await;
    let snapshot = watcher.expect_type("snapshot", WAIT).await;
    assert_eq!(snapshot["order_id"], order.as_str(), "{snapshot}");
    let target = moved(shop.vendor.location, 600.0, 0.0);
    courier.drive(target).await;
    let location = watcher
        .expect_where("a location from the courier on node A", WAIT, |f| {
            f["type"] == "location"
        })
        .await;
    assert!(location["eta_s"].as_u64().is_some(), "{location}");

    // Events recorded on A reach the watcher on B too.
    vendor_step(&a, &shop, &order, "preparing").await;
    let event = watcher
        .expect_where("the preparing event", WAIT, |f| is_event(f, "preparing"))
        .await;
    assert!(seq_of(&event) > seq_of(&snapshot), "{event}");
    b.stop().await;
    a.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Dispatch without anyone near, silence, and restarts.

#[actix_web::test]
async fn an_order_nobody_takes_waits_unassigned_survives_a_restart_and_skips_a_silent_courier() {
    let short_offers = |s: &mut hexmarket::config::Settings| {
        s.live.offer_timeout = Duration::from_secs(1);
    };
    let app = spawn_app_with(short_offers).await;
    let shop = shop(&app, "Lonely Lentils").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;

    // Accepted with no courier online: the order is listed as unassigned.
    let order = paid_order(&app, &shop, &customer).await;
    vendor_step(&app, &shop, &order, "accept").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = ok_json(get(&app, &admin, "/api/v1/admin/dispatch/unassigned").await).await;
        let listed = list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["order_id"] == order.as_str() && o["attempts"].as_u64() >= Some(1));
        if listed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order was never listed as unassigned: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let customer_sees = get(&app, &customer, "/api/v1/admin/dispatch/unassigned").await;
    assert_problem(customer_sees, 403, "forbidden").await;

    // The node restarts on the same data; the pending dispatch resumes by itself.
    let data = app.stop().await;
    let app = spawn_in(data, short_offers).await;
    let start = route_start(&app);
    let mut near = Courier::online(&app, moved(shop.vendor.location, 150.0, 0.0), start).await;
    let mut far = Courier::online(&app, moved(shop.vendor.location, 900.0, 0.0), start).await;

    // The nearest courier gets the offer first and lets it lapse: it is withdrawn from them
    // and offered to the next one.
    let offer = near.ws.expect_type("offer", Duration::from_secs(20)).await;
    assert_eq!(offer["order_id"], order.as_str(), "{offer}");
    let withdrawn = near.ws.expect_type("offer_withdrawn", WAIT).await;
    assert_eq!(withdrawn["offer_id"], offer["offer_id"], "{withdrawn}");
    let second = far.ws.expect_type("offer", WAIT).await;
    assert_eq!(second["order_id"], order.as_str(), "{second}");
    assert_ne!(second["offer_id"], offer["offer_id"]);

    // The lapsed offer can no longer be taken; the live one can.
    near.ws
        .send_json(
            &json!({"type": "offer_response", "offer_id": offer["offer_id"], "accept": true}),
        )
        .await;
    let refused = near.ws.expect_type("error", WAIT).await;
    assert_eq!(refused["code"], "offer_expired", "{refused}");
    let assignment = far.answer_offer(&second, true).await;
    assert_eq!(assignment["order_id"], order.as_str(), "{assignment}");
    eventually_logged(&app, &customer, &order, "courier_assigned").await;
    let list = ok_json(get(&app, &admin, "/api/v1/admin/dispatch/unassigned").await).await;
    assert!(
        list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["order_id"] != order.as_str()),
        "{list}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// GPS cleaning.

#[actix_web::test]
async fn implausible_gps_points_are_dropped_and_counted_by_reason() {
    let app = spawn_app().await;
    let (courier_id, token) = user_token(&app, Role::Courier);
    let mut courier = open(&app, "/ws/courier", &token).await;
    courier.send_json(&json!({"type": "go_online"})).await;
    courier.expect_type("ack", WAIT).await;
    let now = app.clock.now();
    let here = berlin(0.0, 0.0);
    let point = |at: GeoPoint, seconds_ago: i64, accuracy: f64| {
        json!({
            "lat": at.lat, "lng": at.lng, "accuracy_m": accuracy,
            "recorded_at": (now - chrono::Duration::seconds(seconds_ago)).to_rfc3339(),
        })
    };
    let batch = json!({"type": "location", "points": [
        point(here, 100, 10.0),
        point(here, 100, 10.0),                          // duplicate
        point(moved(here, 50.0, 0.0), 90, 10.0),         // fine: 5 m/s
        point(moved(here, 60.0, 0.0), 80, 500.0),        // inaccurate
        point(moved(here, 5_000.0, 0.0), 70, 10.0),      // 250 m/s: impossible
        point(moved(here, 80.0, 0.0), -120, 10.0),       // two minutes ahead
    ]});
    courier.send_json(&batch).await;
    let ack = courier
        .expect_where("the batch ack", WAIT, |f| {
            f["type"] == "ack" && f["of"] == "location"
        })
        .await;
    assert_eq!(
        (&ack["accepted"], &ack["dropped"]),
        (&json!(2), &json!(4)),
        "{ack}"
    );
    // Older than what was accepted: out of order.
    courier
        .send_json(&json!({"type": "location", "point": point(here, 95, 10.0)}))
        .await;
    let ack = courier
        .expect_where("the single ack", WAIT, |f| {
            f["type"] == "ack" && f["of"] == "location"
        })
        .await;
    assert_eq!(
        (&ack["accepted"], &ack["dropped"]),
        (&json!(0), &json!(1)),
        "{ack}"
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for reason in [
        "duplicate",
        "inaccurate",
        "impossible_speed",
        "future",
        "out_of_order",
    ] {
        let line = format!("hexmarket_gps_points_dropped_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    assert!(
        metrics.contains("hexmarket_gps_points_accepted_total 2"),
        "{metrics}"
    );

    // The accepted points are on the courier's trail, oldest first; nobody but admins reads it.
    let day = (now - chrono::Duration::seconds(100)).format("%Y-%m-%d");
    let path = format!("/api/v1/admin/couriers/{courier_id}/trail?day={day}");
    let admin = app.admin_token().await;
    let trail = ok_json(get(&app, &admin, &path).await).await;
    let points = trail["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{trail}");
    assert!(
        points[0]["recorded_at"].as_str() < points[1]["recorded_at"].as_str(),
        "{trail}"
    );
    assert_problem(get(&app, &token, &path).await, 403, "forbidden").await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Access expiry.

#[actix_web::test]
async fn a_session_closes_with_4001_when_its_access_token_expires() {
    let app = spawn_app().await;
    let (courier, _) = user_token(&app, Role::Courier);
    // Issued long enough ago that it has three seconds left.
    let issued =
        app.clock.now() - hexmarket::identity::tokens::ACCESS_TTL + chrono::Duration::seconds(3);
    let token = app
        .identity
        .tokens
        .issue(courier, Role::Courier, issued, None, issued)
        .unwrap();
    let mut ws = open(&app, "/ws/courier", &token).await;
    ws.send_json(&json!({"type": "go_online"})).await;
    ws.expect_type("ack", WAIT).await;
    assert_eq!(ws.expect_close(Duration::from_secs(10)).await, Some(4001));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cancellation under way.

#[actix_web::test]
async fn a_courier_is_told_when_their_order_is_cancelled_and_stops_carrying_it() {
    let app = spawn_app().await;
    let shop = shop(&app, "Cancelled Curry").await;
    let (_, customer) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let (courier_id, courier_token) = user_token(&app, Role::Courier);
    let start = route_start(&app);
    let mut ws = open(&app, "/ws/courier", &courier_token).await;
    ws.send_json(&json!({"type": "go_online"})).await;
    ws.expect_type("ack", WAIT).await;
    let mut courier = Courier {
        id: courier_id,
        token: courier_token.clone(),
        ws,
        at: shop.vendor.location,
        recorded: start,
    };
    courier
        .report(moved(shop.vendor.location, 100.0, 0.0), start, 0.0, 0.0)
        .await;
    let order = assigned(&app, &shop, &customer, &mut courier).await;
    let me = ok_json(get(&app, &courier_token, "/api/v1/couriers/me").await).await;
    assert_eq!(me["active_orders"], json!([order]), "{me}");

    let cancelled = post(
        &app,
        &admin,
        &format!("/api/v1/admin/orders/{order}/cancel"),
    )
    .await;
    ok_json(cancelled).await;
    let told = courier.ws.expect_type("order_cancelled", WAIT).await;
    assert_eq!(told["order_id"], order.as_str(), "{told}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let me = ok_json(get(&app, &courier_token, "/api/v1/couriers/me").await).await;
        if me["active_orders"] == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{me}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}
