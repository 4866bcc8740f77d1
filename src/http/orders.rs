//! Orders over HTTP: the caller's orders, one order and its event log, the vendor's commands
//! (accept, reject, preparing, ready), cancellation, the vendor's queue and the admin list.
//!
//! An order is visible to its customer, the owner of its vendor, its assigned courier and
//! admins; anyone else gets 404, as if it did not exist. Commands go through the order's
//! actor; a command the order's status does not allow is a 409 `illegal_transition` naming
//! both statuses. Lists run oldest first and are paged by `limit` (1–100) and the
//! `next_cursor` of the previous page.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use futures_util::stream::{self, StreamExt as _};
use serde::{Deserialize, Serialize};

use super::vendors::page_limit;
use crate::actors::order::{ApplyCommand, CommandError, GetOrder};
use crate::domain::identity::Role;
use crate::domain::ids::{OrderId, PaymentId, ProductId, UserId, VendorId};
use crate::domain::money::Money;
use crate::domain::order::{CancelledBy, OrderCommand, OrderEvent, OrderRecord, OrderStatus};
use crate::payments::settlement::refund_key;
use crate::store::StoreError;
use crate::store::orders::OrderRepo;
use crate::web::extract::AuthUser;
use crate::web::problem::FieldError;
use crate::web::{ApiError, AppState};

/// Order rows read at once when listing.
const READ_CONCURRENCY: usize = 16;
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

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => ApiError::not_found("no such order"),
            CommandError::Illegal(illegal) => ApiError::conflict(
                "illegal_transition",
                format!(
                    "the order cannot go from {} to {}",
                    illegal.from, illegal.to
                ),
            )
            .with_fields(vec![
                FieldError {
                    field: "from".to_owned(),
                    message: illegal.from.to_string(),
                },
                FieldError {
                    field: "to".to_owned(),
                    message: illegal.to.to_string(),
                },
            ]),
            CommandError::Store(e) => e.into(),
            CommandError::OutOfStock => ApiError::conflict(
                "insufficient_stock",
                "the order's stock is no longer available",
            ),
            CommandError::Contended => ApiError::new(
                StatusCode::CONFLICT,
                "contended",
                "the order changed while this request was applied; try again",
            ),
        }
    }
}

/// One page of orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One page of an order's events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderEventPage {
    pub events: Vec<OrderEvent>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    pub next_after_seq: Option<u64>,
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

fn bad_cursor() -> ApiError {
    ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued")
}

fn id_cursor(cursor: Option<&str>) -> Result<Option<OrderId>, ApiError> {
    cursor
        .map(|c| c.parse::<OrderId>().map_err(|_| bad_cursor()))
        .transpose()
}

/// How the caller relates to an order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    pub customer: bool,
    pub vendor: bool,
    pub courier: bool,
    pub admin: bool,
}

impl Parts {
    pub fn any(self) -> bool {
        self.customer || self.vendor || self.courier || self.admin
    }
}

/// The order and the caller's parts in it, if the caller has any; 404 otherwise.
async fn visible_order(
    state: &AppState,
    user: &AuthUser,
    id: OrderId,
) -> Result<(OrderRecord, Parts), ApiError> {
    let order = state
        .orders
        .send(id, GetOrder)
        .await??
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    let parts = order_parts(state, user.id, user.role, user.is_admin(), &order).await?;
    if parts.any() {
        Ok((order, parts))
    } else {
        Err(ApiError::not_found("no such order"))
    }
}

/// How a user relates to an order: its customer, its vendor, its courier, an admin (with a
/// second factor), or none.
pub async fn order_parts(
    state: &AppState,
    user: UserId,
    role: Role,
    admin: bool,
    order: &OrderRecord,
) -> Result<Parts, ApiError> {
    let vendor = role == Role::Vendor
        && state
            .catalog
            .vendor_of(user)
            .await?
            .is_some_and(|v| v.id == order.order.vendor_id);
    Ok(Parts {
        customer: order.order.customer_id == user,
        vendor,
        courier: order.courier_id == Some(user),
        admin,
    })
}

