//! An administrator made with the real binary's `create-admin`, then only the public HTTP API
//! of the real server: the admin logs in with a code from the printed otpauth URI, steps up,
//! creates a category, bans a customer and refunds a customer's paid order.

use std::process::Stdio;
use std::time::Duration;

use hexmarket::clock::Clock;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{Authenticator, client, free_port, wait_healthy};

const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "the operator's long passphrase";
const PASSWORD: &str = "a customer's long passphrase";

/// The real binary on the data directory `dir`, serving (when it serves) on `port`, logging
/// warnings only, killed when dropped.
pub(crate) fn hexmarket(dir: &std::path::Path, port: u16) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hexmarket"));
    command
        .env_clear()
        .env("HEXMARKET_DATA_DIR", dir)
        .env("HEXMARKET_LISTEN", format!("127.0.0.1:{port}"))
        .env("HEXMARKET_LOG", "warn")
        .kill_on_drop(true);
    command
}

/// Runs `create-admin` on the data directory `dir` with the password on standard input;
/// returns its standard output.
pub(crate) async fn create_admin(dir: &std::path::Path, email: &str, password: &str) -> String {
    let mut child = hexmarket(dir, 0)
        .args(["create-admin", "--email", email, "--name", "Operator"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("create-admin starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "create-admin failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The otpauth URI `create-admin` printed.
pub(crate) fn printed_uri(printed: &str) -> &str {
    printed
        .split_whitespace()
        .find(|word| word.starts_with("otpauth://totp/"))
        .expect("the otpauth URI is printed")
}

/// A small client of the public API.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body), None)
            .await
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None, None)
            .await
    }

    /// Registers and logs in a user of `role`; returns (id, access, refresh).
    pub(crate) async fn signed_up(&self, email: &str, role: &str) -> (String, String, String) {
        let (status, created) = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "password": PASSWORD, "name": role, "role": role}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let (status, tokens) = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 200, "{tokens}");
        (
            created["id"].as_str().unwrap().to_owned(),
            tokens["access_token"].as_str().unwrap().to_owned(),
            tokens["refresh_token"].as_str().unwrap().to_owned(),
        )
    }
}

#[actix_web::test]
async fn an_admin_from_the_cli_bans_a_customer_and_refunds_an_order_through_the_api_alone() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    // The CLI prints the otpauth URI and ten recovery codes once.
    let printed = create_admin(dir.path(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let uri = printed_uri(&printed);
    assert!(
        uri.starts_with(&format!("otpauth://totp/hexmarket:{ADMIN_EMAIL}?secret=")),
        "{uri}"
    );
    assert!(uri.contains("&issuer=hexmarket"));
    let recovery: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .collect();
    assert_eq!(recovery.len(), 10, "{printed}");
    let authenticator = Authenticator::new(uri, Clock::default());

    let mut server = hexmarket(dir.path(), port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: client(),
    };
    wait_healthy(&api.base, Duration::from_secs(30)).await;

    // The admin logs in: the password alone is not enough.
    let login = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    let (status, problem) = api.post("/api/v1/auth/login", None, login.clone()).await;
    assert_eq!(
        (status, &problem["code"]),
        (401, &json!("second_factor_required"))
    );
    let mut with_code = login.clone();
    with_code["otp"] = json!(authenticator.code());
    let (status, tokens) = api.post("/api/v1/auth/login", None, with_code).await;
    assert_eq!(status, 200, "{tokens}");
    let admin = tokens["access_token"].as_str().unwrap().to_owned();
    // And steps up explicitly with the next code, as a client would before a sensitive act.
    let (status, stepped) = api
        .post(
            "/api/v1/auth/step-up",
            Some(&admin),
            json!({"otp": authenticator.code()}),
        )
        .await;
    assert_eq!(status, 200, "{stepped}");
    let admin = stepped["access_token"].as_str().unwrap().to_owned();

    // A shop: the admin makes the category, a vendor opens a store and stocks a product.
    let (status, category) = api
        .post(
            "/api/v1/admin/categories",
            Some(&admin),
            json!({"name": "Shoes"}),
        )
        .await;
    assert_eq!(status, 201, "{category}");
    let (_, vendor, _) = api.signed_up("vendor@example.com", "vendor").await;
    let (status, store) = api
        .post(
            "/api/v1/vendors",
            Some(&vendor),
            json!({"name": "Sneaker Shop", "pickup_address": "Alexanderplatz 1",
                   "location": {"lat": 52.52, "lng": 13.405}, "delivery_radius_km": 10.0}),
        )
        .await;
    assert_eq!(status, 201, "{store}");
    let (status, product) = api
        .post(
            "/api/v1/products",
            Some(&vendor),
            json!({"title": "Runner", "category_id": category["id"],
                   "price": {"amount_minor": 4_900, "currency": "EUR"}, "visibility": "published"}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let product_id = product["id"].as_str().unwrap();
    let (status, stocked) = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/products/{product_id}/inventory"),
            Some(&vendor),
            Some(json!({"stock": 3, "reason": "delivery"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{stocked}");

    // A customer buys and pays.
    let (customer_id, customer, customer_refresh) =
        api.signed_up("buyer@example.com", "customer").await;
    let (status, cart) = api
        .post(
            "/api/v1/cart/items",
            Some(&customer),
            json!({"product_id": product_id, "quantity": 1}),
        )
        .await;
    assert_eq!(status, 200, "{cart}");
    let (status, checkout) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/checkout",
            Some(&customer),
            Some(json!({
                "delivery_address": {"text": "Torstraße 1, Berlin", "lat": 52.53, "lng": 13.40},
                "payment_method": "simulated",
            })),
            Some("buyer-checkout-1"),
        )
        .await;
    assert_eq!(status, 201, "{checkout}");
    let order_id = checkout["orders"][0]["id"].as_str().unwrap().to_owned();
    let payment_id = checkout["payment"]["id"].as_str().unwrap().to_owned();
    let (status, paid) = api
        .post(
            &format!("/api/v1/payments/{payment_id}/simulate"),
            Some(&customer),
            json!({"outcome": "succeed"}),
        )
        .await;
    assert_eq!(status, 200, "{paid}");
    let mut order = Value::Null;
    for _ in 0..100 {
        order = api
            .get(&format!("/api/v1/orders/{order_id}"), &customer)
            .await
            .1;
        if order["status"] == "paid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(order["status"], "paid", "{order}");

    // The admin refunds the whole order (the step-up is still fresh).
    let (status, refunded) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/admin/orders/{order_id}/refund"),
            Some(&admin),
            Some(json!({})),
            Some("refund-1"),
        )
        .await;
    assert_eq!(status, 200, "{refunded}");
    let (_, payment) = api
        .get(&format!("/api/v1/payments/{payment_id}"), &customer)
        .await;
    assert_eq!(payment["status"], "refunded", "{payment}");
    assert_eq!(payment["refunded_minor"], payment["amount"]["amount_minor"]);

    // The admin bans the customer: the session ends and logins are refused.
    let (status, banned) = api
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/admin/users/{customer_id}"),
            Some(&admin),
            Some(json!({"banned": true})),
            None,
        )
        .await;
    assert_eq!((status, &banned["banned"]), (200, &json!(true)), "{banned}");
    let (status, _) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": customer_refresh}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, problem) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "buyer@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!((status, &problem["code"]), (403, &json!("account_banned")));

    server.kill().await.expect("server killed");
}
