//! Notifications through the public API: order events reach the customer and the store in
//! their in-app feeds and by email and SMS, in their language and by their preferences, once;
//! a provider's outage delays a message and never the order; dead letters can be retried.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::{berlin, checkout_one, pay, seed_product, seed_vendor_of, stock_product};
use crate::helpers::{TestApp, assert_problem};
use crate::notify::{FakeTwilio, SmtpSink};
use crate::verification::app_with_fakes;
use hexmarket::domain::catalog::Vendor;
use hexmarket::domain::ids::{CategoryId, UserId};

const PASSWORD: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(20);

struct Account {
    id: UserId,
    email: String,
    phone: String,
    token: String,
}

/// Registers an account through the API (a customer with a verified phone) and logs in.
async fn account(app: &TestApp, twilio: &FakeTwilio, role: &str, name: &str) -> Account {
    let email = format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple());
    let phone = format!("+4477009{:05}", rand::random_range(0..100_000u32));
    let r = app
        .post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": PASSWORD, "name": name, "role": role, "phone": phone}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let tokens: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let sent = app
        .post_authed(
            "/api/v1/auth/phone/otp",
            &token,
            json!({"purpose": "verify_phone"}),
        )
        .await;
    assert_eq!(sent.status(), 202);
    let code = twilio
        .received()
        .into_iter()
        .rev()
        .find(|m| m.to == phone)
        .map(|m| {
            m.body
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .unwrap()
                .to_owned()
        })
        .unwrap();
    let verified = app
        .post_authed(
            "/api/v1/auth/phone/verify",
            &token,
            json!({"purpose": "verify_phone", "code": code}),
        )
        .await;
    assert_eq!(verified.status(), 200);
    let me: Value =
        crate::helpers::ok_json(crate::helpers::get(app, &token, "/api/v1/me").await).await;
    Account {
        id: me["id"].as_str().unwrap().parse().unwrap(),
        email,
        phone,
        token,
    }
}

/// A store run by `owner`, written through the store (its endpoints are tested elsewhere).
async fn store_of(app: &TestApp, owner: &Account, name: &str) -> Vendor {
    seed_vendor_of(app, owner.id, name, berlin(0.0, 0.0)).await
}

async fn feed(app: &TestApp, token: &str) -> Value {
    crate::helpers::ok_json(
        crate::helpers::get(app, token, "/api/v1/notifications?limit=100").await,
    )
    .await
}

