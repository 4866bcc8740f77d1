//! Identity and access through HTTP: registration, login, tokens, sessions, ownership, limits.

use std::time::Duration;

use hexmarket::domain::identity::{Email, Role};
use hexmarket::identity::tokens::{AUDIENCE, AccessTokens, Claims, ISSUER};
use hexmarket::secrets::Secrets;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple";

pub(crate) fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::now_v7().simple())
}

impl TestApp {
    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, email: &str, role: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": PASSWORD, "name": "Test User", "role": role}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers and logs in; returns (access, refresh, user id).
    pub async fn signed_in(&self, role: &str) -> (String, String, String) {
        let email = unique_email();
        let created: Value = self.register(&email, role).await.json().await.unwrap();
        let tokens: Value = self.login(&email, PASSWORD).await.json().await.unwrap();
        (
            tokens["access_token"].as_str().unwrap().to_owned(),
            tokens["refresh_token"].as_str().unwrap().to_owned(),
            created["id"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn get_authed(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    fn jwt_key(&self) -> [u8; 32] {
        Secrets::load(&self.settings).unwrap().derive("jwt-hs256")
    }

    /// An access token for `user` as the server would issue after an OTP step-up.
    pub fn stepped_up_token(&self, user: &str, role: Role) -> String {
        let now = self.clock.now();
        AccessTokens::new(&self.jwt_key())
            .issue(user.parse().unwrap(), role, now, Some(now), now)
            .unwrap()
    }

    /// Creates an admin the way the CLI does (authenticator enrolled) and returns the token of
    /// a login with a code, which also counts as a step-up for five minutes.
    pub async fn admin_token(&self) -> String {
        crate::helpers::admin_login(&self.identity, &self.clock, &self.address)
            .await
            .0
    }
}

#[actix_web::test]
async fn registration_creates_an_account_and_refuses_duplicates_and_weak_passwords() {
    let app = spawn_app().await;
    let email = unique_email();
    let created = app
        .register(&email.replace("example.com", "EXAMPLE.com"), "customer")
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created["email"],
        email.replace("example.com", "EXAMPLE.com"),
        "the address is shown as typed"
    );
    assert_eq!(created["role"], "customer");

    assert_problem(app.register(&email, "vendor").await, 409, "email_taken").await;

    for (password, code) in [
        ("short", "password_too_short"),
        ("password123", "password_too_common"),
        ("qwertyuiop", "password_too_common"),
    ] {
        let r = app
            .post_json("/api/v1/auth/register", json!({"email": unique_email(), "password": password, "name": "X", "role": "customer"}))
            .await;
        let body = assert_problem(r, 422, code).await;
        assert_eq!(body["errors"][0]["field"], "password");
    }
    let long = "x".repeat(129);
    let r = app
        .post_json(
            "/api/v1/auth/register",
            json!({"email": unique_email(), "password": long, "name": "X", "role": "courier"}),
        )
        .await;
    assert_problem(r, 422, "password_too_long").await;
}

#[actix_web::test]
async fn admins_cannot_self_register_and_unknown_fields_change_nothing() {
    let app = spawn_app().await;
    let email = unique_email();
    let admin = app
        .post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": PASSWORD, "name": "X", "role": "admin"}),
        )
        .await;
    assert_eq!(admin.status(), 422);
    for extra in [
        json!({"id": uuid::Uuid::now_v7()}),
        json!({"banned": false}),
        json!({"email_verified": true}),
    ] {
        let mut body =
            json!({"email": email, "password": PASSWORD, "name": "X", "role": "customer"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_problem(
            app.post_json("/api/v1/auth/register", body).await,
            400,
            "unknown_field",
        )
        .await;
    }
    assert_problem(
        app.login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;

    let (token, _, _) = app.signed_in("customer").await;
    for field in [
        json!({"role": "admin"}),
        json!({"id": "x"}),
        json!({"banned": true}),
    ] {
        let r = app
            .client
            .patch(app.url("/api/v1/me"))
            .bearer_auth(&token)
            .json(&field)
            .send()
            .await
            .unwrap();
        assert_problem(r, 400, "unknown_field").await;
    }
    let me: Value = app
        .get_authed("/api/v1/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "customer");
    assert_eq!(me["banned"], false);
}

#[actix_web::test]
async fn passwords_are_stored_as_argon2id_at_or_above_the_owasp_setting() {
    let app = spawn_app().await;
    let email = unique_email();
    let long_password = "Zq9!".repeat(16);
    let r = app
        .post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": long_password, "name": "X", "role": "customer"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let stored = app
        .identity
        .users
        .find_by_email(&Email::parse(&email).unwrap())
        .await
        .unwrap()
        .unwrap();
    let phc = stored.value.password_hash;
    assert!(phc.starts_with("$argon2id$v=19$m="), "{phc}");
    let params: Vec<u32> = phc
        .split('$')
        .nth(3)
        .unwrap()
        .split(',')
        .map(|kv| kv[2..].parse().unwrap())
        .collect();
    assert!(
        params[0] >= 19 * 1024 && params[1] >= 2 && params[2] == 1,
        "{phc}"
    );
    assert_eq!(
        app.login(&email, &long_password).await.status(),
        200,
        "a 64-character password works"
    );
}

#[actix_web::test]
async fn login_issues_tokens_that_open_the_profile_and_sets_a_strict_cookie() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, "vendor").await;
    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("hexmarket_refresh="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let tokens: Value = login.json().await.unwrap();
    assert_eq!(tokens["expires_in"], 600);
    let me = app
        .get_authed("/api/v1/me", tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["email"], email);

    assert_problem(
        app.login(&email, "wrong password!!").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(
        app.login(&unique_email(), PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(
        app.client.get(app.url("/api/v1/me")).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
}

#[actix_web::test]
async fn forged_expired_and_misdirected_access_tokens_are_refused() {
    let app = spawn_app().await;
    let (access, refresh, user) = app.signed_in("customer").await;
    let key = app.jwt_key();
    let now = app.clock.now().timestamp();
    let claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = Claims {
            sub: user.parse().unwrap(),
            role: Role::Customer,
            iat: now,
            exp: now + 600,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: "j".into(),
            typ: "access".into(),
            auth_time: now,
            amr: vec!["pwd".into()],
            otp_at: None,
        };
        f(&mut c);
        c
    };
    let sign = |c: &Claims, alg: Algorithm| {
        jsonwebtoken::encode(&Header::new(alg), c, &EncodingKey::from_secret(&key)).unwrap()
    };

    let good = sign(&claims(&|_| {}), Algorithm::HS256);
    assert_eq!(
        app.get_authed("/api/v1/me", &good).await.status(),
        200,
        "control: a correct token works"
    );

    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = serde_json::to_value(claims(&|_| {})).unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&payload)
    );
    let mut tampered = access.clone();
    tampered.replace_range(
        tampered.len() - 3..,
        if tampered.ends_with("AAA") {
            "BBB"
        } else {
            "AAA"
        },
    );
    let cases = [
        ("alg none", alg_none),
        ("wrong alg", sign(&claims(&|_| {}), Algorithm::HS512)),
        ("tampered signature", tampered),
        (
            "wrong aud",
            sign(
                &claims(&|c| c.aud = "someone-else".into()),
                Algorithm::HS256,
            ),
        ),
        (
            "wrong iss",
            sign(&claims(&|c| c.iss = "evil".into()), Algorithm::HS256),
        ),
        (
            "expired 61 s ago",
            sign(&claims(&|c| c.exp = now - 61), Algorithm::HS256),
        ),
        (
            "another typ",
            sign(&claims(&|c| c.typ = "refresh".into()), Algorithm::HS256),
        ),
        ("refresh token as access token", refresh.clone()),
        (
            "other key",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(&|_| {}),
                &EncodingKey::from_secret(&[1; 32]),
            )
            .unwrap(),
        ),
    ];
    for (name, token) in cases {
        let r = app.get_authed("/api/v1/me", &token).await;
        assert_eq!(r.status(), 401, "{name}");
    }
}

#[actix_web::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = spawn_app().await;
    let (_, first, _) = app.signed_in("customer").await;
    let rotated = app
        .post_json("/api/v1/auth/refresh", json!({"refresh_token": first}))
        .await;
    assert_eq!(rotated.status(), 200);
    let second = rotated.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
    let third: Value = app
        .post_json("/api/v1/auth/refresh", json!({"refresh_token": second}))
        .await
        .json()
        .await
        .unwrap();
    let third = third["refresh_token"].as_str().unwrap().to_owned();

    // The first token comes back: someone stole it. The family dies, newest token included.
    assert_problem(
        app.post_json("/api/v1/auth/refresh", json!({"refresh_token": first}))
            .await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_problem(
        app.post_json("/api/v1/auth/refresh", json!({"refresh_token": third}))
            .await,
        401,
        "invalid_refresh_token",
    )
    .await;
}

#[actix_web::test]
async fn of_two_parallel_refreshes_with_one_token_at_most_one_succeeds() {
    let app = spawn_app().await;
    let (_, refresh, _) = app.signed_in("customer").await;
    let attempts =
        (0..6).map(|_| app.post_json("/api/v1/auth/refresh", json!({"refresh_token": refresh})));
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    assert!(ok <= 1, "{ok} refreshes succeeded");
}

#[actix_web::test]
async fn refresh_tokens_expire_after_a_week_unused() {
    let app = spawn_app().await;
    let (_, refresh, _) = app.signed_in("customer").await;
    app.clock.advance(Duration::from_secs(7 * 24 * 3600 + 60));
    assert_problem(
        app.post_json("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
            .await,
        401,
        "invalid_refresh_token",
    )
    .await;
}

#[actix_web::test]
async fn logout_ends_one_session_and_logout_all_ends_every_one() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, "customer").await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let t: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
        sessions.push((
            t["access_token"].as_str().unwrap().to_owned(),
            t["refresh_token"].as_str().unwrap().to_owned(),
        ));
    }
    let out = app
        .post_json(
            "/api/v1/auth/logout",
            json!({"refresh_token": sessions[0].1}),
        )
        .await;
    assert_eq!(out.status(), 204);
    assert_eq!(
        app.post_json(
            "/api/v1/auth/refresh",
            json!({"refresh_token": sessions[0].1})
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        app.post_json(
            "/api/v1/auth/refresh",
            json!({"refresh_token": sessions[1].1})
        )
        .await
        .status(),
        200
    );

    let all = app
        .client
        .post(app.url("/api/v1/auth/logout-all"))
        .bearer_auth(&sessions[2].0)
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 204);
    assert_eq!(
        app.post_json(
            "/api/v1/auth/refresh",
            json!({"refresh_token": sessions[2].1})
        )
        .await
        .status(),
        401
    );
}

#[actix_web::test]
async fn repeated_failed_logins_lock_the_account_with_retry_after() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, "customer").await;
    for _ in 0..5 {
        assert_eq!(app.login(&email, "wrong password!!").await.status(), 401);
    }
    let locked = app.login(&email, PASSWORD).await;
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    assert_problem(locked, 429, "too_many_attempts").await;
}

#[actix_web::test]
async fn the_login_limit_holds_across_two_nodes_sharing_redis() {
    let prefix = format!("test_{}", uuid::Uuid::new_v4().simple());
    let shared = |s: &mut hexmarket::config::Settings| {
        s.redis_url = Some("redis://127.0.0.1:6379".into());
        s.redis_prefix = prefix.clone();
    };
    let node_a = spawn_app_with(shared).await;
    let node_b = spawn_app_with(shared).await;
    let email = unique_email();
    for i in 0..5 {
        let node = if i % 2 == 0 { &node_a } else { &node_b };
        assert_eq!(node.login(&email, "wrong password!!").await.status(), 401);
    }
    assert_problem(
        node_b.login(&email, "wrong password!!").await,
        429,
        "too_many_attempts",
    )
    .await;
    assert_problem(
        node_a.login(&email, "wrong password!!").await,
        429,
        "too_many_attempts",
    )
    .await;
}

#[actix_web::test]
async fn users_cannot_reach_admin_endpoints_and_me_is_always_their_own() {
    let app = spawn_app().await;
    let (alice, _, _) = app.signed_in("customer").await;
    let (_, _, bob_id) = app.signed_in("vendor").await;
    assert_problem(
        app.get_authed("/api/v1/admin/users", &alice).await,
        403,
        "forbidden",
    )
    .await;
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/admin/users/{bob_id}")))
        .bearer_auth(&alice)
        .json(&json!({"banned": true}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // /me is always the caller's own: there is no way to name another user.
    let me: Value = app
        .get_authed("/api/v1/me", &alice)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(me["id"], bob_id);
}

#[actix_web::test]
async fn admins_need_a_step_up_to_ban_and_a_ban_ends_sessions_and_logins() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, "courier").await;
    let tokens: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let victim = app
        .identity
        .users
        .find_by_email(&Email::parse(&email).unwrap())
        .await
        .unwrap()
        .unwrap()
        .value
        .id;
    let admin = app.admin_token().await;

    let listed: Value = app
        .get_authed(
            &format!("/api/v1/admin/users?role=courier&email={}", &email[..20]),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["users"].as_array().unwrap().len(), 1);

    // A token of the second-factor session whose step-up lapsed is not enough.
    let admin_claims = app.identity.tokens.verify(&admin).unwrap();
    let now = app.clock.now();
    let plain = app
        .identity
        .tokens
        .issue_with(
            admin_claims.sub,
            Role::Admin,
            now,
            &admin_claims.amr,
            None,
            now,
        )
        .unwrap();
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/admin/users/{victim}")))
        .bearer_auth(&plain)
        .json(&json!({"banned": true}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "step_up_required").await;

    let r = app
        .client
        .patch(app.url(&format!("/api/v1/admin/users/{victim}")))
        .bearer_auth(&admin)
        .json(&json!({"banned": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["banned"], true);

    assert_problem(
        app.post_json(
            "/api/v1/auth/refresh",
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_problem(app.login(&email, PASSWORD).await, 403, "account_banned").await;

    // The step-up lapses after five minutes.
    app.clock.advance(Duration::from_secs(301));
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/admin/users/{victim}")))
        .bearer_auth(&admin)
        .json(&json!({"banned": false}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "step_up_required").await;
}

#[actix_web::test]
async fn the_profile_can_be_changed_exported_and_erased() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, "customer").await;
    let tokens: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let patch = json!({
        "name": "  Jane  ",
        "addresses": [{"label": "home", "text": "1 High St", "lat": 51.5, "lng": -0.12}],
        "notifications": {"sms": {"order_paid": false}}
    });
    let r = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(token)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let profile: Value = r.json().await.unwrap();
    assert_eq!(profile["name"], "Jane");
    assert_eq!(profile["addresses"][0]["label"], "home");
    assert_eq!(profile["notifications"]["sms"]["order_paid"], false);

    let bad = json!({"addresses": [{"label": "x", "text": "y", "lat": 91.0, "lng": 0.0}]});
    let r = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(token)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;
    let phone = app
        .client
        .patch(app.url("/api/v1/me"))
        .bearer_auth(token)
        .json(&json!({"phone": "+447700900123"}))
        .send()
        .await
        .unwrap();
    assert_problem(phone, 403, "step_up_required").await;

    let export: Value = app
        .get_authed("/api/v1/me/export", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(export["profile"]["email"], email);

    let erased = app
        .client
        .delete(app.url("/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 204);
    // The erasure revoked the token that asked for it.
    assert_eq!(app.get_authed("/api/v1/me", token).await.status(), 401);
    assert_eq!(app.login(&email, PASSWORD).await.status(), 401);
    assert_eq!(
        app.post_json(
            "/api/v1/auth/refresh",
            json!({"refresh_token": tokens["refresh_token"]})
        )
        .await
        .status(),
        401
    );
    // The email is free again.
    assert_eq!(app.register(&email, "customer").await.status(), 201);
}

#[actix_web::test]
async fn create_admin_reads_the_password_from_stdin_and_the_admin_logs_in_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email();
    let printed = crate::admin_cli::create_admin(dir.path(), &email, PASSWORD).await;
    assert!(printed.contains("created admin"));
    let uri = crate::admin_cli::printed_uri(&printed).to_owned();

    let app = crate::helpers::spawn_in(dir, |_| {}).await;
    assert_problem(
        app.login(&email, PASSWORD).await,
        401,
        "second_factor_required",
    )
    .await;
    let authenticator = crate::helpers::Authenticator::new(&uri, app.clock.clone());
    let tokens: Value = app
        .post_json(
            "/api/v1/auth/login",
            json!({"email": email, "password": PASSWORD, "otp": authenticator.code()}),
        )
        .await
        .json()
        .await
        .unwrap();
    let me: Value = app
        .get_authed("/api/v1/me", tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["totp_enabled"], true);
}
