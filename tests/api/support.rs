//! Support tickets: who sees them, notes, replies and their notices, the clock of first
//! response and resolution, the overdue queue, attachments, and bad input.

use std::io::Cursor;
use std::time::Duration;

use chrono::Utc;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, CheckoutId, OrderId, UserId};
use hexmarket::domain::money::{Currency, Money};
use hexmarket::domain::order::{Order, OrderLine, OrderStatus};
use hexmarket::store::orders::OrderRepo;
use serde_json::{Value, json};

use crate::fixtures::{berlin, seed_product, seed_vendor, user_token};
use crate::helpers::{
    TestApp, assert_problem, get, notices, ok_json, patch_json, post_json, spawn_app,
    spawn_app_with,
};

async fn open_ticket(app: &TestApp, token: &str, subject: &str, category: &str) -> Value {
    let response = post_json(
        app,
        token,
        "/api/v1/support/tickets",
        json!({"subject": subject, "category": category, "body": "Please help."}),
    )
    .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

fn ticket_path(ticket: &Value) -> String {
    format!("/api/v1/support/tickets/{}", ticket["id"].as_str().unwrap())
}

fn admin_path(ticket: &Value) -> String {
    format!(
        "/api/v1/admin/support/tickets/{}",
        ticket["id"].as_str().unwrap()
    )
}

fn ids(list: &Value) -> Vec<String> {
    list["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn only_its_author_and_admins_see_a_ticket() {
    // Arrange
    let app = spawn_app().await;
    let (_, alice) = user_token(&app, Role::Customer);
    let (_, bob) = user_token(&app, Role::Customer);
    let (_, vendor) = seed_vendor(&app, "Corner Shop", berlin(0.0, 0.0)).await;
    let admin = app.admin_token().await;

    // Act
    let ticket = open_ticket(&app, &alice, "Where is my refund?", "payment").await;
    let path = ticket_path(&ticket);

    // Assert
    assert_eq!(ticket["status"], "open");
    assert_eq!(ticket["waiting_on_admin"], true);
    assert!(ticket.get("overdue").is_none(), "overdue is for admins");
    assert_eq!(
        ok_json(get(&app, &alice, &path).await).await["id"],
        ticket["id"]
    );
    for stranger in [&bob, &vendor] {
        assert_problem(get(&app, stranger, &path).await, 404, "not_found").await;
        let messages = format!("{path}/messages");
        let write = post_json(&app, stranger, &messages, json!({"body": "hi"})).await;
        assert_problem(write, 404, "not_found").await;
    }
    let seen = ok_json(get(&app, &admin, &path).await).await;
    assert_eq!(seen["overdue"], false);
    let mine = ok_json(get(&app, &alice, "/api/v1/support/tickets").await).await;
    assert_eq!(ids(&mine), [ticket["id"].as_str().unwrap()]);
    let theirs = ok_json(get(&app, &bob, "/api/v1/support/tickets").await).await;
    assert!(ids(&theirs).is_empty());
    assert_problem(
        get(&app, &alice, "/api/v1/admin/support/tickets").await,
        403,
        "forbidden",
    )
    .await;
}

#[actix_web::test]
async fn internal_notes_never_reach_the_author_and_replies_do_with_a_notice() {
    // Arrange
    let app = spawn_app().await;
    let (_, alice) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let ticket = open_ticket(&app, &alice, "Courier was rude", "courier_behaviour").await;
    let subject = format!("ticket:{}", ticket["id"].as_str().unwrap());

    // Act
    let noted = post_json(
        &app,
        &admin,
        &format!("{}/messages", admin_path(&ticket)),
        json!({"body": "Courier has two earlier complaints.", "internal": true}),
    )
    .await;
    let replied = post_json(
        &app,
        &admin,
        &format!("{}/messages", admin_path(&ticket)),
        json!({"body": "We are sorry; we spoke to the courier."}),
    )
    .await;

    // Assert
    assert_eq!(noted.status(), 201);
    let replied = ok_json(replied).await;
    assert_eq!(replied["messages"].as_array().unwrap().len(), 3);
    assert_eq!(replied["status"], "waiting_on_user");
    let seen = ok_json(get(&app, &alice, &ticket_path(&ticket)).await).await;
    let bodies: Vec<&str> = seen["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["Please help.", "We are sorry; we spoke to the courier."]
    );
    assert!(!seen.to_string().contains("earlier complaints"));
    assert_eq!(seen["message_count"], 2);
    let told = notices(&app, &alice, &subject).await;
    assert_eq!(told.len(), 1, "one notice, for the reply only: {told:?}");
    assert_eq!(told[0]["notice"], "support_reply");
    assert!(
        told[0]["body"]
            .as_str()
            .unwrap()
            .contains("spoke to the courier")
    );
    assert!(told[0].get("order_id").is_none());
    let trail = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/admin/audit?target={subject}"),
        )
        .await,
    )
    .await;
    let actions: Vec<&str> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["support.reply", "support.note"], "{trail}");
    assert!(
        !trail.to_string().contains("earlier complaints"),
        "no message text in the trail"
    );
}

