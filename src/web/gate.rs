//! Authentication, origin and connection caps at the WebSocket handshake: everything an
//! endpoint checks before it upgrades, answered as plain HTTP problems (no upgrade on refusal).
//!
//! Owns the per-node count of open sessions per user and the single-use tickets
//! (`Table::WsTickets`) that let browsers, which cannot set `Authorization` on a WebSocket,
//! open one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, ORIGIN};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::ApiError;
use super::extract::AuthUser;
use crate::clock::Clock;
use crate::config::LiveSettings;
use crate::domain::identity::Role;
use crate::domain::ids::UserId;
use crate::error_code::ErrorCode;
use crate::fulfilment::orders::Viewer;
use crate::identity::revocation::{Marks, RevocationWatch};
use crate::identity::tokens::{AMR_MFA, AccessTokens, hex};
use crate::store::typed::Rows;
use crate::store::{Key, SharedStore, Table};

/// How long a ticket can be redeemed after it was issued.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Random bytes in a ticket.
const TICKET_BYTES: usize = 32;

/// Who opened a socket, and when their access ends (the session closes then, or when the
/// access is revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUser {
    pub id: UserId,
    pub role: Role,
    /// The access token's `exp`; for a ticket, the `exp` of the access token that bought it.
    pub expires_at: DateTime<Utc>,
    /// Whether that token was minted after a second factor (administrators need it).
    pub second_factor: bool,
    /// When that access token was issued, in milliseconds: what revocation marks cover.
    pub issued_at_ms: i64,
}

impl WsUser {
    /// The user as the fulfilment services see them.
    pub fn viewer(&self) -> Viewer {
        Viewer {
            id: self.id,
            role: self.role,
            admin: self.is_admin(),
        }
    }

    /// See [`require_role`](super::extract::require_role).
    pub fn require_role(&self, roles: &[Role]) -> Result<(), ApiError> {
        super::extract::require_role(self.role, roles)
    }

    /// An administrator with a second factor (see [`AuthUser::is_admin`]).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.second_factor
    }

    /// See [`require_admin`](super::extract::require_admin).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        super::extract::require_admin(self.role, self.second_factor)
    }
}

/// A freshly issued ticket, answered by `POST /api/v1/ws/ticket`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedTicket {
    /// Pass as `?ticket=` when opening a WebSocket; works once.
    pub ticket: String,
    /// Seconds the ticket stays redeemable.
    pub expires_in_s: u32,
}

/// The stored side of a ticket (keyed by its SHA-256, never the ticket itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TicketRow {
    user_id: UserId,
    role: Role,
    /// `exp` of the access token the ticket was bought with.
    access_expires_at: DateTime<Utc>,
    /// When that token was issued, in milliseconds. Tickets stored before this was recorded
    /// read as issued at the epoch, which any revocation of their user covers.
    #[serde(default)]
    access_issued_ms: i64,
    /// The ticket's own expiry; checked on redemption because store TTLs are best-effort.
    expires_at: DateTime<Utc>,
    #[serde(default)]
    second_factor: bool,
}

/// Open sessions per user on this node.
type Counts = Arc<Mutex<HashMap<UserId, usize>>>;

/// What the handshake of every WebSocket endpoint checks: the caller's token or ticket, the
/// browser origin, and how many sessions the caller already holds.
#[derive(Clone)]
pub struct WsGate {
    /// Allowed origins, lower-cased.
    origins: Arc<[String]>,
    max_per_user: usize,
    counts: Counts,
    tickets: Rows<TicketRow>,
    clock: Clock,
    sessions: Option<Gauge>,
    revocations: Marks,
}

impl WsGate {
    pub fn new(store: SharedStore, settings: &LiveSettings, clock: Clock) -> Self {
        WsGate {
            origins: settings
                .ws_allowed_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            max_per_user: settings.ws_max_per_user,
            counts: Arc::default(),
            tickets: Rows::new(store, Table::WsTickets).with_ttl(TICKET_TTL),
            clock,
            sessions: None,
            revocations: Marks::default(),
        }
    }

