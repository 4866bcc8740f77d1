//! Payments: Stripe's webhook (signatures, deduplication), the simulated provider's outcome
//! switch, and the Stripe provider against localstripe and against a loopback fake that
//! records idempotency keys (localstripe ignores them).
//!
//! Checkout does not exist yet, so payments are created through the library.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::future::join_all;
use hexmarket::app::Application;
use hexmarket::clock::Clock;
use hexmarket::config::{Settings, StripeSettings};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CheckoutId, UserId};
use hexmarket::domain::money::{Currency, Money};
use hexmarket::identity::tokens::AccessTokens;
use hexmarket::payments::webhook::sign;
use hexmarket::payments::{
    OutcomeKind, Payment, PaymentProvider, PaymentStatus, Payments, ProviderName, StripeProvider,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{assert_problem, client, free_port};

pub(crate) const WEBHOOK_SECRET: &str = "whsec_hexmarket_test_secret";
const JWT_SECRET: &str = "payments-test-jwt-secret-0123456789abcdef";

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse::<Currency>().unwrap())
}

/// A node whose payments the test reaches directly.
struct PayApp {
    address: String,
    clock: Clock,
    payments: Payments,
    identity: hexmarket::identity::Identity,
    client: reqwest::Client,
    handle: hexmarket::app::NodeHandle,
    _data_dir: TempDir,
}

impl PayApp {
    /// A node with Stripe pointed at `stripe_base` (when given).
    async fn spawn(stripe_base: Option<&str>) -> PayApp {
        let data_dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::for_data_dir(data_dir.path());
        settings.workers = 2;
        settings.actor_threads = 2;
        settings.secure_cookies = false;
        settings.jwt_secret = Some(JWT_SECRET.to_owned());
        settings.stripe = stripe_base.map(|base| StripeSettings {
            api_base: base.to_owned(),
            secret_key: "sk_test_hexmarket".to_owned(),
            webhook_secret: WEBHOOK_SECRET.to_owned(),
        });
        let clock = Clock::default();
        let app = Application::build_with_clock(settings, clock.clone())
            .await
            .unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        let payments = app.payments();
        let identity = app.identity();
        actix_web::rt::spawn(app.run_until_stopped());
        PayApp {
            address,
            clock,
            payments,
            identity,
            client: client(),
            handle,
            _data_dir: data_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A real administrator's token, logged in with a code from their authenticator.
    async fn admin_token(&self) -> String {
        crate::helpers::admin_login(&self.identity, &self.clock, &self.address)
            .await
            .0
    }

    fn token(&self, user: UserId, role: Role) -> String {
        let now = self.clock.now();
        AccessTokens::new(JWT_SECRET.as_bytes())
            .issue(user, role, now, Some(now), now)
            .unwrap()
    }

    /// Counts the outcomes the payments service reports.
    fn count_outcomes(&self) -> Arc<Mutex<Vec<OutcomeKind>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        self.payments.set_listener(Arc::new(move |outcome| {
            let sink = Arc::clone(&sink);
            Box::pin(async move {
                sink.lock().push(outcome.kind);
            })
        }));
        seen
    }

    async fn post_webhook(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/api/v1/payments/stripe/webhook"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        request.send().await.unwrap()
    }

    async fn simulate(&self, payment: &Payment, token: &str, outcome: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/payments/{}/simulate", payment.id)))
            .bearer_auth(token)
            .json(&json!({ "outcome": outcome }))
            .send()
            .await
            .unwrap()
    }

    async fn get_payment(&self, payment: &Payment, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/payments/{}", payment.id)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn status(&self, payment: &Payment) -> PaymentStatus {
        self.payments.get(payment.id).await.unwrap().unwrap().status
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

pub(crate) fn event(id: &str, kind: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "object": "event",
        "type": kind,
        "data": { "object": object },
    }))
    .unwrap()
}

/// One request the fake saw: path, `Idempotency-Key`, form body.
type Request = (String, Option<String>, String);
type Recorded = Arc<Mutex<Vec<Request>>>;

/// A loopback stand-in for Stripe's API: intents and refunds keyed by `Idempotency-Key`, the
/// way Stripe replays the first answer to a repeated key.
pub(crate) struct FakeStripe {
    pub(crate) base: String,
    requests: Recorded,
    handle: ServerHandle,
}

#[derive(Default)]
struct FakeState {
    requests: Recorded,
    answers: Mutex<HashMap<String, Value>>,
    counter: AtomicUsize,
}

