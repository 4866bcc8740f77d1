//! The simulation's side of the wire: an HTTP client of the node's public API (JSON in and
//! out, problem details read on refusals), signed-in sessions that keep their access token
//! fresh, and WebSockets opened with a bearer token. Nothing here reaches into the node: the
//! simulated people are clients like any other, on loopback.

use std::time::Duration;

use futures_util::SinkExt as _;
use reqwest013::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound of one HTTP request (the node is on loopback: anything slower is a stall).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound of a WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An access token with less than this left is refreshed before it is used.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A WebSocket to the node.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a call did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("request failed: {0}")]
    Network(#[from] reqwest013::Error),
    #[error("{status} {code}: {detail}")]
    Refused {
        status: u16,
        code: String,
        detail: String,
    },
    #[error("unexpected answer: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("WebSocket: {0}")]
    Socket(Box<tungstenite::Error>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the socket closed: {reason}")]
    Closed { code: Option<u16>, reason: String },
    #[error("{0}")]
    Local(String),
}

impl From<tungstenite::Error> for CallError {
    fn from(e: tungstenite::Error) -> Self {
        CallError::Socket(Box::new(e))
    }
}

impl CallError {
    /// The socket ended with `frame` (or with none).
    pub fn closed(frame: Option<&tungstenite::protocol::CloseFrame>) -> CallError {
        match frame {
            Some(frame) => CallError::Closed {
                code: Some(u16::from(frame.code)),
                reason: format!("{} {}", u16::from(frame.code), frame.reason.as_str()),
            },
            None => CallError::Closed {
                code: None,
                reason: "without a close frame".into(),
            },
        }
    }

    /// A close the node makes in its ordinary course: the access token ran out (4001; the
    /// session reconnects with a fresh one) or the node is stopping (1001).
    pub fn is_expected_close(&self) -> bool {
        matches!(
            self,
            CallError::Closed {
                code: Some(4001 | 1001),
                ..
            }
        )
    }

    /// The problem's `code` of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the same request may well succeed later: the network, the node busy or
    /// restarting (5xx, 429), or a conflict the README says to retry.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Refused { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "request_in_progress" | "contended" | "conflict" | "cart_contended"
                    )
            }
            CallError::Decode(_) => false,
            _ => true,
        }
    }
}

/// The node's public API at one base URL.
#[derive(Clone)]
pub struct Api {
    http: reqwest013::Client,
    base: String,
}

impl Api {
    /// A client of the node at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> anyhow::Result<Api> {
        // The client's TLS (never used on loopback, but built with the client) takes the
        // process's crypto provider, ring as everywhere here; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest013::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest013::redirect::Policy::none())
            .build()?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends one request; a 2xx answer is decoded as `T` (an empty body as JSON `null`),
    /// anything else is a [`CallError::Refused`] with the problem's code.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<T, CallError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        if (200..300).contains(&status) {
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return Ok(serde_json::from_slice(bytes)?);
        }
        let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |field: &str| {
            problem
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Err(CallError::Refused {
            status,
            code: text("code"),
            detail: text("detail"),
        })
    }

    /// `GET path` as a guest.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(Method::GET, path, None, None, None).await
    }

    /// The WebSocket URL of `path` on this node.
    fn ws_url(&self, path: &str) -> String {
        let base = self
            .base
            .strip_prefix("http")
            .map_or_else(|| self.base.clone(), |rest| format!("ws{rest}"));
        format!("{base}{path}")
    }

    /// Opens the WebSocket at `path` with `Authorization: Bearer <token>`.
    pub async fn socket(&self, path: &str, token: &str) -> Result<Socket, CallError> {
        let mut request = self.ws_url(path).into_client_request()?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| CallError::Local(format!("an access token unfit for a header: {e}")))?;
        request.headers_mut().insert("authorization", bearer);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
        {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(CallError::Timeout(HANDSHAKE_TIMEOUT)),
        }
    }
}

/// Sends one JSON text frame.
pub async fn send(socket: &mut Socket, frame: &Value) -> Result<(), CallError> {
    socket.send(Message::text(frame.to_string())).await?;
    Ok(())
}

/// What `POST /auth/login` and `/auth/refresh` answer.
#[derive(Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

/// `GET /me`: who the session is.
#[derive(Deserialize)]
struct Me {
    id: String,
}

/// A signed-in demo account: logs in, refreshes its access token before it runs out (or logs
/// in again when the refresh is refused), and retries a request once with a fresh token when
/// the node answers 401.
pub struct Session {
    api: Api,
    email: String,
    password: String,
    access: String,
    refresh: String,
    fresh_until: Instant,
    /// The account's user id.
    pub user_id: String,
}

