//! Proving control of a phone or an email: SMS one-time codes and step-up, email verification,
//! password reset, and the changes of password and email they guard.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app_with};
use crate::notify::{FakeTwilio, SmtpSink};

const PASSWORD: &str = "correct horse battery staple";

/// A node whose SMS go to a fake Twilio and whose email goes to an SMTP sink.
pub(crate) async fn app_with_fakes() -> (TestApp, FakeTwilio, SmtpSink) {
    let twilio = FakeTwilio::start().await;
    let smtp = SmtpSink::start().await;
    let (base_url, sid, token, url) = (
        twilio.base_url.clone(),
        twilio.account_sid.clone(),
        twilio.auth_token.clone(),
        smtp.url.clone(),
    );
    let app = spawn_app_with(move |s| {
        s.twilio = Some(hexmarket::config::TwilioSettings {
            base_url,
            account_sid: sid,
            auth_token: token,
            from: "+15005550006".into(),
        });
        s.smtp_url = Some(url);
        s.mail_from = "hexmarket <no-reply@example.com>".into();
        s.public_url = "https://shop.example.com".into();
    })
    .await;
    (app, twilio, smtp)
}

struct Account {
    email: String,
    phone: String,
    access: String,
    refresh: String,
}

async fn sign_up_with_phone(app: &TestApp) -> Account {
    let email = format!("otp-{}@example.com", uuid::Uuid::now_v7().simple());
    let phone = format!("+4477009{:05}", rand::random_range(0..100_000u32));
    let r = app
        .post_json("/api/v1/auth/register", json!({"email": email, "password": PASSWORD, "name": "Otto", "role": "customer", "phone": phone}))
        .await;
    assert_eq!(r.status(), 201);
    let tokens: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    Account {
        email,
        phone,
        access: tokens["access_token"].as_str().unwrap().to_owned(),
        refresh: tokens["refresh_token"].as_str().unwrap().to_owned(),
    }
}

