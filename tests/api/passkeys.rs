//! Passkeys through the public API, with a software authenticator that does what a platform
//! authenticator does: a P-256 key per credential, `none` attestation, user verification,
//! a signature counter, and ECDSA signatures over the authenticator data and the client data.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, assert_problem, ok_json, post_json, spawn_app};

/// The origin the default settings allow (the public URL's port on `localhost`).
const ORIGIN: &str = "http://localhost:8080";
const RP_ID: &str = "localhost";

/// One credential in a software authenticator.
struct SoftKey {
    id: Vec<u8>,
    key: SigningKey,
    counter: u32,
    user_handle: Vec<u8>,
}

fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.len() {
        n if n < 24 => out.push(0x40 | n as u8),
        n if n < 256 => out.extend([0x58, n as u8]),
        n => {
            out.push(0x59);
            out.extend((n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    assert!(text.len() < 24);
    out.push(0x60 | text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

impl SoftKey {
    fn new(user_handle: &[u8]) -> Self {
        let secret: [u8; 32] = rand::random();
        SoftKey {
            id: rand::random::<[u8; 16]>().to_vec(),
            key: SigningKey::from_slice(&secret).expect("a P-256 key"),
            counter: 0,
            user_handle: user_handle.to_vec(),
        }
    }

    /// The COSE form of the public key (EC2, ES256, P-256).
    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut out = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cbor_bytes(&mut out, point.x().expect("x").as_slice());
        out.push(0x22);
        cbor_bytes(&mut out, point.y().expect("y").as_slice());
        out
    }

    fn auth_data(&self, rp_id: &str, flags: u8, attested: bool) -> Vec<u8> {
        let mut data = Sha256::digest(rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend(self.counter.to_be_bytes());
        if attested {
            data.extend([0u8; 16]);
            data.extend((self.id.len() as u16).to_be_bytes());
            data.extend(&self.id);
            data.extend(self.cose_key());
        }
        data
    }

    /// What `navigator.credentials.create()` would answer to `options`.
    fn register(&self, options: &Value, origin: &str) -> Value {
        let public_key = &options["publicKey"];
        let client_data = json!({
            "type": "webauthn.create",
            "challenge": public_key["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        let rp_id = public_key["rp"]["id"].as_str().unwrap_or(RP_ID);
        // User present, user verified, attested credential data.
        let auth_data = self.auth_data(rp_id, 0x45, true);
        let mut attestation = vec![0xa3];
        cbor_text(&mut attestation, "fmt");
        cbor_text(&mut attestation, "none");
        cbor_text(&mut attestation, "attStmt");
        attestation.push(0xa0);
        cbor_text(&mut attestation, "authData");
        cbor_bytes(&mut attestation, &auth_data);
        json!({
            "id": B64.encode(&self.id),
            "rawId": B64.encode(&self.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": B64.encode(client_data.as_bytes()),
                "attestationObject": B64.encode(&attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
    }

    /// What `navigator.credentials.get()` would answer to `options` (the counter grows by one
    /// unless `same_counter`, as a cloned authenticator's would not).
    fn assert(&mut self, options: &Value, origin: &str, same_counter: bool) -> Value {
        if !same_counter {
            self.counter += 1;
        }
        let public_key = &options["publicKey"];
        let client_data = json!({
            "type": "webauthn.get",
            "challenge": public_key["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        let auth_data = self.auth_data(RP_ID, 0x05, false);
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(client_data.as_bytes()));
        let signature: Signature = self.key.sign(&signed);
        json!({
            "id": B64.encode(&self.id),
            "rawId": B64.encode(&self.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": B64.encode(client_data.as_bytes()),
                "authenticatorData": B64.encode(&auth_data),
                "signature": B64.encode(signature.to_der().as_bytes()),
                "userHandle": B64.encode(&self.user_handle),
            },
            "clientExtensionResults": {},
        })
    }
}

/// A new customer signed in with a password: (access token, email).
async fn customer(app: &TestApp) -> (String, String) {
    let email = format!("pk-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery staple";
    let response = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({"email": email, "password": password, "name": "Pat Key", "role": "customer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let tokens = ok_json(response).await;
    (tokens["access_token"].as_str().unwrap().to_owned(), email)
}

async fn anonymous(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Registers a software passkey for the signed-in `token`.
async fn register(app: &TestApp, token: &str) -> SoftKey {
    let challenge = ok_json(
        post_json(
            app,
            token,
            "/api/v1/auth/passkeys/register/options",
            json!({}),
        )
        .await,
    )
    .await;
    let handle = B64
        .decode(
            challenge["options"]["publicKey"]["user"]["id"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let key = SoftKey::new(&handle);
    let answer = key.register(&challenge["options"], ORIGIN);
    let response = post_json(
        app,
        token,
        "/api/v1/auth/passkeys/register",
        json!({"ceremony_id": challenge["ceremony_id"], "name": "laptop", "credential": answer}),
    )
    .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    key
}

async fn sign_in_options(app: &TestApp, email: Option<&str>) -> Value {
    let body = match email {
        Some(e) => json!({"email": e}),
        None => json!({}),
    };
    ok_json(anonymous(app, "/api/v1/auth/passkeys/sign-in/options", body).await).await
}

async fn sign_in(app: &TestApp, challenge: &Value, credential: Value) -> reqwest::Response {
    anonymous(
        app,
        "/api/v1/auth/passkeys/sign-in",
        json!({"ceremony_id": challenge["ceremony_id"], "credential": credential}),
    )
    .await
}

#[actix_web::test]
async fn a_passkey_registers_signs_in_and_refuses_clones_and_other_origins() {
    let app = spawn_app().await;
    let (token, email) = customer(&app).await;
    let mut key = register(&app, &token).await;

    let listed = ok_json(crate::helpers::get(&app, &token, "/api/v1/me/passkeys").await).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "laptop");
    assert_eq!(listed[0]["credential_id"], B64.encode(&key.id));

    // Naming the account offers its passkey.
    let challenge = sign_in_options(&app, Some(&email)).await;
    let allowed = &challenge["options"]["publicKey"]["allowCredentials"];
    assert_eq!(allowed[0]["id"], B64.encode(&key.id));
    let answer = key.assert(&challenge["options"], ORIGIN, false);
    let tokens = ok_json(sign_in(&app, &challenge, answer.clone()).await).await;
    assert!(tokens["access_token"].as_str().is_some());

    // The same challenge twice: the ceremony is spent.
    assert_problem(
        sign_in(&app, &challenge, answer).await,
        400,
        "ceremony_unknown",
    )
    .await;

    // Without naming the account: the authenticator's user handle says whose it is.
    let challenge = sign_in_options(&app, None).await;
    let answer = key.assert(&challenge["options"], ORIGIN, false);
    let signed_in = ok_json(sign_in(&app, &challenge, answer).await).await;
    let me = ok_json(
        crate::helpers::get(
            &app,
            signed_in["access_token"].as_str().unwrap(),
            "/api/v1/me",
        )
        .await,
    )
    .await;
    assert_eq!(me["email"], email);
    assert_eq!(me["passkeys"], 1);

    // A clone of the authenticator signs with a counter that did not grow.
    let challenge = sign_in_options(&app, Some(&email)).await;
    let answer = key.assert(&challenge["options"], ORIGIN, true);
    assert_problem(
        sign_in(&app, &challenge, answer).await,
        401,
        "passkey_cloned",
    )
    .await;

    // A page of another origin (a phishing site relaying the challenge).
    let challenge = sign_in_options(&app, Some(&email)).await;
    let answer = key.assert(
        &challenge["options"],
        "https://hexmarket.example.evil",
        false,
    );
    assert_problem(
        sign_in(&app, &challenge, answer).await,
        401,
        "passkey_invalid",
    )
    .await;

    // A credential nobody registered.
    let mut stranger = SoftKey::new(b"someone");
    let challenge = sign_in_options(&app, None).await;
    let answer = stranger.assert(&challenge["options"], ORIGIN, false);
    assert_problem(
        sign_in(&app, &challenge, answer).await,
        401,
        "passkey_not_recognised",
    )
    .await;

    // Garbage where the credential goes changes nothing and says which field.
    let challenge = sign_in_options(&app, None).await;
    let body = assert_problem(
        sign_in(&app, &challenge, json!({"id": 3})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "credential");

    // After all that, the real authenticator still signs in (its counter kept growing).
    let challenge = sign_in_options(&app, Some(&email)).await;
    let answer = key.assert(&challenge["options"], ORIGIN, false);
    ok_json(sign_in(&app, &challenge, answer).await).await;
}

/// Steps `token`'s account up with `key`'s answer to its challenge.
async fn step_up(app: &TestApp, token: &str, key: &mut SoftKey) -> reqwest::Response {
    let challenge = ok_json(
        post_json(
            app,
            token,
            "/api/v1/auth/step-up/passkey/options",
            json!({}),
        )
        .await,
    )
    .await;
    let answer = key.assert(&challenge["options"], ORIGIN, false);
    post_json(
        app,
        token,
        "/api/v1/auth/step-up/passkey",
        json!({"ceremony_id": challenge["ceremony_id"], "credential": answer}),
    )
    .await
}

#[actix_web::test]
async fn a_passkey_steps_up_and_is_removed_but_never_the_last_way_in() {
    let app = spawn_app().await;
    let (token, _) = customer(&app).await;
    let mut key = register(&app, &token).await;

    // A sensitive operation wants a step-up; a passkey gives one.
    assert_problem(
        post_json(&app, &token, "/api/v1/auth/totp/recovery-codes", json!({})).await,
        403,
        "step_up_required",
    )
    .await;
    let stepped = ok_json(step_up(&app, &token, &mut key).await).await;
    let stepped = stepped["access_token"].as_str().unwrap();
    // Past the step-up check: what is left is that no authenticator app is enrolled.
    assert_problem(
        post_json(&app, stepped, "/api/v1/auth/totp/recovery-codes", json!({})).await,
        409,
        "totp_not_enrolled",
    )
    .await;

    // Another account cannot answer this account's step-up challenge with its own passkey.
    let (other_token, _) = customer(&app).await;
    let mut other = register(&app, &other_token).await;
    assert_problem(
        step_up(&app, &token, &mut other).await,
        401,
        "passkey_not_recognised",
    )
    .await;

    // An account with no password (as one made through an identity provider) and two
    // passkeys may drop one of them, never the last.
    let me = ok_json(crate::helpers::get(&app, &token, "/api/v1/me").await).await;
    let user_id: hexmarket::domain::ids::UserId = serde_json::from_value(me["id"].clone()).unwrap();
    app.identity
        .modify_user(user_id, |u| {
            u.password_hash = String::new();
            Ok(())
        })
        .await
        .unwrap();
    register(&app, &token).await;
    let listed = ok_json(crate::helpers::get(&app, &token, "/api/v1/me/passkeys").await).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let delete = |id: String| {
        let request = app
            .client
            .delete(app.url(&format!("/api/v1/me/passkeys/{id}")))
            .bearer_auth(&token);
        async move { request.send().await.unwrap() }
    };
    let first = listed[0]["id"].as_str().unwrap().to_owned();
    let second = listed[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(delete(first).await.status(), 204);
    assert_problem(delete(second).await, 409, "last_sign_in_method").await;
    let challenge = sign_in_options(&app, None).await;
    let answer = key.assert(&challenge["options"], ORIGIN, false);
    assert_problem(
        sign_in(&app, &challenge, answer).await,
        401,
        "passkey_not_recognised",
    )
    .await;
}

#[actix_web::test]
async fn a_ceremony_started_on_one_node_finishes_on_another_once() {
    let first = spawn_app().await;
    let second = crate::helpers::spawn_peer(&first, |_| {}).await;
    let (token, email) = customer(&first).await;
    let mut key = register(&first, &token).await;

    // The challenge comes from one node; the answer lands on the other.
    let challenge = sign_in_options(&first, Some(&email)).await;
    let answer = key.assert(&challenge["options"], ORIGIN, false);
    ok_json(sign_in(&second, &challenge, answer.clone()).await).await;
    // Neither node takes it again.
    assert_problem(
        sign_in(&first, &challenge, answer).await,
        400,
        "ceremony_unknown",
    )
    .await;

    // The counter the second node recorded holds on the first: a replayed count is a clone.
    let challenge = sign_in_options(&first, Some(&email)).await;
    let answer = key.assert(&challenge["options"], ORIGIN, true);
    assert_problem(
        sign_in(&first, &challenge, answer).await,
        401,
        "passkey_cloned",
    )
    .await;
}

#[actix_web::test]
async fn failed_passkey_sign_ins_count_against_the_address_like_failed_logins() {
    let app = spawn_app().await;
    let mut stranger = SoftKey::new(b"nobody here");
    let mut refused = 0;
    let mut limited = None;
    for _ in 0..40 {
        let challenge = sign_in_options(&app, None).await;
        let answer = stranger.assert(&challenge["options"], ORIGIN, false);
        let response = sign_in(&app, &challenge, answer).await;
        match response.status().as_u16() {
            401 => refused += 1,
            429 => {
                limited = Some(assert_problem(response, 429, "too_many_attempts").await);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(refused, 30, "30 failures pass, the 31st is refused");
    assert!(limited.is_some());
}

#[actix_web::test]
async fn link_tokens_are_measured_in_characters_as_documented() {
    let app = spawn_app().await;
    // 64 characters of two bytes each: within the document's limit, so simply unknown.
    let wide = "é".repeat(64);
    let link = anonymous(
        &app,
        "/api/v1/auth/oidc/link",
        json!({"link_token": wide, "password": "correct horse battery staple"}),
    )
    .await;
    assert_problem(link, 400, "ceremony_unknown").await;
    // One more is over the limit.
    let long = anonymous(
        &app,
        "/api/v1/auth/oidc/link",
        json!({"link_token": "é".repeat(65), "password": "x"}),
    )
    .await;
    assert_problem(long, 422, "validation_failed").await;
}