async fn fake_endpoint(
    state: web::Data<FakeState>,
    request: HttpRequest,
    body: String,
) -> HttpResponse {
    let path = request.path().to_owned();
    let key = request
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state
        .requests
        .lock()
        .push((path.clone(), key.clone(), body.clone()));
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    let fresh = match path.as_str() {
        "/v1/payment_intents" => json!({
            "id": format!("pi_fake_{n}"),
            "object": "payment_intent",
            "client_secret": format!("pi_fake_{n}_secret_abc"),
            "status": "requires_payment_method",
        }),
        "/v1/refunds" => {
            json!({ "id": format!("re_fake_{n}"), "object": "refund", "status": "succeeded" })
        }
        // Stripe Connect: a transfer needs a connected account to go to.
        "/v1/transfers" if !body.contains("destination=acct_") => {
            return HttpResponse::BadRequest().json(json!({"error": {
                "type": "invalid_request_error", "message": "No such destination"}}));
        }
        "/v1/transfers" => json!({ "id": format!("tr_fake_{n}"), "object": "transfer" }),
        _ => return HttpResponse::NotFound().finish(),
    };
    let answer = match key {
        Some(key) => state
            .answers
            .lock()
            .entry(format!("{path}:{key}"))
            .or_insert(fresh)
            .clone(),
        None => fresh,
    };
    HttpResponse::Ok().json(answer)
}

impl FakeStripe {
    pub(crate) fn start() -> FakeStripe {
        let state = web::Data::new(FakeState::default());
        let requests = Arc::clone(&state.requests);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(fake_endpoint))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeStripe {
            base: format!("http://127.0.0.1:{port}"),
            requests,
            handle,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().clone()
    }
}

#[actix_web::test]
async fn webhooks_with_a_flipped_byte_or_a_timestamp_301_seconds_off_are_refused() {
    // Arrange
    let fake = FakeStripe::start();
    let app = PayApp::spawn(Some(&fake.base)).await;
    let outcomes = app.count_outcomes();
    let payment = app
        .payments
        .create(
            CheckoutId::new(),
            UserId::new(),
            eur(1250),
            ProviderName::Stripe,
        )
        .await
        .unwrap();
    let body = event(
        "evt_sig_1",
        "payment_intent.succeeded",
        json!({ "id": payment.provider_ref, "object": "payment_intent" }),
    );
    let mut flipped = body.clone();
    flipped[20] ^= 0x01;

    // Act + Assert: every forgery is refused and changes nothing. Each signature is made at
    // the start of a second, so the server reads the same second (301 s off stays 301 s off).
    for (label, payload, secret, offset) in [
        ("flipped byte", &flipped, Some(WEBHOOK_SECRET), 0),
        ("now - 301 s", &body, Some(WEBHOOK_SECRET), -301),
        ("now + 301 s", &body, Some(WEBHOOK_SECRET), 301),
        ("other secret", &body, Some("whsec_other"), 0),
        ("no header", &body, None, 0),
    ] {
        let into_second = app.clock.now().timestamp_subsec_millis();
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(
            1_005 - into_second.min(1_000),
        )))
        .await;
        let now = app.clock.now().timestamp();
        let signature = secret.map(|secret| sign(secret, now + offset, &body));
        let response = app.post_webhook(payload, signature.as_deref()).await;
        assert_eq!(response.status().as_u16(), 400, "{label}");
        assert_problem(response, 400, "invalid_signature").await;
    }
    assert_eq!(app.status(&payment).await, PaymentStatus::Pending);
    assert!(outcomes.lock().is_empty());

    // The genuine event applies.
    let now = app.clock.now().timestamp();
    let good = sign(WEBHOOK_SECRET, now, &body);
    let response = app.post_webhook(&body, Some(&good)).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["result"], "applied");
    assert_eq!(app.status(&payment).await, PaymentStatus::Succeeded);

    // A partial refund reported by Stripe.
    let refund = event(
        "evt_sig_2",
        "charge.refunded",
        json!({ "id": "ch_1", "object": "charge", "payment_intent": payment.provider_ref, "amount_refunded": 250 }),
    );
    let response = app
        .post_webhook(&refund, Some(&sign(WEBHOOK_SECRET, now, &refund)))
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let refunded = app.payments.get(payment.id).await.unwrap().unwrap();
    assert_eq!(refunded.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(refunded.refunded_minor, 250);

    // Event types hexmarket does not act on are acknowledged.
    let other = event("evt_sig_3", "customer.created", json!({ "id": "cus_1" }));
    let response = app
        .post_webhook(&other, Some(&sign(WEBHOOK_SECRET, now, &other)))
        .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["result"], "ignored");

    assert_eq!(
        *outcomes.lock(),
        vec![
            OutcomeKind::Paid,
            OutcomeKind::Refunded {
                refunded_minor: 250,
                full: false
            }
        ]
    );
    app.stop().await;
    fake.handle.stop(true).await;
}

