//! The OpenAPI 3.1 document (`/api/v1/openapi.json`) and interactive docs (`/docs`).

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa_scalar::{Scalar, Servable as _};

use super::{cart, health, problem};

#[derive(OpenApi)]
#[openapi(
    info(title = "hexmarket", description = "Real-time delivery marketplace API. Errors are RFC 9457 problem details with a stable `code`."),
    paths(
        health::health,
        health::ready,
        cart::get_cart,
        cart::add_item,
        cart::set_quantity,
        cart::remove_item,
        cart::clear_cart,
    ),
    components(schemas(problem::Problem, problem::FieldError)),
    tags(
        (name = "operations", description = "Liveness, readiness and metrics"),
        (name = "cart", description = "Carts of guests and customers"),
    )
)]
pub struct ApiDoc;

/// The document, rendered once per process.
fn document_json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| unreachable!("the OpenAPI document always serialises: {e}"))
    })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(document))
        .service(Scalar::with_url("/docs", ApiDoc::openapi()).title("hexmarket API"));
}

async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}