    /// Refuses tickets, and closes sessions, whose access a mark in `marks` revokes (the
    /// node's, shared with its access tokens).
    pub fn with_revocations(mut self, marks: Marks) -> Self {
        self.revocations = marks;
        self
    }

    /// What tells a session opened by `user` that their access was revoked.
    pub fn revocation_watch(&self, user: &WsUser) -> RevocationWatch {
        self.revocations.watch(user.id, user.issued_at_ms)
    }

    /// Also counts admitted sessions in `gauge` (`hexmarket_ws_sessions`).
    pub fn with_sessions_gauge(mut self, gauge: Gauge) -> Self {
        self.sessions = Some(gauge);
        self
    }

    /// The time source sessions measure token expiry against.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Origin, then credentials, then the connection cap: the one call each endpoint makes
    /// before upgrading. Keep the guard in the session actor for as long as it lives.
    pub async fn open(
        &self,
        req: &HttpRequest,
        tokens: &AccessTokens,
    ) -> Result<(WsUser, ConnectionGuard), ApiError> {
        self.check_origin(req)?;
        let user = self.authenticate(req, tokens).await?;
        let guard = self.admit(&user)?;
        Ok((user, guard))
    }

    /// A request without `Origin` (native apps, servers) passes; a browser's must be one of
    /// the allowed origins, or the page's own (the web app served by this node, under
    /// whichever name the browser reached it), which stops other sites from riding a user's
    /// ticket or cookies.
    pub fn check_origin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let mut values = req.headers().get_all(ORIGIN);
        let Some(first) = values.next() else {
            return Ok(());
        };
        let host = req
            .headers()
            .get(actix_web::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        let allowed = values.next().is_none()
            && first.to_str().is_ok_and(|origin| {
                let origin = origin.trim().to_ascii_lowercase();
                self.origins.contains(&origin)
                    || host.as_deref().is_some_and(|host| same_host(&origin, host))
            });
        if allowed {
            Ok(())
        } else {
            tracing::debug!("WebSocket origin refused");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::OriginNotAllowed,
                "this origin may not open WebSockets",
            ))
        }
    }

    /// The caller, from `Authorization: Bearer …` or, when that header is absent, a
    /// single-use `?ticket=` (consumed here).
    pub async fn authenticate(
        &self,
        req: &HttpRequest,
        tokens: &AccessTokens,
    ) -> Result<WsUser, ApiError> {
        let user = match req.headers().get(AUTHORIZATION) {
            Some(header) => self.bearer(header.to_str().ok(), tokens)?,
            None => {
                let ticket = ticket_param(req).ok_or_else(unauthenticated)?;
                self.redeem(&ticket).await?
            }
        };
        if user.expires_at <= self.clock.now() {
            return Err(unauthenticated());
        }
        Ok(user)
    }

    fn bearer(&self, header: Option<&str>, tokens: &AccessTokens) -> Result<WsUser, ApiError> {
        let header = header.ok_or_else(unauthenticated)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(unauthenticated)?;
        let claims = tokens.verify(token.trim()).map_err(|e| {
            tracing::debug!(error = %e, "WebSocket access token refused");
            unauthenticated()
        })?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or_else(unauthenticated)?;
        Ok(WsUser {
            id: claims.sub,
            role: claims.role,
            expires_at,
            second_factor: claims.amr.iter().any(|m| m == AMR_MFA),
            issued_at_ms: claims.issued_at_ms(),
        })
    }

    /// Reads the ticket's row and deletes it by compare-and-set: of two handshakes racing
    /// with one ticket, only the one whose delete applies gets in.
    async fn redeem(&self, ticket: &str) -> Result<WsUser, ApiError> {
        let key = ticket_key(ticket);
        let Some(row) = self.tickets.get(&key).await? else {
            tracing::debug!("WebSocket ticket unknown, used or expired");
            return Err(unauthenticated());
        };
        if self.tickets.delete(&key, row.version).await?.is_err() {
            tracing::debug!("WebSocket ticket redeemed concurrently");
            return Err(unauthenticated());
        }
        let row = row.value;
        if row.expires_at <= self.clock.now() {
            tracing::debug!(user_id = %row.user_id, "WebSocket ticket expired");
            return Err(unauthenticated());
        }
        if self.revocations.covers(row.user_id, row.access_issued_ms) {
            tracing::debug!(user_id = %row.user_id, "WebSocket ticket of a revoked access");
            return Err(unauthenticated());
        }
        Ok(WsUser {
            id: row.user_id,
            role: row.role,
            expires_at: row.access_expires_at,
            second_factor: row.second_factor,
            issued_at_ms: row.access_issued_ms,
        })
    }

    /// A fresh single-use ticket for `user`, redeemable for [`TICKET_TTL`].
    pub async fn issue_ticket(&self, user: &AuthUser) -> Result<IssuedTicket, ApiError> {
        let now = self.clock.now();
        let access_expires_at = DateTime::from_timestamp(user.claims.exp, 0)
            .filter(|exp| *exp > now)
            .ok_or_else(unauthenticated)?;
        let bytes: [u8; TICKET_BYTES] = rand::random();
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        let row = TicketRow {
            user_id: user.id,
            role: user.role,
            access_expires_at,
            access_issued_ms: user.claims.issued_at_ms(),
            expires_at: now + TICKET_TTL,
            second_factor: user.has_second_factor(),
        };
        // 256 random bits: a collision means a broken random source, not bad luck.
        if self
            .tickets
            .insert(&ticket_key(&ticket), &row)
            .await?
            .is_err()
        {
            return Err(ApiError::internal(anyhow::anyhow!(
                "a fresh WebSocket ticket collided with a stored one"
            )));
        }
        Ok(IssuedTicket {
            ticket,
            expires_in_s: TICKET_TTL.as_secs().try_into().unwrap_or(u32::MAX),
        })
    }

    /// Counts a new session of `user` on this node; 429 `too_many_connections` when they
    /// already hold `ws_max_per_user`. The slot frees when the guard is dropped.
    pub fn admit(&self, user: &WsUser) -> Result<ConnectionGuard, ApiError> {
        {
            let mut counts = self.counts.lock();
            let open = counts.entry(user.id).or_insert(0);
            if *open >= self.max_per_user {
                tracing::debug!(user_id = %user.id, open = *open, "WebSocket cap reached");
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyConnections,
                    format!(
                        "you already have {} open live connections; close one first",
                        self.max_per_user
                    ),
                ));
            }
            *open += 1;
        }
        if let Some(gauge) = &self.sessions {
            gauge.inc();
        }
        Ok(ConnectionGuard {
            counts: Arc::clone(&self.counts),
            user: user.id,
            sessions: self.sessions.clone(),
        })
    }

    /// Open sessions of `user` on this node.
    pub fn open_sessions(&self, user: UserId) -> usize {
        self.counts.lock().get(&user).copied().unwrap_or(0)
    }
}