#[actix_web::test]
async fn the_same_event_posted_ten_times_concurrently_applies_once() {
    // Arrange
    let fake = FakeStripe::start();
    let app = PayApp::spawn(Some(&fake.base)).await;
    let outcomes = app.count_outcomes();
    let payment = app
        .payments
        .create(
            CheckoutId::new(),
            UserId::new(),
            eur(990),
            ProviderName::Stripe,
        )
        .await
        .unwrap();
    let body = event(
        "evt_dup_1",
        "payment_intent.succeeded",
        json!({ "id": payment.provider_ref }),
    );
    let signature = sign(WEBHOOK_SECRET, app.clock.now().timestamp(), &body);

    // Act
    let responses = join_all((0..10).map(|_| app.post_webhook(&body, Some(&signature)))).await;

    // Assert
    let mut results = Vec::new();
    for response in responses {
        assert_eq!(response.status().as_u16(), 200);
        results.push(response.json::<Value>().await.unwrap()["result"].clone());
    }
    assert_eq!(
        results.iter().filter(|r| *r == "applied").count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| *r == "duplicate").count(),
        9,
        "{results:?}"
    );
    assert_eq!(*outcomes.lock(), vec![OutcomeKind::Paid]);
    let stored = app.payments.get(payment.id).await.unwrap().unwrap();
    assert_eq!(stored.status, PaymentStatus::Succeeded);
    // Created, then moved once.
    assert!(stored.updated_at > stored.created_at);
    app.stop().await;
    fake.handle.stop(true).await;
}

