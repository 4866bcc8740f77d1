//! The HTTP API: REST under `/api/v1`, plus `/health`, `/ready`, `/metrics` and the docs.
//!
//! Each area has a module with its handlers and a `configure` function mounting them; the
//! server and the tests build the same [`App`](actix_web::App) through [`configure`].

pub mod admin;
pub mod auth;
pub mod cart;
pub mod categories;
pub mod checkout;
pub mod client_addr;
pub mod couriers;
pub mod extract;
pub mod health;
pub mod inventory;
pub mod me;
pub mod media;
pub mod mfa;
pub mod middleware;
pub mod openapi;
pub mod orders;
pub mod payments;
pub mod problem;
pub mod products;
pub mod reviews;
pub mod vendors;
pub mod ws_ticket;

use actix_web::ResponseError as _;
use actix_web::web;

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
    pub settlement: crate::payments::settlement::Settlement,
    /// Idempotency records of unsafe requests (`Idempotency-Key`).
    pub idempotency: crate::idempotency::Idempotency,
    /// How long a checkout holds stock for its unpaid orders.
    pub order_payment_timeout: std::time::Duration,
    /// Whether cookies are marked `Secure` (off only for local plain-HTTP development).
    pub secure_cookies: bool,
    /// The WebSocket handshake: tokens and tickets, origins, connection caps.
    pub ws: crate::ws::handshake::WsGate,
    /// Couriers, dispatch, live positions and feeds.
    pub live: crate::fulfilment::dispatcher::Live,
    /// Fires once when the node starts stopping: WebSocket sessions close (1001).
    pub closing: tokio::sync::broadcast::Sender<()>,
}

/// Mounts every route and the extractor configuration.
pub fn configure(json_limit: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(json_limit)
                .error_handler(problem::json_error),
        )
        .app_data(web::QueryConfig::default().error_handler(problem::query_error))
        .app_data(web::PathConfig::default().error_handler(problem::path_error))
        .configure(health::configure)
        .configure(openapi::configure)
        .service(
            web::scope("/api/v1")
                .configure(auth::configure)
                .configure(mfa::configure)
                .configure(me::configure)
                .configure(admin::configure)
                .configure(cart::configure)
                .configure(vendors::configure)
                .configure(categories::configure)
                .configure(products::configure)
                .configure(inventory::configure)
                .configure(reviews::configure)
                .configure(orders::configure)
                .configure(checkout::configure)
                .configure(couriers::configure)
                .configure(payments::configure)
                .configure(media::configure)
                .configure(ws_ticket::configure),
        )
        .configure(media::configure_public)
        .configure(crate::ws::configure)
        .default_service(web::to(not_found));
    }
}

/// What no route took: a path no resource has is 404; a path some resource has, asked with
/// a method it does not take, is 405 (its `Allow` header is added with the problem body by
/// [`problem::error_bodies`]).
async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    if req.resource_map().has_resource(req.path()) {
        actix_web::HttpResponse::MethodNotAllowed().finish()
    } else {
        ApiError::not_found("no such resource").error_response()
    }
}