/// One admitted session; dropping it (with the session actor that owns it) frees the slot.
#[must_use = "the slot is freed as soon as the guard is dropped"]
pub struct ConnectionGuard {
    counts: Counts,
    user: UserId,
    sessions: Option<Gauge>,
}

impl std::fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(open) = counts.get_mut(&self.user) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.user);
            }
        }
        drop(counts);
        if let Some(gauge) = &self.sessions {
            gauge.dec();
        }
    }
}

fn unauthenticated() -> ApiError {
    ApiError::unauthorized(
        ErrorCode::Unauthenticated,
        "a valid access token (Authorization: Bearer) or WebSocket ticket is required",
    )
}

/// The `ticket` query parameter, if it is shaped like one (so junk never reaches the store).
fn ticket_param(req: &HttpRequest) -> Option<String> {
    #[derive(Deserialize)]
    struct Query {
        ticket: Option<String>,
    }
    let query = actix_web::web::Query::<Query>::from_query(req.query_string()).ok()?;
    let ticket = query.into_inner().ticket?;
    let decoded = URL_SAFE_NO_PAD.decode(ticket.as_bytes()).ok()?;
    (decoded.len() == TICKET_BYTES).then_some(ticket)
}

/// Tickets are stored by hash, so a leaked table cannot be replayed.
fn ticket_key(ticket: &str) -> Key {
    Key::single(hex(&Sha256::digest(ticket.as_bytes())))
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_host(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;
    use crate::identity::tokens::AccessTokens;
    use crate::store::embedded::EmbeddedStore;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn settings(max_per_user: usize) -> LiveSettings {
        LiveSettings {
            ws_allowed_origins: vec![
                "https://app.hexmarket.dev".to_owned(),
                "http://localhost:3000".to_owned(),
            ],
            ws_max_per_user: max_per_user,
            gps_max_accuracy_m: 100.0,
            trail_retention: Duration::from_secs(86_400),
            trail_flush: Duration::from_millis(10),
            offer_timeout: Duration::from_secs(20),
            dispatch_radius_km: 8.0,
        }
    }

    fn gate(dir: &tempfile::TempDir, max_per_user: usize) -> WsGate {
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        WsGate::new(store, &settings(max_per_user), Clock::default())
    }

    fn user() -> WsUser {
        WsUser {
            id: UserId::new(),
            role: Role::Courier,
            expires_at: Utc::now() + chrono::Duration::minutes(10),
            second_factor: false,
            issued_at_ms: Utc::now().timestamp_millis(),
        }
    }

    fn auth_user(tokens: &AccessTokens, role: Role) -> (AuthUser, String) {
        let now = Utc::now();
        let token = tokens.issue(UserId::new(), role, now, None, now).unwrap();
        let claims = tokens.verify(&token).unwrap();
        let user = AuthUser {
            id: claims.sub,
            role: claims.role,
            claims,
        };
        (user, token)
    }

    #[actix_web::test]
    async fn a_request_without_origin_passes_the_origin_check() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        assert!(
            gate.check_origin(&TestRequest::get().to_http_request())
                .is_ok()
        );
    }

    #[actix_web::test]
    async fn an_allowed_origin_passes_whatever_its_case() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        for origin in ["https://app.hexmarket.dev", "HTTPS://App.HexMarket.dev"] {
            let req = TestRequest::get()
                .insert_header((ORIGIN, origin))
                .to_http_request();
            assert!(gate.check_origin(&req).is_ok(), "{origin}");
        }
    }

    #[actix_web::test]
    async fn the_page_served_by_the_node_itself_passes_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        let own = TestRequest::get()
            .insert_header((ORIGIN, "http://localhost:8080"))
            .insert_header((actix_web::http::header::HOST, "localhost:8080"))
            .to_http_request();
        assert!(gate.check_origin(&own).is_ok());
        for origin in ["http://localhost:8081", "https://evil.example", "null"] {
            let other = TestRequest::get()
                .insert_header((ORIGIN, origin))
                .insert_header((actix_web::http::header::HOST, "localhost:8080"))
                .to_http_request();
            assert!(gate.check_origin(&other).is_err(), "{origin}");
        }
    }

    #[actix_web::test]
    async fn any_other_origin_is_refused_with_403() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        for origin in [
            "https://evil.example",
            "http://app.hexmarket.dev",
            "https://app.hexmarket.dev:8443",
            "https://app.hexmarket.dev.evil.example",
            "null",
        ] {
            let req = TestRequest::get()
                .insert_header((ORIGIN, origin))
                .to_http_request();
            let err = gate.check_origin(&req).unwrap_err();
            assert_eq!(err.status(), StatusCode::FORBIDDEN, "{origin}");
            assert_eq!(err.code(), "origin_not_allowed");
        }
    }

    #[actix_web::test]
    async fn the_cap_refuses_one_more_session_with_429_and_a_dropped_guard_frees_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 2);
        let alice = user();
        let first = gate.admit(&alice).unwrap();
        let _second = gate.admit(&alice).unwrap();

        let err = gate.admit(&alice).unwrap_err();
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.code(), "too_many_connections");
        assert!(gate.admit(&user()).is_ok(), "other users are not affected");

        drop(first);
        assert_eq!(gate.open_sessions(alice.id), 1);
        let _third = gate.admit(&alice).unwrap();
    }

    #[actix_web::test]
    async fn the_last_dropped_guard_removes_the_users_entry() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 2);
        let alice = user();
        drop(gate.admit(&alice).unwrap());
        assert!(gate.counts.lock().is_empty());
    }

    #[test]
    fn a_guard_can_be_owned_by_a_session_actor() {
        fn owned_by_actors<T: Send + 'static>() {}
        owned_by_actors::<ConnectionGuard>();
    }

    #[actix_web::test]
    async fn a_bearer_token_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        let tokens = AccessTokens::new(SECRET);
        let (who, token) = auth_user(&tokens, Role::Vendor);
        let req = TestRequest::get()
            .insert_header((AUTHORIZATION, format!("Bearer {token}")))
            .to_http_request();
        let user = gate.authenticate(&req, &tokens).await.unwrap();
        assert_eq!((user.id, user.role), (who.id, Role::Vendor));
        assert_eq!(user.expires_at.timestamp(), who.claims.exp);
    }

    #[actix_web::test]
    async fn missing_or_bad_credentials_are_refused_with_401() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        let tokens = AccessTokens::new(SECRET);
        let other = AccessTokens::new(b"another secret of at least 32 bytes!");
        let (_, forged) = auth_user(&other, Role::Admin);
        let requests = [
            TestRequest::get().to_http_request(),
            TestRequest::get()
                .insert_header((AUTHORIZATION, format!("Bearer {forged}")))
                .to_http_request(),
            TestRequest::get()
                .insert_header((AUTHORIZATION, "Basic dXNlcjpwYXNz"))
                .to_http_request(),
            TestRequest::get().uri("/ws?ticket=junk").to_http_request(),
            TestRequest::get()
                .uri(&format!("/ws?ticket={}", URL_SAFE_NO_PAD.encode([7u8; 32])))
                .to_http_request(),
        ];
        for req in requests {
            let err = gate.authenticate(&req, &tokens).await.unwrap_err();
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(err.code(), "unauthenticated");
        }
    }

    #[actix_web::test]
    async fn a_ticket_opens_one_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        let tokens = AccessTokens::new(SECRET);
        let (who, _) = auth_user(&tokens, Role::Customer);

        let issued = gate.issue_ticket(&who).await.unwrap();
        assert_eq!(issued.expires_in_s, 30);
        assert_eq!(URL_SAFE_NO_PAD.decode(&issued.ticket).unwrap().len(), 32);
        let req = TestRequest::get()
            .uri(&format!(
                "/ws/orders/x?after_seq=3&ticket={}",
                issued.ticket
            ))
            .to_http_request();

        let user = gate.authenticate(&req, &tokens).await.unwrap();
        assert_eq!((user.id, user.role), (who.id, Role::Customer));
        assert_eq!(user.expires_at.timestamp(), who.claims.exp);

        let again = gate.authenticate(&req, &tokens).await.unwrap_err();
        assert_eq!(again.code(), "unauthenticated");
    }

    #[actix_web::test]
    async fn an_expired_ticket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        let tokens = AccessTokens::new(SECRET);
        let (who, _) = auth_user(&tokens, Role::Customer);
        let issued = gate.issue_ticket(&who).await.unwrap();

        gate.clock().advance(Duration::from_secs(31));
        let req = TestRequest::get()
            .uri(&format!("/ws/courier?ticket={}", issued.ticket))
            .to_http_request();
        let err = gate.authenticate(&req, &tokens).await.unwrap_err();
        assert_eq!(err.code(), "unauthenticated");
    }

    #[actix_web::test]
    async fn open_checks_origin_before_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir, 8);
        let tokens = AccessTokens::new(SECRET);
        let req = TestRequest::get()
            .insert_header((ORIGIN, "https://evil.example"))
            .to_http_request();
        let err = gate.open(&req, &tokens).await.unwrap_err();
        assert_eq!(err.code(), "origin_not_allowed");
    }
}
