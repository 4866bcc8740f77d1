//! The HTTP API: REST under `/api/v1`, plus `/health`, `/ready`, `/metrics` and the docs.
//!
//! Each area has a module with its handlers and a `configure` function mounting them; the
//! node mounts them all through [`configure`], beside the WebSocket endpoints.

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod cart;
pub mod categories;
pub mod checkout;
pub mod client_addr;
pub mod coupons;
pub mod couriers;
pub mod error_bodies;
pub mod health;
pub mod inventory;
pub mod ledger;
pub mod me;
pub mod media;
pub mod mfa;
pub mod middleware;
pub mod moderation;
pub mod notifications;
pub mod openapi;
pub mod orders;
pub mod payments;
pub mod products;
pub mod push;
pub mod reviews;
pub mod settings;
pub mod sign_in;
pub mod support;
pub mod vendors;
pub mod webapp;
pub mod webhooks;
pub mod ws_ticket;

use actix_web::ResponseError as _;
use actix_web::web;

use crate::web::ApiError;
use crate::web::problem;

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
            // A request is matched against the resources in the order they are registered
            // (and matched again for its metrics label): the busiest come first.
            web::scope("/api/v1")
                .configure(products::configure)
                .configure(cart::configure)
                .configure(checkout::configure)
                .configure(orders::configure)
                .configure(vendors::configure)
                .configure(categories::configure)
                .configure(inventory::configure)
                .configure(reviews::configure)
                .configure(couriers::configure)
                .configure(auth::configure)
                .configure(mfa::configure)
                .configure(sign_in::configure)
                .configure(me::configure)
                .configure(notifications::configure)
                .configure(webhooks::configure)
                .configure(push::configure)
                .configure(admin::configure)
                .configure(settings::configure)
                .configure(audit::configure)
                .configure(moderation::configure)
                .configure(support::configure)
                .configure(payments::configure)
                .configure(ledger::configure)
                .configure(coupons::configure)
                .configure(analytics::configure)
                .configure(media::configure)
                .configure(ws_ticket::configure)
                .configure(webapp::configure_api),
        )
        .configure(media::configure_public)
        .configure(webapp::configure)
        .default_service(web::to(not_found));
    }
}

/// What no route took: a path no resource has is 404; a path some resource has, asked with
/// a method it does not take, is 405 (its `Allow` header is added with the problem body by
/// [`error_bodies::error_bodies`]).
async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    if req.resource_map().has_resource(req.path()) {
        actix_web::HttpResponse::MethodNotAllowed().finish()
    } else {
        ApiError::not_found("no such resource").error_response()
    }
}
