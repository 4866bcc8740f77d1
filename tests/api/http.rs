//! The HTTP service: operations endpoints, request ids, problem details, the guest cart, and
//! durability across restarts and `kill -9`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    assert_problem, client, free_port, spawn_app, spawn_app_with, spawn_in, wait_healthy,
};

/// A product listed by a fresh store, for cart tests.
async fn product(app: &crate::helpers::TestApp) -> String {
    let (vendor, _) =
        crate::fixtures::seed_vendor(app, "Cart Test Shop", crate::fixtures::berlin(0.0, 0.0))
            .await;
    let product = crate::fixtures::seed_product(
        app,
        &vendor,
        hexmarket::domain::ids::CategoryId::new(),
        "Test product",
        250,
    )
    .await;
    product.id.to_string()
}

#[actix_web::test]
async fn health_ready_metrics_openapi_and_docs_answer() {
    let app = spawn_app().await;

    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");

    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"][0]["name"], "store");
    assert_eq!(ready["checks"][0]["backend"], "embedded");
    assert_eq!(ready["checks"][0]["status"], "ok");

    let openapi = app.get("/api/v1/openapi.json").await;
    assert_eq!(openapi.status(), 200);
    let openapi: Value = openapi.json().await.unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(openapi["paths"]["/api/v1/cart/items"]["post"].is_object());
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/phone/otp",
        "/api/v1/auth/phone/verify",
        "/api/v1/auth/password/reset",
        "/api/v1/me",
        "/api/v1/admin/users",
        "/api/v1/vendors",
        "/api/v1/vendors/{id}",
        "/api/v1/categories",
        "/api/v1/admin/categories/{id}",
        "/api/v1/products",
        "/api/v1/products/{id}",
        "/api/v1/products/featured",
        "/api/v1/products/{id}/images",
        "/api/v1/products/{id}/inventory",
        "/api/v1/products/{id}/reviews",
        "/api/v1/vendors/{id}/reviews",
        "/media/{key}",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} documented");
    }
    for schema in [
        "RegisterRequest",
        "LoginRequest",
        "TokenResponse",
        "OtpRequest",
        "PatchMe",
    ] {
        let s = &openapi["components"]["schemas"][schema];
        let example = s.get("example").or_else(|| s.get("examples"));
        assert!(
            example.is_some()
                || s["properties"].as_object().is_some_and(|p| p
                    .values()
                    .any(|v| v.get("example").is_some() || v.get("examples").is_some())),
            "{schema} has an example: {s}"
        );
    }
    assert_eq!(
        openapi["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("<html"));

    let p = product(&app).await;
    app.add_to_cart(None, json!({"product_id": p, "quantity": 1}))
        .await;
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"hexmarket_http_requests_total{method="GET",route="/health",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("hexmarket_http_request_duration_seconds_bucket"));
    assert!(
        text.contains(r#"hexmarket_live_actors{kind="cart"} 1"#),
        "{text}"
    );
    assert!(text.contains("hexmarket_ws_sessions 0"));
}

#[actix_web::test]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let app = spawn_app().await;
    let given = app
        .client
        .get(app.url("/health"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-123");

    let generated = app.get("/health").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let forged = app
        .client
        .get(app.url("/health"))
        .header("X-Request-Id", "a b\tc")
        .send()
        .await
        .unwrap();
    assert_ne!(forged.headers()["x-request-id"], "a b\tc");
}

#[actix_web::test]
async fn a_guest_cart_is_created_changed_and_cleared_through_its_token() {
    let app = spawn_app().await;
    let (p1, p2) = (product(&app).await, product(&app).await);

    let empty: Value = app.get("/api/v1/cart").await.json().await.unwrap();
    assert_eq!(empty["lines"], json!([]));
    assert_eq!(empty["cart_token"], Value::Null);

    let created = app
        .add_to_cart(None, json!({"product_id": p1, "quantity": 2}))
        .await;
    assert_eq!(created.status(), 200);
    let header_token = created.headers()["x-cart-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let created: Value = created.json().await.unwrap();
    let token = created["cart_token"].as_str().unwrap().to_owned();
    assert_eq!(token, header_token);

    let added = app
        .add_to_cart(Some(&token), json!({"product_id": p2, "quantity": 1}))
        .await;
    assert_eq!(added.json::<Value>().await.unwrap()["item_count"], 3);

    let patched = app
        .client
        .patch(app.url(&format!("/api/v1/cart/items/{p1}")))
        .header("X-Cart-Token", &token)
        .json(&json!({"quantity": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    let removed = app
        .client
        .delete(app.url(&format!("/api/v1/cart/items/{p2}")))
        .header("X-Cart-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);

    let cart: Value = app.get_cart(&token).await.json().await.unwrap();
    assert_eq!(cart["lines"].as_array().unwrap().len(), 1);
    assert_eq!(cart["lines"][0]["product_id"], p1.as_str());
    assert_eq!(cart["lines"][0]["quantity"], 5);
    assert_eq!(cart["lines"][0]["unit_price"]["amount_minor"], 250);
    assert_eq!(cart["lines"][0]["line_total"]["amount_minor"], 1250);

    let missing = app
        .client
        .delete(app.url(&format!("/api/v1/cart/items/{p2}")))
        .header("X-Cart-Token", &token)
        .send()
        .await
        .unwrap();
    assert_problem(missing, 404, "not_found").await;

    let cleared = app
        .client
        .delete(app.url("/api/v1/cart"))
        .header("X-Cart-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.json::<Value>().await.unwrap()["lines"], json!([]));
}

#[actix_web::test]
async fn a_forged_or_tampered_cart_token_is_refused() {
    let app = spawn_app().await;
    let created: Value = app
        .add_to_cart(
            None,
            json!({"product_id": product(&app).await, "quantity": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = created["cart_token"].as_str().unwrap();

    let other_cart = uuid::Uuid::now_v7().simple().to_string();
    let (_, signature) = token.split_once('.').unwrap();
    let forged = format!("{other_cart}.{signature}");
    assert_problem(app.get_cart(&forged).await, 401, "invalid_cart_token").await;
    assert_problem(app.get_cart("garbage").await, 401, "invalid_cart_token").await;

    let no_token = app
        .client
        .delete(app.url("/api/v1/cart"))
        .send()
        .await
        .unwrap();
    assert_problem(no_token, 401, "cart_token_required").await;
}

#[actix_web::test]
async fn bad_bodies_get_problem_details_and_change_nothing() {
    let app = spawn_app().await;
    let p = product(&app).await;
    let created: Value = app
        .add_to_cart(None, json!({"product_id": p, "quantity": 1}))
        .await
        .json()
        .await
        .unwrap();
    let token = created["cart_token"].as_str().unwrap().to_owned();

    let unknown = app
        .add_to_cart(
            Some(&token),
            json!({"product_id": p, "quantity": 1, "price": 0}),
        )
        .await;
    let body = assert_problem(unknown, 400, "unknown_field").await;
    assert!(body["detail"].as_str().unwrap().contains("price"));

    let malformed = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .header("X-Cart-Token", &token)
        .header("content-type", "application/json")
        .body("{\"product_id\": ")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400, "malformed_json").await;

    let zero = app
        .add_to_cart(Some(&token), json!({"product_id": p, "quantity": 0}))
        .await;
    assert_problem(zero, 422, "validation_failed").await;
    let not_a_uuid = app
        .add_to_cart(Some(&token), json!({"product_id": "x", "quantity": 1}))
        .await;
    assert_problem(not_a_uuid, 422, "validation_failed").await;
    let over_limit = app
        .add_to_cart(Some(&token), json!({"product_id": p, "quantity": 99}))
        .await;
    assert_problem(over_limit, 422, "validation_failed").await;

    let not_json = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .header("X-Cart-Token", &token)
        .header("content-type", "text/plain")
        .body("quantity=1")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, 415, "unsupported_media_type").await;

    let huge = format!(
        r#"{{"product_id": "{p}", "quantity": 1, "pad": "{}"}}"#,
        "x".repeat(1 << 20)
    );
    let too_large = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .header("X-Cart-Token", &token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(too_large, 413, "payload_too_large").await;

    let bad_path = app
        .client
        .delete(app.url("/api/v1/cart/items/not-a-uuid"))
        .header("X-Cart-Token", &token)
        .send()
        .await
        .unwrap();
    assert_problem(bad_path, 400, "invalid_path").await;

    let cart: Value = app.get_cart(&token).await.json().await.unwrap();
    assert_eq!(
        (
            cart["lines"][0]["product_id"].clone(),
            cart["lines"][0]["quantity"].clone(),
            cart["lines"].as_array().map(Vec::len)
        ),
        (json!(p), json!(1), Some(1)),
        "nothing changed"
    );
}

#[actix_web::test]
async fn carts_survive_a_graceful_restart() {
    let app = spawn_app().await;
    let p = product(&app).await;
    let created: Value = app
        .add_to_cart(None, json!({"product_id": p, "quantity": 4}))
        .await
        .json()
        .await
        .unwrap();
    let token = created["cart_token"].as_str().unwrap().to_owned();
    let dir = app.stop().await;

    let app = spawn_in(dir, |_| {}).await;
    let cart: Value = app.get_cart(&token).await.json().await.unwrap();
    assert_eq!(cart["lines"][0]["product_id"], p.as_str());
    assert_eq!(cart["lines"][0]["quantity"], 4);
}

/// Forwards TCP connections from `listener` to `target` until dropped.
pub(crate) async fn proxy(listener: tokio::net::TcpListener, target: &'static str) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[actix_web::test]
async fn readiness_names_redis_as_degraded_when_it_is_down_and_recovers_when_it_returns() {
    let port = free_port();
    let app = spawn_app_with(|s| {
        s.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        s.redis_prefix = format!("test_{}", uuid::Uuid::new_v4().simple());
    })
    .await;

    // Redis down degrades the node but keeps it in the load balancer: every node shares one
    // Redis, and each rides the outage out on its own.
    let down = app.get("/ready").await;
    assert_eq!(down.status(), 200);
    let down: Value = down.json().await.unwrap();
    assert_eq!(down["status"], "degraded");
    let check = |name: &str| {
        down["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_ne!(check("redis")["status"], "ok");
    assert_ne!(check("rate_limiter")["status"], "ok");
    assert_eq!(check("rate_limiter")["backend"], "local");
    assert_eq!(check("store")["status"], "ok");
    assert_eq!(
        app.get("/health").await.status(),
        200,
        "liveness does not depend on Redis"
    );

    // Redis "comes back" on the configured port: a proxy to the real one.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let forwarding = actix_web::rt::spawn(proxy(listener, "127.0.0.1:6379"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: Value = app.get("/ready").await.json().await.unwrap();
        if ready["status"] == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not recover when Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    forwarding.abort();
}

#[actix_web::test]
async fn a_kill_9_during_a_burst_of_writes_loses_no_acknowledged_write() {
    const CLIENTS: usize = 24;
    const MIN_ACKED: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let spawn_server = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hexmarket"))
            .env_clear()
            .env("HEXMARKET_DATA_DIR", dir.path())
            .env("HEXMARKET_LISTEN", format!("127.0.0.1:{port}"))
            .env("HEXMARKET_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("server starts")
    };
    // One listed product to put in the carts, from a one-store demo city.
    let seeded = tokio::process::Command::new(env!("CARGO_BIN_EXE_hexmarket"))
        .env_clear()
        .env("HEXMARKET_DATA_DIR", dir.path())
        .env("HEXMARKET_LOG", "warn")
        .args([
            "seed-demo",
            "--vendors",
            "1",
            "--products",
            "1",
            "--couriers",
            "0",
            "--customers",
            "0",
        ])
        .stdout(Stdio::null())
        .status()
        .await
        .expect("seed-demo runs");
    assert!(seeded.success());
    let mut server = spawn_server();
    wait_healthy(&base, Duration::from_secs(30)).await;
    let listed: Value = client()
        .get(format!("{base}/api/v1/products?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product_id = listed["items"][0]["id"].as_str().unwrap().to_owned();

    // Each client adds one unit at a time, moving to a new cart before the quantity limit, and
    // remembers how many adds were acknowledged per cart.
    let stop_at = Instant::now() + Duration::from_secs(30);
    let acks = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (base, product_id) = (base.clone(), product_id.clone());
            let acks = Arc::clone(&acks);
            actix_web::rt::spawn(async move {
                let http = client();
                let mut acked: HashMap<String, u64> = HashMap::new();
                let mut token: Option<String> = None;
                let mut count = 0u64;
                while Instant::now() < stop_at {
                    let mut request = http
                        .post(format!("{base}/api/v1/cart/items"))
                        .json(&json!({"product_id": product_id, "quantity": 1}));
                    if let Some(t) = &token {
                        request = request.header("X-Cart-Token", t);
                    }
                    let Ok(response) = request.send().await else {
                        break;
                    };
                    if !response.status().is_success() {
                        break;
                    }
                    let Ok(body) = response.json::<Value>().await else {
                        break;
                    };
                    let t = body["cart_token"].as_str().unwrap_or_default().to_owned();
                    count = if token.as_deref() == Some(t.as_str()) {
                        count + 1
                    } else {
                        1
                    };
                    acked.insert(t.clone(), count);
                    acks.fetch_add(1, Ordering::Relaxed);
                    token = (count < 90).then_some(t);
                }
                acked
            })
        })
        .collect();

    // Let the burst run until it has acknowledged a few hundred writes (however slow the
    // machine), then kill the server without warning while the clients keep writing.
    while acks.load(Ordering::Relaxed) < MIN_ACKED && Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.start_kill().expect("SIGKILL sent");
    server.wait().await.expect("server exited");
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    let total: u64 = acknowledged.values().sum();
    assert!(
        total >= MIN_ACKED,
        "the burst acknowledged only {total} writes in 30 s"
    );

    let mut server = spawn_server();
    wait_healthy(&base, Duration::from_secs(30)).await;
    let http = client();
    for (token, acked) in &acknowledged {
        let cart: Value = http
            .get(format!("{base}/api/v1/cart"))
            .header("X-Cart-Token", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored = cart["lines"][0]["quantity"].as_u64().unwrap_or(0);
        // At most one unacknowledged add per client was in flight when the server died.
        assert!(
            stored == *acked || stored == acked + 1,
            "cart has {stored}, {acked} acknowledged"
        );
    }
    println!(
        "{total} acknowledged writes in {} carts survived kill -9",
        acknowledged.len()
    );
    server.start_kill().ok();
    server.wait().await.ok();
}

#[actix_web::test]
async fn a_bad_setting_stops_the_binary_with_one_line_naming_it() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hexmarket"))
        .env_clear()
        .env("HEXMARKET_LISTEN", "not-an-address")
        .output()
        .await
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HEXMARKET_LISTEN"), "{stderr}");
}

#[actix_web::test]
async fn customers_have_their_own_cart_with_subtotals_per_store_and_merge_a_guest_cart() {
    use hexmarket::domain::identity::Role;
    let app = spawn_app().await;
    let (shop_a, _) =
        crate::fixtures::seed_vendor(&app, "Shop A", crate::fixtures::berlin(0.0, 0.0)).await;
    let (shop_b, _) =
        crate::fixtures::seed_vendor(&app, "Shop B", crate::fixtures::berlin(0.01, 0.0)).await;
    let category = hexmarket::domain::ids::CategoryId::new();
    let bread = crate::fixtures::seed_product(&app, &shop_a, category, "Bread", 300).await;
    let jam = crate::fixtures::seed_product(&app, &shop_a, category, "Jam", 450).await;
    let tea = crate::fixtures::seed_product(&app, &shop_b, category, "Tea", 500).await;
    let (_, customer) = crate::fixtures::user_token(&app, Role::Customer);
    let add = |body: Value| {
        let request = app
            .client
            .post(app.url("/api/v1/cart/items"))
            .bearer_auth(&customer)
            .json(&body);
        async move { request.send().await.unwrap() }
    };

    // Unknown and unlisted products are refused and change nothing.
    assert_problem(
        add(json!({"product_id": uuid::Uuid::now_v7(), "quantity": 1})).await,
        422,
        "product_unavailable",
    )
    .await;
    for quantity in [0, 100] {
        let response = add(json!({"product_id": bread.id, "quantity": quantity})).await;
        assert_problem(response, 422, "validation_failed").await;
    }

    add(json!({"product_id": bread.id, "quantity": 2})).await;
    add(json!({"product_id": jam.id, "quantity": 1})).await;
    let cart: Value = add(json!({"product_id": tea.id, "quantity": 3}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        cart["cart_token"],
        Value::Null,
        "a customer's cart needs no token"
    );
    assert_eq!(cart["item_count"], 6);
    // No stock yet: shown, but not purchasable, and not in the totals.
    assert_eq!(cart["lines"][0]["purchasable"], false);
    assert_eq!(cart["totals"], json!([]));

    // With stock, subtotals per store and a total.
    for (product, stock) in [(&bread, 10), (&jam, 10), (&tea, 10)] {
        app.catalog
            .inventory
            .adjust(
                product.id,
                hexmarket::domain::inventory::StockChange::Set(stock),
                "delivery".into(),
                hexmarket::domain::ids::UserId::new(),
            )
            .await
            .unwrap();
    }
    let cart: Value = app
        .get_authed("/api/v1/cart", &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        cart["vendors"],
        json!([
            {"vendor_id": shop_a.id, "vendor_name": "Shop A", "subtotal": {"amount_minor": 1050, "currency": "EUR"}, "item_count": 3},
            {"vendor_id": shop_b.id, "vendor_name": "Shop B", "subtotal": {"amount_minor": 1500, "currency": "EUR"}, "item_count": 3},
        ])
    );
    assert_eq!(
        cart["totals"],
        json!([{"amount_minor": 2550, "currency": "EUR"}])
    );

    // Another customer sees their own, empty cart.
    let (_, other) = crate::fixtures::user_token(&app, Role::Customer);
    let theirs: Value = app
        .get_authed("/api/v1/cart", &other)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["item_count"], 0);

    // A guest cart merges into the customer's on login, and is emptied.
    let guest: Value = app
        .add_to_cart(None, json!({"product_id": bread.id, "quantity": 1}))
        .await
        .json()
        .await
        .unwrap();
    let token = guest["cart_token"].as_str().unwrap().to_owned();
    let merged: Value = app
        .client
        .post(app.url("/api/v1/cart/merge"))
        .bearer_auth(&customer)
        .header("X-Cart-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(merged["lines"][0]["quantity"], 3);
    assert_eq!(merged["item_count"], 7);
    let emptied: Value = app.get_cart(&token).await.json().await.unwrap();
    assert_eq!(emptied["item_count"], 0);

    // Merging needs a customer and a token.
    let no_token = app
        .client
        .post(app.url("/api/v1/cart/merge"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_problem(no_token, 401, "cart_token_required").await;
    let (_, vendor) = crate::fixtures::user_token(&app, Role::Vendor);
    let not_customer = app
        .client
        .post(app.url("/api/v1/cart/merge"))
        .bearer_auth(&vendor)
        .header("X-Cart-Token", &token)
        .send()
        .await
        .unwrap();
    assert_problem(not_customer, 403, "forbidden").await;
}
