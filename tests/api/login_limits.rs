//! Login limits per client address: only failures count, the address is the proxy's report
//! only when the proxy is trusted, and a Redis outage falls back to the node's own limiter.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, free_port, spawn_app, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple";
/// Failed logins one address may make in 15 minutes.
const ADDRESS_LIMIT: usize = 30;

fn unique_email() -> String {
    format!("limits-{}@example.com", uuid::Uuid::now_v7().simple())
}

impl TestApp {
    /// A login sent with a forwarding header.
    async fn login_via(
        &self,
        header: &str,
        value: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .header(header, value)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }
}

/// Fails logins, each on another (unknown) account so that no per-account limit is reached,
/// sending `X-Forwarded-For: forwarded(i)`, until the address is refused; which must not
/// happen before `ADDRESS_LIMIT` failures. (Allowing a few more keeps a slow machine, on which
/// a failure's worth of the window passes, from failing the test.)
async fn fail_until_refused(app: &TestApp, forwarded: impl Fn(usize) -> String) {
    for i in 0..ADDRESS_LIMIT + 10 {
        let r = app
            .login_via("x-forwarded-for", &forwarded(i), &unique_email(), PASSWORD)
            .await;
        if r.status() == 429 {
            assert!(i >= ADDRESS_LIMIT, "refused after only {i} failures");
            return;
        }
        assert_eq!(r.status(), 401, "failure {i}");
    }
    panic!("the address was never refused");
}

#[actix_web::test]
async fn forty_successful_logins_from_one_address_all_pass_but_failures_lock_it_out() {
    let app = spawn_app().await;
    let email = unique_email();
    assert_eq!(app.register(&email, "customer").await.status(), 201);
    for i in 0..40 {
        assert_eq!(app.login(&email, PASSWORD).await.status(), 200, "login {i}");
    }

    fail_until_refused(&app, |_| "198.51.100.1".to_owned()).await;
    // The address is locked out, for the right password too.
    let locked = app.login(&email, PASSWORD).await;
    assert!(locked.headers().contains_key("retry-after"));
    assert_problem(locked, 429, "too_many_attempts").await;
}

#[actix_web::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // Nobody is trusted by default: every forged address is the test's own.
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, "customer").await;
    fail_until_refused(&app, |i| format!("203.0.113.{i}")).await;
    assert_problem(
        app.login_via("x-forwarded-for", "192.0.2.200", &email, PASSWORD)
            .await,
        429,
        "too_many_attempts",
    )
    .await;
    assert_problem(
        app.login_via("forwarded", "for=192.0.2.201", &email, PASSWORD)
            .await,
        429,
        "too_many_attempts",
    )
    .await;
}

#[actix_web::test]
async fn a_trusted_proxy_reports_the_client_address() {
    let app = spawn_app_with(|s| {
        s.client_address = hexmarket::config::ClientAddressSettings {
            trusted_proxies: hexmarket::config::parse_trusted_proxies("127.0.0.1, ::1").unwrap(),
            header: hexmarket::config::ForwardedHeader::XForwardedFor,
        };
    })
    .await;
    let email = unique_email();
    app.register(&email, "customer").await;
    // The client forged the left entry; the proxy (us) appended the right one.
    fail_until_refused(&app, |_| "6.6.6.6, 198.51.100.7".to_owned()).await;
    assert_problem(
        app.login_via("x-forwarded-for", "198.51.100.7", &email, PASSWORD)
            .await,
        429,
        "too_many_attempts",
    )
    .await;
    // Another client behind the same proxy is not affected, nor is the proxy itself.
    for from in ["198.51.100.8", "6.6.6.6, 198.51.100.9"] {
        assert_eq!(
            app.login_via("x-forwarded-for", from, &email, PASSWORD)
                .await
                .status(),
            200,
            "{from}"
        );
    }
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
}

#[actix_web::test]
async fn logins_and_limits_go_on_while_redis_is_down_and_metrics_count_the_fallbacks() {
    let port = free_port();
    let app = spawn_app_with(|s| {
        s.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        s.redis_prefix = format!("test_{}", uuid::Uuid::new_v4().simple());
    })
    .await;
    let email = unique_email();
    assert_eq!(app.register(&email, "customer").await.status(), 201);
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);

    // Brute-force protection still holds, on this node's own limiter.
    for _ in 0..5 {
        assert_eq!(app.login(&email, "wrong password!!").await.status(), 401);
    }
    assert_problem(app.login(&email, PASSWORD).await, 429, "too_many_attempts").await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let fallbacks: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hexmarket_rate_limiter_fallbacks_total "))
        .expect("the fallback counter is exported")
        .trim()
        .parse()
        .unwrap();
    assert!(fallbacks >= 7, "{fallbacks} fallbacks counted");

    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
}