fn forbidden(detail: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

/// Applies a vendor's command to one of its orders.
async fn vendor_command(
    state: &AppState,
    user: &AuthUser,
    raw_id: &str,
    command: OrderCommand,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(raw_id)?;
    let (order, parts) = visible_order(state, user, id).await?;
    if !parts.vendor {
        return Err(forbidden("only the order's vendor can do this"));
    }
    let order = apply(state, &order, command).await?;
    Ok(HttpResponse::Ok().json(order.without_handoff_code()))
}

/// Applies a command to an order as it was read (`before`). A command that closes a paid
/// order (cancel, reject) gives its money back: the payment is marked unsettled before the
/// order closes, so the refund it is owed survives a crash (the settlement sweep finishes
/// it), then settled at once; the order's units go back on sale as it closes.
async fn apply(
    state: &AppState,
    before: &OrderRecord,
    command: OrderCommand,
) -> Result<OrderRecord, ApiError> {
    let id = before.id();
    let closing = matches!(
        command,
        OrderCommand::Cancel { .. } | OrderCommand::Reject { .. }
    );
    let payment = if closing && before.paid_at.is_some() {
        order_payment(state, before).await?
    } else {
        None
    };
    if let Some(payment) = payment {
        state
            .settlement
            .mark(payment)
            .await
            .map_err(ApiError::internal)?;
    }
    let order = state.orders.send(id, ApplyCommand(command)).await??;
    let Some(payment) = payment else {
        return Ok(order);
    };
    if let Err(e) = state.settlement.settle(payment).await {
        // The order is closed for good; the refund it is owed is retried by the sweep.
        tracing::warn!(order_id = %id, error = %e, "refund of a closed order not made yet");
        return Ok(order);
    }
    Ok(state.orders.send(id, GetOrder).await??.unwrap_or(order))
}

/// The payment that pays for an order: the one it names, or its checkout's (orders placed
/// before they named it); `None` for an order paid outside any payment (tools, tests).
async fn order_payment(
    state: &AppState,
    order: &OrderRecord,
) -> Result<Option<PaymentId>, ApiError> {
    if let Some(id) = order.payment_id.as_deref().and_then(|p| p.parse().ok()) {
        return Ok(Some(id));
    }
    Ok(state
        .payments
        .find_by_checkout(order.order.checkout_id)
        .await?
        .map(|p| p.id))
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
                "idempotency_key_required",
                "send an Idempotency-Key header naming this refund",
            )
        })?
        .to_owned();
    let id = order_id(&id)?;
    let order = state
        .orders
        .send(id, GetOrder)
        .await??
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    // Admin keys have a namespace of their own, apart from the refunds hexmarket makes.
    let reference = format!("admin:{key}");
    if order.has_refund(&reference) {
        return Ok(HttpResponse::Ok().json(order.without_handoff_code()));
    }
    let Some(totals) = order.totals else {
        return Err(ApiError::conflict(
            "not_refundable",
            "the order has no totals to refund",
        ));
    };
    if order.paid_at.is_none() {
        return Err(ApiError::conflict(
            "not_refundable",
            "the order was never paid",
        ));
    }
    let mut lines = body.into_inner().lines;
    lines.sort();
    lines.dedup();
    let left = totals.total.amount_minor - order.refunded_minor();
    let amount = if lines.is_empty() {
        if left <= 0 {
            return Err(already_refunded("the whole order was refunded already"));
        }
        left
    } else {
        let refunded = order.refunded_lines();
        let mut sum = 0i64;
        for product in &lines {
            let line = order
                .order
                .lines
                .iter()
                .find(|l| l.product_id == *product)
                .ok_or_else(|| {
                    ApiError::invalid_field("lines", format!("{product} is not in the order"))
                })?;
            if refunded.contains(product) {
                return Err(already_refunded(format!(
                    "the line of {product} was refunded already"
                )));
            }
            sum += line
                .unit_price
                .times(line.quantity)
                .map_or(0, |m| m.amount_minor);
        }
        sum
    };
    if amount <= 0 || amount > left {
        return Err(ApiError::field_rule(
            "refund_exceeds_total",
            "lines",
            format!(
                "{amount} more would exceed the order total of {} ({} refunded)",
                totals.total.amount_minor,
                order.refunded_minor()
            ),
        ));
    }
    let amount = Money::new(amount, totals.total.currency);
    let payment = order_payment(&state, &order)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("paid order {id} has no payment")))?;
    state
        .payments
        .refund(payment, amount.amount_minor, &refund_key(id, &reference))
        .await?;
    let order = state
        .orders
        .send(
            id,
            ApplyCommand(OrderCommand::Refund {
                amount,
                lines,
                reference,
            }),
        )
        .await??;
    Ok(HttpResponse::Ok().json(order.without_handoff_code()))
}

fn already_refunded(detail: impl Into<String>) -> ApiError {
    ApiError::conflict("already_refunded", detail)
}

