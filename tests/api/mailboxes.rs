//! One account per mailbox: addresses compared in canonical form (case-folded, normalised,
//! IDNA domain) for registration, login, email changes and resets; accounts from before that
//! (legacy index rows) keep working; shared mailboxes are reported, never merged.

use std::sync::Arc;

use hexmarket::domain::identity::{Email, Role};
use hexmarket::domain::ids::UserId;
use hexmarket::store::SharedStore;
use hexmarket::store::embedded::EmbeddedStore;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app, spawn_in};

const PASSWORD: &str = "correct horse battery staple";

fn tag() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

async fn user_id_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let claims = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn case_variants_of_one_mailbox_register_one_account_that_logs_in_with_any() {
    let app = spawn_app().await;
    let t = tag();
    let forms = [
        format!("Case-X-{t}@Example.com"),
        format!("case-X-{t}@example.com"),
        format!("CASE-X-{t}@EXAMPLE.COM"),
    ];
    let created = app.register(&forms[0], "customer").await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["email"], forms[0], "the address is shown as typed");
    for other in &forms[1..] {
        assert_problem(app.register(other, "vendor").await, 409, "email_taken").await;
    }
    // Unicode variants of the same mailbox too: fullwidth letters and an IDNA domain.
    assert_problem(
        app.register(&format!("ｃａｓｅ-x-{t}@example.com"), "customer")
            .await,
        409,
        "email_taken",
    )
    .await;

    for form in &forms {
        assert_eq!(
            user_id_of(app.login(form, PASSWORD).await).await,
            created["id"].as_str().unwrap()
        );
    }
}

#[actix_web::test]
async fn unicode_domains_are_one_mailbox_with_their_punycode() {
    let app = spawn_app().await;
    let t = tag();
    assert_eq!(
        app.register(&format!("jane-{t}@Bücher.example"), "customer")
            .await
            .status(),
        201
    );
    assert_problem(
        app.register(&format!("JANE-{t}@xn--bcher-kva.example"), "customer")
            .await,
        409,
        "email_taken",
    )
    .await;
    assert_eq!(
        app.login(&format!("jane-{t}@BÜCHER.example"), PASSWORD)
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn email_changes_and_resets_compare_mailboxes_in_canonical_form() {
    let app = spawn_app().await;
    let t = tag();
    let alice = format!("alice-{t}@example.com");
    let bob = format!("bob-{t}@example.com");
    assert_eq!(app.register(&alice, "customer").await.status(), 201);
    let bob_account: Value = app.register(&bob, "customer").await.json().await.unwrap();
    let bob_token = app.stepped_up_token(bob_account["id"].as_str().unwrap(), Role::Customer);
    let change = |email: String| {
        app.client
            .post(app.url("/api/v1/me/email"))
            .bearer_auth(&bob_token)
            .json(&json!({ "email": email }))
            .send()
    };

    // Alice's mailbox in another case is still Alice's.
    assert_problem(
        change(alice.to_uppercase()).await.unwrap(),
        409,
        "email_taken",
    )
    .await;
    // Bob may respell his own address; it stays his, and he logs in with either.
    let respelled = format!("Bob-{t}@Example.com");
    let changed = change(respelled.clone()).await.unwrap();
    assert_eq!(changed.status(), 200);
    let profile: Value = changed.json().await.unwrap();
    assert_eq!(profile["email"], respelled);
    assert_eq!(app.login(&bob, PASSWORD).await.status(), 200);

    // A reset asked for in any case reaches the one account.
    let found = app
        .identity
        .users
        .find_by_email(&Email::parse(&alice.to_uppercase()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.value.email.as_str(), alice);
    let forgot = app
        .post_json(
            "/api/v1/auth/password/forgot",
            json!({"email": format!("ALICE-{t}@EXAMPLE.COM")}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let outbox = app.data_dir.path().join("outbox").join("email");
    let mails = std::fs::read_dir(outbox).unwrap().count();
    assert_eq!(mails, 1, "one reset email, to Alice's account");
}

/// An account as versions before canonical emails wrote it, with the tests' password.
async fn seed_legacy_account(store: &SharedStore, email: &str, age_days: i64) -> UserId {
    hexmarket::store_contract::seed_legacy_account(store, email, age_days, PASSWORD)
        .await
        .unwrap()
}

async fn report(dir: &std::path::Path) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hexmarket"))
        .arg("report-duplicate-emails")
        .env_clear()
        .env("HEXMARKET_DATA_DIR", dir)
        .env("HEXMARKET_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[actix_web::test]
async fn the_report_command_lists_accounts_sharing_a_mailbox_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = report(dir.path()).await;
    assert_eq!(code, Some(0), "{out}");

    let t = tag();
    let (older, younger) = {
        let store: SharedStore = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
        let older = seed_legacy_account(&store, &format!("Dup-{t}@Example.com"), 2).await;
        let younger = seed_legacy_account(&store, &format!("DUP-{t}@example.com"), 1).await;
        (older, younger)
    };
    let (code, out) = report(dir.path()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("dup-{t}@example.com (2 accounts)")),
        "{out}"
    );
    assert!(out.contains(&older.to_string()) && out.contains(&younger.to_string()));

    // A node on that store backfills, logs both in, and refuses a third account.
    let app = spawn_in(dir, |_| {}).await;
    assert_eq!(
        user_id_of(app.login(&format!("dup-{t}@EXAMPLE.COM"), PASSWORD).await).await,
        older.to_string()
    );
    assert_eq!(
        user_id_of(app.login(&format!("DUP-{t}@example.com"), PASSWORD).await).await,
        younger.to_string()
    );
    assert_problem(
        app.register(&format!("dup-{t}@example.com"), "customer")
            .await,
        409,
        "email_taken",
    )
    .await;
    let dir = app.stop().await;
    // Nothing was merged.
    let (code, out) = report(dir.path()).await;
    assert_eq!(code, Some(1), "{out}");
}