#[actix_web::test]
async fn first_response_and_resolution_times_follow_the_clock() {
    // Arrange
    let app = spawn_app().await;
    let (_, alice) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let me = ok_json(get(&app, &admin, "/api/v1/me").await).await;
    let admin_id: UserId = me["id"].as_str().unwrap().parse().unwrap();
    let ticket = open_ticket(&app, &alice, "Card charged twice", "payment").await;
    let subject = format!("ticket:{}", ticket["id"].as_str().unwrap());

    // Act
    app.clock.advance(Duration::from_secs(600));
    let assigned = patch_json(
        &app,
        &admin,
        &admin_path(&ticket),
        json!({"assigned_to": admin_id}),
    )
    .await;
    post_json(
        &app,
        &admin,
        &format!("{}/messages", admin_path(&ticket)),
        json!({"body": "Checking with the bank."}),
    )
    .await;
    app.clock.advance(Duration::from_secs(3_600));
    let resolved = patch_json(
        &app,
        &admin,
        &admin_path(&ticket),
        json!({"status": "resolved"}),
    )
    .await;

    // Assert
    assert_eq!(ok_json(assigned).await["assigned_to"], admin_id.to_string());
    let resolved = ok_json(resolved).await;
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["first_response_secs"], 600);
    assert_eq!(resolved["resolution_secs"], 4_200);
    let seen = ok_json(get(&app, &alice, &ticket_path(&ticket)).await).await;
    assert!(
        seen.get("assigned_to").is_none(),
        "the assignee is for admins"
    );
    let told: Vec<String> = notices(&app, &alice, &subject)
        .await
        .iter()
        .map(|n| n["notice"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(told, ["support_status", "support_reply"], "newest first");

    // The author answering reopens it and forgets the resolution; closing ends it for good.
    let reopened = post_json(
        &app,
        &alice,
        &format!("{}/messages", ticket_path(&ticket)),
        json!({"body": "Still charged twice."}),
    )
    .await;
    let reopened = ok_json(reopened).await;
    assert_eq!(reopened["status"], "open");
    assert_eq!(reopened["resolution_secs"], Value::Null);
    let closed = post_json(
        &app,
        &alice,
        &format!("{}/close", ticket_path(&ticket)),
        json!({}),
    )
    .await;
    assert_eq!(ok_json(closed).await["status"], "closed");
    let late = post_json(
        &app,
        &alice,
        &format!("{}/messages", ticket_path(&ticket)),
        json!({"body": "Hello?"}),
    )
    .await;
    assert_problem(late, 409, "ticket_closed").await;
}

#[actix_web::test]
async fn the_queue_lists_overdue_tickets_and_moves_tickets_between_statuses() {
    // Arrange
    let app = spawn_app_with(|s| s.support_overdue = Duration::from_secs(3_600)).await;
    let (_, alice) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let waiting = open_ticket(&app, &alice, "No answer yet", "account").await;
    let answered = open_ticket(&app, &alice, "Answered quickly", "order_problem").await;
    post_json(
        &app,
        &admin,
        &format!("{}/messages", admin_path(&answered)),
        json!({"body": "Done."}),
    )
    .await;

    // Act
    let before =
        ok_json(get(&app, &admin, "/api/v1/admin/support/tickets?overdue=true").await).await;
    app.clock.advance(Duration::from_secs(2 * 3_600));
    let overdue =
        ok_json(get(&app, &admin, "/api/v1/admin/support/tickets?overdue=true").await).await;

    // Assert
    assert!(ids(&before).is_empty());
    assert_eq!(ids(&overdue), [waiting["id"].as_str().unwrap()]);
    assert_eq!(overdue["tickets"][0]["overdue"], true);
    let open = ok_json(get(&app, &admin, "/api/v1/admin/support/tickets").await).await;
    assert_eq!(ids(&open), [waiting["id"].as_str().unwrap()]);
    let on_user = ok_json(
        get(
            &app,
            &admin,
            "/api/v1/admin/support/tickets?status=waiting_on_user",
        )
        .await,
    )
    .await;
    assert_eq!(ids(&on_user), [answered["id"].as_str().unwrap()]);
    let by_category = ok_json(
        get(
            &app,
            &admin,
            "/api/v1/admin/support/tickets?category=order_problem",
        )
        .await,
    )
    .await;
    assert!(ids(&by_category).is_empty(), "only open tickets by default");
    let old = ok_json(
        get(
            &app,
            &admin,
            "/api/v1/admin/support/tickets?older_than=10800",
        )
        .await,
    )
    .await;
    assert!(ids(&old).is_empty(), "opened two hours ago, not three");
    let oldest = ok_json(
        get(
            &app,
            &admin,
            "/api/v1/admin/support/tickets?older_than=3155760000",
        )
        .await,
    )
    .await;
    assert!(
        ids(&oldest).is_empty(),
        "the documented maximum is accepted"
    );
    assert_problem(
        get(
            &app,
            &admin,
            "/api/v1/admin/support/tickets?older_than=9223372036854775806",
        )
        .await,
        422,
        "validation_failed",
    )
    .await;

    patch_json(
        &app,
        &admin,
        &admin_path(&waiting),
        json!({"status": "closed"}),
    )
    .await;
    let open = ok_json(get(&app, &admin, "/api/v1/admin/support/tickets").await).await;
    assert!(ids(&open).is_empty());
    let closed =
        ok_json(get(&app, &admin, "/api/v1/admin/support/tickets?status=closed").await).await;
    assert_eq!(ids(&closed), [waiting["id"].as_str().unwrap()]);
    assert_problem(
        get(
            &app,
            &admin,
            "/api/v1/admin/support/tickets?overdue=true&status=closed",
        )
        .await,
        400,
        "invalid_query",
    )
    .await;
}

#[actix_web::test]
async fn a_ticket_names_only_its_authors_order() {
    // Arrange
    let app = spawn_app().await;
    let (alice_id, alice) = user_token(&app, Role::Customer);
    let (_, bob) = user_token(&app, Role::Customer);
    let (vendor, _) = seed_vendor(&app, "Noodle Bar", berlin(0.0, 0.0)).await;
    let product = seed_product(&app, &vendor, CategoryId::new(), "Ramen", 1200).await;
    let now = Utc::now();
    let order = Order {
        id: OrderId::new(),
        checkout_id: CheckoutId::new(),
        customer_id: alice_id,
        vendor_id: vendor.id,
        status: OrderStatus::Delivered,
        lines: vec![OrderLine {
            product_id: product.id,
            title: product.title.clone(),
            quantity: 1,
            unit_price: Money::new(1200, Currency::EUR),
        }],
        created_at: now,
        updated_at: now,
    };
    OrderRepo::new(app.catalog.repo.products.store().clone())
        .insert(&order)
        .await
        .unwrap()
        .unwrap();
    let body = json!({"subject": "Soup spilled", "category": "order_problem",
        "order_id": order.id, "body": "Half of it is in the bag."});

    // Act
    let theirs = post_json(&app, &bob, "/api/v1/support/tickets", body.clone()).await;
    let hers = post_json(&app, &alice, "/api/v1/support/tickets", body).await;

    // Assert
    let problem = assert_problem(theirs, 422, "not_your_order").await;
    assert_eq!(problem["errors"][0]["field"], "order_id");
    assert_eq!(ok_json(hers).await["order_id"], order.id.to_string());
}

#[actix_web::test]
async fn bad_input_is_refused_with_problem_codes() {
    let app = spawn_app().await;
    let (_, alice) = user_token(&app, Role::Customer);
    let tickets = "/api/v1/support/tickets";

    let empty = post_json(
        &app,
        &alice,
        tickets,
        json!({"subject": " ", "category": "other", "body": "x"}),
    )
    .await;
    assert_problem(empty, 422, "validation_failed").await;
    let long = post_json(
        &app,
        &alice,
        tickets,
        json!({"subject": "Long", "category": "other", "body": "x".repeat(4_001)}),
    )
    .await;
    assert_problem(long, 422, "validation_failed").await;
    let unknown = post_json(
        &app,
        &alice,
        tickets,
        json!({"subject": "s", "category": "other", "body": "x", "status": "resolved"}),
    )
    .await;
    assert_problem(unknown, 400, "unknown_field").await;
    let category = post_json(
        &app,
        &alice,
        tickets,
        json!({"subject": "s", "category": "weather", "body": "x"}),
    )
    .await;
    assert_eq!(category.status(), 422);

    let ticket = open_ticket(&app, &alice, "Pictures", "other").await;
    let phantom = post_json(
        &app,
        &alice,
        &format!("{}/messages", ticket_path(&ticket)),
        json!({"body": "see picture", "attachments": [7]}),
    )
    .await;
    assert_problem(phantom, 422, "unknown_attachment").await;
    // A ticket is assigned to an administrator, not to a customer or to nobody known.
    let admin = app.admin_token().await;
    let customer = app
        .register(&crate::auth::unique_email(), "customer")
        .await
        .json::<Value>()
        .await
        .unwrap();
    for assignee in [customer["id"].clone(), json!(uuid::Uuid::now_v7())] {
        let refused = patch_json(
            &app,
            &admin,
            &format!(
                "/api/v1/admin/support/tickets/{}",
                ticket["id"].as_str().unwrap()
            ),
            json!({"assigned_to": assignee}),
        )
        .await;
        assert_problem(refused, 422, "validation_failed").await;
    }
    assert_problem(
        get(&app, &alice, "/api/v1/support/tickets?cursor=nonsense").await,
        400,
        "invalid_cursor",
    )
    .await;
    assert_problem(
        get(&app, &alice, "/api/v1/support/tickets/not-a-uuid").await,
        400,
        "invalid_path",
    )
    .await;

    // Five tickets an hour; the sixth waits.
    for i in 0..4 {
        open_ticket(&app, &alice, &format!("Ticket {i}"), "other").await;
    }
    let sixth = post_json(
        &app,
        &alice,
        tickets,
        json!({"subject": "Again", "category": "other", "body": "x"}),
    )
    .await;
    let problem = assert_problem(sixth, 429, "too_many_requests").await;
    assert!(problem["detail"].is_string());
}

fn png() -> Vec<u8> {
    png_sized(64, 48)
}

fn png_sized(width: u32, height: u32) -> Vec<u8> {
    let picture =
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
        }));
    let mut out = Vec::new();
    picture
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

