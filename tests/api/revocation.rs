//! Revocation takes effect at once: a ban, an erasure, a role change, logout-all, a password
//! change and a password reset end the user's access tokens and open WebSockets, on the node
//! that made the change at once, and on other nodes through Redis or, without a shared bus,
//! through the store; marks survive a restart.

use std::time::{Duration, Instant};

use hexmarket::domain::identity::Role;
use hexmarket::identity::revocation::POLL_EVERY;
use serde_json::{Value, json};

use crate::helpers::{TestApp, get, spawn_app, spawn_app_with, spawn_in, spawn_peer};
use crate::verification::{app_with_fakes, last_token};
use crate::ws_client::{Refused, WsClient, ws_base};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a fresh and unguessed passphrase";
/// Close code of a session whose access ended.
const ACCESS_ENDED: u16 = 4001;
/// How long another node may take to learn of a revocation: it reads the store every
/// `POLL_EVERY` (Redis is sooner); the margin absorbs a loaded test machine.
const ELSEWHERE: Duration = Duration::from_secs(POLL_EVERY.as_secs() * 4);

/// A courier with an account, signed in, with their socket open.
struct Victim {
    id: String,
    email: String,
    access: String,
    refresh: String,
}

async fn victim(app: &TestApp) -> Victim {
    let email = format!("revoked-{}@example.com", uuid::Uuid::now_v7().simple());
    let created = app.register(&email, "courier").await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    Victim {
        id,
        email,
        access: tokens["access_token"].as_str().unwrap().to_owned(),
        refresh: tokens["refresh_token"].as_str().unwrap().to_owned(),
    }
}

async fn socket(app: &TestApp, token: &str) -> WsClient {
    let url = format!("{}/ws/courier", ws_base(&app.address));
    match WsClient::connect(&url, Some(token)).await {
        Ok(ws) => ws,
        Err(Refused { status, body }) => panic!("socket refused with {status}: {body}"),
    }
}

