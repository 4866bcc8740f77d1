//! What the HTTP API and the WebSocket sessions share: the application state, the error
//! type and its problem bodies, and who the caller is (access tokens, tickets, roles).

pub mod extract;
pub mod gate;
pub mod problem;
pub mod server;

use crate::actors::Registry;
use crate::actors::cart::CartActor;
use crate::actors::order::OrderActor;
use crate::bus::SharedBus;
use crate::catalog::Catalog;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::payments::Payments;
use crate::secrets::Signer;
use crate::store::SharedStore;

pub use problem::ApiError;

/// What handlers share, passed as `web::Data<AppState>`.
pub struct AppState {
    pub store: SharedStore,
    pub bus: SharedBus,
    /// Whether the bus is Redis (and so must be up for the node to be ready).
    pub redis: bool,
    pub carts: Registry<CartActor>,
    pub orders: Registry<OrderActor>,
    pub metrics: Metrics,
    pub cart_tokens: Signer,
    pub identity: Identity,
    pub catalog: Catalog,
    pub payments: Payments,
    /// Settles payments with their orders (late successes, refunds of closed orders).
    pub settlement: crate::fulfilment::settlement::Settlement,
    /// Idempotency records of unsafe requests (`Idempotency-Key`).
    pub idempotency: crate::idempotency::Idempotency,
    /// Whether cookies are marked `Secure` (off only for local plain-HTTP development).
    pub secure_cookies: bool,
    /// The WebSocket handshake: tokens and tickets, origins, connection caps.
    pub ws: crate::web::gate::WsGate,
    /// Orders and checkouts.
    pub fulfilment: crate::fulfilment::Fulfilment,
    /// Couriers, dispatch, live positions and feeds.
    pub live: crate::fulfilment::dispatcher::Live,
    /// In-app feeds, the outbox and its dead letters.
    pub notifications: crate::notifications::Notifications,
    pub ledger: crate::ledger::Ledger,
    /// The platform's live settings.
    pub settings: crate::settings::SettingsBook,
    /// The record of administrative actions.
    pub audit: crate::audit::Audit,
    /// Support tickets.
    pub support: crate::support::Support,
    /// Reports of products and stores, and admins' decisions on them.
    pub moderation: crate::moderation::Moderation,
    /// Rollups of sales, couriers' work and supply and demand, and their reports.
    pub analytics: crate::analytics::Analytics,
    /// Fires once when the node starts stopping: WebSocket sessions close (1001).
    pub closing: tokio::sync::broadcast::Sender<()>,
}
