//! Orders over HTTP: the caller's orders, one order and its event log, the vendor's commands
//! (accept, reject, preparing, ready), cancellation, the vendor's queue and the admin list.
//!
//! An order is visible to its customer, the owner of its vendor, its assigned courier and
//! admins; anyone else gets 404, as if it did not exist. Commands go through the order's
//! actor; a command the order's status does not allow is a 409 `illegal_transition` naming
//! both statuses. Lists run oldest first and are paged by `limit` (1–100) and the
//! `next_cursor` of the previous page.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::audit;
use super::client_addr::ClientAddr;
use super::vendors::page_limit;
use crate::domain::identity::Role;
use crate::domain::ids::{OrderId, ProductId, UserId, VendorId};
use crate::domain::order::{OrderCommand, OrderRecord, OrderStatus};
use crate::error_code::ErrorCode;
use crate::fulfilment::orders::{AdminFilter, OrderEventPage, OrderPage, Tracking};
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

/// Longest rejection reason accepted.
const MAX_REASON_CHARS: usize = 500;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/orders", web::get().to(list_my_orders))
        .route("/orders/{id}", web::get().to(get_order))
        .route("/orders/{id}/events", web::get().to(list_order_events))
        .route("/orders/{id}/tracking", web::get().to(get_tracking))
        .route("/orders/{id}/accept", web::post().to(accept_order))
        .route("/orders/{id}/reject", web::post().to(reject_order))
        .route(
            "/orders/{id}/preparing",
            web::post().to(start_preparing_order),
        )
        .route("/orders/{id}/ready", web::post().to(mark_order_ready))
        .route("/orders/{id}/cancel", web::post().to(cancel_order))
        .route("/vendor/orders", web::get().to(list_vendor_orders))
        .route("/admin/orders", web::get().to(list_admin_orders))
        .route(
            "/admin/orders/{id}/cancel",
            web::post().to(admin_cancel_order),
        )
        .route(
            "/admin/orders/{id}/refund",
            web::post().to(admin_refund_order),
        );
}

/// Paging of a list of orders.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrderListQuery {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// Filters of the admin list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminOrderQuery {
    pub status: Option<OrderStatus>,
    #[param(value_type = Option<String>, format = Uuid)]
    pub vendor_id: Option<VendorId>,
    #[param(value_type = Option<String>, format = Uuid)]
    pub customer_id: Option<UserId>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (with the same filters).
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// Where to read an order's log from.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events after this sequence number (default 0: from the start).
    pub after_seq: Option<u64>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
}

/// Why the vendor turns an order down.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectOrder {
    /// 1–500 characters, shown to the customer.
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub reason: String,
}

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such order"))
}

/// Applies a vendor's command to one of its orders.
async fn vendor_command(
    state: &AppState,
    user: &AuthUser,
    raw_id: &str,
    command: OrderCommand,
) -> Result<HttpResponse, ApiError> {
    let order = state
        .fulfilment
        .orders
        .vendor_command(&user.viewer(), order_id(raw_id)?, command)
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// What an admin refunds: chosen products' lines, or whatever is left of the order (all of it,
/// delivery included) without `lines`. A refund short of the total keeps the order's status.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Products of the order whose lines (unit price × quantity) are refunded; each line once.
    #[serde(default)]
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub lines: Vec<ProductId>,
}