async fn patch_user(app: &TestApp, admin: &str, user: &str, body: Value) {
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/admin/users/{user}")))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Status of `GET /me` with `token` on `app`, until it is `status` or `within` passes.
async fn me_status_within(app: &TestApp, token: &str, status: u16, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let now = get(app, token, "/api/v1/me").await.status().as_u16();
        if now == status || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that the old token is refused everywhere on `app` at once: a read, an optional-auth
/// write that must not fall back to a guest cart, and a new socket.
async fn assert_refused_at_once(app: &TestApp, token: &str) {
    assert_eq!(get(app, token, "/api/v1/me").await.status(), 401);
    let cart = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .bearer_auth(token)
        .json(&json!({"product_id": uuid::Uuid::now_v7(), "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cart.status(),
        401,
        "a revoked token is not taken for a guest"
    );
    let url = format!("{}/ws/courier", ws_base(&app.address));
    let refused = WsClient::connect(&url, Some(token)).await.err();
    assert_eq!(refused.map(|r| r.status), Some(401));
}

// ---------------------------------------------------------------------------------------------
// Each path, on one node: the next request with the old token gets 401, the socket closes.

/// After a revocation of `who`: their old token and refresh token are refused, the socket
/// they opened before closes with 4001, and a fresh login (when still possible, with
/// `can_sign_in_with`) gives a token that works.
async fn assert_revokes(
    app: &TestApp,
    who: &Victim,
    mut ws: WsClient,
    can_sign_in_with: Option<&str>,
) {
    assert_refused_at_once(app, &who.access).await;
    let refreshed = app
        .post_json(
            "/api/v1/auth/refresh",
            json!({"refresh_token": who.refresh}),
        )
        .await;
    assert_eq!(refreshed.status(), 401);
    if let Some(password) = can_sign_in_with {
        // Tokens issued after the revocation are not covered by it.
        let tokens: Value = app.login(&who.email, password).await.json().await.unwrap();
        let fresh = tokens["access_token"].as_str().unwrap();
        assert_eq!(get(app, fresh, "/api/v1/me").await.status(), 200);
    }
    assert_eq!(ws.expect_close(ELSEWHERE).await, Some(ACCESS_ENDED));
}

#[actix_web::test]
async fn a_ban_ends_the_users_tokens_and_sockets_at_once() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let who = victim(&app).await;
    let ws = socket(&app, &who.access).await;
    assert_eq!(get(&app, &who.access, "/api/v1/me").await.status(), 200);

    patch_user(&app, &admin, &who.id, json!({"banned": true})).await;
    assert_revokes(&app, &who, ws, None).await;
    // The admin's own token is not touched.
    assert_eq!(get(&app, &admin, "/api/v1/me").await.status(), 200);
    app.stop().await;
}

#[actix_web::test]
async fn an_erasure_ends_the_users_tokens_and_sockets_at_once() {
    let app = spawn_app().await;
    let who = victim(&app).await;
    let ws = socket(&app, &who.access).await;

    let erased = app
        .client
        .delete(app.url("/api/v1/me"))
        .bearer_auth(&who.access)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 204);
    assert_revokes(&app, &who, ws, None).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_role_change_ends_the_tokens_and_the_next_sign_in_carries_the_new_role() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let who = victim(&app).await;
    let ws = socket(&app, &who.access).await;

    patch_user(&app, &admin, &who.id, json!({"role": "customer"})).await;
    assert_revokes(&app, &who, ws, Some(PASSWORD)).await;
    let tokens: Value = app.login(&who.email, PASSWORD).await.json().await.unwrap();
    let claims = app
        .identity
        .tokens
        .verify(tokens["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.role, Role::Customer);
    app.stop().await;
}

#[actix_web::test]
async fn logout_all_ends_the_tokens_and_sockets_at_once() {
    let app = spawn_app().await;
    let who = victim(&app).await;
    let ws = socket(&app, &who.access).await;

    let out = app
        .post_authed("/api/v1/auth/logout-all", &who.access, json!({}))
        .await;
    assert_eq!(out.status(), 204);
    assert_revokes(&app, &who, ws, Some(PASSWORD)).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_password_change_ends_the_tokens_and_sockets_at_once() {
    let app = spawn_app().await;
    let who = victim(&app).await;
    let ws = socket(&app, &who.access).await;

    let stepped = app.stepped_up_token(&who.id, Role::Courier);
    let changed = app
        .post_authed(
            "/api/v1/me/password",
            &stepped,
            json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(changed.status(), 204);
    assert_revokes(&app, &who, ws, Some(NEW_PASSWORD)).await;
    assert_eq!(get(&app, &stepped, "/api/v1/me").await.status(), 401);
    app.stop().await;
}

#[actix_web::test]
async fn a_password_reset_ends_the_tokens_and_sockets_at_once() {
    let (app, _, smtp) = app_with_fakes().await;
    let who = victim(&app).await;
    let ws = socket(&app, &who.access).await;

    let forgot = app
        .post_json("/api/v1/auth/password/forgot", json!({"email": who.email}))
        .await;
    assert_eq!(forgot.status(), 202);
    let reset = app
        .post_json(
            "/api/v1/auth/password/reset",
            json!({"token": last_token(&smtp, &who.email), "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(reset.status(), 204);
    assert_revokes(&app, &who, ws, Some(NEW_PASSWORD)).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_revoked_users_ws_ticket_bought_before_the_revocation_is_refused() {
    let app = spawn_app().await;
    let who = victim(&app).await;
    let ticket: Value = app
        .post_authed("/api/v1/ws/ticket", &who.access, json!({}))
        .await
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap();

    let out = app
        .post_authed("/api/v1/auth/logout-all", &who.access, json!({}))
        .await;
    assert_eq!(out.status(), 204);
    let url = format!("{}/ws/courier?ticket={ticket}", ws_base(&app.address));
    let refused = WsClient::try_connect(&url, &[]).await.err();
    assert_eq!(refused.map(|r| r.status), Some(401));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Across nodes and restarts.

/// Two nodes on one store with one signing key; `redis` decides whether they share a bus.
async fn two_nodes(redis: bool) -> (TestApp, TestApp) {
    let prefix = format!("test_{}", uuid::Uuid::new_v4().simple());
    let a = spawn_app_with(|s| {
        if redis {
            s.redis_url = Some("redis://127.0.0.1:6379".into());
            s.redis_prefix = prefix.clone();
        }
        s.secret_key = Some("a-secret-both-nodes-share-for-this-test-0123456789".into());
    })
    .await;
    let b = spawn_peer(&a, |_| {}).await;
    (a, b)
}

/// A ban on node A ends the victim's token and socket on node B.
async fn assert_a_ban_reaches_the_other_node(a: &TestApp, b: &TestApp) {
    let admin = a.admin_token().await;
    let who = victim(a).await;
    let bystander = victim(a).await;
    let mut ws = socket(b, &who.access).await;
    assert_eq!(get(b, &who.access, "/api/v1/me").await.status(), 200);

    patch_user(a, &admin, &who.id, json!({"banned": true})).await;
    assert_eq!(get(a, &who.access, "/api/v1/me").await.status(), 401);
    assert_eq!(me_status_within(b, &who.access, 401, ELSEWHERE).await, 401);
    assert_eq!(ws.expect_close(ELSEWHERE).await, Some(ACCESS_ENDED));
    assert_eq!(get(b, &bystander.access, "/api/v1/me").await.status(), 200);
}

#[actix_web::test]
async fn a_ban_on_one_node_ends_tokens_and_sockets_on_another_through_redis() {
    let (a, b) = two_nodes(true).await;
    assert_a_ban_reaches_the_other_node(&a, &b).await;
    b.stop().await;
    a.stop().await;
}

#[actix_web::test]
async fn without_a_shared_bus_the_other_node_learns_a_revocation_from_the_store() {
    let (a, b) = two_nodes(false).await;
    assert_a_ban_reaches_the_other_node(&a, &b).await;

    // Logout-all as well, made on B and checked on A.
    let who = victim(&b).await;
    let mut ws = socket(&a, &who.access).await;
    let out = b
        .post_authed("/api/v1/auth/logout-all", &who.access, json!({}))
        .await;
    assert_eq!(out.status(), 204);
    assert_eq!(me_status_within(&a, &who.access, 401, ELSEWHERE).await, 401);
    assert_eq!(ws.expect_close(ELSEWHERE).await, Some(ACCESS_ENDED));
    b.stop().await;
    a.stop().await;
}

#[actix_web::test]
async fn revocations_survive_a_restart_of_the_node() {
    let app = spawn_app().await;
    let who = victim(&app).await;
    let bystander = victim(&app).await;
    let out = app
        .post_authed("/api/v1/auth/logout-all", &who.access, json!({}))
        .await;
    assert_eq!(out.status(), 204);
    let data = app.stop().await;

    let app = spawn_in(data, |_| {}).await;
    assert_eq!(get(&app, &who.access, "/api/v1/me").await.status(), 401);
    assert_eq!(
        get(&app, &bystander.access, "/api/v1/me").await.status(),
        200
    );
    app.stop().await;
}