#[actix_web::test]
async fn the_payer_simulates_failure_then_success_and_nobody_else_can() {
    // Arrange
    let app = PayApp::spawn(None).await;
    let outcomes = app.count_outcomes();
    let payer = UserId::new();
    let payment = app
        .payments
        .create(CheckoutId::new(), payer, eur(500), ProviderName::Simulated)
        .await
        .unwrap();
    assert!(payment.provider_ref.starts_with("sim_pi_"));
    let payer_token = app.token(payer, Role::Customer);
    let stranger_token = app.token(UserId::new(), Role::Customer);
    let admin_token = app.admin_token().await;

    // Act + Assert: strangers learn nothing.
    assert_problem(
        app.simulate(&payment, &stranger_token, "succeed").await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get_payment(&payment, &stranger_token).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.simulate(&payment, &admin_token, "succeed").await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(app.status(&payment).await, PaymentStatus::Pending);

    let failed = app.simulate(&payment, &payer_token, "fail").await;
    assert_eq!(failed.status().as_u16(), 200);
    let failed: Value = failed.json().await.unwrap();
    assert_eq!(failed["changed"], true);
    assert_eq!(failed["payment"]["status"], "failed");
    assert_eq!(failed["payment"]["provider"], "simulated");

    let paid: Value = app
        .simulate(&payment, &payer_token, "succeed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paid["payment"]["status"], "succeeded");

    // A late failure changes nothing.
    let late: Value = app
        .simulate(&payment, &payer_token, "fail")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(late["changed"], false);
    assert_eq!(late["payment"]["status"], "succeeded");

    // The payer and admins can read it.
    for token in [&payer_token, &admin_token] {
        let response = app.get_payment(&payment, token).await;
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "succeeded");
        assert_eq!(body["provider"], "simulated");
        assert_eq!(body["amount"]["amount_minor"], 500);
    }
    // The late failure moved nothing, but told the listener the outcome again (a retry heals
    // orders whose first notice was lost; listeners are idempotent).
    assert_eq!(
        *outcomes.lock(),
        vec![
            OutcomeKind::PaymentFailed,
            OutcomeKind::Paid,
            OutcomeKind::Paid
        ]
    );

    // A simulated refund goes through the same path, once per idempotency key.
    app.payments
        .refund(payment.id, 200, "refund-1")
        .await
        .unwrap();
    app.payments
        .refund(payment.id, 200, "refund-1")
        .await
        .unwrap();
    let refunded = app.payments.get(payment.id).await.unwrap().unwrap();
    assert_eq!(refunded.refunded_minor, 200);
    assert_eq!(refunded.status, PaymentStatus::PartiallyRefunded);
    app.payments
        .refund(payment.id, 300, "refund-2")
        .await
        .unwrap();
    assert_eq!(app.status(&payment).await, PaymentStatus::Refunded);
    app.stop().await;
}

#[actix_web::test]
async fn simulate_is_refused_for_a_stripe_payment() {
    // Arrange
    let fake = FakeStripe::start();
    let app = PayApp::spawn(Some(&fake.base)).await;
    let payer = UserId::new();
    let payment = app
        .payments
        .create(CheckoutId::new(), payer, eur(700), ProviderName::Stripe)
        .await
        .unwrap();
    let token = app.token(payer, Role::Customer);

    // Act
    let response = app.simulate(&payment, &token, "succeed").await;

    // Assert
    assert_problem(response, 409, "not_simulated").await;
    assert_eq!(app.status(&payment).await, PaymentStatus::Pending);
    // The payer sees the client secret; an admin does not.
    let body: Value = app
        .get_payment(&payment, &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["provider"], "stripe");
    assert!(body["client_secret"].as_str().unwrap().contains("_secret_"));
    let admin = app.admin_token().await;
    let body: Value = app
        .get_payment(&payment, &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("client_secret").is_none());
    app.stop().await;
    fake.handle.stop(true).await;
}

#[actix_web::test]
async fn stripe_intents_and_refunds_carry_idempotency_keys() {
    // Arrange
    let fake = FakeStripe::start();
    let app = PayApp::spawn(Some(&fake.base)).await;
    let checkout = CheckoutId::new();
    let payer = UserId::new();

    // Act: the same checkout twice through the service, then once more at the provider.
    let first = app
        .payments
        .create(checkout, payer, eur(1999), ProviderName::Stripe)
        .await
        .unwrap();
    let second = app
        .payments
        .create(checkout, payer, eur(1999), ProviderName::Stripe)
        .await
        .unwrap();
    let provider = StripeProvider::new(&StripeSettings {
        api_base: fake.base.clone(),
        secret_key: "sk_test_hexmarket".to_owned(),
        webhook_secret: WEBHOOK_SECRET.to_owned(),
    })
    .unwrap();
    let again = provider
        .create_intent(checkout, eur(1999), payer)
        .await
        .unwrap();
    let refund = provider
        .refund(&first.provider_ref, 500, "refund-key-1")
        .await
        .unwrap();
    let refund_again = provider
        .refund(&first.provider_ref, 500, "refund-key-1")
        .await
        .unwrap();

    // Assert
    assert_eq!(first, second);
    assert_eq!(again.provider_ref, first.provider_ref);
    assert_eq!(refund, refund_again);
    let requests = fake.requests();
    let intents: Vec<_> = requests
        .iter()
        .filter(|(path, _, _)| path == "/v1/payment_intents")
        .collect();
    assert_eq!(
        intents.len(),
        2,
        "the second create reused the stored payment"
    );
    for (_, key, form) in &intents {
        assert_eq!(key.as_deref(), Some(checkout.to_string().as_str()));
        assert!(form.contains("amount=1999"), "{form}");
        assert!(form.contains("currency=eur"), "{form}");
    }
    let refunds: Vec<_> = requests
        .iter()
        .filter(|(path, _, _)| path == "/v1/refunds")
        .collect();
    assert_eq!(refunds.len(), 2);
    for (_, key, form) in &refunds {
        assert_eq!(key.as_deref(), Some("refund-key-1"));
        assert!(form.contains("amount=500"), "{form}");
    }
    // A different amount for the same checkout is refused, not silently reused.
    assert!(
        app.payments
            .create(checkout, payer, eur(2500), ProviderName::Stripe)
            .await
            .is_err()
    );
    app.stop().await;
    fake.handle.stop(true).await;
}

#[actix_web::test]
async fn a_payout_is_one_stripe_transfer_per_payout_id_to_the_connected_account() {
    // Arrange
    let fake = FakeStripe::start();
    let provider = StripeProvider::new(&StripeSettings {
        api_base: fake.base.clone(),
        secret_key: "sk_test_hexmarket".to_owned(),
        webhook_secret: WEBHOOK_SECRET.to_owned(),
    })
    .unwrap();

    // Act: the same payout asked twice (a crash between the request and its answer), then
    // one to an account Stripe does not know, then one without an account.
    let first = provider
        .transfer(Some("acct_1Store"), eur(2610), "payout-1")
        .await
        .unwrap();
    let again = provider
        .transfer(Some("acct_1Store"), eur(2610), "payout-1")
        .await
        .unwrap();
    let unknown = provider
        .transfer(Some("ba_not_an_account"), eur(100), "payout-2")
        .await;
    let nowhere = provider.transfer(None, eur(100), "payout-3").await;

    // Assert: one transfer, keyed and grouped by the payout; refusals are refusals.
    assert_eq!(first, again);
    assert!(first.provider_ref.starts_with("tr_"), "{first:?}");
    assert!(matches!(
        unknown,
        Err(hexmarket::payments::ProviderError::Rejected(_))
    ));
    assert!(matches!(
        nowhere,
        Err(hexmarket::payments::ProviderError::Rejected(_))
    ));
    let transfers: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|(path, _, _)| path == "/v1/transfers")
        .collect();
    assert_eq!(transfers.len(), 3, "{transfers:?}");
    for (_, key, form) in &transfers[..2] {
        assert_eq!(key.as_deref(), Some("payout-1"));
        for field in [
            "amount=2610",
            "currency=eur",
            "destination=acct_1Store",
            "transfer_group=payout-1",
        ] {
            assert!(form.contains(field), "{field} in {form}");
        }
    }
    fake.handle.stop(true).await;
}