/// An admin refunds an order, whole or chosen lines (needs a step-up; `Idempotency-Key`
/// names the refund, so a retry refunds once and answers the order as it is). The order keeps
/// its status and lists the refund in `refunds`; it becomes `refunded` when its whole total
/// has gone back.
#[utoipa::path(post, path = "/api/v1/admin/orders/{id}/refund", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 200, pattern = "^[!-~]+$",
            description = "names the refund (1–200 printable ASCII characters)")),
    request_body = RefundRequest,
    responses((status = 200, body = OrderRecord), (status = 400, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "`not_refundable`: never paid; `already_refunded`: the lines or the whole order went back already"),
        (status = 422, body = crate::web::problem::Problem, description = "`validation_failed`: a product not in the order; `refund_exceeds_total`")))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn admin_refund_order(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
    user: AuthUser,
    from: ClientAddr,
    id: web::Path<String>,
    body: web::Json<RefundRequest>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    user.require_step_up(state.catalog.clock.now())?;
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| crate::idempotency::check_key(k).is_ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::IdempotencyKeyRequired,
                "send an Idempotency-Key header naming this refund",
            )
        })?;
    let id = order_id(&id)?;
    let before = state.fulfilment.orders.load(id).await?;
    let lines = body.into_inner().lines;
    let order = state
        .fulfilment
        .orders
        .refund(id, key, lines.clone())
        .await?;
    state
        .audit
        .record(
            audit::entry(&user, from, "order.refund", format!("order:{id}"))
                .before(audit::order_summary(&before))
                .after(audit::order_summary(&order))
                .reason(Some(format!("refund {key} of {}", describe_lines(&lines)))),
        )
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// What an audited refund covered: the whole order, or its lines.
fn describe_lines(lines: &[ProductId]) -> String {
    match lines {
        [] => "the whole order".to_owned(),
        lines => format!(
            "lines {}",
            lines
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The caller's orders, oldest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(OrderListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = OrderPage), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn list_my_orders(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<OrderListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let page = state
        .fulfilment
        .orders
        .customer_page(user.id, query.status, limit, query.cursor.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One order (its customer, its vendor, its courier and admins).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = OrderRecord), (status = 404, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn get_order(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = state
        .fulfilment
        .orders
        .get(&user.viewer(), order_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// The courier's position and ETA while the order is on its way; 410 `tracking_ended` once it
/// reached its end.
#[utoipa::path(get, path = "/api/v1/orders/{id}/tracking", tag = "live", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Tracking), (status = 404, body = crate::web::problem::Problem),
        (status = 410, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn get_tracking(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tracking = state
        .fulfilment
        .orders
        .tracking(&user.viewer(), order_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(tracking))
}

/// The order's events after `after_seq`, oldest first, for resuming a live stream.
#[utoipa::path(get, path = "/api/v1/orders/{id}/events", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid), EventQuery),
    responses((status = 200, body = OrderEventPage), (status = 404, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn list_order_events(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let limit = page_limit(query.limit)?;
    let page = state
        .fulfilment
        .orders
        .events(&user.viewer(), id, query.after_seq.unwrap_or(0), limit)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// The vendor takes a paid order.
#[utoipa::path(post, path = "/api/v1/orders/{id}/accept", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = OrderRecord), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn accept_order(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    vendor_command(&state, &user, &id, OrderCommand::Accept).await
}

/// The vendor turns a paid order down.
#[utoipa::path(post, path = "/api/v1/orders/{id}/reject", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)), request_body = RejectOrder,
    responses((status = 200, body = OrderRecord), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn reject_order(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
    body: web::Json<RejectOrder>,
) -> Result<HttpResponse, ApiError> {
    let reason = body.into_inner().reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid_field(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    vendor_command(&state, &user, &id, OrderCommand::Reject { reason }).await
}

/// The vendor starts preparing an accepted order.
#[utoipa::path(post, path = "/api/v1/orders/{id}/preparing", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = OrderRecord), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn start_preparing_order(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    vendor_command(&state, &user, &id, OrderCommand::StartPreparing).await
}

/// The vendor marks an order ready for pickup.
#[utoipa::path(post, path = "/api/v1/orders/{id}/ready", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = OrderRecord), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn mark_order_ready(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    vendor_command(&state, &user, &id, OrderCommand::MarkReady).await
}

/// Cancels an order: its customer before the vendor accepted it, an admin before delivery.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = OrderRecord), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn cancel_order(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = state
        .fulfilment
        .orders
        .cancel(&user.viewer(), order_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// An admin cancels an order before it is delivered.
#[utoipa::path(post, path = "/api/v1/admin/orders/{id}/cancel", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = OrderRecord), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn admin_cancel_order(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let id = order_id(&id)?;
    let before = state.fulfilment.orders.load(id).await?;
    let order = state.fulfilment.orders.admin_cancel(id).await?;
    state
        .audit
        .record(
            audit::entry(&user, from, "order.cancel", format!("order:{id}"))
                .before(audit::order_summary(&before))
                .after(audit::order_summary(&order)),
        )
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// The caller's store's orders, oldest first, optionally in one status.
#[utoipa::path(get, path = "/api/v1/vendor/orders", tag = "orders", params(OrderListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = OrderPage), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn list_vendor_orders(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<OrderListQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Vendor])?;
    let limit = page_limit(query.limit)?;
    let page = state
        .fulfilment
        .orders
        .vendor_page(user.id, query.status, limit, query.cursor.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Every order, filtered by status, vendor or customer.
#[utoipa::path(get, path = "/api/v1/admin/orders", tag = "admin", params(AdminOrderQuery),
    security(("bearer" = [])),
    responses((status = 200, body = OrderPage), (status = 400, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all)]
pub async fn list_admin_orders(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<AdminOrderQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let limit = page_limit(query.limit)?;
    let q = query.into_inner();
    let filter = AdminFilter {
        status: q.status,
        vendor: q.vendor_id,
        customer: q.customer_id,
    };
    let page = state
        .fulfilment
        .orders
        .admin_page(filter, limit, q.cursor)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
