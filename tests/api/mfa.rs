//! The second factor through HTTP: enrolling an authenticator, logging in with a code or a
//! recovery code, step-up without a phone, guess limits, and administrators who must have it.

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_PASSWORD, Authenticator, TestApp, assert_problem, get, ok_json, spawn_app,
};

const PASSWORD: &str = "a second factor passphrase";

fn unique_email() -> String {
    format!("mfa-{}@example.com", uuid::Uuid::now_v7().simple())
}

impl TestApp {
    async fn post_as(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.post_authed(path, token, body).await
    }

    /// Steps up with `proof` (`{otp}` or `{recovery_code}`); returns the step-up token.
    async fn stepped_up(&self, token: &str, proof: Value) -> String {
        let body = ok_json(self.post_as(token, "/api/v1/auth/step-up", proof).await).await;
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn login_with(&self, email: &str, password: &str, extra: Value) -> reqwest::Response {
        let mut body = json!({"email": email, "password": password});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.client
            .post(self.url("/api/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Registers a phoneless customer and logs in; returns (email, access, refresh).
    async fn customer(&self) -> (String, String, String) {
        let email = unique_email();
        let created = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD, "name": "Mia", "role": "customer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let tokens = ok_json(self.login_with(&email, PASSWORD, json!({})).await).await;
        (
            email,
            tokens["access_token"].as_str().unwrap().to_owned(),
            tokens["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Enrols and confirms an authenticator for the holder of `token`; returns it and the
    /// recovery codes.
    async fn enrol(&self, token: &str) -> (Authenticator, Vec<String>) {
        let enrolment = ok_json(self.post_as(token, "/api/v1/auth/totp", json!({})).await).await;
        let authenticator = Authenticator::new(
            enrolment["otpauth_uri"].as_str().unwrap(),
            self.clock.clone(),
        );
        let confirmed = ok_json(
            self.post_as(
                token,
                "/api/v1/auth/totp/confirm",
                json!({"code": authenticator.code()}),
            )
            .await,
        )
        .await;
        let codes = confirmed["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        (authenticator, codes)
    }

    /// A fresh access token of the session, without any step-up.
    async fn refreshed(&self, refresh: &str) -> (String, String) {
        let tokens = ok_json(
            self.client
                .post(self.url("/api/v1/auth/refresh"))
                .json(&json!({"refresh_token": refresh}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        (
            tokens["access_token"].as_str().unwrap().to_owned(),
            tokens["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    fn amr(&self, token: &str) -> Vec<String> {
        self.identity.tokens.verify(token).unwrap().amr
    }
}

#[actix_web::test]
async fn an_authenticator_is_enrolled_by_its_first_code_and_then_login_needs_a_code() {
    let app = spawn_app().await;
    let (email, token, _) = app.customer().await;

    // Enrolment hands out a secret and its otpauth URI; nothing changes until confirmed.
    let enrolment = ok_json(app.post_as(&token, "/api/v1/auth/totp", json!({})).await).await;
    let secret = enrolment["secret"].as_str().unwrap();
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    assert!(
        uri.starts_with(&format!(
            "otpauth://totp/hexmarket:{email}?secret={secret}&issuer=hexmarket"
        )),
        "{uri}"
    );
    let me = ok_json(get(&app, &token, "/api/v1/me").await).await;
    assert_eq!(me["totp_enabled"], false);
    ok_json(app.login_with(&email, PASSWORD, json!({})).await).await;

    // A wrong first code activates nothing; the right one answers ten recovery codes.
    let authenticator = Authenticator::new(uri, app.clock.clone());
    let wrong = if authenticator.used_code() == "000000" {
        "111111"
    } else {
        "000000"
    };
    let confirm =
        |code: String| app.post_as(&token, "/api/v1/auth/totp/confirm", json!({"code": code}));
    assert_problem(confirm(wrong.to_owned()).await, 400, "invalid_code").await;
    assert_problem(confirm("12345".to_owned()).await, 422, "validation_failed").await;
    let confirmed = ok_json(confirm(authenticator.code()).await).await;
    let codes = confirmed["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let me = ok_json(get(&app, &token, "/api/v1/me").await).await;
    assert_eq!(me["totp_enabled"], true);

    // The secret is kept sealed: neither the account row nor the export shows it.
    let user = app
        .identity
        .users
        .get(me["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .value;
    let stored = format!("{:?}", user.second_factor);
    assert!(!stored.contains(secret), "{stored}");
    assert!(!stored.contains(codes[0].as_str().unwrap()));
    let export = get(&app, &token, "/api/v1/me/export")
        .await
        .text()
        .await
        .unwrap();
    assert!(!export.contains(secret));

    // Login now needs a code; the code that confirmed is spent.
    let r = app.login_with(&email, PASSWORD, json!({})).await;
    assert_problem(r, 401, "second_factor_required").await;
    let r = app
        .login_with(&email, PASSWORD, json!({"otp": authenticator.used_code()}))
        .await;
    assert_problem(r, 400, "invalid_code").await;
    // A wrong password with a right code is still a wrong password.
    let r = app
        .login_with(&email, "not the password at all", json!({"otp": "123456"}))
        .await;
    assert_problem(r, 401, "invalid_credentials").await;
    let tokens = ok_json(
        app.login_with(&email, PASSWORD, json!({"otp": authenticator.code()}))
            .await,
    )
    .await;
    let amr = app.amr(tokens["access_token"].as_str().unwrap());
    assert!(
        amr.contains(&"mfa".to_owned()) && amr.contains(&"otp".to_owned()),
        "{amr:?}"
    );
    // Replaying the code that just logged in fails.
    let r = app
        .login_with(&email, PASSWORD, json!({"otp": authenticator.used_code()}))
        .await;
    assert_problem(r, 400, "invalid_code").await;
    let r = app
        .login_with(
            &email,
            PASSWORD,
            json!({"otp": "123456", "recovery_code": "abcde-fghij"}),
        )
        .await;
    assert_problem(r, 422, "validation_failed").await;
}

#[actix_web::test]
async fn a_recovery_code_logs_in_once_and_refreshed_tokens_keep_the_second_factor() {
    let app = spawn_app().await;
    let (email, token, _) = app.customer().await;
    let (_, codes) = app.enrol(&token).await;

    // Case and the dash do not matter.
    let typed = codes[3].to_uppercase().replace('-', "");
    let tokens = ok_json(
        app.login_with(&email, PASSWORD, json!({"recovery_code": typed}))
            .await,
    )
    .await;
    assert!(
        app.amr(tokens["access_token"].as_str().unwrap())
            .contains(&"mfa".to_owned())
    );
    let r = app
        .login_with(&email, PASSWORD, json!({"recovery_code": codes[3]}))
        .await;
    assert_problem(r, 400, "invalid_code").await;
    ok_json(
        app.login_with(&email, PASSWORD, json!({"recovery_code": codes[4]}))
            .await,
    )
    .await;

    let (access, _) = app
        .refreshed(tokens["refresh_token"].as_str().unwrap())
        .await;
    assert!(app.amr(&access).contains(&"mfa".to_owned()));

    // Fresh codes need a step-up and void the old ones.
    let renew = |token: String| {
        let app = &app;
        async move {
            app.post_as(&token, "/api/v1/auth/totp/recovery-codes", json!({}))
                .await
        }
    };
    assert_problem(renew(access.clone()).await, 403, "step_up_required").await;
    let stepped = app
        .stepped_up(&access, json!({"recovery_code": codes[5]}))
        .await;
    let renewed = ok_json(renew(stepped).await).await;
    let renewed = renewed["recovery_codes"].as_array().unwrap();
    assert_eq!(renewed.len(), 10);
    let r = app
        .login_with(&email, PASSWORD, json!({"recovery_code": codes[6]}))
        .await;
    assert_problem(r, 400, "invalid_code").await;
    ok_json(
        app.login_with(&email, PASSWORD, json!({"recovery_code": renewed[0]}))
            .await,
    )
    .await;
}

#[actix_web::test]
async fn wrong_codes_are_limited_per_account_and_the_limit_stops_right_codes_too() {
    let app = spawn_app().await;
    let (_, token, refresh) = app.customer().await;
    let (authenticator, codes) = app.enrol(&token).await;
    let (plain, _) = app.refreshed(&refresh).await;

    let wrong = |code: &str| {
        let code = code.to_owned();
        let plain = plain.clone();
        let app = &app;
        async move {
            app.post_as(&plain, "/api/v1/auth/step-up", json!({"otp": code}))
                .await
        }
    };
    for i in 0..5 {
        let guess = format!("{:06}", 100_000 + i);
        assert_problem(wrong(&guess).await, 400, "invalid_code").await;
    }
    let r = wrong(&authenticator.code()).await;
    let body = assert_problem(r, 429, "too_many_attempts").await;
    assert!(body["detail"].is_string());
    let r = app
        .post_as(
            &plain,
            "/api/v1/auth/step-up",
            json!({"recovery_code": codes[0]}),
        )
        .await;
    assert_problem(r, 429, "too_many_attempts").await;
}

#[actix_web::test]
async fn a_user_without_a_phone_steps_up_with_the_authenticator_to_change_email_and_password() {
    let app = spawn_app().await;
    let (email, token, _) = app.customer().await;
    let (authenticator, codes) = app.enrol(&token).await;
    let tokens = ok_json(
        app.login_with(&email, PASSWORD, json!({"otp": authenticator.code()}))
            .await,
    )
    .await;
    let (plain, _) = app
        .refreshed(tokens["refresh_token"].as_str().unwrap())
        .await;

    // No phone, so no SMS step-up; the refusal names the other way.
    let r = app
        .post_as(
            &plain,
            "/api/v1/auth/phone/otp",
            json!({"purpose": "step_up"}),
        )
        .await;
    assert_problem(r, 409, "phone_missing").await;
    let new_email = unique_email();
    let r = app
        .post_as(&plain, "/api/v1/me/email", json!({"email": new_email}))
        .await;
    let body = assert_problem(r, 403, "step_up_required").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("/api/v1/auth/step-up")
    );
    let r = app.post_as(&plain, "/api/v1/auth/step-up", json!({})).await;
    assert_problem(r, 422, "validation_failed").await;

    let stepped = app
        .stepped_up(&plain, json!({"otp": authenticator.code()}))
        .await;
    let profile = ok_json(
        app.post_as(&stepped, "/api/v1/me/email", json!({"email": new_email}))
            .await,
    )
    .await;
    assert_eq!(profile["email"], new_email);

    // A recovery code steps up as well; the new password then logs in (with a code).
    let stepped = app
        .stepped_up(&plain, json!({"recovery_code": codes[0]}))
        .await;
    let new_password = "an entirely new passphrase";
    let r = app
        .post_as(
            &stepped,
            "/api/v1/me/password",
            json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), 204);
    ok_json(
        app.login_with(
            &new_email,
            new_password,
            json!({"otp": authenticator.code()}),
        )
        .await,
    )
    .await;
}

#[actix_web::test]
async fn removing_the_authenticator_needs_a_step_up_and_admins_must_keep_theirs() {
    let app = spawn_app().await;
    let (email, token, refresh) = app.customer().await;
    let (authenticator, _) = app.enrol(&token).await;
    let (plain, _) = app.refreshed(&refresh).await;
    let delete = |token: String| {
        app.client
            .delete(app.url("/api/v1/auth/totp"))
            .bearer_auth(token)
            .send()
    };
    assert_problem(
        delete(plain.clone()).await.unwrap(),
        403,
        "step_up_required",
    )
    .await;
    let stepped = app
        .stepped_up(&plain, json!({"otp": authenticator.code()}))
        .await;
    assert_eq!(delete(stepped.clone()).await.unwrap().status(), 204);
    assert_problem(
        delete(stepped.clone()).await.unwrap(),
        409,
        "totp_not_enrolled",
    )
    .await;
    ok_json(app.login_with(&email, PASSWORD, json!({})).await).await;
    let r = app
        .post_as(
            &plain,
            "/api/v1/auth/step-up",
            json!({"otp": authenticator.code()}),
        )
        .await;
    assert_problem(r, 409, "totp_not_enrolled").await;

    let admin = app.admin_token().await;
    assert_problem(delete(admin).await.unwrap(), 409, "second_factor_mandatory").await;
}

#[actix_web::test]
async fn an_admin_without_a_second_factor_can_do_nothing_privileged_but_enrol() {
    let app = spawn_app().await;
    let email = unique_email();
    let account = hexmarket::identity::NewAccount {
        email: hexmarket::domain::identity::Email::parse(&email).unwrap(),
        password: ADMIN_PASSWORD.to_owned(),
        name: "Old Admin".to_owned(),
        role: hexmarket::domain::identity::Role::Admin,
        phone: None,
    };
    app.identity.register(account).await.unwrap();
    let tokens = ok_json(app.login_with(&email, ADMIN_PASSWORD, json!({})).await).await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();

    for path in ["/api/v1/admin/users", "/api/v1/admin/orders"] {
        assert_problem(get(&app, &token, path).await, 403, "second_factor_required").await;
    }
    let r = app
        .post_as(
            &token,
            "/api/v1/admin/categories",
            json!({"name": "Bakery"}),
        )
        .await;
    assert_problem(r, 403, "second_factor_required").await;

    // Enrolling is allowed; the old token stays without the factor, a step-up adds it.
    let (authenticator, _) = app.enrol(&token).await;
    assert_problem(
        get(&app, &token, "/api/v1/admin/users").await,
        403,
        "second_factor_required",
    )
    .await;
    let stepped = app
        .stepped_up(&token, json!({"otp": authenticator.code()}))
        .await;
    ok_json(get(&app, &stepped, "/api/v1/admin/users").await).await;

    // A login with a code gives a session whose refreshed tokens keep the factor.
    let tokens = ok_json(
        app.login_with(&email, ADMIN_PASSWORD, json!({"otp": authenticator.code()}))
            .await,
    )
    .await;
    let (refreshed, _) = app
        .refreshed(tokens["refresh_token"].as_str().unwrap())
        .await;
    ok_json(get(&app, &refreshed, "/api/v1/admin/users").await).await;
}