/// localstripe on a loopback port, stopped on drop.
struct LocalStripe {
    child: Child,
    base: String,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalStripe {
    /// Starts localstripe, or `None` (with a notice) when it is not installed.
    async fn start() -> Option<LocalStripe> {
        let installed = Command::new("python3")
            .args(["-c", "import localstripe"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            println!(
                "NOTICE: localstripe is not installed (python3 -m pip install localstripe); skipping"
            );
            return None;
        }
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "localstripe",
                "--port",
                &port.to_string(),
                "--from-scratch",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = LocalStripe {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "localstripe did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(server)
    }

    /// Pays the intent with localstripe's test card, as Stripe.js would in the browser.
    async fn confirm_with_test_card(&self, intent: &str) {
        let http = client();
        let method: Value = http
            .post(format!("{}/v1/payment_methods", self.base))
            .basic_auth("sk_test_hexmarket", Some(""))
            .form(&[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2040"),
                ("card[cvc]", "123"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let method = method["id"].as_str().unwrap();
        // localstripe takes the method as an update, then a bare confirm.
        http.post(format!("{}/v1/payment_intents/{intent}", self.base))
            .basic_auth("sk_test_hexmarket", Some(""))
            .form(&[("payment_method", method)])
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        let confirmed: Value = http
            .post(format!("{}/v1/payment_intents/{intent}/confirm", self.base))
            .basic_auth("sk_test_hexmarket", Some(""))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    }
}

#[actix_web::test]
async fn the_stripe_provider_creates_and_refunds_intents_on_localstripe() {
    let Some(localstripe) = LocalStripe::start().await else {
        return;
    };
    // Arrange
    let app = PayApp::spawn(Some(&localstripe.base)).await;
    let payer = UserId::new();
    let checkout = CheckoutId::new();

    // Act
    let payment = app
        .payments
        .create(checkout, payer, eur(4200), ProviderName::Stripe)
        .await
        .unwrap();
    let again = app
        .payments
        .create(checkout, payer, eur(4200), ProviderName::Stripe)
        .await
        .unwrap();

    // Assert: a real PaymentIntent with a client secret for the browser.
    assert_eq!(payment, again);
    assert!(
        payment.provider_ref.starts_with("pi_"),
        "{}",
        payment.provider_ref
    );
    assert!(
        payment
            .client_secret
            .as_deref()
            .is_some_and(|s| s.starts_with(&payment.provider_ref))
    );
    let intent: Value = client()
        .get(format!(
            "{}/v1/payment_intents/{}",
            localstripe.base, payment.provider_ref
        ))
        .basic_auth("sk_test_hexmarket", Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intent["amount"], 4200);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["metadata"]["checkout_id"], checkout.to_string());

    // The browser pays; Stripe's webhook reports it (signed here as Stripe would).
    localstripe
        .confirm_with_test_card(&payment.provider_ref)
        .await;
    let body = event(
        "evt_local_1",
        "payment_intent.succeeded",
        json!({ "id": payment.provider_ref }),
    );
    let response = app
        .post_webhook(
            &body,
            Some(&sign(WEBHOOK_SECRET, app.clock.now().timestamp(), &body)),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.status(&payment).await, PaymentStatus::Succeeded);

    // A partial refund at localstripe.
    let refund = app
        .payments
        .refund(payment.id, 1200, "refund-local-1")
        .await
        .unwrap();
    assert!(
        refund.provider_ref.starts_with("re_"),
        "{}",
        refund.provider_ref
    );
    let listed: Value = client()
        .get(format!(
            "{}/v1/refunds/{}",
            localstripe.base, refund.provider_ref
        ))
        .basic_auth("sk_test_hexmarket", Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["amount"], 1200);
    app.stop().await;
}
