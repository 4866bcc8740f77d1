//! The OpenAPI 3.1 document (`/api/v1/openapi.json`) and interactive docs (`/docs`).
//!
//! The document is generated from the handlers' annotations, then made uniform by modifiers:
//! every error response is problem details (`application/problem+json`, the `Problem` schema),
//! and every operation names its other errors under `default`. The docs page is Swagger UI,
//! whose files are compiled into the binary: `/docs` needs no other host.

use std::sync::{Arc, OnceLock};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{Content, Ref, RefOr, Response};

use crate::web::ApiError;
use crate::web::problem::PROBLEM_JSON;

use super::{
    admin, analytics, audit, auth, cart, categories, checkout, coupons, couriers, health,
    inventory, ledger, me, media, mfa, moderation, notifications, orders, payments, problem,
    products, push, reviews, settings, sign_in, support, vendors, webapp, webhooks, ws_ticket,
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
        sign_in::list_providers,
        sign_in::start,
        sign_in::callback_get,
        sign_in::callback_post,
        sign_in::complete_link,
        sign_in::register_options,
        sign_in::register,
        sign_in::sign_in_options,
        sign_in::sign_in,
        sign_in::step_up_options,
        sign_in::step_up,
        sign_in::list_identities,
        sign_in::remove_identity,
        sign_in::list_passkeys,
        sign_in::remove_passkey,
        me::get_me,
        me::patch_me,
        me::export_me,
        me::delete_me,
        me::change_password,
        me::change_email,
        notifications::list_notifications,
        notifications::read_one,
        notifications::read_all,
        notifications::list_dead_letters,
        notifications::retry_dead_letter,
        webhooks::create_webhook,
        webhooks::list_webhooks,
        webhooks::delete_webhook,
        webhooks::list_deliveries,
        webhooks::redeliver,
        push::vapid_public_key,
        push::subscribe,
        push::list_subscriptions,
        push::unsubscribe,
        admin::list_users,
        admin::patch_user,
        settings::get_settings,
        settings::patch_settings,
        settings::settings_history,
        audit::list_audit,
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
        webapp::app_config,
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
        moderation::report_product,
        moderation::report_vendor,
        moderation::moderation_queue,
        moderation::decisions,
        moderation::hide_product,
        moderation::restore_product,
        moderation::dismiss_product,
        moderation::suspend_vendor,
        moderation::reinstate_vendor,
        moderation::dismiss_vendor,
        support::open_ticket,
        support::my_tickets,
        support::get_ticket,
        support::write_message,
        support::close_ticket,
        support::upload_attachment,
        support::get_attachment,
        support::queue,
        support::update_ticket,
        support::admin_message,
        coupons::create_coupon,
        coupons::list_coupons,
        coupons::get_coupon,
        coupons::patch_coupon,
        ledger::list_accounts,
        ledger::get_account,
        ledger::list_entries,
        ledger::list_payouts,
        ledger::get_payout,
        ledger::get_destination,
        ledger::put_destination,
        ledger::summary,
        ledger::list_transactions,
        ledger::get_default_rates,
        ledger::put_default_rates,
        ledger::get_store_rates,
        ledger::put_store_rates,
        ledger::delete_store_rates,
        ledger::list_reviews,
        ledger::release_reviewed,
        ledger::reconciliation,
        ledger::request_run,
        ledger::get_run,
        analytics::store_sales,
        analytics::store_top_products,
        analytics::platform_sales,
        analytics::platform_top_stores,
        analytics::platform_top_products,
        analytics::list_couriers,
        analytics::courier,
        analytics::supply_demand,
        analytics::my_sales,
        analytics::my_revenue,
        analytics::my_top_products,
    ),
    components(schemas(problem::Problem, problem::FieldError, admin::UserStatus, reviews::TargetKind, support::AttachmentSize)),
    modifiers(&BearerAuth, &ProblemResponses),
    tags(
        (name = "operations", description = "Liveness, readiness and metrics"),
        (name = "app", description = "What the web app served at `/` needs to know of the node (map tiles, how checkouts are paid)"),
        (name = "cart", description = "Carts of guests and customers"),
        (name = "catalog", description = "Vendors, categories, products, search and stock"),
        (name = "media", description = "Stored product images"),
        (name = "orders", description = "Orders: history, the vendor's queue, transitions and events"),
        (name = "live", description = "Couriers, tracking, dispatch and WebSocket tickets (the streams themselves are WebSockets: see the README)"),
        (name = "payments", description = "Payments (Stripe or simulated) and the Stripe webhook"),
        (name = "inventory", description = "Stock of a product"),
        (name = "reviews", description = "Reviews and ratings of products and vendors"),
        (name = "moderation", description = "Reports of products and stores (admins decide on them under `admin`)"),
        (name = "support", description = "Support tickets between users and the platform's admins (the admins' side is under `admin`)"),
        (name = "auth", description = "Accounts and sessions"),
        (name = "sign-in", description = "Sign-in with identity providers (OpenID Connect) and with passkeys (WebAuthn); the caller's linked identities and passkeys"),
        (name = "me", description = "The caller's own profile"),
        (name = "notifications", description = "The caller's in-app notifications (live on the /ws/notifications WebSocket: see the README)"),
        (name = "coupons", description = "Coupons of the platform and of stores (customers meet them on the cart and at checkout)"),
        (name = "ledger", description = "Money: balances and statements of the double-entry ledger, payouts and where they go (see the README's money flow)"),
        (name = "analytics", description = "Sales, revenue, top products and stores, couriers' performance, supply and demand per H3 cell (JSON, or CSV with Accept: text/csv or format=csv; definitions in the README)"),
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

/// Documents every error response as what the server sends: problem details with the
/// `Problem` schema as `application/problem+json`, and adds a `default` response to every
/// operation (401, 429, 503 and the rest a request can meet besides its listed ones).
///
/// An error response that an annotation gave another body (the readiness probe's 503) is left
/// as written: it is that endpoint's answer, not a problem.
struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    // OpenAPI 3.1 requires a description; the status's reason phrase serves.
                    if response.description.is_empty() {
                        response.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| actix_web::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("see the schema")
                            .to_owned();
                    }
                    if is_error_status(status)
                        && (response.content.is_empty() || names_problem(response))
                    {
                        response.content.clear();
                        response
                            .content
                            .insert(PROBLEM_JSON.to_owned(), RefOr::T(problem_content()));
                    }
                }
                responses.entry("default".to_owned()).or_insert_with(|| {
                    let mut response = Response::new(
                        "any other error (for instance 400, 401, 429 or 503), as problem details",
                    );
                    response
                        .content
                        .insert(PROBLEM_JSON.to_owned(), RefOr::T(problem_content()));
                    RefOr::T(response)
                });
            }
        }
    }
}