/// Waits until `token`'s feed has an entry of `event` about `order`.
async fn wait_for_entry(app: &TestApp, token: &str, event: &str, order: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let feed = feed(app, token).await;
        if let Some(item) = feed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["event"] == event && i["order_id"] == order)
        {
            return item.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event} for {order} in {feed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the sink holds a message to `to` whose subject contains `subject`.
async fn wait_for_mail(smtp: &SmtpSink, to: &str, subject: &str) -> crate::notify::ReceivedMail {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(mail) = smtp.received().into_iter().find(|m| {
            m.rcpt_to.iter().any(|r| r == to)
                && m.header("Subject")
                    .is_some_and(|s| decode_subject(&s).contains(subject))
        }) {
            return mail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mail to {to} about {subject:?}; got {:?}",
            smtp.received()
                .iter()
                .map(|m| m.header("Subject"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subjects with non-ASCII characters come as RFC 2047 encoded words.
fn decode_subject(raw: &str) -> String {
    use base64::Engine as _;
    raw.split_whitespace()
        .map(|word| {
            word.strip_prefix("=?utf-8?b?")
                .or_else(|| word.strip_prefix("=?UTF-8?B?"))
                .and_then(|w| w.strip_suffix("?="))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|| word.to_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn mails_to(smtp: &SmtpSink, to: &str) -> Vec<String> {
    smtp.received()
        .into_iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == to))
        .filter_map(|m| m.header("Subject").map(|s| decode_subject(&s)))
        .collect()
}

async fn order_ready_to_pay(app: &TestApp, customer: &Account, vendor: &Vendor) -> (Value, String) {
    let product = seed_product(app, vendor, CategoryId::new(), "Penne", 780).await;
    stock_product(app, &product, 10).await;
    let checkout = checkout_one(app, &customer.token, &product, berlin(0.01, 0.01)).await;
    let order = checkout["orders"][0]["id"].as_str().unwrap().to_owned();
    (checkout, order)
}

#[actix_web::test]
async fn order_events_reach_the_customer_and_the_store_in_their_language_once() {
    let (app, twilio, smtp) = app_with_fakes().await;
    let customer = account(&app, &twilio, "customer", "Greta").await;
    let owner = account(&app, &twilio, "vendor", "Vito").await;
    let vendor = store_of(&app, &owner, "Pasta & Co").await;
    // Greta reads German; she wants no email when her order is declined, and tries to switch
    // off her receipt, which nobody can.
    let patched = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(&customer.token)
        .json(&json!({"locale": "de", "notifications": {"email": {"order_paid": false, "order_rejected": false}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(patched.json::<Value>().await.unwrap()["locale"], "de");

    let (checkout, order) = order_ready_to_pay(&app, &customer, &vendor).await;
    pay(&app, &customer.token, &checkout).await;

    let paid = wait_for_entry(&app, &customer.token, "order_paid", &order).await;
    assert_eq!(paid["title"], "Zahlung erhalten");
    assert!(paid["read_at"].is_null());
    assert_eq!(paid["audience"], "customer");
    // The total: the line and the delivery fee.
    let total: Value = crate::helpers::ok_json(
        crate::helpers::get(&app, &customer.token, &format!("/api/v1/orders/{order}")).await,
    )
    .await;
    let minor = total["totals"]["total"]["amount_minor"].as_i64().unwrap();
    let total = format!("{}.{:02} EUR", minor / 100, minor % 100);
    assert!(
        paid["body"].as_str().unwrap().contains(&total),
        "{paid} {total}"
    );
    let new_order = wait_for_entry(&app, &owner.token, "order_paid", &order).await;
    assert_eq!(new_order["audience"], "store");
    assert_eq!(new_order["title"], "New order");

    // The receipt, by email, in German, with a text and an HTML part.
    let receipt = wait_for_mail(&smtp, &customer.email, "Beleg für Bestellung").await;
    let body = receipt.body();
    assert!(
        receipt
            .header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    assert!(
        body.contains("text/plain") && body.contains("text/html"),
        "{body}"
    );
    let short = order[..8].to_uppercase();
    assert!(decode_subject(&receipt.header("Subject").unwrap()).contains(&short));
    wait_for_mail(&smtp, &owner.email, "New order").await;

    // The store declines: Greta is told in the app, not by email (her choice).
    let rejected = app
        .post_authed(
            &format!("/api/v1/orders/{order}/reject"),
            &owner.token,
            json!({"reason": "kitchen closed"}),
        )
        .await;
    assert_eq!(rejected.status(), 200);
    let declined = wait_for_entry(&app, &customer.token, "order_rejected", &order).await;
    assert!(
        declined["body"]
            .as_str()
            .unwrap()
            .contains("kitchen closed"),
        "{declined}"
    );
    // A refund follows the rejection of a paid order: a receipt of its own.
    wait_for_mail(&smtp, &customer.email, "Erstattung für Bestellung").await;

    // Nothing is sent twice, and nothing she switched off is sent: wait out a few rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to_customer = mails_to(&smtp, &customer.email);
    assert_eq!(
        to_customer.iter().filter(|s| s.contains("Beleg")).count(),
        1,
        "{to_customer:?}"
    );
    assert_eq!(
        to_customer
            .iter()
            .filter(|s| s.contains("Erstattung"))
            .count(),
        1,
        "{to_customer:?}"
    );
    assert!(
        !to_customer.iter().any(|s| s.contains("abgelehnt")),
        "{to_customer:?}"
    );
    let to_owner = mails_to(&smtp, &owner.email);
    assert_eq!(
        to_owner.iter().filter(|s| s.contains("New order")).count(),
        1,
        "{to_owner:?}"
    );
    // No SMS about this order: the customer's only default SMS is "arriving".
    assert!(
        !twilio
            .received()
            .iter()
            .any(|m| m.to == customer.phone && m.body.contains(&short))
    );

    // The feed: unread counts, one entry read, all read; nobody else's entries.
    let before = feed(&app, &customer.token).await;
    let unread = before["unread"].as_u64().unwrap();
    assert!(unread >= 3, "{before}");
    // Placing the order is the customer's own doing: no entry for it.
    let items = before["items"].as_array().unwrap();
    assert!(
        !items.iter().any(|i| i["event"] == "order_created"),
        "{before}"
    );
    let first = before["items"][0]["id"].as_str().unwrap().to_owned();
    let read = app
        .post_authed(
            &format!("/api/v1/notifications/{first}/read"),
            &customer.token,
            json!({}),
        )
        .await;
    assert_eq!(read.status(), 200);
    assert!(!read.json::<Value>().await.unwrap()["read_at"].is_null());
    assert_eq!(
        feed(&app, &customer.token).await["unread"]
            .as_u64()
            .unwrap(),
        unread - 1
    );
    let theirs = app
        .post_authed(
            &format!("/api/v1/notifications/{first}/read"),
            &owner.token,
            json!({}),
        )
        .await;
    assert_problem(theirs, 404, "not_found").await;
    let all = app
        .post_authed("/api/v1/notifications/read-all", &customer.token, json!({}))
        .await;
    assert_eq!(all.status(), 200);
    assert_eq!(all.json::<Value>().await.unwrap()["unread"], 0);
    let bad = crate::helpers::get(&app, &customer.token, "/api/v1/notifications?cursor=nope").await;
    assert_problem(bad, 400, "invalid_cursor").await;
    let unauthenticated = app.get("/api/v1/notifications").await;
    assert_eq!(unauthenticated.status(), 401);
}

#[actix_web::test]
async fn a_refused_email_becomes_a_dead_letter_an_admin_sends_again_and_the_order_goes_on() {
    let (app, twilio, smtp) = app_with_fakes().await;
    let customer = account(&app, &twilio, "customer", "Ada").await;
    let owner = account(&app, &twilio, "vendor", "Bruno").await;
    let vendor = store_of(&app, &owner, "Bruno's").await;
    smtp.reject_recipients_with("550 5.1.1 mailbox unavailable");

    let (checkout, order) = order_ready_to_pay(&app, &customer, &vendor).await;
    pay(&app, &customer.token, &checkout).await;
    // The order is paid whatever the mail server says.
    wait_for_entry(&app, &customer.token, "order_paid", &order).await;
    let (admin_token, _, _) =
        crate::helpers::admin_login(&app.identity, &app.clock, &app.address).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead =
        loop {
            let page: Value = crate::helpers::ok_json(
                crate::helpers::get(
                    &app,
                    &admin_token,
                    "/api/v1/admin/notifications/dead-letters",
                )
                .await,
            )
            .await;
            if let Some(letter) = page["items"].as_array().unwrap().iter().find(|m| {
                m["order_id"] == order.as_str() && m["recipient"] == customer.id.to_string()
            }) {
                break letter.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no dead letter: {page}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["medium"], "email");
    let error = dead["last_error"].as_str().unwrap();
    assert!(
        error.contains("550") && !error.contains(&customer.email),
        "{error}"
    );

    // Customers cannot see or retry dead letters.
    let forbidden = crate::helpers::get(
        &app,
        &customer.token,
        "/api/v1/admin/notifications/dead-letters",
    )
    .await;
    assert_eq!(forbidden.status(), 403);

    // The mailbox is back: the admin sends it again, and it arrives, once.
    smtp.accept_recipients();
    let id = dead["id"].as_str().unwrap();
    let retried = app
        .post_authed(
            &format!("/api/v1/admin/notifications/dead-letters/{id}/retry"),
            &admin_token,
            json!({}),
        )
        .await;
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.json::<Value>().await.unwrap()["state"], "pending");
    wait_for_mail(&smtp, &customer.email, "Receipt for order").await;
    let again = app
        .post_authed(
            &format!("/api/v1/admin/notifications/dead-letters/{id}/retry"),
            &admin_token,
            json!({}),
        )
        .await;
    assert_problem(again, 404, "not_found").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        mails_to(&smtp, &customer.email)
            .iter()
            .filter(|s| s.contains("Receipt"))
            .count(),
        1
    );
}

#[actix_web::test]
async fn an_sms_provider_outage_is_retried_with_backoff() {
    let (app, twilio, _smtp) = app_with_fakes().await;
    let customer = account(&app, &twilio, "customer", "Sam").await;
    // Sam wants an SMS when the store accepts.
    let patched = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(&customer.token)
        .json(&json!({"notifications": {"sms": {"order_accepted": true}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let owner = account(&app, &twilio, "vendor", "Olga").await;
    let vendor = store_of(&app, &owner, "Olga's").await;
    let (checkout, order) = order_ready_to_pay(&app, &customer, &vendor).await;
    pay(&app, &customer.token, &checkout).await;
    wait_for_entry(&app, &customer.token, "order_paid", &order).await;

    twilio.fail_with(500);
    let accepted = app
        .post_authed(
            &format!("/api/v1/orders/{order}/accept"),
            &owner.token,
            json!({}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    wait_for_entry(&app, &customer.token, "order_accepted", &order).await;
    // Twilio is down: the SMS is attempted and put off, not lost.
    let short = order[..8].to_uppercase();
    let deadline = tokio::time::Instant::now() + WAIT;
    while twilio.requests() == 0 || twilio.received().iter().any(|m| m.body.contains(&short)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SMS was never attempted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    twilio.fail_with(0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sms: Vec<_> = twilio
            .received()
            .into_iter()
            .filter(|m| m.to == customer.phone && m.body.contains(&short))
            .collect();
        if !sms.is_empty() {
            assert_eq!(sms.len(), 1);
            assert!(sms[0].body.chars().count() <= 306);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SMS never went out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn two_nodes_on_one_store_send_each_message_once_and_the_second_takes_over() {
    let (first, twilio, smtp) = app_with_fakes().await;
    let second = crate::helpers::spawn_peer(&first, |_| {}).await;
    let owner = account(&first, &twilio, "vendor", "Nora").await;
    let vendor = store_of(&first, &owner, "Nora's").await;
    let mut expected = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &first } else { &second };
        let customer = account(node, &twilio, "customer", &format!("c{i}")).await;
        let (checkout, order) = order_ready_to_pay(node, &customer, &vendor).await;
        pay(node, &customer.token, &checkout).await;
        expected.push((customer, order));
    }
    for (customer, order) in &expected {
        wait_for_mail(
            &smtp,
            &customer.email,
            &format!("Receipt for order {}", order[..8].to_uppercase()),
        )
        .await;
    }
    // The node holding the lease stops; the other takes over once the lease runs out.
    first.stop().await;
    let customer = account(&second, &twilio, "customer", "late").await;
    let (checkout, order) = order_ready_to_pay(&second, &customer, &vendor).await;
    pay(&second, &customer.token, &checkout).await;
    wait_for_mail(
        &smtp,
        &customer.email,
        &format!("Receipt for order {}", order[..8].to_uppercase()),
    )
    .await;
    expected.push((customer, order));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (customer, order) in &expected {
        let subjects = mails_to(&smtp, &customer.email);
        let receipts = subjects
            .iter()
            .filter(|s| s.contains(&order[..8].to_uppercase()))
            .count();
        assert_eq!(receipts, 1, "{subjects:?}");
    }
    let to_owner = mails_to(&smtp, &owner.email);
    assert_eq!(
        to_owner
            .iter()
            .filter(|s| s.starts_with("New order"))
            .count(),
        expected.len(),
        "{to_owner:?}"
    );
}

/// One webhook delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    signature: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct ReceiverState {
    received: parking_lot::Mutex<Vec<Delivery>>,
    /// Answer this many requests with 500 before answering 204.
    fail_first: std::sync::atomic::AtomicUsize,
}

/// A webhook receiver on loopback that keeps every request.
struct Receiver {
    url: String,
    state: std::sync::Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start() -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let state = std::sync::Arc::new(ReceiverState::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::from(std::sync::Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).route(
                "/hook",
                web::post().to(|req: HttpRequest, body: web::Bytes, state: web::Data<ReceiverState>| async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    state.received.lock().push(Delivery {
                        id: header("hexmarket-webhook-id"),
                        signature: header("hexmarket-signature"),
                        body: body.to_vec(),
                    });
                    let failing = state
                        .fail_first
                        .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        HttpResponse::InternalServerError().finish()
                    } else {
                        HttpResponse::NoContent().finish()
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            handle,
        }
    }

    fn received(&self) -> Vec<Delivery> {
        self.state.received.lock().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Checks a delivery's signature as a receiver would: HMAC-SHA256 of "{t}.{body}".
fn verify(secret: &str, delivery: &Delivery) -> bool {
    use hmac::Mac as _;
    let mut t = None;
    let mut v1 = None;
    for part in delivery.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(age) = t
        .parse::<i64>()
        .map(|t| (chrono::Utc::now().timestamp() - t).abs())
    else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&delivery.body);
    let expected = data_encoding::HEXLOWER
        .decode(v1.as_bytes())
        .unwrap_or_default();
    age < 300 && mac.verify_slice(&expected).is_ok()
}

#[actix_web::test]
async fn a_private_webhook_target_is_refused_unless_the_operator_allows_it() {
    let (app, twilio, _smtp) = app_with_fakes().await;
    let owner = account(&app, &twilio, "vendor", "Pia").await;
    store_of(&app, &owner, "Pia's").await;
    let receiver = Receiver::start().await;
    for url in [
        receiver.url.as_str(),
        "http://169.254.169.254/latest",
        "http://[::1]:9/x",
        "http://10.0.0.1/",
    ] {
        let refused = app
            .post_authed(
                "/api/v1/webhooks",
                &owner.token,
                json!({"url": url, "events": ["order_paid"]}),
            )
            .await;
        assert_problem(refused, 422, "webhook_target_refused").await;
    }
    let not_http = app
        .post_authed(
            "/api/v1/webhooks",
            &owner.token,
            json!({"url": "ftp://example.com/", "events": ["order_paid"]}),
        )
        .await;
    assert_problem(not_http, 422, "validation_failed").await;
    let customer = account(&app, &twilio, "customer", "Cleo").await;
    let forbidden = app
        .post_authed(
            "/api/v1/webhooks",
            &customer.token,
            json!({"url": "https://example.com/", "events": ["order_paid"]}),
        )
        .await;
    assert_eq!(forbidden.status(), 403);
}

#[actix_web::test]
async fn a_store_hears_of_its_paid_orders_signed_retried_logged_and_redelivered() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.webhook_allow_private = true;
    })
    .await;
    let owner = plain_account(&app, "vendor", "Rita").await;
    let vendor = seed_vendor_of(&app, owner.0, "Rita's", berlin(0.0, 0.0)).await;
    let receiver = Receiver::start().await;
    let created = app
        .post_authed(
            "/api/v1/webhooks",
            &owner.1,
            json!({"url": receiver.url, "events": ["order_paid", "order_accepted"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let endpoint: Value = created.json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(endpoint["scope"]["kind"], "store");

    // The first attempt fails with a 500; the retry (a couple of seconds later) goes through.
    receiver
        .state
        .fail_first
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let customer = plain_account(&app, "customer", "Uma").await;
    let product = seed_product(&app, &vendor, CategoryId::new(), "Soup", 500).await;
    stock_product(&app, &product, 5).await;
    let checkout = checkout_one(&app, &customer.1, &product, berlin(0.01, 0.01)).await;
    let order = checkout["orders"][0]["id"].as_str().unwrap().to_owned();
    pay(&app, &customer.1, &checkout).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while receiver.received().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {:?}",
            receiver.received()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = receiver.received();
    assert_eq!(
        deliveries[0].id, deliveries[1].id,
        "a retry keeps its delivery id"
    );
    for delivery in &deliveries {
        assert!(verify(&secret, delivery), "{delivery:?}");
        assert!(!verify("whsec_someone-else", delivery));
    }
    let event: Value = serde_json::from_slice(&deliveries[1].body).unwrap();
    assert_eq!(event["type"], "order_paid");
    assert_eq!(event["data"]["order_id"], order);
    assert_eq!(event["data"]["status"], "paid");

    // The delivery log: sent after two attempts, the first error kept. The receiver has the
    // second copy before the node hears its answer and writes the outcome.
    let id = endpoint["id"].as_str().unwrap();
    let log = crate::helpers::until(
        &app,
        &owner.1,
        &format!("/api/v1/webhooks/{id}/deliveries"),
        WAIT,
        |log| log["items"][0]["state"] != "pending",
    )
    .await;
    let entry = &log["items"][0];
    assert_eq!(entry["state"], "sent", "{log}");
    assert_eq!(entry["attempts"], 2, "{log}");
    assert!(
        entry["last_error"].as_str().unwrap().contains("500"),
        "{log}"
    );

    // Redelivery on demand: the same delivery again, signed again.
    let delivery = entry["id"].as_str().unwrap();
    let again = app
        .post_authed(
            &format!("/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver"),
            &owner.1,
            json!({}),
        )
        .await;
    assert_eq!(again.status(), 200);
    while receiver.received().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline + WAIT,
            "no redelivery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.received()[2].id, deliveries[0].id);
    assert!(verify(&secret, &receiver.received()[2]));

    // Nobody else sees or deletes the endpoint; its owner does.
    let other = plain_account(&app, "vendor", "Otto").await;
    let theirs =
        crate::helpers::get(&app, &other.1, &format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert_problem(theirs, 404, "not_found").await;
    let gone = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&other.1)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let deleted = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&owner.1)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}

/// Registers an account through the API (no phone) and logs in: its id and access token.
async fn plain_account(app: &TestApp, role: &str, name: &str) -> (UserId, String) {
    let email = format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple());
    let r = app
        .post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": PASSWORD, "name": name, "role": role}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let tokens: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    (id, tokens["access_token"].as_str().unwrap().to_owned())
}

#[derive(Default)]
struct PushServiceState {
    /// Decrypted payloads, with the VAPID header they came with.
    received: parking_lot::Mutex<Vec<(Value, String)>>,
}

/// A push service on loopback for one browser: it decrypts what it receives (RFC 8291) with the
/// browser's private key, and answers `gone` paths with 410.
struct PushService {
    base: String,
    state: std::sync::Arc<PushServiceState>,
    secret: p256::SecretKey,
    auth: [u8; 16],
    handle: actix_web::dev::ServerHandle,
}

impl PushService {
    async fn start() -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let secret = loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(s) = p256::SecretKey::from_slice(&bytes) {
                break s;
            }
        };
        let auth: [u8; 16] = rand::random();
        let state = std::sync::Arc::new(PushServiceState::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::from(std::sync::Arc::clone(&state));
        let (key, secret_for_server) = (auth, secret.clone());
        let server = HttpServer::new(move || {
            let secret = secret_for_server.clone();
            App::new().app_data(data.clone()).route(
                "/{path}",
                web::post().to(
                    move |req: HttpRequest,
                          path: web::Path<String>,
                          body: web::Bytes,
                          state: web::Data<PushServiceState>| {
                        let secret = secret.clone();
                        async move {
                            if path.as_str() == "gone" {
                                return HttpResponse::Gone().finish();
                            }
                            let auth = web_push_native::Auth::clone_from_slice(&key);
                            let Ok(plain) = web_push_native::decrypt(body.to_vec(), &secret, &auth)
                            else {
                                return HttpResponse::BadRequest().finish();
                            };
                            let vapid = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let payload: Value =
                                serde_json::from_slice(&plain).unwrap_or(Value::Null);
                            state.received.lock().push((payload, vapid));
                            HttpResponse::Created().finish()
                        }
                    },
                ),
            )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        PushService {
            base: format!("http://127.0.0.1:{port}"),
            state,
            secret,
            auth,
            handle,
        }
    }

    /// The browser's subscription to `path` (`gone` always answers 410).
    fn subscription(&self, path: &str) -> Value {
        use base64::Engine as _;
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let point = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": format!("{}/{path}", self.base),
            "keys": {"p256dh": b64.encode(point.as_bytes()), "auth": b64.encode(self.auth)},
        })
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Checks a VAPID authorization (`vapid t=JWT, k=KEY`): the key is the server's and the token,
/// signed with it (ES256), is for `audience`.
fn vapid_is_valid(header: &str, server_key: &str, audience: &str) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some(rest) = header.strip_prefix("vapid ") else {
        return false;
    };
    let mut token = None;
    let mut key = None;
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("t", v)) => token = Some(v),
            Some(("k", v)) => key = Some(v),
            _ => {}
        }
    }
    let (Some(token), Some(key)) = (token, key) else {
        return false;
    };
    let Ok(point) = b64.decode(key) else {
        return false;
    };
    if key != server_key || point.len() != 65 {
        return false;
    }
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        &b64.encode(&point[1..33]),
        &b64.encode(&point[33..65]),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &decoding, &validation).is_ok()
}

#[actix_web::test]
async fn web_push_reaches_a_subscribed_browser_encrypted_and_a_gone_subscription_is_removed() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.webhook_allow_private = true;
    })
    .await;
    let service = PushService::start().await;
    let owner = plain_account(&app, "vendor", "Paula").await;
    let vendor = seed_vendor_of(&app, owner.0, "Paula's", berlin(0.0, 0.0)).await;
    let customer = plain_account(&app, "customer", "Ben").await;
    let key: Value = crate::helpers::ok_json(app.get("/api/v1/push/vapid-public-key").await).await;
    let server_key = key["public_key"].as_str().unwrap().to_owned();
    for path in ["browser", "gone"] {
        let subscribed = app
            .post_authed(
                "/api/v1/me/push-subscriptions",
                &customer.1,
                service.subscription(path),
            )
            .await;
        assert_eq!(subscribed.status(), 201);
    }
    let bad = app
        .post_authed(
            "/api/v1/me/push-subscriptions",
            &customer.1,
            json!({"endpoint": format!("{}/x", service.base), "keys": {"p256dh": "AAAA", "auth": "AAAA"}}),
        )
        .await;
    assert_problem(bad, 422, "invalid_push_keys").await;

    let product = seed_product(&app, &vendor, CategoryId::new(), "Tea", 300).await;
    stock_product(&app, &product, 5).await;
    let checkout = checkout_one(&app, &customer.1, &product, berlin(0.01, 0.01)).await;
    let order = checkout["orders"][0]["id"].as_str().unwrap().to_owned();
    pay(&app, &customer.1, &checkout).await;

    // The "paid" push (on by default) arrives decrypted, with a valid VAPID token.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (payload, vapid) = loop {
        if let Some(found) = service.state.received.lock().first().cloned() {
            break found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no push arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(payload["event"], "order_paid", "{payload}");
    assert_eq!(payload["order_id"], order);
    assert_eq!(payload["title"], "Payment received");
    assert!(
        vapid_is_valid(&vapid, &server_key, &service.base),
        "{vapid}"
    );
    assert!(!vapid_is_valid(
        &vapid,
        &server_key,
        "https://elsewhere.example"
    ));

    // The subscription whose push service answered 410 is gone; the other stays.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let subs: Value = crate::helpers::ok_json(
            crate::helpers::get(&app, &customer.1, "/api/v1/me/push-subscriptions").await,
        )
        .await;
        let endpoints: Vec<&str> = subs
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["endpoint"].as_str().unwrap())
            .collect();
        if endpoints.len() == 1 {
            assert!(endpoints[0].ends_with("/browser"), "{subs}");
            let id = subs[0]["id"].as_str().unwrap();
            let gone = app
                .client
                .delete(app.url(&format!("/api/v1/me/push-subscriptions/{id}")))
                .bearer_auth(&customer.1)
                .send()
                .await
                .unwrap();
            assert_eq!(gone.status(), 204);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gone subscription stayed: {subs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
