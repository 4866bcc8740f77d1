//! Running the platform: live settings (checked, versioned, in force on every node within a
//! second, used by checkout at once) and the audit trail of administrative actions (who,
//! what, when, from where, before and after; paged and filtered; never editable).

use std::time::{Duration, Instant};

use hexmarket::domain::identity::Role;
use serde_json::{Value, json};

use crate::fixtures::user_token;
use crate::helpers::{TestApp, assert_problem, get, ok_json, spawn_app, spawn_peer};
use crate::live::{paid_order, shop};

async fn patch_settings(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url("/api/v1/admin/settings"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn audit(app: &TestApp, admin: &str, query: &str) -> Value {
    ok_json(get(app, admin, &format!("/api/v1/admin/audit{query}")).await).await
}

#[actix_web::test]
async fn settings_are_checked_versioned_audited_and_used_by_the_next_checkout() {
    // Arrange: a node started with the environment's settings, a store and a customer.
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, customer) = user_token(&app, Role::Customer);
    let shop = shop(&app, "Fee Kitchen").await;
    let first = ok_json(get(&app, &admin, "/api/v1/admin/settings").await).await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["changed_by"], Value::Null);
    assert_eq!(
        first["settings"]["payment_timeout_secs"],
        app.settings.order_payment_timeout.as_secs()
    );
    assert_eq!(first["settings"]["delivery_fees"]["base_cents"], 199);
    let before = paid_order(&app, &shop, &customer).await;
    let before = ok_json(get(&app, &customer, &format!("/api/v1/orders/{before}")).await).await;
    assert_eq!(before["totals"]["delivery_fee"]["amount_minor"], 199);

    // Refused: not an admin; a field out of range (named, nothing changes); an unknown field.
    assert_problem(
        get(&app, &customer, "/api/v1/admin/settings").await,
        403,
        "forbidden",
    )
    .await;
    let refused = assert_problem(
        patch_settings(
            &app,
            &admin,
            json!({"offer_timeout_secs": 2, "commission_bps": 900}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        refused["errors"][0]["field"], "offer_timeout_secs",
        "{refused}"
    );
    assert_problem(
        patch_settings(
            &app,
            &admin,
            json!({"delivery_fees": {"base_cents": 500, "included_m": 1000, "per_km_cents": 10, "cap_cents": 100}}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        patch_settings(&app, &admin, json!({"fee": 1})).await,
        400,
        "unknown_field",
    )
    .await;
    let unchanged = ok_json(get(&app, &admin, "/api/v1/admin/settings").await).await;
    assert_eq!(unchanged["version"], 1);

    // Act: a new fee table and commission, made against version 1.
    let changed = ok_json(
        patch_settings(
            &app,
            &admin,
            json!({"version": 1, "commission_bps": 1200,
                   "delivery_fees": {"base_cents": 300, "included_m": 2000, "per_km_cents": 50, "cap_cents": 999}}),
        )
        .await,
    )
    .await;

    // Assert: version 2, in force at once (the default rates and the next checkout's fee).
    assert_eq!(changed["version"], 2);
    assert_eq!(changed["settings"]["commission_bps"], 1200);
    assert_eq!(
        changed["settings"]["offer_timeout_secs"],
        first["settings"]["offer_timeout_secs"]
    );
    let rates = ok_json(get(&app, &admin, "/api/v1/admin/ledger/rates").await).await;
    assert_eq!(rates["commission_bps"], 1200);
    let after = paid_order(&app, &shop, &customer).await;
    let after = ok_json(get(&app, &customer, &format!("/api/v1/orders/{after}")).await).await;
    assert_eq!(after["totals"]["delivery_fee"]["amount_minor"], 300);
    assert_eq!(after["rates"]["commission_bps"], 1200);
    // A change made against a version that is gone is refused.
    assert_problem(
        patch_settings(&app, &admin, json!({"version": 1, "commission_bps": 1300})).await,
        409,
        "settings_version_conflict",
    )
    .await;
    let history = ok_json(get(&app, &admin, "/api/v1/admin/settings/history?limit=1").await).await;
    assert_eq!(history["versions"][0]["version"], 2);
    let older = history["next_cursor"].as_u64().unwrap();
    let history = ok_json(
        get(
            &app,
            &admin,
            &format!("/api/v1/admin/settings/history?cursor={older}"),
        )
        .await,
    )
    .await;
    assert_eq!(history["versions"][0]["version"], 1);
    assert_eq!(history["next_cursor"], Value::Null);

    // The trail has the change with the settings before and after.
    let trail = audit(&app, &admin, "?action=settings").await;
    let entries = trail["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{trail}");
    assert_eq!(entries[0]["action"], "settings.change");
    assert_eq!(entries[0]["target"], "settings");
    assert_eq!(entries[0]["before"]["settings"]["commission_bps"], 1500);
    assert_eq!(entries[0]["after"]["settings"]["commission_bps"], 1200);
    assert_eq!(entries[0]["from"], "127.0.0.1");
    assert_eq!(entries[0]["channel"], "api");
}

#[actix_web::test]
async fn a_change_on_one_node_is_in_force_on_another_within_a_second_and_survives_a_restart() {
    // Arrange: two nodes on one store (each with its own in-process bus: the peer learns of
    // the change by reading the store, the path a lost bus message leaves).
    let first = spawn_app().await;
    let second = spawn_peer(&first, |_| {}).await;
    let admin = first.admin_token().await;
    let peer_admin = second.admin_token().await;

    // Act: change the dispatch radius on the first node.
    let changed =
        ok_json(patch_settings(&first, &admin, json!({"dispatch_radius_km": 3.5})).await).await;
    let version = changed["version"].as_u64().unwrap();
    let started = Instant::now();

    // Assert: the second node answers with it within a second.
    loop {
        let seen = ok_json(get(&second, &peer_admin, "/api/v1/admin/settings").await).await;
        if seen["version"].as_u64() == Some(version) {
            assert_eq!(seen["settings"]["dispatch_radius_km"], 3.5);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not seen within a second: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A node started again on the same data takes the stored settings, not the environment's.
    second.stop().await;
    let dir = first.stop().await;
    let again = crate::helpers::spawn_in(dir, |_| {}).await;
    let admin = again.admin_token().await;
    let seen = ok_json(get(&again, &admin, "/api/v1/admin/settings").await).await;
    assert_eq!(seen["version"].as_u64(), Some(version));
    assert_eq!(seen["settings"]["dispatch_radius_km"], 3.5);
}

#[actix_web::test]
async fn admin_actions_are_in_the_trail_filtered_and_paged_and_the_trail_cannot_be_changed() {
    // Arrange: an account to act on, and two admins.
    let app = spawn_app().await;
    let (admin, _, admin_email) =
        crate::helpers::admin_login(&app.identity, &app.clock, &app.address).await;
    let other_admin = app.admin_token().await;
    let email = crate::auth::unique_email();
    let created: Value = app.register(&email, "customer").await.json().await.unwrap();
    let user = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/admin/users/{user}");

    // Act: ban, unban, make a vendor; the other admin creates a category.
    for body in [
        json!({"banned": true}),
        json!({"banned": false}),
        json!({"role": "vendor"}),
    ] {
        let response = app
            .client
            .patch(app.url(&path))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let category = app
        .client
        .post(app.url("/api/v1/admin/categories"))
        .bearer_auth(&other_admin)
        .json(&json!({"name": "Audited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(category.status(), 201);

    // Assert: newest first, with who, what, before and after.
    let target = format!("user:{user}");
    let trail = audit(&app, &admin, &format!("?target={target}")).await;
    let actions: Vec<&str> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["user.role", "user.unban", "user.ban"], "{trail}");
    let ban = &trail["entries"][2];
    assert_eq!(ban["before"], json!({"role": "customer", "banned": false}));
    assert_eq!(ban["after"], json!({"role": "customer", "banned": true}));
    let me = ok_json(get(&app, &admin, "/api/v1/me").await).await;
    assert_eq!(ban["actor"], me["id"], "{admin_email}");
    // Filters: by area, by administrator; pages of one follow the cursor to the end.
    let bans = audit(&app, &admin, "?action=user.ban").await;
    assert_eq!(bans["entries"].as_array().unwrap().len(), 1);
    let theirs = audit(
        &app,
        &admin,
        &format!("?actor={}", me["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(theirs["entries"].as_array().unwrap().len(), 3);
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=1&cursor={c}"),
            None => "?limit=1".to_owned(),
        };
        let page = audit(&app, &admin, &query).await;
        paged.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged.len(), 4, "{paged:?}");
    // A range that ends before the actions holds none of them.
    let earlier = audit(
        &app,
        &admin,
        "?to=2020-01-01T00:00:00Z&from=2019-12-01T00:00:00Z",
    )
    .await;
    assert_eq!(earlier["entries"], json!([]));

    // Bad input and other callers are refused; nothing edits the trail.
    assert_problem(
        get(&app, &admin, "/api/v1/admin/audit?cursor=nope").await,
        400,
        "invalid_cursor",
    )
    .await;
    assert_problem(
        get(&app, &admin, "/api/v1/admin/audit?action=User.Ban").await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        get(
            &app,
            &admin,
            "/api/v1/admin/audit?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let (_, customer) = user_token(&app, Role::Customer);
    assert_problem(
        get(&app, &customer, "/api/v1/admin/audit").await,
        403,
        "forbidden",
    )
    .await;
    for method in [
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
        reqwest::Method::POST,
    ] {
        let response = app
            .client
            .request(method, app.url("/api/v1/admin/audit"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
}