/// The operations of a path item, whatever their method.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
        item.query.as_mut(),
    ]
    .into_iter()
    .flatten()
    .chain(item.additional_operations.values_mut())
}

fn is_error_status(status: &str) -> bool {
    status == "default" || status.starts_with('4') || status.starts_with('5')
}

/// Whether a response's every body is the `Problem` schema.
fn names_problem(response: &Response) -> bool {
    let problem = Ref::from_schema_name("Problem").ref_location;
    response.content.values().all(|content| match content {
        RefOr::T(content) => {
            matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == problem)
        }
        RefOr::Ref(_) => false,
    })
}

fn problem_content() -> Content {
    Content::new(Some(Ref::from_schema_name("Problem")))
}

/// The methods the document gives the path a request named (`/api/v1/orders/0197…`), for
/// the `Allow` header of a 405. Paths the document does not describe (WebSockets, metrics, the
/// docs page) take GET alone.
pub fn allowed_methods(path: &str) -> String {
    static TEMPLATES: OnceLock<Vec<(Vec<String>, String)>> = OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let document: serde_json::Value = serde_json::from_str(document_json()).unwrap_or_default();
        let mut templates = Vec::new();
        if let Some(paths) = document["paths"].as_object() {
            for (template, item) in paths {
                let methods: Vec<String> = item
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(method, _)| method.to_ascii_uppercase())
                    .filter(|m| {
                        matches!(
                            m.as_str(),
                            "GET" | "PUT" | "POST" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS"
                        )
                    })
                    .collect();
                let segments = template.split('/').map(str::to_owned).collect();
                templates.push((segments, methods.join(", ")));
            }
        }
        templates
    });
    let segments: Vec<&str> = path.split('/').collect();
    templates
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| {
                    t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty())
                })
        })
        .map_or_else(|| "GET".to_owned(), |(_, methods)| methods.clone())
}

/// The document, rendered once per process.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| unreachable!("the OpenAPI document always serialises: {e}"))
    })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(document))
        .route("/docs", web::get().to(docs_index))
        .route("/docs/{file:.*}", web::get().to(docs_file));
}

async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}

/// Swagger UI's settings: the document it shows, and nothing fetched from elsewhere (no
/// validator badge, which would ask a public validator about the document).
fn ui_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        Arc::new(
            utoipa_swagger_ui::Config::from("/api/v1/openapi.json")
                .validator_url("none")
                .try_it_out_enabled(true)
                .persist_authorization(false),
        )
    }))
}

/// `/docs` itself: Swagger UI loads its files relative to the page, so the page lives at
/// `/docs/`.
async fn docs_index() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

async fn docs_file(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let served = utoipa_swagger_ui::serve(&file, ui_config())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("Swagger UI: {e}")))?;
    let Some(served) = served else {
        return Err(ApiError::not_found("no such file of the docs page"));
    };
    let mut response = HttpResponse::Ok();
    response.content_type(served.content_type);
    if served.gzpipped {
        response.insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")));
    }
    // The files change only with the binary; the page itself is cheap to fetch again.
    if !file.is_empty() && file.as_str() != "index.html" {
        response.insert_header((header::CACHE_CONTROL, "public, max-age=3600"));
    }
    Ok(response.body(served.bytes.into_owned()))
}
