//! Spawning hexmarket nodes for tests: each test gets its own data directory and port.

use std::net::TcpListener;
use std::time::Duration;

use hexmarket::app::Application;
use hexmarket::catalog::Catalog;
use hexmarket::clock::Clock;
use hexmarket::config::Settings;
use hexmarket::identity::Identity;
use hexmarket::store::SharedStore;
use serde_json::Value;
use tempfile::TempDir;

/// A running node on an ephemeral port, and a client for it.
pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub clock: Clock,
    pub identity: Identity,
    /// The node's catalog (its store, search index and services), for fixtures and checks.
    pub catalog: Catalog,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    handle: hexmarket::app::NodeHandle,
    stopped: Option<actix_web::rt::task::JoinHandle<anyhow::Result<()>>>,
}

/// Spawns a node on the embedded store in a fresh directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns a node after letting the test adjust its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    spawn_in(data_dir, adjust).await
}

/// Spawns a node whose data lives in `data_dir` (to restart on the same data).
pub async fn spawn_in(data_dir: TempDir, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::for_data_dir(data_dir.path());
    settings.workers = 2;
    settings.secure_cookies = false;
    settings.actor_threads = 2;
    adjust(&mut settings);
    let clock = Clock::default();
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let identity = app.identity();
    let catalog = app.catalog();
    let stopped = actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        settings,
        clock,
        identity,
        catalog,
        client: client(),
        data_dir,
        handle,
        stopped: Some(stopped),
    }
}

/// Spawns a second node on `first`'s store (what ScyllaDB would share between nodes), with
/// its own data directory, actors, index and sessions, after letting the test adjust its
/// settings (which start as a copy of the first node's).
pub async fn spawn_peer(first: &TestApp, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = first.settings.clone();
    adjust(&mut settings);
    spawn_on_store(settings, first.catalog.repo.products.store().clone()).await
}

/// Spawns a node on a store that is already open, with `settings` and a data directory of its
/// own (for its index and sessions).
pub async fn spawn_on_store(mut settings: Settings, store: SharedStore) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    settings.data_dir = data_dir.path().to_path_buf();
    let clock = Clock::default();
    let app = Application::build_on_store(settings.clone(), clock.clone(), store)
        .await
        .expect("node builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let identity = app.identity();
    let catalog = app.catalog();
    let stopped = actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        settings,
        clock,
        identity,
        catalog,
        client: client(),
        data_dir,
        handle,
        stopped: Some(stopped),
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the node gracefully and hands back its data directory.
    pub async fn stop(mut self) -> TempDir {
        self.handle.stop(true).await;
        if let Some(stopped) = self.stopped.take() {
            stopped
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        self.data_dir
    }

    pub async fn add_to_cart(&self, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self.client.post(self.url("/api/v1/cart/items")).json(&body);
        if let Some(token) = token {
            request = request.header("X-Cart-Token", token);
        }
        request.send().await.expect("request sent")
    }

    pub async fn get_cart(&self, token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/api/v1/cart"))
            .header("X-Cart-Token", token)
            .send()
            .await
            .expect("request sent")
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Asserts a problem+json response and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["code"], code, "problem code in {body}");
    assert_eq!(body["status"], status);
    body
}

/// Waits until `GET /health` answers, for spawned processes.
pub async fn wait_healthy(base: &str, within: Duration) {
    let client = client();
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server at {base} did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POST without a body, as the holder of `token`.
pub async fn post(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("POST")
}

/// POST a JSON body as the holder of `token`.
pub async fn post_json(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST")
}

/// PATCH a JSON body as the holder of `token`.
pub async fn patch_json(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("PATCH")
}

/// The entries of the holder's in-app feed about `subject` (`ticket:{id}`, `product:{id}`…).
pub async fn notices(app: &TestApp, token: &str, subject: &str) -> Vec<Value> {
    let feed = ok_json(get(app, token, "/api/v1/notifications?limit=100").await).await;
    feed["items"]
        .as_array()
        .expect("feed items")
        .iter()
        .filter(|i| i["subject"] == subject)
        .cloned()
        .collect()
}

/// GET as the holder of `token`.
pub async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
}

/// The JSON body of a response that must be a success.
pub async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// An authenticator app: computes a holder's TOTP codes from the secret, never the same step
/// twice (the server accepts each step once).
pub struct Authenticator {
    secret: hexmarket::identity::totp::TotpSecret,
    clock: Clock,
    last_step: std::sync::atomic::AtomicU64,
}

impl Authenticator {
    /// From a base32 secret or an `otpauth://` URI.
    pub fn new(secret_or_uri: &str, clock: Clock) -> Self {
        let secret = match secret_or_uri.split_once("secret=") {
            Some((_, rest)) => rest.split('&').next().unwrap(),
            None => secret_or_uri,
        };
        Authenticator {
            secret: hexmarket::identity::totp::TotpSecret::from_base32(secret)
                .expect("a base32 TOTP secret"),
            clock,
            last_step: Default::default(),
        }
    }

    /// A code not used before: the current step's, or the next step's (accepted as skew) when
    /// the current one was used. When both were used, the test clock (the node's too) moves
    /// on by a step rather than the test waiting for it.
    pub fn code(&self) -> String {
        use std::sync::atomic::Ordering;
        let step_of = |clock: &Clock| hexmarket::identity::totp::step_of(clock.now().timestamp());
        let next = self.last_step.load(Ordering::SeqCst) + 1;
        if next > step_of(&self.clock) + 1 {
            self.clock.advance(Duration::from_secs(30));
        }
        let step = step_of(&self.clock).max(next);
        self.last_step.store(step, Ordering::SeqCst);
        self.secret.code_at(step)
    }

    /// A code the server has already accepted (the last one handed out).
    pub fn used_code(&self) -> String {
        self.secret
            .code_at(self.last_step.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Creates an administrator as `create-admin` does (its authenticator enrolled at once) and
/// logs in over HTTP at `base` with a code; returns the access token and the authenticator.
pub async fn admin_login(
    identity: &Identity,
    clock: &Clock,
    base: &str,
) -> (String, Authenticator, String) {
    let email = format!("admin-{}@example.com", uuid::Uuid::now_v7().simple());
    let account = hexmarket::identity::NewAccount {
        email: hexmarket::domain::identity::Email::parse(&email).unwrap(),
        password: ADMIN_PASSWORD.to_owned(),
        name: "Admin".to_owned(),
        role: hexmarket::domain::identity::Role::Admin,
        phone: None,
    };
    let admin = identity.register(account).await.unwrap();
    let (enrolment, _) = identity.enrol_totp_now(admin.id).await.unwrap();
    let authenticator = Authenticator::new(&enrolment.uri, clock.clone());
    let tokens = ok_json(
        client()
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({
                "email": email, "password": ADMIN_PASSWORD, "otp": authenticator.code(),
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    (token, authenticator, email)
}

/// The password of administrators made by [`admin_login`].
pub const ADMIN_PASSWORD: &str = "an administrator's long passphrase";

/// Polls `path` until `check` holds of its JSON, failing after `within`.
pub async fn until(
    app: &TestApp,
    token: &str,
    path: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let body = ok_json(get(app, token, path).await).await;
        if check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
