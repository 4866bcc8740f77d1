//! The OpenAPI 3.1 document (`/api/v1/openapi.json`) and interactive docs (`/docs`).

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa_scalar::{Scalar, Servable as _};

use super::{
    admin, auth, cart, categories, checkout, couriers, health, inventory, me, media, mfa, orders,
    payments, problem, products, reviews, vendors, ws_ticket,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "hexmarket", description = "Real-time delivery marketplace API. Errors are RFC 9457 problem details with a stable `code`."),
    paths(
        health::health,
        health::ready,
        auth::register,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::logout_all,
        auth::send_otp,
        auth::verify_otp,
        auth::request_email_verification,
        auth::confirm_email,
        auth::forgot_password,
        auth::reset_password,
        mfa::begin_totp,
        mfa::confirm_totp,
        mfa::renew_recovery_codes,
        mfa::disable_totp,
        mfa::step_up,
        me::get_me,
        me::patch_me,
        me::export_me,
        me::delete_me,
        me::change_password,
        me::change_email,
        admin::list_users,
        admin::patch_user,
        cart::get_cart,
        cart::add_item,
        cart::set_quantity,
        cart::remove_item,
        cart::clear_cart,
        cart::merge_cart,
        vendors::create_vendor,
        vendors::list_vendors,
        vendors::my_vendor,
        vendors::get_vendor,
        vendors::patch_vendor,
        categories::list_categories,
        categories::create_category,
        categories::patch_category,
        categories::delete_category,
        products::search_products,
        products::create_product,
        products::get_product,
        products::patch_product,
        products::delete_product,
        products::my_products,
        products::featured,
        products::popular,
        products::set_featured,
        media::upload_image,
        media::delete_image,
        media::serve_media,
        checkout::checkout,
        orders::list_my_orders,
        orders::get_order,
        orders::list_order_events,
        orders::accept_order,
        orders::reject_order,
        orders::start_preparing_order,
        orders::mark_order_ready,
        orders::cancel_order,
        orders::list_vendor_orders,
        orders::list_admin_orders,
        orders::admin_cancel_order,
        orders::admin_refund_order,
        orders::get_tracking,
        couriers::get_my_courier,
        couriers::put_my_profile,
        couriers::list_unassigned_orders,
        couriers::get_courier_trail,
        ws_ticket::issue_ws_ticket,
        payments::stripe_webhook,
        payments::get_payment,
        payments::simulate,
        inventory::get_inventory,
        inventory::put_inventory,
        inventory::inventory_history,
        reviews::create_product_review,
        reviews::create_vendor_review,
        reviews::list_product_reviews,
        reviews::list_vendor_reviews,
        reviews::report_product_review,
        reviews::report_vendor_review,
        reviews::moderate_review,
    ),
    components(schemas(problem::Problem, problem::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Liveness, readiness and metrics"),
        (name = "cart", description = "Carts of guests and customers"),
        (name = "catalog", description = "Vendors, categories, products, search and stock"),
        (name = "media", description = "Stored product images"),
        (name = "orders", description = "Orders: history, the vendor's queue, transitions and events"),
        (name = "live", description = "Couriers, tracking, dispatch and WebSocket tickets (the streams themselves are WebSockets: see the README)"),
        (name = "payments", description = "Payments (Stripe or simulated) and the Stripe webhook"),
        (name = "inventory", description = "Stock of a product"),
        (name = "reviews", description = "Reviews and ratings of products and vendors"),
        (name = "auth", description = "Accounts and sessions"),
        (name = "me", description = "The caller's own profile"),
        (name = "admin", description = "Platform administration"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme (access tokens) the paths refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

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