/// Reads the orders of an index a page at a time, keeping those that pass `status`, until the
/// page is full or the index ends.
async fn index_page<F, Fut>(
    repo: &OrderRepo,
    status: Option<OrderStatus>,
    limit: usize,
    cursor: Option<OrderId>,
    read: F,
) -> Result<OrderPage, ApiError>
where
    F: Fn(Option<OrderId>, usize) -> Fut,
    Fut: Future<Output = Result<(Vec<OrderId>, Option<OrderId>), StoreError>>,
{
    let mut items = Vec::with_capacity(limit);
    let mut after = cursor;
    loop {
        let (ids, next) = read(after, limit).await?;
        let rows: Vec<_> = stream::iter(ids.iter().copied())
            .map(|id| async move { repo.load(id).await })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        for (id, row) in ids.iter().zip(rows) {
            // An index row whose order is not written yet (a checkout in progress) is skipped.
            if let Some(row) = row?
                && status.is_none_or(|s| s == row.value.status())
            {
                // Lists never show handoff codes; the customer reads it on the order itself.
                items.push(row.value.without_handoff_code());
            }
            if items.len() == limit {
                let last_of_page = next.is_none() && ids.last() == Some(id);
                return Ok(OrderPage {
                    items,
                    next_cursor: (!last_of_page).then(|| id.to_string()),
                });
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => {
                return Ok(OrderPage {
                    items,
                    next_cursor: None,
                });
            }
        }
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
    let cursor = id_cursor(query.cursor.as_deref())?;
    let repo = OrderRepo::new(state.store.clone());
    let page = index_page(&repo, query.status, limit, cursor, |after, n| {
        repo.customer_orders(user.id, after, n)
    })
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
    let (order, parts) = visible_order(&state, &user, order_id(&id)?).await?;
    // The handoff code proves the parcel reached its customer: only they see it.
    let order = if parts.customer {
        order
    } else {
        order.without_handoff_code()
    };
    Ok(HttpResponse::Ok().json(order))
}

/// Where an order's courier is, for clients that poll instead of holding a WebSocket.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tracking {
    pub status: OrderStatus,
    pub courier: Option<crate::streams::frames::LocationFrame>,
    pub eta_s: Option<u32>,
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
    let id = order_id(&id)?;
    let (order, _) = visible_order(&state, &user, id).await?;
    if order.status().has_ended() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "tracking_ended",
            "this order is no longer on its way",
        ));
    }
    let courier = crate::ws::orders::courier_position(&state, &order).await;
    Ok(HttpResponse::Ok().json(Tracking {
        status: order.status(),
        // A stored position has no ETA (0): it is computed from the next live one.
        eta_s: courier.as_ref().map(|c| c.eta_s).filter(|eta| *eta > 0),
        courier,
    }))
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
    visible_order(&state, &user, id).await?;
    let (events, next_after_seq) = OrderRepo::new(state.store.clone())
        .events_after(id, query.after_seq.unwrap_or(0), limit)
        .await?;
    Ok(HttpResponse::Ok().json(OrderEventPage {
        events,
        next_after_seq,
    }))
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
    let id = order_id(&id)?;
    let (before, parts) = visible_order(&state, &user, id).await?;
    let by = if parts.admin {
        CancelledBy::Admin
    } else if parts.customer {
        CancelledBy::Customer
    } else {
        // The vendor turns orders down with reject; the courier cannot cancel.
        return Err(forbidden(
            "only the customer or an admin can cancel an order",
        ));
    };
    let order = apply(&state, &before, OrderCommand::Cancel { by }).await?;
    Ok(HttpResponse::Ok().json(order.without_handoff_code()))
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
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let before = state
        .orders
        .send(order_id(&id)?, GetOrder)
        .await??
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    let command = OrderCommand::Cancel {
        by: CancelledBy::Admin,
    };
    let order = apply(&state, &before, command).await?;
    Ok(HttpResponse::Ok().json(order.without_handoff_code()))
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
    let cursor = id_cursor(query.cursor.as_deref())?;
    let vendor = state
        .catalog
        .vendor_of(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("you do not run a store yet"))?;
    let repo = OrderRepo::new(state.store.clone());
    let page = index_page(&repo, query.status, limit, cursor, |after, n| {
        repo.vendor_orders(vendor.id, after, n)
    })
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
    let repo = OrderRepo::new(state.store.clone());
    let q = query.into_inner();
    let page = match (q.vendor_id, q.customer_id) {
        (Some(vendor), customer) => {
            let cursor = id_cursor(q.cursor.as_deref())?;
            let mut page = index_page(&repo, q.status, limit, cursor, |after, n| {
                repo.vendor_orders(vendor, after, n)
            })
            .await?;
            page.items
                .retain(|o| customer.is_none_or(|c| c == o.order.customer_id));
            page
        }
        (None, Some(customer)) => {
            let cursor = id_cursor(q.cursor.as_deref())?;
            index_page(&repo, q.status, limit, cursor, |after, n| {
                repo.customer_orders(customer, after, n)
            })
            .await?
        }
        (None, None) => table_page(&repo, q.status, limit, q.cursor).await?,
    };
    Ok(HttpResponse::Ok().json(page))
}

/// Reads the whole order table a store page at a time, never more rows than the page still
/// has room for, so no row past the cursor is skipped.
async fn table_page(
    repo: &OrderRepo,
    status: Option<OrderStatus>,
    limit: usize,
    mut cursor: Option<String>,
) -> Result<OrderPage, ApiError> {
    let mut items = Vec::with_capacity(limit);
    loop {
        let room = limit - items.len();
        let (rows, next) = repo
            .all_orders(cursor.take(), room)
            .await
            .map_err(|e| match e {
                StoreError::Misuse(_) => bad_cursor(),
                other => other.into(),
            })?;
        items.extend(
            rows.into_iter()
                .filter(|o| status.is_none_or(|s| s == o.status())),
        );
        cursor = next;
        if items.len() >= limit || cursor.is_none() {
            return Ok(OrderPage {
                items,
                next_cursor: cursor,
            });
        }
    }
}