impl Session {
    pub async fn login(api: &Api, email: &str, password: &str) -> Result<Session, CallError> {
        let mut session = Session {
            api: api.clone(),
            email: email.to_owned(),
            password: password.to_owned(),
            access: String::new(),
            refresh: String::new(),
            fresh_until: Instant::now(),
            user_id: String::new(),
        };
        session.sign_in().await?;
        let me: Me = session.get("/api/v1/me").await?;
        session.user_id = me.id;
        Ok(session)
    }

    /// The account's email address.
    pub fn email(&self) -> &str {
        &self.email
    }

    async fn sign_in(&mut self) -> Result<(), CallError> {
        let body = json!({"email": self.email, "password": self.password});
        let tokens: Tokens = self
            .api
            .call(Method::POST, "/api/v1/auth/login", None, Some(&body), None)
            .await?;
        self.take(tokens);
        Ok(())
    }

    fn take(&mut self, tokens: Tokens) {
        self.access = tokens.access_token;
        self.refresh = tokens.refresh_token;
        let lifetime = Duration::from_secs(tokens.expires_in);
        self.fresh_until = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN);
    }

    /// An access token with at least a minute left.
    pub async fn token(&mut self) -> Result<String, CallError> {
        if Instant::now() >= self.fresh_until {
            let body = json!({"refresh_token": self.refresh});
            let refreshed: Result<Tokens, CallError> = self
                .api
                .call(
                    Method::POST,
                    "/api/v1/auth/refresh",
                    None,
                    Some(&body),
                    None,
                )
                .await;
            match refreshed {
                Ok(tokens) => self.take(tokens),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::debug!(email = %self.email, error = %e, "refresh refused; logging in again");
                    self.sign_in().await?;
                }
            }
        }
        Ok(self.access.clone())
    }

    /// Sends a request as this account (see [`Api::call`]).
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<T, CallError> {
        let token = self.token().await?;
        let answer = self
            .api
            .call(method.clone(), path, Some(&token), body, idempotency_key)
            .await;
        match answer {
            Err(CallError::Refused { status: 401, .. }) => {
                // Revoked or expired early (a clock jump): a new login, then once more.
                self.sign_in().await?;
                let token = self.access.clone();
                self.api
                    .call(method, path, Some(&token), body, idempotency_key)
                    .await
            }
            other => other,
        }
    }

    /// [`call`](Self::call), tried again while the node answers something that may pass
    /// later ([`CallError::is_transient`]: a checkout whose key is still in progress, a busy
    /// node), `tries` times in all.
    pub async fn call_patiently<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
        tries: u32,
    ) -> Result<T, CallError> {
        let mut attempt = 1;
        loop {
            match self.call(method.clone(), path, body, idempotency_key).await {
                Err(e) if e.is_transient() && attempt < tries => {
                    tracing::debug!(email = %self.email, path, error = %e, attempt, "trying again");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, CallError> {
        self.call(Method::GET, path, None, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &Value,
    ) -> Result<T, CallError> {
        self.call(Method::POST, path, Some(body), None).await
    }

    /// Opens the WebSocket at `path` as this account.
    pub async fn socket(&mut self, path: &str) -> Result<Socket, CallError> {
        let token = self.token().await?;
        self.api.socket(path, &token).await
    }
}

/// A place as the API writes it.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

/// A store as `GET /vendors` lists it (the fields the simulation reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Store {
    pub id: String,
    pub name: String,
    pub location: LatLng,
    pub delivery_radius_km: f64,
}

/// A page of `GET /vendors`.
#[derive(Debug, Deserialize)]
pub struct StorePage {
    pub items: Vec<Store>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A product as `GET /products` finds it.
#[derive(Debug, Deserialize)]
pub struct Product {
    pub id: String,
    pub title: String,
    pub available: u32,
}

/// A page of `GET /products`.
#[derive(Debug, Deserialize)]
pub struct ProductPage {
    pub items: Vec<Product>,
}

/// Where an order goes, as the order records it.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderAddress {
    pub location: LatLng,
}

/// An order (the fields the simulation reads). `handoff_code` only for its customer.
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub id: String,
    pub vendor_id: String,
    pub status: String,
    #[serde(default)]
    pub courier_id: Option<String>,
    #[serde(default)]
    pub delivery_address: Option<OrderAddress>,
    #[serde(default)]
    pub handoff_code: Option<String>,
}

impl Order {
    /// Whether the order reached an end: nothing more happens to it.
    pub fn is_closed(&self) -> bool {
        is_closed(&self.status)
    }
}

/// Whether an order status is an end.
pub fn is_closed(status: &str) -> bool {
    matches!(
        status,
        "delivered" | "rejected" | "cancelled" | "payment_failed" | "expired" | "refunded"
    )
}

/// A checkout's answer (the fields the simulation reads).
#[derive(Debug, Deserialize)]
pub struct Checkout {
    pub orders: Vec<Order>,
    pub payment: Payment,
}

#[derive(Debug, Deserialize)]
pub struct Payment {
    pub id: String,
}