impl TestApp {
    pub(crate) async fn post_authed(
        &self,
        path: &str,
        token: &str,
        body: Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// The six-digit code in an SMS body.
fn six_digits(body: &str) -> String {
    body.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a six-digit code")
        .to_owned()
}

/// The six-digit code in the newest SMS to `phone`.
fn last_code(twilio: &FakeTwilio, phone: &str) -> String {
    let sms = twilio
        .received()
        .into_iter()
        .rev()
        .find(|m| m.to == phone)
        .expect("an SMS was sent");
    six_digits(&sms.body)
}

/// The token in the newest email to `to`.
pub(crate) fn last_token(smtp: &SmtpSink, to: &str) -> String {
    let mail = smtp
        .received()
        .into_iter()
        .rev()
        .find(|m| m.rcpt_to.iter().any(|r| r == to))
        .expect("an email was sent");
    let body = decode_quoted_printable(&mail.body());
    let start = body.find("token=").expect("a link with a token") + "token=".len();
    body[start..].split_whitespace().next().unwrap().to_owned()
}

/// Undoes quoted-printable transfer encoding (soft line breaks and `=XX` escapes), which mail
/// clients do before showing a message.
fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=')
            .then(|| joined.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[actix_web::test]
async fn a_step_up_code_unlocks_a_password_change_which_ends_every_session() {
    let (app, twilio, _) = app_with_fakes().await;
    let me = sign_up_with_phone(&app).await;

    let without = app
        .post_authed(
            "/api/v1/me/password",
            &me.access,
            json!({"current_password": PASSWORD, "new_password": "another fine passphrase"}),
        )
        .await;
    assert_problem(without, 403, "step_up_required").await;

    let sent = app
        .post_authed(
            "/api/v1/auth/phone/otp",
            &me.access,
            json!({"purpose": "step_up"}),
        )
        .await;
    assert_eq!(sent.status(), 202);
    assert_eq!(sent.json::<Value>().await.unwrap()["expires_in"], 600);
    let sms = twilio.received();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, me.phone);
    assert_eq!(sms[0].from, "+15005550006");

    let verified = app
        .post_authed(
            "/api/v1/auth/phone/verify",
            &me.access,
            json!({"purpose": "step_up", "code": last_code(&twilio, &me.phone)}),
        )
        .await;
    assert_eq!(verified.status(), 200);
    let stepped = verified.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        app.identity
            .tokens
            .verify(&stepped)
            .unwrap()
            .amr
            .contains(&"otp".to_owned())
    );

    let wrong_current = app.post_authed("/api/v1/me/password", &stepped, json!({"current_password": "not my password", "new_password": "another fine passphrase"})).await;
    assert_problem(wrong_current, 401, "invalid_credentials").await;
    let weak = app
        .post_authed(
            "/api/v1/me/password",
            &stepped,
            json!({"current_password": PASSWORD, "new_password": "password123"}),
        )
        .await;
    assert_problem(weak, 422, "password_too_common").await;
    let changed = app
        .post_authed(
            "/api/v1/me/password",
            &stepped,
            json!({"current_password": PASSWORD, "new_password": "another fine passphrase"}),
        )
        .await;
    assert_eq!(changed.status(), 204);

    assert_problem(
        app.post_json("/api/v1/auth/refresh", json!({"refresh_token": me.refresh}))
            .await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(app.login(&me.email, PASSWORD).await.status(), 401);
    assert_eq!(
        app.login(&me.email, "another fine passphrase")
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn codes_are_single_use_bound_to_their_purpose_expire_and_die_after_five_wrong_guesses() {
    let (app, twilio, _) = app_with_fakes().await;
    let me = sign_up_with_phone(&app).await;
    let verify = |purpose: &'static str, code: String| {
        let (app, token) = (&app, me.access.clone());
        async move {
            app.post_authed(
                "/api/v1/auth/phone/verify",
                &token,
                json!({"purpose": purpose, "code": code}),
            )
            .await
        }
    };

    app.post_authed(
        "/api/v1/auth/phone/otp",
        &me.access,
        json!({"purpose": "verify_phone"}),
    )
    .await;
    let code = last_code(&twilio, &me.phone);
    assert_problem(verify("step_up", code.clone()).await, 400, "invalid_code").await;
    let ok = verify("verify_phone", code.clone()).await;
    assert_eq!(ok.status(), 200);
    let profile: Value = app
        .get_authed("/api/v1/me", &me.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["phone_verified"], true);
    assert_problem(verify("verify_phone", code).await, 400, "invalid_code").await;

    app.post_authed(
        "/api/v1/auth/phone/otp",
        &me.access,
        json!({"purpose": "verify_phone"}),
    )
    .await;
    let code = last_code(&twilio, &me.phone);
    app.clock.advance(Duration::from_secs(10 * 60 + 1));
    assert_problem(verify("verify_phone", code).await, 400, "invalid_code").await;

    app.post_authed(
        "/api/v1/auth/phone/otp",
        &me.access,
        json!({"purpose": "step_up"}),
    )
    .await;
    let code = last_code(&twilio, &me.phone);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        assert_problem(
            verify("step_up", wrong.to_owned()).await,
            400,
            "invalid_code",
        )
        .await;
    }
    assert_problem(verify("step_up", code).await, 429, "code_exhausted").await;

    assert_problem(
        verify("step_up", "12345".to_owned()).await,
        422,
        "validation_failed",
    )
    .await;
}

#[actix_web::test]
async fn sms_sends_beyond_the_hourly_cap_are_refused_and_never_reach_twilio() {
    let (app, twilio, _) = app_with_fakes().await;
    let me = sign_up_with_phone(&app).await;
    for _ in 0..5 {
        let r = app
            .post_authed(
                "/api/v1/auth/phone/otp",
                &me.access,
                json!({"purpose": "verify_phone"}),
            )
            .await;
        assert_eq!(r.status(), 202);
    }
    let capped = app
        .post_authed(
            "/api/v1/auth/phone/otp",
            &me.access,
            json!({"purpose": "step_up"}),
        )
        .await;
    assert!(capped.headers().contains_key("retry-after"));
    assert_problem(capped, 429, "too_many_attempts").await;
    assert_eq!(twilio.received().len(), 5);
}

#[actix_web::test]
async fn a_code_needs_a_phone_on_the_account() {
    let (app, twilio, _) = app_with_fakes().await;
    let (access, _, _) = app.signed_in("customer").await;
    let r = app
        .post_authed(
            "/api/v1/auth/phone/otp",
            &access,
            json!({"purpose": "step_up"}),
        )
        .await;
    assert_problem(r, 409, "phone_missing").await;
    assert!(twilio.received().is_empty());
}

#[actix_web::test]
async fn email_addresses_are_verified_by_a_single_use_link() {
    let (app, _, smtp) = app_with_fakes().await;
    let me = sign_up_with_phone(&app).await;
    let r = app
        .post_authed("/api/v1/auth/email/verify/request", &me.access, json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let token = last_token(&smtp, &me.email);
    let mail = smtp.received().pop().unwrap();
    assert!(
        decode_quoted_printable(&mail.body())
            .contains("https://shop.example.com/verify-email?token=")
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your email address")
    );

    assert_problem(
        app.post_json("/api/v1/auth/email/verify/confirm", json!({"token": "x.y"}))
            .await,
        400,
        "invalid_token",
    )
    .await;
    assert_eq!(
        app.post_json("/api/v1/auth/email/verify/confirm", json!({"token": token}))
            .await
            .status(),
        204
    );
    let profile: Value = app
        .get_authed("/api/v1/me", &me.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["email_verified"], true);
    assert_problem(
        app.post_json("/api/v1/auth/email/verify/confirm", json!({"token": token}))
            .await,
        400,
        "invalid_token",
    )
    .await;
    let again = app
        .post_authed("/api/v1/auth/email/verify/request", &me.access, json!({}))
        .await;
    assert_problem(again, 409, "email_already_verified").await;
}

#[actix_web::test]
async fn a_password_reset_link_works_once_within_thirty_minutes_and_ends_every_session() {
    let (app, _, smtp) = app_with_fakes().await;
    let me = sign_up_with_phone(&app).await;

    let unknown = app
        .post_json(
            "/api/v1/auth/password/forgot",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(unknown.status(), 202);
    let garbage = app
        .post_json(
            "/api/v1/auth/password/forgot",
            json!({"email": "not an email"}),
        )
        .await;
    assert_eq!(garbage.status(), 202);
    assert!(
        smtp.received().is_empty(),
        "nothing is sent for unknown addresses"
    );

    assert_eq!(
        app.post_json("/api/v1/auth/password/forgot", json!({"email": me.email}))
            .await
            .status(),
        202
    );
    let expired = last_token(&smtp, &me.email);
    app.clock.advance(Duration::from_secs(31 * 60));
    let r = app
        .post_json(
            "/api/v1/auth/password/reset",
            json!({"token": expired, "new_password": "a brand new secret"}),
        )
        .await;
    assert_problem(r, 400, "invalid_token").await;

    app.post_json("/api/v1/auth/password/forgot", json!({"email": me.email}))
        .await;
    let token = last_token(&smtp, &me.email);
    let weak = app
        .post_json(
            "/api/v1/auth/password/reset",
            json!({"token": token, "new_password": "short"}),
        )
        .await;
    assert_problem(weak, 422, "password_too_short").await;
    let reset = app
        .post_json(
            "/api/v1/auth/password/reset",
            json!({"token": token, "new_password": "a brand new secret"}),
        )
        .await;
    assert_eq!(reset.status(), 204);
    let reused = app
        .post_json(
            "/api/v1/auth/password/reset",
            json!({"token": token, "new_password": "yet another secret"}),
        )
        .await;
    assert_problem(reused, 400, "invalid_token").await;

    assert_eq!(
        app.post_json("/api/v1/auth/refresh", json!({"refresh_token": me.refresh}))
            .await
            .status(),
        401
    );
    assert_eq!(app.login(&me.email, PASSWORD).await.status(), 401);
    assert_eq!(
        app.login(&me.email, "a brand new secret").await.status(),
        200
    );
}

#[actix_web::test]
async fn changing_the_email_needs_a_step_up_and_frees_the_old_address() {
    let (app, twilio, _) = app_with_fakes().await;
    let me = sign_up_with_phone(&app).await;
    let new_email = format!("moved-{}@example.com", uuid::Uuid::now_v7().simple());
    let plain = app
        .post_authed("/api/v1/me/email", &me.access, json!({"email": new_email}))
        .await;
    assert_problem(plain, 403, "step_up_required").await;

    app.post_authed(
        "/api/v1/auth/phone/otp",
        &me.access,
        json!({"purpose": "step_up"}),
    )
    .await;
    let verified: Value = app
        .post_authed(
            "/api/v1/auth/phone/verify",
            &me.access,
            json!({"purpose": "step_up", "code": last_code(&twilio, &me.phone)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let stepped = verified["access_token"].as_str().unwrap();

    let (_, _, _) = app.signed_in("vendor").await;
    let changed = app
        .post_authed("/api/v1/me/email", stepped, json!({"email": new_email}))
        .await;
    assert_eq!(changed.status(), 200);
    let profile: Value = changed.json().await.unwrap();
    assert_eq!(profile["email"], new_email);
    assert_eq!(profile["email_verified"], false);

    assert_eq!(app.login(&new_email, PASSWORD).await.status(), 200);
    assert_eq!(app.login(&me.email, PASSWORD).await.status(), 401);
    assert_eq!(
        app.register(&me.email, "customer").await.status(),
        201,
        "the old address is free"
    );
    let taken = app
        .post_authed("/api/v1/me/email", stepped, json!({"email": me.email}))
        .await;
    assert_problem(taken, 409, "email_taken").await;
}

#[actix_web::test]
async fn without_twilio_and_smtp_messages_go_to_the_outbox() {
    let app = crate::helpers::spawn_app().await;
    let me = sign_up_with_phone(&app).await;
    assert_eq!(
        app.post_authed(
            "/api/v1/auth/phone/otp",
            &me.access,
            json!({"purpose": "verify_phone"})
        )
        .await
        .status(),
        202
    );
    assert_eq!(
        app.post_authed("/api/v1/auth/email/verify/request", &me.access, json!({}))
            .await
            .status(),
        202
    );

    let outbox = app.data_dir.path().join("outbox");
    let sms = std::fs::read_to_string(outbox.join("sms.jsonl")).unwrap();
    let line: Value = serde_json::from_str(sms.lines().last().unwrap()).unwrap();
    assert_eq!(line["to"], me.phone);
    let code = six_digits(line["body"].as_str().unwrap());
    let ok = app
        .post_authed(
            "/api/v1/auth/phone/verify",
            &me.access,
            json!({"purpose": "verify_phone", "code": code}),
        )
        .await;
    assert_eq!(ok.status(), 200);

    let mails: Vec<_> = std::fs::read_dir(outbox.join("email"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mails.len(), 1);
    let eml = std::fs::read_to_string(&mails[0]).unwrap();
    assert!(eml.contains("Subject: Confirm your email address"));
    assert!(eml.contains(&format!("To: {}", me.email)));
}