async fn upload(app: &TestApp, token: &str, ticket: &Value, bytes: &[u8]) -> reqwest::Response {
    const BOUNDARY: &str = "ticket-boundary";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    app.client
        .post(app.url(&format!("{}/attachments", ticket_path(ticket))))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn attachments_are_images_only_the_author_and_admins_can_fetch() {
    // Arrange
    let app = spawn_app().await;
    let (_, alice) = user_token(&app, Role::Customer);
    let (_, bob) = user_token(&app, Role::Customer);
    let admin = app.admin_token().await;
    let ticket = open_ticket(&app, &alice, "Damaged parcel", "order_problem").await;

    // Act
    let uploaded = upload(&app, &alice, &ticket, &png()).await;

    // Assert
    assert_eq!(uploaded.status(), 201);
    let attachment: Value = uploaded.json().await.unwrap();
    assert_eq!(attachment["id"], 1);
    assert_eq!(attachment["content_type"], "image/png");
    let url = attachment["url"].as_str().unwrap().to_owned();
    let shown = post_json(
        &app,
        &alice,
        &format!("{}/messages", ticket_path(&ticket)),
        json!({"body": "See the photo.", "attachments": [1]}),
    )
    .await;
    assert_eq!(
        ok_json(shown).await["messages"][1]["attachments"],
        json!([1])
    );

    let own = get(&app, &alice, &url).await;
    assert_eq!(own.status(), 200);
    assert_eq!(own.headers()["content-type"], "image/png");
    assert_eq!(get(&app, &admin, &url).await.status(), 200);
    let thumbnail = get(&app, &admin, &format!("{url}?size=thumbnail")).await;
    assert_eq!(thumbnail.status(), 200);
    assert_problem(get(&app, &bob, &url).await, 404, "not_found").await;
    assert_problem(upload(&app, &bob, &ticket, &png()).await, 404, "not_found").await;
    let text = upload(&app, &alice, &ticket, b"not an image at all").await;
    assert_problem(text, 415, "unsupported_media_type").await;

    // An admin's image shown only in a note stays with the admins.
    let evidence = upload(&app, &admin, &ticket, &png_sized(40, 30)).await;
    let evidence: Value = ok_json(evidence).await;
    post_json(
        &app,
        &admin,
        &format!("{}/messages", admin_path(&ticket)),
        json!({"body": "Carrier photo.", "internal": true, "attachments": [evidence["id"]]}),
    )
    .await;
    let evidence_url = evidence["url"].as_str().unwrap();
    assert_problem(get(&app, &alice, evidence_url).await, 404, "not_found").await;
    let seen = ok_json(get(&app, &alice, &ticket_path(&ticket)).await).await;
    assert_eq!(seen["attachments"].as_array().unwrap().len(), 1);
}
